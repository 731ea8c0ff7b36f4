//! File lifecycle: renames keep their position, in-place rewrites are noticed,
//! symlinked projects are followed once, what cannot be read is logged once,
//! and a path that is not UTF-8 stops nothing.

use super::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

fn renamed(ev: SourceEvent) -> (PathBuf, PathBuf, FileCheckpoint) {
    match ev {
        SourceEvent::Renamed {
            from,
            to,
            checkpoint,
        } => (from, to, checkpoint),
        other => panic!("expected Renamed, got {other:?}"),
    }
}

/// A rotation to a name that still matches `*.jsonl` used to read the whole
/// file again under its new name (every line counted twice).
#[test]
fn rename_while_following_keeps_the_position() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("p/a.jsonl");
    write(&a, b"{\"n\":1}\n{\"n\":2}\n");
    std::fs::create_dir_all(d.path().join("q")).unwrap();
    let mut live = Live::start(d.path());
    assert_eq!(live.caught_up().len(), 2);

    let b = d.path().join("p/b.jsonl");
    std::fs::rename(&a, &b).unwrap();
    let (from, to, cp) = renamed(live.next());
    assert_eq!((from, to.clone(), cp.offset), (a.clone(), b.clone(), 16));
    append(&b, b"{\"n\":3}\n");
    assert_eq!(live.next_line(), "{\"n\":3}");

    // Into another project directory, and over a tracked file's name.
    let c = d.path().join("q/c.jsonl");
    std::fs::rename(&b, &c).unwrap();
    assert_eq!(renamed(live.next()).1, c);
    let other = d.path().join("q/other.jsonl");
    write(&other, b"{\"o\":1}\n");
    assert_eq!(live.next_line(), "{\"o\":1}");
    std::fs::rename(&c, &other).unwrap();
    let (from, to, cp) = renamed(live.next());
    assert_eq!((from, to, cp.offset), (c, other.clone(), 24));
    append(&other, b"{\"n\":4}\n");
    assert_eq!(live.next_line(), "{\"n\":4}");
    live.quiet_for(Duration::from_millis(400));
    assert_eq!(live.stop().renames, 3);
}

#[test]
fn rename_while_stopped_keeps_the_position() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("p/a.jsonl");
    write(&a, b"{\"n\":1}\n{\"n\":2}\n");
    let mut cps = last_checkpoints(&pass(d.path(), HashMap::new(), 1024));
    let b = d.path().join("p/b.jsonl");
    std::fs::rename(&a, &b).unwrap();
    append(&b, b"{\"n\":3}\n");
    let evs = pass(d.path(), cps.clone(), 1024);
    assert_eq!(lines(&evs), vec!["{\"n\":3}"], "{evs:?}");
    apply(&mut cps, &evs);
    let (from, to, cp) = renamed(evs.into_iter().next().unwrap());
    assert_eq!((from, to, cp.offset), (a.clone(), b.clone(), 16));
    // the writer's view: the new name only, at the end; nothing left to read
    assert!(!cps.contains_key(&a));
    assert_eq!(cps[&b].offset, 24);
    assert!(lines(&pass(d.path(), cps, 1024)).is_empty());
}

/// Same inode, same length, new bytes: nothing grew, so nothing was noticed.
/// The first bytes' fingerprint changes; the file is read again (Claude Code
/// only appends, so this is another tool rewriting the file).
#[test]
fn same_length_rewrite_in_place_is_read_again() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("p/s.jsonl");
    write(&f, b"{\"a\":1}\n");
    let mut live = Live::start(d.path());
    assert_eq!(live.caught_up(), vec!["{\"a\":1}"]);
    std::thread::sleep(Duration::from_millis(20));
    let mut h = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    h.write_all(b"{\"b\":2}\n").unwrap();
    drop(h);
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 8);
    match live.next() {
        SourceEvent::Reset { path, reason } => {
            assert_eq!(path, f);
            assert!(reason.contains("rewritten"), "{reason}");
        }
        other => panic!("expected Reset, got {other:?}"),
    }
    assert_eq!(live.next_line(), "{\"b\":2}");
    // touching the file (same bytes) is not a rewrite
    let t = std::fs::File::options().write(true).open(&f).unwrap();
    t.set_modified(std::time::SystemTime::now()).unwrap();
    live.quiet_for(Duration::from_millis(400));
}

