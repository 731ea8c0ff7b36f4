//! `claude-ingest report`: the usage reports ccusage users know (daily, weekly,
//! monthly, per session, 5-hour billing blocks), read from `claude_requests`.
//!
//! Every figure comes from that table read with FINAL: one row per API request,
//! its final streaming snapshot, so a response logged as several lines, a
//! `--resume` copy or a re-ingestion never counts twice. The JSON keys mirror
//! ccusage 20's `--json` output so scripts can switch; a model without a price
//! is counted in tokens, its cost is `null` and it is listed in `unpricedModels`
//! (never a silent 0).

pub mod blocks;
mod query;
pub mod shape;
mod table;

use crate::sink::clickhouse::ChClient;
use anyhow::{bail, Context, Result};
use chrono::NaiveDate;
use std::path::Path;

/// Length of a billing block (Claude's 5-hour usage window).
pub const BLOCK_MS: i64 = 5 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportKind {
    Daily,
    Weekly,
    Monthly,
    Session,
    Blocks,
}

impl ReportKind {
    /// The top-level JSON key ccusage uses for the entries.
    fn json_key(self) -> &'static str {
        match self {
            ReportKind::Daily => "daily",
            ReportKind::Weekly => "weekly",
            ReportKind::Monthly => "monthly",
            ReportKind::Session => "session",
            ReportKind::Blocks => "blocks",
        }
    }
}

/// Arguments of `claude-ingest report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// daily, weekly (weeks start on Monday), monthly, session, or blocks (5-hour billing windows).
    #[arg(value_enum)]
    pub kind: ReportKind,
    /// JSON output shaped like ccusage's `--json`.
    #[arg(long, short = 'j')]
    pub json: bool,
    /// First day included (YYYY-MM-DD or YYYYMMDD, in the report's time zone).
    #[arg(long, short = 's')]
    pub since: Option<String>,
    /// Last day included (YYYY-MM-DD or YYYYMMDD, in the report's time zone).
    #[arg(long, short = 'u')]
    pub until: Option<String>,
    /// Only this project: its directory under the projects root (`-home-me-app`),
    /// or its path (`/home/me/app`: also sessions that ran in it or below it).
    #[arg(long, allow_hyphen_values = true)]
    pub project: Option<String>,
    /// IANA time zone that days, weeks and months are cut in (default: the system's).
    #[arg(long, short = 'z')]
    pub timezone: Option<String>,
    /// One line per model under each period in the table view.
    #[arg(long, short = 'b')]
    pub breakdown: bool,
}

/// What every query filters on.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub timezone: String,
    pub since: Option<NaiveDate>,
    pub until: Option<NaiveDate>,
    /// `--project`: a project directory name or a working directory path.
    pub project: Option<String>,
}

impl Filter {
    pub fn from_args(args: &ReportArgs) -> Result<Filter> {
        let since = args.since.as_deref().map(parse_day).transpose()?;
        let until = args.until.as_deref().map(parse_day).transpose()?;
        if let (Some(s), Some(u)) = (since, until) {
            if s > u {
                bail!("--since {s} is after --until {u}");
            }
        }
        let timezone = match &args.timezone {
            Some(tz) => checked_timezone(tz)?,
            None => system_timezone(),
        };
        Ok(Filter {
            timezone,
            since,
            until,
            project: args.project.clone(),
        })
    }
}

/// Runs one report and returns what to print.
pub async fn run(client: &ChClient, args: &ReportArgs) -> Result<String> {
    let filter = Filter::from_args(args)?;
    tracing::debug!(kind = ?args.kind, ?filter, "report");
    query::check_timezone(client, &filter.timezone).await?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    match args.kind {
        ReportKind::Blocks => {
            let requests = query::requests(client, &filter).await?;
            let list = blocks::build(&requests, now_ms, BLOCK_MS);
            if args.json {
                return to_text(&blocks::to_json(&list, now_ms));
            }
            let labels =
                query::time_labels(client, &filter.timezone, &blocks::times(&list)).await?;
            Ok(table::blocks(&list, now_ms, &labels, &filter.timezone))
        }
        kind => {
            let mut rows = query::usage(client, &filter, kind).await?;
            if kind == ReportKind::Session {
                let paths = query::project_paths(client, &filter).await?;
                for r in &mut rows {
                    r.project_path = paths.get(&(r.project.clone(), r.group.clone())).cloned();
                }
            }
            let report = shape::Report::from_rows(rows, kind);
            if args.json {
                return to_text(&report.to_json(kind, &filter.timezone));
            }
            let last = report.groups.iter().map(|g| g.last_ms).collect::<Vec<_>>();
            let labels = query::time_labels(client, &filter.timezone, &last).await?;
            Ok(table::periods(
                &report,
                kind,
                args.breakdown,
                &labels,
                &filter.timezone,
            ))
        }
    }
}

