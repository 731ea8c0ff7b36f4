use super::*;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

mod idle;
mod lifecycle;
mod model;
mod partial;

/// Test config: fast polls, and a short grace for unterminated last lines.
fn cfg(root: &Path, follow: bool, max: usize) -> SourceConfig {
    SourceConfig {
        root: root.to_path_buf(),
        patterns: vec!["*/*.jsonl".into(), "*/*/subagents/*.jsonl".into()],
        poll_interval: Duration::from_millis(100),
        rescan_interval: Duration::from_millis(100),
        partial_line_grace: Duration::from_millis(50),
        max_line_bytes: max,
        follow,
    }
}

fn write(p: &Path, s: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

fn append(p: &Path, s: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(p)
        .unwrap();
    f.write_all(s).unwrap();
}

/// Make a file look written long ago (a file nobody writes any more).
fn age(p: &Path, by: Duration) {
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_modified(std::time::SystemTime::now() - by).unwrap();
}

/// One pass (follow = false) with this config: every event, in order.
fn pass_with(c: &SourceConfig, start: HashMap<PathBuf, FileCheckpoint>) -> Vec<SourceEvent> {
    let (tx, mut rx) = mpsc::channel(10_000);
    run_source(c, start, tx, Arc::new(AtomicBool::new(false))).unwrap();
    let mut out = Vec::new();
    while let Ok(batch) = rx.try_recv() {
        out.extend(batch);
    }
    out
}

/// One pass (follow = false): every event, in order.
fn pass(root: &Path, start: HashMap<PathBuf, FileCheckpoint>, max: usize) -> Vec<SourceEvent> {
    pass_with(&cfg(root, false, max), start)
}

fn lines(evs: &[SourceEvent]) -> Vec<String> {
    evs.iter()
        .filter_map(|e| match e {
            SourceEvent::Line(l) => Some(String::from_utf8_lossy(&l.bytes).into_owned()),
            _ => None,
        })
        .collect()
}

fn last_checkpoints(evs: &[SourceEvent]) -> HashMap<PathBuf, FileCheckpoint> {
    let mut m = HashMap::new();
    apply(&mut m, evs);
    m
}

/// Fold events into a checkpoint map the way the writer does once they are stored.
fn apply(m: &mut HashMap<PathBuf, FileCheckpoint>, evs: &[SourceEvent]) {
    for e in evs {
        match e {
            SourceEvent::Line(l) => {
                m.insert((*l.path).clone(), l.checkpoint());
            }
            SourceEvent::Removed(p) => {
                m.remove(p);
            }
            SourceEvent::Renamed {
                from,
                to,
                checkpoint,
            } => {
                m.remove(from);
                m.insert(to.clone(), *checkpoint);
            }
            SourceEvent::Reset { .. } | SourceEvent::CaughtUp => {}
        }
    }
}

/// A read chunk's lines cross to the consumer as one batch, in order: one
/// hand-off per chunk, not per line (each may wake a thread).
#[test]
fn a_read_chunk_is_handed_over_as_one_batch() {
    let d = tempfile::tempdir().unwrap();
    let text: String = (0..1000).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    write(&d.path().join("p/s.jsonl"), text.as_bytes());
    let (tx, mut rx) = mpsc::channel(10_000);
    let c = cfg(d.path(), false, 1024);
    run_source(&c, HashMap::new(), tx, Arc::new(AtomicBool::new(false))).unwrap();
    let mut batches = Vec::new();
    while let Ok(batch) = rx.try_recv() {
        batches.push(batch);
    }
    // 11 KB of lines: one chunk, then CaughtUp on its own.
    assert_eq!(
        batches.len(),
        2,
        "{:?}",
        batches.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let got: Vec<String> = batches.iter().flat_map(|b| lines(b)).collect();
    let want: Vec<String> = text.lines().map(str::to_string).collect();
    assert_eq!(got, want);
    assert!(matches!(batches[1][..], [SourceEvent::CaughtUp]));
}

#[test]
fn reads_complete_lines_with_exact_offsets_and_projects() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("proj-a/s1.jsonl");
    write(&f, b"{\"a\":1}\r\n\n   \n{\"b\":2}\n{\"partial\":");
    write(
        &d.path().join("proj-a/s1/subagents/agent-1.jsonl"),
        b"{\"sub\":1}\n",
    );
    write(&d.path().join("proj-a/notes.txt"), b"ignored\n");
    write(&d.path().join("deep/x/y/z.jsonl"), b"ignored\n");
    let evs = pass(d.path(), HashMap::new(), 1024);
    let mut got = lines(&evs);
    got.sort();
    // The unterminated last line is read once its file is quiet (here: 50 ms).
    assert_eq!(
        got,
        vec!["{\"a\":1}", "{\"b\":2}", "{\"partial\":", "{\"sub\":1}"]
    );
    let main: Vec<&SourceLine> = evs
        .iter()
        .filter_map(|e| match e {
            SourceEvent::Line(l) if l.path.ends_with("s1.jsonl") => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(main.len(), 3);
    assert_eq!((main[0].offset, main[0].next_offset), (0, 9));
    assert_eq!(main[0].bytes, b"{\"a\":1}");
    assert_eq!((main[1].offset, main[1].next_offset), (14, 22));
    assert_eq!((main[2].offset, main[2].next_offset), (22, 33));
    assert_eq!(&*main[0].project, "proj-a");
    assert!(matches!(evs.last(), Some(SourceEvent::CaughtUp)));
}

#[test]
fn partial_line_waits_and_resume_continues_exactly() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("p/s.jsonl");
    write(&f, b"{\"n\":1}\n{\"n\":");
    // A file being written: the pass waits (up to the grace) for the newline,
    // and the writer completes the line within it.
    let mut c = cfg(d.path(), false, 1024);
    c.partial_line_grace = Duration::from_secs(3);
    let f2 = f.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        append(&f2, b"2}\n");
    });
    let evs = pass_with(&c, HashMap::new());
    writer.join().unwrap();
    assert_eq!(lines(&evs), vec!["{\"n\":1}", "{\"n\":2}"]);
    let cps = last_checkpoints(&evs);
    append(&f, b"{\"n\":3}\n");
    let evs = pass(d.path(), cps, 1024);
    assert_eq!(lines(&evs), vec!["{\"n\":3}"]);
    assert!(!evs.iter().any(|e| matches!(e, SourceEvent::Reset { .. })));
    // nothing new: nothing emitted
    let evs2 = pass(d.path(), last_checkpoints(&evs), 1024);
    assert!(lines(&evs2).is_empty());
}