#[test]
fn symlinked_project_dirs_are_followed_once_without_loops() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    let outside = d.path().join("elsewhere");
    write(&root.join("real/s.jsonl"), b"{\"r\":1}\n");
    write(&outside.join("proj/s.jsonl"), b"{\"o\":1}\n");
    write(&outside.join("x.jsonl"), b"{\"x\":1}\n");
    let link = |target: &Path, at: &Path| std::os::unix::fs::symlink(target, at).unwrap();
    link(&outside.join("proj"), &root.join("linked")); // followed
    link(&root.join("real"), &root.join("again")); // a second name: skipped
    link(&root, &root.join("real/loop")); // a loop: skipped
    link(Path::new("/no/such/dir"), &root.join("broken")); // broken: skipped
    link(&root.join("real/s.jsonl"), &root.join("real/same.jsonl")); // skipped
    link(&outside.join("x.jsonl"), &root.join("real/x.jsonl")); // followed
    let (tx, mut rx) = mpsc::channel(100);
    let c = cfg(&root, false, 1024);
    let st = run_source(&c, HashMap::new(), tx, Arc::new(AtomicBool::new(false))).unwrap();
    let mut got = Vec::new();
    let mut events = Vec::new();
    while let Ok(batch) = rx.try_recv() {
        events.extend(batch);
    }
    for l in events.into_iter().map_while(|e| match e {
        SourceEvent::Line(l) => Some(l),
        _ => None,
    }) {
        got.push((
            l.project.to_string(),
            String::from_utf8_lossy(&l.bytes).into_owned(),
        ));
    }
    got.sort();
    let want = [
        ("linked", "{\"o\":1}"),
        ("real", "{\"r\":1}"),
        ("real", "{\"x\":1}"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(st.skipped, 4, "{st:?}");
}

/// Appends in a project reached through a symlink arrive as events too.
#[test]
fn symlinked_project_is_followed_live() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    let f = d.path().join("elsewhere/proj/s.jsonl");
    write(&f, b"{\"o\":1}\n");
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink(d.path().join("elsewhere/proj"), root.join("linked")).unwrap();
    let mut c = cfg(&root, true, 1024);
    c.rescan_interval = Duration::from_secs(3600); // events only
    let mut live = Live::start_with(c);
    assert_eq!(live.caught_up(), vec!["{\"o\":1}"]);
    append(&f, b"{\"o\":2}\n");
    assert_eq!(live.next_line(), "{\"o\":2}");
    // a project linked while running
    write(&d.path().join("other/s.jsonl"), b"{\"p\":1}\n");
    std::os::unix::fs::symlink(d.path().join("other"), root.join("linked2")).unwrap();
    assert_eq!(live.next_line(), "{\"p\":1}");
}

/// Collects what the tailer logs (it runs on the test's thread here).
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Drop this thread's file-system privileges when running as root (root reads
/// everything, so nothing would be unreadable); restored on drop.
struct Unprivileged(Option<u32>);

impl Unprivileged {
    fn new() -> Unprivileged {
        // SAFETY: setfsuid only changes the calling thread's file-system uid.
        let prev = unsafe { libc::setfsuid(65534) };
        Unprivileged((prev == 0).then_some(0))
    }
}

impl Drop for Unprivileged {
    fn drop(&mut self) {
        if let Some(uid) = self.0 {
            // SAFETY: as above; back to the thread's original fsuid.
            unsafe { libc::setfsuid(uid) };
        }
    }
}

