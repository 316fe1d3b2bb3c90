//! A running gateway: listeners, the admin server, the current `Runtime` and its reloads,
//! and graceful drain. `main` drives it from signals; tests drive it directly.
//!
//! Reload = validate, diff, swap, keep state: a file that fails validation (or whose
//! upstreams cannot be built) leaves the running runtime untouched and is counted as
//! `fedgate_config_reloads_total{result="error"}`.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::diff::{restart_only_values, ListenerChanges};
use crate::config::{self, Config};
use crate::config::{ConfigDiff, RESTART_ONLY};
use crate::metrics::Metrics;
use crate::plugin::PluginHost;
use crate::runtime::{load_plugins, HandleCache, Previous, Runtime};
use crate::server::{Listener, Running, Settings};

/// State shared by listeners, the admin server and the reloader.
#[derive(Debug)]
pub struct Shared {
    state: ArcSwap<Runtime>,
    metrics: Metrics,
    started: Instant,
    ready: AtomicBool,
    draining: AtomicBool,
    config_path: Option<PathBuf>,
    reload: tokio::sync::Mutex<ReloadState>,
    plugins: Arc<PluginHost>,
    /// Where the listeners and the admin server are bound now (a reload may move them).
    addresses: ArcSwap<Addresses>,
}

#[derive(Debug, Clone)]
struct Addresses {
    listeners: Vec<(String, SocketAddr)>,
    admin: SocketAddr,
}

#[derive(Debug)]
struct ReloadState {
    cache: HandleCache,
    /// Hash of the file text last applied or rejected, so the watcher reacts to changes only.
    last_seen: Option<u64>,
    /// The serving listeners, in the order of the configuration that started them.
    listeners: Vec<Running>,
    admin: Option<AdminServer>,
    /// Watches every connection of every listener; taken by the drain.
    graceful: Option<Arc<crate::server::Drain>>,
    /// The process-wide settings the process started with (see [`RESTART_ONLY`]).
    started_with: [String; RESTART_ONLY.len()],
}

