//! Wiring: source → parse → rules/plugins → sink, plus the API server.
//!
//! Threads and tasks:
//! * the tailer (a std thread: blocking file I/O) hands `SourceEvent`s, a read
//!   chunk's worth at a time, to the relay (a std thread), which queues them
//!   for the router under a byte
//!   budget (`batch.queue_bytes`) and an entry bound (`batch.queue_capacity`);
//! * the router (a blocking thread) parses each line, runs the live rule pack
//!   and plugins, and sends rows + the line's checkpoint to the writer (again
//!   bounded in entries and bytes);
//! * the writer (an async task) encodes, spools, inserts, commits checkpoints,
//!   and decides when the input is caught up (nothing waiting upstream).
//!
//! Both queues are bounded in entries and bytes: when ClickHouse is slow or
//! down the writer stops reading, the queues fill, and the tailer blocks.
//! Memory stays bounded whatever the size of the lines, and nothing is read
//! that cannot be stored.

use crate::api;
use crate::config::{ClickHouseMode, Config};
use crate::parse::parse_line;
use crate::plugins::{spawn_plugin_watcher, PluginLimits, PluginsHandle};
use crate::row::Row;
use crate::rules::pack::{Provider, RuleSource};
use crate::rules::reload::{spawn_rules_watcher, RulesHandle};
use crate::rules::{EntryInput, RuleSet};
use crate::sink::budget::{Permit, QueueBudget};
use crate::sink::clickhouse::{ChClient, ChSettings};
use crate::sink::embedded::{private_dir, Access, Credentials, EmbeddedClickHouse, Exposed, Role};
use crate::sink::identity::{Identity, RowStamp};
use crate::sink::privacy::Privacy;
use crate::sink::spool::Spool;
use crate::sink::status::{now_ms, IngestStatus};
use crate::sink::writer::{approx_bytes, run_writer, DeadLetter, SinkItem, Writer, WriterConfig};
use crate::source::{
    run_source, CheckpointStore, SourceBatch, SourceConfig, SourceEvent, SourceLine,
};
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Dead letters keep at most this much of a line (the rest is only counted).
const DEAD_LETTER_MAX_BYTES: usize = 1 << 20;

/// DDL applied on start: the built-in schema, then `*.sql` from the configured
/// schema dirs, the rules dir and the plugins dir (a plugin or rule pack that
/// writes its own table ships the table's DDL next to it).
pub fn schema_dirs(cfg: &Config) -> Vec<PathBuf> {
    let mut dirs = cfg.schema_dirs.clone();
    dirs.push(cfg.rules_dir.clone());
    dirs.push(cfg.plugins_dir.clone());
    dirs
}

/// `schema [--cluster NAME] [--grants]`.
pub fn schema_text(cfg: &Config, args: &crate::sink::cluster::SchemaArgs) -> Result<String> {
    let (db, dirs) = (&cfg.clickhouse.database, schema_dirs(cfg));
    match (&args.cluster, args.grants) {
        (cluster, true) => crate::sink::grants::grants_script(db, cluster.as_deref(), &dirs),
        (Some(c), false) => crate::sink::cluster::cluster_script(db, c, &dirs, &cfg.retention),
        (None, false) => crate::sink::cluster::server_script(db, &dirs),
    }
}

/// `schema --apply`: what `ingest` does to the store on start, alone (run it
/// with the migrator login; the machines' writer logins then run no DDL).
pub async fn apply_schema(cfg: &Config) -> Result<String> {
    let conn = connect(cfg).await?;
    let version = crate::sink::migrations::recorded_version(&conn.client).await?;
    Ok(format!(
        "database {} is at schema version {}",
        conn.client.database(),
        version.unwrap_or_default()
    ))
}

/// What the sink stamps on every row: identity, then privacy.
pub fn row_stamp(cfg: &Config) -> Result<RowStamp> {
    let identity = Identity::resolve(cfg.identity.host.as_deref(), cfg.identity.user.as_deref())?;
    let privacy = Privacy::from_config(&cfg.privacy)?;
    Ok(RowStamp::new(identity, privacy))
}

pub fn plugin_limits(cfg: &Config) -> PluginLimits {
    PluginLimits::from_section(&cfg.plugins)
}

