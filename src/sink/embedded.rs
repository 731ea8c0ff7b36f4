//! The embedded default: a current ClickHouse engine (PyPI `chdb-core`) run
//! in a child process behind a loopback HTTP front (`scripts/chdb_http.py`),
//! so the engine talks to it exactly as to a real server.
//!
//! Why a child process: chdb-core's wheel does not export its C API for other
//! callers and has its own network listeners compiled out; Python can load it.
//!
//! Security (README, "Security model"): chDB itself has no access control, so
//! the front is the gate. Each start makes two random keys (a `writer` for the
//! sink, a read-only `reader` for the API), hands them to the child over its
//! stdin pipe (never argv or the environment, which `ps` shows) and writes them
//! with the URL to `<data_dir>/access.json` (0600, in a 0700 directory): the
//! one documented way for the engine's own tools, run as the same OS user, to
//! attach ([`Access::read`]).
//!
//! Lifecycle: we bind the loopback listener and the child inherits it, so a
//! respawned child serves the same port and requests made meanwhile wait in the
//! kernel's backlog. A supervisor thread respawns a child that dies (with
//! backoff, logged, reported in [`EngineHealth`]). The child's stdin is a pipe
//! we hold: when we die (even `kill -9`) it sees EOF and exits. It holds
//! `.child.lock` until it is gone, and a new start waits (bounded) for that
//! lock, so an immediate restart does not collide with a dying predecessor.

use crate::sink::clickhouse::ChSettings;
use crate::sink::status::EngineHealth;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The HTTP front, compiled in so the binary works from any directory.
const FRONT_SCRIPT: &str = include_str!("../../scripts/chdb_http.py");
/// Where the URL and keys of the running engine are published (0600).
pub const ACCESS_FILE: &str = "access.json";
const CHILD_LOCK: &str = ".child.lock";
/// How long a start waits for a previous engine to let go of the data dir.
const LOCK_WAIT: Duration = Duration::from_secs(15);
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A child that served this long had a real life: the next respawn is quick again.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Which key a client uses: the front enforces `readonly=1` for the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Reader,
    Writer,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: <redacted> }}",
            self.user
        )
    }
}

/// What `access.json` holds: enough for a same-user tool to attach.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Access {
    pub url: String,
    /// The `claude-ingest` process that owns the engine.
    pub pid: u32,
    pub reader: Credentials,
    pub writer: Credentials,
    /// The opt-in read-only login for other tools (`clickhouse.http_endpoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Credentials>,
}

/// The embedded engine's HTTP interface opened to other tools: a fixed
/// loopback port and one more read-only login.
#[derive(Debug, Clone)]
pub struct Exposed {
    pub port: u16,
    pub login: Credentials,
}

impl Access {
    fn generate(url: String) -> Access {
        let key = || hex::encode(rand::random::<[u8; 32]>());
        Access {
            url,
            pid: std::process::id(),
            reader: Credentials {
                user: "reader".into(),
                password: key(),
            },
            writer: Credentials {
                user: "writer".into(),
                password: key(),
            },
            tools: None,
        }
    }

    /// Attach to a running engine's data dir (same OS user only: the file is
    /// 0600 in a 0700 directory). For `sql`/`serve` next to a running `ingest`.
    pub fn read(data_dir: &Path) -> Result<Access> {
        let path = data_dir.join(ACCESS_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (is an engine running on this data dir?)",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("malformed {}", path.display()))
    }

    pub fn credentials(&self, role: Role) -> &Credentials {
        match role {
            Role::Reader => &self.reader,
            Role::Writer => &self.writer,
        }
    }

    /// Connection settings for `role` on `database`.
    pub fn settings(&self, role: Role, database: &str) -> ChSettings {
        let c = self.credentials(role);
        ChSettings {
            url: self.url.clone(),
            user: c.user.clone(),
            password: c.password.clone(),
            database: database.to_string(),
            lz4: false,
        }
    }

    /// The line the child reads from stdin.
    fn users_line(&self) -> String {
        let user =
            |c: &Credentials, role: &str| serde_json::json!({"key": c.password, "role": role});
        let mut users = serde_json::json!({
            self.reader.user.clone(): user(&self.reader, "reader"),
            self.writer.user.clone(): user(&self.writer, "writer"),
        });
        if let Some(t) = &self.tools {
            users[t.user.as_str()] = user(t, "reader");
        }
        let users = serde_json::json!({ "users": users });
        format!("{users}\n")
    }

    fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }
}

