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
//! - `observe`: registers `observe` (which the gateway may refuse).

wit_bindgen::generate!({
    path: "../../../wit/0.2.0",
    world: "plugin",
});

use exports::fedgate::plugin::handler::{
    Exchange, Guest, HealthReport, Registration, Request, Response, ResponseEdit, Verdict,
};
use fedgate::plugin::types::{
    Header, HealthStatus, Hooks, HttpVersion, LocalReply, PrincipalKind, RequestEdit,
};

struct Probe;

fn mode() -> String {
    MODE.with(|m| m.borrow().clone())
}

std::thread_local! {
    static MODE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
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
            "observe",
        ]
        .into_iter()
        .find(|m| config.contains(&format!("\"{m}\"")))
        .ok_or_else(|| format!("no known mode in {config}"))?;
        MODE.with(|m| *m.borrow_mut() = mode.to_string());
        let hooks = match mode {
            "response-edit" => Hooks::ON_RESPONSE,
            "observe" => Hooks::OBSERVE,
            _ => Hooks::ON_REQUEST,
        };
        Ok(Registration {
            hooks,
            request_headers: vec!["user-agent".into(), "x-missing".into()],
            tick_interval_ms: None,
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
                let declared = request
                    .declared_headers()
                    .into_iter()
                    .map(|v| v.unwrap_or_else(|| "-".into()))
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
            _ => Verdict::Continue,
        }
    }

    fn on_response(_request: &Request, _response: &Response) -> ResponseEdit {
        ResponseEdit {
            add: vec![header("x-resp-added", "1")],
            remove: vec!["x-upstream".into(), "content-length".into()],
        }
    }

    fn observe(_exchanges: Vec<Exchange>) {}

    fn on_tick() {}

    fn health_check() -> HealthReport {
        HealthReport {
            status: HealthStatus::Healthy,
            message: String::new(),
        }
    }
}

export!(Probe);
