//! 5-hour billing blocks, computed the way ccusage does so the two agree:
//! requests in time order; a block starts at the UTC hour floor of its first
//! request and lasts 5 hours; a request more than 5 hours after the block's
//! start, or more than 5 hours after the previous request, opens a new block;
//! in the latter case the idle time between the two is shown as a gap block
//! (from the previous request + 5 h to the next request).

use super::shape::{iso_ms, Tokens, SYNTHETIC_MODEL};
use serde_json::{json, Value};
use std::collections::BTreeSet;

const HOUR_MS: i64 = 3600 * 1000;

/// One API request (its final snapshot), as the blocks query returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub ts_ms: i64,
    pub model: String,
    pub tokens: Tokens,
    /// USD; 0 when unpriced (then `priced` is false)
    pub cost: f64,
    pub priced: bool,
}

/// A billing block, or the idle gap between two.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub start_ms: i64,
    pub end_ms: i64,
    /// time of the last request (None for a gap)
    pub actual_end_ms: Option<i64>,
    pub first_ms: Option<i64>,
    pub is_active: bool,
    pub is_gap: bool,
    pub entries: usize,
    pub tokens: Tokens,
    /// USD of the priced requests
    pub cost: f64,
    pub models: Vec<String>,
    pub unpriced_models: Vec<String>,
}

/// Consumption speed over a block's active span (first to last request).
#[derive(Debug, Clone, PartialEq)]
pub struct BurnRate {
    /// all four token kinds per minute
    pub tokens_per_minute: f64,
    /// input + output per minute (ccusage's indicator: cache reads dwarf the rest)
    pub tokens_per_minute_for_indicator: f64,
    pub cost_per_hour: f64,
}

/// Where the active block ends up if the current burn rate holds to its end.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    pub total_tokens: u64,
    pub total_cost: f64,
    pub remaining_minutes: i64,
}

/// Groups `requests` (sorted by time) into blocks of `duration_ms`; `now_ms`
/// decides which block is still active.
pub fn build(requests: &[Request], now_ms: i64, duration_ms: i64) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Vec<&Request> = Vec::new();
    let mut start = 0;
    for r in requests {
        if let Some(last) = current.last() {
            let since_start = r.ts_ms - start;
            let since_last = r.ts_ms - last.ts_ms;
            if since_start > duration_ms || since_last > duration_ms {
                out.push(block(start, &current, now_ms, duration_ms));
                if since_last > duration_ms {
                    out.push(gap(last.ts_ms, r.ts_ms, duration_ms));
                }
                current.clear();
            }
        }
        if current.is_empty() {
            start = r.ts_ms.div_euclid(HOUR_MS) * HOUR_MS;
        }
        current.push(r);
    }
    if !current.is_empty() {
        out.push(block(start, &current, now_ms, duration_ms));
    }
    out
}

fn block(start_ms: i64, reqs: &[&Request], now_ms: i64, duration_ms: i64) -> Block {
    let end_ms = start_ms + duration_ms;
    let first_ms = reqs.first().map(|r| r.ts_ms);
    let actual_end_ms = reqs.last().map(|r| r.ts_ms).unwrap_or(start_ms);
    let mut tokens = Tokens::default();
    let mut cost = 0.0;
    // in order of first use, as ccusage lists them
    let mut models: Vec<String> = Vec::new();
    let mut unpriced = BTreeSet::new();
    for r in reqs {
        tokens.add(&r.tokens);
        cost += r.cost;
        if r.model == SYNTHETIC_MODEL && r.tokens.total() == 0 {
            continue;
        }
        if !models.contains(&r.model) {
            models.push(r.model.clone());
        }
        if !r.priced {
            unpriced.insert(r.model.clone());
        }
    }
    Block {
        start_ms,
        end_ms,
        actual_end_ms: Some(actual_end_ms),
        first_ms,
        is_active: now_ms - actual_end_ms < duration_ms && now_ms < end_ms,
        is_gap: false,
        entries: reqs.len(),
        tokens,
        cost,
        models,
        unpriced_models: unpriced.into_iter().collect(),
    }
}

fn gap(last_ms: i64, next_ms: i64, duration_ms: i64) -> Block {
    Block {
        start_ms: last_ms + duration_ms,
        end_ms: next_ms,
        actual_end_ms: None,
        first_ms: None,
        is_active: false,
        is_gap: true,
        entries: 0,
        tokens: Tokens::default(),
        cost: 0.0,
        models: Vec::new(),
        unpriced_models: Vec::new(),
    }
}

