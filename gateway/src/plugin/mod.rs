//! Wasm plugins: phases 7 (`on-request`) and 10 (`on-response`) of the request lifecycle,
//! and the plugin entries of `/health`.
//!
//! One [`PluginHost`] per gateway owns the wasmtime [`Engine`] (cranelift, component model,
//! epoch interruption, no async) and the [`Linker`] that provides the ABI's imports. A
//! [`Plugin`] is one component compiled once, when the config that names it is loaded (off
//! the request path), with a pool of live instances. A call takes an idle instance (or
//! instantiates one), lends it the request's [`Exchange`], runs the hook under an epoch
//! deadline and a memory cap, and puts the instance back. An instance whose call failed
//! (trap, deadline, memory cap, error) is thrown away: the next call gets a fresh one, so
//! nothing a failed call left behind is ever seen again. After
//! [`FAILURES_BEFORE_BACKOFF`] consecutive failures of one hook that hook is skipped for a backoff
//! period that doubles on each repeated trip, up to [`MAX_BACKOFF`].
//!
//! State a plugin keeps between calls lives in its instance's memory: it persists from one
//! request to the next on that instance, and is lost when the instance is replaced. With
//! several workers there is an instance per concurrently running call (at most one per
//! worker), each with its own state; `health-check` runs on each idle instance and the
//! worst report counts. Metrics a plugin declares live in the gateway, not the instance, and
//! survive both.

crate::internal!(abi, abi2, cache, declared, families, finished, observer, store);
mod outbound;

pub use declared::MAX_LABEL_VALUE;
pub use store::StoreLimits;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri};
use prometheus::{Histogram, IntCounter, IntGauge};
use wasmtime::component::{Component, HasSelf, Linker, Resource};
use wasmtime::{Engine, ResourceLimiter, Store};

use crate::backoff::{Backoff, Consecutive, Growth};
use crate::config::{FailurePolicy, PluginConfig};
use crate::metrics::Metrics;
use abi::{HealthStatus, HostState};
use declared::Declared;

/// How often the engine's epoch advances: the granularity of call deadlines. A call is
/// stopped between its timeout and one tick later. Each tick wakes a thread, which costs the
/// core it lands on: at 1 ms the ticks took about 0.7 µs per request from a loaded
/// single-core gateway (docs/benchmarks.md), at 5 ms about a fifth of that.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Consecutive failed calls after which a plugin is backed off.
pub const FAILURES_BEFORE_BACKOFF: u32 = 3;
/// First backoff; each further trip without a successful call in between doubles it.
pub const BASE_BACKOFF: Duration = Duration::from_secs(1);
/// Longest backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Most table elements an instance may have.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Longest denial body sent, in bytes (ABI 0.1.0).
const MAX_DENIAL_BODY: usize = 4096;
/// Longest local reply body sent, in bytes (ABI 0.2.0).
const MAX_REPLY_BODY: usize = 64 << 10;
/// One request-path hook call in this many is timed into `fedgate_plugin_duration_seconds`.
pub const DURATION_SAMPLE: u32 = 16;
/// Failure log lines per plugin per second; the rest are counted only.
const FAILURE_LOGS_PER_SECOND: u64 = 10;

/// The hooks, as the `hook` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Init,
    OnRequest,
    OnResponse,
    HealthCheck,
    Observe,
    OnTick,
}

impl Hook {
    pub const ALL: [Hook; 6] = [
        Hook::Init,
        Hook::OnRequest,
        Hook::OnResponse,
        Hook::HealthCheck,
        Hook::Observe,
        Hook::OnTick,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Init => "init",
            Hook::OnRequest => "on_request",
            Hook::OnResponse => "on_response",
            Hook::HealthCheck => "health_check",
            Hook::Observe => "observe",
            Hook::OnTick => "on_tick",
        }
    }

    /// Whether the hook runs on the plugin's observer thread, off the request path.
    fn background(self) -> bool {
        matches!(self, Hook::Observe | Hook::OnTick)
    }
}

/// How one call ended, as the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Deny,
    Trap,
    Timeout,
    Error,
    /// Not called: the plugin is backed off.
    Skipped,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Ok,
        Outcome::Deny,
        Outcome::Trap,
        Outcome::Timeout,
        Outcome::Error,
        Outcome::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Deny => "deny",
            Outcome::Trap => "trap",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
            Outcome::Skipped => "skipped",
        }
    }
}

/// What plugins see of one request (and, in `on-response`, its response). The proxy moves
/// its request head in, the store holds it for the call, and the proxy moves it back out.
/// It travels boxed: lending it to a call swaps one pointer, not the whole struct.
#[derive(Debug, Default)]
pub struct Exchange {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub scheme: &'static str,
    pub authority: Option<HeaderValue>,
    pub client: Option<IpAddr>,
    pub route: Arc<str>,
    pub upstream: Arc<str>,
    pub request_id: Option<HeaderValue>,
    pub body: Option<Bytes>,
    /// The verified signer (phase 6), if any.
    pub signer: Option<crate::signature::verifier::Signer>,
    pub started: Option<Instant>,
    pub response: Option<ResponseView>,
    /// The principal auth established (phase 5): how, and who.
    pub principal: Option<(crate::auth::AuthMethod, Arc<str>)>,
    pub version: http::Version,
    /// TLS listeners: the server name the client asked for, and the verified client
    /// certificate's subject on mTLS listeners.
    pub tls: Option<TlsFacts>,
    /// The federation view of a buffered activity body, parsed on first use.
    pub activity: Option<Arc<crate::activity::LazyActivity>>,
}

/// TLS facts of a client connection, for plugins.
#[derive(Debug, Clone, Default)]
pub struct TlsFacts {
    pub server_name: Option<Arc<str>>,
    pub client_subject: Option<Arc<str>>,
}

/// The response head `on-response` sees.
#[derive(Debug, Default)]
pub struct ResponseView {
    pub status: u16,
    pub headers: HeaderMap,
    /// Set when the gateway answered for the upstream: `connect`, `timeout`, ...
    pub error: Option<&'static str>,
    pub endpoint: Option<Arc<str>>,
    pub upstream_latency: Option<Duration>,
}

