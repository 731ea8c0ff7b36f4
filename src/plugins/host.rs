//! The wasmtime plugin host: validates and compiles plugin modules, and runs
//! one plugin call in a fresh, resource-limited sandbox.
//!
//! Design (see `plugins/README.md` for the guest-side ABI):
//! - One [`Engine`] per plugin directory (shared by every reload of it) with
//!   fuel metering and epoch interruption; a single ticker thread bumps the
//!   epoch every [`EPOCH_TICK`] while a call runs, sleeps while none does (an
//!   idle engine must not wake 200 times a second), and exits once the engine
//!   is dropped.
//! - Modules are compiled once (keyed by content hash so reloads skip
//!   unchanged files) and pre-linked into an [`InstancePre`].
//! - Every call gets a fresh `Store` + instance. Plugins therefore cannot keep
//!   state between entries, and a call that traps, loops or exhausts memory
//!   leaves nothing poisoned behind. With the pooling allocator instantiation
//!   is a few microseconds, so reuse would buy little and cost isolation.

use super::api::{CallCost, PluginCaller, PluginError, PluginOutput};
use crate::config::PluginSection;
use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use wasmtime::{
    Caller, Config, Engine, ExternType, FuncType, InstanceAllocationStrategy, InstancePre, Linker,
    Module, PoolingAllocationConfig, ResourceLimiter, Store, Trap, UpdateDeadline, ValType,
};

/// How often the background thread advances the engine epoch; a call's time
/// limits are checked with this granularity.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);
/// How often an idle ticker checks on its own that the engine still exists
/// (dropping the engine also wakes it).
const EPOCH_IDLE_CHECK: Duration = Duration::from_secs(10);
/// Largest output (JSON bytes) a plugin may return for a tiny input; the cap
/// grows by [`OUTPUT_PER_INPUT_BYTE`] per input byte, since a redactor or
/// mapper may echo large parts of a large entry (escaped).
pub const MAX_OUTPUT_BYTES: usize = 4 << 20;
pub const OUTPUT_PER_INPUT_BYTE: usize = 4;
/// Table elements a plugin may have (function pointers).
const TABLE_ELEMENTS: usize = 10_000;
/// Longest `env.log` message kept; the rest is cut off.
const MAX_LOG_BYTES: usize = 512;
/// `env.log` lines accepted per call; later ones are counted and dropped so a
/// chatty plugin cannot flood the host log.
const MAX_LOGS_PER_CALL: u32 = 16;
/// Concurrent plugin instances the pooling allocator has slots for.
const POOL_INSTANCES: u32 = 128;
const WASM_PAGE: u64 = 64 * 1024;

/// Per-call resource limits, normally taken from the `plugins:` config section.
///
/// Every budget is `base + allowance for the input's size`, capped by a
/// ceiling (0 = the base, i.e. no scaling): parsing and scanning an entry cost
/// work and memory proportional to its size, and Claude Code writes entries
/// from a few hundred bytes to megabytes. A call that hits a limit is retried
/// once with [`RETRY_FACTOR`] times its budget (still capped by the ceilings),
/// so an entry the per-byte model underestimates is not lost, while a hostile
/// plugin costs at most `1 + RETRY_FACTOR` budgets of its input's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// Base instruction budget (wasmtime fuel) per call; 0 = unlimited.
    pub fuel: u64,
    /// Extra fuel per input byte.
    pub fuel_per_byte: u64,
    /// Ceiling on the scaled fuel (0 = `fuel`).
    pub fuel_max: u64,
    /// Base CPU time (of the calling thread) per call; zero = unlimited.
    pub timeout: Duration,
    /// Extra CPU time per MiB of input.
    pub timeout_per_mib: Duration,
    /// Ceiling on the scaled CPU time (zero = `timeout`).
    pub timeout_max: Duration,
    /// Base cap on the guest's linear memory, in bytes.
    pub memory_bytes: usize,
    /// Extra guest memory per input byte.
    pub memory_per_byte: usize,
    /// Ceiling on the scaled memory cap (0 = `memory_bytes`).
    pub memory_max_bytes: usize,
}

/// What one attempt of a call may use, computed from [`PluginLimits`] and the
/// input's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Fuel; `u64::MAX` = unlimited.
    pub fuel: u64,
    /// CPU time of the calling thread; `None` = unlimited.
    pub cpu: Option<Duration>,
    /// Guest memory cap in bytes (whole wasm pages).
    pub memory: u64,
}

/// A retry gets this many times the first attempt's budget (capped by the
/// ceilings): enough slack for a plugin whose cost is not quite linear,
/// small enough that an infinite loop on every entry stays cheap.
pub const RETRY_FACTOR: u64 = 4;
/// The wall-clock backstop is this many times the CPU budget (at least
/// [`WALL_MIN`]). CPU time is the real limit; wall time only grows with
/// contention, which is not the plugin's fault, so the backstop is generous
/// and only matters if the thread CPU clock is unavailable.
const WALL_FACTOR: u32 = 50;
const WALL_MIN: Duration = Duration::from_secs(5);
const MIB: u128 = 1 << 20;