/// Unreadable files and directories were skipped without a word. Each is
/// logged once (path and reason), however often the tailer looks again.
#[test]
fn unreadable_paths_are_logged_once() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    write(&d.path().join("ok/s.jsonl"), b"{\"ok\":1}\n");
    let secret = d.path().join("ok/secret.jsonl");
    write(&secret, b"{\"no\":1}\n");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let closed = d.path().join("closed");
    write(&closed.join("s.jsonl"), b"{\"no\":2}\n");
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o000)).unwrap();

    let logs = Logs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(800));
        s.store(true, Ordering::SeqCst);
    });
    let (tx, mut rx) = mpsc::channel(100);
    let c = cfg(d.path(), true, 1024); // rescans every 100 ms
    let st = tracing::subscriber::with_default(subscriber, || {
        let _guard = Unprivileged::new();
        run_source(&c, HashMap::new(), tx, stop).unwrap()
    });
    stopper.join().unwrap();
    let mut got = Vec::new();
    while let Ok(batch) = rx.try_recv() {
        for e in batch {
            if let SourceEvent::Line(l) = e {
                got.push(String::from_utf8_lossy(&l.bytes).into_owned());
            }
        }
    }
    assert_eq!(got, vec!["{\"ok\":1}"]);
    assert!(st.rescans >= 3, "{st:?}");
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count(&secret.display().to_string()), 1, "{text}");
    assert_eq!(count(&closed.display().to_string()), 1, "{text}");
    assert_eq!(count("Permission denied"), 2, "{text}");
    assert_eq!(st.skipped, 2, "{st:?}");
}

/// One project directory whose name is not UTF-8 made every checkpoint
/// commit and spooled batch fail: nothing from any file was ever stored.
#[test]
fn non_utf8_project_dir_is_read_and_checkpointed_exactly() {
    let d = tempfile::tempdir().unwrap();
    write(&d.path().join("ok/s.jsonl"), b"{\"ok\":1}\n");
    let bad_dir = d.path().join(OsStr::from_bytes(b"caf\xe9-\xff"));
    let bad = bad_dir.join("s.jsonl");
    write(&bad, b"{\"bad\":1}\n");
    let (tx, mut rx) = mpsc::channel(100);
    let st = run_source(
        &cfg(d.path(), false, 1024),
        HashMap::new(),
        tx,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    assert_eq!(st.non_utf8_paths, 1);
    let mut evs = Vec::new();
    while let Ok(batch) = rx.try_recv() {
        evs.extend(batch);
    }
    let mut got: Vec<(String, String)> = evs
        .iter()
        .filter_map(|e| match e {
            SourceEvent::Line(l) => Some((
                l.project.to_string(),
                String::from_utf8_lossy(&l.bytes).into_owned(),
            )),
            _ => None,
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "caf\u{FFFD}-\u{FFFD}".to_string(),
                "{\"bad\":1}".to_string()
            ),
            ("ok".to_string(), "{\"ok\":1}".to_string())
        ]
    );

    // Checkpoints keep the exact bytes of the name, on disk and in the spool.
    let cps = last_checkpoints(&evs);
    let updates: Vec<(PathBuf, Option<FileCheckpoint>)> =
        cps.iter().map(|(p, c)| (p.clone(), Some(*c))).collect();
    let store_path = d.path().join("state/cp.json");
    CheckpointStore::open(&store_path)
        .unwrap()
        .commit(&updates)
        .unwrap();
    let store = CheckpointStore::open(&store_path).unwrap();
    assert_eq!(store.get(&bad), Some(cps[&bad]));
    let spool = crate::sink::spool::Spool::open(&d.path().join("state/spool")).unwrap();
    let mut file = spool.batch_file();
    spool.seal(&mut file, "0001-1-1", &updates).unwrap();
    match spool.pending().unwrap().pop() {
        Some(crate::sink::spool::Spooled::Encoded(back)) => {
            assert_eq!(back.checkpoints, updates);
            assert!(back.tables.is_empty());
        }
        _ => panic!("the spooled batch did not come back"),
    }
    // and resume: nothing read twice
    assert!(lines(&pass(d.path(), store.all(), 1024)).is_empty());
}
