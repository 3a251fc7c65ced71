//! `ferry run`: runs a command through the daemon (starting it if needed), forwards stdin and
//! signals, prints the output live, and exits with the command's status.

use std::io::{IsTerminal, Read};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ferry_client::{
    connect_or_start, spawn_background_daemon, Client, ClientError, Endpoint, Sender,
};
use ferry_wire::native::{ClientMessage, DaemonMessage};
use serde_bytes::ByteBuf;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::cli::RunArgs;
use crate::commands::transfer::{self, SplitConn};
use crate::follow::{exit_status, print_job_output, Followed};

/// Size of one stdin chunk sent to the daemon.
const STDIN_CHUNK: usize = 64 * 1024;

/// Signals forwarded to the job's process group while following it.
const FORWARDED: [(SignalKind, i32); 4] = [
    (SignalKind::interrupt(), libc::SIGINT),
    (SignalKind::terminate(), libc::SIGTERM),
    (SignalKind::hangup(), libc::SIGHUP),
    (SignalKind::quit(), libc::SIGQUIT),
];

/// Runs the command; returns the status to exit with.
pub fn run(target: &Endpoint, args: RunArgs) -> Result<i32> {
    crate::client_runtime()?.block_on(run_async(target, args))
}

async fn run_async(target: &Endpoint, args: RunArgs) -> Result<i32> {
    // A local daemon runs the job where this shell would, with its environment; a remote
    // daemon ignores both, so they are not sent (the environment may hold secrets).
    let local = matches!(target, Endpoint::Unix(_));
    let pass_stdio = if args.fds {
        if !local {
            bail!("--fds needs the daemon's Unix socket: a remote daemon cannot use this terminal");
        }
        true
    } else {
        local && !args.no_fds && !args.detach && std::io::stdout().is_terminal()
    };
    let forward_stdin = !args.detach && !args.no_stdin && !pass_stdio;
    let signals = SignalForwarder::install(pass_stdio)?;
    let cwd = if local {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        Some(ByteBuf::from(cwd.into_os_string().into_vec()))
    } else {
        None
    };
    let env = local.then(|| {
        std::env::vars_os()
            .map(|(k, v)| (ByteBuf::from(k.into_vec()), ByteBuf::from(v.into_vec())))
            .collect()
    });
    let sandboxed = !args.put.is_empty() || !args.get.is_empty() || args.get_new || args.keep;
    let mut run = ClientMessage::Run {
        // Request id 1: sent right behind the handshake (when there is no sandbox to fill).
        request: 1,
        argv: args
            .command
            .iter()
            .map(|a| ByteBuf::from(a.clone().into_vec()))
            .collect(),
        cwd,
        env,
        stdin: forward_stdin,
        timeout_ms: args
            .timeout
            .map(|t| u64::try_from(std::time::Duration::from(t).as_millis()).unwrap_or(u64::MAX)),
        hangup_on_disconnect: !args.detach && !args.no_hangup,
        follow: !args.detach,
        sandbox: None,
        pass_stdio,
        session: args.session.clone(),
    };
    // The fds ride on the Run frame itself, so it cannot share the handshake's write.
    let first = (!sandboxed && !pass_stdio).then_some(&run);
    let mut client = match target {
        Endpoint::Unix(socket) => connect_local(socket, first).await?,
        Endpoint::Tcp { .. } => Client::connect_with(target, crate::CLIENT_NAME, first).await?,
    };
    if pass_stdio && !sandboxed {
        if let ClientMessage::Run { request, .. } = &mut run {
            *request = client.request_id();
        }
        client.send_with_fds(&run, &own_stdio()).await?;
    }
    let mut sandbox = None;
    if sandboxed {
        let (path, before) = fill_sandbox(&mut client, &args).await?;
        if let ClientMessage::Run {
            request,
            sandbox: run_sandbox,
            ..
        } = &mut run
        {
            *request = client.request_id();
            *run_sandbox = Some(ByteBuf::from(path.as_bytes().to_vec()));
        }
        if pass_stdio {
            client.send_with_fds(&run, &own_stdio()).await?;
        } else {
            client.send(&run).await?;
        }
        sandbox = Some((path, before));
    }
    let job = loop {
        match client.recv().await? {
            Some(DaemonMessage::Accepted { job, .. }) => break job,
            Some(DaemonMessage::Error { message, .. }) => bail!("{message}"),
            Some(DaemonMessage::Notice { message, .. }) => eprintln!("ferry: {message}"),
            Some(_) => {}
            None => bail!("the daemon closed the connection"),
        }
    };
    if args.detach {
        println!("{job}");
        return Ok(0);
    }
    let (mut receiver, sender) = client.split();
    if forward_stdin {
        forward_stdin_thread(sender.clone(), job);
    }
    signals.forward(&sender, job);
    let status = match print_job_output(&mut receiver, job, Some(&sender)).await? {
        Followed::Exit(exit) => exit_status(job, &exit),
        Followed::LogEnd => bail!("the daemon ended job {job}'s output without an exit"),
    };
    if let Some((path, before)) = sandbox {
        let mut conn = SplitConn {
            sender: &sender,
            receiver: &mut receiver,
            next_request: 1 << 32,
        };
        fetch_results(&mut conn, &args, &path, before.as_deref()).await?;
        if args.keep {
            eprintln!("ferry: the sandbox is kept in the daemon's file area at {path}");
        }
    }
    Ok(status)
}