impl PluginLimits {
    pub fn from_section(section: &PluginSection) -> PluginLimits {
        let mib = |mb: u64| usize::try_from(mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        PluginLimits {
            fuel: section.fuel,
            fuel_per_byte: section.fuel_per_byte,
            fuel_max: section.fuel_max,
            timeout: Duration::from_millis(section.timeout_ms),
            timeout_per_mib: Duration::from_millis(section.timeout_ms_per_mib),
            timeout_max: Duration::from_millis(section.timeout_max_ms),
            memory_bytes: mib(section.memory_mb),
            memory_per_byte: usize::try_from(section.memory_per_byte).unwrap_or(usize::MAX),
            memory_max_bytes: mib(section.memory_max_mb),
        }
    }

    /// The same budget for every input: no scaling, hence no retry.
    pub fn fixed(fuel: u64, timeout: Duration, memory_bytes: usize) -> PluginLimits {
        PluginLimits {
            fuel,
            fuel_per_byte: 0,
            fuel_max: 0,
            timeout,
            timeout_per_mib: Duration::ZERO,
            timeout_max: Duration::ZERO,
            memory_bytes,
            memory_per_byte: 0,
            memory_max_bytes: 0,
        }
    }

    /// The budget of a first attempt on an input of `input_len` bytes.
    pub fn budget(&self, input_len: usize) -> Budget {
        self.scaled(input_len, 1)
    }

    /// The budget of the one retry after the first attempt hit a limit.
    pub fn retry_budget(&self, input_len: usize) -> Budget {
        self.scaled(input_len, RETRY_FACTOR)
    }

    fn scaled(&self, input_len: usize, factor: u64) -> Budget {
        let n = input_len as u64;
        let grow = |base: u64, extra: u64, max: u64| {
            base.saturating_add(extra)
                .saturating_mul(factor)
                .min(max.max(base))
        };
        let fuel = match self.fuel {
            0 => u64::MAX,
            base => grow(base, self.fuel_per_byte.saturating_mul(n), self.fuel_max),
        };
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let cpu = (!self.timeout.is_zero()).then(|| {
            let extra = self.timeout_per_mib.as_nanos() * u128::from(n) / MIB;
            let extra = u64::try_from(extra).unwrap_or(u64::MAX);
            let base = nanos(self.timeout);
            Duration::from_nanos(grow(base, extra, nanos(self.timeout_max)))
        });
        let memory = grow(
            self.memory_bytes as u64,
            (self.memory_per_byte as u64).saturating_mul(n),
            self.memory_max_bytes as u64,
        );
        Budget {
            fuel,
            cpu,
            memory: whole_pages(memory),
        }
    }

    /// The base memory cap in whole wasm pages: a module's initial memory must fit in it.
    fn memory_cap(&self) -> u64 {
        whole_pages(self.memory_bytes as u64)
    }

    /// The largest memory any call can get (the pooling allocator's slot size).
    fn memory_ceiling(&self) -> u64 {
        whole_pages(self.memory_max_bytes.max(self.memory_bytes) as u64)
    }
}

fn whole_pages(bytes: u64) -> u64 {
    bytes.max(WASM_PAGE).div_ceil(WASM_PAGE) * WASM_PAGE
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits::from_section(&PluginSection::default())
    }
}

impl From<&PluginSection> for PluginLimits {
    fn from(section: &PluginSection) -> Self {
        PluginLimits::from_section(section)
    }
}

/// A plugin file that could not be loaded (it is skipped; others still load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLoadError {
    pub file: PathBuf,
    pub reason: String,
}

impl fmt::Display for PluginLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.reason)
    }
}

impl std::error::Error for PluginLoadError {}

/// What a running plugin instance can see of the host.
pub(crate) struct CallState {
    plugin: Arc<str>,
    logs: u32,
    /// This call's memory cap in bytes.
    memory_cap: u64,
    /// Largest memory the guest asked for (granted or not).
    memory_peak: u64,
    /// The guest asked for more memory than `memory_cap` (and got `-1`).
    memory_denied: bool,
    clock: CallClock,
    /// Instances, tables, memories and table elements the store may hold: one
    /// of each for a core module, more for a component's inner modules.
    shape: StoreShape,
}

#[derive(Clone, Copy)]
struct StoreShape {
    instances: usize,
    tables: usize,
    memories: usize,
    table_elements: usize,
}

const CORE_SHAPE: StoreShape = StoreShape {
    instances: 1,
    tables: 1,
    memories: 1,
    table_elements: TABLE_ELEMENTS,
};
/// An interpreter component (CPython, SpiderMonkey) has a few dozen inner
/// instances and a function table far larger than a C plugin's.
const COMPONENT_SHAPE: StoreShape = StoreShape {
    instances: 256,
    tables: 256,
    memories: 16,
    table_elements: 1 << 20,
};

