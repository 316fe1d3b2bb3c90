//! The admin listener (separate from public traffic, loopback by default): `/metrics`,
//! `/health`, `/ready`, `/live`. It keeps serving while the public listeners drain, so an
//! orchestrator sees `/ready` turn 503.

use crate::breaker::State as BreakerState;
use crate::plugin::abi::HealthStatus;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared as SharedFuture};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::ResponseBody;
use crate::gateway::Shared;

pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    let l =
        std::net::TcpListener::bind(addr).map_err(|e| format!("admin cannot bind {addr}: {e}"))?;
    l.set_nonblocking(true)
        .map_err(|e| format!("admin {addr}: {e}"))?;
    Ok(l)
}

/// Serves the admin endpoints until `stop`; `/health` answers within the running
/// configuration's `admin.health_timeout`.
pub async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin listener failed");
            return;
        }
    };
    // The public listeners' protections: a connection limit (at which the listener stops
    // accepting), and deadlines for a connection's first bytes and each request head.
    let admin = shared.runtime().config.admin.clone();
    let limit = Arc::new(tokio::sync::Semaphore::new(admin.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(admin.header_read_timeout)
        .max_buf_size(16 << 10);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(16 << 10)
        .max_concurrent_streams(16);
    let builder = Arc::new(builder);
    let checks = Arc::new(PluginChecks::default());
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = crate::gateway::stopped(&mut stop) => return,
        };
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::gateway::stopped(&mut stop) => return,
        };
        let shared = shared.clone();
        let builder = builder.clone();
        let checks = checks.clone();
        let first_bytes = admin.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let (shared, checks) = (shared.clone(), checks.clone());
                async move { Ok::<_, Infallible>(handle(&shared, &checks, req).await) }
            });
            let io = crate::server::FirstBytes::new(stream, first_bytes);
            let _ = builder.serve_connection(TokioIo::new(io), service).await;
        });
    }
}

async fn handle(
    shared: &Shared,
    checks: &PluginChecks,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/metrics" => {
            shared.runtime().refresh_gauges();
            let body = shared.metrics().render();
            let mut r = Response::new(ResponseBody::plain(body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/health" => {
            let health_timeout = shared.runtime().config.admin.health_timeout;
            let (status, doc) = health(shared, checks, health_timeout).await;
            let mut r = Response::new(ResponseBody::plain(doc.to_string()));
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        "/ready" if shared.is_ready() => text(StatusCode::OK, "ready\n"),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/live" => text(StatusCode::OK, "live\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The `/health` document: one check per upstream and one per plugin with a health check.
///
/// An upstream is `unhealthy` with no endpoint eligible for traffic or with its breaker
/// open, `degraded` with some endpoints out or its breaker half-open, else `healthy`. The
/// gateway is `unhealthy` (503) when a critical upstream is unhealthy or a plugin's own
/// check says so, and `degraded` (200) when anything else is impaired (see
/// `docs/resilience.md`). It answers within `timeout`: a plugin whose check has not
/// answered by then is reported unhealthy, as timed out.
async fn health(
    shared: &Shared,
    plugin_checks: &PluginChecks,
    timeout: Duration,
) -> (StatusCode, serde_json::Value) {
    let deadline = tokio::time::Instant::now() + timeout;
    let rt = shared.runtime();
    let mut unhealthy = false;
    let mut degraded = false;
    let mut checks: Vec<_> = rt
        .upstreams
        .values()
        .map(|u| {
            let total = u.endpoints.len();
            let healthy = u.healthy_endpoints();
            let breaker = rt.breakers.get(&*u.name).map(|b| b.state());
            let status = if healthy == 0 || breaker == Some(BreakerState::Open) {
                "unhealthy"
            } else if healthy < total || breaker == Some(BreakerState::HalfOpen) {
                "degraded"
            } else {
                "healthy"
            };
            match status {
                "unhealthy" if u.config.critical => unhealthy = true,
                "unhealthy" | "degraded" => degraded = true,
                _ => {}
            }
            json!({
                "name": &*u.name,
                "kind": "upstream",
                "status": status,
                "critical": u.config.critical,
                "endpoints": total,
                "healthy_endpoints": healthy,
                "circuit_breaker": breaker.map(BreakerState::as_str),
                "in_flight": u.endpoints.iter().map(|e| e.in_flight()).sum::<usize>(),
                "endpoint_states": endpoint_states(u),
            })
        })
        .collect();
    // Each plugin's own health-check hook. The hooks run Wasm on blocking threads, one per
    // plugin, side by side: a slow check holds no worker that serves traffic, and one
    // plugin's slow check does not delay the others'. Each call is bounded by the plugin's
    // own deadline, but a plugin runs its check on every idle instance, and the whole
    // answer must come within `timeout` whatever the plugins do.
    let mut runs = Vec::new();
    let mut reports = Vec::new();
    for p in rt.plugins.values() {
        if p.has_health_check() {
            runs.push((p.name.clone(), plugin_checks.run(p)));
        } else if let Some((status, message)) = p.health() {
            // No Wasm runs: only whether the plugin is backed off.
            reports.push((p.name.clone(), status, message));
        }
    }
    for (name, run) in runs {
        match tokio::time::timeout_at(deadline, run).await {
            Ok(Ok(Some((status, message)))) => reports.push((name, status, message)),
            Ok(Ok(None)) => {}
            Ok(Err(())) => reports.push((
                name,
                HealthStatus::Unhealthy,
                "health check failed: its thread panicked".to_string(),
            )),
            // The check goes on on its thread until its call deadline stops it; this answer
            // does not wait for it, and the next request joins it.
            Err(_) => reports.push((
                name,
                HealthStatus::Unhealthy,
                format!("health check timed out: no answer within {timeout:?}"),
            )),
        }
    }
    reports.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, status, message) in reports {
        let status = match status {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => {
                degraded = true;
                "degraded"
            }
            HealthStatus::Unhealthy => {
                unhealthy = true;
                "unhealthy"
            }
        };
        checks.push(json!({
            "name": &*name,
            "kind": "plugin",
            "status": status,
            "message": message,
        }));
    }
    let status = if unhealthy {
        "unhealthy"
    } else if degraded {
        "degraded"
    } else {
        "healthy"
    };
    let doc = json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": shared.uptime().as_secs_f64(),
        "draining": shared.is_draining(),
        "checks": checks,
    });
    let code = if unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, doc)
}