/// The response a plugin's `deny` asks for.
#[derive(Debug)]
pub struct Denial {
    pub plugin: Arc<str>,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What phase 7 decided.
#[derive(Debug)]
pub enum Decision {
    Continue,
    Deny(Denial),
    /// A `fail_closed` plugin failed (and said why in the log): answer 503.
    Failed,
}

/// The shared engine, linker and metric families of all plugins.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<HostState>,
    metrics: Metrics,
    declared: Arc<Declared>,
    /// Idle instances kept per plugin: one per worker thread.
    pool_size: usize,
    ticker: OnceLock<()>,
    clock: Instant,
    /// The linear memory all instances of all plugins may hold together.
    budget: Arc<MemoryBudget>,
    /// The running configuration's upstreams and whether each is critical, for ABI 0.2.0's
    /// `gateway.upstreams`; updated by every load.
    upstreams: UpstreamList,
    /// Each plugin's key-value store, by plugin name: a reloaded plugin keeps its store
    /// (a new one is made only when its bounds change).
    stores: std::sync::Mutex<std::collections::HashMap<String, Arc<store::Store>>>,
    /// Every observer thread started and not yet seen to end, so a shutdown can stop them
    /// and wait until they have delivered what they hold.
    observers: std::sync::Mutex<Vec<observer::Handle>>,
}

/// A total of linear memory shared by every plugin instance: per-instance caps multiply by
/// the instances a plugin has (one per worker, more while a burst lasts, a second set
/// during a reload), so they alone do not bound what plugins take from the process.
#[derive(Debug)]
pub struct MemoryBudget {
    max: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(MemoryBudget {
            max,
            used: AtomicUsize::new(0),
        })
    }

    /// Takes `bytes` from the budget, or nothing if they do not fit.
    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(bytes).filter(|&n| n <= self.max)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes taken now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// What `fedgate plugin check` reports about a component.
#[derive(Debug)]
pub struct Inspection {
    /// The ABI version the component was built for.
    pub version: String,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    /// Imports the gateway does not provide: calling them traps.
    pub trapping_imports: Vec<String>,
}