impl CallState {
    fn new(plugin: Arc<str>, budget: Budget, shape: StoreShape) -> CallState {
        CallState {
            plugin,
            logs: 0,
            memory_cap: budget.memory,
            memory_peak: 0,
            memory_denied: false,
            clock: CallClock::new(budget.cpu),
            shape,
        }
    }

    /// Ready a reused (component) store for the next call: fresh clocks and
    /// log count, memory capped at `baseline` plus the budget.
    pub(crate) fn reset(&mut self, budget: Budget, baseline: u64) {
        self.logs = 0;
        self.memory_cap = baseline.saturating_add(budget.memory);
        self.memory_denied = false;
        self.clock = CallClock::new(budget.cpu);
    }

    pub(crate) fn memory_peak(&self) -> u64 {
        self.memory_peak
    }

    pub(crate) fn memory_denied(&self) -> bool {
        self.memory_denied
    }

    pub(crate) fn cpu_used(&self) -> Duration {
        self.clock.cpu_used().unwrap_or_default()
    }

    pub(crate) fn fired(&self) -> Option<(&'static str, Duration)> {
        self.clock.fired
    }

    /// A guest's log line: to the engine's log at debug level, cut and rate-limited.
    pub(crate) fn log(&mut self, bytes: &[u8]) {
        self.logs += 1;
        if self.logs > MAX_LOGS_PER_CALL {
            if self.logs == MAX_LOGS_PER_CALL + 1 {
                tracing::debug!(plugin = %self.plugin, "plugin log limit reached, dropping further lines of this call");
            }
            return;
        }
        let bytes = &bytes[..bytes.len().min(MAX_LOG_BYTES)];
        tracing::debug!(plugin = %self.plugin, message = %String::from_utf8_lossy(bytes), "plugin log");
    }
}

/// The time limits of one call: CPU time of the calling thread (so a loaded
/// machine does not make ordinary entries fail), plus a generous wall-clock
/// backstop. Checked on every epoch tick by the epoch-deadline callback.
struct CallClock {
    /// Thread CPU time at the first tick of this call. Read then, not at the
    /// start, so the many calls shorter than a tick cost no clock syscall; it
    /// under-counts by at most the CPU used before that first tick.
    cpu_start: Option<Duration>,
    cpu_budget: Option<Duration>,
    wall_start: Instant,
    wall_budget: Option<Duration>,
    /// Which limit interrupted the call, if one did.
    fired: Option<(&'static str, Duration)>,
}

impl CallClock {
    fn new(cpu_budget: Option<Duration>) -> CallClock {
        CallClock {
            cpu_start: None,
            cpu_budget,
            wall_start: Instant::now(),
            wall_budget: cpu_budget.map(|cpu| (cpu * WALL_FACTOR).max(WALL_MIN)),
            fired: None,
        }
    }

    fn cpu_used(&self) -> Option<Duration> {
        Some(thread_cpu_time()?.saturating_sub(self.cpu_start?))
    }

    /// Whether a limit is exceeded now (and remember which).
    fn expired(&mut self) -> bool {
        if self.cpu_start.is_none() {
            self.cpu_start = thread_cpu_time();
        }
        if let (Some(used), Some(budget)) = (self.cpu_used(), self.cpu_budget) {
            if used > budget {
                self.fired = Some(("cpu", budget));
                return true;
            }
        }
        if let Some(wall) = self.wall_budget {
            if self.wall_start.elapsed() > wall {
                self.fired = Some(("wall", wall));
                return true;
            }
        }
        false
    }
}

/// CPU time consumed by the calling thread, or None where the clock is unavailable.
fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u32::try_from(ts.tv_nsec).ok()?;
    (rc == 0).then(|| Duration::new(secs, nanos))
}

impl ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let desired = desired as u64;
        self.memory_peak = self.memory_peak.max(desired);
        if desired > self.memory_cap {
            // memory.grow returns -1, as the spec allows; the flag tells the
            // host that a failure of this call may be the memory limit's doing.
            self.memory_denied = true;
            return Ok(false);
        }
        Ok(maximum.is_none_or(|max| desired <= max as u64))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.shape.table_elements && maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        self.shape.instances
    }
    fn tables(&self) -> usize {
        self.shape.tables
    }
    fn memories(&self) -> usize {
        self.shape.memories
    }
}

/// What one attempt used (for logs, and tests that size the defaults).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub fuel: u64,
    pub memory_peak: u64,
    /// CPU time since the call's first epoch tick (zero for calls shorter than a tick).
    pub cpu: Duration,
}

/// A failed attempt, and whether a budget (rather than the plugin) caused it.
pub(crate) struct Failure {
    pub(crate) error: PluginError,
    pub(crate) limit_hit: bool,
}

