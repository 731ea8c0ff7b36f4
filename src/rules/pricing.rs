//! Model prices and what one API request costs.
//!
//! The table comes from the rule pack's `pricing:` entries, which
//! `scripts/refresh-pricing.py` generates from LiteLLM's model price table
//! (`rules/05-pricing.yaml`). Names are exact; a logged name that is not in
//! the table is normalised (provider prefixes and suffixes removed) and an
//! undated name is mapped to the newest dated entry of the same name, never
//! to another family by a glob.

use std::collections::HashMap;

/// USD per million tokens for each kind of token.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    pub input: f64,
    pub output: f64,
    /// 5-minute cache writes. `None`: LiteLLM lists no cache price.
    pub cache_write: Option<f64>,
    /// 1-hour cache writes; `None` bills them at the 5-minute rate.
    pub cache_write_1h: Option<f64>,
    pub cache_read: Option<f64>,
}

/// The rates of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    pub base: Rates,
    /// Long-context rates: (prompt tokens above which they apply, rates).
    pub long_context: Option<(u64, Rates)>,
    pub context_window: Option<u64>,
}

/// Token counts of one request (floats: they come from JSON expressions).
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub input: f64,
    pub output: f64,
    /// All cache-creation tokens, 5-minute and 1-hour.
    pub cache_write: f64,
    /// The part of `cache_write` written with a 1-hour TTL.
    pub cache_write_1h: f64,
    pub cache_read: f64,
}

impl Price {
    /// USD for one request, or `None` when tokens of a kind the model has no
    /// price for were used (never a silent 0).
    ///
    /// Anthropic bills a request whose prompt (input + cache writes + cache
    /// reads) exceeds the long-context threshold at the long-context rates for
    /// all of its tokens, output included. (ccusage instead splits each token
    /// kind at the threshold on its own; see docs/RULES.md.)
    pub fn cost(&self, u: Usage) -> Option<f64> {
        let t = |x: f64| if x.is_finite() { x.max(0.0) } else { 0.0 };
        let (input, output, read) = (t(u.input), t(u.output), t(u.cache_read));
        let write = t(u.cache_write);
        let write_1h = t(u.cache_write_1h).min(write);
        let prompt = input + write + read;
        let r = match &self.long_context {
            Some((above, long)) if prompt > *above as f64 => long,
            _ => &self.base,
        };
        // Tokens of a kind without a rate make the cost unknown; none cost nothing.
        let part = |tokens: f64, rate: Option<f64>| {
            if tokens == 0.0 {
                Some(0.0)
            } else {
                rate.map(|r| tokens * r)
            }
        };
        let usd = input * r.input
            + output * r.output
            + part(write - write_1h, r.cache_write)?
            + part(write_1h, r.cache_write_1h.or(r.cache_write))?
            + part(read, r.cache_read)?;
        Some(usd / 1_000_000.0)
    }
}

/// Exact model name -> price, plus undated aliases.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    models: HashMap<String, Price>,
    /// `claude-sonnet-4` -> `claude-sonnet-4-20250514` (the newest dated entry).
    undated: HashMap<String, String>,
}

impl PriceTable {
    /// Add a model; names are exact (no globs) and may be priced once.
    pub fn insert(&mut self, model: &str, price: Price) -> Result<(), String> {
        if model.contains(['*', '?', '[', '{']) {
            return Err(format!(
                "pricing model `{model}`: names are exact, not globs (a glob would price \
                 other model families too)"
            ));
        }
        let rates = std::iter::once(&price.base).chain(price.long_context.as_ref().map(|l| &l.1));
        for r in rates {
            let all = [
                Some(r.input),
                Some(r.output),
                r.cache_write,
                r.cache_write_1h,
                r.cache_read,
            ];
            if all.iter().flatten().any(|x| !x.is_finite() || *x < 0.0) {
                return Err(format!("pricing model `{model}`: prices must be >= 0"));
            }
        }
        if self.models.contains_key(model) {
            return Err(format!("pricing model `{model}` is priced twice"));
        }
        if let Some((family, date)) = split_date(model) {
            let newer = self
                .undated
                .get(family)
                .and_then(|k| split_date(k))
                .is_none_or(|(_, d)| date > d);
            if newer {
                self.undated.insert(family.to_string(), model.to_string());
            }
        }
        self.models.insert(model.to_string(), price);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The price of a logged model name: exact, else normalised, each also
    /// through the undated alias.
    pub fn get(&self, model: &str) -> Option<&Price> {
        self.exact_or_alias(model).or_else(|| {
            let n = normalise(model);
            if n == model {
                None
            } else {
                self.exact_or_alias(&n)
            }
        })
    }

    /// The entry of exactly this name (no normalising, no alias).
    pub fn exact(&self, model: &str) -> Option<&Price> {
        self.models.get(model)
    }

    fn exact_or_alias(&self, name: &str) -> Option<&Price> {
        self.exact(name).or_else(|| {
            self.undated
                .get(name)
                .and_then(|dated| self.models.get(dated))
        })
    }
}

/// `claude-sonnet-4-20250514` -> (`claude-sonnet-4`, `20250514`).
fn split_date(name: &str) -> Option<(&str, &str)> {
    let (family, date) = name.rsplit_once('-')?;
    (date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) && !family.is_empty())
        .then_some((family, date))
}

