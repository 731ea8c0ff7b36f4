//! Component-model plugins: the typed WIT interface of `plugins/wit/plugin.wit`
//! (`classify`, `redact`, `map-rows`), next to the core ABI of `host.rs`.
//!
//! Same sandbox as core modules: no imports but `log` (no WASI), fuel and
//! the CPU-time deadline of the call's [`Budget`], and a cap on memory growth.
//! Unlike core modules, a component is **instantiated once per worker thread
//! and reused**: a CPython or SpiderMonkey component carries an interpreter
//! whose instantiation costs milliseconds and megabytes, against microseconds
//! per call once warm (`benches/rules_plugins.rs` measures both). Reuse keeps
//! state between entries (module globals), so a plugin must not rely on a
//! fresh start; a call that fails discards the instance (a trap may leave it
//! inconsistent) and the next call gets a new one. The memory cap applies to
//! growth beyond what the instance had once instantiated.

use super::api::{PluginError, PluginOutput};
use super::host::{arm_budget, Budget, CallState, EngineCtx, Failure, LoadedPlugin, Usage};
use crate::row::{Columns, Row};
use anyhow::{anyhow, Result};
use serde_json::Value;
use std::cell::RefCell;
use std::sync::{Arc, Weak};
use wasmtime::component::{
    Component, ComponentType, Instance, InstancePre, Lift, Linker, Lower, TypedFunc,
};
use wasmtime::{Engine, Store, StoreContextMut};

/// `types.value` of the WIT.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq)]
#[component(variant)]
pub enum WitValue {
    #[component(name = "null")]
    Null,
    #[component(name = "boolean")]
    Boolean(bool),
    #[component(name = "integer")]
    Integer(i64),
    #[component(name = "number")]
    Number(f64),
    #[component(name = "text")]
    Text(String),
    #[component(name = "json")]
    Json(String),
}

/// `types.entry` of the WIT.
#[derive(ComponentType, Lower, Clone, Debug)]
#[component(record)]
pub struct WitEntry {
    kind: String,
    #[component(name = "session-id")]
    session_id: Option<String>,
    uuid: Option<String>,
    timestamp: Option<String>,
    project: String,
    labels: Vec<String>,
    config: String,
    json: String,
}

/// `types.classification` of the WIT.
#[derive(ComponentType, Lift, Clone, Debug)]
#[component(record)]
pub struct WitClassification {
    labels: Vec<String>,
    set: Vec<(String, WitValue)>,
    drop: bool,
}

/// `types.row` of the WIT.
#[derive(ComponentType, Lift, Clone, Debug)]
#[component(record)]
pub struct WitRow {
    table: String,
    columns: Vec<(String, WitValue)>,
}

type Classify = TypedFunc<(WitEntry,), (Result<WitClassification, String>,)>;
type Redact = TypedFunc<(WitEntry,), (Result<Vec<String>, String>,)>;
type MapRows = TypedFunc<(WitEntry,), (Result<Vec<WitRow>, String>,)>;

/// The exports a component has (at least one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exports {
    pub classify: bool,
    pub redact: bool,
    pub map_rows: bool,
}

/// A compiled, pre-linked component plugin.
pub(crate) struct ComponentPlugin {
    pre: InstancePre<CallState>,
    pub(crate) exports: Exports,
}

/// Whether `bytes` (binary or text) is a component rather than a core module.
pub(crate) fn is_component(bytes: &[u8]) -> bool {
    if bytes.starts_with(b"\0asm") {
        // Version/layer field: core modules are 1, components 0x0d with layer 1.
        return bytes.get(4..8) != Some(&[1, 0, 0, 0]);
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
    let code = text
        .lines()
        .map(|l| l.split(";;").next().unwrap_or("").trim())
        .find(|l| !l.is_empty())
        .unwrap_or("");
    code.starts_with("(component")
}

/// The interface of `plugins/wit/plugin.wit` that holds the shared types.
const TYPES_INTERFACE: &str = "claude-ingest:plugin/types@0.1";

/// The component half of the plugin engine: its own linker (only `log`).
pub(crate) fn linker(engine: &Engine) -> Result<Linker<CallState>> {
    let mut linker = Linker::new(engine);
    // Components import the types interface (types only, no functions).
    linker
        .instance(&format!("{TYPES_INTERFACE}.0"))
        .map_err(|e| anyhow!("cannot define the types interface: {e:#}"))?;
    linker
        .root()
        .func_wrap(
            "log",
            |mut caller: StoreContextMut<'_, CallState>, (message,): (String,)| {
                caller.data_mut().log(message.as_bytes());
                Ok(())
            },
        )
        .map_err(|e| anyhow!("cannot define log: {e:#}"))?;
    Ok(linker)
}