/// Engine + linker shared by every host built for one plugin directory, so
/// modules compiled by an earlier load can be reused by a reload.
pub(crate) struct EngineCtx {
    engine: Engine,
    linker: Linker<CallState>,
    /// Components get their own engine without the pooling allocator: each is
    /// instantiated once per worker, so pooling's fast instantiation buys
    /// nothing, and an interpreter's many inner modules do not fit its slots.
    component_engine: Engine,
    component_linker: wasmtime::component::Linker<CallState>,
    limits: PluginLimits,
    /// Plugin calls running now; the epoch ticker sleeps while there are none.
    calls: AtomicUsize,
    ticker: OnceLock<std::thread::Thread>,
}

/// A plugin call in progress (the epoch ticks while one is alive).
pub(crate) struct Running<'a>(&'a EngineCtx);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, SeqCst);
    }
}

impl Drop for EngineCtx {
    fn drop(&mut self) {
        // Let the ticker see that the engine is gone and exit.
        if let Some(t) = self.ticker.get() {
            t.unpark();
        }
    }
}

impl EngineCtx {
    pub(crate) fn new(limits: PluginLimits) -> Result<Arc<EngineCtx>> {
        match EngineCtx::with_pooling(limits, true) {
            Ok(ctx) => Ok(ctx),
            Err(err) => {
                // The pool reserves a lot of address space up front; a host
                // with a tight `ulimit -v` still gets working (slower) plugins.
                tracing::warn!(error = %format!("{err:#}"), "pooling allocator unavailable, falling back to on-demand instances");
                EngineCtx::with_pooling(limits, false)
            }
        }
    }

    pub(crate) fn with_pooling(limits: PluginLimits, pooling: bool) -> Result<Arc<EngineCtx>> {
        let engine = build_engine(limits, pooling)?;
        let mut linker = Linker::new(&engine);
        linker
            .func_wrap("env", "log", host_log)
            .map_err(|e| anyhow!("cannot define env.log: {e:#}"))?;
        let component_engine = build_component_engine()?;
        let component_linker = super::component::linker(&component_engine)?;
        let ctx = Arc::new(EngineCtx {
            engine,
            linker,
            component_engine,
            component_linker,
            limits,
            calls: AtomicUsize::new(0),
            ticker: OnceLock::new(),
        });
        spawn_epoch_ticker(&ctx)?;
        Ok(ctx)
    }

    /// Count a call as running until the guard drops; wakes the ticker.
    pub(crate) fn running(&self) -> Running<'_> {
        if self.calls.fetch_add(1, SeqCst) == 0 {
            if let Some(t) = self.ticker.get() {
                t.unpark();
            }
        }
        Running(self)
    }

    pub(crate) fn classify_error(
        &self,
        plugin: &str,
        err: wasmtime::Error,
        budget: Budget,
        fired: Option<(&'static str, Duration)>,
    ) -> PluginError {
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => PluginError::OutOfFuel {
                plugin: plugin.to_string(),
                fuel: budget.fuel,
            },
            Some(Trap::Interrupt) => {
                let (clock, limit) = fired.unwrap_or(("cpu", budget.cpu.unwrap_or_default()));
                tracing::debug!(plugin, clock, ?limit, "plugin interrupted");
                PluginError::Timeout {
                    plugin: plugin.to_string(),
                    millis: limit.as_millis() as u64,
                }
            }
            _ => PluginError::Trap {
                plugin: plugin.to_string(),
                // `{:#}` keeps the wasm backtrace context (function names).
                reason: format!("{err:#}"),
            },
        }
    }

    pub(crate) fn limits(&self) -> PluginLimits {
        self.limits
    }

    pub(crate) fn component_engine(&self) -> &Engine {
        &self.component_engine
    }

    pub(crate) fn component_linker(&self) -> &wasmtime::component::Linker<CallState> {
        &self.component_linker
    }

    /// A store for a component instance, limited by `budget`.
    pub(crate) fn component_store(&self, plugin: Arc<str>, budget: Budget) -> Store<CallState> {
        let mut store = Store::new(
            &self.component_engine,
            CallState::new(plugin, budget, COMPONENT_SHAPE),
        );
        store.limiter(|state| state);
        store
    }

    /// Validate and pre-link a plugin from `bytes` (wasm or wat): a component
    /// (the WIT interface) or a core module (the JSON ABI).
    pub(crate) fn compile(&self, name: &str, bytes: &[u8]) -> Result<Compiled> {
        if super::component::is_component(bytes) {
            return Ok(Compiled::Component(super::component::compile(
                self, name, bytes,
            )?));
        }
        self.compile_core(name, bytes).map(Compiled::Core)
    }

    fn compile_core(&self, name: &str, bytes: &[u8]) -> Result<InstancePre<CallState>> {
        let module = Module::new(&self.engine, bytes).map_err(|e| {
            // wasmtime's wat/validation errors are multi-line; keep them whole.
            anyhow!("does not compile: {e:#}")
        })?;
        check_abi(&module, self.limits.memory_cap())?;
        self.linker
            .instantiate_pre(&module)
            .map_err(|e| anyhow!("cannot link plugin `{name}`: {e:#}"))
    }
}