/// Makes a sandbox and puts the `--put` files in it; returns its path and, for `--get-new`,
/// what it held before the job.
#[allow(clippy::type_complexity)]
async fn fill_sandbox(
    client: &mut Client,
    args: &RunArgs,
) -> Result<(String, Option<Vec<(String, u64, u64)>>)> {
    let path = transfer::sandbox(client, args.keep).await?;
    for local in &args.put {
        let name = local
            .file_name()
            .ok_or_else(|| anyhow::anyhow!("--put {} has no file name", local.display()))?;
        let remote = format!("{path}/{}", name.to_string_lossy());
        transfer::upload(client, local, &remote, false).await?;
    }
    let before = if args.get_new {
        Some(transfer::list(client, &path).await?)
    } else {
        None
    };
    Ok((path, before))
}

/// Fetches the sandbox files `--get` and `--get-new` ask for into the current directory.
async fn fetch_results(
    conn: &mut SplitConn<'_>,
    args: &RunArgs,
    sandbox: &str,
    before: Option<&[(String, u64, u64)]>,
) -> Result<()> {
    if args.get.is_empty() && before.is_none() {
        return Ok(());
    }
    let patterns = args
        .get
        .iter()
        .map(|p| glob::Pattern::new(p).with_context(|| format!("--get {p}: not a pattern")))
        .collect::<Result<Vec<_>>>()?;
    let after = transfer::list(conn, sandbox).await?;
    for entry in &after {
        let (path, ..) = entry;
        let matched = patterns.iter().any(|p| p.matches(path));
        let new = before.is_some_and(|before| !before.contains(entry));
        if !matched && !new {
            continue;
        }
        // Names from the daemon are checked like names to the daemon.
        let relative = ferry_common::names::check_name(path.as_bytes())
            .with_context(|| format!("the daemon listed a bad name {path:?}"))?;
        if let Some(parent) = relative.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        transfer::download(conn, &format!("{sandbox}/{path}"), relative, false).await?;
    }
    Ok(())
}

/// Connects to the local daemon, starting one when none answers.
pub(crate) async fn connect_local(socket: &Path, first: Option<&ClientMessage>) -> Result<Client> {
    let program = std::env::current_exe().context("cannot find the ferry executable")?;
    let log_file = crate::state_dir_from_env().join("daemon.log");
    let started = connect_or_start(socket, crate::CLIENT_NAME, first, || {
        spawn_background_daemon(&program, socket, &log_file)
    })
    .await;
    match started {
        Ok(client) => Ok(client),
        Err(e @ ClientError::Start(_)) => match last_line(&log_file) {
            Some(reason) => bail!("{e}: {reason} (log: {})", log_file.display()),
            None => bail!("{e} (log: {})", log_file.display()),
        },
        Err(e) => Err(e.into()),
    }
}

/// The last non-empty line of a file, without the log's timestamp and level.
fn last_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    // "2026-11-22T19:00:00.000000Z ERROR target: message" -> "message"
    let message = line.split_once(": ").map_or(line, |(_, m)| m);
    Some(message.trim().to_owned())
}

/// Copies ferry's stdin to the job on a thread of its own (stdin reads block), then closes
/// the job's stdin at EOF.
fn forward_stdin_thread(sender: Sender, job: u64) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; STDIN_CHUNK];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let data = buf[..n].to_vec();
                    if sender
                        .blocking_send(ClientMessage::Stdin { job, data })
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = sender.blocking_send(ClientMessage::CloseStdin { job });
    });
}

/// ferry's own stdin, stdout and stderr, to hand to a job.
pub(crate) fn own_stdio() -> [BorrowedFd<'static>; 3] {
    [
        rustix::stdio::stdin(),
        rustix::stdio::stdout(),
        rustix::stdio::stderr(),
    ]
}

/// Forwards Ctrl-C, SIGTERM, SIGHUP and SIGQUIT to the job's process group (and, when the job
/// runs on ferry's terminal, SIGWINCH: the terminal tells ferry, not the job, of a resize).
/// The third of the same signal (WINCH aside) makes ferry give up waiting and exit with 128+N.
///
/// The handlers are installed before the job is submitted: a job on ferry's own fds can be
/// seen running before its id comes back, and a signal sent to ferry then waits in the
/// handler instead of killing ferry.
struct SignalForwarder {
    streams: Vec<(Signal, i32)>,
}

impl SignalForwarder {
    fn install(on_terminal: bool) -> Result<SignalForwarder> {
        let mut streams = Vec::new();
        for (kind, number) in FORWARDED {
            streams.push((signal(kind).context("cannot handle signals")?, number));
        }
        if on_terminal {
            let resized = signal(SignalKind::window_change()).context("cannot handle signals")?;
            streams.push((resized, libc::SIGWINCH));
        }
        Ok(SignalForwarder { streams })
    }

    fn forward(self, sender: &Sender, job: u64) {
        for (mut stream, number) in self.streams {
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut count = 0;
                while stream.recv().await.is_some() {
                    count += 1;
                    if count >= 3 && number != libc::SIGWINCH {
                        eprintln!("ferry: giving up waiting for job {job}");
                        std::process::exit(128 + number);
                    }
                    if sender.signal(job, number).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
}
