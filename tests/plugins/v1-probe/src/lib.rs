//! A component for `fedgate:plugin@0.1.0`, built against the repository's WIT with
//! wit-bindgen directly, so the gateway's suites keep checking that 0.1.0 is served as it
//! was released while the SDK builds for newer versions.
//!
//! - `init` declares `v1_probe_requests_total{method}` and `v1_probe_responses_total{status,origin}`
//!   and asks for every hook;
//! - `on-request` counts the request, then denies with the status in `x-deny` (body
//!   `denied by v1`, field `x-v1: denied`) when the request has one, else continues adding
//!   `x-v1: <method> <path>` and `x-v1-signer` (the verified signer's instance, or `none`);
//! - `on-response` counts the response by status and origin;
//! - `health-check` reports what the config's `health` says (`healthy` by default), with
//!   the message `v1 probe`.

wit_bindgen::generate!({
    path: "../../../wit/0.1.0",
    world: "plugin",
});

use exports::fedgate::plugin::handler::{Guest, HealthReport, Hooks, Request, Response, Verdict};
use fedgate::plugin::metrics::{declare_counter, Counter};
use fedgate::plugin::types::{Denial, Header, HealthStatus, ResponseOrigin};

struct Probe;

std::thread_local! {
    static COUNTERS: std::cell::RefCell<Vec<Counter>> = const { std::cell::RefCell::new(Vec::new()) };
    static HEALTH: std::cell::Cell<HealthStatus> = const { std::cell::Cell::new(HealthStatus::Healthy) };
}

fn header(name: &str, value: impl Into<String>) -> Header {
    Header {
        name: name.to_string(),
        value: value.into(),
    }
}

impl Guest for Probe {
    fn init(config: String) -> Result<Hooks, String> {
        let requests = declare_counter(
            "v1_probe_requests_total",
            "Requests the 0.1.0 probe saw.",
            &["method".to_string()],
        )?;
        let responses = declare_counter(
            "v1_probe_responses_total",
            "Responses the 0.1.0 probe saw.",
            &["status".to_string(), "origin".to_string()],
        )?;
        COUNTERS.with(|c| *c.borrow_mut() = vec![requests, responses]);
        let health = if config.contains("\"unhealthy\"") {
            HealthStatus::Unhealthy
        } else if config.contains("\"degraded\"") {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        };
        HEALTH.with(|h| h.set(health));
        Ok(Hooks::ON_REQUEST | Hooks::ON_RESPONSE | Hooks::HEALTH_CHECK)
    }

    fn on_request(request: &Request) -> Verdict {
        let method = request.method();
        COUNTERS.with(|c| c.borrow()[0].add(std::slice::from_ref(&method), 1.0));
        if let Some(status) = request.header("x-deny") {
            return Verdict::Deny(Denial {
                status: status.parse().unwrap_or(403),
                headers: vec![header("x-v1", "denied")],
                body: "denied by v1".into(),
            });
        }
        let signer = request.signer().map_or("none".to_string(), |s| s.instance);
        Verdict::ContinueWith(vec![
            header("x-v1", format!("{method} {}", request.path())),
            header("x-v1-signer", signer),
        ])
    }

    fn on_response(_request: &Request, response: &Response) {
        let origin = match response.origin() {
            ResponseOrigin::Upstream => "upstream",
            ResponseOrigin::Gateway => "gateway",
        };
        COUNTERS
            .with(|c| c.borrow()[1].add(&[response.status().to_string(), origin.to_string()], 1.0));
    }

    fn health_check() -> HealthReport {
        HealthReport {
            status: HEALTH.with(|h| h.get()),
            message: "v1 probe".into(),
        }
    }
}

export!(Probe);
