//! Many connected idle peers: half native hub members (ferry's client, reading what comes),
//! half TsockM logins (reading their push connection one `read()` at a time and answering
//! health checks, as TsockM's client does), with a few members exchanging messages among
//! them: every message arrives, in order; the daemon's memory per idle peer is measured.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::helper::poll_until;
use super::helper::Daemon;
use super::{measured, native_member, next_message, rss_kib, Row, Scale};

/// A TsockM login: its push connection and its id.
struct Tsockm {
    comm: TcpStream,
    id: String,
}

/// Logs in as TsockM's client does: the login on the connection it keeps, the answer read
/// with one `read()`.
async fn tsockm_login(server: &str, name: &str) -> Result<Tsockm, String> {
    let mut comm = TcpStream::connect(server)
        .await
        .map_err(|e| e.to_string())?;
    comm.write_all(format!("REQ::COMM::200::client::client::{server}::{name}").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let answer = read_once(&mut comm).await?;
    let id = answer
        .rsplit("::")
        .next()
        .filter(|_| answer.starts_with("RES::COMM::200::server::"))
        .ok_or_else(|| format!("login answer {answer:?}"))?
        .to_owned();
    Ok(Tsockm { comm, id })
}

/// One `read()` of up to 1024 bytes: one TsockM message.
async fn read_once(stream: &mut TcpStream) -> Result<String, String> {
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf))
        .await
        .map_err(|_| "no message within 60 s".to_owned())?
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("closed".into());
    }
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// One request on a connection of its own, closed after its one write (TsockM's way).
async fn tsockm_request(server: &str, id: &str, action: &str, body: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect(server)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("REQ::{action}::200::{id}::client::{server}::{body}").as_bytes())
        .await
        .map_err(|e| e.to_string())
}

/// An idle TsockM peer: reads its pushes and answers each health check.
async fn tsockm_idle(server: String, mut peer: Tsockm) {
    while let Ok(pushed) = read_once(&mut peer.comm).await {
        if pushed.starts_with("REQ::COMM::200::server::") && pushed.ends_with("::check?") {
            if let Ok(mut answer) = TcpStream::connect(&server).await {
                let ok = format!("RES::COMM::200::{}::client::{server}::OK", peer.id);
                let _ = answer.write_all(ok.as_bytes()).await;
            }
        }
    }
}

/// The next pushed `MSG`'s text, its sender's name looked up as TsockM's client does.
async fn tsockm_next_message(server: &str, peer: &mut Tsockm) -> Result<(String, String), String> {
    loop {
        let pushed = read_once(&mut peer.comm).await?;
        let fields: Vec<&str> = pushed.splitn(7, "::").collect();
        if fields.len() == 7 && fields[..3] == ["RES", "MSG", "200"] && fields[3] != "server" {
            tsockm_request(server, &peer.id, "GET_PEER", fields[3]).await?;
            let answer = read_once(&mut peer.comm).await?;
            let name = answer.rsplit("::").next().unwrap_or_default().to_owned();
            return Ok((name, fields[6].to_owned()));
        }
    }
}

/// Idle peer `n` (a native member below `half`, a TsockM login from there), joined: what
/// keeps it reading. The native members join first: the TsockM logins come once the hub is
/// past its presence size, so none of them holds a backlog of joins to be paced out (a
/// TsockM peer gets at most one push per lookup or per second).
async fn idle_peer(
    n: usize,
    half: usize,
    endpoint: &ferry_client::Endpoint,
    server: &str,
) -> Result<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>, String> {
    if n < half {
        let mut client = native_member(endpoint, &format!("idle-{n}")).await?;
        Ok(Box::pin(async move {
            while let Ok(Some(_)) = client.next_event().await {}
        }))
    } else {
        let peer = tsockm_login(server, &format!("idle-{n}")).await?;
        Ok(Box::pin(tsockm_idle(server.to_owned(), peer)))
    }
}

