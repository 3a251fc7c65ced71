//! Binding listeners and admitting their connections: the connection layer's front door,
//! the same for every dialect.
//!
//! [`bind`] opens a listener by the rules: a private directory and one daemon per Unix socket;
//! TLS with a certificate; every listener of an authenticating dialect beyond the owner's
//! socket with a token or client certificates; plaintext TCP on loopback addresses only,
//! unless the configuration file opts that listener out (a warning is logged). [`accept_loop`]
//! then admits each connection: the peer's uid on a Unix socket (the owner only), the TLS
//! handshake under the handshake time limit (a verified client certificate names the peer and
//! gives it a file area of its own), a place in the listener's pools and its principal's
//! count (see [`admission`]: a connection still authenticating holds a handshake place, which
//! its adapter trades for an authenticated one once its handshake shows who it is), and a
//! place in the engine's peer registry. A connection that is not admitted gets one refusal in
//! its dialect's own words and is closed (one refused before its TLS handshake is closed
//! without a word: there is no way to say one). An admitted one gets its outbox, its time
//! limits (none on a FIFO pair, which waits for its client), its place in accept order where
//! its dialect keeps one, and is handed to its dialect's adapter as a [`Conn`], whose one
//! reader keeps the rest of the layer's promises (see [`crate::reader`]).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ferry_engine::peers::NewPeer;
use ferry_engine::Principal;
use ferry_io::fdpass::{FdInbox, FdReadHalf};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::admission::{Admission, ListenerPools};
use crate::config::{CommandPolicy, DaemonConfig, DaemonError, Listener, TlsFiles};
use crate::conn::{became_true, peer_name, Conn, Ends, Io, Limits, Peer};
use crate::listeners::Row;
use crate::order::Sequencer;
use crate::outbox::{Outbox, FLUSH_WAIT};
use crate::policy::{Access, RefusalKind};
use crate::spec::{ListenSpec, Transport, TransportKind};
use crate::state::{Daemon, ListenerStats};
use crate::transport::{fifo, peer_uid, record, tls, unix, BoxRead, BoxWrite};

/// How long a refusal may take to write before the connection is dropped.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

/// A listener, bound and ready to accept.
pub(crate) struct Bound {
    socket: Socket,
    row: &'static Row,
    access: Access,
    pools: Arc<ListenerPools>,
    /// Its connections in accept order, where its dialect keeps one.
    order: Option<Arc<Sequencer>>,
    /// What it counts.
    stats: Arc<ListenerStats>,
    /// The Unix socket's lock and file, released and removed when dropped.
    _guard: Option<unix::UnixSocketGuard>,
}

enum Socket {
    Unix(UnixListener),
    Tcp(TcpListener, Option<TlsAcceptor>),
    Fifo(fifo::FifoPair),
}

