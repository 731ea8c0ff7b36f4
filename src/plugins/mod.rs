//! Sandboxed WASM plugins (wasmtime) called from rules.
//!
//! The guest ABI is documented in `plugins/README.md`; [`host`] implements it
//! and [`reload`] adds hot reloading on top.

pub mod api;
pub mod component;
pub mod host;
pub mod reload;

pub use host::{
    Budget, PluginHost, PluginLimits, PluginLoadError, Usage, MAX_OUTPUT_BYTES,
    OUTPUT_PER_INPUT_BYTE, RETRY_FACTOR,
};
pub use reload::{spawn_plugin_watcher, PluginsHandle, ReloadReport};

#[cfg(test)]
mod tests;
