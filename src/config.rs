//! Configuration: defaults, overridden by a YAML config file, overridden by
//! environment variables and command-line flags (clap handles the last two).
//!
//! Everything has a default so `claude-ingest ingest` works with no file at all,
//! from any directory: it tails `~/.claude/projects`, uses the built-in rule
//! pack (overlaid by `./rules`, else by `~/.config/claude-ingest/rules`) and an
//! embedded ClickHouse under the state directory.

use crate::builtin;
use crate::rules::pack::RuleSource;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where ClickHouse comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClickHouseMode {
    /// Start the embedded engine (chDB behind a loopback HTTP front) ourselves.
    Embedded,
    /// Connect to a ClickHouse server at `url`.
    Server,
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseSection {
    pub mode: ClickHouseMode,
    pub url: String,
    pub user: String,
    pub password: String,
    /// A file holding the password (its first line), read at start: keeps the
    /// secret out of the config, the command line (`ps`) and the environment.
    pub password_file: Option<PathBuf>,
    pub database: String,
    /// `auto` (lz4 to a server that is not on loopback, none otherwise), `none`
    /// or `lz4` (lz4 only against a real server).
    pub compression: String,
    /// Python interpreter of the chdb-core virtualenv (embedded mode).
    pub python: Option<PathBuf>,
    /// Data directory of the embedded engine (default `<state_dir>/clickhouse`).
    pub data_dir: Option<PathBuf>,
    /// Opt-in: the embedded engine's ClickHouse HTTP interface for other
    /// tools (clickhouse-client-compatible HTTP clients, Grafana), read-only.
    pub http_endpoint: Option<HttpEndpointSection>,
}

/// A read-only login on the embedded engine for other tools, on a fixed
/// loopback port (reach it from elsewhere through an SSH tunnel).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpEndpointSection {
    /// Port on 127.0.0.1 (the engine's own port, fixed instead of random).
    pub port: u16,
    /// The login name (not `reader` / `writer`, the engine's own).
    pub user: String,
    /// A file whose first line is the password (at least 16 characters).
    pub password_file: PathBuf,
}

/// Never prints the password (it is not even held here).
impl std::fmt::Debug for HttpEndpointSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpEndpointSection")
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password_file", &self.password_file)
            .finish()
    }
}

impl HttpEndpointSection {
    /// The login, with its password read from `password_file` and checked.
    pub fn credentials(&self) -> Result<(String, String)> {
        let ok_name = !self.user.is_empty()
            && self.user.len() <= 64
            && self
                .user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok_name || self.user == "reader" || self.user == "writer" {
            bail!(
                "clickhouse.http_endpoint.user `{}`: letters, digits, _ and - only, not `reader` or `writer`",
                self.user
            );
        }
        let text = std::fs::read_to_string(&self.password_file).with_context(|| {
            format!(
                "cannot read clickhouse.http_endpoint.password_file {}",
                self.password_file.display()
            )
        })?;
        let password = text.lines().next().unwrap_or_default().to_string();
        if password.chars().count() < 16 {
            bail!(
                "the password in {} must be at least 16 characters",
                self.password_file.display()
            );
        }
        Ok((self.user.clone(), password))
    }
}

impl Default for ClickHouseSection {
    fn default() -> Self {
        ClickHouseSection {
            mode: ClickHouseMode::Embedded,
            url: "http://127.0.0.1:8123".into(),
            user: "default".into(),
            password: String::new(),
            password_file: None,
            database: "claude_logs".into(),
            compression: "auto".into(),
            python: None,
            data_dir: None,
            http_endpoint: None,
        }
    }
}

/// Never prints the password (configs are logged and shown in errors).
impl std::fmt::Debug for ClickHouseSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseSection")
            .field("mode", &self.mode)
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("password_file", &self.password_file)
            .field("database", &self.database)
            .field("compression", &self.compression)
            .field("python", &self.python)
            .field("http_endpoint", &self.http_endpoint)
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl ClickHouseSection {
    /// Replace `password` with the first line of `password_file`, if set.
    pub fn read_password_file(&mut self) -> Result<()> {
        let Some(path) = &self.password_file else {
            return Ok(());
        };
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the ClickHouse password file {}",
                path.display()
            )
        })?;
        self.password = text.lines().next().unwrap_or_default().to_string();
        Ok(())
    }

    /// Whether inserts and results travel lz4-compressed.
    pub fn lz4(&self) -> bool {
        match self.compression.as_str() {
            "lz4" => true,
            "auto" => self.mode == ClickHouseMode::Server && !is_loopback_url(&self.url),
            _ => false,
        }
    }
}

