//! A plugin that misbehaves on purpose, so the gateway's tests can check that the sandbox
//! holds: its `mode` config key picks the behaviour (see README.md).

use std::hint::black_box;

use fedgate_sdk::{
    export_plugin, log, Config, Counter, HealthReport, HealthStatus, Hooks, Plugin, Request,
    Response, ResponseEdit, Verdict,
};
use serde::Deserialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    #[default]
    Ok,
    Loop,
    Bomb,
    Trap,
    Labels,
    Deny,
    AddHeader,
    InitError,
    Health,
    EchoBody,
    WrongSeries,
    EchoSigner,
    HealthLoop,
    Clock,
    TrapRequest,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Health {
    Healthy,
    Degraded,
    Unhealthy,
}

#[derive(Debug, Deserialize)]
struct Settings {
    #[serde(default)]
    mode: Mode,
    /// `labels`: distinct label values added per request.
    #[serde(default = "default_series")]
    series: u64,
    /// `labels`: resolve each label set into a series and update that, instead of adding
    /// by label values.
    #[serde(default)]
    resolve: bool,
    /// `deny`: the status and body of the denial.
    #[serde(default = "default_status")]
    status: u16,
    #[serde(default = "default_body")]
    body: String,
    /// `add-header`: the field added to the forwarded request.
    #[serde(default = "default_header")]
    header: String,
    #[serde(default = "default_value")]
    value: String,
    /// `health`: the report.
    #[serde(default = "default_health")]
    health: Health,
    #[serde(default = "default_message")]
    message: String,
}

fn default_series() -> u64 {
    100_000
}

fn default_status() -> u16 {
    403
}

fn default_body() -> String {
    "denied by the hostile plugin".to_owned()
}

fn default_header() -> String {
    "x-hostile".to_owned()
}

fn default_value() -> String {
    "1".to_owned()
}

fn default_health() -> Health {
    Health::Unhealthy
}

fn default_message() -> String {
    "the hostile plugin says so".to_owned()
}

#[derive(Debug)]
struct Hostile {
    settings: Settings,
    series: Option<Counter>,
    body_bytes: Option<Counter>,
    /// The first label value the next `labels` request uses, so every request adds new ones.
    next_label: u64,
}

impl Plugin for Hostile {
    fn init(config: &Config) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        let mut hostile = Hostile {
            series: None,
            body_bytes: None,
            next_label: 0,
            settings,
        };
        match hostile.settings.mode {
            Mode::InitError => return Err("the configuration says no".to_owned()),
            Mode::Labels => {
                hostile.series = Some(Counter::declare(
                    "hostile_series_total",
                    "A series per label value the hostile plugin made up.",
                    &["n"],
                )?);
            }
            Mode::EchoBody => {
                hostile.body_bytes = Some(Counter::declare(
                    "hostile_body_bytes_total",
                    "Bytes of request bodies the hostile plugin read.",
                    &[],
                )?);
            }
            _ => {}
        }
        log::info!("hostile plugin ready in mode {:?}", hostile.settings.mode);
        Ok(hostile)
    }

    fn hooks(&self) -> Hooks {
        if self.settings.mode == Mode::TrapRequest {
            return Hooks::ON_REQUEST | Hooks::ON_RESPONSE | Hooks::HEALTH_CHECK;
        }
        Hooks::ON_REQUEST | Hooks::HEALTH_CHECK
    }

    fn on_request(&mut self, request: &Request) -> Verdict {
        match self.settings.mode {
            Mode::Ok | Mode::InitError | Mode::Health | Mode::HealthLoop => Verdict::Continue,
            Mode::Loop => spin(),
            Mode::Bomb => hoard(),
            Mode::Trap | Mode::TrapRequest => panic!("hostile plugin trapped on purpose"),
            // The wall clock is a WASI import the gateway does not provide.
            Mode::Clock => {
                let now = std::time::SystemTime::now();
                Verdict::add_header("x-now", format!("{now:?}"))
            }
            Mode::Labels => {
                if let Some(counter) = &self.series {
                    let first = self.next_label;
                    self.next_label += self.settings.series;
                    for n in first..self.next_label {
                        if self.settings.resolve {
                            counter.series(&[&n.to_string()]).inc();
                        } else {
                            counter.inc(&[&n.to_string()]);
                        }
                    }
                }
                Verdict::Continue
            }
            Mode::Deny => Verdict::deny(self.settings.status, self.settings.body.clone()),
            Mode::AddHeader => {
                Verdict::add_header(self.settings.header.clone(), self.settings.value.clone())
            }
            Mode::WrongSeries => wrong_series(),
            Mode::EchoSigner => {
                let signer = request.signer();
                Verdict::add_header(
                    "x-signer",
                    signer.map_or_else(
                        || "none".to_owned(),
                        |s| format!("{} {}", s.instance, s.key_id),
                    ),
                )
            }
            Mode::EchoBody => {
                let length = request.body().map_or(0, |body| body.len());
                if let Some(counter) = &self.body_bytes {
                    counter.add(&[], length as f64);
                }
                Verdict::Continue
            }
        }
    }

    fn on_response(&mut self, _request: &Request, _response: &Response) -> ResponseEdit {
        ResponseEdit::default()
    }

    fn health_check(&mut self) -> HealthReport {
        if self.settings.mode == Mode::HealthLoop {
            spin();
        }
        if self.settings.mode != Mode::Health {
            return HealthReport::healthy();
        }
        let status = match self.settings.health {
            Health::Healthy => HealthStatus::Healthy,
            Health::Degraded => HealthStatus::Degraded,
            Health::Unhealthy => HealthStatus::Unhealthy,
        };
        HealthReport {
            status,
            message: self.settings.message.clone(),
        }
    }
}

