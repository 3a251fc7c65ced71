//! The TsockM dialect over real TCP, with test clients that behave as TsockM's own (thetazzo/
//! TsockM at f2967f2c): the login's connection kept for pushes and read one `read()` per
//! message; every request on a connection of its own, closed after its one write; a
//! `GET_PEER` lookup after each pushed `MSG`; health checks answered with `RES::COMM`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::process::CommandExt;
use std::time::Duration;

use ferry_client::Event;

use crate::helper::{wait_until, Daemon};
use crate::hub::{member, next};

/// A daemon serving TsockM on a port of its own (and its owner's Unix socket).
fn tsockm_daemon(extra: &[&str]) -> (Daemon, String) {
    let daemon = Daemon::start_networked(extra, &["tsockm:tcp:127.0.0.1:0"]);
    let server = format!("127.0.0.1:{}", daemon.listener_port("tsockm:tcp"));
    (daemon, server)
}

/// One `read()` of up to 1024 bytes, as TsockM's client reads a message.
fn read_once(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).expect("read");
    String::from_utf8(buf[..n].to_vec()).expect("utf-8")
}

/// A logged-in TsockM client: its push connection, its id and its address as the server
/// sees it.
pub(crate) struct TsockmClient {
    comm: TcpStream,
    pub(crate) id: String,
    address: String,
    server: String,
}

impl TsockmClient {
    pub(crate) fn login(server: &str, name: &str) -> TsockmClient {
        let mut comm = TcpStream::connect(server).expect("connect");
        let address = comm.local_addr().expect("addr").to_string();
        comm.write_all(format!("REQ::COMM::200::client::client::{server}::{name}").as_bytes())
            .expect("login");
        let answer = read_once(&mut comm);
        let prefix = format!("RES::COMM::200::server::{server}::{address}::");
        let id = answer
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("login answer {answer:?} does not start {prefix:?}"))
            .to_owned();
        assert!(id.len() >= 10, "{id}");
        TsockmClient {
            comm,
            id,
            address,
            server: server.to_owned(),
        }
    }

    /// Sends one request on a connection of its own, closed after its one write (as
    /// TsockM's client does).
    pub(crate) fn request(&self, action: &str, body: &str) {
        let mut stream = TcpStream::connect(&self.server).expect("connect");
        let message = format!(
            "REQ::{action}::200::{}::client::{}::{body}",
            self.id, self.server
        );
        stream.write_all(message.as_bytes()).expect("write");
    }

    /// The next pushed `MSG`, with the sender's name looked up as TsockM's client does:
    /// (name, text).
    pub(crate) fn next_message(&mut self) -> (String, String) {
        let pushed = read_once(&mut self.comm);
        let fields: Vec<&str> = pushed.splitn(7, "::").collect();
        assert_eq!(&fields[..3], ["RES", "MSG", "200"], "{pushed}");
        assert_eq!(
            (fields[4], fields[5]),
            (self.server.as_str(), self.address.as_str()),
            "{pushed}"
        );
        self.request("GET_PEER", fields[3]);
        let answer = read_once(&mut self.comm);
        let prefix = format!(
            "RES::GET_PEER::200::server::{}::{}::",
            self.server, self.address
        );
        let name = answer
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("lookup answer {answer:?}"))
            .to_owned();
        (name, fields[6].to_owned())
    }
}