fn build_engine(limits: PluginLimits, pooling: bool) -> Result<Engine> {
    let mut config = Config::new();
    config.consume_fuel(true);
    config.epoch_interruption(true);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(POOL_INSTANCES)
            .total_memories(POOL_INSTANCES)
            .total_tables(POOL_INSTANCES)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .table_elements(TABLE_ELEMENTS)
            // Slots are sized for the ceiling: a large entry's call may use it.
            .max_memory_size(usize::try_from(limits.memory_ceiling()).unwrap_or(usize::MAX))
            // Keep a small warm prefix resident so reusing a slot avoids page faults.
            .linear_memory_keep_resident(256 * 1024);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&config).map_err(|e| anyhow!("cannot create the wasmtime engine: {e:#}"))
}

/// The components' engine: no pooling, and wasmtime's on-disk compilation
/// cache, since an interpreter component (18 MB for CPython) takes seconds to
/// compile and would otherwise pay that again at every start.
fn build_component_engine() -> Result<Engine> {
    let mut config = Config::new();
    config.consume_fuel(true);
    config.epoch_interruption(true);
    match wasmtime::Cache::new(wasmtime::CacheConfig::new()) {
        Ok(cache) => {
            config.cache(Some(cache));
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "no wasm compilation cache; components compile at every start")
        }
    }
    Engine::new(&config).map_err(|e| anyhow!("cannot create the wasmtime engine: {e:#}"))
}

/// One thread per engine advances the epoch while a call runs and parks
/// otherwise; it holds only a weak reference so it ends as soon as the last
/// host using the engine is gone.
fn spawn_epoch_ticker(ctx: &Arc<EngineCtx>) -> Result<()> {
    let weak = Arc::downgrade(ctx);
    let handle = std::thread::Builder::new()
        .name("plugin-epoch".into())
        .spawn(move || loop {
            let busy = match weak.upgrade() {
                Some(ctx) => ctx.calls.load(SeqCst) > 0,
                None => break,
            };
            if !busy {
                // A call starting after the check unparks us (the token makes
                // a park after that unpark return at once).
                std::thread::park_timeout(EPOCH_IDLE_CHECK);
                continue;
            }
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(ctx) => {
                    ctx.engine.increment_epoch();
                    ctx.component_engine.increment_epoch();
                }
                None => break,
            }
        })
        .context("cannot start the plugin epoch thread")?;
    let _ = ctx.ticker.set(handle.thread().clone());
    Ok(())
}

fn host_log(mut caller: Caller<'_, CallState>, ptr: i32, len: i32) {
    let Some(memory) = caller
        .get_export("memory")
        .and_then(|export| export.into_memory())
    else {
        return;
    };
    let (data, state) = memory.data_and_store_mut(&mut caller);
    let start = ptr as u32 as usize;
    let len = (len as u32 as usize).min(MAX_LOG_BYTES);
    match data.get(start..start.saturating_add(len).min(data.len())) {
        Some(bytes) => state.log(bytes),
        None => {
            tracing::debug!(plugin = %state.plugin, ptr, "plugin logged from an out-of-bounds pointer")
        }
    }
}

fn func_sig(ty: &FuncType) -> String {
    let list = |tys: &mut dyn Iterator<Item = ValType>| {
        tys.map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
    };
    format!(
        "({}) -> ({})",
        list(&mut ty.params()),
        list(&mut ty.results())
    )
}

/// Reject anything outside the ABI at load time, with a message a plugin
/// author can act on, instead of failing on every call later.
fn check_abi(module: &Module, memory_cap: u64) -> Result<()> {
    for import in module.imports() {
        let ok = import.module() == "env"
            && import.name() == "log"
            && matches!(import.ty(), ExternType::Func(ref f) if func_sig(f) == "(i32, i32) -> ()");
        if !ok {
            bail!(
                "unsupported import `{}.{}` ({}): plugins may only import env.log(i32, i32) \
                 (no WASI: no files, network or clock)",
                import.module(),
                import.name(),
                describe_extern(&import.ty())
            );
        }
    }
    match module.get_export("memory") {
        Some(ExternType::Memory(mem)) => {
            if mem.is_64() || mem.is_shared() {
                bail!("export `memory` must be a plain 32-bit, non-shared memory");
            }
            let min_bytes = mem.minimum().saturating_mul(mem.page_size());
            if min_bytes > memory_cap {
                bail!(
                    "memory starts at {} KiB, above the plugin memory limit of {} KiB",
                    min_bytes / 1024,
                    memory_cap / 1024
                );
            }
        }
        Some(other) => bail!(
            "export `memory` must be a memory, found {}",
            describe_extern(&other)
        ),
        None => bail!("missing export `memory`"),
    }
    for (name, expected) in [
        ("alloc", "(i32) -> (i32)"),
        ("process", "(i32, i32) -> (i64)"),
    ] {
        match module.get_export(name) {
            Some(ExternType::Func(f)) if func_sig(&f) == expected => {}
            Some(ExternType::Func(f)) => bail!(
                "export `{name}` has signature {}, expected {expected}",
                func_sig(&f)
            ),
            Some(other) => bail!(
                "export `{name}` must be a function {expected}, found {}",
                describe_extern(&other)
            ),
            None => bail!("missing export `{name}`: expected a function {expected}"),
        }
    }
    Ok(())
}