/// The running admin server.
#[derive(Debug)]
struct AdminServer {
    /// The configured address (port 0 stays 0 here; `local_addr` has the bound one).
    address: SocketAddr,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl AdminServer {
    fn start(socket: std::net::TcpListener, address: SocketAddr, shared: Arc<Shared>) -> Self {
        let local_addr = socket.local_addr().unwrap_or(address);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(crate::admin::serve(socket, shared, stop_rx));
        tracing::info!(address = %local_addr, "admin listening");
        AdminServer {
            address,
            local_addr,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// What a reload does to one listener of the new configuration.
enum Step {
    /// Keep the running listener at this index (same address): new settings only.
    Keep(usize, Settings),
    /// A listener bound for this reload, started once it commits.
    Start(String, Listener),
}

/// Builds the settings of the listeners the reload keeps (which the diff decides, see
/// [`ListenerChanges`]) and binds the new ones, before anything changes: a listener that
/// cannot be bound (or whose certificates do not load) rejects the reload.
fn plan_listeners(
    changes: &ListenerChanges,
    wanted: &[config::ListenerConfig],
    metrics: &Metrics,
) -> Result<Vec<Step>, String> {
    wanted
        .iter()
        .zip(&changes.kept)
        .map(|(l, kept)| {
            Ok(match kept {
                Some(i) => Step::Keep(*i, Settings::new(l, metrics)?),
                None => Step::Start(l.name.clone(), crate::server::bind(l, metrics)?),
            })
        })
        .collect()
}

/// Why a reload did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The gateway was started without a configuration file, so there is nothing to read.
    #[error("no configuration file to reload from")]
    NoFile,
    /// The file could not be read, or did not validate.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The configuration validated but could not be put to work: a plugin that does not
    /// load, an upstream that cannot be built, a listener or admin address that cannot be
    /// bound, certificates that do not load.
    #[error("{0}")]
    Build(String),
}

impl Shared {
    /// The runtime requests are served with right now.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.state.load_full()
    }

    /// The gateway's metric families, shared by every runtime it has served with.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Time since the gateway started (`uptime_seconds` on `/health`).
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether `/ready` answers 200: the gateway has started serving and is not draining.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    /// Whether a shutdown has begun ([`Gateway::shutdown`]).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Re-reads the configuration file and applies it.
    pub async fn reload_from_file(self: &Arc<Self>) -> Result<(), ReloadError> {
        let path = self.config_path.as_ref().ok_or(ReloadError::NoFile)?;
        let text = read_config(path).await.map_err(|e| {
            ReloadError::Config(config::ConfigError::Io {
                path: path.display().to_string(),
                message: e.to_string(),
            })
        });
        let result = match text {
            Ok(text) => {
                self.reload.lock().await.last_seen = Some(hash(&text));
                let base = path.parent().unwrap_or_else(|| std::path::Path::new("."));
                config::from_str(&text, base).map_err(ReloadError::from)
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(cfg) => self.apply(cfg).await,
            Err(e) => {
                self.metrics.config_reload(false);
                tracing::error!(error = %e, path = %path.display(), "configuration reload rejected; keeping the running configuration");
                Err(e)
            }
        }
    }

    /// Applies a validated configuration: build beside the running one (compiling changed
    /// plugins off the workers, binding new listener sockets), then swap. Nothing changes
    /// unless all of it succeeds.
    pub async fn apply(self: &Arc<Self>, config: Config) -> Result<(), ReloadError> {
        let mut guard = self.reload.lock().await;
        let current = self.state.load_full();
        // The serving listeners are those of the running configuration, in its order: the
        // diff's listener indices are theirs.
        let diff = ConfigDiff::between(&current.config, &config, &guard.started_with);
        let previous = Previous {
            runtime: &current,
            diff: &diff,
        };
        let built = match load_plugins(&self.plugins, &config, Some(previous), &self.metrics).await
        {
            Ok(plugins) => Runtime::build(
                config,
                &self.metrics,
                Some(previous),
                &mut guard.cache,
                plugins,
            ),
            Err(e) => Err(e),
        };
        let sockets = built.and_then(|next| {
            let steps = plan_listeners(&diff.listeners, &next.config.listeners, &self.metrics)?;
            let admin = next.config.admin.address;
            let admin = (guard.admin.as_ref().map(|a| a.address) != Some(admin))
                .then(|| crate::admin::bind(admin))
                .transpose()?;
            Ok((next, steps, admin))
        });
        let (next, steps, admin) = match sockets {
            Ok(x) => x,
            Err(e) => {
                self.metrics.config_reload(false);
                tracing::error!(error = %e, "configuration reload rejected; keeping the running configuration");
                return Err(ReloadError::Build(e));
            }
        };
        let kept = diff.upstreams.unchanged.len();
        current.retire_removed(&next, &diff, &self.metrics, &mut guard.cache);
        let routes = next.routes.routes().len();
        let upstreams = next.upstreams.len();
        let server = next.config.server.clone();
        let admin_address = next.config.admin.address;
        next.publish();
        self.state.store(Arc::new(next));

        // Listeners: the swap above already serves every connection accepted from here
        // on, on old sockets and new ones alike.
        let state = &mut *guard;
        let mut old: Vec<Option<Running>> = state.listeners.drain(..).map(Some).collect();
        let graceful = state
            .graceful
            .clone()
            .expect("listeners change only while serving");
        for step in steps {
            state.listeners.push(match step {
                Step::Keep(i, settings) => {
                    let mut l = old[i].take().expect("each running listener is kept once");
                    l.update(settings);
                    l
                }
                Step::Start(name, listener) => {
                    tracing::info!(listener = %name, address = %listener.local_addr, "listening");
                    Running::start(listener, self.clone(), graceful.clone())
                }
            });
        }
        for &i in &diff.listeners.removed {
            if let Some(l) = old[i].take() {
                tracing::info!(listener = %l.config().name, address = %l.local_addr, "listener removed; its connections drain");
                l.stop().await;
            }
        }
        if let Some(socket) = admin {
            let next = AdminServer::start(socket, admin_address, self.clone());
            if let Some(previous) = state.admin.replace(next) {
                previous.stop().await;
            }
        }
        self.publish_addresses(state);

        for r in &diff.restart_only {
            self.metrics.restart_required(r.setting, r.pending());
            if r.pending() {
                tracing::warn!(
                    setting = %format!("server.{}", r.setting),
                    running = %r.running,
                    configured = %r.configured,
                    "setting takes effect after a restart"
                );
            }
        }
        if diff.log_level_changed {
            crate::logging::set_level(&server.log_level);
        }
        self.metrics.config_reload(true);
        // The replaced runtime goes once the requests still using it end; what its plugins
        // held goes back to the loader threads that compiled them.
        crate::memory::trim_loaders();
        tracing::info!(
            routes,
            upstreams,
            upstreams_kept = kept,
            "configuration reloaded"
        );
        Ok(())
    }

    fn publish_addresses(&self, state: &ReloadState) {
        self.addresses.store(Arc::new(Addresses {
            listeners: state
                .listeners
                .iter()
                .map(|l| (l.config().name, l.local_addr))
                .collect(),
            admin: state
                .admin
                .as_ref()
                .map_or(self.addresses.load().admin, |a| a.local_addr),
        }));
    }
}

/// Resolves once `stop` holds `true` (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn hash(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// A started gateway.
#[derive(Debug)]
pub struct Gateway {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    watch_task: Option<JoinHandle<()>>,
    sweep_task: JoinHandle<()>,
}

impl Gateway {
    /// Binds every listener and the admin socket, then starts serving. Fails before serving
    /// anything if a socket cannot be bound or an upstream cannot be built.
    pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Gateway, String> {
        Self::start_with_registry(config, config_path, prometheus::Registry::new()).await
    }

    /// As [`Gateway::start`], registering every metric family on `registry`: a program that
    /// embeds the gateway serves them beside its own (`/metrics` here serves `registry`).
    /// Fails if a family's name is already taken there.
    pub async fn start_with_registry(
        config: Config,
        config_path: Option<PathBuf>,
        registry: prometheus::Registry,
    ) -> Result<Gateway, String> {
        let metrics = Metrics::new(registry).map_err(|e| e.to_string())?;
        let mut cache = HandleCache::default();
        let plugin_host = Arc::new(
            PluginHost::new(&metrics, config.server.workers)?
                .with_memory_budget(config.server.plugin_memory),
        );
        let plugins = load_plugins(&plugin_host, &config, None, &metrics).await?;
        let runtime = Runtime::build(config, &metrics, None, &mut cache, plugins)?;
        let cfg = runtime.config.clone();

        let mut bound = Vec::with_capacity(cfg.listeners.len());
        for l in &cfg.listeners {
            bound.push((l.name.clone(), crate::server::bind(l, &metrics)?));
        }
        let admin = crate::admin::bind(cfg.admin.address)?;
        let admin_addr = admin.local_addr().map_err(|e| e.to_string())?;

        let last_seen = config_path
            .as_ref()
            .and_then(|p| config::read_text(p, config::MAX_CONFIG_FILE).ok())
            .map(|t| hash(&t));
        runtime.publish();
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: ArcSwap::from_pointee(runtime),
            metrics,
            started: Instant::now(),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            config_path: config_path.clone(),
            reload: tokio::sync::Mutex::new(ReloadState {
                cache,
                last_seen,
                listeners: Vec::new(),
                admin: None,
                graceful: Some(Arc::new(crate::server::Drain::new())),
                started_with: restart_only_values(&cfg.server),
            }),
            plugins: plugin_host,
            addresses: ArcSwap::from_pointee(Addresses {
                listeners: Vec::new(),
                admin: admin_addr,
            }),
        });
        {
            let mut state = shared.reload.lock().await;
            let graceful = state.graceful.clone().expect("set above");
            for (name, l) in bound {
                tracing::info!(listener = %name, address = %l.local_addr, tls = cfg.listeners.iter().any(|c| c.name == name && c.tls.is_some()), "listening");
                state
                    .listeners
                    .push(Running::start(l, shared.clone(), graceful.clone()));
            }
            state.admin = Some(AdminServer::start(admin, cfg.admin.address, shared.clone()));
            shared.publish_addresses(&state);
        }

        // The files' stamps are read before serving starts: a file replaced from here on is
        // seen as changed.
        let watch_task = match &config_path {
            Some(path) => Some(tokio::spawn(watch_file(
                shared.clone(),
                path.clone(),
                watched_stamps(&shared.runtime()).await,
                stop_rx.clone(),
            ))),
            None => None,
        };
        let sweep_task = tokio::spawn(sweep_limiters(shared.clone()));
        shared.ready.store(true, Ordering::Release);
        Ok(Gateway {
            sweep_task,
            shared,
            stop,
            watch_task,
        })
    }

    /// The state the listeners, the admin server and the reloader share: the running
    /// runtime, the metrics, readiness.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Address a listener is bound to now (useful with port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.shared
            .addresses
            .load()
            .listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Every listener's name and bound address, in configuration order.
    pub fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.shared.addresses.load().listeners.clone()
    }