/// The case: `scale.full` 10 000 idle peers, else 2 000.
pub fn idle_peers(scale: &Scale) -> Row {
    let idle = if scale.full { 10_000 } else { 2_000 };
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    // This process holds a socket per peer too (and the daemon its own): the hard limit
    // bounds both.
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(hard),
            maximum: limit.maximum,
        },
    );
    let idle = idle.min(usize::try_from(hard.saturating_sub(500)).unwrap_or(usize::MAX));
    let size = (idle + 100).to_string();
    let daemon = Daemon::start_networked_after(
        "ulimit -n \"$(ulimit -Hn)\"",
        &[
            "--max-connections",
            &size,
            "--max-handshakes",
            &size,
            "--max-connections-per-principal",
            &size,
        ],
        &["tsockm:tcp:127.0.0.1:0"],
    );
    let server = format!("127.0.0.1:{}", daemon.listener_port("tsockm:tcp"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    measured("idle peers, a few talking", &daemon, 8 * 1024, || {
        let (figure, lost) = runtime.block_on(async {
            let before = rss_kib(daemon.pid());
            let started = Instant::now();
            let endpoint = ferry_client::Endpoint::Unix(daemon.socket.clone());
            // Joined two hundred at a time (a TsockM login is taken as whole once 50 ms pass
            // with nothing more: one after another they would take minutes).
            let mut held = tokio::task::JoinSet::new();
            for batch in (0..idle).collect::<Vec<_>>().chunks(200) {
                let mut joining = tokio::task::JoinSet::new();
                for &n in batch {
                    let (endpoint, server) = (endpoint.clone(), server.clone());
                    joining.spawn(async move { idle_peer(n, idle / 2, &endpoint, &server).await });
                }
                while let Some(joined) = joining.join_next().await {
                    let peer = joined.map_err(|e| e.to_string())??;
                    held.spawn(peer);
                }
            }
            let joined_in = started.elapsed().as_secs_f64();
            // The few: two native members and a TsockM login, messages every way.
            let mut ann = native_member(&endpoint, "ann").await?;
            let mut bob = native_member(&endpoint, "bob").await?;
            let mut tom = tsockm_login(&server, "tom").await?;
            let members = ann.members().await.map_err(|e| e.to_string())?.len();
            // Measured once the daemon has given back what the joins took for a while (it
            // trims after a quiet second), as `settled` does.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let rss = rss_kib(daemon.pid());
            let messages = 50;
            let mut lost = 0u64;
            for k in 0..messages {
                ann.say(Some("bob"), &format!("to bob {k}"), false)
                    .await
                    .map_err(|e| e.to_string())?;
                ann.say(Some("tom"), &format!("to tom {k}"), false)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            for k in 0..messages {
                let want = ("ann".to_owned(), format!("to bob {k}"));
                if next_message(&mut bob, Duration::from_secs(60)).await != Some(want) {
                    lost += 1;
                }
                match tsockm_next_message(&server, &mut tom).await {
                    Ok((name, text)) if name == "ann" && text == format!("to tom {k}") => {}
                    _ => lost += 1,
                }
            }
            // Tom answers ann (his MSG goes to every member, as TsockM's does).
            tsockm_request(&server, &tom.id, "MSG", "from tom").await?;
            let from_tom = next_message(&mut ann, Duration::from_secs(60)).await;
            if from_tom != Some(("tom".to_owned(), "from tom".to_owned())) {
                lost += 1;
            }
            held.abort_all();
            while held.join_next().await.is_some() {}
            drop((ann, bob, tom));
            if members != idle + 2 + 1 {
                return Err(format!("{members} members listed, {} expected", idle + 3));
            }
            let per_peer = rss.saturating_sub(before) * 1024 / idle as u64;
            Ok((
                format!(
                    "{idle} idle ({} native members, {} TsockM logins) joined in {joined_in:.1} s, \
                     {per_peer} bytes of daemon RSS each; {} messages among 3 others",
                    idle / 2,
                    idle - idle / 2,
                    2 * messages + 1
                ),
                lost,
            ))
        })?;
        // The members' connections are gone: the hub holds their places for its grace (13 s),
        // then ends them together; only then is their memory free to come back.
        let ended = Instant::now();
        let mut owner = runtime
            .block_on(ferry_client::Client::connect(
                &ferry_client::Endpoint::Unix(daemon.socket.clone()),
                "load",
            ))
            .map_err(|e| e.to_string())?;
        poll_until(Duration::from_secs(30), || {
            let peers = runtime.block_on(owner.peers()).ok()?;
            peers.iter().all(|peer| !peer.member).then_some(())
        })
        .ok_or("the held places did not end within 30 s")?;
        Ok((
            format!(
                "{figure}; their held places ended {:.1} s after",
                ended.elapsed().as_secs_f64()
            ),
            lost,
        ))
    })
}