fn describe_extern(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(f) => format!("function {}", func_sig(f)),
        ExternType::Global(_) => "global".into(),
        ExternType::Table(_) => "table".into(),
        ExternType::Memory(_) => "memory".into(),
        ExternType::Tag(_) => "tag".into(),
    }
}

/// Loaded plugins by name.
pub(crate) type Plugins = BTreeMap<String, Arc<LoadedPlugin>>;

/// One compiled plugin.
pub(crate) struct LoadedPlugin {
    pub(crate) name: Arc<str>,
    pub(crate) file: PathBuf,
    pub(crate) hash: [u8; 32],
    compiled: Compiled,
}

/// A plugin ready to instantiate, in one of the two interfaces.
pub(crate) enum Compiled {
    /// A core module speaking the JSON ABI: a fresh instance per call.
    Core(InstancePre<CallState>),
    /// A component of the WIT interface: one instance per worker, reused.
    Component(super::component::ComponentPlugin),
}

/// Candidate plugin files directly in `dir`, sorted by file name; a missing
/// directory has none.
pub(crate) fn scan_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read plugins dir {}", dir.display()))
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read plugins dir {}", dir.display()))?;
        let path = entry.path();
        let is_plugin = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("wasm") | Some("wat")
        );
        // `is_file` follows symlinks, so a dist dir of links works too.
        if is_plugin && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The plugin name of a file: its stem, restricted so that rule files and log
/// lines can name it unambiguously.
pub fn plugin_name(file: &Path) -> Result<String> {
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| anyhow!("file name is not valid UTF-8"))?;
    let valid = !stem.is_empty()
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        bail!("plugin name `{stem}` may only contain letters, digits, `_` and `-`");
    }
    Ok(stem.to_string())
}

pub(crate) fn content_hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Compile every plugin file in `dir`, reusing `previous` plugins whose file
/// content is unchanged. Returns the new set plus per-file failures, each with
/// the plugin name ("" if none) so a reload can keep the old version.
pub(crate) fn load_files(
    ctx: &EngineCtx,
    dir: &Path,
    previous: &Plugins,
) -> Result<(Plugins, Vec<(String, PluginLoadError)>)> {
    let mut plugins = BTreeMap::new();
    let mut failed = Vec::new();
    for file in scan_dir(dir)? {
        let reject = |name: &str, reason: String| {
            (
                name.to_string(),
                PluginLoadError {
                    file: file.clone(),
                    reason,
                },
            )
        };
        let name = match plugin_name(&file) {
            Ok(name) => name,
            Err(e) => {
                failed.push(reject("", format!("{e:#}")));
                continue;
            }
        };
        if let Some(first) = plugins
            .get(&name)
            .map(|p: &Arc<LoadedPlugin>| p.file.clone())
        {
            // foo.wasm sorts before foo.wat, so the binary wins consistently.
            failed.push(reject(
                "",
                format!(
                    "duplicate plugin name `{name}` (already loaded from {})",
                    first.display()
                ),
            ));
            continue;
        }
        let bytes = match std::fs::read(&file) {
            Ok(bytes) => bytes,
            Err(e) => {
                failed.push(reject(&name, format!("cannot read: {e}")));
                continue;
            }
        };
        let hash = content_hash(&bytes);
        if let Some(old) = previous.get(&name) {
            if old.hash == hash && old.file == file {
                plugins.insert(name, old.clone());
                continue;
            }
        }
        match ctx.compile(&name, &bytes) {
            Ok(compiled) => {
                plugins.insert(
                    name.clone(),
                    Arc::new(LoadedPlugin {
                        name: name.into(),
                        file,
                        hash,
                        compiled,
                    }),
                );
            }
            Err(e) => failed.push(reject(&name, format!("{e:#}"))),
        }
    }
    Ok((plugins, failed))
}

/// A set of compiled plugins, callable by name. Cheap to share (`Send + Sync`).
pub struct PluginHost {
    pub(crate) ctx: Arc<EngineCtx>,
    pub(crate) plugins: Plugins,
}

impl PluginHost {
    /// Compile every `*.wasm` / `*.wat` directly in `dir` (a missing dir means
    /// no plugins, not an error). A module that fails to compile/validate or
    /// has a bad ABI is skipped and reported in the returned Vec.
    pub fn load_dir(
        dir: &Path,
        limits: PluginLimits,
    ) -> Result<(PluginHost, Vec<PluginLoadError>)> {
        PluginHost::load_dir_with(EngineCtx::new(limits)?, dir)
    }