pub struct EmbeddedClickHouse {
    access: Access,
    data_dir: PathBuf,
    health: Arc<EngineHealth>,
    control: Arc<Control>,
    supervisor: Option<JoinHandle<()>>,
    _lock: File,
}

/// Shared by the owner (stop) and the supervisor (respawn).
#[derive(Default)]
struct Control {
    state: Mutex<ChildState>,
    wake: Condvar,
}

#[derive(Default)]
struct ChildState {
    /// The live, not yet reaped child (so signalling it cannot hit a reused pid).
    pid: Option<i32>,
    stopping: bool,
}

impl Control {
    fn lock(&self) -> std::sync::MutexGuard<'_, ChildState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleep up to `d`; true when the engine is being stopped.
    fn sleep(&self, d: Duration) -> bool {
        let st = self.lock();
        let (st, _) = self
            .wake
            .wait_timeout_while(st, d, |s| !s.stopping)
            .unwrap_or_else(|e| e.into_inner());
        st.stopping
    }
}

/// Everything needed to start one child.
struct Launcher {
    python: PathBuf,
    script: PathBuf,
    data_dir: PathBuf,
    listener: TcpListener,
    users_line: String,
}

/// A started child and the pipe whose EOF tells it we are gone.
struct Running {
    child: Child,
    _stdin: ChildStdin,
}

/// The interpreter of the venv made by `claude-ingest setup`.
pub fn default_python() -> PathBuf {
    if let Some(p) = std::env::var_os("CLAUDE_INGEST_PYTHON") {
        return PathBuf::from(p);
    }
    crate::builtin::data_home().join("chdb-venv/bin/python")
}

/// Create `dir` (and missing parents) readable by its owner only, and tighten
/// it if it exists: it holds keys, checkpoints and the data.
pub fn private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private (chmod 700)", dir.display()))
}

impl EmbeddedClickHouse {
    /// Start the engine on `data_dir` (created if needed) on a free loopback
    /// port with fresh keys, and wait until it serves.
    pub fn start(python: Option<&Path>, data_dir: &Path) -> Result<EmbeddedClickHouse> {
        Self::launch(python, data_dir, None, None)
    }

    /// [`Self::start`], with the HTTP interface opened to other tools when
    /// `exposed` is given (config `clickhouse.http_endpoint`).
    pub fn start_exposed(
        python: Option<&Path>,
        data_dir: &Path,
        exposed: Option<Exposed>,
    ) -> Result<EmbeddedClickHouse> {
        Self::launch(python, data_dir, None, exposed)
    }

    /// Start a stopped engine again on its old port with its old keys, so
    /// clients made for it keep working (tests of an outage use this).
    pub fn restart(
        python: Option<&Path>,
        data_dir: &Path,
        previous: &Access,
    ) -> Result<EmbeddedClickHouse> {
        Self::launch(python, data_dir, Some(previous), None)
    }