impl PluginHost {
    /// Creates the Wasm engine and the linker every plugin is instantiated with (both
    /// ABIs, and WASI's `insecure-seed` as the only WASI function), keeping `workers` idle
    /// instances per plugin (at least one) and the default memory budget
    /// ([`DEFAULT_PLUGIN_MEMORY_BUDGET`](crate::config::DEFAULT_PLUGIN_MEMORY_BUDGET)).
    /// Fails when the engine or the linker cannot be set up.
    pub fn new(metrics: &Metrics, workers: usize) -> Result<Self, String> {
        let mut cfg = wasmtime::Config::new();
        cfg.wasm_component_model(true)
            .epoch_interruption(true)
            .concurrency_support(false)
            .max_wasm_stack(512 << 10);
        // `perf` can name the functions of compiled plugins when they are listed in
        // /tmp/perf-PID.map: FEDGATE_PLUGIN_PROFILE=perfmap, for profiling only.
        if std::env::var_os("FEDGATE_PLUGIN_PROFILE").is_some_and(|v| v == "perfmap") {
            cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&cfg).map_err(|e| format!("Wasm engine: {e}"))?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        abi::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| format!("Wasm linker: {e}"))?;
        abi2::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| format!("Wasm linker: {e}"))?;
        // Rust's standard library seeds its HashMap keys from this WASI import in any
        // component that uses one. It is the only WASI function a plugin gets; every other
        // WASI import traps when called.
        for version in [
            "0.2.0", "0.2.1", "0.2.2", "0.2.3", "0.2.4", "0.2.5", "0.2.6", "0.2.7", "0.2.8",
        ] {
            linker
                .instance(&format!("wasi:random/insecure-seed@{version}"))
                .and_then(|mut i| {
                    i.func_wrap("insecure-seed", |_, (): ()| {
                        Ok(((fastrand::u64(..), fastrand::u64(..)),))
                    })
                })
                .map_err(|e| format!("Wasm linker: {e}"))?;
        }
        Ok(PluginHost {
            engine,
            linker,
            metrics: metrics.clone(),
            declared: metrics.declared(),
            pool_size: workers.max(1),
            ticker: OnceLock::new(),
            clock: Instant::now(),
            budget: MemoryBudget::new(crate::config::DEFAULT_PLUGIN_MEMORY_BUDGET),
            upstreams: Default::default(),
            stores: Default::default(),
            observers: Default::default(),
        })
    }

    /// Bounds the linear memory of all plugin instances together (`server.plugin_memory`).
    pub fn with_memory_budget(mut self, bytes: usize) -> Self {
        self.budget = MemoryBudget::new(bytes);
        self
    }

    /// The shared memory budget.
    pub fn memory_budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// Advances the engine's epoch every [`EPOCH_TICK`] from a thread of its own, once any
    /// plugin is loaded. The thread ends with the engine.
    fn start_ticker(&self) {
        self.ticker.get_or_init(|| {
            let weak = self.engine.weak();
            let _ = std::thread::Builder::new()
                .name("fedgate-epoch".into())
                .spawn(move || loop {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                });
        });
    }

    fn compile(&self, bytes: &[u8]) -> Result<Component, String> {
        Component::new(&self.engine, bytes).map_err(|e| compile_error(&e, bytes))
    }

    /// The ABI version, exports and imports of a compiled component; an error when it does
    /// not target this gateway's ABI.
    fn inspect_component(&self, component: &Component) -> Result<Inspection, String> {
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let version = match exports
            .iter()
            .find(|e| e.starts_with("fedgate:plugin/handler"))
        {
            Some(e) if e == abi::HANDLER_EXPORT => abi::VERSION.to_string(),
            Some(e) if e == abi2::HANDLER_EXPORT => abi2::VERSION.to_string(),
            Some(e) => {
                let v = e.rsplit_once('@').map_or("(unversioned)", |(_, v)| v);
                return Err(format!(
                    "built for ABI fedgate:plugin@{v}; this gateway serves fedgate:plugin@{} \
                     and @{} (exports {e})",
                    abi::VERSION,
                    abi2::VERSION
                ));
            }
            None => {
                return Err(format!(
                    "not a fedgate plugin: it exports neither {} nor {} (it exports: {})",
                    abi::HANDLER_EXPORT,
                    abi2::HANDLER_EXPORT,
                    if exports.is_empty() {
                        "nothing".to_string()
                    } else {
                        exports.join(", ")
                    }
                ))
            }
        };
        let trapping_imports = imports
            .iter()
            .filter(|i| {
                !i.starts_with("fedgate:plugin/") && !i.starts_with("wasi:random/insecure-seed")
            })
            .cloned()
            .collect();
        Ok(Inspection {
            version,
            exports,
            imports,
            trapping_imports,
        })
    }

    /// Checks a compiled component targets this gateway's ABI and links it: imports the
    /// gateway does not provide become traps.
    fn link(&self, component: &Component) -> Result<(Pre, Inspection), String> {
        let inspection = self.inspect_component(component)?;
        let component = component.clone();
        let mut linker = self.linker.clone();
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| e.to_string())?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| format!("{e:#}"))?;
        let pre = if inspection.version == abi2::VERSION {
            abi2::PluginPre::new(pre).map(Pre::V2)
        } else {
            abi::PluginPre::new(pre).map(Pre::V1)
        }
        .map_err(|e| format!("{e:#}"))?;
        Ok((pre, inspection))
    }

    /// Compiles and links a component without running it.
    pub fn inspect(&self, bytes: &[u8]) -> Result<Inspection, String> {
        self.link(&self.compile(bytes)?)
            .map(|(_, inspection)| inspection)
    }

    /// Publishes the upstreams of the configuration being loaded to every plugin.
    pub fn set_upstreams(&self, config: &crate::config::Config) {
        self.upstreams.store(Arc::new(
            config
                .upstreams
                .iter()
                .map(|(name, u)| (Arc::from(name.as_str()), u.critical))
                .collect(),
        ));
    }

    /// The store of plugin `name` with `limits`: the one it had, unless its bounds changed.
    fn store_for(&self, name: &str, limits: store::StoreLimits) -> Arc<store::Store> {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = stores.get(name).filter(|s| *s.limits() == limits) {
            return s.clone();
        }
        let f = self.metrics.plugin_families();
        let metrics = store::StoreMetrics::new(
            f.store_entries.with_label_values(&[name]),
            f.store_bytes.with_label_values(&[name]),
            f.store_evictions.with_label_values(&[name, "expired"]),
            f.store_evictions.with_label_values(&[name, "capacity"]),
        );
        let s = Arc::new(store::Store::new(limits, metrics));
        stores.insert(name.to_string(), s.clone());
        s
    }

    /// Opens the compiled-plugin cache directory `dir` for this host's engine.
    pub fn cache(&self, dir: &std::path::Path) -> Result<cache::Cache, String> {
        cache::Cache::open(dir, &self.engine)
    }

    /// Compiles (or, with a cache, loads the machine code of) and starts a plugin: one
    /// instance is created and its `init` must accept the configuration. Slow: call it off
    /// the request path.
    pub fn load(
        &self,
        config: &PluginConfig,
        bytes: &[u8],
        cache: Option<&cache::Cache>,
    ) -> Result<Plugin, String> {
        let digest = digest(bytes);
        let (component, source) = match cache {
            Some(c) => c.component(&self.engine, bytes, &digest)?,
            None => (self.compile(bytes)?, cache::Source::Compiled),
        };
        self.metrics
            .plugin_families()
            .compilations
            .with_label_values(&[config.name.as_str(), source.as_str()])
            .inc();
        let (pre, _) = self.link(&component)?;
        self.start_ticker();
        let name: Arc<str> = config.name.as_str().into();
        let handles = PluginHandles::new(&self.metrics, &name);
        let mut plugin = PluginCore {
            name: name.clone(),
            config: config.clone(),
            digest,
            shared: Arc::new(PluginShared {
                name,
                declared: self.declared.clone(),
                max_series: config.max_series,
                clock: self.clock,
                upstreams: self.upstreams.clone(),
                request_headers: OnceLock::new(),
                store: self.store_for(&config.name, config.store),
                outbound: outbound::Outbound::new(
                    &self.metrics,
                    &config.name,
                    config.outbound.clone(),
                ),
            }),
            pre,
            engine: self.engine.clone(),
            hooks: Registration::default(),
            // One per worker, and one for the observer thread or a health check.
            idle: ArrayQueue::new(self.pool_size + 1),
            // Never earlier than the timeout: whole ticks covering it, plus the one under way.
            deadline_ticks: ticks(config.timeout),
            health_deadline_ticks: ticks(config.health_check_timeout),
            observe_deadline_ticks: ticks(config.observe_timeout),
            streaks: Default::default(),
            log_window: AtomicU64::new(0),
            clock: self.clock,
            handles,
            budget: self.budget.clone(),
        };
        let instance = plugin.instantiate().map_err(|f| f.reason)?;
        plugin.hooks = instance.hooks.clone();
        let _ = plugin
            .shared
            .request_headers
            .set(plugin.hooks.request_headers.clone());
        let _ = plugin.idle.push(instance);
        let core = Arc::new(plugin);
        let observer = self.start_observer(&core)?;
        Ok(Plugin { core, observer })
    }

    /// Starts the observer thread of a plugin that registered `observe` or `on-tick`.
    fn start_observer(
        &self,
        core: &Arc<PluginCore>,
    ) -> Result<Option<observer::Observer<Arc<finished::Finished>>>, String> {
        let hooks = &core.hooks;
        if !hooks.observe && hooks.tick.is_none() {
            return Ok(None);
        }
        let f = self.metrics.plugin_families();
        let name = &*core.name;
        let metrics = observer::ObserverMetrics {
            dropped: f.observed.with_label_values(&[name, "dropped"]),
            delivered: f.observed.with_label_values(&[name, "delivered"]),
            batches: f.observer_batches.with_label_values(&[name]),
            queued: f.observer_queued.with_label_values(&[name]),
        };
        let deliver = {
            let core = core.clone();
            Box::new(move |batch: Vec<Arc<finished::Finished>>| core.observe(&batch))
                as Box<dyn FnMut(Vec<Arc<finished::Finished>>) + Send>
        };
        let tick = hooks.tick.map(|every| {
            let core = core.clone();
            (
                every,
                Box::new(move || core.tick()) as Box<dyn FnMut() + Send>,
            )
        });
        let o = observer::Observer::start(
            name,
            core.config.observe,
            metrics,
            observer::Hooks { deliver, tick },
        )
        .map_err(|e| format!("observer thread: {e}"))?;
        let mut running = self.observers.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|h| !h.is_done());
        running.push(o.handle().clone());
        Ok(Some(o))
    }

    /// Stops every observer thread, each after it has delivered what is queued, and waits
    /// up to `timeout` for them (blocking: call it off the async workers, once requests
    /// have drained). Returns whether all of them ended in time.
    pub fn close_observers(&self, timeout: Duration) -> bool {
        let running =
            std::mem::take(&mut *self.observers.lock().unwrap_or_else(|e| e.into_inner()));
        for h in &running {
            h.stop();
        }
        let deadline = Instant::now() + timeout;
        while !running.iter().all(|h| h.is_done()) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }
}

/// A compilation failure, saying what to do when the file is a core module.
fn compile_error(e: &wasmtime::Error, bytes: &[u8]) -> String {
    let e = format!("{e:#}");
    if e.contains("component") || bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
        format!("not a Wasm component: {e} (build plugins for wasm32-wasip2)")
    } else {
        format!("not a Wasm component: {e}")
    }
}