/// Compile and check a component: only the `log` import, and at least one
/// of the three exports with the WIT's types.
pub(crate) fn compile(ctx: &EngineCtx, name: &str, bytes: &[u8]) -> Result<ComponentPlugin> {
    let engine = ctx.component_engine();
    let component =
        Component::new(engine, bytes).map_err(|e| anyhow!("does not compile: {e:#}"))?;
    let ty = component.component_type();
    for (import, _) in ty.imports(engine) {
        // The WIT's `types` interface holds only types: nothing to provide.
        if import != "log" && !import.starts_with(TYPES_INTERFACE) {
            anyhow::bail!(
                "unsupported import `{import}`: component plugins may only import `log` \
                 (no WASI: build Python with `componentize-py ... --stub-wasi`, JavaScript with \
                 componentize-js with every WASI feature disabled)"
            );
        }
    }
    let names: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let exports = Exports {
        classify: names.iter().any(|n| n == "classify"),
        redact: names.iter().any(|n| n == "redact"),
        map_rows: names.iter().any(|n| n == "map-rows"),
    };
    if exports == Exports::default() {
        anyhow::bail!(
            "exports none of `classify`, `redact`, `map-rows` (see plugins/wit/plugin.wit); it exports {names:?}"
        );
    }
    let pre = ctx
        .component_linker()
        .instantiate_pre(&component)
        .map_err(|e| anyhow!("cannot link plugin `{name}`: {e:#}"))?;
    let plugin = ComponentPlugin { pre, exports };
    // Check the exports' types now rather than on every call.
    let budget = instantiation_budget(ctx);
    let mut store = ctx.component_store(name.into(), budget);
    arm_budget(&mut store, budget).map_err(|e| anyhow!("cannot set the budget: {e:#}"))?;
    let instance = plugin
        .pre
        .instantiate(&mut store)
        .map_err(|e| anyhow!("cannot instantiate: {e:#}"))?;
    Funcs::get(&plugin, &instance, &mut store)?;
    Ok(plugin)
}

/// The typed exports of one instance.
struct Funcs {
    classify: Option<Classify>,
    redact: Option<Redact>,
    map_rows: Option<MapRows>,
}

impl Funcs {
    fn get(
        plugin: &ComponentPlugin,
        instance: &Instance,
        store: &mut Store<CallState>,
    ) -> Result<Funcs> {
        let typed = |store: &mut Store<CallState>,
                     on: bool,
                     name: &str|
         -> Result<Option<wasmtime::component::Func>> {
            if !on {
                return Ok(None);
            }
            instance
                .get_func(&mut *store, name)
                .map(Some)
                .ok_or_else(|| anyhow!("export `{name}` is not a function"))
        };
        let wrong = |name: &str, e: wasmtime::Error| {
            anyhow!("export `{name}` does not have the WIT's type: {e:#}")
        };
        let e = plugin.exports;
        Ok(Funcs {
            classify: typed(store, e.classify, "classify")?
                .map(|f| f.typed(&*store).map_err(|err| wrong("classify", err)))
                .transpose()?,
            redact: typed(store, e.redact, "redact")?
                .map(|f| f.typed(&*store).map_err(|err| wrong("redact", err)))
                .transpose()?,
            map_rows: typed(store, e.map_rows, "map-rows")?
                .map(|f| f.typed(&*store).map_err(|err| wrong("map-rows", err)))
                .transpose()?,
        })
    }
}

