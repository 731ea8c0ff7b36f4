//! A small model-based test of the tailer, in the spirit of Vector's
//! file-source tests: random sequences of file-system actions are applied to a
//! real file and to a model of the lines that must come out; after every
//! restart (a pass resuming from the checkpoints the writer would have stored)
//! the lines read so far must equal the model's, in order, each exactly once
//! (a truncation loses what was not read before it, as a truncation must).

use super::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Act {
    /// Append 1..=3 complete lines.
    Lines(u8),
    /// Append a piece of a line without its newline.
    Partial,
    /// Append a lone newline.
    Newline,
    /// Rename the file to a new matching name (sometimes in another project).
    Rename,
    /// Truncate the file in place: what was not read yet is lost, what
    /// follows is read from the start.
    Truncate,
    /// Run a pass from the stored checkpoints, and compare.
    Restart,
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        3 => (1u8..4).prop_map(Act::Lines),
        1 => Just(Act::Partial),
        1 => Just(Act::Newline),
        1 => Just(Act::Rename),
        1 => Just(Act::Truncate),
        2 => Just(Act::Restart),
    ]
}

/// What must have been read: complete lines, plus the unterminated tail once a
/// pass has found the file quiet (its continuation is then a new line).
#[derive(Default)]
struct Model {
    expected: Vec<String>,
    pending: String,
}

impl Model {
    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.pending);
        if !line.trim().is_empty() {
            self.expected.push(line);
        }
    }
}

struct World {
    dir: tempfile::TempDir,
    cfg: SourceConfig,
    path: PathBuf,
    cps: HashMap<PathBuf, FileCheckpoint>,
    got: Vec<String>,
    model: Model,
    k: usize,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = cfg(dir.path(), false, 1024);
        cfg.partial_line_grace = Duration::from_millis(1);
        let path = dir.path().join("p0/s0.jsonl");
        write(&path, b"");
        World {
            dir,
            cfg,
            path,
            cps: HashMap::new(),
            got: Vec::new(),
            model: Model::default(),
            k: 0,
        }
    }

    fn step(&mut self, a: &Act) {
        self.k += 1;
        let k = self.k;
        match a {
            Act::Lines(n) => {
                for i in 0..*n {
                    let t = format!("{{\"n\":\"{k}.{i}\"}}");
                    append(&self.path, format!("{t}\n").as_bytes());
                    self.model.pending.push_str(&t);
                    self.model.end_line();
                }
            }
            Act::Partial => {
                // Quoted, so no piece is a prefix of a later one: `{"p":1`
                // read as a quiet tail, then truncated and rewritten as
                // `{"p":10`, is byte for byte an append of `0` to the same
                // inode; no tailer can tell the two apart, so the model
                // must not ask it to.
                let t = format!("{{\"p\":\"{k}\"");
                append(&self.path, t.as_bytes());
                self.model.pending.push_str(&t);
            }
            Act::Newline => {
                append(&self.path, b"\n");
                self.model.end_line();
            }
            Act::Rename => {
                let to = self.dir.path().join(format!("p{}/s{k}.jsonl", k % 2));
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::rename(&self.path, &to).unwrap();
                self.path = to;
            }
            Act::Truncate => {
                std::fs::File::create(&self.path).unwrap();
                self.model.expected = self.got.clone();
                self.model.pending.clear();
            }
            Act::Restart => self.restart(),
        }
    }

    fn restart(&mut self) {
        let evs = pass_with(&self.cfg, self.cps.clone());
        self.got.extend(lines(&evs));
        apply(&mut self.cps, &evs);
        self.model.end_line();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_line_is_read_once_across_restarts_renames_and_partial_lines(
        acts in prop::collection::vec(act(), 1..24)
    ) {
        let mut w = World::new();
        for a in &acts {
            w.step(a);
            if matches!(a, Act::Restart) {
                prop_assert_eq!(&w.got, &w.model.expected);
            }
        }
        w.restart();
        prop_assert_eq!(&w.got, &w.model.expected);
        // The writer's checkpoints name only the file's current path.
        let names: Vec<&PathBuf> = w.cps.keys().collect();
        prop_assert!(names.len() <= 1 && names.iter().all(|p| **p == w.path), "{:?}", names);
    }
}