/// Epoch ticks for a deadline: never earlier than `timeout`, whole ticks covering it plus
/// the one under way.
fn ticks(timeout: Duration) -> u64 {
    timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1
}

/// SHA-256 of a component file: a reload recompiles a plugin only when this changes.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// The running configuration's upstreams by name, and whether each is critical.
pub(crate) type UpstreamList = Arc<arc_swap::ArcSwap<Vec<(Arc<str>, bool)>>>;

/// What every instance of one plugin shares.
#[derive(Debug)]
pub struct PluginShared {
    pub(crate) name: Arc<str>,
    pub(crate) declared: Arc<Declared>,
    pub(crate) max_series: usize,
    /// The host's clock: ABI 0.2.0's `clocks.monotonic-now` counts from it.
    pub(crate) clock: Instant,
    pub(crate) upstreams: UpstreamList,
    /// The request fields the first instance's registration named.
    pub(crate) request_headers: OnceLock<Vec<HeaderName>>,
    /// The plugin's key-value store (ABI 0.2.0), shared by all its instances.
    pub(crate) store: Arc<store::Store>,
    /// Outbound HTTP from `on-tick` and `observe` (ABI 0.2.0).
    pub(crate) outbound: outbound::Outbound,
}

impl PluginShared {
    /// The request fields the plugin registered (ABI 0.2.0), in their order.
    pub(crate) fn request_headers(&self) -> &[HeaderName] {
        self.request_headers.get().map_or(&[], |v| v.as_slice())
    }
}

/// Pre-resolved metric handles of one plugin.
#[derive(Debug)]
struct PluginHandles {
    invocations: Vec<IntCounter>,
    duration: Vec<Histogram>,
    memory: IntGauge,
}

impl PluginHandles {
    fn new(metrics: &Metrics, plugin: &str) -> Self {
        let families = metrics.plugin_families();
        let mut invocations = Vec::with_capacity(Hook::ALL.len() * Outcome::ALL.len());
        for h in Hook::ALL {
            for o in Outcome::ALL {
                invocations.push(families.invocations.with_label_values(&[
                    plugin,
                    h.as_str(),
                    o.as_str(),
                ]));
            }
        }
        PluginHandles {
            invocations,
            duration: Hook::ALL
                .iter()
                .map(|h| families.duration.with_label_values(&[plugin, h.as_str()]))
                .collect(),
            memory: families.memory.with_label_values(&[plugin]),
        }
    }

    fn count(&self, hook: Hook, outcome: Outcome) {
        self.invocations[hook as usize * Outcome::ALL.len() + outcome as usize].inc();
    }
}

/// Caps an instance's linear memory, takes it from the shared budget and reports its size
/// to the plugin's memory gauge.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    cap: usize,
    used: usize,
    gauge: IntGauge,
    exceeded: bool,
    budget: Arc<MemoryBudget>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.exceeded = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit exceeded: the instance asked for {desired} bytes, its cap is {}",
                self.cap
            )));
        }
        let grown = desired.saturating_sub(current);
        if !self.budget.take(grown) {
            self.exceeded = true;
            return Err(wasmtime::Error::msg(format!(
                "plugin memory budget exhausted: the instance asked for {grown} more bytes, \
                 all plugins together may hold {}",
                self.budget.max
            )));
        }
        self.used += grown;
        self.gauge.add(grown as i64);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.gauge.sub(self.used as i64);
        self.budget.give_back(self.used);
    }
}

/// One hook's consecutive failures and backoff.
#[derive(Debug, Default)]
struct Streak {
    failures: Consecutive,
    /// Backoffs since the last successful call.
    trips: AtomicU32,
    /// Milliseconds since the plugin's clock before which calls are skipped; 0: none.
    until: AtomicU64,
}

/// A hook's backoff: [`BASE_BACKOFF`], doubling on each trip without a successful call in
/// between, up to [`MAX_BACKOFF`].
const BACKOFF: Backoff = Backoff {
    base: BASE_BACKOFF,
    max: MAX_BACKOFF,
    growth: Growth::Doubling,
    jitter: 0.0,
};

impl Streak {
    fn clear(&self) {
        self.failures.success();
        if self.until.load(Ordering::Relaxed) != 0 {
            self.trips.store(0, Ordering::Relaxed);
            self.until.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failure at `now_ms`; past [`FAILURES_BEFORE_BACKOFF`] in a row, starts a
    /// backoff and returns its length.
    fn failed(&self, now_ms: u64) -> Option<Duration> {
        if self.failures.failure() < FAILURES_BEFORE_BACKOFF {
            return None;
        }
        self.failures.reset();
        let trip = self.trips.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let d = BACKOFF.period(trip);
        self.until
            .store(now_ms + d.as_millis() as u64, Ordering::Relaxed);
        Some(d)
    }
}

struct Instance {
    store: Store<HostState>,
    bindings: Bindings,
    hooks: Registration,
}

/// A linked component, ready to instantiate, by ABI version.
enum Pre {
    V1(abi::PluginPre<HostState>),
    V2(abi2::PluginPre<HostState>),
}

/// An instance's exports, by ABI version.
enum Bindings {
    V1(abi::Plugin),
    V2(abi2::Plugin),
}

/// Most request fields a plugin may register (ABI 0.2.0).
pub const MAX_REQUEST_HEADERS: usize = 32;

/// What a plugin's `init` registered: the hooks to call and what they read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Registration {
    on_request: bool,
    on_response: bool,
    health_check: bool,
    observe: bool,
    /// `on-tick` and its interval.
    tick: Option<Duration>,
    request_headers: Vec<HeaderName>,
}

/// The shortest `on-tick` interval.
pub const MIN_TICK: Duration = Duration::from_millis(100);

impl Registration {
    fn v1(hooks: abi::Hooks) -> Registration {
        Registration {
            on_request: hooks.contains(abi::Hooks::ON_REQUEST),
            on_response: hooks.contains(abi::Hooks::ON_RESPONSE),
            health_check: hooks.contains(abi::Hooks::HEALTH_CHECK),
            observe: false,
            tick: None,
            request_headers: Vec::new(),
        }
    }