/// A live instance kept by one worker thread.
struct Warm {
    plugin: Weak<LoadedPlugin>,
    store: Store<CallState>,
    funcs: Funcs,
    /// Largest memory the instance had when instantiated: the cap is on top.
    baseline: u64,
}

thread_local! {
    /// This thread's live component instances (one per plugin version).
    static WARM: RefCell<Vec<Warm>> = const { RefCell::new(Vec::new()) };
}

/// Instances made so far (all threads): for tests and the bench.
pub(crate) static INSTANTIATIONS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// One attempt on a component plugin, reusing this thread's instance.
pub(crate) fn attempt(
    ctx: &EngineCtx,
    loaded: &Arc<LoadedPlugin>,
    plugin: &ComponentPlugin,
    input: &[u8],
    budget: Budget,
) -> (Result<PluginOutput, Failure>, Usage) {
    let mut warm = match take_warm(ctx, loaded, plugin) {
        Ok(w) => w,
        Err(e) => {
            let error = PluginError::Trap {
                plugin: loaded.name.to_string(),
                reason: format!("cannot instantiate: {e:#}"),
            };
            return (
                Err(Failure {
                    error,
                    limit_hit: false,
                }),
                Usage::default(),
            );
        }
    };
    warm.store.data_mut().reset(budget, warm.baseline);
    let _running = ctx.running();
    let result = arm_budget(&mut warm.store, budget).and_then(|()| call_exports(&mut warm, input));
    let state = warm.store.data();
    let usage = Usage {
        fuel: budget
            .fuel
            .saturating_sub(warm.store.get_fuel().unwrap_or(0)),
        memory_peak: state.memory_peak(),
        cpu: state.cpu_used(),
    };
    match result {
        Ok(Ok(output)) => {
            WARM.with(|w| w.borrow_mut().push(warm));
            (Ok(output), usage)
        }
        // The guest's own error: its instance is sound, keep it.
        Ok(Err(message)) => {
            WARM.with(|w| w.borrow_mut().push(warm));
            let error = PluginError::Reported {
                plugin: loaded.name.to_string(),
                message,
            };
            (
                Err(Failure {
                    error,
                    limit_hit: false,
                }),
                usage,
            )
        }
        // A trap or a limit: the instance is dropped, the next call makes a new one.
        Err(err) => {
            let limit_hit = state.memory_denied();
            let error = ctx.classify_error(&loaded.name, err, budget, state.fired());
            let limit_hit = limit_hit
                || matches!(
                    error,
                    PluginError::OutOfFuel { .. } | PluginError::Timeout { .. }
                );
            (Err(Failure { error, limit_hit }), usage)
        }
    }
}

/// This thread's instance of `loaded`, or a new one; instances of plugins
/// that were unloaded or replaced are dropped on the way.
fn take_warm(
    ctx: &EngineCtx,
    loaded: &Arc<LoadedPlugin>,
    plugin: &ComponentPlugin,
) -> wasmtime::Result<Warm> {
    let found = WARM.with(|w| {
        let mut list = w.borrow_mut();
        list.retain(|x| x.plugin.strong_count() > 0);
        let at = list
            .iter()
            .position(|x| std::ptr::eq(x.plugin.as_ptr(), Arc::as_ptr(loaded)))?;
        Some(list.swap_remove(at))
    });
    if let Some(warm) = found {
        return Ok(warm);
    }
    INSTANTIATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let budget = instantiation_budget(ctx);
    let mut store = ctx.component_store(loaded.name.clone(), budget);
    let _running = ctx.running();
    arm_budget(&mut store, budget)?;
    let instance = plugin.pre.instantiate(&mut store)?;
    let funcs = Funcs::get(plugin, &instance, &mut store)
        .map_err(|e| wasmtime::Error::msg(format!("{e:#}")))?;
    let baseline = store.data().memory_peak();
    Ok(Warm {
        plugin: Arc::downgrade(loaded),
        store,
        funcs,
        baseline,
    })
}

/// Instantiation gets the ceilings: it is paid once per worker, not per entry.
fn instantiation_budget(ctx: &EngineCtx) -> Budget {
    ctx.limits().retry_budget(usize::MAX / 2)
}

