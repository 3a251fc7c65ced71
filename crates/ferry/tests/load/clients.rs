//! Many clients at once, of every dialect, every byte of their output checked.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::helper::{ferry_bin, Daemon};
use super::{measured, Row, Scale};

fn expected(n: usize, lines: usize) -> String {
    (0..lines)
        .map(|i| format!("client-{n}-line-{i}\n"))
        .collect()
}

/// The dialects the mixed load speaks, a client of each in turn.
const DIALECTS: [&str; 5] = ["native", "fanos", "c2", "rake64", "cbsd"];

/// Writes the job every client runs, `sh LINES_SH N COUNT`: COUNT numbered lines naming client
/// N (one word per argument, as CBSD's requests split them).
fn lines_script(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("lines.sh");
    let script = "i=0; while [ $i -lt $2 ]; do echo client-$1-line-$i; i=$((i+1)); done\n";
    std::fs::write(&path, script).expect("script");
    path
}

/// Runs client `n`'s job through `dialect` against `daemon`, and returns its stdout.
fn dialect_client(
    dialect: &str,
    daemon: &Daemon,
    sockets: &MixedSockets,
    job: &[String],
) -> Result<Vec<u8>, String> {
    let output = |mut command: Command| -> Result<Vec<u8>, String> {
        let out = command
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    match dialect {
        "native" => {
            let mut command = daemon.ferry();
            command.args(["run", "--"]).args(job);
            output(command)
        }
        "fanos" => {
            let mut command = Command::new(ferry_bin());
            command
                .arg("fanos")
                .arg("--socket")
                .arg(&sockets.fanos)
                .arg("ARGV")
                .args(job);
            // `ferry fanos` prints the reply after what the job wrote.
            let mut out = output(command)?;
            let reply = b"STATUS 0\n";
            if !out.ends_with(reply) {
                return Err("no STATUS 0 reply".into());
            }
            out.truncate(out.len() - reply.len());
            Ok(out)
        }
        "c2" => {
            let mut command = Command::new(ferry_bin());
            command
                .args(["c2", "--addr", &format!("127.0.0.1:{}", sockets.c2)])
                .args(job);
            output(command)
        }
        "rake64" => rake64_command(sockets.rake64, &job.join(" ")),
        _ => cbsd_command(&sockets.cbsd, &job.join(" ")),
    }
}

/// Where the mixed load's dialects listen.
struct MixedSockets {
    fanos: std::path::PathBuf,
    cbsd: std::path::PathBuf,
    c2: u16,
    rake64: u16,
}

/// One rake64 `!C` request, as the seed's client sends it (a padded header, then the command):
/// the output of its `!SS` answer.
fn rake64_command(port: u16, command: &str) -> Result<Vec<u8>, String> {
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let mut request = format!("!C{}", command.chars().count()).into_bytes();
    request.resize(64, b' ');
    request.extend_from_slice(command.as_bytes());
    stream.write_all(&request).map_err(|e| e.to_string())?;
    // Read as the seed's reader does: the code at 0..2, the options at 2..5, the length
    // from 5.
    let mut header = [0u8; 64];
    stream.read_exact(&mut header).map_err(|e| e.to_string())?;
    let header = String::from_utf8_lossy(&header).into_owned();
    let len: usize = header
        .starts_with("!SS")
        .then(|| header[5..].trim().parse().ok())
        .flatten()
        .ok_or_else(|| format!("answer {:?}", header.trim_end()))?;
    let mut output = vec![0u8; len];
    stream.read_exact(&mut output).map_err(|e| e.to_string())?;
    let _ = stream.write_all(b"!D");
    Ok(output)
}

/// One CBSD `command` request: its stdout frames until its exit frame.
fn cbsd_command(socket: &std::path::Path, command: &str) -> Result<Vec<u8>, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("command {command}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut output = Vec::new();
    loop {
        match ferry_wire::cbsd::decode_frame(&buf).map_err(|e| e.to_string())? {
            Some((frame, used)) => {
                buf.drain(..used);
                match frame.kind {
                    ferry_wire::cbsd::kind::STDOUT => output.extend_from_slice(&frame.payload),
                    ferry_wire::cbsd::kind::EXIT => return Ok(output),
                    _ => {}
                }
            }
            None => {
                let mut chunk = [0u8; 8192];
                let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("closed before the exit".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// Many clients at once, of every dialect in turn (native, FANOS, C2 over TCP, rake64, CBSD),
/// each running a job whose output names it, every byte checked.
pub fn concurrent_clients(scale: &Scale) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let sockets_dir = dir.path();
    let fanos = sockets_dir.join("fanos.sock");
    let cbsd = sockets_dir.join("cbsd.sock");
    let listeners = [
        format!("fanos:unix:{}", fanos.display()),
        format!("cbsd:unix:{}", cbsd.display()),
        "c2:tcp:127.0.0.1:0".to_owned(),
        "rake64:tcp:127.0.0.1:0".to_owned(),
    ];
    let listeners: Vec<&str> = listeners.iter().map(String::as_str).collect();
    // Finished jobs stay in memory with their output up to --max-finished (1000 by default:
    // 40 MB for these); 100 keeps what this case measures to the connections and jobs. The
    // dialects without a wait-and-retry take a refusal as final: the handshake pools are made
    // as large as the burst.
    let daemon = Arc::new(Daemon::start_networked(
        &[
            "--allow-any-command",
            "--max-connections",
            "2048",
            "--max-handshakes",
            "2048",
            "--max-jobs",
            "64",
            "--max-finished",
            "100",
        ],
        &listeners,
    ));
    let sockets = Arc::new(MixedSockets {
        fanos,
        cbsd,
        c2: daemon.listener_port("c2:tcp"),
        rake64: daemon.listener_port("rake64:tcp"),
    });
    let script = lines_script(sockets_dir);
    let (clients, lines) = (scale.clients, scale.lines);
    measured(
        "concurrent clients, every dialect",
        &daemon,
        16 * 1024,
        || {
            let started = Instant::now();
            let handles: Vec<_> = (0..clients)
                .map(|n| {
                    let (daemon, sockets) = (Arc::clone(&daemon), Arc::clone(&sockets));
                    let job = vec![
                        "sh".to_owned(),
                        script.display().to_string(),
                        n.to_string(),
                        lines.to_string(),
                    ];
                    std::thread::spawn(move || {
                        dialect_client(DIALECTS[n % DIALECTS.len()], &daemon, &sockets, &job)
                    })
                })
                .collect();
            let mut lost = 0u64;
            let mut bytes = 0u64;
            for (n, handle) in handles.into_iter().enumerate() {
                let want = expected(n, lines);
                bytes += want.len() as u64;
                let dialect = DIALECTS[n % DIALECTS.len()];
                match handle.join() {
                    Ok(Ok(out)) if out == want.as_bytes() => {}
                    Ok(Ok(out)) => {
                        lost += want.len().abs_diff(out.len()).max(1) as u64;
                        eprintln!(
                            "client {n} ({dialect}): {} bytes, not as written",
                            out.len()
                        );
                    }
                    Ok(Err(e)) => {
                        lost += want.len() as u64;
                        eprintln!("client {n} ({dialect}): {e}");
                    }
                    Err(_) => lost += want.len() as u64,
                }
            }
            Ok((
                format!(
                    "{clients} clients ({} each of {}), {} KB checked in {:.1} s",
                    clients / DIALECTS.len(),
                    DIALECTS.join(", "),
                    bytes / 1000,
                    started.elapsed().as_secs_f64()
                ),
                lost,
            ))
        },
    )
}