/// The Anthropic API name inside a provider's model id:
/// `anthropic/claude-x`, `us.anthropic.claude-x-v1:0`, `vertex_ai/claude-x@20240229`
/// -> `claude-x`, `claude-x`, `claude-x-20240229`. Mirrors `canonical` in
/// scripts/refresh-pricing.py.
pub fn normalise(model: &str) -> String {
    let lower = model.trim().to_ascii_lowercase();
    let mut n = lower.rsplit('/').next().unwrap_or("");
    if let Some(rest) = n.strip_prefix("anthropic.") {
        n = rest;
    } else if let Some((region, rest)) = n.split_once(".anthropic.") {
        // `us.`, `eu.`, `global.`, ...: a Bedrock cross-region profile.
        if !region.contains('.') {
            n = rest;
        }
    }
    let mut out = n.to_string();
    if let Some((name, tag)) = out.rsplit_once('@') {
        out = if tag.len() == 8 && tag.bytes().all(|b| b.is_ascii_digit()) {
            format!("{name}-{tag}")
        } else {
            name.to_string()
        };
    }
    if let Some((name, version)) = out.rsplit_once("-v") {
        let (major, minor) = version.split_once(':').unwrap_or((version, "0"));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if digits(major) && digits(minor) {
            out.truncate(name.len());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(input: f64, output: f64) -> Rates {
        Rates {
            input,
            output,
            cache_write: Some(input * 1.25),
            cache_write_1h: Some(input * 2.0),
            cache_read: Some(input / 10.0),
        }
    }

    #[test]
    fn normalise_strips_provider_wrappings() {
        for (logged, want) in [
            ("claude-opus-4-6", "claude-opus-4-6"),
            ("anthropic/claude-opus-4-6", "claude-opus-4-6"),
            (
                "us.anthropic.claude-sonnet-4-20250514-v1:0",
                "claude-sonnet-4-20250514",
            ),
            ("global.anthropic.claude-opus-4-6-v1", "claude-opus-4-6"),
            (
                "anthropic.claude-3-opus-20240229-v1:0",
                "claude-3-opus-20240229",
            ),
            (
                "vertex_ai/claude-3-sonnet@20240229",
                "claude-3-sonnet-20240229",
            ),
            ("claude-sonnet-4-5@default", "claude-sonnet-4-5"),
            (
                "bedrock/claude_platform/claude-haiku-4-5",
                "claude-haiku-4-5",
            ),
            ("Claude-Opus-4-5", "claude-opus-4-5"),
        ] {
            assert_eq!(normalise(logged), want, "{logged}");
        }
    }

    #[test]
    fn undated_names_map_to_the_newest_dated_entry_of_that_name_only() {
        let mut t = PriceTable::default();
        let p = |i, o| Price {
            base: rates(i, o),
            long_context: None,
            context_window: Some(200_000),
        };
        t.insert("claude-3-5-sonnet-20240620", p(3.0, 15.0))
            .unwrap();
        t.insert("claude-3-5-sonnet-20241022", p(3.5, 15.0))
            .unwrap();
        t.insert("claude-opus-4-20250514", p(15.0, 75.0)).unwrap();
        t.insert("claude-opus-4-6", p(5.0, 25.0)).unwrap();
        assert_eq!(t.get("claude-3-5-sonnet").unwrap().base.input, 3.5);
        assert_eq!(t.get("claude-opus-4").unwrap().base.input, 15.0);
        assert_eq!(t.get("claude-opus-4-6").unwrap().base.input, 5.0);
        assert!(t.get("claude-opus-4-7").is_none(), "no cross-family match");
        assert!(t.get("claude-opus").is_none());
        let e = t.insert("claude-opus-4*", p(1.0, 1.0)).unwrap_err();
        assert!(e.contains("not globs"), "{e}");
        let e = t.insert("claude-opus-4-6", p(1.0, 1.0)).unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn long_context_rates_apply_to_the_whole_request() {
        let p = Price {
            base: rates(3.0, 15.0),
            long_context: Some((200_000, rates(6.0, 22.5))),
            context_window: Some(1_000_000),
        };
        let u = |input, output, cw, cr| Usage {
            input,
            output,
            cache_write: cw,
            cache_write_1h: 0.0,
            cache_read: cr,
        };
        let at = |x: Option<f64>, want: f64| {
            let x = x.unwrap();
            assert!((x - want).abs() < 1e-12, "{x} != {want}");
        };
        at(p.cost(u(200_000.0, 0.0, 0.0, 0.0)), 0.6); // exactly at the threshold: base
        at(p.cost(u(200_001.0, 0.0, 0.0, 0.0)), 1.200006);
        at(
            p.cost(u(1.0, 1000.0, 100_000.0, 100_000.0)),
            0.000006 + 0.0225 + 0.75 + 0.06,
        );
    }

    #[test]
    fn missing_rates_give_none_only_when_used() {
        let p = Price {
            base: Rates {
                input: 3.0,
                output: 15.0,
                cache_write: None,
                cache_write_1h: None,
                cache_read: None,
            },
            long_context: None,
            context_window: None,
        };
        let mut u = Usage {
            input: 1e6,
            output: 1e6,
            ..Usage::default()
        };
        assert_eq!(p.cost(u), Some(18.0));
        u.cache_read = 1.0;
        assert_eq!(p.cost(u), None);
    }
}