/// What one plugin health check gave: the plugin's report (`None` without one), or `Err`
/// when its thread panicked.
type Report = Result<Option<(HealthStatus, String)>, ()>;

/// A plugin health check in flight, which any number of `/health` requests may await.
type Run = SharedFuture<BoxFuture<'static, Report>>;

/// The plugin health checks `/health` requests have started, by plugin (its address: a
/// reloaded plugin is another one). A request finds the check still running from an
/// earlier request (one that timed out, or a concurrent one) and joins it instead of
/// starting another: polling `/health` while a plugin hangs never piles up threads.
#[derive(Default)]
struct PluginChecks(Mutex<HashMap<usize, (Arc<AtomicBool>, Run)>>);

impl PluginChecks {
    fn run(&self, p: &Arc<crate::plugin::Plugin>) -> Run {
        let mut runs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Finished checks are forgotten (their plugins may be gone with a reload).
        runs.retain(|_, (done, _)| !done.load(Ordering::Acquire));
        let key = Arc::as_ptr(p) as usize;
        if let Some((_, run)) = runs.get(&key) {
            return run.clone();
        }
        let done = Arc::new(AtomicBool::new(false));
        let (plugin, finished) = (p.clone(), done.clone());
        let thread = tokio::task::spawn_blocking(move || {
            let report = plugin.health();
            finished.store(true, Ordering::Release);
            report
        });
        let run = async move { thread.await.map_err(drop) }.boxed().shared();
        runs.insert(key, (done, run.clone()));
        run
    }
}

/// One entry per endpoint: active-check health, ejection, and requests in flight.
fn endpoint_states(u: &crate::upstream::Upstream) -> Vec<serde_json::Value> {
    u.endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let s = u.endpoint_state(i);
            json!({
                "endpoint": &*e.label,
                "healthy": s.healthy,
                "ejected": s.ejected,
                "in_flight": e.in_flight(),
            })
        })
        .collect()
}

fn text(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::plain(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
