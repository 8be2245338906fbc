//! `fhirseal serve`: the gateway itself. Loads the configuration, starts logging, binds the FHIR
//! address and the admin API's (loopback only, `server.admin_listen`), builds the state, starts
//! the background tasks (the ciphertext-update job, re-reading the blind-index secret's
//! generations, the warm-up of the caches), serves until SIGTERM or Ctrl-C, then drains: new
//! connections are refused, requests in flight get up to [`DRAIN`] to finish.
//!
//! Logs go to standard error (human-readable, or JSON with `FHIRSEAL_LOG_FORMAT=json`; the level
//! from `RUST_LOG`, `info` by default); audit lines go to standard output or `server.audit_log`.

use fhirseal_authority::unix_now as now;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use fhirseal::admin::{AdminAccess, admin_router, log_periods_warning};
use fhirseal::app::app;
use fhirseal::audit::audited;
use fhirseal::config::Config;
use fhirseal::ctupdate;
use fhirseal::state::AppState;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing_subscriber::EnvFilter;

/// The arguments of `fhirseal serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The configuration file [default: the embedded defaults]. `FHIRSEAL__SECTION__KEY`
    /// variables override its keys. The container image sets `FHIRSEAL_CONFIG`, so that it never
    /// runs on the embedded defaults (demo users, the example policy).
    #[arg(long, env = "FHIRSEAL_CONFIG")]
    config: Option<PathBuf>,
}

/// How long requests in flight may take to finish once a stop is asked for.
const DRAIN: Duration = Duration::from_secs(10);

/// Runs the gateway until it is stopped: exit status 0 after a drain, 1 (with one line on
/// standard error) when it cannot start or stops on an error.
pub(crate) fn run(args: Args) -> ExitCode {
    let json_logs = init_logging();
    match serve(args, json_logs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            let _ = writeln!(std::io::stderr().lock(), "error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: Args, json_logs: bool) -> Result<(), String> {
    let config =
        Config::load(args.config.as_deref(), std::env::vars()).map_err(|e| e.to_string())?;
    huge_pages_off();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("the async runtime cannot start: {e}"))?;
    let result = runtime.block_on(serve_until_stopped(config, json_logs));
    // Key tasks still running after the drain are not waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Turns transparent huge pages off for the gateway's process, before its runtime starts.
///
/// mimalloc asks the kernel for huge pages on its arenas (`MADV_HUGEPAGE`), so the first touch
/// of each 2 MiB of heap zeroes all of it at once, inside whichever request touches it. On a
/// virtual machine whose host backs memory lazily that took 20–75 ms: the first searches after a
/// restart, and now and then a later one, stalled for it (BENCHMARKS.md, "The hot path,
/// seventeenth round"). With them off a fault zeroes 4 KiB, and the process held about 40 MB
/// after a start and fifteen searches instead of 65–85 MB, for no measurable CPU per request.
/// The kernel checks the flag at every fault, so memory mapped before this call is covered too.
/// A refusal (a kernel before 3.15, a seccomp filter) is logged and the gateway goes on: it
/// costs latency, not correctness.
fn huge_pages_off() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(%error, "transparent huge pages stay on for the gateway's process");
    }
}

