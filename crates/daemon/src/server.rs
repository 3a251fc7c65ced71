//! The daemon's life: start (in an order that fails before listening), serve, shut down.
//!
//! Start: lock the state directory (one daemon per state directory: a second one fails here,
//! naming the daemon that holds it), open the engine (the job history), the file area and the
//! sessions, bind every listener, then accept. Shutdown (a signal, or the owner's `Shutdown`):
//! every peer is told in its own dialect (bounded: a peer that does not read cannot hold it
//! up), the engine ends the jobs, connections close, sockets are removed.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::Duration;

use ferry_engine::files::FileArea;
use ferry_engine::sessions::SessionStore;
use ferry_engine::Engine;
use rustix::fs::{flock, FlockOperation};
use tokio::task::JoinSet;

use crate::accept;
use crate::config::{DaemonConfig, DaemonError};
use crate::state::Daemon;

/// Longest wait for every peer to be told the daemon is going down.
const NOTICE_WAIT: Duration = Duration::from_secs(1);

/// Longest wait for connections to close at the end.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// The lock file in the state directory.
pub const STATE_LOCK: &str = "daemon.lock";

/// How often places held in the hub are checked for the end of their grace.
const HUB_TICK: Duration = Duration::from_millis(250);

/// Runs the daemon until `shutdown` resolves or the owner asks it to stop.
pub async fn run(
    config: DaemonConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    if config.listeners.is_empty() {
        return Err(DaemonError::Config("no listener configured".into()));
    }
    keep_inherited_fds_from_jobs();
    ignore_file_size_signal();
    fit_fd_limit(&config);
    for listener in &config.listeners {
        listener.spec.check_served()?;
    }
    let _state_lock = lock_state_dir(&config)?;
    let mut config = config;
    if config.web_token.is_empty() {
        config.web_token = crate::config::new_web_token();
    }
    let engine = Engine::new(config.engine.clone())?;
    let files = FileArea::open(&config.files_dir).map_err(|source| DaemonError::Io {
        context: format!("cannot open the file area {}", config.files_dir.display()),
        source,
    })?;
    let sessions = SessionStore::open(&config.sessions_dir).map_err(|e| DaemonError::Io {
        context: format!(
            "cannot open the sessions directory {}",
            config.sessions_dir.display()
        ),
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut bound = Vec::new();
    for listener in &config.listeners {
        bound.push(accept::bind(listener, &config).await?);
    }
    let server = Arc::new(Daemon::new(engine, files, sessions, config));
    let _ = server.open_listener.set(Box::new(|daemon, listener| {
        Box::pin(async move {
            let bound = accept::bind(&listener, &daemon.config)
                .await
                .map_err(|e| e.to_string())?;
            let address = bound.address().unwrap_or_else(|| ("127.0.0.1".into(), 0));
            daemon.add_listener(bound.stats());
            tokio::spawn(accept::accept_loop(bound, daemon));
            Ok(address)
        })
    }));
    let cluster = match &server.config.cluster {
        Some(config) => {
            Some(crate::cluster::Cluster::start(config, server.engine.peers().clone()).await?)
        }
        None => None,
    };
    let mut listeners = JoinSet::new();
    for bound in bound {
        server.add_listener(bound.stats());
        listeners.spawn(accept::accept_loop(bound, Arc::clone(&server)));
    }
    // Uploads a killed daemon left half-written were never served; now they go.
    let area = Arc::clone(&server.files);
    tokio::task::spawn_blocking(move || {
        let removed = area.sweep_in_flight();
        if removed > 0 {
            tracing::info!("removed {removed} upload(s) a previous daemon left unfinished");
        }
    });
    let hub_ticker = tokio::spawn(expire_held_places(server.engine.peers().clone()));
    if let Some(dir) = &server.config.record_wire {
        tracing::warn!(
            "recording every byte peers send into {} (tokens included)",
            dir.display()
        );
    }
    tracing::info!("jobs are tracked by {}", server.engine.tracking());
    if server.config.console {
        crate::console::spawn(Arc::clone(&server));
    }
    tokio::select! {
        () = shutdown => tracing::info!("shutdown signal received"),
        () = server.shutdown_requested.notified() => tracing::info!("shutdown requested by the owner"),
    }
    // The cluster holds this daemon's members for them to resume elsewhere.
    if let Some(cluster) = &cluster {
        cluster.stop().await;
    }
    // Every peer hears it before its jobs' exits, each in its own dialect.
    let peers = server.engine.peers();
    let told = peers.tell_all_going_down();
    if !peers.wait_until_told(NOTICE_WAIT).await {
        tracing::warn!("some of {told} peers were not told in time that the daemon is going down");
    }
    server.engine.shutdown().await;
    server.closing.send_replace(true);
    // Accept loops wait for their connections to flush (bounded) and then end.
    let closed = tokio::time::timeout(CLOSE_WAIT, async {
        while listeners.join_next().await.is_some() {}
    })
    .await;
    if closed.is_err() {
        tracing::warn!("some connections did not close in time");
    }
    drop(listeners);
    hub_ticker.abort();
    drop(cluster);
    tracing::info!("daemon stopped");
    Ok(())
}

/// Ends the hub's held places whose grace is over, every [`HUB_TICK`].
async fn expire_held_places(peers: ferry_engine::peers::PeerRegistry) {
    let mut tick = tokio::time::interval(HUB_TICK);
    loop {
        tick.tick().await;
        peers.expire_away(std::time::Instant::now());
    }
}

/// Takes the state directory for this daemon: an exclusive lock on `STATE/daemon.lock`, held
/// for the daemon's life, with its pid and listeners written inside for whoever finds it taken.
/// The daemon that holds the state directory `dir`: its pid (from the kernel's table of
/// locks, `/proc/locks`, so that asking takes no lock a starting daemon could trip on) and
/// what it listens on (from the lock file); `None` when no daemon holds it.
pub fn state_dir_holder(dir: &std::path::Path) -> Option<(u32, String)> {
    use std::os::unix::fs::MetadataExt;
    let path = dir.join(STATE_LOCK);
    let meta = std::fs::metadata(&path).ok()?;
    let device = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(meta.dev()),
        rustix::fs::minor(meta.dev()),
        meta.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid = locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE START END"
        (fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&device.as_str()))
            .then(|| fields.get(4)?.parse::<u32>().ok())
            .flatten()
    })?;
    let about = std::fs::read_to_string(&path).unwrap_or_default();
    let listening = about
        .lines()
        .find_map(|line| line.strip_prefix("listening on "))
        .unwrap_or_default()
        .to_owned();
    Some((pid, listening))
}