/// Binds one listener, enforcing the rules (see the module documentation).
pub(crate) async fn bind(listener: &Listener, config: &DaemonConfig) -> Result<Bound, DaemonError> {
    let spec = &listener.spec;
    let row = crate::listeners::row(spec.dialect);
    let (host, port, tls) = match &spec.transport {
        Transport::Unix(path) => {
            let (socket, guard) = unix::bind(path)?;
            // Only the owner's uid is admitted here.
            let access = Access {
                principal: Some(Principal::Owner),
                tokens: Arc::from([]),
                commands: listener.commands.unwrap_or(CommandPolicy::Any),
                see_all_jobs: true,
                files_root: config.files_dir.clone(),
            };
            tracing::info!("listening on {spec} ({})", commands_text(access.commands));
            return Ok(Bound {
                socket: Socket::Unix(socket),
                row,
                access,
                pools: pools(spec, listener, config),
                order: order(row),
                stats: listener_stats(row, spec),
                _guard: Some(guard),
            });
        }
        Transport::Tcp { host, port } => (host, *port, false),
        Transport::Tls { host, port } => (host, *port, true),
        Transport::Fifo { input, output } => {
            let pair = fifo::FifoPair::bind(&spec.to_string(), input, output)?;
            // Whoever may write the FIFOs (mode 0600: the owner) talks to a dialect without
            // authentication of its own: anonymous, catalog commands unless opted out.
            let commands = match listener.commands {
                Some(policy) => policy,
                None if config.allow_any_command => CommandPolicy::Any,
                None => CommandPolicy::Catalog,
            };
            let access = Access {
                principal: Some(Principal::anonymous(
                    row.contract.name,
                    Some(rustix::process::getuid().as_raw()),
                )),
                tokens: Arc::from([]),
                commands,
                see_all_jobs: false,
                files_root: config.files_dir.clone(),
            };
            tracing::info!("listening on {spec} ({})", commands_text(commands));
            return Ok(Bound {
                socket: Socket::Fifo(pair),
                row,
                access,
                pools: pools(spec, listener, config),
                order: order(row),
                stats: listener_stats(row, spec),
                _guard: None,
            });
        }
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|source| DaemonError::Io {
            context: format!("listener {spec}: cannot resolve {host}"),
            source,
        })?
        .collect();
    let Some(&addr) = addrs.first() else {
        return Err(DaemonError::Config(format!(
            "listener {spec}: {host} has no address"
        )));
    };
    let loopback = addrs.iter().all(|a| a.ip().is_loopback());
    if !tls && !loopback {
        if !listener.allow_non_loopback {
            // TLS is advised only where the dialect is served over it: the foreign dialects'
            // own clients speak plaintext.
            let instead = if spec.dialect.transports().contains(&TransportKind::Tls) {
                let as_tls = ListenSpec {
                    dialect: spec.dialect,
                    transport: Transport::Tls {
                        host: host.clone(),
                        port,
                    },
                };
                format!("use TLS ({as_tls} with certificates from `ferry tls init`), or")
            } else {
                format!(
                    "the {} dialect is not served over TLS (its own clients speak plaintext TCP): serve it on a loopback address, or",
                    spec.dialect.name()
                )
            };
            return Err(DaemonError::Config(format!(
                "listener {spec}: plaintext TCP is served on loopback addresses only (127.0.0.0/8, ::1); {instead}, knowing that anyone who can reach {host} can then use it, set allow_non_loopback = true for this listener in the configuration file"
            )));
        }
        tracing::warn!(
            "listener {spec}: plaintext TCP beyond loopback (allow_non_loopback = true): anyone who can reach {host}:{port} can talk to this daemon unencrypted"
        );
    }
    let acceptor = if tls {
        Some(tls_acceptor(listener, config)?)
    } else {
        None
    };
    let client_certs =
        tls && listener_tls_files(listener, config).is_some_and(|t| t.client_ca.is_some());
    // A row that takes the daemon's web token always has a way in.
    if row.contract.authenticates && !row.owner_token && config.tokens.is_empty() && !client_certs {
        return Err(DaemonError::Config(format!(
            "listener {spec}: a network listener needs a way to authenticate clients: a token (--token-file, or DIR/token with --tls-dir) or client certificates (--client-ca)"
        )));
    }
    let commands = match listener.commands {
        Some(policy) => policy,
        None if config.allow_any_command => CommandPolicy::Any,
        None => CommandPolicy::Catalog,
    };
    let socket = TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Io {
            context: format!("listener {spec}: cannot listen on {addr}"),
            source,
        })?;
    let local = socket.local_addr().map_err(|source| DaemonError::Io {
        context: format!("listener {spec}"),
        source,
    })?;
    let (host, port) = (local.ip().to_string(), local.port());
    let bound_spec = ListenSpec {
        dialect: spec.dialect,
        transport: if tls {
            Transport::Tls { host, port }
        } else {
            Transport::Tcp { host, port }
        },
    };
    tracing::info!("listening on {bound_spec} ({})", commands_text(commands));
    // An authenticating dialect learns its peer's principal from a client certificate or its
    // handshake's token; another dialect's peers are anonymous (on loopback, see above).
    let principal =
        (!row.contract.authenticates).then(|| Principal::anonymous(row.contract.name, None));
    let access = Access {
        principal,
        tokens: config.tokens.clone().into(),
        commands,
        see_all_jobs: listener.see_all_jobs,
        files_root: config.files_dir.clone(),
    };
    Ok(Bound {
        socket: Socket::Tcp(socket, acceptor),
        row,
        access,
        pools: pools(&bound_spec, listener, config),
        order: order(row),
        stats: listener_stats(row, &bound_spec),
        _guard: None,
    })
}