    pub(crate) fn load_dir_with(
        ctx: Arc<EngineCtx>,
        dir: &Path,
    ) -> Result<(PluginHost, Vec<PluginLoadError>)> {
        let (plugins, failed) = load_files(&ctx, dir, &BTreeMap::new())?;
        let errors: Vec<PluginLoadError> = failed.into_iter().map(|(_, e)| e).collect();
        for err in &errors {
            tracing::error!(file = %err.file.display(), reason = %err.reason, "plugin rejected");
        }
        tracing::info!(dir = %dir.display(), plugins = ?plugins.keys().collect::<Vec<_>>(), "plugins loaded");
        Ok((PluginHost { ctx, plugins }, errors))
    }

    /// Names of the loaded plugins, sorted.
    pub fn names(&self) -> Vec<String> {
        self.plugins.keys().cloned().collect()
    }

    /// The limits every call runs under.
    pub fn limits(&self) -> PluginLimits {
        self.ctx.limits
    }

    /// One call: a first attempt with the budget for the input's size and,
    /// if that hit a limit, one retry with the larger retry budget.
    fn run(
        &self,
        plugin: &Arc<LoadedPlugin>,
        input: &[u8],
    ) -> (Result<PluginOutput, PluginError>, CallCost) {
        let limits = &self.ctx.limits;
        let first = limits.budget(input.len());
        let (result, usage) = self.attempt(plugin, input, first);
        let mut cost = CallCost {
            fuel: usage.fuel,
            memory_peak: usage.memory_peak,
            attempts: 1,
        };
        let failure = match result {
            Ok(output) => return (Ok(output), cost),
            Err(failure) => failure,
        };
        let retry = limits.retry_budget(input.len());
        if !failure.limit_hit || retry == first {
            return (Err(failure.error), cost);
        }
        tracing::warn!(
            plugin = %plugin.name,
            input_bytes = input.len(),
            error = %failure.error,
            ?usage,
            budget = ?first,
            retry = ?retry,
            "plugin hit a limit; retrying once with a larger budget"
        );
        let (result, usage) = self.attempt(plugin, input, retry);
        if let Err(failure) = &result {
            tracing::debug!(plugin = %plugin.name, ?usage, budget = ?retry, error = %failure.error, "plugin retry failed too");
        }
        cost.fuel = cost.fuel.saturating_add(usage.fuel);
        cost.memory_peak = cost.memory_peak.max(usage.memory_peak);
        cost.attempts = 2;
        (result.map_err(|failure| failure.error), cost)
    }

    /// One attempt in a fresh store and instance under `budget`.
    #[cfg(test)]
    pub(crate) fn attempt_with(
        &self,
        name: &str,
        input: &[u8],
        budget: Budget,
    ) -> Option<(Result<PluginOutput, PluginError>, Usage)> {
        let plugin = self.plugins.get(name)?;
        let cpu_start = thread_cpu_time();
        let (result, mut usage) = self.attempt(plugin, input, budget);
        if let (Some(start), Some(end)) = (cpu_start, thread_cpu_time()) {
            usage.cpu = end.saturating_sub(start);
        }
        Some((result.map_err(|f| f.error), usage))
    }

    fn attempt(
        &self,
        plugin: &Arc<LoadedPlugin>,
        input: &[u8],
        budget: Budget,
    ) -> (Result<PluginOutput, Failure>, Usage) {
        let pre = match &plugin.compiled {
            Compiled::Core(pre) => pre,
            Compiled::Component(c) => {
                return super::component::attempt(&self.ctx, plugin, c, input, budget)
            }
        };
        let _running = self.ctx.running();
        let mut store = Store::new(
            &self.ctx.engine,
            CallState::new(plugin.name.clone(), budget, CORE_SHAPE),
        );
        store.limiter(|state| state);
        let result = self.execute(&mut store, &plugin.name, pre, input, budget);
        let state = store.data();
        let usage = Usage {
            fuel: budget.fuel.saturating_sub(store.get_fuel().unwrap_or(0)),
            memory_peak: state.memory_peak,
            cpu: state.clock.cpu_used().unwrap_or_default(),
        };
        let result = result.map_err(|error| {
            let limit_hit = state.memory_denied
                || matches!(
                    error,
                    PluginError::OutOfFuel { .. } | PluginError::Timeout { .. }
                );
            Failure { error, limit_hit }
        });
        (result, usage)
    }