/// Call every export the component has, merging into one output. `Ok(Err)`
/// is the guest's own error message.
fn call_exports(warm: &mut Warm, input: &[u8]) -> wasmtime::Result<Result<PluginOutput, String>> {
    let entry = match entry_of(input) {
        Ok(e) => e,
        Err(e) => return Ok(Err(format!("host could not build the entry: {e}"))),
    };
    let store = &mut warm.store;
    let mut out = PluginOutput::default();
    if let Some(f) = &warm.funcs.redact {
        let (r,) = f.call(&mut *store, (entry.clone(),))?;
        match r {
            Ok(list) => out.redact = list,
            Err(m) => return Ok(Err(m)),
        }
    }
    if let Some(f) = &warm.funcs.classify {
        let (r,) = f.call(&mut *store, (entry.clone(),))?;
        match r {
            Ok(c) => {
                out.labels = c.labels;
                out.set = c.set.into_iter().map(|(k, v)| (k, json_of(v))).collect();
                out.drop = c.drop;
            }
            Err(m) => return Ok(Err(m)),
        }
    }
    if let Some(f) = &warm.funcs.map_rows {
        let (r,) = f.call(&mut *store, (entry,))?;
        match r {
            Ok(rows) => out.rows = rows.into_iter().map(row_of).collect(),
            Err(m) => return Ok(Err(m)),
        }
    }
    Ok(Ok(out))
}

/// The rule engine's plugin input (`{"entry", "project", "labels", "config"}`)
/// as the WIT's entry record.
fn entry_of(input: &[u8]) -> Result<WitEntry, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Payload {
        entry: Value,
        #[serde(default)]
        project: String,
        #[serde(default)]
        labels: Vec<String>,
        #[serde(default)]
        config: Value,
    }
    let p: Payload = serde_json::from_slice(input)?;
    let text = |k: &str| p.entry.get(k).and_then(Value::as_str).map(String::from);
    Ok(WitEntry {
        kind: text("type").unwrap_or_default(),
        session_id: text("sessionId"),
        uuid: text("uuid"),
        timestamp: text("timestamp"),
        json: p.entry.to_string(),
        project: p.project,
        labels: p.labels,
        config: p.config.to_string(),
    })
}

fn json_of(v: WitValue) -> Value {
    match v {
        WitValue::Null => Value::Null,
        WitValue::Boolean(b) => Value::Bool(b),
        WitValue::Integer(i) => Value::from(i),
        WitValue::Number(n) => serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number),
        WitValue::Text(s) => Value::String(s),
        // Text that is not JSON is kept as a string rather than failing the entry.
        WitValue::Json(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
    }
}

fn row_of(r: WitRow) -> Row {
    let mut columns = Columns::with_capacity(r.columns.len());
    for (k, v) in r.columns {
        columns.insert(k, json_of(v));
    }
    Row {
        table: r.table.into(),
        columns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_told_from_core_modules() {
        assert!(!is_component(b"\0asm\x01\0\0\0"));
        assert!(is_component(b"\0asm\x0d\0\x01\0"));
        assert!(is_component(b";; a plugin\n(component)"));
        assert!(!is_component(b"(module)"));
    }

    #[test]
    fn the_entry_record_takes_the_typed_fields_and_keeps_the_json() {
        let input = br#"{"entry":{"type":"user","sessionId":"s","uuid":"u","x":[1]},"project":"p","labels":["a"],"config":null}"#;
        let e = entry_of(input).unwrap();
        assert_eq!(e.kind, "user");
        assert_eq!(e.session_id.as_deref(), Some("s"));
        assert_eq!(e.timestamp, None);
        assert_eq!(e.config, "null");
        assert!(e.json.contains(r#""x":[1]"#));
    }

    #[test]
    fn values_map_to_json() {
        assert_eq!(
            json_of(WitValue::Json("[1,2]".into())),
            serde_json::json!([1, 2])
        );
        assert_eq!(
            json_of(WitValue::Json("not json".into())),
            Value::from("not json")
        );
        assert_eq!(json_of(WitValue::Number(f64::NAN)), Value::Null);
    }
}