    fn launch(
        python: Option<&Path>,
        data_dir: &Path,
        previous: Option<&Access>,
        exposed: Option<Exposed>,
    ) -> Result<EmbeddedClickHouse> {
        let python = python.map(Path::to_path_buf).unwrap_or_else(default_python);
        if !python.exists() {
            bail!(
                "the embedded ClickHouse engine is not installed ({} is missing): run \
                 `claude-ingest setup`, or point --clickhouse-url at a ClickHouse server",
                python.display()
            );
        }
        private_dir(data_dir)?;
        let lock = lock_data_dir(data_dir)?;
        wait_for_lock(&data_dir.join(CHILD_LOCK), LOCK_WAIT)
            .context("the previous embedded engine did not exit")?;
        let script = data_dir.join(".chdb_http.py");
        std::fs::write(&script, FRONT_SCRIPT)
            .with_context(|| format!("cannot write {}", script.display()))?;
        let port = match (previous, &exposed) {
            (Some(a), _) => url::Url::parse(&a.url)?.port().unwrap_or(0),
            (None, Some(e)) => e.port,
            (None, None) => 0,
        };
        // Loopback only, exposed or not: other machines go through a tunnel.
        let listener = TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
        let access = match previous {
            Some(a) => a.clone(),
            None => {
                let mut a = Access::generate(format!("http://{}", listener.local_addr()?));
                a.tools = exposed.map(|e| e.login);
                a
            }
        };
        let launcher = Launcher {
            python,
            script,
            data_dir: data_dir.to_path_buf(),
            listener,
            users_line: access.users_line(),
        };
        let control = Arc::new(Control::default());
        let first = launcher
            .start(&control)?
            .ok_or_else(|| anyhow!("stopped while starting"))?;
        access.write(&data_dir.join(ACCESS_FILE))?;
        let health = Arc::new(EngineHealth::default());
        health.up.store(true, Relaxed);
        let supervisor = {
            let (control, health) = (control.clone(), health.clone());
            std::thread::Builder::new()
                .name("chdb-supervisor".into())
                .spawn(move || supervise(launcher, first, &control, &health))?
        };
        tracing::info!(url = %access.url, data_dir = %data_dir.display(), "embedded ClickHouse (chDB) started");
        Ok(EmbeddedClickHouse {
            access,
            data_dir: data_dir.to_path_buf(),
            health,
            control,
            supervisor: Some(supervisor),
            _lock: lock,
        })
    }