/// Sends raw bytes on a connection of their own and reads the answer (until the daemon
/// closes it).
fn raw_request(server: &str, parts: &[&[u8]]) -> String {
    let mut stream = TcpStream::connect(server).expect("connect");
    // Each part in a write of its own, sent at once.
    stream.set_nodelay(true).expect("nodelay");
    for part in parts {
        stream.write_all(part).expect("write");
    }
    stream.shutdown(Shutdown::Write).expect("shutdown");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn login_messages_lookups_and_logout_byte_for_byte() {
    let (daemon, server) = tsockm_daemon(&[]);
    let mut ann = TsockmClient::login(&server, "ann");
    let mut bob = TsockmClient::login(&server, "bob");
    assert_eq!(
        ann.next_message(),
        ("server".into(), format!("bob ({}) joined", bob.id))
    );
    ann.request("MSG", "hello bob");
    assert_eq!(bob.next_message(), ("ann".into(), "hello bob".into()));
    // A body with '::' in it travels whole toward the server.
    bob.request("MSG", "a: b");
    assert_eq!(ann.next_message(), ("bob".into(), "a: b".into()));
    // `:gp ID` is answered on the push connection; an unknown id with a 404 there.
    ann.request("GET_PEER", &bob.id);
    assert_eq!(
        read_once(&mut ann.comm),
        format!("RES::GET_PEER::200::server::{server}::{}::bob", ann.address)
    );
    ann.request("GET_PEER", "nobody");
    assert_eq!(
        read_once(&mut ann.comm),
        format!(
            "RES::GET_PEER::404::server::{server}::{}::NOT_FOUND",
            ann.address
        )
    );
    // Logout: a goodbye, then the connection closes; the others see the leave.
    bob.request("COMM_END", "");
    assert_eq!(
        read_once(&mut bob.comm),
        "RES::COMM_END::200::server::server::client::OK"
    );
    assert_eq!(read_once(&mut bob.comm), "", "closed");
    assert_eq!(
        ann.next_message(),
        (
            "server".into(),
            format!("bob ({}) left: it logged out (COMM_END)", bob.id)
        )
    );
    daemon.assert_serving();
}

#[test]
fn native_and_tsockm_peers_list_message_and_kick_each_other() {
    let (daemon, server) = tsockm_daemon(&[]);
    let mut ann = TsockmClient::login(&server, "ann");
    super::hub::runtime().block_on(async {
        let (mut nat, joined) = member(&daemon, "nat").await;
        assert!(joined
            .members
            .iter()
            .any(|m| m.name == "ann" && m.dialect == "tsockm"));
        assert_eq!(
            ann.next_message(),
            ("server".into(), format!("nat ({}) joined", joined.peer))
        );
        let said = nat.say(Some("ann"), "hi ann", false).await.expect("say");
        assert_eq!(said.delivered, 1);
        assert_eq!(ann.next_message(), ("nat".into(), "hi ann".into()));
        // What a TsockM client cannot show is refused, and said so.
        let said = nat.say(None, "a::b", false).await.expect("say");
        assert_eq!(said.delivered, 0);
        assert_eq!(said.refused.len(), 1);
        assert!(said.refused[0].reason.contains("'::'"), "{said:?}");
        let said = nat.say(None, &"x".repeat(900), false).await.expect("say");
        assert!(
            said.refused[0]
                .reason
                .contains("reads 1024 bytes at a time"),
            "{said:?}"
        );
        ann.request("MSG", "hi nat");
        let (name, text) = next(&mut nat, "ann's message", |e| match e {
            Event::Message { name, text, .. } => Some((name, text)),
            _ => None,
        })
        .await;
        assert_eq!((name.as_str(), text.as_str()), ("ann", "hi nat"));
        // The owner kicks the TsockM peer: TsockM's own goodbye, then the close.
        let out = daemon.run(&["peers", "kick", &ann.id]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            read_once(&mut ann.comm),
            "RES::COMM_END::200::server::server::client::OK"
        );
        let reason = next(&mut nat, "ann's leave", |e| match e {
            Event::Presence {
                name,
                joined: false,
                reason,
                ..
            } if name == "ann" => Some(reason),
            _ => None,
        })
        .await;
        assert!(reason.contains("by the daemon's owner"), "{reason}");
    });
}

#[test]
fn consecutive_messages_arrive_one_per_read_in_order() {
    let (daemon, server) = tsockm_daemon(&[]);
    let mut ann = TsockmClient::login(&server, "ann");
    super::hub::runtime().block_on(async {
        let (mut nat, joined) = member(&daemon, "nat").await;
        assert_eq!(
            ann.next_message().1,
            format!("nat ({}) joined", joined.peer)
        );
        // Sent without waiting: the daemon keeps them apart for ann's reads.
        for k in 0..20 {
            nat.say_nowait(None, &format!("m{k}")).await.expect("say");
        }
        for k in 0..20 {
            assert_eq!(ann.next_message(), ("nat".into(), format!("m{k}")));
        }
        let _ = nat.members().await;
    });
}

#[test]
fn health_checks_keep_the_answering_and_remove_the_silent() {
    let (_daemon, server) = tsockm_daemon(&["--ping-interval", "200ms", "--ping-misses", "2"]);
    let mut ann = TsockmClient::login(&server, "ann");
    let silent = TsockmClient::login(&server, "silent");
    assert_eq!(
        ann.next_message().1,
        format!("silent ({}) joined", silent.id)
    );
    // Ann answers each health check as TsockM's client does, until she sees the leave.
    let check = format!("REQ::COMM::200::server::{server}::{}::check?", ann.address);
    loop {
        let pushed = read_once(&mut ann.comm);
        if pushed == check {
            let mut answer = TcpStream::connect(&server).expect("connect");
            let ok = format!("RES::COMM::200::{}::client::{server}::OK", ann.id);
            answer.write_all(ok.as_bytes()).expect("write");
            continue;
        }
        assert!(pushed.starts_with("RES::MSG::200::server::"), "{pushed}");
        assert!(
            pushed.ends_with(&format!(
                "silent ({}) left: no answer to 2 health checks in 0.6s",
                silent.id
            )) || pushed.contains("left: no answer to 2 health checks"),
            "{pushed}"
        );
        break;
    }
}

/// A request's bytes, as one or more writes.
type Parts<'a> = &'a [&'a [u8]];

#[test]
fn malformed_requests_get_err_on_their_own_connection_and_the_daemon_serves_on() {
    let (daemon, server) = tsockm_daemon(&[]);
    let mut ann = TsockmClient::login(&server, "ann");
    let bob = TsockmClient::login(&server, "bob");
    assert!(ann.next_message().1.starts_with("bob "));
    let err = |status: &str, name: &str| {
        (
            format!("ERR::NONE::{status}::server::{server}::"),
            format!("::{name}: "),
        )
    };
    let cases: [(Parts, (String, String), &str); 6] = [
        (&[b"REQ"], err("400", "BAD_REQUEST"), "got 1"),
        (
            &[b"FOO::MSG::200::a::b::c::d"],
            err("400", "BAD_REQUEST"),
            "unknown type 'FOO'",
        ),
        (
            &[b"REQ::FOO::200::a::b::c::d"],
            err("405", "METHOD_NOT_ALLOWED"),
            "unknown action 'FOO'",
        ),
        (
            &[b"REQ::MSG::999::a::b::c::d"],
            err("400", "BAD_REQUEST"),
            "unknown status '999'",
        ),
        (
            &[b"REQ::MSG::200::a::b::c::\xff\xfe"],
            err("400", "BAD_REQUEST"),
            "not UTF-8",
        ),
        (
            &[&[b'x'; 5000]],
            err("400", "BAD_REQUEST"),
            "over the limit of 4096 bytes",
        ),
    ];
    for (parts, (prefix, name), detail) in cases {
        let answer = raw_request(&server, parts);
        assert!(
            answer.starts_with(&prefix) && answer.contains(&name) && answer.contains(detail),
            "{answer:?}"
        );
    }
    let answer = raw_request(&server, &[b"REQ::MSG::200::nobody::client::x::hi"]);
    assert!(
        answer.starts_with(&format!("ERR::MSG::404::server::{server}::")),
        "{answer}"
    );
    // A request split over two writes is one request.
    let first = "REQ::MS";
    let rest = format!("G::200::{}::client::{server}::split in two", bob.id);
    assert_eq!(
        raw_request(&server, &[first.as_bytes(), rest.as_bytes()]),
        ""
    );
    assert_eq!(ann.next_message(), ("bob".into(), "split in two".into()));
    // Still serving: a fresh login works, and the push connections never got an ERR.
    let cat = TsockmClient::login(&server, "cat");
    assert_eq!(ann.next_message().1, format!("cat ({}) joined", cat.id));
    daemon.assert_serving();
}

#[test]
fn a_silent_connection_is_closed_at_the_time_limit_with_an_err() {
    let (daemon, server) = tsockm_daemon(&["--handshake-timeout", "300ms"]);
    let mut stream = TcpStream::connect(&server).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(
        answer.contains("::400::") && answer.contains("no whole request within 300 ms"),
        "{answer}"
    );
    wait_until(
        "the silent connection to leave the peer list",
        Duration::from_secs(10),
        || {
            (!String::from_utf8_lossy(&daemon.run(&["peers"]).stdout).contains("tsockm"))
                .then_some(())
        },
        || String::from_utf8_lossy(&daemon.run(&["peers"]).stdout).into_owned(),
    );
}

/// TsockM's client sends each `:msg` on a new connection, one after another (connect, write,
/// close, then the next): pasted in a burst, they must reach the others in the order sent,
/// although the daemon reads the connections concurrently.
#[test]
fn messages_sent_on_sequential_connections_arrive_in_order() {
    let (daemon, server) = tsockm_daemon(&[]);
    let ann = TsockmClient::login(&server, "ann");
    let mut bob = TsockmClient::login(&server, "bob");
    for round in 0..10 {
        for k in 0..20 {
            ann.request("MSG", &format!("r{round} m{k}"));
        }
        for k in 0..20 {
            assert_eq!(
                bob.next_message(),
                ("ann".into(), format!("r{round} m{k}")),
                "round {round}"
            );
        }
    }
    daemon.assert_serving();
}

/// A request whose body comes in two writes, the second 200 ms after the first (a slow
/// sender): it ends where its connection ends, and arrives whole; only a login, whose
/// connection stays open, ends at a pause.
#[test]
fn a_message_split_inside_its_body_arrives_whole() {
    let (daemon, server) = tsockm_daemon(&[]);
    let ann = TsockmClient::login(&server, "ann");
    let mut bob = TsockmClient::login(&server, "bob");
    let message = format!("REQ::MSG::200::{}::client::{server}::hello, bob", ann.id);
    let (first, second) = message.split_at(message.len() - 5);
    let mut stream = TcpStream::connect(&server).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream.write_all(first.as_bytes()).expect("write");
    // The sender's own pause, longer than a login's.
    std::thread::sleep(Duration::from_millis(200));
    stream.write_all(second.as_bytes()).expect("write");
    drop(stream);
    assert_eq!(bob.next_message(), ("ann".into(), "hello, bob".into()));
    daemon.assert_serving();
}

/// Who a TsockM request speaks for is decided by who logged the member in, never by the id it
/// names (ids are no secret: every member learns them): a request naming another user's
/// member (sent here as uid 65534), or a member of another dialect (a native one), is refused
/// with a 404 and does nothing.
#[test]
fn forged_requests_for_another_users_or_dialects_member_are_refused() {
    let (daemon, server) = tsockm_daemon(&[]);
    let mut ann = TsockmClient::login(&server, "ann");
    let mut bob = TsockmClient::login(&server, "bob");
    assert!(ann.next_message().1.contains("bob"), "bob's join");
    let port = daemon.listener_port("tsockm:tcp");
    super::hub::runtime().block_on(async {
        let (_nat, joined) = member(&daemon, "nat").await;
        let _ = ann.next_message();
        let _ = bob.next_message();
        // From this user, as the native member: refused.
        let answer = raw_request(
            &server,
            &[format!("REQ::MSG::200::{}::client::{server}::I am nat", joined.peer).as_bytes()],
        );
        assert!(answer.starts_with("ERR::MSG::404::"), "{answer}");
    });
    // From another user, as ann: each refused.
    if rustix::process::geteuid().is_root() {
        for (action, body) in [("MSG", "forged"), ("GET_PEER", "nobody"), ("COMM_END", "")] {
            let request = format!("REQ::{action}::200::{}::client::{server}::{body}", ann.id);
            // One write, then the request's end (a half-close), then the answer.
            let script = "import socket, sys\n\
                s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n\
                s.sendall(sys.argv[2].encode())\n\
                s.shutdown(socket.SHUT_WR)\n\
                sys.stdout.write(s.recv(4096).decode())\n";
            let out = std::process::Command::new("python3")
                .args(["-c", script, &port.to_string(), &request])
                .uid(65534)
                .gid(65534)
                .output()
                .expect("python3");
            let answer = String::from_utf8_lossy(&out.stdout);
            assert!(
                answer.starts_with(&format!("ERR::{action}::404::")),
                "{action}: {answer:?}"
            );
        }
    } else {
        eprintln!(
            "skipped the forgery from another user: it needs root to run a client as uid 65534"
        );
    }
    // Nothing happened: ann is still logged in, and what bob reads next is ann's own message.
    ann.request("MSG", "the real one");
    assert_eq!(bob.next_message(), ("ann".into(), "the real one".into()));
    assert!(daemon
        .run(&["peers", "--json"])
        .stdout
        .windows(ann.id.len())
        .any(|w| w == ann.id.as_bytes()));
    daemon.assert_serving();
}

/// A TsockM login under a name another member goes by is told the name it got (its login
/// answer carries only its id), and what TsockM's client would print raw comes with its
/// control characters as visible escapes.
#[test]
fn a_taken_name_is_suffixed_and_pushed_text_carries_no_control_characters() {
    let (daemon, server) = tsockm_daemon(&[]);
    let mut ann = TsockmClient::login(&server, "ann");
    let mut twin = TsockmClient::login(&server, "ann");
    assert_eq!(
        twin.next_message(),
        (
            "server".into(),
            "you are ann#2 here: 'ann' is another member's name".into()
        )
    );
    assert_eq!(ann.next_message().1, format!("ann#2 ({}) joined", twin.id));
    super::hub::runtime().block_on(async {
        let (mut nat, _) = member(&daemon, "nat").await;
        let _ = ann.next_message();
        let _ = twin.next_message();
        nat.say(Some("ann"), "a\nb\u{1b}[2J", false)
            .await
            .expect("say");
    });
    assert_eq!(ann.next_message(), ("nat".into(), "a\\nb\\e[2J".into()));
    daemon.assert_serving();
}