#[test]
fn checkpoint_of_a_replaced_or_rewritten_file_resets() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("p/s.jsonl");
    write(&f, b"{\"old\":1}\n{\"old\":2}\n");
    let cps = last_checkpoints(&pass(d.path(), HashMap::new(), 1024));
    // replaced by a new file (new inode), even with the same length
    let tmp = d.path().join("p/tmp");
    write(&tmp, b"{\"new\":1}\n{\"new\":2}\n");
    std::fs::rename(&tmp, &f).unwrap();
    let evs = pass(d.path(), cps.clone(), 1024);
    assert!(matches!(evs[0], SourceEvent::Reset { .. }));
    assert_eq!(lines(&evs), vec!["{\"new\":1}", "{\"new\":2}"]);
    // rewritten in place (same inode, different head) is a reset too
    let cps = last_checkpoints(&evs);
    std::fs::write(&f, b"{\"xyz\":1}\n{\"new\":2}\n{\"more\":3}\n").unwrap();
    let evs = pass(d.path(), cps, 1024);
    assert!(matches!(evs[0], SourceEvent::Reset { .. }), "{evs:?}");
    assert_eq!(lines(&evs).len(), 3);
}

#[test]
fn huge_lines_are_truncated_not_buffered() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("p/s.jsonl");
    let mut data = vec![b'x'; 700_000];
    data.push(b'\n');
    data.extend_from_slice(b"{\"ok\":1}\n");
    write(&f, &data);
    let evs = pass(d.path(), HashMap::new(), 1024);
    let ls: Vec<&SourceLine> = evs
        .iter()
        .filter_map(|e| {
            if let SourceEvent::Line(l) = e {
                Some(l)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(ls.len(), 2);
    assert!(ls[0].truncated);
    assert_eq!(ls[0].bytes.len(), 1024);
    assert_eq!(ls[0].length, 700_000);
    assert_eq!(ls[1].offset, 700_001);
    assert!(!ls[1].truncated);
}

#[test]
fn missing_root_is_a_clear_error() {
    let (tx, _rx) = mpsc::channel(1);
    let err = run_source(
        &cfg(Path::new("/no/such/root"), false, 1024),
        HashMap::new(),
        tx,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("/no/such/root") && err.contains("does not exist"),
        "{err}"
    );
}

struct Live {
    rx: mpsc::Receiver<SourceBatch>,
    /// Events of a batch not yet looked at.
    received: std::collections::VecDeque<SourceEvent>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Result<SourceStats, String>>>,
}

impl Live {
    fn start(root: &Path) -> Live {
        let mut c = cfg(root, true, 1024);
        c.partial_line_grace = Duration::from_secs(3600);
        Live::start_with(c)
    }

    fn start_with(c: SourceConfig) -> Live {
        let (tx, rx) = mpsc::channel(1000);
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            run_source(&c, HashMap::new(), tx, s).map_err(|e| e.to_string())
        });
        Live {
            rx,
            received: Default::default(),
            stop,
            handle: Some(handle),
        }
    }

    fn next(&mut self) -> SourceEvent {
        let t0 = std::time::Instant::now();
        loop {
            if let Some(e) = self.received.pop_front() {
                return e;
            }
            if let Ok(batch) = self.rx.try_recv() {
                self.received.extend(batch);
                continue;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "no event within 5 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn next_line(&mut self) -> String {
        loop {
            if let SourceEvent::Line(l) = self.next() {
                return String::from_utf8_lossy(&l.bytes).into_owned();
            }
        }
    }

    /// Wait until the initial pass is done, returning the lines it read.
    fn caught_up(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            match self.next() {
                SourceEvent::CaughtUp => return out,
                SourceEvent::Line(l) => out.push(String::from_utf8_lossy(&l.bytes).into_owned()),
                _ => {}
            }
        }
    }

    /// Nothing arrives for `d`.
    fn quiet_for(&mut self, d: Duration) {
        std::thread::sleep(d);
        if let Some(e) = self.received.front() {
            panic!("expected no event, got {e:?}");
        }
        if let Ok(batch) = self.rx.try_recv() {
            panic!("expected no event, got {batch:?}");
        }
    }

    /// Stop the tailer and return its counters.
    fn stop(mut self) -> SourceStats {
        self.stop.store(true, Ordering::SeqCst);
        let h = self.handle.take().unwrap();
        h.join().unwrap().unwrap()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let r = h.join();
            if !std::thread::panicking() {
                r.unwrap().unwrap();
            }
        }
    }
}

