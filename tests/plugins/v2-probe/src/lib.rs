//! A component for `fedgate:plugin@0.2.0`, built against the repository's WIT with
//! wit-bindgen directly (not the SDK), so the gateway's suites can check the 0.2.0 host
//! before any SDK speaks it. Its config `{"mode": "..."}` picks what it does:
//!
//! - `edit`: `on-request` adds `x-probe-added: 1`, replaces `x-replace` with `new`, removes
//!   `x-remove-me`, and tries to remove `signature` and replace `date` (protected: refused);
//! - `reply`: `on-request` answers 202 `accepted and dropped` with `x-probe: reply`;
//! - `context`: `on-request` adds `x-ctx-declared` (the registered `user-agent` and
//!   `x-missing`, `-` for none, joined by `|`), `x-ctx-version`, `x-ctx-principal`,
//!   `x-ctx-clock` (`ok` when the monotonic clock did not go back and the wall clock is
//!   past 2026-01-01), `x-ctx-upstreams` (`name=critical` pairs) and `x-ctx-tls`;
//! - `response-edit`: `on-response` adds `x-resp-added: 1`, removes `x-upstream`,
//!   and tries to remove `content-length` (refused);
//! - `store`: `on-request` increments the store's `hits` and adds `x-hits` with the result;
//!   with `x-slow` on the request it first spins for 5 ms on the monotonic clock, so
//!   concurrent requests need more than one instance;
//! - `fill`: `on-request` sets 100 keys of 1 KiB values (`k0` ... `k99`) and adds
//!   `x-fill` with how many sets failed, and `x-last` with whether `k99` reads back;
//! - `ttl`: `on-request` sets `t` with a TTL of 100 ms;
//! - `activity`: `on-request` adds `x-act`: the activity view's kind, actor host, object
//!   kind, object id, public and published joined by `|` (`-` for none), or `none`;
//! - `observe`: an observer registering `user-agent` and `x-missing`; each exchange adds 1
//!   to `probe_observed_total{route,method,status,origin,ua,missing,activity,signer,completed}`
//!   (`ua` is the registered `user-agent`, `missing` the registered `x-missing` or `-`,
//!   `activity` the view's kind and actor host as `Kind@host` or `-`, `signer` the verified
//!   instance or `-`) and its bytes to `probe_observed_bytes_total{direction}`; each batch
//!   adds 1 to `probe_observe_batches_total` and its size to the store's `observed`; an
//!   exchange whose path ends in `/slow` makes the batch spin for 50 ms;
//! - `observe-loop`: an observer whose `observe` never returns;
//! - `tick`: `on-tick` every `interval` ms (config `"interval": N`, default 200) adds 1 to
//!   `probe_ticks_total` and increments the store's `ticks`;
//! - `tick-bomb`: `on-tick` every 100 ms allocates without end (the memory cap stops it);
//! - `outbound`: `on-request` tries `outbound.send` to the config's `url` and adds
//!   `x-outbound` with the error (`not-here`); `on-tick` every 100 ms sends `GET url` and
//!   adds 1 to `probe_outbound_total{result,status}` (status `-` on errors) and sets the
//!   gauge `probe_outbound_body_bytes` to the response body's length.

wit_bindgen::generate!({
    path: "../../../wit/0.2.0",
    world: "plugin",
});

use exports::fedgate::plugin::handler::{
    Batch, Guest, HealthReport, Registration, Request, Response, ResponseEdit, Verdict,
};
use fedgate::plugin::metrics::{Counter, Gauge};
use fedgate::plugin::outbound::{OutboundError, OutboundRequest};
use fedgate::plugin::types::{
    Header, HealthStatus, Hooks, HttpVersion, LocalReply, PrincipalKind, RequestEdit,
};

struct Probe;

fn mode() -> String {
    MODE.with(|m| m.borrow().clone())
}

