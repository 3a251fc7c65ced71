//! The connection layer every dialect shares.
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
//! without a word: there is no way to say one). An admitted one is handed to its dialect's
//! adapter as a [`Conn`]; the adapter watches its peer's events
//! (the shutdown notice), its kick flag and the daemon's closing flag, and says each in its
//! own way.

pub mod admission;
mod fifo;
pub mod record;
pub mod tls;
pub mod unix;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_engine::peers::{NewPeer, PeerHandle};
use ferry_engine::Principal;
use ferry_io::fdpass::{FdInbox, FdReadHalf};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::listeners::{ListenSpec, Row, Transport};
use crate::policy::{Access, CommandPolicy, Refusal, RefusalKind};

use self::admission::{Admission, ListenerPools};
use crate::server::Server;
use crate::{DaemonConfig, DaemonError, Listener, TlsFiles};

/// The reading half of a connection, whatever its transport.
pub(crate) type BoxRead = Box<dyn AsyncRead + Unpin + Send>;
/// The writing half of a connection, whatever its transport.
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;

/// How long a refusal may take to write before the connection is dropped.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

/// The time limits of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The handshake time limit: from its accept to the end of its handshake (TLS and its
    /// dialect's, or in a dialect without one its first request).
    pub handshake: Duration,
    /// When the handshake time limit runs out.
    pub handshake_deadline: Instant,
    /// Between requests, in a dialect without a handshake: silent longer, it is closed.
    pub idle: Option<Duration>,
}

impl Limits {
    /// Until when the connection may wait for its next request now, and the limit that sets
    /// it (to name in a message).
    pub fn next_request(&self, first: bool) -> Option<(Instant, Duration)> {
        if first {
            Some((self.handshake_deadline, self.handshake))
        } else {
            self.idle.map(|idle| (Instant::now() + idle, idle))
        }
    }
}

/// A connection the layer admitted, handed to its dialect's adapter.
pub(crate) struct Conn {
    /// Its reading half. On a Unix socket every read goes through `recvmsg`, and fds that
    /// come land in `fds` (read it with `FrameReader::bounded`).
    pub read: BoxRead,
    /// Its writing half.
    pub write: BoxWrite,
    /// Fds received on it (Unix sockets only).
    pub fds: Option<FdInbox>,
    /// Its place in the daemon.
    pub peer: Peer,
    /// What it may do.
    pub access: Access,
    /// Its time limits.
    pub limits: Limits,
    /// The listener's address as the peer reached it (TCP; empty on a Unix socket).
    pub local: String,
    /// The daemon.
    pub server: Arc<Server>,
}

/// Resolves at a time limit's deadline (from [`Limits::next_request`]), with the limit (to
/// name it); never without one.
pub(crate) async fn time_limit(
    limit: Option<(tokio::time::Instant, std::time::Duration)>,
) -> std::time::Duration {
    match limit {
        Some((deadline, limit)) => {
            tokio::time::sleep_until(deadline).await;
            limit
        }
        None => std::future::pending().await,
    }
}

/// An admitted connection's place in the daemon: its entry in the peer registry and its
/// places in the admission pools, all held as long as this lives.
pub(crate) struct Peer {
    /// Its registry entry: id, events, kick flag.
    pub handle: PeerHandle,
    /// Where it connects from (for logs).
    pub address: String,
    admission: Admission,
}

impl Peer {
    /// Its id.
    pub fn id(&self) -> &str {
        self.handle.id()
    }

    /// Its handshake showed it is `principal`: it trades its place among the connections
    /// still authenticating for one among the authenticated (refused when its listener or
    /// its principal has no room left: close the connection then).
    /// Its entry in the peer registry then names the principal.
    pub fn authenticated(&mut self, principal: &Principal) -> Result<(), Refusal> {
        self.admission.establish(principal)?;
        self.handle
            .identify(principal.clone(), peer_name(Some(principal)));
        Ok(())
    }
}