    fn execute(
        &self,
        store: &mut Store<CallState>,
        name: &str,
        pre: &InstancePre<CallState>,
        input: &[u8],
        budget: Budget,
    ) -> Result<PluginOutput, PluginError> {
        let trap = |reason: String| PluginError::Trap {
            plugin: name.to_string(),
            reason,
        };
        arm_budget(store, budget).map_err(|e| trap(format!("cannot set the budget: {e}")))?;
        let classify = |store: &Store<CallState>, err: wasmtime::Error| {
            self.ctx
                .classify_error(name, err, budget, store.data().clock.fired)
        };
        let instance = pre
            .instantiate(&mut *store)
            .map_err(|e| classify(store, e))?;
        let memory = instance
            .get_memory(&mut *store, "memory")
            .ok_or_else(|| trap("export `memory` disappeared".into()))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut *store, "alloc")
            .map_err(|e| trap(format!("{e:#}")))?;
        let process = instance
            .get_typed_func::<(i32, i32), i64>(&mut *store, "process")
            .map_err(|e| trap(format!("{e:#}")))?;

        let len = i32::try_from(input.len())
            .map_err(|_| trap(format!("input of {} bytes is too large", input.len())))?;
        let ptr = alloc
            .call(&mut *store, len)
            .map_err(|e| classify(store, e))?;
        // alloc(len) returning 0 or a negative value is how a guest says "out of memory".
        let in_start = ptr as u32 as usize;
        if ptr == 0 || in_start.saturating_add(input.len()) > memory.data_size(&*store) {
            return Err(trap(format!(
                "alloc({len}) returned {ptr}, not a buffer inside memory ({} bytes) - out of memory?",
                memory.data_size(&*store)
            )));
        }
        memory
            .write(&mut *store, in_start, input)
            .map_err(|e| trap(format!("cannot write input: {e}")))?;

        let packed = process
            .call(&mut *store, (ptr, len))
            .map_err(|e| classify(store, e))?;
        let max_output =
            MAX_OUTPUT_BYTES.saturating_add(input.len().saturating_mul(OUTPUT_PER_INPUT_BYTE));
        let out = read_output(name, memory.data(&*store), packed, max_output)?;
        parse_output(name, out)
    }
}

/// Give a store its fuel and its time limits for one call.
pub(crate) fn arm_budget(store: &mut Store<CallState>, budget: Budget) -> wasmtime::Result<()> {
    store.set_fuel(budget.fuel)?;
    if budget.cpu.is_some() {
        // Check the clocks on every tick; the callback runs on the calling thread.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            Ok(if ctx.data_mut().clock.expired() {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            })
        });
    } else {
        // "Unlimited" is a deadline that cannot be reached; not u64::MAX,
        // which wasmtime adds to the current epoch.
        store.set_epoch_deadline(u64::MAX / 4);
        store.epoch_deadline_trap();
    }
    Ok(())
}

/// The output bytes `process` pointed at: `(out_ptr << 32) | out_len`.
fn read_output<'a>(
    plugin: &str,
    data: &'a [u8],
    packed: i64,
    max_output: usize,
) -> Result<&'a [u8], PluginError> {
    let out_ptr = (packed as u64 >> 32) as usize;
    let out_len = (packed as u64 & 0xffff_ffff) as usize;
    let bad = |reason: String| PluginError::BadOutput {
        plugin: plugin.to_string(),
        reason,
    };
    if out_len > max_output {
        return Err(bad(format!(
            "output of {out_len} bytes exceeds the {max_output}-byte limit"
        )));
    }
    data.get(out_ptr..out_ptr + out_len).ok_or_else(|| {
        bad(format!(
            "output range {out_ptr}+{out_len} is outside guest memory ({} bytes)",
            data.len()
        ))
    })
}

/// `{"error": "..."}` — the only other shape a plugin may return.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportedError {
    error: String,
}

fn parse_output(plugin: &str, out: &[u8]) -> Result<PluginOutput, PluginError> {
    match serde_json::from_slice::<PluginOutput>(out) {
        Ok(output) => Ok(output),
        Err(first) => match serde_json::from_slice::<ReportedError>(out) {
            Ok(reported) => Err(PluginError::Reported {
                plugin: plugin.to_string(),
                message: reported.error,
            }),
            Err(_) => {
                let preview: String = String::from_utf8_lossy(&out[..out.len().min(200)]).into();
                Err(PluginError::BadOutput {
                    plugin: plugin.to_string(),
                    reason: format!("{first} (output starts with {preview:?})"),
                })
            }
        },
    }
}

impl PluginCaller for PluginHost {
    fn call(&self, name: &str, input: &[u8]) -> Result<PluginOutput, PluginError> {
        self.call_measured(name, input).0
    }

    fn call_measured(
        &self,
        name: &str,
        input: &[u8],
    ) -> (Result<PluginOutput, PluginError>, Option<CallCost>) {
        let Some(plugin) = self.plugins.get(name) else {
            return (Err(PluginError::NotFound(name.to_string())), None);
        };
        let t0 = Instant::now();
        let (result, cost) = self.run(plugin, input);
        crate::sink::status::timings()
            .plugin_call_seconds
            .observe(t0.elapsed().as_secs_f64());
        if let Err(err) = &result {
            tracing::debug!(plugin = name, error = %err, "plugin call failed");
        }
        (result, Some(cost))
    }

    fn has(&self, name: &str) -> bool {
        self.plugins.contains_key(name)
    }
}
