//! Issue 14, end to end: a Python and a JavaScript classifier scaffolded by
//! `plugin new` are built by their own build.sh (which installs the pinned
//! guest toolchain under $CLAUDE_INGEST_HOME/sdk), pass `plugin test`, are
//! dropped into the plugins dir of a RUNNING engine with a rule that calls
//! them, and their labels land in ClickHouse.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn cli(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_claude-ingest"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "error")
        .output()
        .expect("run claude-ingest")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `plugin new`, build.sh, `plugin test`: returns the built component.
fn scaffold_build_and_test(work: &Path, name: &str, lang: &str) -> std::path::PathBuf {
    let o = cli(&["plugin", "new", name, "--lang", lang], work);
    assert!(o.status.success(), "plugin new: {}", text(&o));
    let dir = work.join(name);
    let t0 = Instant::now();
    let o = Command::new("bash")
        .arg(dir.join("build.sh"))
        .output()
        .expect("run build.sh");
    assert!(o.status.success(), "{name}/build.sh: {}", text(&o));
    eprintln!("{name}: built in {:.1} s", t0.elapsed().as_secs_f64());
    let o = cli(&["plugin", "test", dir.to_str().unwrap()], work);
    assert!(o.status.success(), "plugin test {name}: {}", text(&o));
    assert!(
        text(&o).contains(&format!("{name}: 2 of 2 samples as expected")),
        "{}",
        text(&o)
    );
    dir.join("dist").join(format!("{name}.wasm"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaffolded_python_and_js_classifiers_label_entries_in_a_running_engine() {
    let work = tempfile::tempdir().unwrap();
    let built: Vec<_> = [("py_tags", "python"), ("js_tags", "js")]
        .iter()
        .map(|(name, lang)| (*name, scaffold_build_and_test(work.path(), name, lang)))
        .collect();

    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let plugins = state.path().join("plugins");
    let rules = state.path().join("rules");
    std::fs::create_dir_all(&plugins).unwrap();
    copy_default_rules(&rules);
    std::fs::create_dir_all(root.path().join("p")).unwrap();
    let (mut cfg, ch) = config("plugins_sdk", root.path(), state.path());
    cfg.plugins_dir = plugins.clone();
    cfg.rules_dir = rules.clone();
    cfg.batch.max_delay_ms = 50;
    let engine = start(cfg).await;
    let t0 = Instant::now();
    while !engine.status.caught_up.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let file = root.path().join("p/s.jsonl");
    let line = |i: usize| {
        serde_json::json!({"type": "assistant", "uuid": format!("a{i}"), "sessionId": "s",
            "timestamp": "2026-10-02T10:00:00.000Z",
            "message": {"id": format!("m{i}"), "role": "assistant", "model": "claude-sonnet-4-5-20250929",
                "content": [{"type": "tool_use", "id": format!("toolu_{i}"), "name": "Bash", "input": {"command": "ls"}}]}})
        .to_string()
    };
    let labelled = |i: usize, name: &str| {
        format!("SELECT count() FROM claude_messages WHERE uuid = 'a{i}' AND has(labels, '{name}:tool:Bash') AND has(labels, '{name}:assistant')")
    };
    append(&file, &[line(0)]);
    let stored = "SELECT count() FROM claude_messages WHERE uuid = 'a0'";
    assert_eq!(wait_count(&ch, stored, 1, Duration::from_secs(10)).await, 1);

    // Hot-load both components and the rule that calls them.
    for (name, wasm) in &built {
        std::fs::copy(wasm, plugins.join(format!("{name}.wasm"))).unwrap();
    }
    std::fs::write(
        rules.join("70-sdk.yaml"),
        "plugins:\n  - plugin: py_tags\n  - plugin: js_tags\n",
    )
    .unwrap();
    // `plugin test` compiled both into wasmtime's cache, so the reload is quick;
    // entries appended before it lands are dead-lettered (the rule's plugin is
    // missing), so wait for the reload instead of guessing.
    let t0 = Instant::now();
    let mut i = 1;
    loop {
        append(&file, &[line(i)]);
        let both = wait_count(&ch, &labelled(i, "py_tags"), 1, Duration::from_secs(5)).await == 1
            && count(&ch, &labelled(i, "js_tags")).await == 1;
        if both {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "labels never landed"
        );
        i += 1;
    }
    assert_eq!(count(&ch, &labelled(0, "py_tags")).await, 0);
    engine.stop().await;
    ch.drop_database().await.unwrap();
}

/// Components run in the core modules' sandbox: a Python classifier that
/// never returns is stopped by its fuel / CPU budget (first attempt and the
/// one retry), fails only its own entries, and the next entry gets a fresh
/// instance that is stopped the same way, in well under the wall backstop.
#[test]
fn a_looping_python_component_is_stopped_by_its_budget() {
    let work = tempfile::tempdir().unwrap();
    let o = cli(
        &["plugin", "new", "py_loop", "--lang", "python"],
        work.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let dir = work.path().join("py_loop");
    let app = std::fs::read_to_string(dir.join("app.py")).unwrap();
    let looping = app.replace(
        "        try:\n            doc = json.loads(entry.json)",
        "        while True:\n            pass\n        try:\n            doc = json.loads(entry.json)",
    );
    assert_ne!(app, looping, "the template changed: update this test");
    std::fs::write(dir.join("app.py"), looping).unwrap();
    let o = Command::new("bash")
        .arg(dir.join("build.sh"))
        .output()
        .unwrap();
    assert!(o.status.success(), "build.sh: {}", text(&o));
    // Compile once (cached), so the timing below is the calls alone.
    let _ = cli(&["plugin", "test", dir.to_str().unwrap()], work.path());
    let t0 = Instant::now();
    let o = cli(&["plugin", "test", dir.to_str().unwrap()], work.path());
    let took = t0.elapsed();
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    for sample in [1, 2] {
        let stopped = [
            format!("FAIL sample {sample}: plugin failed: plugin `py_loop` ran out of fuel"),
            format!(
                "FAIL sample {sample}: plugin failed: plugin `py_loop` exceeded its time limit"
            ),
        ];
        assert!(stopped.iter().any(|s| out.contains(s.as_str())), "{out}");
    }
    assert!(out.contains("py_loop: 0 of 2 samples as expected"), "{out}");
    assert!(took < Duration::from_secs(30), "took {took:?}: {out}");
}

/// The memory cap holds for components too: a Python classifier that asks
/// for 1 GiB (over the default 512 MiB ceiling, even for a retry) is
/// refused the memory inside the sandbox -- Python sees a MemoryError --
/// instead of taking it from the engine.
#[test]
fn a_python_component_over_its_memory_cap_is_refused_the_memory() {
    let work = tempfile::tempdir().unwrap();
    let o = cli(
        &["plugin", "new", "py_hog", "--lang", "python"],
        work.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let dir = work.path().join("py_hog");
    let app = std::fs::read_to_string(dir.join("app.py")).unwrap();
    let hog = app.replace(
        "        try:\n            doc = json.loads(entry.json)",
        "        try:\n            hog = bytearray(1 << 30)\n        except MemoryError:\n            \
         raise Err(\"memory capped\")\n        raise Err(f\"got {len(hog)} bytes\")\n        \
         try:\n            doc = json.loads(entry.json)",
    );
    assert_ne!(app, hog, "the template changed: update this test");
    std::fs::write(dir.join("app.py"), hog).unwrap();
    let expect = r#"[{"error": "memory capped"}, {"error": "memory capped"}]"#;
    std::fs::write(dir.join("expected.json"), expect).unwrap();
    let o = Command::new("bash")
        .arg(dir.join("build.sh"))
        .output()
        .unwrap();
    assert!(o.status.success(), "build.sh: {}", text(&o));
    let o = cli(&["plugin", "test", dir.to_str().unwrap()], work.path());
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("py_hog: 2 of 2 samples as expected"), "{out}");
}