fn lock_state_dir(config: &DaemonConfig) -> Result<File, DaemonError> {
    let dir = config.engine.state_dir();
    std::fs::create_dir_all(dir).map_err(|source| DaemonError::Io {
        context: format!("cannot create the state directory {}", dir.display()),
        source,
    })?;
    let path = dir.join(STATE_LOCK);
    let mut lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| DaemonError::Io {
            context: format!("cannot open {}", path.display()),
            source,
        })?;
    match flock(&lock, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            return Err(DaemonError::StateDirInUse {
                dir: dir.to_owned(),
                holder: holder.trim().replace('\n', ", "),
            });
        }
        Err(e) => {
            return Err(DaemonError::Io {
                context: format!("cannot lock {}", path.display()),
                source: e.into(),
            })
        }
    }
    let listeners: Vec<String> = config
        .listeners
        .iter()
        .map(|l| l.spec.to_string())
        .collect();
    let about = format!(
        "pid {}\nlistening on {}\n",
        std::process::id(),
        listeners.join(" ")
    );
    let written = lock
        .set_len(0)
        .and_then(|()| lock.rewind())
        .and_then(|()| lock.write_all(about.as_bytes()));
    if let Err(e) = written {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
    Ok(lock)
}

/// Marks every fd above stderr close-on-exec: fds the daemon inherited from whoever started it
/// must not reach its jobs (its own fds are close-on-exec already).
fn keep_inherited_fds_from_jobs() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC closes nothing and touches no memory; it
    // only sets a flag on fds this process owns.
    let result = unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) };
    if result != 0 {
        tracing::warn!(
            "cannot mark inherited fds close-on-exec: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Fds a running job may hold in the daemon (pipes, its log, its pidfd, passed fds).
const FDS_PER_JOB: u64 = 8;
/// Fds the daemon needs beyond its connections and jobs (listeners, the history, runtime).
const FDS_RESERVED: u64 = 128;

/// Raises the daemon's soft limit on open fds, up to the hard limit, if every listener's
/// pools full at once and every running job would not fit under it: a full network
/// listener must not leave the owner's socket without an fd to accept with. Jobs inherit the
/// raised limit. Warns when even the hard limit is too low.
fn fit_fd_limit(config: &DaemonConfig) {
    let connections: u64 = config
        .listeners
        .iter()
        .map(|listener| {
            let limits = listener.limits(&config.connections);
            (limits.per_listener + limits.handshakes_per_listener) as u64
        })
        .sum();
    let needed = connections + config.engine.max_running as u64 * FDS_PER_JOB + FDS_RESERVED;
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let Some(current) = limit.current else { return };
    if current >= needed {
        return;
    }
    let raised = limit.maximum.map_or(needed, |maximum| needed.min(maximum));
    if raised > current {
        let wanted = rustix::process::Rlimit {
            current: Some(raised),
            maximum: limit.maximum,
        };
        match rustix::process::setrlimit(rustix::process::Resource::Nofile, wanted) {
            Ok(()) => tracing::info!("raised the open-files limit from {current} to {raised}"),
            Err(e) => tracing::warn!("cannot raise the open-files limit from {current}: {e}"),
        }
    }
    if raised < needed {
        tracing::warn!(
            "the open-files limit ({raised}) is below what full connection pools and running jobs need ({needed}): lower --max-connections, --max-handshakes or --max-jobs, or raise the hard limit (ulimit -Hn)"
        );
    }
}

/// A log write past a file-size limit (RLIMIT_FSIZE) must fail with EFBIG, not kill the
/// daemon with SIGXFSZ: where such a limit is set, the signal is ignored. (Without one it is
/// never sent, and jobs inherit nothing unusual.) Jobs started in a cgroup of their own, or
/// with a hook, get the default disposition back before they exec; a job started by
/// `posix_spawn` (no cgroups) inherits the ignored signal, as children of `nohup` do.
fn ignore_file_size_signal() {
    let limited = rustix::process::getrlimit(rustix::process::Resource::Fsize)
        .current
        .is_some();
    if limited {
        // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code and
        // touches no memory of ours.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        }
    }
}
