//! An idle follower stays idle, and an append is still read at once.

use super::*;
use std::time::Instant;

fn corpus(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for p in ["proj-a", "proj-b", "proj-c"] {
        for s in ["s1", "s2"] {
            let f = root.join(p).join(format!("{s}.jsonl"));
            write(&f, format!("{{\"p\":\"{p}\",\"s\":\"{s}\"}}\n").as_bytes());
            files.push(f);
        }
    }
    let sub = root.join("proj-a/s1/subagents/agent-1.jsonl");
    write(&sub, b"{\"sub\":1}\n");
    files.push(sub);
    files
}

/// Only file-system events may drive the follower here (no safety rescan).
fn events_only(root: &Path) -> SourceConfig {
    let mut c = cfg(root, true, 1024);
    c.rescan_interval = Duration::from_secs(3600);
    c.partial_line_grace = Duration::from_secs(3600);
    c
}

/// notify reports every open of a watched file or directory, the tailer's own
/// included. Reacting to those made an idle engine rescan itself ~2,800 times
/// a second (87 % of a core). Reads by the tailer, and by anyone else, are not
/// work: over a quiet period nothing is rescanned, opened or woken for.
#[test]
fn idle_follow_ignores_its_own_reads_and_other_readers() {
    let d = tempfile::tempdir().unwrap();
    let files = corpus(d.path());
    let mut live = Live::start_with(events_only(d.path()));
    assert_eq!(live.caught_up().len(), files.len());
    // Other readers: cat every file, list every directory (IN_OPEN, IN_CLOSE_NOWRITE).
    for f in &files {
        std::fs::read(f).unwrap();
        let _ = std::fs::read_dir(f.parent().unwrap()).unwrap().count();
    }
    let _ = std::fs::read_dir(d.path()).unwrap().count();
    live.quiet_for(Duration::from_millis(1500));
    let st = live.stop();
    assert_eq!(st.rescans, 0, "rescans while idle: {st:?}");
    assert_eq!(st.wakeups, 0, "woken by reads: {st:?}");
    assert_eq!(st.reads, files.len() as u64, "files opened: {st:?}");
}

/// With only events to drive it, an appended line reaches the consumer within
/// milliseconds (the event path does not wait for a poll).
#[test]
fn appended_line_is_read_within_milliseconds() {
    let d = tempfile::tempdir().unwrap();
    let files = corpus(d.path());
    let mut live = Live::start_with(events_only(d.path()));
    live.caught_up();
    let mut ms = Vec::new();
    for i in 0..20 {
        let t0 = Instant::now();
        append(
            &files[i % files.len()],
            format!("{{\"n\":{i}}}\n").as_bytes(),
        );
        assert_eq!(live.next_line(), format!("{{\"n\":{i}}}"));
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(20));
    }
    ms.sort_by(f64::total_cmp);
    eprintln!("append -> line: p50 {:.2} ms, max {:.2} ms", ms[10], ms[19]);
    assert!(ms[10] < 50.0, "median {:.1} ms: {ms:?}", ms[10]);
    assert!(ms[18] < 250.0, "p95 {:.1} ms: {ms:?}", ms[18]);
    let st = live.stop();
    assert_eq!(st.rescans, 0, "{st:?}");
}
