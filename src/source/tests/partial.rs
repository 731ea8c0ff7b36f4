//! A last line without `\n`: waited for while its file is written, read as a
//! line once the file is quiet (issue: such lines were never ingested).

use super::*;
use std::time::Instant;

fn line_events(evs: &[SourceEvent]) -> Vec<&SourceLine> {
    evs.iter()
        .filter_map(|e| match e {
            SourceEvent::Line(l) => Some(l),
            _ => None,
        })
        .collect()
}

#[test]
fn backfill_reads_the_unterminated_last_line_of_an_idle_file() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("p/s.jsonl");
    write(&f, b"{\"a\":1}\n{\"b\":2}");
    age(&f, Duration::from_secs(7200));
    // A long grace: the file's age, not a wait, makes the line due.
    let mut c = cfg(d.path(), false, 1024);
    c.partial_line_grace = Duration::from_secs(3600);
    let t0 = Instant::now();
    let evs = pass_with(&c, HashMap::new());
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let ls = line_events(&evs);
    assert_eq!(lines(&evs), vec!["{\"a\":1}", "{\"b\":2}"]);
    assert_eq!((ls[1].offset, ls[1].next_offset, ls[1].length), (8, 15, 7));
    let mut cps = last_checkpoints(&evs);
    assert_eq!(cps[&f].offset, 15);

    // A writer adds the missing newline, then a line: the newline ends an
    // empty line (skipped), nothing is read twice.
    append(&f, b"\n{\"c\":3}\n");
    let evs = pass_with(&c, cps.clone());
    assert_eq!(lines(&evs), vec!["{\"c\":3}"]);
    assert!(!evs.iter().any(|e| matches!(e, SourceEvent::Reset { .. })));
    apply(&mut cps, &evs);

    // An unterminated line later continued without a newline: the
    // continuation is a line of its own (the documented choice).
    append(&f, b"{\"d\":4}");
    age(&f, Duration::from_secs(7200));
    let evs = pass_with(&c, cps.clone());
    assert_eq!(lines(&evs), vec!["{\"d\":4}"]);
    apply(&mut cps, &evs);
    append(&f, b"{\"e\":5}\n");
    let evs = pass_with(&c, cps.clone());
    assert_eq!(lines(&evs), vec!["{\"e\":5}"]);
    apply(&mut cps, &evs);
    assert!(lines(&pass_with(&c, cps)).is_empty());
}

#[test]
fn backfill_waits_out_the_grace_for_a_file_written_just_now() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("p/s.jsonl");
    write(&f, b"{\"a\":1}\n{\"b\":");
    let mut c = cfg(d.path(), false, 1024);
    c.partial_line_grace = Duration::from_millis(400);
    let t0 = Instant::now();
    let evs = pass_with(&c, HashMap::new());
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(lines(&evs), vec!["{\"a\":1}", "{\"b\":"]);
    assert!(matches!(evs.last(), Some(SourceEvent::CaughtUp)));
}

#[test]
fn live_unterminated_line_is_read_once_the_file_is_quiet() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("p/s.jsonl");
    write(&f, b"{\"a\":1}\n");
    let mut c = cfg(d.path(), true, 1024);
    c.partial_line_grace = Duration::from_millis(400);
    let mut live = Live::start_with(c);
    assert_eq!(live.caught_up(), vec!["{\"a\":1}"]);

    // Being written: every write restarts the wait.
    append(&f, b"{\"b\":");
    live.quiet_for(Duration::from_millis(200));
    append(&f, b"2}");
    let last_write = Instant::now();
    live.quiet_for(Duration::from_millis(200));
    match live.next() {
        SourceEvent::Line(l) => {
            assert_eq!(l.bytes, b"{\"b\":2}");
            assert_eq!((l.offset, l.next_offset), (8, 15));
            assert_eq!(l.checkpoint().offset, 15);
        }
        other => panic!("expected the line, got {other:?}"),
    }
    assert!(last_write.elapsed() >= Duration::from_millis(350));

    // The newline arrives late: an empty line, skipped; then a normal line.
    append(&f, b"\n{\"c\":3}\n");
    assert_eq!(live.next_line(), "{\"c\":3}");
    live.quiet_for(Duration::from_millis(600));
    let st = live.stop();
    assert_eq!(st.partial_lines, 1, "{st:?}");
}