/// A listener, bound and ready to accept.
pub(crate) struct Bound {
    socket: Socket,
    row: &'static Row,
    access: Access,
    pools: Arc<ListenerPools>,
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
    let row = spec.dialect.row();
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
                principal: Some(Principal::Anonymous(row.name.into())),
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
            let as_tls = ListenSpec {
                dialect: spec.dialect,
                transport: Transport::Tls {
                    host: host.clone(),
                    port,
                },
            };
            return Err(DaemonError::Config(format!(
                "listener {spec}: plaintext TCP is served on loopback addresses only (127.0.0.0/8, ::1); use TLS ({as_tls} with certificates from `ferry tls init`), or, knowing that anyone who can reach {host} can then use it, set allow_non_loopback = true for this listener in the configuration file"
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
    if row.authenticates && config.tokens.is_empty() && !client_certs {
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
    let principal = (!row.authenticates).then(|| Principal::Anonymous(row.name.into()));
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
        _guard: None,
    })
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
pub(crate) async fn accept_loop(bound: Bound, server: Arc<Server>) {
    let mut connections = JoinSet::new();
    let mut closing = server.closing.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = accept(&bound.socket) => accepted,
            () = became_true(&mut closing) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        match accepted {
            Ok(incoming) => {
                let Some(admission) = Admission::start(&bound.pools, &server.principals) else {
                    connections.spawn(refuse_handshake(
                        incoming,
                        bound.row,
                        Arc::clone(&bound.pools),
                    ));
                    continue;
                };
                let (row, access, server) = (bound.row, bound.access.clone(), Arc::clone(&server));
                connections.spawn(async move {
                    admit(incoming, admission, row, access, Arc::clone(&server)).await;
                    // What the connection held is free now: worth a trim after a burst.
                    server.engine.connection_ended();
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
            tracing::warn!(dialect = row.name, "refused a connection: {message}");
            refuse(&mut stream, row, RefusalKind::LimitReached, &message).await;
        }
        Incoming::Tcp(mut stream, addr, tls) => {
            tracing::warn!(%addr, dialect = row.name, "refused a connection: {message}");
            if tls.is_none() {
                refuse(&mut stream, row, RefusalKind::LimitReached, &message).await;
            }
        }
        // The pair's one connection at a time never fills a pool of 64.
        Incoming::Fifo(mut pair) => {
            tracing::warn!(dialect = row.name, "refused a FIFO connection: {message}");
            refuse(&mut pair.write, row, RefusalKind::LimitReached, &message).await;
        }
    }
}

/// A connection that passed its transport's checks.
struct Admitted {
    read: BoxRead,
    write: BoxWrite,
    fds: Option<FdInbox>,
    name: String,
    address: String,
    /// The listener's own address as the peer reached it (TCP), for dialects that name it.
    local: String,
    access: Access,
}

impl Admitted {
    /// A TCP or TLS connection (no fds; named as far as its admission tells).
    fn network(read: BoxRead, write: BoxWrite, address: String, access: Access) -> Admitted {
        Admitted {
            read,
            write,
            fds: None,
            name: peer_name(access.principal.as_ref()),
            address,
            local: String::new(),
            access,
        }
    }
}

/// Admits a connection (see the module documentation) and serves it.
async fn admit(
    incoming: Incoming,
    mut admission: Admission,
    row: &'static Row,
    access: Access,
    server: Arc<Server>,
) {
    let limits = Limits {
        handshake: server.config.handshake_timeout,
        handshake_deadline: Instant::now() + server.config.handshake_timeout,
        idle: server.config.idle_timeout.filter(|_| !row.authenticates),
    };
    let admitted = match incoming {
        Incoming::Unix(stream) => admit_unix(stream, row, access).await,
        Incoming::Tcp(stream, addr, tls) => admit_tcp(stream, addr, tls, row, access, limits).await,
        Incoming::Fifo(pair) => Some(Admitted {
            read: Box::new(pair.read),
            write: Box::new(pair.write),
            fds: None,
            name: "fifo".into(),
            address: pair.address,
            local: String::new(),
            access,
        }),
    };
    let Some(mut admitted) = admitted else { return };
    // A principal known already (the owner's uid, a client certificate, an anonymous
    // dialect) is authenticated now; a token is shown in the dialect's handshake.
    if let Some(principal) = &admitted.access.principal {
        if let Err(refusal) = admission.establish(principal) {
            tracing::warn!(
                from = admitted.address,
                dialect = row.name,
                "refused a connection: {}",
                refusal.message
            );
            refuse(&mut admitted.write, row, refusal.kind, &refusal.message).await;
            return;
        }
    }
    let handle = server.engine.peers().register(NewPeer {
        name: admitted.name,
        address: admitted.address.clone(),
        dialect: row.name.into(),
        principal: admitted.access.principal.clone(),
    });
    tracing::info!(
        target: "ferry::presence",
        peer = handle.id(),
        from = admitted.address,
        dialect = row.name,
        "connected"
    );
    let id = handle.id().to_owned();
    let peer = Peer {
        handle,
        address: admitted.address,
        admission,
    };
    let Some(serve) = row.serve else { return };
    serve(Conn {
        read: record::recorded(
            admitted.read,
            server.config.record_wire.as_deref(),
            row.name,
            &id,
        ),
        write: admitted.write,
        fds: admitted.fds,
        peer,
        access: admitted.access,
        limits,
        local: admitted.local,
        server,
    })
    .await;
    tracing::info!(target: "ferry::presence", peer = id, dialect = row.name, "disconnected");
}

/// A Unix socket serves its owner only (the peer's uid, `SO_PEERCRED`).
async fn admit_unix(mut stream: UnixStream, row: &'static Row, access: Access) -> Option<Admitted> {
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
    Some(Admitted {
        read: Box::new(FdReadHalf::new(read, fds.clone())),
        write: Box::new(write),
        fds: Some(fds),
        name: unix::user_name(cred.uid()),
        address,
        local: String::new(),
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
) -> Option<Admitted> {
    let address = addr.to_string();
    let local = stream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let Some(tls) = tls else {
        let (read, write) = stream.into_split();
        return Some(Admitted {
            local,
            ..Admitted::network(Box::new(read), Box::new(write), address, access)
        });
    };
    let handshake = tokio::time::timeout_at(limits.handshake_deadline, tls.accept(stream));
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
    } else if row.authenticates && access.tokens.is_empty() {
        // No token to check in the handshake: a certificate is the only way in.
        tracing::warn!(%addr, "refused a TLS client without a client certificate");
        let message = "this listener authenticates clients by certificate only: present a client certificate signed by its client CA (--cert and --key)";
        refuse(&mut stream, row, RefusalKind::PermissionDenied, message).await;
        return None;
    }
    let (read, write) = tokio::io::split(stream);
    Some(Admitted {
        local,
        ..Admitted::network(Box::new(read), Box::new(write), address, access)
    })
}

/// A peer's name, as far as its admission tells: the certificate's common name, the
/// dialect for an anonymous peer, or (until its handshake shows a token) nothing yet.
fn peer_name(principal: Option<&Principal>) -> String {
    match principal {
        Some(Principal::Certificate(name)) => name.clone(),
        Some(Principal::Token(label)) => label.clone(),
        Some(Principal::Anonymous(_)) => "anonymous".into(),
        Some(Principal::Owner) | None => String::new(),
    }
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

/// Resolves once the watched flag is true (or its sender is gone).
pub(crate) async fn became_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|value| *value).await;
}
