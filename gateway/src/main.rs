//! The `fedgate` command: `run`, `check`, `demo`, `demo-upstream` and `plugin check`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use fedgate::config::{self, LogFormat, DEFAULT_EVENT_INTERVAL};
use fedgate::{Gateway, Metrics, PluginHost};
use tokio::signal::unix::{signal, SignalKind};

// Proxying allocates many small, short-lived buffers across threads, a pattern mimalloc
// serves with less contention than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns the calling thread's unused mimalloc pages to the system (see `fedgate::memory`).
#[allow(unsafe_code)] // one FFI call into the allocator the binary links
fn trim_heap() {
    // SAFETY: mi_collect only walks the calling thread's own heap and the shared arenas.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[derive(Debug, Parser)]
#[command(
    name = "fedgate",
    version,
    about = "Monitoring gateway for federation services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway with a configuration file.
    Run {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration file and exit (non-zero, naming the field, when invalid).
    Check {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run the gateway in front of a built-in demo federation server, no file needed.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = config::DEFAULT_ADMIN_ADDRESS)]
        admin: SocketAddr,
    },
    /// Run only the built-in demo federation server.
    DemoUpstream {
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
    },
    /// Plugin tools.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Validate a plugin component against the ABI and print what it exports and imports.
    Check {
        #[arg(value_name = "FILE.wasm")]
        file: PathBuf,
    },
}

/// Turns transparent huge pages off for this process, unless the operator chose through
/// `MIMALLOC_ALLOW_THP`. With them (the kernel's `madvise` or `always` mode), the heap's
/// resident set moves in 2 MiB steps that outlive what they held: measured under reloads,
/// 42–51 MiB with them against a steady 28 MiB without (docs/benchmarks.md).
#[allow(unsafe_code)] // one prctl(2) call on the process itself
fn disable_thp() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments and changes only this process's
    // memory policy; failure (an old kernel) leaves THP as it was.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    disable_thp();
    fedgate::memory::install(trim_heap);
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => run(config),
        Command::Demo { listen, admin } => demo(listen, admin),
        Command::DemoUpstream { listen } => demo_upstream(listen),
        Command::Plugin {
            command: PluginCommand::Check { file },
        } => plugin_check(&file),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fedgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    match config::load(path) {
        Ok(c) => {
            // Plugins are compiled and initialised as at start-up: a plugin that would stop
            // the gateway from starting fails the check.
            if !c.plugins.is_empty() {
                let host = standalone_plugin_host()?;
                // A cache directory that exists must be usable; one that does not is
                // created at start-up. The check compiles without it.
                if let Some(dir) = c.server.plugin_cache.as_ref().filter(|d| d.exists()) {
                    if let Err(e) = host.cache(dir) {
                        eprintln!("{}: {e}", path.display());
                        return Ok(ExitCode::from(2));
                    }
                }
                for (name, p) in &c.plugins {
                    let loaded = config::read_file(&p.path, config::MAX_PLUGIN_FILE)
                        .map_err(|e| format!("{}: {e}", p.path.display()))
                        .and_then(|bytes| host.load(p, &bytes, None));
                    if let Err(e) = loaded {
                        eprintln!("{}: plugins.{name}: {e}", path.display());
                        return Ok(ExitCode::from(2));
                    }
                }
            }
            eprintln!(
                "{}: ok ({} listeners, {} upstreams, {} routes, {} plugins)",
                path.display(),
                c.listeners.len(),
                c.upstreams.len(),
                c.routes.len(),
                c.plugins.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            Ok(ExitCode::from(2))
        }
    }
}

/// A plugin host for the commands that load plugins without serving: its metrics go nowhere.
fn standalone_plugin_host() -> anyhow::Result<PluginHost> {
    let metrics = Metrics::new(prometheus::Registry::new())?;
    PluginHost::new(&metrics, 1).map_err(anyhow::Error::msg)
}

#[allow(clippy::print_stdout)] // the report is the command's output
fn plugin_check(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let bytes = config::read_file(file, config::MAX_PLUGIN_FILE)
        .with_context(|| file.display().to_string())?;
    match standalone_plugin_host()?.inspect(&bytes) {
        Ok(i) => {
            let mut out = format!(
                "{}: ok, a fedgate plugin for ABI fedgate:plugin@{} ({} bytes)\n",
                file.display(),
                i.version,
                bytes.len()
            );
            for e in &i.exports {
                out += &format!("  export {e}\n");
            }
            for imp in &i.imports {
                let note = if i.trapping_imports.contains(imp) {
                    " (not provided: calls trap)"
                } else {
                    ""
                };
                out += &format!("  import {imp}{note}\n");
            }
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            Ok(ExitCode::from(2))
        }
    }
}

fn runtime(workers: usize, event_interval: u32) -> anyhow::Result<tokio::runtime::Runtime> {
    // One worker runs on the calling thread: no cross-thread wake-ups at all.
    let mut builder = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers).thread_name("fedgate-worker");
        b
    };
    Ok(builder
        .event_interval(event_interval)
        .enable_all()
        .build()?)
}

fn run(path: PathBuf) -> anyhow::Result<ExitCode> {
    let cfg = match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fedgate: {}: {e}", path.display());
            return Ok(ExitCode::from(2));
        }
    };
    fedgate::logging::init(cfg.server.log_format, &cfg.server.log_level);
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    runtime(cfg.server.workers, cfg.server.event_interval)?.block_on(async move {
        let workers = cfg.server.workers;
        let gateway = Gateway::start(cfg, Some(path))
            .await
            .map_err(anyhow::Error::msg)?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            workers,
            "fedgate started"
        );
        serve_until_signal(gateway, true).await
    })
}

fn demo(listen: SocketAddr, admin: SocketAddr) -> anyhow::Result<ExitCode> {
    fedgate::logging::init(LogFormat::Text, "info");
    runtime(
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        DEFAULT_EVENT_INTERVAL,
    )?
    .block_on(async move {
        let upstream = fedgate::demo::spawn_upstream("127.0.0.1:0".parse()?)
            .await
            .context("starting the demo upstream")?;
        let cfg = fedgate::demo::config(listen, admin, upstream)?;
        let gateway = Gateway::start(cfg, None)
            .await
            .map_err(anyhow::Error::msg)?;
        tracing::info!(
            "demo: try `curl http://{listen}/users/alice` and `curl http://{}/metrics`",
            gateway.admin_addr()
        );
        serve_until_signal(gateway, false).await
    })
}

fn demo_upstream(listen: SocketAddr) -> anyhow::Result<ExitCode> {
    fedgate::logging::init(LogFormat::Text, "info");
    runtime(1, DEFAULT_EVENT_INTERVAL)?.block_on(async move {
        let addr = fedgate::demo::spawn_upstream(listen).await?;
        tracing::info!(address = %addr, "demo federation server listening");
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Serves until SIGTERM/SIGINT, reloading on SIGHUP, then drains.
async fn serve_until_signal(gateway: Gateway, reloadable: bool) -> anyhow::Result<ExitCode> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                if reloadable {
                    tracing::info!("SIGHUP: reloading configuration");
                    // The outcome is logged and counted by the reload itself.
                    let _ = gateway.reload().await;
                } else {
                    tracing::info!("SIGHUP ignored: no configuration file");
                }
            }
        }
    }
    let clean = gateway.shutdown().await;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