    /// Where the admin server is bound now.
    pub fn admin_addr(&self) -> SocketAddr {
        self.shared.addresses.load().admin
    }

    /// Reloads the configuration file (what SIGHUP does).
    pub async fn reload(&self) -> Result<(), ReloadError> {
        self.shared.reload_from_file().await
    }

    /// Drains: `/ready` turns 503, listeners stop accepting, in-flight requests get up to the
    /// grace period (`server.shutdown_grace` of the running configuration) to finish.
    /// Returns `true` when every connection finished in time.
    pub async fn shutdown(self) -> bool {
        let started = Instant::now();
        let grace = self.shared.runtime().config.server.shutdown_grace;
        self.shared.draining.store(true, Ordering::Release);
        tracing::info!(grace_seconds = grace.as_secs_f64(), "draining");
        let _ = self.stop.send(true);
        if let Some(t) = self.watch_task {
            t.abort();
            let _ = t.await;
        }
        self.sweep_task.abort();
        let mut state = self.shared.reload.lock().await;
        for l in std::mem::take(&mut state.listeners) {
            l.stop().await;
        }
        let clean = match state.graceful.take() {
            Some(g) => tokio::time::timeout(grace, g.shutdown()).await.is_ok(),
            None => false,
        };
        if clean {
            tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "drained");
        } else {
            tracing::warn!("grace period ended with connections still open");
        }
        // Every finished exchange is queued by now: observers deliver what they hold
        // before the process goes.
        let host = self.shared.plugins.clone();
        let delivered = tokio::task::spawn_blocking(move || host.close_observers(grace))
            .await
            .unwrap_or(false);
        if !delivered {
            tracing::warn!("plugin observers still delivering when the grace period ended");
        }
        if let Some(admin) = state.admin.take() {
            admin.stop().await;
        }
        clean
    }
}

