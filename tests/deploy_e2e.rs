//! Deployable anywhere (issue 12, points 5 and 6): an installed copy of the
//! binary, run from `/` with no repository at hand, sets itself up, ingests
//! with the built-in rule pack (overridden and extended by the user's rules
//! dir), and `sql` / `serve` attach read-only to a running `ingest`; `service
//! install` writes a unit systemd accepts, with no secret in it.

mod common;

use common::{append, entry_lines};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A private world: a copy of the binary outside the checkout, a fresh HOME
/// (config, data home) whose engine venv is the one already installed.
struct World {
    tmp: tempfile::TempDir,
    bin: PathBuf,
}

/// One installed copy for the whole test binary, made before any test spawns
/// a process: copying it per test raced with other tests' forks (a child
/// inheriting the copy's open write handle makes `exec` fail with "Text file
/// busy"). A hard link opens nothing for writing; a copy is the fallback.
fn installed_binary() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("claude-ingest-installed")
            .tempdir()
            .unwrap()
            .keep();
        let bin = dir.join("bin/claude-ingest");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        let built = env!("CARGO_BIN_EXE_claude-ingest");
        if std::fs::hard_link(built, &bin).is_err() {
            std::fs::copy(built, &bin).unwrap();
        }
        bin
    })
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let bin = installed_binary().to_path_buf();
        let data = tmp.path().join("home/.local/share/claude-ingest");
        std::fs::create_dir_all(&data).unwrap();
        // The venv `setup` would download (150 MB): reuse the installed one.
        let python = claude_ingest::sink::embedded::default_python();
        let venv = python.parent().and_then(Path::parent).unwrap();
        std::os::unix::fs::symlink(venv, data.join("chdb-venv")).unwrap();
        std::fs::create_dir_all(tmp.path().join("projects")).unwrap();
        World { tmp, bin }
    }

    fn home(&self) -> PathBuf {
        self.tmp.path().join("home")
    }

    fn user_rules(&self) -> PathBuf {
        self.home().join(".config/claude-ingest/rules")
    }

    fn projects(&self) -> PathBuf {
        self.tmp.path().join("projects")
    }

    /// The installed binary, run from `/` with only HOME pointing at the world.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.current_dir("/")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("RUST_LOG", "warn")
            .arg("--root")
            .arg(self.projects())
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run the installed binary")
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const LOCAL_RULE: &str = "classify:\n  - label: from_user_rules\n    when: \"type == 'user'\"\n";

#[test]
fn the_installed_binary_sets_up_and_ingests_from_root_with_built_in_rules() {
    let w = World::new();
    let setup = ok(w.run(&["setup"]));
    assert!(setup.contains("already installed"), "{setup}");
    assert!(setup.contains("starts and answers"), "{setup}");
    let plugins = w.home().join(".local/share/claude-ingest/plugins");
    assert!(plugins.join("email_mask.wat").is_file(), "{setup}");
    assert!(ok(w.run(&["setup"])).contains("(0 updated)"), "idempotent");

    // The user's rules: one extends the pack, one switches a built-in file off.
    std::fs::create_dir_all(w.user_rules()).unwrap();
    std::fs::write(w.user_rules().join("60-local.yaml"), LOCAL_RULE).unwrap();
    std::fs::write(w.user_rules().join("50-plugins.yaml"), "").unwrap();
    let check = ok(w.run(&["check-rules"]));
    assert!(check.contains("built-in pack + "), "{check}");
    let line = |name: &str| {
        check
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{check}"))
            .to_string()
    };
    assert!(line("30-tables.yaml").ends_with("built-in"), "{check}");
    assert!(
        line("50-plugins.yaml").contains("overrides the built-in file"),
        "{check}"
    );
    assert!(line("60-local.yaml").contains("60-local.yaml"), "{check}");

    for i in 0..5 {
        append(&w.projects().join("p/s.jsonl"), &entry_lines("d", i));
    }
    let out = ok(w.run(&["backfill", "--quiet"]));
    assert!(out.contains("15 lines"), "{out}");
    let q = "SELECT count() AS n, countIf(has(labels, 'from_user_rules')) AS mine, \
             (SELECT count() FROM claude_requests FINAL) AS requests FROM claude_messages";
    let tsv = ok(w.run(&["sql", q, "--format", "tsv"]));
    assert_eq!(
        tsv, "n\tmine\trequests\n15\t10\t5\n",
        "user rule applied, built-in tables filled"
    );
}

