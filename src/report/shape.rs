//! Per-period and per-session figures: folds the per-(group, model) sums the
//! query returns into report entries, and serialises them like ccusage.

use super::ReportKind;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Claude Code's placeholder model for locally generated replies (API errors,
/// interruptions): zero usage, and ccusage leaves it out of model lists.
pub const SYNTHETIC_MODEL: &str = "<synthetic>";

/// The four token counts ccusage reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    /// every cache write (5-minute and 1-hour)
    pub cache_creation: u64,
    pub cache_read: u64,
}

impl Tokens {
    pub fn total(&self) -> u64 {
        self.input + self.output + self.cache_creation + self.cache_read
    }

    pub fn add(&mut self, o: &Tokens) {
        self.input += o.input;
        self.output += o.output;
        self.cache_creation += o.cache_creation;
        self.cache_read += o.cache_read;
    }

    /// ccusage's keys for period entries and model breakdowns.
    fn json_fields(&self, m: &mut serde_json::Map<String, Value>) {
        m.insert("inputTokens".into(), self.input.into());
        m.insert("outputTokens".into(), self.output.into());
        m.insert("cacheCreationTokens".into(), self.cache_creation.into());
        m.insert("cacheReadTokens".into(), self.cache_read.into());
    }
}

/// One model's usage within one group (a period, or a session), as queried.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    /// the period (`2026-01-31`, `2026-01-26`, `2026-01`) or the session id
    pub group: String,
    /// project directory (session report only)
    pub project: String,
    /// the session's working directory (session report only)
    pub project_path: Option<String>,
    pub model: String,
    pub tokens: Tokens,
    /// USD of the priced requests
    pub cost: f64,
    pub requests: u64,
    /// requests whose model has no price (their cost is unknown, not 0)
    pub unpriced_requests: u64,
    /// the group's last request with this model (ms since the epoch)
    pub last_ms: i64,
}

/// A model's share of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelUsage {
    pub model: String,
    pub tokens: Tokens,
    /// None when none of its requests has a price
    pub cost: Option<f64>,
    pub requests: u64,
    pub unpriced_requests: u64,
}

/// One report entry: a period or a session.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub key: String,
    pub project: String,
    pub project_path: Option<String>,
    pub tokens: Tokens,
    /// USD of the priced requests
    pub cost: f64,
    pub requests: u64,
    pub last_ms: i64,
    /// by cost, highest first (ccusage's order)
    pub models: Vec<ModelUsage>,
}

impl Group {
    /// Model names, sorted (ccusage's `modelsUsed`).
    pub fn models_used(&self) -> Vec<&str> {
        let set: BTreeSet<&str> = self.models.iter().map(|m| m.model.as_str()).collect();
        set.into_iter().collect()
    }

    /// Models with at least one request that has no price.
    pub fn unpriced_models(&self) -> Vec<&str> {
        let set: BTreeSet<&str> = self
            .models
            .iter()
            .filter(|m| m.unpriced_requests > 0)
            .map(|m| m.model.as_str())
            .collect();
        set.into_iter().collect()
    }
}

/// A model without a price, over the whole report.
#[derive(Debug, Clone, PartialEq)]
pub struct Unpriced {
    pub model: String,
    pub requests: u64,
    pub tokens: u64,
}

/// A whole report: its entries, their totals, and what could not be priced.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub groups: Vec<Group>,
    pub tokens: Tokens,
    pub cost: f64,
    pub unpriced: Vec<Unpriced>,
}

impl Report {
    /// Folds rows into entries: periods in time order, sessions by cost
    /// (highest first, like ccusage), then most recent first.
    pub fn from_rows(rows: Vec<UsageRow>, kind: ReportKind) -> Report {
        let mut groups: Vec<Group> = Vec::new();
        for r in rows.into_iter().filter(|r| !is_empty_synthetic(r)) {
            let same = groups
                .last()
                .is_some_and(|g| g.key == r.group && g.project == r.project);
            if !same {
                groups.push(Group {
                    key: r.group.clone(),
                    project: r.project.clone(),
                    project_path: None,
                    tokens: Tokens::default(),
                    cost: 0.0,
                    requests: 0,
                    last_ms: i64::MIN,
                    models: Vec::new(),
                });
            }
            if let Some(g) = groups.last_mut() {
                add_row(g, r);
            }
        }
        for g in &mut groups {
            g.models.sort_by(|a, b| {
                let (ca, cb) = (a.cost.unwrap_or(0.0), b.cost.unwrap_or(0.0));
                cb.total_cmp(&ca).then_with(|| a.model.cmp(&b.model))
            });
        }
        if kind == ReportKind::Session {
            groups.sort_by(|a, b| b.cost.total_cmp(&a.cost).then(b.last_ms.cmp(&a.last_ms)));
        } else {
            groups.sort_by(|a, b| a.key.cmp(&b.key));
        }
        let mut tokens = Tokens::default();
        let mut cost = 0.0;
        for g in &groups {
            tokens.add(&g.tokens);
            cost += g.cost;
        }
        let unpriced = unpriced_models(&groups);
        Report {
            groups,
            tokens,
            cost,
            unpriced,
        }
    }