/// Tokens per minute and USD per hour between the block's first and last
/// request; None for gaps and single-instant blocks.
pub fn burn_rate(b: &Block) -> Option<BurnRate> {
    let (first, last) = (b.first_ms?, b.actual_end_ms?);
    let minutes = (last - first) as f64 / 60_000.0;
    if b.is_gap || minutes <= 0.0 {
        return None;
    }
    Some(BurnRate {
        tokens_per_minute: b.tokens.total() as f64 / minutes,
        tokens_per_minute_for_indicator: (b.tokens.input + b.tokens.output) as f64 / minutes,
        cost_per_hour: b.cost / minutes * 60.0,
    })
}

/// The active block's figures at its end if the burn rate holds (ccusage's
/// rounding: whole tokens, cents, whole minutes).
pub fn projection(b: &Block, now_ms: i64) -> Option<Projection> {
    if !b.is_active || b.is_gap {
        return None;
    }
    let rate = burn_rate(b)?;
    let remaining = ((b.end_ms - now_ms) as f64 / 60_000.0).max(0.0);
    let tokens = b.tokens.total() as f64 + rate.tokens_per_minute * remaining;
    let cost = b.cost + rate.cost_per_hour / 60.0 * remaining;
    Some(Projection {
        total_tokens: tokens.round() as u64,
        total_cost: (cost * 100.0).round() / 100.0,
        remaining_minutes: remaining.round() as i64,
    })
}

/// Every instant the table prints (block starts and ends), for time labels.
pub fn times(blocks: &[Block]) -> Vec<i64> {
    blocks
        .iter()
        .flat_map(|b| [Some(b.start_ms), Some(b.end_ms), b.actual_end_ms])
        .flatten()
        .collect()
}

/// ccusage's blocks JSON (`{"blocks": [...]}`), plus `unpricedModels`. The burn
/// rate is given for every block with a duration (ccusage: the active one only).
pub fn to_json(blocks: &[Block], now_ms: i64) -> Value {
    let list: Vec<Value> = blocks.iter().map(|b| block_json(b, now_ms)).collect();
    let unpriced: BTreeSet<&str> = blocks
        .iter()
        .flat_map(|b| b.unpriced_models.iter().map(String::as_str))
        .collect();
    json!({ "blocks": list, "unpricedModels": unpriced })
}