impl Bound {
    /// What it counts (which the daemon lists once it serves it).
    pub(crate) fn stats(&self) -> Arc<ListenerStats> {
        Arc::clone(&self.stats)
    }

    /// The host and port a TCP listener got.
    pub(crate) fn address(&self) -> Option<(String, u16)> {
        match &self.socket {
            Socket::Tcp(listener, _) => listener
                .local_addr()
                .ok()
                .map(|a| (a.ip().to_string(), a.port())),
            _ => None,
        }
    }
}

/// A listener's counters, named by its dialect and its spec as bound.
fn listener_stats(row: &Row, spec: &ListenSpec) -> Arc<ListenerStats> {
    Arc::new(ListenerStats {
        dialect: row.contract.name,
        listener: spec.to_string(),
        ..ListenerStats::default()
    })
}

/// A listener's accept order, if its dialect keeps one.
fn order(row: &Row) -> Option<Arc<Sequencer>> {
    row.contract.accept_order.then(Arc::default)
}

/// A listener's admission pools: its own sizes, or the daemon's.
fn pools(spec: &ListenSpec, listener: &Listener, config: &DaemonConfig) -> Arc<ListenerPools> {
    let limits = listener.limits(&config.connections);
    Arc::new(ListenerPools::new(
        spec.to_string(),
        limits.handshakes_per_listener,
        limits.per_listener,
    ))
}

fn commands_text(commands: CommandPolicy) -> &'static str {
    match commands {
        CommandPolicy::Any => "any command",
        CommandPolicy::Catalog => "catalog commands only",
    }
}

/// The TLS files of a listener: the daemon's, with the listener's own client CA if it has one.
fn listener_tls_files(listener: &Listener, config: &DaemonConfig) -> Option<TlsFiles> {
    config.tls.as_ref().map(|files| TlsFiles {
        client_ca: listener
            .client_ca
            .clone()
            .or_else(|| files.client_ca.clone()),
        ..files.clone()
    })
}

fn tls_acceptor(listener: &Listener, config: &DaemonConfig) -> Result<TlsAcceptor, DaemonError> {
    match listener_tls_files(listener, config) {
        Some(files) => tls::acceptor(&files),
        None => Err(DaemonError::Config(format!(
            "listener {}: TLS needs a certificate and key (--tls-dir DIR from `ferry tls init`, or --tls-cert and --tls-key)",
            listener.spec
        ))),
    }
}

