//! A running gateway: listeners, the admin server, the current [`Runtime`] and its reloads,
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
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::plugin::PluginHost;
use crate::runtime::{load_plugins, HandleCache, Runtime};

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
}

#[derive(Debug)]
struct ReloadState {
    cache: HandleCache,
    /// Hash of the file text last applied or rejected, so the watcher reacts to changes only.
    last_seen: Option<u64>,
}

/// Why a reload did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no configuration file to reload from")]
    NoFile,
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Build(String),
}

impl Shared {
    /// The runtime requests are served with right now.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.state.load_full()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Re-reads the configuration file and applies it.
    pub async fn reload_from_file(&self) -> Result<(), ReloadError> {
        let path = self.config_path.as_ref().ok_or(ReloadError::NoFile)?;
        let text = tokio::fs::read_to_string(path).await.map_err(|e| {
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
    /// plugins off the workers), then swap.
    pub async fn apply(&self, config: Config) -> Result<(), ReloadError> {
        let mut guard = self.reload.lock().await;
        let current = self.state.load_full();
        let restart_only = [
            (
                "listeners",
                current.config.source.listeners != config.source.listeners,
            ),
            ("admin", current.config.source.admin != config.source.admin),
            (
                "server",
                current.config.source.server != config.source.server,
            ),
        ];
        let built = match load_plugins(&self.plugins, &config, Some(&current), &self.metrics).await
        {
            Ok(plugins) => Runtime::build(
                config,
                &self.metrics,
                Some(&current),
                &mut guard.cache,
                plugins,
            ),
            Err(e) => Err(e),
        };
        let next = match built {
            Ok(next) => next,
            Err(e) => {
                self.metrics.config_reload(false);
                tracing::error!(error = %e, "configuration reload rejected; keeping the running configuration");
                return Err(ReloadError::Build(e));
            }
        };
        let kept = next
            .upstreams
            .iter()
            .filter(|(n, u)| current.upstreams.get(*n).is_some_and(|c| Arc::ptr_eq(c, u)))
            .count();
        current.retire_removed(&next, &self.metrics, &mut guard.cache);
        let routes = next.routes.routes().len();
        let upstreams = next.upstreams.len();
        next.publish();
        self.state.store(Arc::new(next));
        self.metrics.config_reload(true);
        for (section, changed) in restart_only {
            if changed {
                tracing::warn!(
                    section,
                    "configuration section changed; it takes effect after a restart"
                );
            }
        }
        tracing::info!(
            routes,
            upstreams,
            upstreams_kept = kept,
            "configuration reloaded"
        );
        Ok(())
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
    listeners: Vec<(String, SocketAddr)>,
    admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    admin_stop: watch::Sender<bool>,
    accept_tasks: Vec<JoinHandle<()>>,
    admin_task: JoinHandle<()>,
    watch_task: Option<JoinHandle<()>>,
    sweep_task: JoinHandle<()>,
    graceful: Arc<GracefulShutdown>,
    grace: Duration,
}

impl Gateway {
    /// Binds every listener and the admin socket, then starts serving. Fails before serving
    /// anything if a socket cannot be bound or an upstream cannot be built.
    pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Gateway, String> {
        let metrics = Metrics::new(prometheus::Registry::new()).map_err(|e| e.to_string())?;
        let mut cache = HandleCache::default();
        let grace = config.server.shutdown_grace;
        let watch_cfg = config.reload.clone();
        let listener_cfgs = config.listeners.clone();
        let admin_cfg = config.admin.clone();
        let plugin_host = Arc::new(PluginHost::new(&metrics, config.server.workers)?);
        let plugins = load_plugins(&plugin_host, &config, None, &metrics).await?;
        let runtime = Runtime::build(config, &metrics, None, &mut cache, plugins)?;

        let mut bound = Vec::with_capacity(listener_cfgs.len());
        for l in &listener_cfgs {
            bound.push(crate::server::bind(l)?);
        }
        let admin = crate::admin::bind(admin_cfg.address)?;
        let admin_addr = admin.local_addr().map_err(|e| e.to_string())?;

        let last_seen = config_path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| hash(&t));
        runtime.publish();
        let shared = Arc::new(Shared {
            state: ArcSwap::from_pointee(runtime),
            metrics,
            started: Instant::now(),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            config_path: config_path.clone(),
            reload: tokio::sync::Mutex::new(ReloadState { cache, last_seen }),
            plugins: plugin_host,
        });

        let (stop, stop_rx) = watch::channel(false);
        let graceful = Arc::new(GracefulShutdown::new());
        let mut listeners = Vec::with_capacity(bound.len());
        let mut accept_tasks = Vec::with_capacity(bound.len());
        for l in bound {
            listeners.push((l.config.name.clone(), l.local_addr));
            tracing::info!(listener = %l.config.name, address = %l.local_addr, tls = l.config.tls.is_some(), "listening");
            accept_tasks.push(tokio::spawn(crate::server::accept_loop(
                l,
                shared.clone(),
                graceful.clone(),
                stop_rx.clone(),
            )));
        }
        let (admin_stop, admin_stop_rx) = watch::channel(false);
        let admin_task = tokio::spawn(crate::admin::serve(
            admin,
            shared.clone(),
            admin_cfg.health_timeout,
            admin_stop_rx,
        ));
        tracing::info!(address = %admin_addr, "admin listening");

        let watch_task = match (&config_path, watch_cfg.watch) {
            (Some(path), true) => Some(tokio::spawn(watch_file(
                shared.clone(),
                path.clone(),
                watch_cfg.poll_interval,
                // Read before serving starts: a plugin file replaced from here on is seen.
                plugin_stamps(&shared.runtime()).await,
                stop_rx,
            ))),
            _ => None,
        };
        let sweep_task = tokio::spawn(sweep_limiters(shared.clone()));
        shared.ready.store(true, Ordering::Release);
        Ok(Gateway {
            sweep_task,
            shared,
            listeners,
            admin_addr,
            stop,
            admin_stop,
            accept_tasks,
            admin_task,
            watch_task,
            graceful,
            grace,
        })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Address a listener is bound to (useful with port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    pub fn listener_addrs(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Reloads the configuration file (what SIGHUP does).
    pub async fn reload(&self) -> Result<(), ReloadError> {
        self.shared.reload_from_file().await
    }

    /// Drains: `/ready` turns 503, listeners stop accepting, in-flight requests get up to the
    /// grace period to finish. Returns `true` when every connection finished in time.
    pub async fn shutdown(self) -> bool {
        let started = Instant::now();
        self.shared.draining.store(true, Ordering::Release);
        tracing::info!(grace_seconds = self.grace.as_secs_f64(), "draining");
        let _ = self.stop.send(true);
        for t in self.accept_tasks {
            let _ = t.await;
        }
        if let Some(t) = self.watch_task {
            t.abort();
        }
        self.sweep_task.abort();
        let clean = match Arc::try_unwrap(self.graceful) {
            Ok(g) => tokio::time::timeout(self.grace, g.shutdown()).await.is_ok(),
            Err(_) => false,
        };
        if clean {
            tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "drained");
        } else {
            tracing::warn!("grace period ended with connections still open");
        }
        let _ = self.admin_stop.send(true);
        let _ = self.admin_task.await;
        clean
    }
}

async fn watch_file(
    shared: Arc<Shared>,
    path: PathBuf,
    every: Duration,
    mut plugin_files: Vec<Option<(u64, std::time::SystemTime)>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = crate::gateway::stopped(&mut stop) => return,
        }
        let Ok(text) = tokio::fs::read_to_string(&path).await else {
            continue;
        };
        let h = hash(&text);
        let changed = shared.reload.lock().await.last_seen != Some(h);
        let stamps = plugin_stamps(&shared.runtime()).await;
        if changed {
            tracing::info!(path = %path.display(), "configuration file changed");
        } else if stamps != plugin_files {
            tracing::info!("a plugin or blocklist file changed");
        } else {
            continue;
        }
        let _ = shared.reload_from_file().await;
        // A reload may have added or removed plugins: compare against the files of the
        // runtime now serving, or the next poll would see a change that is not one.
        plugin_files = plugin_stamps(&shared.runtime()).await;
    }
}

/// How often limiters drop the state of keys that are full again: the bound on how long a
/// flood of distinct keys shares the overflow bucket.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Sweeps the limiters of whatever runtime is serving, off the request path.
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
    }
}

/// Size and modification time of each loaded plugin's file and of the blocklist file: a
/// change triggers a reload, which recompiles a plugin if its content changed and reads
/// the blocklist again.
async fn plugin_stamps(rt: &Runtime) -> Vec<Option<(u64, std::time::SystemTime)>> {
    let mut stamps = Vec::with_capacity(rt.plugins.len() + 1);
    let files = rt
        .plugins
        .values()
        .map(|p| p.config.path.as_path())
        .chain(rt.config.blocklist.file.as_deref());
    for path in files {
        let meta = tokio::fs::metadata(path).await.ok();
        stamps.push(meta.and_then(|m| Some((m.len(), m.modified().ok()?))));
    }
    stamps
}
