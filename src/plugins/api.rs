//! The contract between the rule engine and the plugin host. The rule engine
//! only knows this trait; `plugins::host` implements it with wasmtime.

use crate::row::Row;
use serde::{Deserialize, Serialize};

/// What a plugin returns for one entry (the JSON object it writes back).
/// Every field is optional in the JSON; absent means "nothing".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginOutput {
    /// Labels to attach to the entry (they end up in `labels` columns).
    pub labels: Vec<String>,
    /// Derived fields to set on the entry document (`set.<name>` in rules).
    pub set: serde_json::Map<String, serde_json::Value>,
    /// Literal substrings to mask everywhere in the entry before rows are built.
    pub redact: Vec<String>,
    /// Extra rows to emit (e.g. for a user-defined table).
    pub rows: Vec<Row>,
    /// Drop the entry: no rows at all are produced for it.
    pub drop: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("no plugin named `{0}` is loaded")]
    NotFound(String),
    #[error("plugin `{plugin}` trapped: {reason}")]
    Trap { plugin: String, reason: String },
    #[error("plugin `{plugin}` ran out of fuel (instruction budget {fuel}) - is it looping?")]
    OutOfFuel { plugin: String, fuel: u64 },
    #[error("plugin `{plugin}` exceeded its time limit of {millis} ms")]
    Timeout { plugin: String, millis: u64 },
    #[error("plugin `{plugin}` reported an error: {message}")]
    Reported { plugin: String, message: String },
    #[error("plugin `{plugin}` returned invalid output: {reason}")]
    BadOutput { plugin: String, reason: String },
}

/// Implemented by the plugin host; called by the rule engine for `plugin:` actions.
pub trait PluginCaller: Send + Sync {
    /// Run plugin `name` on `input`: the JSON document the rule engine built
    /// (`{"entry": .., "project": .., "labels": [..], "config": ..}`), UTF-8 bytes.
    fn call(&self, name: &str, input: &[u8]) -> Result<PluginOutput, PluginError>;

    /// Whether a plugin of that name is currently loaded (used by check-rules).
    fn has(&self, name: &str) -> bool;

    /// [`PluginCaller::call`], also saying what the call cost when the caller
    /// measures it (`try` shows it; the router does not need it).
    fn call_measured(
        &self,
        name: &str,
        input: &[u8],
    ) -> (Result<PluginOutput, PluginError>, Option<CallCost>) {
        (self.call(name, input), None)
    }
}

/// What one plugin call used, over all its attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CallCost {
    /// Fuel (≈ wasm instructions) consumed.
    pub fuel: u64,
    /// Largest linear memory the guest asked for, in bytes.
    pub memory_peak: u64,
    /// 1, or 2 when the first attempt hit a limit and was retried.
    pub attempts: u32,
}

/// A caller with no plugins loaded: every call is `NotFound`.
pub struct NoPlugins;

impl PluginCaller for NoPlugins {
    fn call(&self, name: &str, _: &[u8]) -> Result<PluginOutput, PluginError> {
        Err(PluginError::NotFound(name.to_string()))
    }
    fn has(&self, _: &str) -> bool {
        false
    }
}
