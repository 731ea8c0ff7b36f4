//! `claude-ingest` command line: ingest / backfill / serve / check-rules / schema / report,
//! and the operator's setup / service / sql.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use claude_ingest::config::{ClickHouseMode, Config};
use claude_ingest::pipeline;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "claude-ingest",
    version,
    about = "Claude Code session logs → rules / WASM plugins → ClickHouse"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct GlobalArgs {
    /// YAML config file (every key optional; flags and env override it).
    #[arg(long, global = true, env = "CLAUDE_INGEST_CONFIG")]
    config: Option<PathBuf>,
    /// Claude Code projects root (default ~/.claude/projects).
    #[arg(long, global = true, env = "CLAUDE_INGEST_ROOT")]
    root: Option<PathBuf>,
    /// State directory: checkpoints, spool, embedded ClickHouse data.
    #[arg(long, global = true, env = "CLAUDE_INGEST_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Your rules: override (same file name) or extend the built-in pack
    /// (default ./rules, else ~/.config/claude-ingest/rules).
    #[arg(long, global = true, env = "CLAUDE_INGEST_RULES")]
    rules: Option<PathBuf>,
    /// Use only the rules directory, not the built-in rule pack.
    #[arg(long, global = true, env = "CLAUDE_INGEST_NO_BUILTIN_RULES")]
    no_builtin_rules: bool,
    /// WASM plugins directory (default ./plugins/dist).
    #[arg(long, global = true, env = "CLAUDE_INGEST_PLUGINS")]
    plugins: Option<PathBuf>,
    /// ClickHouse server URL; setting it switches from the embedded engine to that server.
    #[arg(long, global = true, env = "CLICKHOUSE_URL")]
    clickhouse_url: Option<String>,
    #[arg(long, global = true, env = "CLICKHOUSE_USER")]
    clickhouse_user: Option<String>,
    /// Visible in `ps`: prefer CLICKHOUSE_PASSWORD or --clickhouse-password-file.
    #[arg(
        long,
        global = true,
        env = "CLICKHOUSE_PASSWORD",
        hide_env_values = true
    )]
    clickhouse_password: Option<String>,
    /// File whose first line is the ClickHouse password.
    #[arg(long, global = true, env = "CLICKHOUSE_PASSWORD_FILE")]
    clickhouse_password_file: Option<PathBuf>,
    /// ClickHouse database name (default claude_logs).
    #[arg(long, global = true, env = "CLAUDE_INGEST_DATABASE")]
    database: Option<String>,
    /// Identity stamped on every row: this machine (default: the host name).
    #[arg(long, global = true, env = "CLAUDE_INGEST_HOST")]
    identity_host: Option<String>,
    /// Identity stamped on every row: the user (default: the OS user).
    #[arg(long, global = true, env = "CLAUDE_INGEST_USER")]
    identity_user: Option<String>,
    /// Log format: text or json.
    #[arg(
        long,
        global = true,
        default_value = "text",
        env = "CLAUDE_INGEST_LOG_FORMAT"
    )]
    log_format: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Backfill every existing file, then follow new lines live (the main job).
    Ingest {
        /// Address of the API + dashboard served alongside ingestion.
        #[arg(long)]
        listen: Option<String>,
        /// Do not serve the API / dashboard.
        #[arg(long)]
        no_api: bool,
        #[command(flatten)]
        auth: AuthArgs,
    },
    /// One pass over existing files, then exit with a summary.
    Backfill {
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Serve the analytics API and dashboard only.
    Serve {
        #[arg(long)]
        listen: Option<String>,
        #[command(flatten)]
        auth: AuthArgs,
    },
    /// Validate a rules directory (and the plugins it references).
    CheckRules {
        /// Directory to check (default: the configured rules dir).
        dir: Option<PathBuf>,
    },
    /// Print the DDL applied on start (or for a cluster, or the access grants).
    Schema(claude_ingest::sink::cluster::SchemaArgs),
    /// Usage reports like ccusage's: daily, weekly, monthly, session, blocks.
    Report(claude_ingest::report::ReportArgs),
    /// Install the embedded ClickHouse engine and the example plugins (idempotent).
    Setup,
    /// Run `ingest` as a service: systemd user unit (Linux) / launchd agent (macOS).
    Service(claude_ingest::ops::service::ServiceArgs),
    /// Run a read-only SQL query on the store (attaches to a running `ingest`).
    Sql(claude_ingest::ops::sql::SqlArgs),
    /// Show what the rules and plugins make of log lines, storing nothing.
    Try(claude_ingest::ops::trial::TryArgs),
    /// Write and check your own plugins: `plugin new`, `plugin test`.
    #[command(subcommand)]
    Plugin(claude_ingest::ops::plugin_sdk::PluginCmd),
}

#[derive(Args, Debug)]
struct AuthArgs {
    /// Serve the API on a non-loopback address without bearer tokens.
    #[arg(long)]
    insecure_no_auth: bool,
}

impl AuthArgs {
    fn apply(&self, cfg: &mut Config) {
        cfg.api.insecure_no_auth |= self.insecure_no_auth;
    }
}