/// `check-rules`: print which files are in effect (built-in, user, overrides)
/// and every problem as `file:line: reason`; true when valid.
pub fn check_rules(cfg: &Config, source: &RuleSource) -> Result<bool> {
    if let Ok(files) = source.files() {
        println!("rules in effect ({}):", source.describe());
        for f in &files {
            let from = match f.provider {
                Provider::Builtin => "built-in".to_string(),
                Provider::User {
                    overrides_builtin: true,
                } => format!("{} (overrides the built-in file)", f.path.display()),
                Provider::User { .. } => f.path.display().to_string(),
            };
            println!("  {:<24} {from}", f.name);
        }
    }
    let rs = match source.load() {
        Ok(rs) => rs,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{} error(s) in {}", errors.0.len(), source.describe());
            return Ok(false);
        }
    };
    let (plugins, rejected) = PluginsHandle::load(&cfg.plugins_dir, plugin_limits(cfg))?;
    for r in &rejected {
        eprintln!("warning: plugin {r}");
    }
    let loaded = plugins.names();
    println!(
        "plugins in {}: {}",
        cfg.plugins_dir.display(),
        if loaded.is_empty() {
            "none".to_string()
        } else {
            loaded.join(", ")
        }
    );
    let mut ok = true;
    for (name, optional) in rs.plugin_names() {
        if !loaded.contains(&name) {
            if optional {
                eprintln!(
                    "note: optional plugin `{name}` is not in {} (its steps are skipped)",
                    cfg.plugins_dir.display()
                );
            } else {
                eprintln!(
                    "error: rules call plugin `{name}`, which is not in {}",
                    cfg.plugins_dir.display()
                );
                ok = false;
            }
        }
    }
    println!("{}: ok ({})", source.describe(), rs.summary());
    for (name, table) in rs.table_rules() {
        println!("  table rule {name} -> {table}");
    }
    Ok(ok)
}

/// A ClickHouse connection, plus the embedded engine when we started one.
pub struct Connection {
    /// The sink's client (INSERT + DDL).
    pub client: ChClient,
    /// The API's client: read-only on the embedded engine (the front enforces
    /// it); the same login as `client` on a server (its grants decide).
    pub reader: ChClient,
    embedded: Option<EmbeddedClickHouse>,
}

impl Connection {
    /// Makes `/healthz` report the embedded engine's child (no-op on a server).
    pub fn report_to(&self, status: &IngestStatus) {
        if let Some(e) = &self.embedded {
            let _ = status.engine.set(e.health());
        }
    }
}

/// Start (embedded) or reach (server) ClickHouse and apply the schema.
pub async fn connect(cfg: &Config) -> Result<Connection> {
    let db = &cfg.clickhouse.database;
    let (client, reader, embedded) = match cfg.clickhouse.mode {
        ClickHouseMode::Server => {
            let client = ChClient::new(ChSettings {
                url: cfg.clickhouse.url.clone(),
                user: cfg.clickhouse.user.clone(),
                password: cfg.clickhouse.password.clone(),
                database: db.clone(),
                lz4: cfg.clickhouse.lz4(),
            })?;
            (client.clone(), client, None)
        }
        ClickHouseMode::Embedded => {
            let python = cfg.clickhouse.python.clone();
            let dir = cfg.embedded_data_dir();
            let exposed = exposed_endpoint(cfg)?;
            let e = tokio::task::spawn_blocking(move || {
                EmbeddedClickHouse::start_exposed(python.as_deref(), &dir, exposed)
            })
            .await
            .context("embedded engine start-up panicked")??;
            let client = ChClient::new(e.settings(Role::Writer, db))?;
            let reader = ChClient::new(e.settings(Role::Reader, db))?;
            (client, reader, Some(e))
        }
    };
    let wait = if embedded.is_some() { 60 } else { 5 };
    client.wait_ready(Duration::from_secs(wait)).await?;
    let who = row_stamp(cfg)?.stored_identity();
    let migrated = crate::sink::migrations::migrate(&client, &schema_dirs(cfg), &who).await?;
    if migrated.steps_run > 0 || migrated.from.is_some_and(|v| v < migrated.to) {
        tracing::info!(from = ?migrated.from, to = migrated.to, steps = migrated.steps_run, "schema upgraded in place");
    }
    crate::sink::retention::apply(&client, &cfg.retention).await?;
    Ok(Connection {
        client,
        reader,
        embedded,
    })
}

