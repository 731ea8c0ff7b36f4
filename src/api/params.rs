//! Query-string validation. Every endpoint declares the parameters it takes;
//! anything else, or any value that does not parse, is a 400 with a message
//! naming the parameter. Values only ever reach ClickHouse as bound
//! parameters, never as SQL text.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    /// The ClickHouse function for this bucket (a fixed string, not input).
    pub fn function(self) -> &'static str {
        match self {
            Bucket::Hour => "toStartOfHour",
            Bucket::Day => "toStartOfDay",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Filters {
    /// Inclusive start, `YYYY-MM-DD HH:MM:SS.mmm` UTC.
    pub from: String,
    /// Exclusive end.
    pub to: String,
    pub project: String,
    /// Identity filters (`user_name` / `host` columns); '' = any.
    pub user: String,
    pub host: String,
    /// The project a scoped token is limited to ('' = none): lists that
    /// ignore the `project` choice (the project picker) still honour it.
    pub project_scope: String,
    pub session: String,
    pub limit: u32,
    pub bucket: Bucket,
    pub range_given: bool,
}

const FAR_PAST: &str = "1970-01-01 00:00:00.000";
/// Within ClickHouse `Date` range (up to 2149), so `toDate(to)` never overflows.
const FAR_FUTURE: &str = "2149-01-01 00:00:00.000";

fn fmt(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// RFC 3339 (`2026-10-01T12:00:00Z`) or a date (`2026-10-01`). A date as the
/// end of a range means "through that day".
fn parse_time(name: &str, v: &str, end: bool) -> Result<DateTime<Utc>, String> {
    let t = parse_any_time(name, v, end)?;
    // Outside this range ClickHouse's DateTime64 parameters wrap around and
    // give silently wrong figures: refuse instead.
    let hi = NaiveDateTime::parse_from_str(FAR_FUTURE, "%Y-%m-%d %H:%M:%S%.3f")
        .map(|d| d.and_utc())
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    if t < DateTime::<Utc>::UNIX_EPOCH || t > hi {
        return Err(format!(
            "`{name}` must be between 1970-01-01 and {}, not `{v}`",
            &FAR_FUTURE[..10]
        ));
    }
    Ok(t)
}

fn parse_any_time(name: &str, v: &str, end: bool) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S") {
        return Ok(t.and_utc());
    }
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        let d = if end { d.succ_opt().unwrap_or(d) } else { d };
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    Err(format!(
        "`{name}` must be a date (YYYY-MM-DD) or an RFC 3339 time (2026-10-01T12:00:00Z), not `{v}`"
    ))
}

pub fn parse(
    q: &HashMap<String, String>,
    allowed: &[&str],
    default_limit: u32,
) -> Result<Filters, String> {
    for k in q.keys() {
        if !allowed.contains(&k.as_str()) {
            let mut names: Vec<&str> = allowed.to_vec();
            names.sort();
            return Err(format!(
                "unknown parameter `{k}` (this endpoint takes: {})",
                names.join(", ")
            ));
        }
    }
    let get = |k: &str| q.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
    let from = get("from")
        .map(|v| parse_time("from", v, false))
        .transpose()?;
    let to = get("to").map(|v| parse_time("to", v, true)).transpose()?;
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err("`from` must be before `to`".into());
        }
    }
    let limit = match get("limit") {
        None => default_limit,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(format!(
                    "`limit` must be an integer from 1 to 1000, not `{v}`"
                ))
            }
        },
    };
    let bucket = match get("bucket") {
        None | Some("day") => Bucket::Day,
        Some("hour") => Bucket::Hour,
        Some(v) => return Err(format!("`bucket` must be `hour` or `day`, not `{v}`")),
    };
    let text = |k: &str| -> Result<String, String> {
        match get(k) {
            None => Ok(String::new()),
            Some(v) if v.len() > 512 => Err(format!("`{k}` is too long (max 512 bytes)")),
            Some(v) if v.chars().any(char::is_control) => {
                Err(format!("`{k}` contains control characters"))
            }
            Some(v) => Ok(v.to_string()),
        }
    };
    Ok(Filters {
        range_given: from.is_some() || to.is_some(),
        from: from.map(fmt).unwrap_or_else(|| FAR_PAST.into()),
        to: to.map(fmt).unwrap_or_else(|| FAR_FUTURE.into()),
        project: text("project")?,
        user: text("user")?,
        host: text("host")?,
        project_scope: String::new(),
        session: text("session")?,
        limit,
        bucket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const ALL: &[&str] = &[
        "from", "to", "project", "user", "host", "session", "limit", "bucket",
    ];

    #[test]
    fn parses_and_defaults() {
        let f = parse(&q(&[]), ALL, 50).unwrap();
        assert_eq!(
            (f.from.as_str(), f.to.as_str(), f.limit),
            (FAR_PAST, FAR_FUTURE, 50)
        );
        let f = parse(
            &q(&[
                ("from", "2026-10-01"),
                ("to", "2026-10-02"),
                ("limit", "7"),
                ("bucket", "hour"),
                ("project", "a'b"),
                ("user", "alice"),
                ("host", "laptop-1"),
            ]),
            ALL,
            50,
        )
        .unwrap();
        assert_eq!(f.from, "2026-10-01 00:00:00.000");
        assert_eq!(
            f.to, "2026-10-03 00:00:00.000",
            "a date as `to` includes that day"
        );
        assert_eq!(f.limit, 7);
        assert_eq!(f.bucket, Bucket::Hour);
        assert_eq!(f.project, "a'b", "quotes are data");
        assert_eq!((f.user.as_str(), f.host.as_str()), ("alice", "laptop-1"));
        let f = parse(&q(&[("from", "2026-10-01T10:00:00+02:00")]), ALL, 50).unwrap();
        assert_eq!(f.from, "2026-10-01 08:00:00.000");
    }

    #[test]
    fn rejects_with_the_parameter_name() {
        for (pairs, needle) in [
            (vec![("from", "yesterday")], "`from`"),
            (vec![("from", "1969-12-31")], "between 1970-01-01"),
            (vec![("to", "2300-01-01")], "between 1970-01-01"),
            (vec![("limit", "0")], "`limit`"),
            (vec![("limit", "abc")], "`limit`"),
            (vec![("limit", "1001")], "`limit`"),
            (vec![("bucket", "week")], "`bucket`"),
            (vec![("from", "2026-10-02"), ("to", "2026-10-01")], "before"),
            (vec![("sort", "x")], "unknown parameter `sort`"),
            (vec![("project", "a\u{0}b")], "control"),
            (vec![("user", "a\nb")], "control"),
            (vec![("host", "h".repeat(513).as_str())], "too long"),
        ] {
            let err = parse(&q(&pairs), ALL, 50).unwrap_err();
            assert!(err.contains(needle), "{pairs:?}: {err}");
        }
        assert!(parse(&q(&[("bucket", "hour")]), &["from"], 50)
            .unwrap_err()
            .contains("unknown parameter"));
    }
}
