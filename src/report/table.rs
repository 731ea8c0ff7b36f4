//! Plain-text tables for a terminal: aligned columns, thousands separators,
//! costs in dollars, and a footnote for every model that has no price.

use super::blocks::{self, Block};
use super::shape::{short_model, Group, Report, Unpriced};
use super::ReportKind;
use std::collections::HashMap;
use std::fmt::Write;

enum Line {
    Cells(Vec<String>),
    Rule,
}

/// Columns, which of them are right-aligned (numbers), and the lines.
struct Table {
    header: Vec<&'static str>,
    right: Vec<bool>,
    lines: Vec<Line>,
}

impl Table {
    fn new(cols: &[(&'static str, bool)]) -> Table {
        Table {
            header: cols.iter().map(|c| c.0).collect(),
            right: cols.iter().map(|c| c.1).collect(),
            lines: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.lines.push(Line::Cells(cells));
    }

    fn render(&self) -> String {
        let mut width: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for line in &self.lines {
            if let Line::Cells(cells) = line {
                for (w, c) in width.iter_mut().zip(cells) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        let mut out = self.format_cells(&header, &width);
        out.push_str(&self.format_rule(&width));
        for line in &self.lines {
            match line {
                Line::Cells(cells) => out.push_str(&self.format_cells(cells, &width)),
                Line::Rule => out.push_str(&self.format_rule(&width)),
            }
        }
        out
    }

    fn format_cells(&self, cells: &[String], width: &[usize]) -> String {
        let mut s = String::new();
        for (i, w) in width.iter().enumerate() {
            let c = cells.get(i).map(String::as_str).unwrap_or("");
            let pad = w.saturating_sub(c.chars().count());
            let (l, r) = if self.right[i] { (pad, 0) } else { (0, pad) };
            let _ = write!(s, "{}{}{}  ", " ".repeat(l), c, " ".repeat(r));
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    }

    fn format_rule(&self, width: &[usize]) -> String {
        let parts: Vec<String> = width.iter().map(|w| "─".repeat(*w)).collect();
        format!("{}\n", parts.join("  "))
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn dollars(v: f64) -> String {
    format!("${v:.2}")
}

const TOKEN_COLS: [(&str, bool); 6] = [
    ("Input", true),
    ("Output", true),
    ("Cache Create", true),
    ("Cache Read", true),
    ("Total Tokens", true),
    ("Cost (USD)", true),
];

fn token_cells(t: &super::shape::Tokens, cost: String) -> Vec<String> {
    vec![
        thousands(t.input),
        thousands(t.output),
        thousands(t.cache_creation),
        thousands(t.cache_read),
        thousands(t.total()),
        cost,
    ]
}

/// Daily / weekly / monthly / session table; `--breakdown` adds a line per model.
pub fn periods(
    r: &Report,
    kind: ReportKind,
    breakdown: bool,
    labels: &HashMap<i64, String>,
    tz: &str,
) -> String {
    let first: &[(&'static str, bool)] = match kind {
        ReportKind::Weekly => &[("Week of", false)],
        ReportKind::Monthly => &[("Month", false)],
        ReportKind::Session => &[
            ("Session", false),
            ("Project", false),
            ("Last activity", false),
        ],
        _ => &[("Date", false)],
    };
    let mut cols = first.to_vec();
    cols.push(("Models", false));
    cols.extend(TOKEN_COLS);
    let mut t = Table::new(&cols);
    for g in &r.groups {
        let mut cells = lead_cells(g, kind, labels);
        let models: Vec<String> = g.models_used().iter().map(|m| short_model(m)).collect();
        cells.push(models.join(", "));
        let mark = if g.unpriced_models().is_empty() {
            ""
        } else {
            "*"
        };
        cells.extend(token_cells(&g.tokens, format!("{}{mark}", dollars(g.cost))));
        t.row(cells);
        if breakdown {
            for m in &g.models {
                let mut cells = vec![String::new(); first.len()];
                cells.push(format!("└ {}", short_model(&m.model)));
                let cost = m.cost.map(dollars).unwrap_or_else(|| "no price".into());
                cells.extend(token_cells(&m.tokens, cost));
                t.row(cells);
            }
        }
    }
    t.lines.push(Line::Rule);
    let mut total = vec!["Total".to_string()];
    total.resize(first.len() + 1, String::new());
    let mark = if r.unpriced.is_empty() { "" } else { "*" };
    total.extend(token_cells(&r.tokens, format!("{}{mark}", dollars(r.cost))));
    t.row(total);
    let title = match kind {
        ReportKind::Session => "Claude Code usage by session".to_string(),
        _ => format!("Claude Code usage, {} (time zone {tz})", kind_name(kind)),
    };
    if r.groups.is_empty() {
        return format!("{title}\n\nNo usage found (check --since, --until, --project).\n");
    }
    let notes: Vec<String> = r.unpriced.iter().map(describe).collect();
    format!("{title}\n\n{}{}", t.render(), unpriced_note(&notes))
}

fn kind_name(kind: ReportKind) -> &'static str {
    match kind {
        ReportKind::Daily => "by day",
        ReportKind::Weekly => "by week",
        ReportKind::Monthly => "by month",
        ReportKind::Session => "by session",
        ReportKind::Blocks => "by 5-hour block",
    }
}

fn lead_cells(g: &Group, kind: ReportKind, labels: &HashMap<i64, String>) -> Vec<String> {
    if kind != ReportKind::Session {
        return vec![g.key.clone()];
    }
    vec![
        g.key.clone(),
        g.project_path.clone().unwrap_or_else(|| g.project.clone()),
        labels.get(&g.last_ms).cloned().unwrap_or_default(),
    ]
}

/// The footnote that keeps an unpriced model from passing for free.
fn unpriced_note(items: &[String]) -> String {
    if items.is_empty() {
        return String::new();
    }
    format!(
        "\n* costs exclude models with no price (their tokens are counted): {}\n",
        items.join(", ")
    )
}

fn describe(u: &Unpriced) -> String {
    let plural = if u.requests == 1 { "" } else { "s" };
    format!(
        "{} ({} request{plural}, {} tokens)",
        u.model,
        thousands(u.requests),
        thousands(u.tokens)
    )
}

/// `4h 53m`.
fn duration(ms: i64) -> String {
    let minutes = ms.max(0) / 60_000;
    if minutes >= 60 {
        format!("{}h {}m", minutes / 60, minutes % 60)
    } else {
        format!("{minutes}m")
    }
}

/// The blocks table, then the active block's burn rate and projection.
pub fn blocks(list: &[Block], now_ms: i64, labels: &HashMap<i64, String>, tz: &str) -> String {
    let mut t = Table::new(&[
        ("Block start", false),
        ("Duration / status", false),
        ("Models", false),
        ("Tokens", true),
        ("Cost (USD)", true),
        ("Burn rate", true),
    ]);
    let label = |ms: i64| labels.get(&ms).cloned().unwrap_or_default();
    for b in list {
        if b.is_gap {
            let hours = (b.end_ms - b.start_ms) / 3_600_000;
            t.row(vec![
                format!("{} → {}", label(b.start_ms), label(b.end_ms)),
                format!("gap ({hours}h idle)"),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            continue;
        }
        let used = b.actual_end_ms.unwrap_or(b.start_ms) - b.start_ms;
        let status = if b.is_active {
            format!("ACTIVE, {} left", duration(b.end_ms - now_ms))
        } else {
            duration(used)
        };
        let models: Vec<String> = b.models.iter().map(|m| short_model(m)).collect();
        let mark = if b.unpriced_models.is_empty() {
            ""
        } else {
            "*"
        };
        let burn = blocks::burn_rate(b)
            .map(|r| {
                let per_min = thousands(r.tokens_per_minute.round() as u64);
                format!("{per_min} tok/min, ${:.2}/h", r.cost_per_hour)
            })
            .unwrap_or_else(|| "-".into());
        t.row(vec![
            label(b.start_ms),
            status,
            models.join(", "),
            thousands(b.tokens.total()),
            format!("{}{mark}", dollars(b.cost)),
            burn,
        ]);
    }
    let title = format!("Claude Code usage by 5-hour billing block (times in {tz})");
    if list.is_empty() {
        return format!("{title}\n\nNo usage found (check --since, --until, --project).\n");
    }
    let mut out = format!("{title}\n\n{}", t.render());
    if let Some(b) = list.iter().find(|b| b.is_active) {
        out.push_str(&active_note(b, now_ms, &label(b.end_ms)));
    }
    let mut unpriced: Vec<String> = list
        .iter()
        .flat_map(|b| b.unpriced_models.clone())
        .collect();
    unpriced.sort();
    unpriced.dedup();
    out.push_str(&unpriced_note(&unpriced));
    out
}

fn active_note(b: &Block, now_ms: i64, end_label: &str) -> String {
    let (Some(r), Some(p)) = (blocks::burn_rate(b), blocks::projection(b, now_ms)) else {
        return "\nActive block: a single request so far, no burn rate yet\n".into();
    };
    format!(
        "\nActive block: {} tokens/min ({} input+output), ${:.2}/h; at this rate by {end_label}: \
         {} tokens, ${:.2} ({} min left)\n",
        thousands(r.tokens_per_minute.round() as u64),
        thousands(r.tokens_per_minute_for_indicator.round() as u64),
        r.cost_per_hour,
        thousands(p.total_tokens),
        p.total_cost,
        p.remaining_minutes
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::shape::{Tokens, UsageRow};

    #[test]
    fn active_block_shows_time_left_and_projection() {
        // 2026-01-10T09:00Z; requests at 09:10 and 09:40, now 10:00
        let t0 = 1_768_035_600_000;
        let req = |ts_ms| crate::report::blocks::Request {
            ts_ms,
            model: "claude-sonnet-4-5".into(),
            tokens: Tokens {
                input: 100,
                output: 200,
                cache_creation: 100,
                cache_read: 1000,
            },
            cost: 0.6,
            priced: true,
        };
        let now = t0 + 60 * 60_000;
        let list = blocks::build(
            &[req(t0 + 600_000), req(t0 + 2_400_000)],
            now,
            crate::report::BLOCK_MS,
        );
        let labels = HashMap::from([
            (t0, "09:00".to_string()),
            (t0 + 5 * 3_600_000, "14:00".to_string()),
        ]);
        let text = super::blocks(&list, now, &labels, "UTC");
        assert!(text.contains("ACTIVE, 4h 0m left"), "{text}");
        assert!(
            text.contains("Active block: 93 tokens/min (20 input+output), $2.40/h; at this rate by 14:00: 25,200 tokens, $10.80 (240 min left)"),
            "{text}"
        );
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(6357607), "6,357,607");
    }

    #[test]
    fn table_marks_unpriced_costs_and_totals() {
        let row = |model: &str, cost: f64, unpriced: u64| UsageRow {
            group: "2026-01-10".into(),
            project: String::new(),
            project_path: None,
            model: model.into(),
            tokens: Tokens {
                input: 1000,
                output: 2000,
                cache_creation: 0,
                cache_read: 0,
            },
            cost,
            requests: 2,
            unpriced_requests: unpriced,
            last_ms: 0,
        };
        let r = Report::from_rows(
            vec![
                row("claude-mystery-9", 0.0, 2),
                row("claude-sonnet-4-5-20250929", 1.5, 0),
            ],
            ReportKind::Daily,
        );
        let text = periods(&r, ReportKind::Daily, true, &HashMap::new(), "UTC");
        assert!(text.contains("mystery-9, sonnet-4-5"), "{text}");
        assert!(text.contains("$1.50*"), "{text}");
        assert!(text.contains("no price"), "{text}");
        assert!(
            text.contains("claude-mystery-9 (2 requests, 3,000 tokens)"),
            "{text}"
        );
        let total = text.lines().find(|l| l.starts_with("Total")).unwrap();
        assert!(
            total.contains("6,000") && total.contains("$1.50*"),
            "{total}"
        );
    }
}