fn build_config(g: &GlobalArgs) -> Result<Config> {
    let mut cfg = match &g.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(v) = &g.root {
        cfg.root = v.clone();
    }
    if let Some(v) = &g.state_dir {
        cfg.state_dir = v.clone();
    }
    if let Some(v) = &g.rules {
        cfg.rules_dir = v.clone();
    }
    if let Some(v) = &g.plugins {
        cfg.plugins_dir = v.clone();
    }
    if let Some(v) = &g.clickhouse_url {
        cfg.clickhouse.url = v.clone();
        cfg.clickhouse.mode = ClickHouseMode::Server;
    }
    if let Some(v) = &g.clickhouse_user {
        cfg.clickhouse.user = v.clone();
    }
    if let Some(v) = &g.clickhouse_password {
        cfg.clickhouse.password = v.clone();
    }
    if let Some(v) = &g.clickhouse_password_file {
        cfg.clickhouse.password_file = Some(v.clone());
    }
    if g.no_builtin_rules {
        cfg.builtin_rules = false;
    }
    cfg.clickhouse.read_password_file()?;
    if let Some(v) = &g.database {
        cfg.clickhouse.database = v.clone();
    }
    if let Some(v) = &g.identity_host {
        cfg.identity.host = Some(v.clone());
    }
    if let Some(v) = &g.identity_user {
        cfg.identity.user = Some(v.clone());
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The global options given now (flags or env), for the service to run with:
/// paths made absolute (it runs elsewhere), the password left out (the
/// service writes it to a private file).
fn service_globals(g: &GlobalArgs) -> Result<Vec<OsString>> {
    let mut out: Vec<OsString> = Vec::new();
    let paths = [
        ("--config", &g.config),
        ("--root", &g.root),
        ("--state-dir", &g.state_dir),
        ("--rules", &g.rules),
        ("--plugins", &g.plugins),
        ("--clickhouse-password-file", &g.clickhouse_password_file),
    ];
    for (flag, value) in paths {
        if let Some(p) = value {
            let abs = std::path::absolute(p)
                .with_context(|| format!("cannot make {} absolute", p.display()))?;
            out.extend([flag.into(), abs.into_os_string()]);
        }
    }
    let words = [
        ("--clickhouse-url", &g.clickhouse_url),
        ("--clickhouse-user", &g.clickhouse_user),
        ("--database", &g.database),
    ];
    for (flag, value) in words {
        if let Some(v) = value {
            out.extend([flag.into(), v.into()]);
        }
    }
    if g.no_builtin_rules {
        out.push("--no-builtin-rules".into());
    }
    if g.log_format != "text" {
        out.extend(["--log-format".into(), g.log_format.clone().into()]);
    }
    Ok(out)
}

fn init_tracing(format: &str, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if std::env::args()
        .any(|a| a == "--clickhouse-password" || a.starts_with("--clickhouse-password="))
    {
        eprintln!(
            "warning: a password on the command line is visible to every local user (ps); \
             use CLICKHOUSE_PASSWORD or --clickhouse-password-file"
        );
    }
    // A report is read by a person: engine start-up chatter only on request (RUST_LOG).
    let level = if matches!(
        cli.command,
        Command::Report(_) | Command::Sql(_) | Command::Try(_) | Command::Plugin(_)
    ) {
        "warn"
    } else {
        "info"
    };
    init_tracing(&cli.global.log_format, level);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let mut cfg = build_config(&cli.global)?;
    if let Command::Ingest { auth, .. } | Command::Serve { auth, .. } = &cli.command {
        auth.apply(&mut cfg);
    }
    match cli.command {
        Command::Schema(args) if !args.apply => {
            print!("{}", pipeline::schema_text(&cfg, &args)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckRules { dir } => {
            let mut source = cfg.rule_source();
            if let Some(dir) = dir {
                source.dir = dir;
                source.dir_optional = false;
            }
            let ok = pipeline::check_rules(&cfg, &source)?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Try(args) => Ok(if claude_ingest::ops::trial::run(&cfg, &args)? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        Command::Plugin(cmd) => Ok(if claude_ingest::ops::plugin_sdk::run(&cfg, &cmd)? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        Command::Service(args) => {
            let password = cli.global.clickhouse_password.as_deref();
            claude_ingest::ops::service::run(&args, service_globals(&cli.global)?, password)?;
            Ok(ExitCode::SUCCESS)
        }
        command => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(async move {
                match command {
                    Command::Ingest { listen, no_api, .. } => {
                        let listen = if no_api {
                            None
                        } else {
                            Some(listen.unwrap_or_else(|| cfg.api.listen.clone()))
                        };
                        pipeline::ingest(cfg, listen).await?;
                    }
                    Command::Backfill { quiet } => {
                        let summary = pipeline::backfill(cfg, !quiet).await?;
                        println!("{summary}");
                    }
                    Command::Serve { listen, .. } => {
                        let listen = listen.unwrap_or_else(|| cfg.api.listen.clone());
                        pipeline::serve(cfg, &listen).await?;
                    }
                    Command::Report(args) => {
                        let conn = pipeline::connect_reader(&cfg).await?;
                        print!("{}", claude_ingest::report::run(&conn.reader, &args).await?);
                    }
                    Command::Sql(args) => {
                        let conn = pipeline::connect_reader(&cfg).await?;
                        claude_ingest::ops::sql::run(&conn.reader, &args).await?;
                    }
                    Command::Setup => claude_ingest::ops::setup::run(&cfg).await?,
                    Command::Schema(_) => println!("{}", pipeline::apply_schema(&cfg).await?),
                    Command::CheckRules { .. }
                    | Command::Service(_)
                    | Command::Try(_)
                    | Command::Plugin(_) => {}
                }
                Ok::<_, anyhow::Error>(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
