//! The end-to-end suites, one module each, in one test binary: every suite links the
//! gateway and wasmtime, and one binary links them once. Each test still runs in a process
//! of its own under cargo-nextest (`.config/nextest.toml`); run one suite with a filter,
//! `cargo nextest run -p fedgate-tests plugins::`.

mod abuse;
mod auth;
mod deploy;
mod embedding;
mod hardening;
mod health;
mod limits;
mod listener_limits;
mod listeners;
mod metrics;
mod plugins;
mod plugins_live_metrics;
mod plugins_observers;
mod plugins_shipped;
mod pool;
mod process;
mod prometheus;
mod proxy;
mod reload;
mod resilience;
mod sdk_limits;
mod signature_fetch;
mod signatures;
mod tls_sni;
mod uploads;
mod upstream_http1;
