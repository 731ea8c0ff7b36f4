//! The YAML file model of a rule pack (what `serde_yaml` reads), before it
//! is compiled.

use super::pricing::{Price, Rates};
use super::redact::RedactSpec;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleFile {
    #[serde(default)]
    pub(super) pricing: Vec<PriceSpec>,
    #[serde(default)]
    pub(super) maps: BTreeMap<String, Map<String, Value>>,
    #[serde(default)]
    pub(super) globs: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub(super) redact: Vec<RedactSpec>,
    #[serde(default)]
    pub(super) plugins: Vec<PluginSpec>,
    #[serde(default)]
    pub(super) derive: Vec<DeriveSpec>,
    #[serde(default)]
    pub(super) classify: Vec<ClassifySpec>,
    #[serde(default)]
    pub(super) drop: Vec<DropSpec>,
    #[serde(default)]
    pub(super) tables: Vec<TableSpec>,
}

/// One model of `pricing:` (USD per million tokens), as
/// `scripts/refresh-pricing.py` writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PriceSpec {
    pub(super) model: String,
    pub(super) input: f64,
    pub(super) output: f64,
    #[serde(default)]
    pub(super) cache_write: Option<f64>,
    #[serde(default)]
    cache_write_1h: Option<f64>,
    #[serde(default)]
    pub(super) cache_read: Option<f64>,
    #[serde(default)]
    pub(super) context_window: Option<u64>,
    #[serde(default)]
    pub(super) tier: Option<TierSpec>,
}

/// Long-context rates; a missing rate is the base one (a missing 1-hour
/// cache-write rate: the tier's 5-minute one).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TierSpec {
    pub(super) above_tokens: u64,
    #[serde(default)]
    pub(super) input: Option<f64>,
    #[serde(default)]
    pub(super) output: Option<f64>,
    #[serde(default)]
    pub(super) cache_write: Option<f64>,
    #[serde(default)]
    cache_write_1h: Option<f64>,
    #[serde(default)]
    pub(super) cache_read: Option<f64>,
}

impl PriceSpec {
    pub(super) fn price(&self) -> Price {
        let base = Rates {
            input: self.input,
            output: self.output,
            cache_write: self.cache_write,
            cache_write_1h: self.cache_write_1h,
            cache_read: self.cache_read,
        };
        let long_context = self.tier.as_ref().map(|t| {
            let rates = Rates {
                input: t.input.unwrap_or(base.input),
                output: t.output.unwrap_or(base.output),
                cache_write: t.cache_write.or(base.cache_write),
                cache_write_1h: t.cache_write_1h,
                cache_read: t.cache_read.or(base.cache_read),
            };
            (t.above_tokens, rates)
        });
        Price {
            base,
            long_context,
            context_window: self.context_window,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PluginSpec {
    pub(super) plugin: String,
    #[serde(default)]
    pub(super) when: Option<String>,
    #[serde(default)]
    pub(super) config: Value,
    /// Skip (with a warning) instead of dead-lettering when the plugin is not loaded.
    #[serde(default)]
    pub(super) optional: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeriveSpec {
    pub(super) name: String,
    pub(super) value: Value,
    #[serde(default)]
    pub(super) when: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClassifySpec {
    #[serde(default)]
    pub(super) label: Option<String>,
    /// An expression giving a label (string) or labels (array), for dynamic labels.
    #[serde(default)]
    pub(super) labels: Option<String>,
    #[serde(default)]
    pub(super) when: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DropSpec {
    pub(super) when: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TableSpec {
    #[serde(default)]
    pub(super) name: Option<String>,
    pub(super) table: String,
    #[serde(default)]
    pub(super) when: Option<String>,
    #[serde(default)]
    pub(super) for_each: Option<String>,
    #[serde(rename = "where", default)]
    pub(super) where_: Option<String>,
    pub(super) columns: indexmap::IndexMap<String, Value>,
}