    /// The report as ccusage's `--json` shape (`{"daily": [...], "totals": {...}}`)
    /// plus `unpricedModels`, `unpricedRequests` and `timezone`.
    pub fn to_json(&self, kind: ReportKind, timezone: &str) -> Value {
        let entries: Vec<Value> = self.groups.iter().map(|g| group_json(g, kind)).collect();
        let mut totals = serde_json::Map::new();
        self.tokens.json_fields(&mut totals);
        totals.insert("totalTokens".into(), self.tokens.total().into());
        totals.insert("totalCost".into(), self.cost.into());
        json!({
            kind.json_key(): entries,
            "totals": totals,
            "unpricedModels": self.unpriced.iter().map(|u| u.model.clone()).collect::<Vec<_>>(),
            "unpricedRequests": self.unpriced.iter().map(|u| u.requests).sum::<u64>(),
            "timezone": timezone,
        })
    }
}

fn is_empty_synthetic(r: &UsageRow) -> bool {
    r.model == SYNTHETIC_MODEL && r.tokens.total() == 0
}

fn add_row(g: &mut Group, r: UsageRow) {
    g.tokens.add(&r.tokens);
    g.cost += r.cost;
    g.requests += r.requests;
    g.last_ms = g.last_ms.max(r.last_ms);
    if g.project_path.is_none() {
        g.project_path = r.project_path;
    }
    let priced = r.requests > r.unpriced_requests;
    g.models.push(ModelUsage {
        model: r.model,
        tokens: r.tokens,
        cost: priced.then_some(r.cost),
        requests: r.requests,
        unpriced_requests: r.unpriced_requests,
    });
}

fn unpriced_models(groups: &[Group]) -> Vec<Unpriced> {
    let mut out: Vec<Unpriced> = Vec::new();
    for m in groups.iter().flat_map(|g| &g.models) {
        if m.unpriced_requests == 0 {
            continue;
        }
        match out.iter_mut().find(|u| u.model == m.model) {
            Some(u) => {
                u.requests += m.unpriced_requests;
                u.tokens += m.tokens.total();
            }
            None => out.push(Unpriced {
                model: m.model.clone(),
                requests: m.unpriced_requests,
                tokens: m.tokens.total(),
            }),
        }
    }
    out.sort_by(|a, b| a.model.cmp(&b.model));
    out
}

/// One entry in ccusage's keys; sessions carry their project too.
fn group_json(g: &Group, kind: ReportKind) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("period".into(), g.key.clone().into());
    g.tokens.json_fields(&mut m);
    m.insert("totalTokens".into(), g.tokens.total().into());
    m.insert("totalCost".into(), g.cost.into());
    m.insert("modelsUsed".into(), json!(g.models_used()));
    let breakdowns: Vec<Value> = g.models.iter().map(model_json).collect();
    m.insert("modelBreakdowns".into(), breakdowns.into());
    m.insert("unpricedModels".into(), json!(g.unpriced_models()));
    m.insert("requests".into(), g.requests.into());
    if kind == ReportKind::Session {
        m.insert("agent".into(), "claude".into());
        m.insert(
            "metadata".into(),
            json!({ "lastActivity": iso_ms(g.last_ms) }),
        );
        m.insert("sessionId".into(), g.key.clone().into());
        m.insert("project".into(), g.project.clone().into());
        m.insert("projectPath".into(), json!(g.project_path));
    } else {
        m.insert("agent".into(), "all".into());
        m.insert("metadata".into(), json!({ "agents": ["claude"] }));
    }
    m.into()
}

fn model_json(u: &ModelUsage) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("modelName".into(), u.model.clone().into());
    u.tokens.json_fields(&mut m);
    m.insert("cost".into(), json!(u.cost));
    m.into()
}

