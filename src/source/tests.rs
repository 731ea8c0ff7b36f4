use super::*;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

fn cfg(root: &Path, follow: bool, max: usize) -> SourceConfig {
    SourceConfig {
        root: root.to_path_buf(),
        patterns: vec!["*/*.jsonl".into(), "*/*/subagents/*.jsonl".into()],
        poll_interval: Duration::from_millis(100),
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

/// One pass (follow = false): every event, in order.
fn pass(root: &Path, start: HashMap<PathBuf, FileCheckpoint>, max: usize) -> Vec<SourceEvent> {
    let (tx, mut rx) = mpsc::channel(1000);
    run_source(
        &cfg(root, false, max),
        start,
        tx,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
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
    for e in evs {
        if let SourceEvent::Line(l) = e {
            m.insert((*l.path).clone(), l.checkpoint());
        }
    }
    m
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
    assert_eq!(got, vec!["{\"a\":1}", "{\"b\":2}", "{\"sub\":1}"]);
    let main: Vec<&SourceLine> = evs
        .iter()
        .filter_map(|e| match e {
            SourceEvent::Line(l) if l.path.ends_with("s1.jsonl") => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(main.len(), 2);
    assert_eq!((main[0].offset, main[0].next_offset), (0, 9));
    assert_eq!(main[0].bytes, b"{\"a\":1}");
    assert_eq!((main[1].offset, main[1].next_offset), (14, 22));
    assert_eq!(&*main[0].project, "proj-a");
    assert!(matches!(evs.last(), Some(SourceEvent::CaughtUp)));
}

#[test]
fn partial_line_waits_and_resume_continues_exactly() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("p/s.jsonl");
    write(&f, b"{\"n\":1}\n{\"n\":");
    let evs = pass(d.path(), HashMap::new(), 1024);
    assert_eq!(lines(&evs), vec!["{\"n\":1}"]);
    let cps = last_checkpoints(&evs);
    append(&f, b"2}\n{\"n\":3}\n");
    let evs = pass(d.path(), cps.clone(), 1024);
    assert_eq!(lines(&evs), vec!["{\"n\":2}", "{\"n\":3}"]);
    assert!(!evs.iter().any(|e| matches!(e, SourceEvent::Reset { .. })));
    // nothing new: nothing emitted
    let evs2 = pass(d.path(), last_checkpoints(&evs), 1024);
    assert!(lines(&evs2).is_empty());
    let _ = cps;
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
    rx: mpsc::Receiver<SourceEvent>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Live {
    fn start(root: &Path) -> Live {
        let (tx, rx) = mpsc::channel(1000);
        let stop = Arc::new(AtomicBool::new(false));
        let c = cfg(root, true, 1024);
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            run_source(&c, HashMap::new(), tx, s)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        Live {
            rx,
            stop,
            handle: Some(handle),
        }
    }

    fn next(&mut self) -> SourceEvent {
        let t0 = std::time::Instant::now();
        loop {
            if let Ok(e) = self.rx.try_recv() {
                return e;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "no event within 5 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn next_line(&mut self) -> String {
        loop {
            if let SourceEvent::Line(l) = self.next() {
                return String::from_utf8_lossy(&l.bytes).into_owned();
            }
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().unwrap().unwrap();
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