std::thread_local! {
    static MODE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    static CONFIG: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    static COUNTERS: std::cell::RefCell<Vec<Counter>> = const { std::cell::RefCell::new(Vec::new()) };
    static GAUGES: std::cell::RefCell<Vec<Gauge>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A string value of the (compact JSON) config: `"key":"value"`.
fn config_str(key: &str) -> Option<String> {
    CONFIG.with(|c| {
        let c = c.borrow();
        let start = c.find(&format!("\"{key}\":\""))? + key.len() + 4;
        let end = c[start..].find('"')? + start;
        Some(c[start..end].to_string())
    })
}

/// An integer value of the config: `"key":N`.
fn config_int(key: &str) -> Option<u32> {
    CONFIG.with(|c| {
        let c = c.borrow();
        let start = c.find(&format!("\"{key}\":"))? + key.len() + 3;
        let digits: String = c[start..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    })
}

fn counter(i: usize, labels: &[String], value: f64) {
    COUNTERS.with(|c| c.borrow()[i].add(labels, value));
}

fn outbound_error(e: &OutboundError) -> &'static str {
    match e {
        OutboundError::NotAllowed(_) => "not-allowed",
        OutboundError::NotHere => "not-here",
        OutboundError::Timeout => "timeout",
        OutboundError::TooLarge => "too-large",
        OutboundError::Connect(_) => "connect",
        OutboundError::Invalid(_) => "invalid",
    }
}

fn get(url: String) -> OutboundRequest {
    OutboundRequest {
        method: "GET".into(),
        url,
        headers: vec![header("x-probe", "outbound")],
        body: None,
        timeout_ms: None,
    }
}

fn header(name: &str, value: impl Into<String>) -> Header {
    Header {
        name: name.to_string(),
        value: value.into(),
    }
}

impl Guest for Probe {
    fn init(config: String) -> Result<Registration, String> {
        let mode = [
            "edit",
            "reply",
            "context",
            "response-edit",
            "store",
            "fill",
            "activity",
            "ttl",
            "observe-loop",
            "observe",
            "tick-bomb",
            "tick",
            "outbound",
        ]
        .into_iter()
        .find(|m| config.contains(&format!("\"{m}\"")))
        .ok_or_else(|| format!("no known mode in {config}"))?;
        MODE.with(|m| *m.borrow_mut() = mode.to_string());
        CONFIG.with(|c| *c.borrow_mut() = config.clone());
        use fedgate::plugin::metrics::{declare_counter, declare_gauge};
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut counters = Vec::new();
        let mut gauges = Vec::new();
        match mode {
            "observe" => {
                counters.push(declare_counter(
                    "probe_observed_total",
                    "Exchanges observed.",
                    &s(&[
                        "route",
                        "method",
                        "status",
                        "origin",
                        "ua",
                        "missing",
                        "activity",
                        "signer",
                        "completed",
                    ]),
                )?);
                counters.push(declare_counter(
                    "probe_observed_bytes_total",
                    "Body bytes of observed exchanges.",
                    &s(&["direction"]),
                )?);
                counters.push(declare_counter(
                    "probe_observe_batches_total",
                    "Batches observed.",
                    &[],
                )?);
            }
            "tick" => counters.push(declare_counter("probe_ticks_total", "Ticks.", &[])?),
            "outbound" => {
                counters.push(declare_counter(
                    "probe_outbound_total",
                    "Outbound calls from on-tick.",
                    &s(&["result", "status"]),
                )?);
                gauges.push(declare_gauge(
                    "probe_outbound_body_bytes",
                    "The last outbound response body's length.",
                    &[],
                )?);
            }
            _ => {}
        }
        COUNTERS.with(|c| *c.borrow_mut() = counters);
        GAUGES.with(|g| *g.borrow_mut() = gauges);
        let (hooks, tick) = match mode {
            "response-edit" => (Hooks::ON_RESPONSE, None),
            "observe" | "observe-loop" => (Hooks::OBSERVE, None),
            "tick" => (Hooks::ON_TICK, Some(config_int("interval").unwrap_or(200))),
            "tick-bomb" => (Hooks::ON_TICK, Some(100)),
            "outbound" => (Hooks::ON_TICK | Hooks::ON_REQUEST, Some(100)),
            _ => (Hooks::ON_REQUEST, None),
        };
        Ok(Registration {
            hooks,
            request_headers: vec!["user-agent".into(), "x-missing".into()],
            tick_interval_ms: tick,
        })
    }

    fn on_request(request: &Request) -> Verdict {
        match mode().as_str() {
            "edit" => Verdict::Edit(RequestEdit {
                add: vec![header("x-probe-added", "1")],
                set: vec![header("x-replace", "new"), header("date", "forged")],
                remove: vec!["x-remove-me".into(), "signature".into()],
            }),
            "reply" => Verdict::Reply(LocalReply {
                status: 202,
                headers: vec![header("x-probe", "reply")],
                body: b"accepted and dropped".to_vec(),
            }),
            "context" => {
                let fields = request.declared_headers();
                let declared = fields
                    .values
                    .iter()
                    .map(|v| text_at(&fields.text, *v).unwrap_or("-"))
                    .collect::<Vec<_>>()
                    .join("|");
                let version = match request.http_version() {
                    HttpVersion::Http10 => "1.0",
                    HttpVersion::Http11 => "1.1",
                    HttpVersion::Http2 => "2",
                };
                let principal = request.principal().map_or("none".to_string(), |p| {
                    let kind = match p.kind {
                        PrincipalKind::ApiKey => "api-key",
                        PrincipalKind::Jwt => "jwt",
                        PrincipalKind::Mtls => "mtls",
                    };
                    format!("{kind}:{}", p.name)
                });
                let a = fedgate::plugin::clocks::monotonic_now();
                let b = fedgate::plugin::clocks::monotonic_now();
                let wall = fedgate::plugin::clocks::wall_now();
                let clock = if b >= a && wall.seconds > 1_767_225_600 {
                    "ok"
                } else {
                    "bad"
                };
                let upstreams = fedgate::plugin::gateway::upstreams()
                    .into_iter()
                    .map(|u| format!("{}={}", u.name, u.critical))
                    .collect::<Vec<_>>()
                    .join(",");
                let tls = request
                    .tls()
                    .map_or("none".to_string(), |t| t.server_name.unwrap_or_default());
                Verdict::Edit(RequestEdit {
                    add: vec![
                        header("x-ctx-declared", declared),
                        header("x-ctx-version", version),
                        header("x-ctx-principal", principal),
                        header("x-ctx-clock", clock),
                        header("x-ctx-upstreams", upstreams),
                        header("x-ctx-tls", tls),
                    ],
                    set: Vec::new(),
                    remove: Vec::new(),
                })
            }
            "store" => {
                if request.header("x-slow").is_some() {
                    let start = fedgate::plugin::clocks::monotonic_now();
                    while fedgate::plugin::clocks::monotonic_now() - start < 5_000_000 {}
                }
                let hits = fedgate::plugin::store::increment("hits", 1, None)
                    .map_or_else(|e| format!("error {e:?}"), |n| n.to_string());
                Verdict::Edit(RequestEdit {
                    add: vec![header("x-hits", hits)],
                    set: Vec::new(),
                    remove: Vec::new(),
                })
            }
            "fill" => {
                let failed = (0..100)
                    .filter(|i| {
                        fedgate::plugin::store::set(&format!("k{i}"), &[b'x'; 1024], None).is_err()
                    })
                    .count();
                let last = fedgate::plugin::store::get("k99").is_some_and(|v| v.len() == 1024);
                Verdict::Edit(RequestEdit {
                    add: vec![
                        header("x-fill", failed.to_string()),
                        header("x-last", last.to_string()),
                    ],
                    set: Vec::new(),
                    remove: Vec::new(),
                })
            }
            "ttl" => {
                let _ = fedgate::plugin::store::set("t", b"soon gone", Some(100));
                Verdict::Continue
            }
            "activity" => {
                let view = request.activity().map_or("none".to_string(), |a| {
                    let o = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                    [
                        o(a.kind),
                        o(a.actor_host),
                        o(a.object_kind),
                        o(a.object_id),
                        a.public.to_string(),
                        o(a.published),
                    ]
                    .join("|")
                });
                Verdict::Edit(RequestEdit {
                    add: vec![header("x-act", view)],
                    set: Vec::new(),
                    remove: Vec::new(),
                })
            }
            "outbound" => {
                let url = config_str("url").unwrap_or_default();
                let result = match fedgate::plugin::outbound::send(&get(url)) {
                    Ok(_) => "ok",
                    Err(e) => outbound_error(&e),
                };
                Verdict::Edit(RequestEdit {
                    add: vec![header("x-outbound", result)],
                    set: Vec::new(),
                    remove: Vec::new(),
                })
            }
            _ => Verdict::Continue,
        }
    }

    fn on_response(_request: &Request, _response: &Response) -> ResponseEdit {
        ResponseEdit {
            add: vec![header("x-resp-added", "1")],
            remove: vec!["x-upstream".into(), "content-length".into()],
        }
    }

    fn observe(batch: Batch) {
        if mode() == "observe-loop" {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        let text = |column: &[u64], i: usize| text_at(&batch.text, column[i]).map(str::to_string);
        let or_dash = |column: &[u64], i: usize| text(column, i).unwrap_or_else(|| "-".to_string());
        let n = batch.fields.len() / (batch.len.max(1) as usize);
        let mut slow = false;
        for i in 0..batch.len as usize {
            let declared = &batch.fields[i * n..i * n + n];
            let field = |k: usize| {
                declared
                    .get(k)
                    .and_then(|v| text_at(&batch.text, *v))
                    .unwrap_or("-")
                    .to_string()
            };
            let activity = if batch.bits[i] & 2 != 0 {
                format!(
                    "{}@{}",
                    or_dash(&batch.activity_kind, i),
                    or_dash(&batch.activity_actor_host, i)
                )
            } else {
                "-".to_string()
            };
            let origin = if text(&batch.error, i).is_some() {
                "gateway"
            } else {
                "upstream"
            };
            counter(
                0,
                &[
                    or_dash(&batch.route, i),
                    or_dash(&batch.method, i),
                    batch.status[i].to_string(),
                    origin.to_string(),
                    field(0),
                    field(1),
                    activity,
                    or_dash(&batch.signer_instance, i),
                    (batch.bits[i] & 1 != 0).to_string(),
                ],
                1.0,
            );
            counter(1, &["request".into()], batch.request_bytes[i] as f64);
            counter(1, &["response".into()], batch.response_bytes[i] as f64);
            slow |= or_dash(&batch.path, i).ends_with("/slow");
        }
        counter(2, &[], 1.0);
        let _ = fedgate::plugin::store::increment("observed", i64::from(batch.len), None);
        if slow {
            let start = fedgate::plugin::clocks::monotonic_now();
            while fedgate::plugin::clocks::monotonic_now() - start < 50_000_000 {}
        }
    }

    fn on_tick() {
        match mode().as_str() {
            "tick" => {
                counter(0, &[], 1.0);
                let _ = fedgate::plugin::store::increment("ticks", 1, None);
            }
            "tick-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "outbound" => {
                let url = config_str("url").unwrap_or_default();
                match fedgate::plugin::outbound::send(&get(url)) {
                    Ok(r) => {
                        counter(0, &["ok".into(), r.status.to_string()], 1.0);
                        GAUGES.with(|g| g.borrow()[0].set(&[], r.body.len() as f64));
                    }
                    Err(e) => counter(0, &[outbound_error(&e).into(), "-".into()], 1.0),
                }
            }
            _ => {}
        }
    }

    fn health_check() -> HealthReport {
        HealthReport {
            status: HealthStatus::Healthy,
            message: String::new(),
        }
    }
}

export!(Probe);

/// The string a `text-ref` names in `text` (offset in the high 32 bits, length in the low
/// 32, all bits set for none).
fn text_at(text: &str, at: u64) -> Option<&str> {
    if at == u64::MAX {
        return None;
    }
    let start = (at >> 32) as usize;
    text.get(start..start + (at & 0xffff_ffff) as usize)
}
