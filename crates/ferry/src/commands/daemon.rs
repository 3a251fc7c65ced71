//! `ferry daemon`: runs the daemon in the foreground until SIGTERM, SIGINT or `ferry shutdown`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferry_daemon::{DaemonConfig, Dialect, ListenSpec, Transport};
use ferry_engine::EngineConfig;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

use crate::cli::DaemonArgs;

/// Runs the daemon.
pub fn run(socket: &Path, args: DaemonArgs) -> Result<()> {
    if args.background {
        // Leave the starting client's session, so its terminal's signals never reach us.
        // Failing means we already lead a session or group: nothing to leave.
        let _ = rustix::process::setsid();
    }
    ferry_engine::signals::reset_inherited_signal_state();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(!args.background)
        .init();
    let config = config(socket, &args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Every running job's output pump holds a blocking thread; log reads need a few more.
        .max_blocking_threads(args.max_jobs.saturating_add(64))
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        };
        ferry_daemon::run(config, shutdown).await?;
        Ok(())
    })
}

fn config(socket: &Path, args: &DaemonArgs) -> Result<DaemonConfig> {
    let listeners = if args.listen.is_empty() {
        vec![ListenSpec {
            dialect: Dialect::Ferry,
            transport: Transport::Unix(socket.to_owned()),
        }]
    } else {
        args.listen
            .iter()
            .map(|spec| ListenSpec::parse(spec))
            .collect::<Result<Vec<_>, _>>()?
    };
    for spec in &listeners {
        spec.check_served()?;
    }
    for (name, value) in [
        ("--max-jobs", args.max_jobs),
        ("--max-connections", args.max_connections),
        ("--max-finished", args.max_finished),
    ] {
        if value == 0 {
            bail!("{name} must be at least 1");
        }
    }
    if args.max_frame_size < ferry_wire::MAX_OUTPUT_CHUNK {
        bail!(
            "--max-frame-size must be at least {} bytes (one output chunk)",
            ferry_wire::MAX_OUTPUT_CHUNK
        );
    }
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(crate::default_state_dir);
    let mut engine = EngineConfig::new(state_dir.join("jobs"));
    engine.max_running = args.max_jobs;
    engine.max_queued = args.max_queued;
    engine.max_finished = args.max_finished;
    engine.kill_grace = Duration::from(args.kill_grace);
    engine.log_limits.max_stored = args.max_log_size;
    Ok(DaemonConfig {
        listeners,
        engine,
        max_frame: args.max_frame_size,
        max_connections: args.max_connections,
        handshake_timeout: Duration::from(args.handshake_timeout),
    })
}
