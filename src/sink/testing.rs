//! Test support: a real ClickHouse for tests. Uses `CLICKHOUSE_URL` when set
//! (a real server), else one embedded engine per test process. Every caller
//! gets its own fresh database, so tests can run in parallel.

use super::clickhouse::{ChClient, ChSettings};
use super::embedded::{EmbeddedClickHouse, Role};
use crate::config::{ClickHouseMode, Config};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

static EMBEDDED: OnceLock<Result<EmbeddedClickHouse, String>> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// URL of the test server (starting the embedded one on first use).
pub fn server_url() -> String {
    match embedded() {
        Some(e) => e.url().to_string(),
        None => std::env::var("CLICKHOUSE_URL").unwrap_or_default(),
    }
}

/// The test process's embedded engine (started on first use); None when
/// `CLICKHOUSE_URL` points the tests at a server.
pub fn embedded() -> Option<&'static EmbeddedClickHouse> {
    if std::env::var("CLICKHOUSE_URL").is_ok() {
        return None;
    }
    let started = EMBEDDED.get_or_init(|| {
        remove_stale_dirs();
        let dir =
            std::env::temp_dir().join(format!("claude-ingest-test-ch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        EmbeddedClickHouse::start(None, &dir).map_err(|e| format!("{e:#}"))
    });
    match started {
        Ok(e) => Some(e),
        Err(e) => panic!("cannot start the embedded ClickHouse for tests: {e}"),
    }
}

/// Data dirs of earlier test processes that are gone (statics are never dropped,
/// so each test process leaves its engine's directory behind).
fn remove_stale_dirs() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("claude-ingest-test-ch-") {
            if pid.parse::<u32>().is_ok() && !std::path::Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// A unique database name for one test.
pub fn fresh_database(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let clean: String = prefix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("t_{}_{}_{}", clean, std::process::id(), n)
}

/// Settings (the writer's login) for a fresh database on the test server.
pub fn settings(prefix: &str) -> ChSettings {
    let database = fresh_database(prefix);
    match embedded() {
        Some(e) => e.settings(Role::Writer, &database),
        None => ChSettings {
            url: server_url(),
            user: std::env::var("CLICKHOUSE_USER").unwrap_or_else(|_| "default".into()),
            password: std::env::var("CLICKHOUSE_PASSWORD").unwrap_or_default(),
            database,
            lz4: false,
        },
    }
}

/// A config for the test server: a fresh database, the repository's default
/// rule pack, no plugins, `root` as the projects tree and `state` as state dir.
pub fn config(prefix: &str, root: &Path, state: &Path) -> (Config, ChSettings) {
    let settings = settings(prefix);
    let mut cfg = Config {
        root: root.to_path_buf(),
        state_dir: state.to_path_buf(),
        rules_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"),
        plugins_dir: state.join("no-plugins"),
        ..Config::default()
    };
    cfg.clickhouse.mode = ClickHouseMode::Server;
    cfg.clickhouse.url = settings.url.clone();
    cfg.clickhouse.user = settings.user.clone();
    cfg.clickhouse.password = settings.password.clone();
    cfg.clickhouse.database = settings.database.clone();
    (cfg, settings)
}

/// Serves the API and dashboard over `client`'s database on a free loopback
/// port (for the rest of the runtime's life) and returns its base URL. On the
/// embedded engine it reads as the read-only `reader`, as `ingest` does.
pub async fn serve_api(client: ChClient) -> std::io::Result<String> {
    let status = std::sync::Arc::new(crate::sink::status::IngestStatus::new(16));
    serve_api_with(client, status, crate::api::auth::Tokens::default()).await
}

/// Like [`serve_api`], reporting `status` (a running pipeline's) and
/// requiring `tokens` (none = open).
pub async fn serve_api_with(
    client: ChClient,
    status: std::sync::Arc<crate::sink::status::IngestStatus>,
    tokens: crate::api::auth::Tokens,
) -> std::io::Result<String> {
    let log = std::sync::Arc::new(crate::api::alerts::AlertLog::default());
    serve_api_alerts(client, status, tokens, log).await
}

/// Like [`serve_api_with`], showing the budget alerts of `alerts`.
pub async fn serve_api_alerts(
    client: ChClient,
    status: std::sync::Arc<crate::sink::status::IngestStatus>,
    tokens: crate::api::auth::Tokens,
    alerts: std::sync::Arc<crate::api::alerts::AlertLog>,
) -> std::io::Result<String> {
    let client = match embedded() {
        Some(e) => {
            let r = e.access().credentials(Role::Reader);
            client
                .with_login(&r.user, &r.password)
                .map_err(std::io::Error::other)?
        }
        None => client,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let state = crate::api::ApiState::new(client, status, crate::api::guard::Guard::loopback(), 8)
        .with_tokens(tokens)
        .with_alerts(alerts);
    let app = crate::api::router(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(base)
}

/// A client on a fresh database with the built-in schema applied.
pub async fn fresh_client(prefix: &str) -> ChClient {
    let client = ChClient::new(settings(prefix)).expect("valid settings");
    client
        .ensure_schema(&[])
        .await
        .expect("schema applies on the test server");
    client
}

/// A small tmpfs for disk-full tests (needs root). Unmounted on drop.
pub struct SmallTmpfs {
    dir: std::path::PathBuf,
}

impl SmallTmpfs {
    /// Mounts a tmpfs of `size` (e.g. `64k`, `40m`); `None` (and a loud
    /// message) when mounting is impossible here, e.g. not root.
    pub fn mount(size: &str) -> Option<SmallTmpfs> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ci-tmpfs-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallTmpfs { dir }),
            Ok(o) => {
                let _ = std::fs::remove_dir(&dir);
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs for the disk-full test (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                eprintln!("SKIPPED: cannot run mount for the disk-full test: {e}");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Grows (or shrinks) the mounted filesystem.
    pub fn resize(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot resize the tmpfs at {}", self.dir.display());
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}