/// The opt-in HTTP interface for other tools (`clickhouse.http_endpoint`).
fn exposed_endpoint(cfg: &Config) -> Result<Option<Exposed>> {
    let Some(ep) = &cfg.clickhouse.http_endpoint else {
        return Ok(None);
    };
    let (user, password) = ep.credentials()?;
    tracing::info!(port = ep.port, user = %user, "the embedded engine's HTTP interface is open to tools (read-only, 127.0.0.1)");
    Ok(Some(Exposed {
        port: ep.port,
        login: Credentials { user, password },
    }))
}

/// For readers (`sql`, `serve`, `report`): on the embedded store, attach to
/// the engine a running `ingest` (or `serve`) already owns, with the read-only
/// key it publishes in `access.json`; otherwise [`connect`] (start it).
pub async fn connect_reader(cfg: &Config) -> Result<Connection> {
    if cfg.clickhouse.mode == ClickHouseMode::Embedded {
        if let Some(reader) = attach(cfg).await? {
            return Ok(Connection {
                client: reader.clone(),
                reader,
                embedded: None,
            });
        }
    }
    connect(cfg).await
}

/// The running engine's reader, or None when no live engine published its
/// address (none running, or a stale file left by one that was killed).
async fn attach(cfg: &Config) -> Result<Option<ChClient>> {
    let dir = cfg.embedded_data_dir();
    let Ok(access) = Access::read(&dir) else {
        return Ok(None);
    };
    // SAFETY: signal 0 only checks that the pid exists; nothing is sent.
    if unsafe { libc::kill(access.pid as libc::pid_t, 0) } != 0 {
        tracing::debug!(pid = access.pid, "stale access file: its engine is gone");
        return Ok(None);
    }
    let reader = ChClient::new(access.settings(Role::Reader, &cfg.clickhouse.database))?;
    match reader.wait_ready(Duration::from_secs(10)).await {
        Ok(()) => {
            tracing::info!(pid = access.pid, url = %access.url, "attached to the running embedded engine (read-only)");
            Ok(Some(reader))
        }
        Err(e) => {
            // A reused pid, or an engine on its way out: start our own (which
            // refuses politely if the store is still held).
            tracing::debug!(error = %format!("{e:#}"), "the published engine does not answer");
            Ok(None)
        }
    }
}

/// What a run did (printed by `backfill`).
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub files: u64,
    pub lines: u64,
    pub bytes: u64,
    pub rows: u64,
    pub batches: u64,
    pub dead_letters: u64,
    pub redactions: u64,
    pub replayed_batches: usize,
    pub elapsed: Duration,
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        write!(
            f,
            "{} lines ({:.1} MiB) from {} files in {:.2} s ({:.0} lines/s): {} rows stored in {} batches, {} dead letters, {} secrets redacted",
            self.lines,
            self.bytes as f64 / 1048576.0,
            self.files,
            self.elapsed.as_secs_f64(),
            self.lines as f64 / secs,
            self.rows,
            self.batches,
            self.dead_letters,
            self.redactions
        )?;
        if self.replayed_batches > 0 {
            write!(f, " ({} spooled batches replayed)", self.replayed_batches)?;
        }
        Ok(())
    }
}

/// Options of one pipeline run.
pub struct RunOptions {
    /// Keep tailing after the initial pass (ingest) or stop (backfill).
    pub follow: bool,
    pub listen: Option<String>,
    pub progress: bool,
    /// Set to stop a following run (tests); signals also stop it.
    pub shutdown: Arc<AtomicBool>,
    /// Optional: receives the live status once the pipeline is up (tests).
    pub status_out: Option<tokio::sync::oneshot::Sender<Arc<IngestStatus>>>,
}

impl RunOptions {
    /// One pass over the existing files, then return: no follow, no API, no
    /// progress bar, nobody else holding the shutdown flag.
    pub fn once() -> RunOptions {
        RunOptions {
            follow: false,
            listen: None,
            progress: false,
            shutdown: Arc::new(AtomicBool::new(false)),
            status_out: None,
        }
    }
}

pub async fn ingest(cfg: Config, listen: Option<String>) -> Result<()> {
    let shutdown = Arc::new(AtomicBool::new(false));
    let summary = run(
        &cfg,
        RunOptions {
            follow: true,
            listen,
            progress: false,
            shutdown,
            status_out: None,
        },
    )
    .await?;
    tracing::info!(%summary, "ingest stopped");
    Ok(())
}