/// `2026-01-31T09:05:00.000Z` (the form ccusage prints).
pub fn iso_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// `claude-sonnet-4-5-20250929` → `sonnet-4-5` (ccusage's table label).
pub fn short_model(model: &str) -> String {
    let s = model.strip_prefix("claude-").unwrap_or(model);
    match s.rsplit_once('-') {
        Some((head, date)) if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) => {
            head.to_string()
        }
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(group: &str, model: &str, t: [u64; 4], cost: f64, req: u64, unpriced: u64) -> UsageRow {
        UsageRow {
            group: group.into(),
            project: String::new(),
            project_path: None,
            model: model.into(),
            tokens: Tokens {
                input: t[0],
                output: t[1],
                cache_creation: t[2],
                cache_read: t[3],
            },
            cost,
            requests: req,
            unpriced_requests: unpriced,
            last_ms: 1_767_225_600_000,
        }
    }

    fn sample() -> Report {
        Report::from_rows(
            vec![
                row(
                    "2026-01-02",
                    "claude-opus-4-5-20251101",
                    [5, 50, 500, 5000],
                    0.25,
                    2,
                    0,
                ),
                row(
                    "2026-01-01",
                    "claude-3-sonnet-20240229",
                    [7, 9, 0, 0],
                    0.0,
                    3,
                    3,
                ),
                row(
                    "2026-01-01",
                    "claude-sonnet-4-5-20250929",
                    [10, 20, 30, 40],
                    1.5,
                    4,
                    0,
                ),
                row("2026-01-01", SYNTHETIC_MODEL, [0, 0, 0, 0], 0.0, 1, 1),
            ],
            ReportKind::Daily,
        )
    }

    #[test]
    fn periods_fold_models_and_totals_exactly() {
        let r = sample();
        assert_eq!(r.groups.len(), 2);
        let d1 = &r.groups[0];
        assert_eq!(d1.key, "2026-01-01");
        assert_eq!(
            d1.tokens,
            Tokens {
                input: 17,
                output: 29,
                cache_creation: 30,
                cache_read: 40
            }
        );
        assert_eq!(d1.tokens.total(), 116);
        assert_eq!(d1.requests, 7, "the synthetic placeholder is dropped");
        assert_eq!(
            d1.models_used(),
            vec!["claude-3-sonnet-20240229", "claude-sonnet-4-5-20250929"]
        );
        assert_eq!(
            d1.models[0].model, "claude-sonnet-4-5-20250929",
            "cost order"
        );
        assert_eq!(d1.models[1].cost, None);
        assert_eq!(d1.unpriced_models(), vec!["claude-3-sonnet-20240229"]);
        assert_eq!(r.tokens.total(), 116 + 5555);
        assert!((r.cost - 1.75).abs() < 1e-12);
        assert_eq!(
            r.unpriced,
            vec![Unpriced {
                model: "claude-3-sonnet-20240229".into(),
                requests: 3,
                tokens: 16
            }]
        );
    }

    #[test]
    fn json_has_ccusage_keys_and_says_what_is_unpriced() {
        let v = sample().to_json(ReportKind::Daily, "UTC");
        let d = &v["daily"][0];
        assert_eq!(d["period"], "2026-01-01");
        assert_eq!(d["inputTokens"], 17);
        assert_eq!(d["outputTokens"], 29);
        assert_eq!(d["cacheCreationTokens"], 30);
        assert_eq!(d["cacheReadTokens"], 40);
        assert_eq!(d["totalTokens"], 116);
        assert_eq!(d["totalCost"], 1.5);
        assert_eq!(
            d["modelBreakdowns"][0]["modelName"],
            "claude-sonnet-4-5-20250929"
        );
        assert_eq!(d["modelBreakdowns"][0]["cost"], 1.5);
        assert_eq!(d["modelBreakdowns"][1]["cost"], Value::Null);
        assert_eq!(d["unpricedModels"], json!(["claude-3-sonnet-20240229"]));
        assert_eq!(v["totals"]["totalTokens"], 5671);
        assert_eq!(v["totals"]["totalCost"], 1.75);
        assert_eq!(v["unpricedModels"], json!(["claude-3-sonnet-20240229"]));
        assert_eq!(v["unpricedRequests"], 3);
        assert_eq!(v["daily"][1]["unpricedModels"], json!([]));
    }

    #[test]
    fn sessions_sort_by_cost_and_carry_their_project() {
        let mut a = row("s-a", "claude-sonnet-4-5-20250929", [1, 1, 1, 1], 0.5, 1, 0);
        a.project = "-home-me-app".into();
        a.project_path = Some("/home/me/app".into());
        let mut b = row("s-b", "claude-sonnet-4-5-20250929", [1, 1, 1, 1], 2.0, 1, 0);
        b.project = "-home-me-lib".into();
        b.last_ms = 1_767_225_600_123;
        let r = Report::from_rows(vec![a, b], ReportKind::Session);
        assert_eq!(r.groups[0].key, "s-b");
        let v = r.to_json(ReportKind::Session, "UTC");
        assert_eq!(
            v["session"][0]["metadata"]["lastActivity"],
            "2026-01-01T00:00:00.123Z"
        );
        assert_eq!(v["session"][1]["projectPath"], "/home/me/app");
        assert_eq!(v["session"][1]["project"], "-home-me-app");
    }

    #[test]
    fn short_model_names() {
        assert_eq!(short_model("claude-sonnet-4-20250514"), "sonnet-4");
        assert_eq!(short_model("claude-opus-4-5-20251101"), "opus-4-5");
        assert_eq!(short_model("claude-sonnet-4"), "sonnet-4");
        assert_eq!(short_model("gpt-x"), "gpt-x");
    }
}