/// Polls the configuration file (and the files it names) for changes and reloads on one.
/// `[reload]` is read from the running configuration on every round, so turning watching
/// on or off, or changing its interval, takes effect with the next reload.
async fn watch_file(
    shared: Arc<Shared>,
    path: PathBuf,
    mut files: Vec<Option<(u64, std::time::SystemTime)>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let reload = shared.runtime().config.reload.clone();
        tokio::select! {
            _ = tokio::time::sleep(reload.poll_interval) => {}
            _ = crate::gateway::stopped(&mut stop) => return,
        }
        if !reload.watch {
            continue;
        }
        let Ok(text) = read_config(&path).await else {
            continue;
        };
        let h = hash(&text);
        let changed = shared.reload.lock().await.last_seen != Some(h);
        let stamps = watched_stamps(&shared.runtime()).await;
        if changed {
            tracing::info!(path = %path.display(), "configuration file changed");
        } else if stamps != files {
            tracing::info!("a plugin, blocklist or certificate file changed");
        } else {
            continue;
        }
        let _ = shared.reload_from_file().await;
        // A reload may have added or removed files: compare against the files of the
        // runtime now serving, or the next poll would see a change that is not one.
        files = watched_stamps(&shared.runtime()).await;
    }
}

/// How often limiters drop the state of keys that are full again: the bound on how long a
/// flood of distinct keys shares the overflow bucket.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Sweeps the limiters of whatever runtime is serving, off the request path, and drops
/// the expired entries of plugins' stores (on a blocking thread: a store may be large).
async fn sweep_limiters(shared: Arc<Shared>) {
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_INTERVAL, SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let rt = shared.runtime();
        for limiter in rt.limiters.values() {
            limiter.sweep();
        }
        let stores: Vec<_> = rt
            .plugins
            .values()
            .filter_map(|p| p.store())
            .filter(|s| !s.is_empty())
            .cloned()
            .collect();
        if !stores.is_empty() {
            let _ = tokio::task::spawn_blocking(move || {
                for s in stores {
                    s.purge_expired();
                }
            })
            .await;
        }
    }
}

/// Size and modification time of each loaded plugin's file, of the blocklist file and of
/// the listeners' certificate and key files: a change triggers a reload, which recompiles a
/// plugin if its content changed, reads the blocklist again and serves renewed
/// certificates.
async fn watched_stamps(rt: &Runtime) -> Vec<Option<(u64, std::time::SystemTime)>> {
    let certificates = rt
        .config
        .listeners
        .iter()
        .filter_map(|l| l.tls.as_ref())
        .flat_map(|t| t.files.iter().cloned());
    let files: Vec<PathBuf> = rt
        .plugins
        .values()
        .map(|p| p.config.path.clone())
        .chain(rt.config.blocklist.file.clone())
        .chain(certificates)
        .collect();
    let mut stamps = Vec::with_capacity(files.len());
    for path in files {
        let meta = tokio::fs::metadata(path).await.ok();
        stamps.push(meta.and_then(|m| Some((m.len(), m.modified().ok()?))));
    }
    stamps
}

/// The configuration file's text, read off the runtime's threads (see [`config::read_text`]).
async fn read_config(path: &std::path::Path) -> std::io::Result<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || config::read_text(&path, config::MAX_CONFIG_FILE))
        .await
        .map_err(std::io::Error::other)?
}