fn to_text(v: &serde_json::Value) -> Result<String> {
    let mut s = serde_json::to_string_pretty(v).context("cannot serialise the report")?;
    s.push('\n');
    Ok(s)
}

/// `2026-01-31` or `20260131` (what ccusage accepts).
pub fn parse_day(s: &str) -> Result<NaiveDate> {
    let s = s.trim();
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(s, "%Y%m%d"))
        .with_context(|| format!("`{s}` is not a date (YYYY-MM-DD or YYYYMMDD)"))
}

/// `--project` takes the directory name Claude Code uses (`-home-me-app`) or
/// the project's path (`/home/me/app`), which Claude Code turns into that name
/// by replacing every character other than a letter or digit with `-`.
pub fn project_names(arg: &str) -> Vec<String> {
    let encoded: String = arg
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut names = vec![arg.to_string()];
    if encoded != arg {
        names.push(encoded);
    }
    names
}

/// A time zone name as ClickHouse knows them (IANA). ClickHouse rejects
/// unknown names itself; this only keeps obviously malformed text out of
/// error messages.
pub fn checked_timezone(tz: &str) -> Result<String> {
    let ok = !tz.is_empty()
        && tz.len() <= 64
        && tz
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'));
    if !ok {
        bail!("`{tz}` is not an IANA time zone name (e.g. UTC, Europe/Paris, America/New_York)");
    }
    Ok(tz.to_string())
}

/// The system's zone, as ccusage uses by default: `TZ` when it names a zone,
/// else the target of the `/etc/localtime` link, else `/etc/timezone`, else UTC.
pub fn system_timezone() -> String {
    let from_env = std::env::var("TZ").ok().and_then(|v| zone_of_tz_var(&v));
    from_env
        .or_else(|| {
            let target = std::fs::read_link("/etc/localtime").ok()?;
            zone_of_path(&target)
        })
        .or_else(|| {
            let text = std::fs::read_to_string("/etc/timezone").ok()?;
            checked_timezone(text.trim()).ok()
        })
        .unwrap_or_else(|| "UTC".to_string())
}

/// `Europe/Paris`, `:Europe/Paris` or `/usr/share/zoneinfo/Europe/Paris`.
fn zone_of_tz_var(v: &str) -> Option<String> {
    let v = v.trim().trim_start_matches(':');
    if v.starts_with('/') {
        return zone_of_path(Path::new(v));
    }
    checked_timezone(v).ok()
}

/// The zone name after `zoneinfo/` in a tz database path.
fn zone_of_path(p: &Path) -> Option<String> {
    let s = p.to_string_lossy();
    let (_, name) = s.split_once("zoneinfo/")?;
    checked_timezone(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_in_both_formats() {
        let d = NaiveDate::from_ymd_opt(2026, 1, 31).unwrap();
        assert_eq!(parse_day("2026-01-31").unwrap(), d);
        assert_eq!(parse_day("20260131").unwrap(), d);
        assert!(parse_day("31/01/2026").is_err());
    }

    #[test]
    fn project_by_name_or_path() {
        assert_eq!(project_names("-home-me-app"), vec!["-home-me-app"]);
        assert_eq!(
            project_names("/home/me/my.app"),
            vec!["/home/me/my.app", "-home-me-my-app"]
        );
    }

    #[test]
    fn time_zone_names() {
        assert_eq!(
            zone_of_tz_var(":Europe/Paris").as_deref(),
            Some("Europe/Paris")
        );
        assert_eq!(
            zone_of_tz_var("/usr/share/zoneinfo/America/New_York").as_deref(),
            Some("America/New_York")
        );
        assert_eq!(
            zone_of_path(Path::new("/var/db/timezone/zoneinfo/Asia/Tokyo")).as_deref(),
            Some("Asia/Tokyo")
        );
        assert_eq!(zone_of_tz_var(""), None);
        assert!(checked_timezone("UTC'; DROP").is_err());
        assert!(checked_timezone("Etc/GMT+5").is_ok());
    }

    #[test]
    fn a_project_name_may_start_with_a_dash() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: ReportArgs,
        }
        let cli = Cli::try_parse_from(["report", "session", "--project", "-home-me-app", "-j"])
            .expect("parses");
        assert_eq!(cli.args.kind, ReportKind::Session);
        assert_eq!(cli.args.project.as_deref(), Some("-home-me-app"));
        assert!(cli.args.json);
    }

    #[test]
    fn since_after_until_is_an_error() {
        let args = ReportArgs {
            kind: ReportKind::Daily,
            json: false,
            since: Some("2026-02-01".into()),
            until: Some("2026-01-01".into()),
            project: None,
            timezone: Some("UTC".into()),
            breakdown: false,
        };
        assert!(Filter::from_args(&args).is_err());
    }
}