/// Sets a counter's series as if it were a gauge's, which the SDK's types rule out: the
/// gateway must trap the call.
#[cfg(target_arch = "wasm32")]
fn wrong_series() -> Verdict {
    use fedgate_sdk::__private::bindings::fedgate::plugin::metrics;
    let counter =
        metrics::declare_counter("hostile_wrong_total", "", &[]).expect("the declaration is valid");
    metrics::series_set(counter.series(&[]), 1.0);
    Verdict::Continue
}

/// Natively there is no gateway to trap the call.
#[cfg(not(target_arch = "wasm32"))]
fn wrong_series() -> Verdict {
    panic!("wrong-series needs the gateway")
}

/// Runs until the gateway's deadline interrupts it.
fn spin() -> ! {
    let mut turns: u64 = 0;
    loop {
        turns = black_box(turns.wrapping_add(1));
    }
}

/// Allocates and writes memory until the gateway's memory cap stops it.
fn hoard() -> ! {
    const BLOCK: usize = 1 << 20;
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = Vec::with_capacity(BLOCK);
        block.resize(BLOCK, 0xA5);
        blocks.push(black_box(block));
    }
}

export_plugin!(Hostile);

#[cfg(test)]
mod tests {
    use super::*;
    use fedgate_sdk::testing::{self, TestRequest};

    fn hostile(config: &str) -> Hostile {
        testing::init(config).expect("config is valid")
    }

    #[test]
    fn modes_that_return() {
        let request = TestRequest::post("/").body("12345").build();
        assert_eq!(hostile("{}").on_request(&request), Verdict::Continue);

        let verdict =
            hostile(r#"{"mode": "deny", "status": 451, "body": "no"}"#).on_request(&request);
        assert_eq!(verdict, Verdict::deny(451, "no"));

        let verdict = hostile(r#"{"mode": "add-header", "header": "x-a", "value": "b"}"#)
            .on_request(&request);
        assert_eq!(verdict, Verdict::add_header("x-a", "b"));

        let error = testing::init::<Hostile>(r#"{"mode": "init-error"}"#).unwrap_err();
        assert_eq!(error, "the configuration says no");

        let mut plugin = hostile(r#"{"mode": "health", "health": "degraded", "message": "m"}"#);
        assert_eq!(plugin.health_check(), HealthReport::degraded("m"));
        assert_eq!(hostile("{}").health_check(), HealthReport::healthy());

        let mut plugin = hostile(r#"{"mode": "echo-body"}"#);
        plugin.on_request(&request);
        plugin.on_request(&TestRequest::get("/").build());
        assert_eq!(testing::counter_value("hostile_body_bytes_total", &[]), 5.0);
    }

    #[test]
    fn labels_adds_new_series_on_every_request() {
        testing::set_max_series(1_000_000);
        let mut plugin = hostile(r#"{"mode": "labels", "series": 3}"#);
        let request = TestRequest::get("/").build();
        plugin.on_request(&request);
        plugin.on_request(&request);
        assert_eq!(testing::series("hostile_series_total").len(), 6);
    }

    #[test]
    #[should_panic(expected = "trapped on purpose")]
    fn trap_panics() {
        hostile(r#"{"mode": "trap"}"#).on_request(&TestRequest::get("/").build());
    }

    #[test]
    fn unknown_modes_are_refused() {
        assert!(testing::init::<Hostile>(r#"{"mode": "sulk"}"#).is_err());
    }
}