/// `ingest` as a service would run it, from `/`.
struct Ingest(Child);

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A bare HTTP/1.0 GET (the test needs no client beyond this): the response.
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    Some(response)
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sql_and_serve_attach_read_only_to_a_running_ingest() {
    let w = World::new();
    for i in 0..4 {
        append(&w.projects().join("p/s.jsonl"), &entry_lines("a", i));
    }
    let mut ingest = Ingest(
        w.cmd(&["ingest", "--no-api"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    // Before any `sql`: one started first would hold the store itself.
    let access = w
        .home()
        .join(".local/share/claude-ingest/state/clickhouse/access.json");
    wait_for(
        "ingest to publish its engine",
        Duration::from_secs(90),
        || access.exists(),
    );
    let count = |w: &World| {
        w.run(&[
            "sql",
            "SELECT count() FROM claude_messages",
            "--format",
            "csv",
        ])
    };
    wait_for(
        "ingest to store 12 messages",
        Duration::from_secs(90),
        || {
            let o = count(&w);
            o.status.success() && String::from_utf8_lossy(&o.stdout) == "\"count()\"\n12\n"
        },
    );
    let json = ok(w.run(&[
        "sql",
        "SELECT project, count() AS n FROM claude_messages GROUP BY project",
        "--format",
        "json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["n"], 12, "{json}");
    let table = ok(w.run(&["sql", "SELECT 1 AS one, 'x' AS s"]));
    assert_eq!(table, "one  s\n---  -\n  1  x\n(1 row)\n");
    // Read-only: the attached key cannot write or reach outside the data.
    let o = w.run(&[
        "sql",
        "INSERT INTO claude_dead_letters (stage) VALUES ('x')",
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    let o = w.run(&["sql", "SELECT * FROM file('/etc/passwd')"]);
    assert!(
        !o.status.success() && text(&o).contains("ACCESS_DENIED"),
        "{}",
        text(&o)
    );

    // `serve` attaches too (it used to fail on the held store).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let serve = Ingest(
        w.cmd(&["serve", "--listen", &listen])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    wait_for(
        "serve to answer from the attached store",
        Duration::from_secs(30),
        // Hyper answers an HTTP/1.0 request in kind: check the status only.
        || http_get(&listen, "/api/overview").is_some_and(|r| r.split(' ').nth(1) == Some("200")),
    );

    // Stopped: `sql` starts the engine itself.
    // SAFETY: plain syscall on our own child.
    unsafe { libc::kill(ingest.0.id() as i32, libc::SIGTERM) };
    assert!(ingest.0.wait().unwrap().success());
    drop(serve);
    assert_eq!(ok(count(&w)), "\"count()\"\n12\n");
}

#[test]
fn a_held_store_without_a_published_engine_is_refused_politely() {
    let w = World::new();
    let data = w.home().join(".local/share/claude-ingest/state/clickhouse");
    std::fs::create_dir_all(&data).unwrap();
    let lock = std::fs::File::create(data.join(".lock")).unwrap();
    // SAFETY: flock on a file we own, released when `lock` drops.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) },
        0
    );
    let o = w.run(&["sql", "SELECT 1"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("published no engine to attach to"),
        "{}",
        text(&o)
    );
}

#[test]
fn service_install_writes_units_without_secrets() {
    let w = World::new();
    let config = w.home().join(".config");
    let install = |kind: &str| {
        w.cmd(&[
            "--clickhouse-url",
            "https://ch.example.com:8443",
            "--clickhouse-user",
            "team",
            "service",
            "install",
            "--no-start",
            "--kind",
            kind,
            "--",
            "--no-api",
        ])
        .env("CLICKHOUSE_PASSWORD", "s3cret-pw")
        .output()
        .unwrap()
    };
    let out = ok(install("systemd"));
    assert!(out.contains("not started"), "{out}");
    let unit_path = config.join("systemd/user/claude-ingest.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let pw_file = config.join("claude-ingest/clickhouse-password");
    let exec = format!(
        "ExecStart=\"{}\" \"--root\" \"{}\" \"--clickhouse-url\" \"https://ch.example.com:8443\" \"--clickhouse-user\" \"team\" \"--clickhouse-password-file\" \"{}\" \"ingest\" \"--no-api\"\n",
        w.bin.display(), w.projects().display(), pw_file.display()
    );
    assert!(unit.contains(&exec), "{unit}\nwant {exec}");
    assert!(unit.contains("Restart=on-failure\n"), "{unit}");
    assert!(!unit.contains("s3cret"), "{unit}");
    for private in [pw_file.clone(), config.join("claude-ingest/service.env")] {
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", private.display());
    }
    assert_eq!(std::fs::read_to_string(&pw_file).unwrap(), "s3cret-pw\n");
    if let Ok(v) = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .output()
    {
        // systemd checks syntax, the executable and the quoting for real.
        assert!(v.status.success() && v.stderr.is_empty(), "{}", text(&v));
    }

    ok(install("launchd"));
    let plist = w
        .home()
        .join("Library/LaunchAgents/com.github.claude-ingest.plist");
    let parse = Command::new("python3")
        .args(["-c", "import plistlib,sys; p=plistlib.load(open(sys.argv[1],'rb')); print(p['KeepAlive']['SuccessfulExit'], ' '.join(p['ProgramArguments'][1:]))"])
        .arg(&plist)
        .output()
        .unwrap();
    let parsed = ok(parse);
    assert!(parsed.starts_with("False --root "), "{parsed}");
    assert!(!std::fs::read_to_string(&plist).unwrap().contains("s3cret"));

    let out = ok(w.run(&["service", "uninstall", "--kind", "systemd"]));
    assert!(out.contains("removed"), "{out}");
    assert!(!unit_path.exists());
}
