//! `ferry daemon`: runs the daemon in the foreground until SIGTERM, SIGINT or `ferry shutdown`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferry_daemon::{Catalog, DaemonConfig, Dialect, ListenSpec, TlsFiles, Transport};
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
    let (tls, token) = network_credentials(args)?;
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
        tls,
        token,
        allow_any_command: args.allow_any_command,
        catalog: Catalog::default(),
        files_dir: state_dir.join("files"),
    })
}

/// The TLS files and token for network listeners, from --tls-dir and the options that
/// override its files.
fn network_credentials(args: &DaemonArgs) -> Result<(Option<TlsFiles>, Option<String>)> {
    let from_dir = |name: &str| args.tls_dir.as_ref().map(|dir| dir.join(name));
    let cert = args.tls_cert.clone().or_else(|| from_dir("server.pem"));
    let key = args.tls_key.clone().or_else(|| from_dir("server-key.pem"));
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert,
            key,
            client_ca: args.client_ca.clone(),
        }),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together (or give --tls-dir)"),
    };
    let token_file = args.token_file.clone().or_else(|| from_dir("token"));
    let token = match token_file {
        Some(path) => Some(crate::endpoint::read_token(&path)?),
        None => None,
    };
    Ok((tls, token))
}