#[test]
fn live_append_truncate_rotate_delete_and_new_dirs() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("p/s.jsonl");
    write(&f, b"{\"n\":1}\n");
    let mut live = Live::start(d.path());
    assert_eq!(live.next_line(), "{\"n\":1}");
    assert!(matches!(live.next(), SourceEvent::CaughtUp));

    append(&f, b"{\"n\":");
    std::thread::sleep(Duration::from_millis(250));
    assert!(live.rx.try_recv().is_err(), "a partial line must wait");
    append(&f, b"2}\n");
    assert_eq!(live.next_line(), "{\"n\":2}");

    std::fs::write(&f, b"").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    append(&f, b"{\"t\":1}\n");
    assert!(matches!(live.next(), SourceEvent::Reset { .. }));
    assert_eq!(live.next_line(), "{\"t\":1}");

    let tmp = d.path().join("p/s.tmp");
    write(&tmp, b"{\"r\":1}\n{\"r\":2}\n");
    std::fs::rename(&tmp, &f).unwrap();
    assert!(matches!(live.next(), SourceEvent::Reset { .. }));
    assert_eq!(live.next_line(), "{\"r\":1}");
    assert_eq!(live.next_line(), "{\"r\":2}");

    write(&d.path().join("new-project/s9.jsonl"), b"{\"new\":1}\n");
    assert_eq!(live.next_line(), "{\"new\":1}");

    std::fs::remove_file(&f).unwrap();
    match live.next() {
        SourceEvent::Removed(p) => assert_eq!(p, f),
        other => panic!("expected Removed, got {other:?}"),
    }
}