/// Compression pays over a network; on loopback it only costs CPU (and the
/// embedded front, always on loopback, does not speak it).
fn is_loopback_url(url: &str) -> bool {
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceSection {
    pub patterns: Vec<String>,
    pub poll_interval_ms: u64,
    /// Safety rescan while file-system events work (they drive everything else).
    pub rescan_interval_ms: u64,
    /// A last line without `\n` is read once its file has been quiet this long.
    pub partial_line_grace_ms: u64,
    pub max_line_bytes: usize,
}

impl Default for SourceSection {
    fn default() -> Self {
        SourceSection {
            patterns: vec!["*/*.jsonl".into(), "*/*/subagents/*.jsonl".into()],
            poll_interval_ms: 1000,
            rescan_interval_ms: 30_000,
            partial_line_grace_ms: 3000,
            max_line_bytes: 8 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchSection {
    /// Rows per insert while following (caught up, little waiting upstream).
    pub max_rows: usize,
    /// Size threshold while behind (backfill, or a burst queued upstream):
    /// bigger inserts amortise ClickHouse's per-insert cost (parts written
    /// and merged) when latency does not matter.
    pub backfill_max_rows: usize,
    /// Encoded bytes per insert: a batch is flushed at this size whatever its
    /// row count. A batch is built in its spool file, so this costs disk (up
    /// to three batches: building, waiting, being stored), not memory.
    pub max_bytes: usize,
    /// Upper bound on how long a row waits; when the input is caught up a batch
    /// is flushed at once, so this only matters under a steady trickle.
    pub max_delay_ms: u64,
    /// Bounded queues between the tailer and the sink, in lines (held in
    /// batches of a read chunk's lines): the backpressure bound.
    pub queue_capacity: usize,
    /// Byte bound of each of those queues (an entry larger than this passes alone).
    pub queue_bytes: usize,
}

impl Default for BatchSection {
    fn default() -> Self {
        BatchSection {
            max_rows: 500,
            backfill_max_rows: 200_000,
            max_bytes: 64 << 20,
            max_delay_ms: 1000,
            queue_capacity: 2048,
            queue_bytes: 32 << 20,
        }
    }
}

/// Per-call plugin budgets. Each is `base + per-input-byte allowance`, capped
/// by a ceiling, because a plugin's work grows with the entry it is given
/// (parsing and scanning are linear) and Claude Code writes entries from a few
/// hundred bytes to megabytes. `plugins/README.md` explains how they combine.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginSection {
    /// Base instruction budget (wasmtime fuel) per call; 0 = unlimited.
    pub fuel: u64,
    /// Extra fuel per input byte.
    pub fuel_per_byte: u64,
    /// Ceiling on the scaled fuel (0 = the base, i.e. no scaling).
    pub fuel_max: u64,
    /// Base CPU time per call (the calling thread's CPU time, so a busy
    /// machine does not shorten it); 0 = unlimited.
    pub timeout_ms: u64,
    /// Extra CPU time per MiB of input.
    pub timeout_ms_per_mib: u64,
    /// Ceiling on the scaled CPU time (0 = the base).
    pub timeout_max_ms: u64,
    /// Base guest memory per call.
    pub memory_mb: u64,
    /// Extra guest memory per input byte.
    pub memory_per_byte: u64,
    /// Ceiling on the scaled memory (0 = the base); at most 4095.
    pub memory_max_mb: u64,
}

impl Default for PluginSection {
    fn default() -> Self {
        PluginSection {
            fuel: 10_000_000,
            fuel_per_byte: 400,
            fuel_max: 8_000_000_000,
            timeout_ms: 100,
            timeout_ms_per_mib: 1_000,
            timeout_max_ms: 20_000,
            memory_mb: 16,
            memory_per_byte: 16,
            memory_max_mb: 512,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    pub listen: String,
    /// Host names (besides loopback and the listen address) the API answers to.
    pub allowed_hosts: Vec<String>,
    /// Requests served at once; more get 503 + Retry-After.
    pub max_in_flight: usize,
    /// ClickHouse queries the API runs at once.
    pub max_queries: usize,
    /// Deadline per request; past it the client gets 503.
    pub request_timeout_ms: u64,
    /// Bearer tokens (YAML/JSON list, see README "API authentication");
    /// env `CLAUDE_INGEST_API_TOKENS` may add more.
    pub tokens_file: Option<PathBuf>,
    /// Serve beyond loopback without tokens (flag `--insecure-no-auth`).
    pub insecure_no_auth: bool,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            listen: "127.0.0.1:8787".into(),
            allowed_hosts: Vec::new(),
            max_in_flight: 64,
            max_queries: 8,
            request_timeout_ms: 10_000,
            tokens_file: None,
            insecure_no_auth: false,
        }
    }
}

/// Who wrote a row: stamped on every row of every table (`host`, `user_name`)
/// and mixed into dedup tokens, so several machines can share one store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentitySection {
    /// Default: the machine's host name.
    pub host: Option<String>,
    /// Default: the OS user running the engine.
    pub user: Option<String>,
}

/// What is stored at all: no message content (`metrics_only`), and columns
/// replaced by a keyed hash (`anonymize`) before anything is encoded.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacySection {
    /// Store counts, tokens and costs but no message content.
    pub metrics_only: bool,
    /// Column names whose values are replaced by HMAC-SHA256(key, value)
    /// (truncated hex), in every table that has them (e.g. project, cwd, user_name).
    pub anonymize: Vec<String>,
    /// File holding the HMAC key (else env `CLAUDE_INGEST_ANONYMIZE_KEY`).
    pub key_file: Option<PathBuf>,
}

/// Budget alerts (see `api::alerts`): burn-rate thresholds checked on a timer.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsSection {
    /// Where crossings are POSTed as JSON (none: logged and shown only).
    pub webhook: Option<String>,
    pub check_interval_s: u64,
    /// The burn rate is the cost of this many last minutes, per hour.
    pub window_minutes: u32,
    pub thresholds: Vec<AlertThreshold>,
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            webhook: None,
            check_interval_s: 60,
            window_minutes: 60,
            thresholds: Vec::new(),
        }
    }
}