fn block_json(b: &Block, now_ms: i64) -> Value {
    let id = if b.is_gap {
        format!("gap-{}", iso_ms(b.start_ms))
    } else {
        iso_ms(b.start_ms)
    };
    let burn = burn_rate(b).map(|r| {
        json!({
            "tokensPerMinute": r.tokens_per_minute,
            "tokensPerMinuteForIndicator": r.tokens_per_minute_for_indicator,
            "costPerHour": r.cost_per_hour,
        })
    });
    let projection = projection(b, now_ms).map(|p| {
        json!({
            "totalTokens": p.total_tokens,
            "totalCost": p.total_cost,
            "remainingMinutes": p.remaining_minutes,
        })
    });
    json!({
        "id": id,
        "startTime": iso_ms(b.start_ms),
        "endTime": iso_ms(b.end_ms),
        "actualEndTime": b.actual_end_ms.map(iso_ms),
        "isActive": b.is_active,
        "isGap": b.is_gap,
        "entries": b.entries,
        "tokenCounts": {
            "inputTokens": b.tokens.input,
            "outputTokens": b.tokens.output,
            "cacheCreationInputTokens": b.tokens.cache_creation,
            "cacheReadInputTokens": b.tokens.cache_read,
        },
        "totalTokens": b.tokens.total(),
        "costUSD": b.cost,
        "models": b.models,
        "unpricedModels": b.unpriced_models,
        "burnRate": burn,
        "projection": projection,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::BLOCK_MS;

    const MIN: i64 = 60_000;
    /// 2026-01-10T09:00:00Z
    const T0: i64 = 1_768_035_600_000;

    fn req(ts_ms: i64, model: &str, input: u64, output: u64, cost: f64) -> Request {
        Request {
            ts_ms,
            model: model.into(),
            tokens: Tokens {
                input,
                output,
                cache_creation: 100,
                cache_read: 1000,
            },
            cost,
            priced: model != "mystery",
        }
    }

    fn sample() -> Vec<Request> {
        vec![
            req(T0 + 17 * MIN, "claude-sonnet-4-5", 10, 20, 0.5),
            req(T0 + 77 * MIN, "mystery", 1, 2, 0.0),
            req(T0 + 78 * MIN, "claude-haiku-4-5", 0, 0, 0.0),
            // 4h53m after the block's start, within 5 h of the previous request
            req(T0 + 293 * MIN, "claude-sonnet-4-5", 3, 4, 0.25),
            // more than 5 h after the block started, but not after the last request
            req(T0 + 6 * 60 * MIN, "claude-opus-4-5", 5, 6, 1.0),
            // idle 9 h: a gap block
            req(T0 + 15 * 60 * MIN + 30 * MIN, "claude-opus-4-5", 7, 8, 2.0),
        ]
    }

    #[test]
    fn blocks_split_on_five_hours_from_start_or_from_last_request() {
        let now = T0 + 100 * 24 * 60 * MIN;
        let b = build(&sample(), now, BLOCK_MS);
        let starts: Vec<String> = b.iter().map(|b| iso_ms(b.start_ms)).collect();
        assert_eq!(
            starts,
            vec![
                "2026-01-10T09:00:00.000Z",
                "2026-01-10T15:00:00.000Z",
                "2026-01-10T20:00:00.000Z",
                "2026-01-11T00:00:00.000Z"
            ]
        );
        assert_eq!(b[0].entries, 4);
        assert_eq!(iso_ms(b[0].end_ms), "2026-01-10T14:00:00.000Z");
        assert_eq!(
            b[0].actual_end_ms.map(iso_ms).unwrap(),
            "2026-01-10T13:53:00.000Z"
        );
        assert_eq!(
            b[0].tokens,
            Tokens {
                input: 14,
                output: 26,
                cache_creation: 400,
                cache_read: 4000
            }
        );
        assert!((b[0].cost - 0.75).abs() < 1e-12);
        // in order of first use, like ccusage
        assert_eq!(
            b[0].models,
            vec!["claude-sonnet-4-5", "mystery", "claude-haiku-4-5"]
        );
        assert_eq!(b[1].models, vec!["claude-opus-4-5"]);
        assert_eq!(b[0].unpriced_models, vec!["mystery"]);
        assert!(!b[1].is_gap, "new block because 5 h passed since the start");
        assert!(b[2].is_gap);
        assert_eq!(iso_ms(b[2].end_ms), "2026-01-11T00:30:00.000Z");
        assert!(b.iter().all(|b| !b.is_active));
    }

    #[test]
    fn burn_rate_and_projection_of_the_active_block() {
        let reqs = vec![
            req(T0 + 10 * MIN, "claude-sonnet-4-5", 100, 200, 0.6),
            req(T0 + 40 * MIN, "claude-sonnet-4-5", 100, 200, 0.6),
        ];
        // 60 minutes in: 4 h (240 min) left in the block
        let now = T0 + 60 * MIN;
        let b = build(&reqs, now, BLOCK_MS);
        assert_eq!(b.len(), 1);
        assert!(b[0].is_active);
        let r = burn_rate(&b[0]).unwrap();
        // 2 × (100 + 200 + 100 + 1000) = 2800 tokens over 30 minutes
        assert!((r.tokens_per_minute - 2800.0 / 30.0).abs() < 1e-9);
        assert!((r.tokens_per_minute_for_indicator - 20.0).abs() < 1e-9);
        assert!((r.cost_per_hour - 2.4).abs() < 1e-9);
        let p = projection(&b[0], now).unwrap();
        assert_eq!(p.remaining_minutes, 240);
        assert_eq!(p.total_tokens, 2800 + 22400);
        assert_eq!(p.total_cost, 10.8);
        let v = to_json(&b, now);
        assert_eq!(v["blocks"][0]["isActive"], true);
        assert_eq!(v["blocks"][0]["projection"]["totalTokens"], 25200);
        assert_eq!(v["blocks"][0]["tokenCounts"]["cacheReadInputTokens"], 2000);
        // an hour after the block ended nothing is active any more
        let later = build(&reqs, T0 + 6 * 60 * MIN, BLOCK_MS);
        assert!(!later[0].is_active);
        assert_eq!(projection(&later[0], T0 + 6 * 60 * MIN), None);
    }

    #[test]
    fn gap_json_matches_ccusage() {
        let b = build(&sample(), T0 + 100 * 24 * 60 * MIN, BLOCK_MS);
        let v = to_json(&b, 0);
        let g = &v["blocks"][2];
        // the gap starts 5 h after the last request (15:00) and ends at the next one
        assert_eq!(g["id"], "gap-2026-01-10T20:00:00.000Z");
        assert_eq!(g["startTime"], "2026-01-10T20:00:00.000Z");
        assert_eq!(g["endTime"], "2026-01-11T00:30:00.000Z");
        assert_eq!(g["actualEndTime"], Value::Null);
        assert_eq!(g["burnRate"], Value::Null);
        assert_eq!(g["entries"], 0);
        assert_eq!(v["unpricedModels"], json!(["mystery"]));
    }
}
