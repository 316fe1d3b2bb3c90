//! A component for `fedgate:plugin@9.0.0`, an ABI the gateway does not serve: loading it
//! must fail with a message naming the version. It is otherwise a well-behaved plugin, so the
//! only reason to refuse it is the version.

wit_bindgen::generate!({
    path: "wit",
    world: "plugin",
});

use exports::fedgate::plugin::handler::{Guest, HealthReport, Hooks, Request, Response, Verdict};
use fedgate::plugin::types::HealthStatus;

struct OtherWorld;

impl Guest for OtherWorld {
    fn init(_config: String) -> Result<Hooks, String> {
        Ok(Hooks::ON_REQUEST)
    }

    fn on_request(_request: &Request) -> Verdict {
        Verdict::Continue
    }

    fn on_response(_request: &Request, _response: &Response) {}

    fn health_check() -> HealthReport {
        HealthReport {
            status: HealthStatus::Healthy,
            message: String::new(),
        }
    }

    fn on_shutdown() {}
}

export!(OtherWorld);