    fn v2(r: &abi2::Registration) -> Result<Registration, String> {
        use abi2::Hooks as H;
        let tick = match (r.hooks.contains(H::ON_TICK), r.tick_interval_ms) {
            (false, _) => None,
            (true, None) => {
                return Err("registered on-tick without a tick-interval-ms".into());
            }
            (true, Some(ms)) => {
                let every = Duration::from_millis(ms.into());
                if every < MIN_TICK {
                    return Err(format!(
                        "registered a tick interval of {ms} ms; the shortest is {} ms",
                        MIN_TICK.as_millis()
                    ));
                }
                Some(every)
            }
        };
        if r.request_headers.len() > MAX_REQUEST_HEADERS {
            return Err(format!(
                "registered {} request fields, at most {MAX_REQUEST_HEADERS} are allowed",
                r.request_headers.len()
            ));
        }
        let request_headers = r
            .request_headers
            .iter()
            .map(|n| {
                HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| format!("registered request field {n:?} is not a field name"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Registration {
            on_request: r.hooks.contains(H::ON_REQUEST),
            on_response: r.hooks.contains(H::ON_RESPONSE),
            health_check: r.hooks.contains(H::HEALTH_CHECK),
            observe: r.hooks.contains(H::OBSERVE),
            tick,
            request_headers,
        })
    }
}

/// What an inline `on-request` decided, whatever the ABI version.
enum Verdict {
    Continue,
    Edit {
        add: Vec<(String, String)>,
        set: Vec<(String, String)>,
        remove: Vec<String>,
        /// Set by 0.2.0 plugins, which may not touch signature-covered fields.
        strict: bool,
    },
    Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        /// The lowest status the plugin's ABI allows (0.1.0 denials: 400).
        lowest: u16,
        /// The longest body sent.
        max_body: usize,
    },
}

impl Verdict {
    fn v1(v: abi::Verdict) -> Verdict {
        match v {
            abi::Verdict::Continue => Verdict::Continue,
            abi::Verdict::ContinueWith(add) => Verdict::Edit {
                add: add.into_iter().map(|h| (h.name, h.value)).collect(),
                set: Vec::new(),
                remove: Vec::new(),
                strict: false,
            },
            abi::Verdict::Deny(d) => Verdict::Reply {
                status: d.status,
                headers: d.headers.into_iter().map(|h| (h.name, h.value)).collect(),
                body: d.body.into_bytes(),
                lowest: 400,
                max_body: MAX_DENIAL_BODY,
            },
        }
    }

    fn v2(v: abi2::Verdict) -> Verdict {
        let pairs = |h: Vec<abi2::Header>| h.into_iter().map(|h| (h.name, h.value)).collect();
        match v {
            abi2::Verdict::Continue => Verdict::Continue,
            abi2::Verdict::Edit(e) => Verdict::Edit {
                add: pairs(e.add),
                set: pairs(e.set),
                remove: e.remove,
                strict: true,
            },
            abi2::Verdict::Reply(r) => Verdict::Reply {
                status: r.status,
                headers: pairs(r.headers),
                body: r.body,
                lowest: 200,
                max_body: MAX_REPLY_BODY,
            },
        }
    }
}

/// Why a call did not give a result.
#[derive(Debug)]
pub struct Failure {
    pub outcome: Outcome,
    /// What stopped the call, for the log: `memory`, `deadline`, `trap`,
    /// `unprovided_import`, `init`, `error` or `backoff`.
    pub cause: &'static str,
    pub reason: String,
}

/// One loaded plugin: what calls it, and its observer thread when it has one. Dropping it
/// (once no route and no request in flight holds it) stops the thread after it has
/// delivered everything queued.
pub struct Plugin {
    core: Arc<PluginCore>,
    observer: Option<observer::Observer<Arc<finished::Finished>>>,
}

impl std::ops::Deref for Plugin {
    type Target = PluginCore;

    fn deref(&self) -> &PluginCore {
        &self.core
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.core.fmt(f)
    }
}

impl Plugin {
    /// The queue finished exchanges are pushed onto, for a plugin with `observe`.
    pub fn observe_queue(&self) -> Option<&Arc<observer::Queue<Arc<finished::Finished>>>> {
        self.observer
            .as_ref()
            .filter(|_| self.core.hooks.observe)
            .map(|o| o.queue())
    }
}

/// What calls one loaded plugin: its compiled component, its idle instances, its failure
/// streaks and metric handles. Shared by the plugin and its observer thread.
pub struct PluginCore {
    pub name: Arc<str>,
    pub config: PluginConfig,
    /// SHA-256 of the component file it was compiled from.
    pub digest: [u8; 32],
    shared: Arc<PluginShared>,
    pre: Pre,
    engine: Engine,
    hooks: Registration,
    idle: ArrayQueue<Instance>,
    deadline_ticks: u64,
    /// The same for health-check calls, which run on blocking threads.
    health_deadline_ticks: u64,
    /// The same for `observe` and `on-tick`, which run on the observer thread.
    observe_deadline_ticks: u64,
    /// Failure streaks and backoffs, one per hook ([`Hook`] as index): a hook that keeps
    /// failing is skipped while the others keep running. A failed instantiation (the
    /// `init` streak) backs off every hook.
    streaks: [Streak; 6],
    /// Second (since `clock`) and count of failure log lines, packed: second << 16 | count.
    log_window: AtomicU64,
    clock: Instant,
    handles: PluginHandles,
    budget: Arc<MemoryBudget>,
}

impl std::fmt::Debug for PluginCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

impl PluginCore {
    pub fn wants_request(&self) -> bool {
        self.hooks.on_request
    }

    pub fn wants_response(&self) -> bool {
        self.hooks.on_response
    }

    pub fn has_health_check(&self) -> bool {
        self.hooks.health_check
    }

    /// Whether the plugin registered `observe`.
    pub fn observes(&self) -> bool {
        self.hooks.observe
    }

    /// Whether the plugin registered `on-tick`.
    pub fn ticks(&self) -> bool {
        self.hooks.tick.is_some()
    }