/// One threshold: a project, a user, both (or neither: everything).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertThreshold {
    pub project: Option<String>,
    pub user: Option<String>,
    /// USD per hour over the window.
    pub cost_per_hour: f64,
}

/// The whole configuration, as read from a YAML file (every key optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub root: PathBuf,
    pub state_dir: PathBuf,
    /// The user's rules: override (same file name) or extend the built-in pack.
    pub rules_dir: PathBuf,
    /// Start from the rule pack compiled into the binary (false: `rules_dir` alone).
    pub builtin_rules: bool,
    pub plugins_dir: PathBuf,
    /// Extra DDL (`*.sql`) applied after the built-in schema, e.g. plugin tables.
    pub schema_dirs: Vec<PathBuf>,
    pub clickhouse: ClickHouseSection,
    pub source: SourceSection,
    pub batch: BatchSection,
    pub plugins: PluginSection,
    pub api: ApiSection,
    pub identity: IdentitySection,
    /// Per-table time to live (`30d`, `12w`, `48h`): rows older than this are
    /// deleted by ClickHouse; a table not listed keeps its rows forever.
    pub retention: std::collections::BTreeMap<String, String>,
    pub privacy: PrivacySection,
    pub alerts: AlertsSection,
}

impl Default for Config {
    fn default() -> Self {
        let home = dirs::home_dir().unwrap_or_else(|| PathBuf::from("."));
        Config {
            root: home.join(".claude/projects"),
            state_dir: builtin::data_home().join("state"),
            rules_dir: default_rules_dir(),
            builtin_rules: true,
            plugins_dir: default_plugins_dir(),
            schema_dirs: Vec::new(),
            clickhouse: ClickHouseSection::default(),
            source: SourceSection::default(),
            batch: BatchSection::default(),
            plugins: PluginSection::default(),
            api: ApiSection::default(),
            identity: IdentitySection::default(),
            retention: Default::default(),
            privacy: PrivacySection::default(),
            alerts: AlertsSection::default(),
        }
    }
}

/// `./rules` when it exists (a checkout, or a team's rules next to the
/// config), else the user's `~/.config/claude-ingest/rules`.
fn default_rules_dir() -> PathBuf {
    let local = PathBuf::from("rules");
    if local.is_dir() {
        local
    } else {
        builtin::user_rules_dir()
    }
}