pub async fn backfill(cfg: Config, progress: bool) -> Result<String> {
    let summary = run(
        &cfg,
        RunOptions {
            progress,
            ..RunOptions::once()
        },
    )
    .await?;
    Ok(format!("backfill complete: {summary}"))
}

/// `serve`: the API and dashboard over whatever the database holds.
pub async fn serve(cfg: Config, listen: &str) -> Result<()> {
    let conn = connect_reader(&cfg).await?;
    let status = Arc::new(IngestStatus::new(cfg.batch.queue_capacity));
    conn.report_to(&status);
    let state = api::ApiState::from_config(conn.reader.clone(), status, &cfg.api, listen)?;
    let stop = Arc::new(AtomicBool::new(false));
    let checker = api::alerts::spawn_checker(
        conn.reader.clone(),
        cfg.alerts.clone(),
        state.alerts.clone(),
        stop.clone(),
    );
    let r = api::serve(listen, state, shutdown_signal()).await;
    stop.store(true, Relaxed);
    drop(checker);
    r
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn state_paths(cfg: &Config) -> (PathBuf, PathBuf) {
    // Per database: pointing the engine at another database must not reuse
    // offsets that describe what the first one holds.
    let db = &cfg.clickhouse.database;
    (
        cfg.state_dir.join(format!("checkpoints-{db}.json")),
        cfg.state_dir.join(format!("spool-{db}")),
    )
}

/// The whole pipeline.
pub async fn run(cfg: &Config, opts: RunOptions) -> Result<RunSummary> {
    let started = Instant::now();
    if !cfg.root.is_dir() {
        bail!(
            "root directory {} does not exist (set --root, CLAUDE_INGEST_ROOT or `root:` in the config file)",
            cfg.root.display()
        );
    }
    let source = cfg.rule_source();
    let rules = RulesHandle::load_source(source.clone())
        .map_err(|e| anyhow!("the rules in {} are invalid:\n{e}", source.describe()))?;
    tracing::info!(rules_from = %source.describe(), rules = %rules.current().summary(), "rules loaded");
    let (plugins, rejected) = PluginsHandle::load(&cfg.plugins_dir, plugin_limits(cfg))?;
    for r in &rejected {
        tracing::error!(plugin = %r, "plugin rejected");
    }

    // Private before anything is written into it: keys, checkpoints, spool.
    private_dir(&cfg.state_dir)?;
    let stamp = row_stamp(cfg)?;
    let conn = connect(cfg).await?;
    let (cp_path, spool_dir) = state_paths(cfg);
    let checkpoints = CheckpointStore::open(&cp_path)?;
    let spool = Spool::open(&spool_dir)?;
    let status = Arc::new(IngestStatus::new(cfg.batch.queue_capacity));
    conn.report_to(&status);
    let shutdown = opts.shutdown.clone();

    let mut writer = Writer::new(
        conn.client.clone(),
        spool,
        checkpoints,
        status.clone(),
        shutdown.clone(),
        WriterConfig {
            max_rows: cfg.batch.max_rows,
            backfill_max_rows: cfg.batch.backfill_max_rows,
            max_bytes: cfg.batch.max_bytes,
            max_delay: cfg.batch_delay(),
            schema_dirs: schema_dirs(cfg),
            stamp,
        },
    )
    .await?;
    let replayed = writer.replay_spool().await?;
    let start = writer.checkpoints().all();

    // Canonical paths: checkpoints must not depend on the cwd or a symlinked root.
    let root = cfg.root.canonicalize().unwrap_or_else(|_| cfg.root.clone());
    let src_cfg = SourceConfig {
        root,
        patterns: cfg.source.patterns.clone(),
        poll_interval: cfg.poll_interval(),
        rescan_interval: cfg.rescan_interval(),
        partial_line_grace: cfg.partial_line_grace(),
        max_line_bytes: cfg.source.max_line_bytes,
        follow: opts.follow,
    };
    let progress = if opts.progress {
        Some(progress_bar(&src_cfg, &start))
    } else {
        None
    };

    // The tailer hands a read chunk's lines over at once; the relay queues
    // them under a budget of lines and bytes (see sink::budget: a channel
    // alone bounds batches, which may hold one line or 512). Every batch
    // holds a line, so a channel as deep as the line bound never binds first.
    let (src_tx, src_rx) = mpsc::channel::<SourceBatch>(1);
    let depth = cfg.batch.queue_capacity.max(2);
    let (queue_tx, queue_rx) = mpsc::channel::<Queued>(depth);
    // As deep as the source queue, so the router keeps working while the
    // writer waits on an insert (the two overlap instead of taking turns).
    let (sink_tx, sink_rx) = mpsc::channel::<Vec<SinkItem>>(depth);
    let line_budget = QueueBudget::new(depth, cfg.batch.queue_bytes, status.clone());
    let row_budget = QueueBudget::new(depth, cfg.batch.queue_bytes, status.clone());

    let source_shutdown = shutdown.clone();
    let source = std::thread::Builder::new()
        .name("tailer".into())
        .spawn(move || run_source(&src_cfg, start, src_tx, source_shutdown))
        .context("cannot start the tailer thread")?;
    let relay_status = status.clone();
    let relay = std::thread::Builder::new()
        .name("relay".into())
        .spawn(move || relay_loop(src_rx, queue_tx, line_budget, relay_status))
        .context("cannot start the relay thread")?;

    let router = {
        let (rules, plugins, status, progress) = (
            rules.clone(),
            plugins.clone(),
            status.clone(),
            progress.clone(),
        );
        let sink = RouterSink {
            tx: sink_tx,
            budget: row_budget,
        };
        tokio::task::spawn_blocking(move || {
            route_loop(queue_rx, sink, rules, plugins, status, progress)
        })
    };
    let writer_task = tokio::spawn(run_writer(writer, sink_rx));

    let mut watchers = Vec::new();
    if opts.follow {
        watchers.push(spawn_rules_watcher(rules.clone(), shutdown.clone()));
        watchers.push(spawn_plugin_watcher(
            plugins.clone(),
            cfg.plugins_dir.clone(),
            shutdown.clone(),
        ));
    }
    let api_task = match &opts.listen {
        Some(addr) => {
            let state =
                api::ApiState::from_config(conn.reader.clone(), status.clone(), &cfg.api, addr)?;
            // The checker stops with the pipeline (same flag).
            let _ = api::alerts::spawn_checker(
                conn.reader.clone(),
                cfg.alerts.clone(),
                state.alerts.clone(),
                shutdown.clone(),
            );
            let flag = shutdown.clone();
            let addr = addr.clone();
            Some(tokio::spawn(async move {
                api::serve(&addr, state, wait_flag(flag)).await
            }))
        }
        None => None,
    };
    if let Some(tx) = opts.status_out {
        let _ = tx.send(status.clone());
    }
    if opts.follow {
        // Stop on a signal or when the caller sets the flag.
        let flag = shutdown.clone();
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("shutting down: draining what was read"),
            _ = wait_flag(flag) => {},
        }
        shutdown.store(true, Relaxed);
    }

    let router_result = router.await.context("router panicked")?;
    let writer_result = writer_task.await.context("writer panicked")?;
    shutdown.store(true, Relaxed);
    let source_result = source
        .join()
        .map_err(|_| anyhow!("the tailer thread panicked"))?;
    relay
        .join()
        .map_err(|_| anyhow!("the relay thread panicked"))?;
    for w in watchers {
        let _ = w.join();
    }
    if let Some(t) = api_task {
        if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), t).await {
            tracing::warn!(error = %format!("{e:#}"), "API server error");
        }
    }
    if let Some(p) = &progress {
        p.finish_and_clear();
    }
    let wstats = writer_result?;
    router_result?;
    let sstats = source_result?;
    Ok(RunSummary {
        files: sstats.files,
        lines: sstats.lines,
        bytes: sstats.bytes,
        rows: wstats.rows,
        batches: wstats.batches,
        dead_letters: status.dead_letters.load(Relaxed),
        redactions: status.redactions.load(Relaxed),
        replayed_batches: replayed,
        elapsed: started.elapsed(),
    })
}