async fn serve_until_stopped(config: Config, json_logs: bool) -> Result<(), String> {
    let listener = bind(config.listen, "server.listen").await?;
    let admin_listener = match config.admin_listen {
        Some(address) => Some(bind(address, "server.admin_listen").await?),
        None => None,
    };
    // The admin tokens (the default file made on first start) before anything is served.
    let admin_tokens = match &config.admin_tokens {
        Some(source) => Some(source.load()?),
        None => None,
    };
    // On a blocking thread: the authority's PostgreSQL client is synchronous and may not block
    // the runtime's threads (it panics there).
    let state = tokio::task::spawn_blocking(move || AppState::build(config, now()))
        .await
        .map_err(|_| "the gateway's state could not be built".to_string())?
        .map_err(|e| e.to_string())?;
    let stop_signal = StopSignal::register()?;

    // Every listener and the background tasks stop when `stop` turns true.
    let (stop, stopping) = watch::channel(false);
    let mut servers = JoinSet::new();
    spawn_server(&mut servers, listener, app(state.clone()), &stopping);
    if let (Some(listener), Some((tokens, _))) = (admin_listener, &admin_tokens) {
        let access = AdminAccess::new(
            listener.local_addr().map_err(|e| e.to_string())?,
            tokens.clone(),
        );
        spawn_server(
            &mut servers,
            listener,
            audited(admin_router(state.clone(), access), state.audit.clone()),
            &stopping,
        );
    }
    let background = ctupdate::spawn_background(
        state.clone(),
        state.config.ct_update.interval,
        stopped(stopping.clone()),
    );
    let index_refresh = state.sealing.spawn_index_refresh(stopped(stopping.clone()));
    let consent_refresh = fhirseal::consent::spawn_background(&state, stopped(stopping.clone()));
    // Served meanwhile; `/ready` says ready once it ends (at most its budget).
    let (warm_seconds, warm_callers) = state.config.warm_up;
    if warm_seconds > 0 {
        let settings = fhirseal::warm::WarmSettings {
            callers: warm_callers,
            budget: Duration::from_secs(warm_seconds),
        };
        fhirseal::warm::spawn(&state, now(), settings);
    }

    announce(
        &state,
        admin_tokens.as_ref().map(|(_, from)| from.as_str()),
        json_logs,
    );
    let authority = std::sync::Arc::clone(&state.authority);
    if let Ok(Ok(info)) = tokio::task::spawn_blocking(move || authority.period_info(now())).await {
        log_periods_warning(&info, true);
    }
    tokio::select! {
        () = stop_signal.received() => {}
        ended = servers.join_next() => {
            return Err(match ended {
                Some(Ok(Err(e))) => format!("the server stopped: {e}"),
                _ => "the server stopped unexpectedly".to_string(),
            });
        }
    }
    tracing::info!(
        drain_seconds = DRAIN.as_secs(),
        "stopping: draining requests in flight"
    );
    stop.send_replace(true);
    let drained = tokio::time::timeout(DRAIN, async {
        while let Some(ended) = servers.join_next().await {
            if let Ok(Err(error)) = ended {
                tracing::warn!(%error, "a listener ended with an error while draining");
            }
        }
        let _ = background.await;
        let _ = index_refresh.await;
        let _ = consent_refresh.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            drain_seconds = DRAIN.as_secs(),
            "requests still in flight after the drain were cut off"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// Binds `address`; the error names it and the configuration key it came from.
async fn bind(address: SocketAddr, key: &str) -> Result<TcpListener, String> {
    TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address} (`{key}`): {e}"))
}

/// Serves `router` on `listener` until `stopping` turns true, then finishes the requests in
/// flight. Handlers see the peer's address as `ConnectInfo<SocketAddr>` (the embedded
/// authorization server throttles sign-ins per source with it).
fn spawn_server(
    servers: &mut JoinSet<std::io::Result<()>>,
    listener: TcpListener,
    router: Router,
    stopping: &watch::Receiver<bool>,
) {
    let stopping = stopping.clone();
    servers.spawn(async move {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service)
            .with_graceful_shutdown(stopped(stopping))
            .await
    });
}

/// Completes once a stop is asked for (or the sender is gone).
async fn stopped(mut stopping: watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Says where the gateway serves: a plain line on standard error, or a log event with JSON logs.
/// `admin_tokens` says where the admin tokens are.
fn announce(state: &AppState, admin_tokens: Option<&str>, json_logs: bool) {
    let fhir_base = &state.config.fhir_base;
    let discovery = format!("{fhir_base}/.well-known/smart-configuration");
    let admin = match (state.config.admin_listen, admin_tokens) {
        (Some(address), Some(tokens)) => format!("http://{address} (bearer token {tokens})"),
        _ => "off".to_string(),
    };
    if json_logs {
        tracing::info!(listen = %state.config.listen, %fhir_base, smart_configuration = %discovery, %admin, "serving");
    } else {
        let _ = writeln!(
            std::io::stderr().lock(),
            "fhirseal: serving FHIR at {fhir_base} (listening on {}); SMART configuration at \
             {discovery}; admin API {admin}",
            state.config.listen
        );
    }
}

/// Logging to standard error: the level from `RUST_LOG` (`info` when unset or invalid), JSON
/// with `FHIRSEAL_LOG_FORMAT=json`. Returns whether logs are JSON.
fn init_logging() -> bool {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("FHIRSEAL_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A subscriber already set (never, in the binary) keeps logging where it was.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    json
}

/// SIGTERM or SIGINT (Ctrl-C), registered before the gateway announces itself so that a stop
/// asked for right after is never missed.
struct StopSignal {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignal {
    fn register() -> Result<Self, String> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let failed = |e| format!("cannot handle stop signals: {e}");
            Ok(Self {
                terminate: signal(SignalKind::terminate()).map_err(failed)?,
                interrupt: signal(SignalKind::interrupt()).map_err(failed)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn received(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