/// `./plugins/dist` when it exists (a checkout), else where `setup` installs them.
fn default_plugins_dir() -> PathBuf {
    let local = PathBuf::from("plugins/dist");
    if local.is_dir() {
        local
    } else {
        builtin::installed_plugins_dir()
    }
}

impl Config {
    /// The rule pack in effect: built-in files overlaid by `rules_dir`. Only
    /// the default user dir may be missing; a dir someone named must exist.
    pub fn rule_source(&self) -> RuleSource {
        RuleSource {
            builtin: self.builtin_rules,
            dir: self.rules_dir.clone(),
            dir_optional: self.builtin_rules && self.rules_dir == builtin::user_rules_dir(),
        }
    }

    /// Read a YAML config file; every key is optional and unknown keys are errors
    /// (a typo must not silently fall back to a default).
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let cfg: Config = serde_yaml::from_str(&text).map_err(|e| match e.location() {
            Some(loc) => {
                anyhow::anyhow!("{}:{}:{}: {}", path.display(), loc.line(), loc.column(), e)
            }
            None => anyhow::anyhow!("{}: {}", path.display(), e),
        })?;
        Ok(cfg)
    }

    /// Sanity checks with messages that say what to change.
    pub fn validate(&self) -> Result<()> {
        if self.alerts.window_minutes == 0
            || self
                .alerts
                .thresholds
                .iter()
                .any(|t| t.cost_per_hour.is_nan() || t.cost_per_hour <= 0.0)
        {
            bail!(
                "alerts.window_minutes and every alerts.thresholds[].cost_per_hour must be above 0"
            );
        }
        if let Some(hook) = &self.alerts.webhook {
            // Caught here, not as a warning at every crossing months later.
            let ok = url::Url::parse(hook).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                bail!("alerts.webhook must be an http:// or https:// URL, got {hook:?}");
            }
        }
        if self.batch.max_rows == 0 {
            bail!("batch.max_rows must be at least 1");
        }
        if self.batch.queue_capacity == 0 {
            bail!("batch.queue_capacity must be at least 1");
        }
        if self.batch.max_bytes < 1024 || self.batch.queue_bytes < 1024 {
            bail!("batch.max_bytes and batch.queue_bytes must be at least 1024");
        }
        if self.source.max_line_bytes < 1024 {
            bail!("source.max_line_bytes must be at least 1024");
        }
        if self.plugins.memory_mb.max(self.plugins.memory_max_mb) >= 4096 {
            bail!("plugins.memory_mb and plugins.memory_max_mb must be below 4096 (wasm32 memory)");
        }
        if self.source.partial_line_grace_ms < 100 {
            // Shorter, and a line caught half-written would be cut in two.
            bail!("source.partial_line_grace_ms must be at least 100");
        }
        if !matches!(
            self.clickhouse.compression.as_str(),
            "auto" | "none" | "lz4"
        ) {
            bail!(
                "clickhouse.compression must be `auto`, `none` or `lz4`, not `{}`",
                self.clickhouse.compression
            );
        }
        if self.clickhouse.mode == ClickHouseMode::Embedded && self.clickhouse.compression == "lz4"
        {
            bail!("clickhouse.compression = lz4 needs a real server (clickhouse.mode = server)");
        }
        let db_ok = !self.clickhouse.database.is_empty()
            && self
                .clickhouse
                .database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !self
                .clickhouse
                .database
                .starts_with(|c: char| c.is_ascii_digit());
        if !db_ok {
            bail!(
                "database name `{}` must match [A-Za-z_][A-Za-z0-9_]*",
                self.clickhouse.database
            );
        }
        crate::sink::retention::parse_all(&self.retention)?;
        crate::sink::privacy::validate_columns(&self.privacy.anonymize)?;
        Ok(())
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.source.poll_interval_ms.max(10))
    }

    pub fn rescan_interval(&self) -> Duration {
        Duration::from_millis(self.source.rescan_interval_ms.max(10))
    }

    pub fn partial_line_grace(&self) -> Duration {
        Duration::from_millis(self.source.partial_line_grace_ms)
    }

    pub fn batch_delay(&self) -> Duration {
        Duration::from_millis(self.batch.max_delay_ms.max(1))
    }

    pub fn checkpoint_path(&self) -> PathBuf {
        self.state_dir.join("checkpoints.json")
    }

    pub fn embedded_data_dir(&self) -> PathBuf {
        self.clickhouse
            .data_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("clickhouse"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn file_overrides_and_rejects_typos() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            "root: /data/projects\nclickhouse:\n  mode: server\n  url: http://ch:8123\n  database: logs\nbatch:\n  max_rows: 10\n",
        )
        .unwrap();
        let c = Config::from_file(&p).unwrap();
        assert_eq!(c.root, PathBuf::from("/data/projects"));
        assert_eq!(c.clickhouse.mode, ClickHouseMode::Server);
        assert_eq!(c.clickhouse.database, "logs");
        assert_eq!(c.batch.max_rows, 10);
        assert_eq!(c.batch.max_delay_ms, 1000);

        std::fs::write(&p, "batch:\n  max_rowz: 10\n").unwrap();
        let err = Config::from_file(&p).unwrap_err().to_string();
        assert!(err.contains("max_rowz"), "{err}");
        assert!(err.contains("c.yaml:2"), "{err}");
    }

    #[test]
    fn validation_names_the_problem() {
        let mut c = Config::default();
        c.clickhouse.database = "bad-name;drop".into();
        assert!(c.validate().unwrap_err().to_string().contains("bad-name"));
        let mut c = Config::default();
        c.clickhouse.compression = "lz4".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("real server"));
        let mut c = Config::default();
        c.plugins.memory_max_mb = 4096;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("plugins.memory_max_mb"));
        let mut c = Config::default();
        c.source.partial_line_grace_ms = 0;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("partial_line_grace_ms"), "{err}");
        for (hook, ok) in [
            ("hooks.example.org/x", false),
            ("ftp://hooks.example.org/x", false),
            ("https://hooks.example.org/x", true),
            ("http://127.0.0.1:9/hook", true),
        ] {
            let mut c = Config::default();
            c.alerts.webhook = Some(hook.into());
            assert_eq!(c.validate().is_ok(), ok, "{hook}");
        }
    }

    #[test]
    fn password_file_and_compression() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let mut c = Config::default();
        c.clickhouse.password_file = Some(pw);
        c.clickhouse.read_password_file().unwrap();
        assert_eq!(c.clickhouse.password, "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        c.clickhouse.password_file = Some(dir.path().join("missing"));
        let err = c.clickhouse.read_password_file().unwrap_err().to_string();
        assert!(err.contains("password file"), "{err}");

        assert!(!c.clickhouse.lz4(), "embedded: never");
        c.clickhouse.mode = ClickHouseMode::Server;
        c.clickhouse.url = "https://ch.example.com:8443".into();
        assert!(c.clickhouse.lz4(), "a remote server: lz4");
        c.clickhouse.url = "http://127.0.0.1:8123".into();
        assert!(!c.clickhouse.lz4(), "loopback: none");
        c.clickhouse.compression = "lz4".into();
        assert!(c.clickhouse.lz4());
    }

    #[test]
    fn team_sections_parse_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            "identity:\n  host: box-1\n  user: ann\nretention:\n  claude_messages: 30d\n  claude_requests: forever\n\
             privacy:\n  metrics_only: true\n  anonymize: [project, user_name]\n  key_file: /k\n",
        )
        .unwrap();
        let c = Config::from_file(&p).unwrap();
        c.validate().unwrap();
        assert_eq!(c.identity.host.as_deref(), Some("box-1"));
        assert_eq!(c.retention["claude_messages"], "30d");
        assert!(c.privacy.metrics_only);
        assert_eq!(c.privacy.anonymize, ["project", "user_name"]);
        let mut c = Config::default();
        c.retention
            .insert("claude_messages".into(), "30 days".into());
        assert!(c.validate().unwrap_err().to_string().contains("30 days"));
        let mut c = Config::default();
        c.privacy.anonymize = vec!["a-b".into()];
        assert!(c.validate().is_err());
    }

    #[test]
    fn source_keys_parse() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            "source:\n  rescan_interval_ms: 5000\n  partial_line_grace_ms: 250\n",
        )
        .unwrap();
        let c = Config::from_file(&p).unwrap();
        assert_eq!(c.source.rescan_interval_ms, 5000);
        assert_eq!(c.source.partial_line_grace_ms, 250);
        assert_eq!(c.source.poll_interval_ms, 1000);
    }
}