/// Resolves once `flag` is set (a slow poll: it only bounds how late a
/// caller's stop request is noticed, and an idle engine should not spin).
async fn wait_flag(flag: Arc<AtomicBool>) {
    while !flag.load(Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn progress_bar(
    src: &SourceConfig,
    start: &std::collections::HashMap<PathBuf, crate::source::FileCheckpoint>,
) -> indicatif::ProgressBar {
    let total: u64 = crate::source::discover(&src.root, &src.patterns)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            size.saturating_sub(start.get(p).map_or(0, |c| c.offset.min(size)))
        })
        .sum();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// A source event in the router's queue, with its bytes in the queue's budget.
type Queued = (SourceBatch, Permit);

/// Moves batches from the tailer into the router's queue, charging their
/// lines and bytes to `budget` first (blocks while the queue is full).
fn relay_loop(
    mut rx: mpsc::Receiver<SourceBatch>,
    tx: mpsc::Sender<Queued>,
    budget: Arc<QueueBudget>,
    status: Arc<IngestStatus>,
) {
    while let Some(batch) = rx.blocking_recv() {
        let bytes: usize = batch.iter().map(event_bytes).sum();
        let permit = budget.acquire(batch.len(), bytes);
        status
            .lines_in_flight
            .fetch_add(batch.len() as u64, Relaxed);
        if tx.blocking_send((batch, permit)).is_err() {
            break; // the router stopped
        }
    }
}

fn event_bytes(ev: &SourceEvent) -> usize {
    match ev {
        SourceEvent::Line(l) => l.bytes.len() + std::mem::size_of::<SourceLine>(),
        _ => 0,
    }
}

/// The router's side of the writer's queue.
struct RouterSink {
    tx: mpsc::Sender<Vec<SinkItem>>,
    budget: Arc<QueueBudget>,
}

/// Route each batch the relay queues and send its items to the writer at
/// once (one hand-off per batch, like the tailer's).
fn route_loop(
    mut rx: mpsc::Receiver<Queued>,
    sink: RouterSink,
    rules: RulesHandle,
    plugins: PluginsHandle,
    status: Arc<IngestStatus>,
    progress: Option<indicatif::ProgressBar>,
) -> Result<()> {
    let mut router = Router {
        plugins,
        status,
        progress,
        clock: FallbackClock::default(),
    };
    while let Some((batch, permit)) = rx.blocking_recv() {
        let rs = rules.current();
        router
            .status
            .rules_generation
            .store(rules.generation(), Relaxed);
        let n = batch.len() as u64;
        let mut items = Vec::with_capacity(batch.len());
        for ev in batch {
            router.route(ev, &rs, &mut items);
        }
        // Before the send: once the writer holds the last item it must see
        // nothing in flight, or it would wait instead of storing at once.
        // Before the permit: in flight never counts more than the budget holds.
        router.status.lines_in_flight.fetch_sub(n, Relaxed);
        drop(permit);
        if !items.is_empty() && !sink.send(items) {
            break; // the writer stopped (its error is reported by the caller)
        }
    }
    Ok(())
}

/// The router's state across batches.
struct Router {
    plugins: PluginsHandle,
    status: Arc<IngestStatus>,
    progress: Option<indicatif::ProgressBar>,
    clock: FallbackClock,
}

impl Router {
    /// One source event → the writer's items for it, appended to `items`.
    fn route(&mut self, ev: SourceEvent, rs: &RuleSet, items: &mut Vec<SinkItem>) {
        let status = &self.status;
        match ev {
            SourceEvent::Line(line) => {
                let now = now_ms();
                status.lines_read.fetch_add(1, Relaxed);
                status.bytes_read.fetch_add(line.length + 1, Relaxed);
                status.last_line_ms.store(now, Relaxed);
                if let Some(p) = &self.progress {
                    p.inc(line.next_offset - line.offset);
                }
                let rows = route_line(&line, rs, &self.plugins, status, &mut self.clock);
                items.push(SinkItem::Rows {
                    rows,
                    checkpoint: Some((line.path.clone(), line.checkpoint())),
                    read_at_ms: now,
                    permit: None, // charged by `RouterSink::send`
                });
            }
            SourceEvent::Reset { path, reason } => {
                tracing::info!(path = %path.display(), %reason, "file reset: reading it from the start");
            }
            SourceEvent::Removed(path) => {
                self.clock.forget(&path);
                items.push(SinkItem::Forget(path));
            }
            SourceEvent::Renamed {
                from,
                to,
                checkpoint,
            } => {
                // The old name's checkpoint goes, the new name takes it; both
                // in line order with the rows read before the rename.
                self.clock.forget(&from);
                items.push(SinkItem::Forget(from));
                items.push(SinkItem::Rows {
                    rows: Vec::new(),
                    checkpoint: Some((Arc::new(to), checkpoint)),
                    read_at_ms: now_ms(),
                    permit: None,
                });
            }
            SourceEvent::CaughtUp => items.push(SinkItem::CaughtUp),
        }
    }
}

impl RouterSink {
    /// Charge the items' rows to the writer queue's budget, then send. The
    /// permit rides on the last rows item: the budget is given back once the
    /// writer has taken the whole batch.
    fn send(&self, mut items: Vec<SinkItem>) -> bool {
        // About one item per line routed (rows, a dead letter, a marker).
        let lines = items.len();
        let bytes: usize = items
            .iter()
            .map(|i| match i {
                SinkItem::Rows { rows, .. } => approx_bytes(rows),
                _ => 0,
            })
            .sum();
        let last = items.iter_mut().rev().find_map(|i| match i {
            SinkItem::Rows { permit, .. } => Some(permit),
            _ => None,
        });
        if let Some(permit) = last {
            *permit = Some(self.budget.acquire(lines, bytes));
        }
        self.tx.blocking_send(items).is_ok()
    }
}

/// One line → rows, or a dead letter saying why not. Never fails: whatever
/// happens to a line is recorded and the pipeline moves on.
pub fn route_line(
    line: &SourceLine,
    rules: &RuleSet,
    plugins: &PluginsHandle,
    status: &IngestStatus,
    clock: &mut FallbackClock,
) -> Vec<Row> {
    let source_file = line.path.to_string_lossy();
    let dead = |stage: &str, error: String| -> Vec<Row> {
        status.dead_letters.fetch_add(1, Relaxed);
        tracing::warn!(file = %source_file, offset = line.offset, stage, %error, "line dead-lettered");
        let keep = &line.bytes[..line.bytes.len().min(DEAD_LETTER_MAX_BYTES)];
        let (text, secrets) = rules.redact_text(&String::from_utf8_lossy(keep));
        status.redactions.fetch_add(secrets as u64, Relaxed);
        // Raw bytes are kept (base64) only for lines that are not valid UTF-8
        // and had nothing to redact: base64 would carry a secret past redaction.
        let b64 = if std::str::from_utf8(keep).is_err() && secrets == 0 {
            base64(keep)
        } else {
            String::new()
        };
        let truncated = line.truncated || keep.len() < line.bytes.len();
        vec![DeadLetter {
            source_file: &source_file,
            offset: line.offset,
            length: line.length,
            stage,
            error: &error,
            raw_line: text,
            raw_base64: b64,
            truncated,
        }
        .into_row()]
    };
    if line.truncated {
        return dead(
            "source",
            format!(
                "line is {} bytes, over source.max_line_bytes ({}); its first bytes are kept",
                line.length,
                line.bytes.len()
            ),
        );
    }
    let entry = match parse_line(&line.bytes) {
        Ok(e) => e,
        Err(e) => return dead("parse", e.to_string()),
    };
    let fallback_time = clock.time_for(&line.path, &entry.raw);
    let input = EntryInput {
        doc: entry.raw,
        project: &line.project,
        source_file: &source_file,
        offset: line.offset,
        fallback_time,
    };
    match rules.apply(input, plugins) {
        Ok(routed) => {
            status.entries_routed.fetch_add(1, Relaxed);
            status
                .redactions
                .fetch_add(routed.redactions as u64, Relaxed);
            routed.rows
        }
        Err(e) => dead("rules", e.to_string()),
    }
}

/// The time a line without a timestamp of its own is filed under (flagged
/// `timestamp_inferred` by the rules): the previous timestamp of the same file,
/// else the file's modification time. Never 1970, and the same on a re-read of
/// an unchanged file.
#[derive(Default)]
pub struct FallbackClock {
    last: std::collections::HashMap<PathBuf, String>,
}

impl FallbackClock {
    /// Remember `entry`'s timestamp; when it has none, the time to use instead.
    pub fn time_for(&mut self, path: &Path, entry: &serde_json::Value) -> Option<String> {
        if let Some(ts) = entry.get("timestamp").and_then(serde_json::Value::as_str) {
            if chrono::DateTime::parse_from_rfc3339(ts).is_ok() {
                match self.last.get_mut(path) {
                    Some(last) => ts.clone_into(last),
                    None => {
                        self.last.insert(path.to_path_buf(), ts.to_string());
                    }
                }
                return None;
            }
        }
        if let Some(last) = self.last.get(path) {
            return Some(last.clone());
        }
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
        let t: chrono::DateTime<chrono::Utc> = mtime.into();
        Some(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }

    pub fn forget(&mut self, path: &Path) {
        self.last.remove(path);
    }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(i.as_bytes()), o);
        }
    }
}
