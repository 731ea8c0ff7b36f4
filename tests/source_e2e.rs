//! The source's file lifecycle through the whole pipeline into the real
//! ClickHouse: a project directory whose name is not UTF-8 stops nothing, a
//! session renamed between runs is not counted twice, and the unterminated
//! last line of a file nobody writes any more is stored by `backfill`.

mod common;

use claude_ingest::pipeline::{run, RunOptions};
use common::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

const MESSAGES: &str = "SELECT count() FROM claude_messages";

fn checkpoint_text(state: &Path, db: &str) -> String {
    std::fs::read_to_string(state.join(format!("checkpoints-{db}.json"))).unwrap_or_default()
}

/// One such directory made the writer fail on its first batch (its path could
/// not be spooled or checkpointed): nothing from any file was ever stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_project_dir_does_not_stop_the_others() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (cfg, ch) = config("nonutf8", root.path(), state.path());
    append(&root.path().join("ok/s1.jsonl"), &entry_lines("ok", 0));
    let bad = root
        .path()
        .join(OsStr::from_bytes(b"-home-caf\xe9"))
        .join("s2.jsonl");
    append(&bad, &entry_lines("bad", 0));
    append(&root.path().join("zz/s3.jsonl"), &entry_lines("zz", 0));

    let summary = run(&cfg, RunOptions::once()).await.expect("backfill");
    assert_eq!((summary.files, summary.lines), (3, 9), "{summary}");
    assert_eq!(count(&ch, MESSAGES).await, 9);
    let lossy = "SELECT count() FROM claude_messages WHERE project = '-home-caf\u{FFFD}'";
    assert_eq!(count(&ch, lossy).await, 3);
    // The checkpoint holds the exact name: a second run reads nothing again.
    assert!(checkpoint_text(state.path(), ch.database()).contains("unix_bytes_hex"));
    let again = run(&cfg, RunOptions::once())
        .await
        .expect("second backfill");
    assert_eq!(again.lines, 0, "{again}");
    assert_eq!(count(&ch, MESSAGES).await, 9);
    ch.drop_database().await.unwrap();
}

/// A rename to a name that still matches `*.jsonl` read the whole file again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_renamed_between_runs_is_not_counted_twice() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (cfg, ch) = config("rename", root.path(), state.path());
    let old = root.path().join("p/old.jsonl");
    append(&old, &[entry_lines("r", 0), entry_lines("r", 1)].concat());
    run(&cfg, RunOptions::once()).await.expect("backfill");
    assert_eq!(count(&ch, MESSAGES).await, 6);

    let new = root.path().join("p/new-name.jsonl");
    std::fs::rename(&old, &new).unwrap();
    append(&new, &entry_lines("r", 2));
    let summary = run(&cfg, RunOptions::once())
        .await
        .expect("second backfill");
    assert_eq!(summary.lines, 3, "{summary}");
    assert_eq!(count(&ch, MESSAGES).await, 9);
    let cps = checkpoint_text(state.path(), ch.database());
    assert!(
        cps.contains("new-name.jsonl") && !cps.contains("old.jsonl"),
        "{cps}"
    );
    ch.drop_database().await.unwrap();
}

/// Claude Code ends every line with `\n`; a file whose writer died mid-way
/// (or a copy that lost its last newline) kept its last entry unread forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_stores_the_unterminated_last_line_of_an_idle_file() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (cfg, ch) = config("partial", root.path(), state.path());
    let file = root.path().join("p/s.jsonl");
    let lines = entry_lines("u", 0);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, lines.join("\n")).unwrap(); // no final newline
    let old = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_modified(old))
        .unwrap();
    let summary = run(&cfg, RunOptions::once()).await.expect("backfill");
    assert_eq!(summary.lines, 3, "{summary}");
    assert_eq!(count(&ch, MESSAGES).await, 3);
    assert_eq!(summary.dead_letters, 0, "{summary}");
    ch.drop_database().await.unwrap();
}