    pub fn url(&self) -> &str {
        &self.access.url
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn access(&self) -> &Access {
        &self.access
    }

    /// Connection settings for `role` on `database`.
    pub fn settings(&self, role: Role, database: &str) -> ChSettings {
        self.access.settings(role, database)
    }

    /// Live state of the child (for `/healthz`).
    pub fn health(&self) -> Arc<EngineHealth> {
        self.health.clone()
    }

    /// The current child's pid (tests kill it to prove the respawn).
    pub fn child_pid(&self) -> Option<i32> {
        self.control.lock().pid
    }
}

impl Drop for EmbeddedClickHouse {
    fn drop(&mut self) {
        {
            let mut st = self.control.lock();
            st.stopping = true;
            if let Some(pid) = st.pid {
                // SAFETY: plain syscall; the pid is our unreaped child (see ChildState).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        self.control.wake.notify_all();
        if let Some(t) = self.supervisor.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(self.data_dir.join(ACCESS_FILE));
    }
}

/// Wait for the child to exit, respawn it (backoff), until the owner stops us.
fn supervise(launcher: Launcher, first: Running, control: &Control, health: &EngineHealth) {
    let mut running = first;
    let mut backoff = BACKOFF_MIN;
    loop {
        let born = Instant::now();
        let status = wait_for_exit(running, control);
        let Some(status) = status else { return };
        health.up.store(false, Relaxed);
        health.set_last_exit(format!("{status}"));
        tracing::warn!(%status, "embedded ClickHouse engine exited; restarting it");
        if born.elapsed() > STABLE_AFTER {
            backoff = BACKOFF_MIN;
        }
        running = loop {
            if control.sleep(backoff) {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            match launcher.start(control) {
                Ok(Some(r)) => break r,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), retry_in = ?backoff, "embedded ClickHouse engine failed to restart")
                }
            }
        };
        health.restarts.fetch_add(1, Relaxed);
        health.up.store(true, Relaxed);
        tracing::info!(
            restarts = health.restarts.load(Relaxed),
            "embedded ClickHouse engine restarted"
        );
    }
}

/// Block until the child exits; reap it. None when the owner stopped it.
fn wait_for_exit(mut running: Running, control: &Control) -> Option<ExitStatus> {
    let pid = running.child.id() as libc::id_t;
    loop {
        // SAFETY: zeroed siginfo is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // WNOWAIT: the pid stays ours until we clear it under the lock below.
        // SAFETY: waitid on our own child with a valid siginfo pointer.
        let rc =
            unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
    }
    let mut st = control.lock();
    st.pid = None;
    let status = running.child.wait();
    if st.stopping {
        return None;
    }
    status.ok()
}

impl Launcher {
    /// Start a child and wait until it serves. None when the owner is stopping.
    fn start(&self, control: &Control) -> Result<Option<Running>> {
        wait_for_lock(&self.data_dir.join(CHILD_LOCK), LOCK_WAIT)
            .context("the previous embedded engine did not exit")?;
        let mut child = self.spawn()?;
        let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin pipe"))?;
        {
            let mut st = control.lock();
            if st.stopping {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            }
            st.pid = Some(child.id() as i32);
        }
        let ready = stdin
            .write_all(self.users_line.as_bytes())
            .context("cannot pass the keys to the engine")
            .and_then(|()| self.wait_ready(&mut child));
        if let Err(e) = ready {
            control.lock().pid = None;
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(Some(Running {
            child,
            _stdin: stdin,
        }))
    }

    fn spawn(&self) -> Result<Child> {
        let fd = self.listener.as_raw_fd();
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script)
            .arg("--path")
            .arg(self.data_dir.join("data"))
            .arg("--lock-file")
            .arg(self.data_dir.join(CHILD_LOCK))
            .args(["--listen-fd", "3"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: dup2 is async-signal-safe; it gives the child our listening
        // socket as fd 3 (without close-on-exec), nothing else is touched.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn()
            .with_context(|| format!("cannot start {}", self.python.display()))
    }

    /// Read `READY <port>` from the child's stdout; forward its stderr to the log.
    fn wait_ready(&self, child: &mut Child) -> Result<()> {
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no stderr pipe"))?;
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("chdb-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                    let _ = tx.send(line);
                }
            })?;
        let tail = Arc::new(Mutex::new(VecDeque::<String>::new()));
        let tail_w = tail.clone();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("chdb-stderr".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                    tracing::debug!(target: "chdb", "{line}");
                    if let Ok(mut t) = tail_w.lock() {
                        t.push_back(line);
                        if t.len() > 15 {
                            t.pop_front();
                        }
                    }
                }
                let _ = done_tx.send(());
            })?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if line.starts_with("READY ") {
                return Ok(());
            }
        }
        let _ = child.kill();
        let _ = done_rx.recv_timeout(Duration::from_secs(2));
        let tail: Vec<String> = tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        bail!(
            "the embedded ClickHouse engine did not start (data dir {}):\n{}",
            self.data_dir.display(),
            tail.join("\n")
        )
    }
}

/// Take and release `path`'s flock, waiting up to `wait` for its holder.
fn wait_for_lock(path: &Path, wait: Duration) -> Result<()> {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if !flock_within(&f, wait) {
        bail!("{} is still locked after {wait:?}", path.display());
    }
    Ok(()) // closing `f` releases it
}

/// Try an exclusive flock until `wait` has passed.
fn flock_within(f: &File, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        // SAFETY: flock on a valid, owned file descriptor.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One engine per data directory: chDB must not open the same files twice.
/// Waits a little, so an engine that is just exiting is not taken for a live one.
fn lock_data_dir(dir: &Path) -> Result<File> {
    let path = dir.join(".lock");
    let mut f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if !flock_within(&f, Duration::from_secs(5)) {
        bail!(
            "another claude-ingest process holds the embedded ClickHouse data in {} and has \
             published no engine to attach to (it may be starting or stopping: try again in a \
             moment; `sql`, `serve` and `report` attach to a running `ingest` by themselves)",
            dir.display()
        );
    }
    let _ = writeln!(f, "{}", std::process::id());
    Ok(f)
}