    /// The plugin's key-value store, for ABI 0.2.0 plugins (0.1.0 has no store import).
    pub fn store(&self) -> Option<&Arc<store::Store>> {
        matches!(self.pre, Pre::V2(_)).then_some(&self.shared.store)
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Whether calls of `hook` are being skipped after repeated failures (of that hook, or
    /// of instantiating the plugin). A hook that is not backing off answers without reading
    /// the clock.
    fn hook_backed_off(&self, hook: Hook) -> bool {
        let until = self.streaks[hook as usize]
            .until
            .load(Ordering::Relaxed)
            .max(
                self.streaks[Hook::Init as usize]
                    .until
                    .load(Ordering::Relaxed),
            );
        until != 0 && self.now_ms() < until
    }

    /// Whether any hook is being skipped after repeated failures.
    pub fn backed_off(&self) -> bool {
        Hook::ALL.iter().any(|h| self.hook_backed_off(*h))
    }

    /// A new instance with `init` run; the init call is counted and timed when it succeeds
    /// (failures are counted by the caller, which knows whether the plugin is serving yet).
    fn instantiate(&self) -> Result<Instance, Failure> {
        let started = Instant::now();
        let limiter = MemoryLimiter {
            cap: self.config.memory_limit,
            used: 0,
            gauge: self.handles.memory.clone(),
            exceeded: false,
            budget: self.budget.clone(),
        };
        let mut store = Store::new(&self.engine, HostState::new(self.shared.clone(), limiter));
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(self.deadline_ticks);
        let config = &self.config.config_json;
        let result = match &self.pre {
            Pre::V1(pre) => pre.instantiate(&mut store).and_then(|b| {
                store.data_mut().hook = Hook::Init.as_str();
                let r = b.fedgate_plugin_handler().call_init(&mut store, config)?;
                Ok((Bindings::V1(b), r.map(Registration::v1)))
            }),
            Pre::V2(pre) => pre.instantiate(&mut store).and_then(|b| {
                store.data_mut().hook = Hook::Init.as_str();
                let r = b.fedgate_plugin_handler().call_init(&mut store, config)?;
                Ok((Bindings::V2(b), r.and_then(|r| Registration::v2(&r))))
            }),
        };
        match result {
            Ok((bindings, Ok(hooks))) => {
                self.handles.duration[Hook::Init as usize].observe(started.elapsed().as_secs_f64());
                self.handles.count(Hook::Init, Outcome::Ok);
                Ok(Instance {
                    store,
                    bindings,
                    hooks,
                })
            }
            Ok((_, Err(message))) => Err(Failure {
                outcome: Outcome::Error,
                cause: "init",
                reason: format!("init refused the configuration: {message}"),
            }),
            Err(e) => Err(classify(
                &e,
                store.data().limiter.exceeded,
                self.config.timeout,
            )),
        }
    }

    /// Runs one hook on an idle (or new) instance with the exchange lent to it.
    fn call<R>(
        &self,
        hook: Hook,
        exchange: &mut Box<Exchange>,
        f: impl FnOnce(&Bindings, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        if self.hook_backed_off(hook) {
            self.handles.count(hook, Outcome::Skipped);
            return Err(Failure {
                outcome: Outcome::Skipped,
                cause: "backoff",
                reason: "backed off after repeated failures".into(),
            });
        }
        // Request-path hooks are timed one call in DURATION_SAMPLE (their counts stay
        // exact): two clock reads and a histogram update are a fair part of an empty call.
        let started = (hook.background()
            || matches!(hook, Hook::HealthCheck)
            || fastrand::u32(..).is_multiple_of(DURATION_SAMPLE))
        .then(Instant::now);
        let mut instance = match self.idle.pop() {
            Some(i) => i,
            None => match self.instantiate() {
                Ok(i) => i,
                Err(failure) => {
                    self.failed(Hook::Init, &failure, Some(&**exchange));
                    return Err(failure);
                }
            },
        };
        let store = &mut instance.store;
        let (ticks, timeout) = match hook {
            Hook::HealthCheck => (self.health_deadline_ticks, self.config.health_check_timeout),
            h if h.background() => (self.observe_deadline_ticks, self.config.observe_timeout),
            _ => (self.deadline_ticks, self.config.timeout),
        };
        store.set_epoch_deadline(ticks);
        let data = store.data_mut();
        data.hook = hook.as_str();
        std::mem::swap(&mut data.exchange, exchange);
        let result = f(&instance.bindings, store);
        std::mem::swap(&mut store.data_mut().exchange, exchange);
        if let Some(started) = started {
            self.handles.duration[hook as usize].observe(started.elapsed().as_secs_f64());
        }
        match result {
            Ok(r) => {
                self.succeeded(hook);
                // A full pool (more instances than workers, briefly, after a burst of
                // health checks) drops the spare.
                let _ = self.idle.push(instance);
                Ok(r)
            }
            Err(e) => {
                let failure = classify(&e, store.data().limiter.exceeded, timeout);
                // The instance is poisoned: dropped here, replaced on the next call.
                drop(instance);
                self.failed(hook, &failure, Some(&**exchange));
                Err(failure)
            }
        }
    }

    /// Clears the hook's failure streak and any past backoff (and, since an instance
    /// exists, the instantiation's). Reads first: a plugin that has not failed costs no
    /// writes to memory shared with the other workers.
    fn succeeded(&self, hook: Hook) {
        self.streaks[hook as usize].clear();
        self.streaks[Hook::Init as usize].clear();
    }

    /// Counts and logs a failure, and backs the hook off after too many in a row. The log
    /// line names the reason and, for a request's hooks, the request (id, route, path).
    fn failed(&self, hook: Hook, failure: &Failure, exchange: Option<&Exchange>) {
        self.handles.count(hook, failure.outcome);
        let backoff = self.streaks[hook as usize].failed(self.now_ms());
        let request = exchange.filter(|e| !e.route.is_empty());
        let request_id = request
            .and_then(|e| e.request_id.as_ref())
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let route = request.map_or("", |e| &*e.route);
        let path = request.map_or("", |e| e.uri.path());
        // A hook backed off is always logged; other failures within the log budget.
        if backoff.is_none() && !self.may_log() {
            return;
        }
        let policy = match self.config.failure {
            FailurePolicy::Open => "fail_open",
            FailurePolicy::Closed => "fail_closed",
        };
        tracing::warn!(
            plugin = %self.name,
            hook = hook.as_str(),
            result = failure.outcome.as_str(),
            cause = failure.cause,
            reason = %failure.reason,
            request_id,
            route,
            path,
            backoff_ms = backoff.map(|d| d.as_millis() as u64),
            policy = backoff.is_none().then_some(policy),
            "{}",
            if backoff.is_some() {
                "plugin hook failed repeatedly; skipping it for the backoff period"
            } else {
                "plugin call failed"
            }
        );
    }

    /// At most [`FAILURE_LOGS_PER_SECOND`] failure lines per second per plugin.
    fn may_log(&self) -> bool {
        let second = self.clock.elapsed().as_secs();
        let w = self.log_window.load(Ordering::Relaxed);
        let (s, count) = (w >> 16, w & 0xffff);
        let next = if s == second {
            if count >= FAILURE_LOGS_PER_SECOND {
                return false;
            }
            w + 1
        } else {
            (second << 16) | 1
        };
        self.log_window
            .compare_exchange(w, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Phase 7 for this plugin.
    fn on_request(&self, exchange: &mut Box<Exchange>) -> Result<Verdict, Failure> {
        self.call(Hook::OnRequest, exchange, |b, s| match b {
            Bindings::V1(b) => b
                .fedgate_plugin_handler()
                .call_on_request(s, Resource::new_borrow(0))
                .map(Verdict::v1),
            Bindings::V2(b) => b
                .fedgate_plugin_handler()
                .call_on_request(s, Resource::new_borrow(0))
                .map(Verdict::v2),
        })
    }

    /// Phase 10 for this plugin: a 0.2.0 plugin's edit is applied to the response head.
    fn on_response(&self, exchange: &mut Box<Exchange>) {
        let edit = self.call(Hook::OnResponse, exchange, |b, s| match b {
            Bindings::V1(b) => b
                .fedgate_plugin_handler()
                .call_on_response(s, Resource::new_borrow(0), Resource::new_borrow(0))
                .map(|()| None),
            Bindings::V2(b) => b
                .fedgate_plugin_handler()
                .call_on_response(s, Resource::new_borrow(0), Resource::new_borrow(0))
                .map(Some),
        });
        let Ok(edit) = edit else { return };
        let skipped = match (edit, exchange.response.as_mut()) {
            (Some(edit), Some(view)) => edit_response(&mut view.headers, edit),
            _ => 0,
        };
        if skipped > 0 {
            self.handles.count(Hook::OnResponse, Outcome::Error);
            if self.may_log() {
                tracing::warn!(plugin = %self.name, skipped, "plugin asked for response field changes that cannot be made");
            }
        } else {
            self.handles.count(Hook::OnResponse, Outcome::Ok);
        }
    }

    /// `observe` with one batch of finished exchanges, lowered column by column with the
    /// fields this plugin registered (see `finished::BatchBuilder`). On the observer
    /// thread.
    fn observe(&self, batch: &[Arc<finished::Finished>]) {
        let registered = self.shared.request_headers();
        let mut lowered = finished::BatchBuilder::with_capacity(batch.len());
        for f in batch {
            lowered.push(f, registered);
        }
        let lowered = lowered.finish();
        let result = self.call(Hook::Observe, &mut Box::default(), |b, s| match b {
            Bindings::V2(b) => b.fedgate_plugin_handler().call_observe(s, &lowered),
            Bindings::V1(_) => Ok(()),
        });
        if result.is_ok() {
            self.handles.count(Hook::Observe, Outcome::Ok);
        }
    }

    /// `on-tick`, on the observer thread.
    fn tick(&self) {
        let result = self.call(Hook::OnTick, &mut Box::default(), |b, s| match b {
            Bindings::V2(b) => b.fedgate_plugin_handler().call_on_tick(s),
            Bindings::V1(_) => Ok(()),
        });
        if result.is_ok() {
            self.handles.count(Hook::OnTick, Outcome::Ok);
        }
    }

    /// The plugin's health: its `health-check` on every idle instance (or a new one), the
    /// worst report counting. `None` when the plugin has no health check.
    pub fn health(&self) -> Option<(HealthStatus, String)> {
        if !self.has_health_check() {
            return self.backed_off().then(|| {
                (
                    HealthStatus::Degraded,
                    "backed off after repeated failures".into(),
                )
            });
        }
        let mut worst: Option<(HealthStatus, String)> = None;
        let rounds = self.idle.len().max(1);
        let mut exchange = Box::<Exchange>::default();
        for _ in 0..rounds {
            let report = match self.call(Hook::HealthCheck, &mut exchange, |b, s| match b {
                Bindings::V1(b) => b.fedgate_plugin_handler().call_health_check(s),
                Bindings::V2(b) => {
                    b.fedgate_plugin_handler()
                        .call_health_check(s)
                        .map(|r| abi::HealthReport {
                            status: match r.status {
                                abi2::HealthStatus::Healthy => HealthStatus::Healthy,
                                abi2::HealthStatus::Degraded => HealthStatus::Degraded,
                                abi2::HealthStatus::Unhealthy => HealthStatus::Unhealthy,
                            },
                            message: r.message,
                        })
                }
            }) {
                Ok(r) => {
                    self.handles.count(Hook::HealthCheck, Outcome::Ok);
                    (r.status, r.message)
                }
                Err(f) if f.outcome == Outcome::Skipped => (HealthStatus::Degraded, f.reason),
                Err(f) => (
                    HealthStatus::Unhealthy,
                    format!("health check failed ({}): {}", f.outcome.as_str(), f.reason),
                ),
            };
            if worst.as_ref().is_none_or(|w| rank(report.0) > rank(w.0)) {
                worst = Some(report);
            }
        }
        worst
    }
}

fn rank(s: HealthStatus) -> u8 {
    match s {
        HealthStatus::Healthy => 0,
        HealthStatus::Degraded => 1,
        HealthStatus::Unhealthy => 2,
    }
}

/// Sorts a failed call into trap, timeout or error, with its cause and a one-line reason
/// for the log (never a raw backtrace).
fn classify(e: &wasmtime::Error, memory_exceeded: bool, timeout: Duration) -> Failure {
    let failure = |outcome, cause, reason| Failure {
        outcome,
        cause,
        reason,
    };
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        if *trap == wasmtime::Trap::Interrupt {
            return failure(
                Outcome::Timeout,
                "deadline",
                format!("deadline of {timeout:?} exceeded"),
            );
        }
        if memory_exceeded {
            return failure(Outcome::Trap, "memory", memory_reason(e));
        }
        return failure(Outcome::Trap, "trap", trap.to_string());
    }
    if let Some(misuse) = e.downcast_ref::<abi::Misuse>() {
        return failure(Outcome::Trap, "trap", misuse.to_string());
    }
    if memory_exceeded {
        return failure(Outcome::Trap, "memory", memory_reason(e));
    }
    // `define_unknown_imports_as_traps` makes a call of an import the gateway does not
    // provide fail with this message: a trap of the plugin's making, as the guide says.
    if let Some(c) = e
        .chain()
        .find(|c| c.to_string().starts_with("unknown import: "))
    {
        let c = c.to_string();
        let name = c.split('`').nth(1).unwrap_or("an import").to_string();
        return failure(
            Outcome::Trap,
            "unprovided_import",
            format!("called {name}, which the gateway does not provide"),
        );
    }
    failure(
        Outcome::Error,
        "error",
        e.chain()
            .last()
            .map_or_else(|| e.to_string(), |c| c.to_string()),
    )
}

/// The limiter's own message ("memory limit exceeded: ..." or "plugin memory budget
/// exhausted: ..."), not the wasm backtrace around it.
fn memory_reason(e: &wasmtime::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .find(|m| m.starts_with("memory limit exceeded") || m.starts_with("plugin memory budget"))
        .unwrap_or_else(|| "memory limit exceeded".to_string())
}

/// The plugins of one route, in the order they run.
#[derive(Debug, Default)]
pub struct Chain {
    plugins: Vec<Arc<Plugin>>,
    request: bool,
    response: bool,
    observers: Option<Arc<finished::Observers>>,
}

impl Chain {
    /// The chain of route `route`, which forwards to `upstream`.
    pub fn new(plugins: Vec<Arc<Plugin>>, route: &Arc<str>, upstream: &Arc<str>) -> Self {
        Chain {
            request: plugins.iter().any(|p| p.wants_request()),
            response: plugins.iter().any(|p| p.wants_response()),
            observers: finished::Observers::of(&plugins, route, upstream),
            plugins,
        }
    }

    /// The route's observing plugins, if it has any.
    pub fn observers(&self) -> Option<&Arc<finished::Observers>> {
        self.observers.as_ref()
    }

    /// Whether any plugin has an `on-request` hook.
    pub fn wants_request(&self) -> bool {
        self.request
    }

    /// Whether any plugin has an `on-response` hook.
    pub fn wants_response(&self) -> bool {
        self.response
    }

    /// Phase 7: each plugin in order; the first denial (or failure of a `fail_closed`
    /// plugin) ends it.
    pub fn on_request(&self, exchange: &mut Box<Exchange>) -> Decision {
        for p in self.plugins.iter().filter(|p| p.wants_request()) {
            match p.on_request(exchange) {
                Ok(Verdict::Continue) => p.handles.count(Hook::OnRequest, Outcome::Ok),
                Ok(Verdict::Edit {
                    add,
                    set,
                    remove,
                    strict,
                }) => {
                    let bad = edit_request(&mut exchange.headers, add, set, remove, strict);
                    if bad > 0 {
                        p.handles.count(Hook::OnRequest, Outcome::Error);
                        if p.may_log() {
                            tracing::warn!(plugin = %p.name, skipped = bad, "plugin asked for request field changes that cannot be made");
                        }
                    } else {
                        p.handles.count(Hook::OnRequest, Outcome::Ok);
                    }
                }
                Ok(Verdict::Reply {
                    status,
                    headers,
                    body,
                    lowest,
                    max_body,
                }) => {
                    p.handles.count(Hook::OnRequest, Outcome::Deny);
                    return Decision::Deny(denial(p, status, headers, body, lowest, max_body));
                }
                Err(_) => {
                    if p.config.failure == FailurePolicy::Closed {
                        return Decision::Failed;
                    }
                }
            }
        }
        Decision::Continue
    }

    /// Phase 10: each plugin in order. Failures are counted and logged, and change nothing.
    pub fn on_response(&self, exchange: &mut Box<Exchange>) {
        for p in self.plugins.iter().filter(|p| p.wants_response()) {
            p.on_response(exchange);
        }
    }
}

/// A field a plugin may add to the forwarded request: valid, and neither hop-by-hop nor
/// `host`.
fn addable(name: &str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    Some((editable(name, false)?, HeaderValue::from_str(value).ok()?))
}

/// Whether a field is hop-by-hop: never a plugin's to add or remove.
fn hop_by_hop(n: &HeaderName) -> bool {
    !matches!(
        crate::headers::hop(n.as_str().as_bytes()),
        crate::headers::Hop::EndToEnd
    )
}

/// Fields no 0.2.0 plugin may add, replace or remove in a forwarded request: framing, and
/// what federation signatures cover, so a plugin can neither break a signature the
/// upstream checks again nor forge one.
const PROTECTED: [&str; 7] = [
    "content-length",
    "transfer-encoding",
    "date",
    "digest",
    "content-digest",
    "signature",
    "signature-input",
];

/// A field name a plugin may touch: not hop-by-hop, not `host`, and (`strict`, ABI 0.2.0)
/// not protected.
fn editable(name: &str, strict: bool) -> Option<HeaderName> {
    let n = HeaderName::from_bytes(name.as_bytes()).ok()?;
    if n == http::header::HOST || hop_by_hop(&n) || (strict && PROTECTED.contains(&n.as_str())) {
        return None;
    }
    Some(n)
}

/// Applies a plugin's request edit: removals, then replacements, then additions. Returns
/// how many of its entries were refused (invalid or protected names, invalid values).
fn edit_request(
    headers: &mut HeaderMap,
    add: Vec<(String, String)>,
    set: Vec<(String, String)>,
    remove: Vec<String>,
    strict: bool,
) -> usize {
    let mut bad = 0;
    for name in remove {
        match editable(&name, strict) {
            Some(n) => {
                headers.remove(n);
            }
            None => bad += 1,
        }
    }
    for (name, value) in set {
        match (editable(&name, strict), HeaderValue::from_str(&value)) {
            (Some(n), Ok(v)) => {
                headers.insert(n, v);
            }
            _ => bad += 1,
        }
    }
    for (name, value) in add {
        match (editable(&name, strict), HeaderValue::from_str(&value)) {
            (Some(n), Ok(v)) => {
                headers.append(n, v);
            }
            _ => bad += 1,
        }
    }
    bad
}

/// Applies a 0.2.0 plugin's response edit: removals, then additions; framing and
/// hop-by-hop fields are refused. Returns how many entries were refused.
fn edit_response(headers: &mut HeaderMap, edit: abi2::ResponseEdit) -> usize {
    let allowed = |name: &str| {
        let n = HeaderName::from_bytes(name.as_bytes()).ok()?;
        let framing = n == http::header::CONTENT_LENGTH || n == http::header::TRANSFER_ENCODING;
        (!framing && !hop_by_hop(&n)).then_some(n)
    };
    let mut bad = 0;
    for name in edit.remove {
        match allowed(&name) {
            Some(n) => {
                headers.remove(n);
            }
            None => bad += 1,
        }
    }
    for h in edit.add {
        match (allowed(&h.name), HeaderValue::from_str(&h.value)) {
            (Some(n), Ok(v)) => {
                headers.append(n, v);
            }
            _ => bad += 1,
        }
    }
    bad
}

fn denial(
    p: &Plugin,
    status: u16,
    fields: Vec<(String, String)>,
    mut body: Vec<u8>,
    lowest: u16,
    max_body: usize,
) -> Denial {
    let status = match StatusCode::from_u16(status) {
        Ok(s) if (lowest..600).contains(&status) => s,
        _ => {
            p.handles.count(Hook::OnRequest, Outcome::Error);
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    let mut headers = HeaderMap::new();
    for (name, value) in fields {
        if let Some((n, v)) = addable(&name, &value) {
            if n != http::header::CONTENT_LENGTH {
                headers.append(n, v);
            }
        }
    }
    if !headers.contains_key(http::header::CONTENT_TYPE) {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    body.truncate(max_body);
    Denial {
        plugin: p.name.clone(),
        status,
        headers,
        body: Bytes::from(body),
    }
}
