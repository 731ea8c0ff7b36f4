//! Sandboxed WASM plugins (wasmtime) called from rules.

pub mod api;