/// Accepts connections until the daemon closes, each admitted and served by a task of its
/// own, then waits for those tasks to end.
pub(crate) async fn accept_loop(bound: Bound, daemon: Arc<Daemon>) {
    let mut connections = JoinSet::new();
    let mut closing = daemon.closing.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = accept(&bound.socket) => accepted,
            () = became_true(&mut closing) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        match accepted {
            Ok(incoming) => {
                let Some(admission) = Admission::start(&bound.pools, &daemon.principals) else {
                    bound.stats.refused.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(refuse_handshake(
                        incoming,
                        bound.row,
                        Arc::clone(&bound.pools),
                    ));
                    continue;
                };
                // Taken here, in accept order.
                let turn = match (&bound.order, &incoming) {
                    (Some(order), Incoming::Tcp(stream, ..)) => order.take(stream),
                    _ => None,
                };
                let (row, access, daemon) = (bound.row, bound.access.clone(), Arc::clone(&daemon));
                let stats = Arc::clone(&bound.stats);
                connections.spawn(async move {
                    let admitted = Admitted {
                        admission,
                        row,
                        access,
                        turn,
                        stats,
                    };
                    admit(incoming, admitted, Arc::clone(&daemon)).await;
                    // What the connection held is free now: worth a trim after a burst.
                    daemon.engine.connection_ended();
                });
            }
            Err(e) => {
                // Out of fds or similar: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(bound);
    while connections.join_next().await.is_some() {}
}

/// A connection just accepted.
enum Incoming {
    Unix(UnixStream),
    Tcp(TcpStream, SocketAddr, Option<TlsAcceptor>),
    Fifo(fifo::FifoConnection),
}

impl Incoming {
    /// Its transport.
    fn kind(&self) -> TransportKind {
        match self {
            Incoming::Unix(_) => TransportKind::Unix,
            Incoming::Tcp(_, _, Some(_)) => TransportKind::Tls,
            Incoming::Tcp(_, _, None) => TransportKind::Tcp,
            Incoming::Fifo(_) => TransportKind::Fifo,
        }
    }
}

async fn accept(socket: &Socket) -> std::io::Result<Incoming> {
    match socket {
        Socket::Unix(listener) => Ok(Incoming::Unix(listener.accept().await?.0)),
        Socket::Fifo(pair) => Ok(Incoming::Fifo(pair.accept().await?)),
        Socket::Tcp(listener, tls) => {
            let (stream, addr) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok(Incoming::Tcp(stream, addr, tls.clone()))
        }
    }
}

/// A connection that found its listener's handshake pool full: refused in its dialect's words
/// where it is plaintext, closed at once over TLS (no word can reach it before a handshake,
/// and making one would spend what the pool protects).
async fn refuse_handshake(incoming: Incoming, row: &'static Row, pools: Arc<ListenerPools>) {
    let message = pools.handshakes_full();
    match incoming {
        Incoming::Unix(mut stream) => {
            tracing::warn!(
                dialect = row.contract.name,
                "refused a connection: {message}"
            );
            refuse(&mut stream, row, RefusalKind::LimitReached, &message).await;
        }
        Incoming::Tcp(mut stream, addr, tls) => {
            tracing::warn!(%addr, dialect = row.contract.name, "refused a connection: {message}");
            if tls.is_none() {
                refuse(&mut stream, row, RefusalKind::LimitReached, &message).await;
            }
        }
        // The pair's one connection at a time never fills a pool of 64.
        Incoming::Fifo(mut pair) => {
            tracing::warn!(
                dialect = row.contract.name,
                "refused a FIFO connection: {message}"
            );
            refuse(&mut pair.write, row, RefusalKind::LimitReached, &message).await;
        }
    }
}

/// What the listener decided of a connection it accepted.
struct Admitted {
    admission: Admission,
    row: &'static Row,
    access: Access,
    turn: Option<crate::order::Turn>,
    stats: Arc<ListenerStats>,
}

/// A connection that passed its transport's checks.
struct Passed {
    read: BoxRead,
    write: BoxWrite,
    fds: Option<FdInbox>,
    name: String,
    ends: Ends,
    access: Access,
}

impl Passed {
    /// A TCP or TLS connection (no fds; named as far as its admission tells).
    fn network(read: BoxRead, write: BoxWrite, ends: Ends, access: Access) -> Passed {
        Passed {
            read,
            write,
            fds: None,
            name: peer_name(access.principal.as_ref()),
            ends,
            access,
        }
    }
}

/// Admits a connection (see the module documentation) and serves it.
async fn admit(incoming: Incoming, admitted: Admitted, daemon: Arc<Daemon>) {
    let Admitted {
        mut admission,
        row,
        access,
        turn,
        stats,
    } = admitted;
    let contract = row.contract;
    let timeout = daemon.config.handshake_timeout;
    let transport = incoming.kind();
    let limits = match transport {
        // The pair is the daemon's own, opened before any client: it waits as long as it
        // takes.
        TransportKind::Fifo => Limits {
            first: None,
            idle: None,
        },
        _ => Limits {
            first: Some((Instant::now() + timeout, timeout)),
            idle: daemon
                .config
                .idle_timeout
                .filter(|_| !contract.authenticates),
        },
    };
    let passed = match incoming {
        Incoming::Unix(stream) => admit_unix(stream, row, access).await,
        Incoming::Tcp(stream, addr, tls) => admit_tcp(stream, addr, tls, row, access, limits).await,
        Incoming::Fifo(pair) => Some(Passed {
            read: Box::new(pair.read),
            write: Box::new(pair.write),
            fds: None,
            name: "fifo".into(),
            ends: Ends {
                local: String::new(),
                remote: pair.address,
                uid: None,
            },
            access,
        }),
    };
    let Some(mut passed) = passed else {
        stats.refused.fetch_add(1, Ordering::Relaxed);
        return;
    };
    // A principal known already (the owner's uid, a client certificate, an anonymous
    // dialect) is authenticated now; a token is shown in the dialect's handshake.
    if let Some(principal) = &passed.access.principal {
        if let Err(refusal) = admission.establish(principal) {
            tracing::warn!(
                from = passed.ends.remote,
                dialect = contract.name,
                "refused a connection: {}",
                refusal.message
            );
            refuse(&mut passed.write, row, refusal.kind, &refusal.message).await;
            stats.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    let handle = daemon.engine.peers().register(NewPeer {
        name: passed.name,
        address: passed.ends.remote.clone(),
        dialect: contract.name.into(),
        principal: passed.access.principal.clone(),
    });
    // Every connection is a line at debug (`--verbose`; `--tiny` shows these alone): a busy
    // daemon's log at the default level says what matters.
    tracing::debug!(
        target: "ferry::presence",
        peer = handle.id(),
        from = passed.ends.remote,
        dialect = contract.name,
        "connected"
    );
    let id = handle.id().to_owned();
    let Some(serve) = row.serve else { return };
    let read = record::recorded(
        passed.read,
        daemon.config.record_wire.as_deref(),
        contract.name,
        &id,
    );
    let (out, writer) = Outbox::start(passed.write, contract.writes);
    let io = Io {
        read,
        fds: passed.fds,
        out,
        peer: Peer::new(handle, admission),
        limits,
        turn,
    };
    stats.accepted.fetch_add(1, Ordering::Relaxed);
    stats.open.fetch_add(1, Ordering::Relaxed);
    serve(Conn::new(
        contract,
        transport,
        passed.access,
        passed.ends,
        daemon,
        io,
    ))
    .await;
    stats.open.fetch_sub(1, Ordering::Relaxed);
    // What is queued is written, within a limit: a peer that does not read cannot keep it.
    let stop = writer.abort_handle();
    if tokio::time::timeout(FLUSH_WAIT, writer).await.is_err() {
        stop.abort();
    }
    tracing::debug!(target: "ferry::presence", peer = id, dialect = contract.name, "disconnected");
}

/// A Unix socket serves its owner only (the peer's uid, `SO_PEERCRED`).
async fn admit_unix(mut stream: UnixStream, row: &'static Row, access: Access) -> Option<Passed> {
    let cred = match stream.peer_cred() {
        Ok(cred) => cred,
        Err(e) => {
            tracing::warn!("cannot read peer credentials: {e}");
            return None;
        }
    };
    if cred.uid() != rustix::process::getuid().as_raw() {
        tracing::warn!(uid = cred.uid(), "refused a connection from another user");
        let message = "this daemon serves only its owner";
        refuse(&mut stream, row, RefusalKind::PermissionDenied, message).await;
        return None;
    }
    let address = match cred.pid() {
        Some(pid) => format!("unix, pid {pid}"),
        None => "unix".into(),
    };
    let (read, write) = stream.into_split();
    let fds = FdInbox::default();
    Some(Passed {
        read: Box::new(FdReadHalf::new(read, fds.clone())),
        write: Box::new(write),
        fds: Some(fds),
        name: unix::user_name(cred.uid()),
        ends: Ends {
            local: String::new(),
            remote: address,
            uid: Some(cred.uid()),
        },
        access,
    })
}

/// TCP: the TLS handshake under the handshake time limit, if the listener has TLS. A verified
/// client certificate authenticates the peer (no token needed) and names it; its files live
/// in an area of its own. Without one, the peer must show the token in its dialect's
/// handshake; a daemon with no token (client certificates only) refuses it here.
async fn admit_tcp(
    stream: TcpStream,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    row: &Row,
    mut access: Access,
    limits: Limits,
) -> Option<Passed> {
    let address = addr.to_string();
    let local_addr = stream.local_addr().ok();
    let local = local_addr.map(|a| a.to_string()).unwrap_or_default();
    // A peer of a dialect without authentication is the user at the other end, where the
    // kernel can tell (loopback); so is one of a dialect that takes the web token.
    let anonymous = matches!(
        &access.principal,
        Some(Principal::Anonymous { uid: None, .. })
    );
    let mut uid = None;
    if (anonymous || row.owner_token) && addr.ip().is_loopback() {
        let found = local_addr.map(|local| peer_uid::loopback_uid(addr, local));
        match found {
            Some(Ok(found)) => {
                uid = Some(found);
                if anonymous {
                    access.principal = Some(Principal::anonymous(row.contract.name, uid));
                }
            }
            other => {
                let why = match other {
                    Some(Err(e)) => e.to_string(),
                    _ => "no local address".into(),
                };
                tracing::warn!(%addr, "refused a connection: cannot tell its user: {why}");
                let mut stream = stream;
                let message = "the daemon cannot tell which user this connection belongs to";
                refuse(&mut stream, row, RefusalKind::PermissionDenied, message).await;
                return None;
            }
        }
    }
    let Some(tls) = tls else {
        let (read, write) = stream.into_split();
        let ends = Ends {
            local,
            remote: address,
            uid,
        };
        return Some(Passed::network(
            Box::new(read),
            Box::new(write),
            ends,
            access,
        ));
    };
    let deadline = limits
        .first
        .map_or_else(|| Instant::now() + REFUSAL_WRITE, |(deadline, _)| deadline);
    let handshake = tokio::time::timeout_at(deadline, tls.accept(stream));
    let mut stream = match handshake.await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::warn!(%addr, "TLS handshake failed: {e}");
            return None;
        }
        Err(_) => {
            tracing::warn!(%addr, "TLS handshake timed out");
            return None;
        }
    };
    if let Some(certs) = stream.get_ref().1.peer_certificates() {
        // rustls verified it against the client CA: the peer is authenticated.
        let common = certs.first().and_then(|cert| tls::common_name(cert));
        tracing::info!(%addr, client = ?common, "client certificate accepted");
        access.principal = Some(Principal::Certificate(
            common.unwrap_or_else(|| "unnamed".into()),
        ));
    } else if row.contract.authenticates && access.tokens.is_empty() {
        // No token to check in the handshake: a certificate is the only way in.
        tracing::warn!(%addr, "refused a TLS client without a client certificate");
        let message = "this listener authenticates clients by certificate only: present a client certificate signed by its client CA (--cert and --key)";
        refuse(&mut stream, row, RefusalKind::PermissionDenied, message).await;
        return None;
    }
    let (read, write) = tokio::io::split(stream);
    let ends = Ends {
        local,
        remote: address,
        uid,
    };
    Some(Passed::network(
        Box::new(read),
        Box::new(write),
        ends,
        access,
    ))
}

/// Writes one refusal in the dialect's words on a connection that will not be served, then
/// closes it (a peer that does not read cannot hold this up).
async fn refuse(
    stream: &mut (impl AsyncWrite + Unpin),
    row: &Row,
    kind: RefusalKind,
    message: &str,
) {
    let bytes = (row.refusal)(kind, message);
    let _ = tokio::time::timeout(REFUSAL_WRITE, async {
        stream.write_all(&bytes).await?;
        stream.flush().await
    })
    .await;
    let _ = stream.shutdown().await;
}
