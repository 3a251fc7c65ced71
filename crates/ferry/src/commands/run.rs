//! `ferry run`: runs a command through the daemon (starting it if needed), forwards stdin and
//! signals, prints the output live, and exits with the command's status.

use std::io::{IsTerminal, Read};
use std::os::fd::BorrowedFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ferry_client::{Client, Endpoint, Listing, RunRequest, Sender};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::cli::RunArgs;
use crate::commands::transfer;
use crate::follow::{exit_status, print_job_output, Followed};
use crate::landing::Landing;

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
    // -t on the local daemon is this terminal itself; on a remote one, a terminal there.
    let remote_tty = (args.tty && !local).then(super::terminal::size);
    let pass_stdio = if args.fds || (args.tty && local) {
        if !local {
            bail!("--fds needs the daemon's Unix socket: a remote daemon cannot use this terminal");
        }
        true
    } else {
        local && !args.no_fds && !args.detach && std::io::stdout().is_terminal()
    };
    // Stdin that is /dev/null (as under xargs, cron or hyperfine) is the job's default
    // stdin already: nothing to forward, no thread to start.
    let forward_stdin = remote_tty.is_some()
        || (!args.detach && !args.no_stdin && !pass_stdio && !stdin_is_dev_null());
    let signals = SignalForwarder::install(pass_stdio)?;
    let resizes = match remote_tty {
        Some(_) => Some(signal(SignalKind::window_change()).context("cannot handle signals")?),
        None => None,
    };
    let mut run = RunRequest {
        argv: args.command.clone(),
        cwd: if local {
            Some(std::env::current_dir().context("cannot read the current directory")?)
        } else {
            None
        },
        env: local.then(|| std::env::vars_os().collect()),
        stdin: forward_stdin,
        timeout: args.timeout.map(Into::into),
        hangup_on_disconnect: !args.detach && !args.no_hangup,
        follow: !args.detach,
        pass_stdio: pass_stdio.then(own_stdio),
        session: args.session.clone(),
        group: args.group.clone(),
        label: args.label.clone(),
        after: args.after.clone(),
        after_any: args.after_any,
        tty: remote_tty,
        term: remote_tty.and_then(|_| std::env::var("TERM").ok()),
        ..RunRequest::default()
    };
    let sandboxed = !args.put.is_empty() || !args.get.is_empty() || args.get_new || args.keep;
    // Without a sandbox to fill first, the job goes with the handshake.
    let (mut client, started) = super::open(target, (!sandboxed).then_some(&run)).await?;
    let mut sandbox = None;
    let started = match started {
        Some(started) => started,
        None => {
            let (path, before) = fill_sandbox(&mut client, &args).await?;
            run.sandbox = Some(path.clone());
            sandbox = Some((path, before));
            client.run(&run).await?
        }
    };
    let job = started.job;
    if args.detach {
        println!("{job}");
        return Ok(0);
    }
    let sender = client.sender();
    // Keys go to the remote terminal as typed (Ctrl-C, Ctrl-Z included) until the job ends.
    let raw = remote_tty.and_then(|_| super::terminal::RawMode::enter());
    if let Some(mut resizes) = resizes {
        let sender = sender.clone();
        tokio::spawn(async move {
            while resizes.recv().await.is_some() {
                let (rows, cols) = super::terminal::size();
                if sender.resize(job, rows, cols).await.is_err() {
                    return;
                }
            }
        });
    }
    if forward_stdin {
        forward_stdin_thread(sender.clone(), job);
    }
    signals.forward(&sender, job);
    let followed = print_job_output(&mut client, job, Some(&sender)).await;
    drop(raw);
    let status = match followed? {
        Followed::Exit(exit) => exit_status(job, &exit),
        Followed::LogEnd => bail!("the daemon ended job {job}'s output without an exit"),
    };
    if let Some((path, before)) = sandbox {
        fetch_results(&mut client, &args, &path, before.as_ref()).await?;
        if args.keep {
            eprintln!("ferry: the sandbox is kept in the daemon's file area at {path}");
        }
    }
    Ok(status)
}

/// Makes a sandbox and puts the `--put` files in it; returns its path and, for `--get-new`,
/// what it held before the job.
async fn fill_sandbox(client: &mut Client, args: &RunArgs) -> Result<(String, Option<Listing>)> {
    let path = client.sandbox(args.keep).await?;
    for local in &args.put {
        let name = local
            .file_name()
            .ok_or_else(|| anyhow::anyhow!("--put {} has no file name", local.display()))?;
        let remote = format!("{path}/{}", name.to_string_lossy());
        transfer::upload(client, local, &remote, false).await?;
    }
    let before = if args.get_new {
        Some(client.list(&path).await?)
    } else {
        None
    };
    Ok((path, before))
}

/// Fetches the sandbox files `--get` and `--get-new` ask for into the current directory.
async fn fetch_results(
    client: &mut Client,
    args: &RunArgs,
    sandbox: &str,
    before: Option<&Listing>,
) -> Result<()> {
    if args.get.is_empty() && before.is_none() {
        return Ok(());
    }
    let patterns = args
        .get
        .iter()
        .map(|p| glob::Pattern::new(p).with_context(|| format!("--get {p}: not a pattern")))
        .collect::<Result<Vec<_>>>()?;
    let after = client.list(sandbox).await?;
    // Only regular files are fetched: say which of the others were asked for, and why not.
    for other in &after.others {
        let path = String::from_utf8_lossy(&other.path);
        let matched = patterns.iter().any(|p| p.matches(&path));
        let new = before.is_some_and(|before| !before.others.contains(other));
        if matched || new {
            eprintln!(
                "ferry: not fetched: {path} is {} (only regular files are fetched)",
                other.kind
            );
        }
    }
    // Files land in the current directory, beneath it and through no symbolic link.
    let landing = Landing::open(Path::new("."), &[])
        .context("cannot open the current directory for the results")?;
    let wanted: Vec<_> = after
        .files
        .iter()
        .filter(|entry| {
            let path = String::from_utf8_lossy(&entry.path);
            patterns.iter().any(|p| p.matches(&path))
                || before.is_some_and(|before| !before.files.contains(entry))
        })
        .collect();
    transfer::download_into(
        client,
        sandbox,
        &wanted,
        &landing,
        false,
        transfer::Flush::Durable,
    )
    .await?;
    Ok(())
}

/// Whether ferry's stdin is /dev/null (or closed): what a job gets without stdin.
fn stdin_is_dev_null() -> bool {
    match rustix::fs::fstat(rustix::stdio::stdin()) {
        Ok(stat) => {
            rustix::fs::FileType::from_raw_mode(stat.st_mode)
                == rustix::fs::FileType::CharacterDevice
                && stat.st_rdev == rustix::fs::makedev(1, 3)
        }
        Err(_) => true,
    }
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
                    if sender.blocking_stdin(job, buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = sender.blocking_close_stdin(job);
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
///
/// Ctrl-Z stops the job with ferry, as a job run directly would stop: SIGTSTP goes to the
/// job's process group, then ferry stops itself (SIGSTOP); `fg` (SIGCONT to ferry) continues
/// both.
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
        for number in [libc::SIGTSTP, libc::SIGCONT] {
            let stream = signal(SignalKind::from_raw(number)).context("cannot handle signals")?;
            streams.push((stream, number));
        }
        Ok(SignalForwarder { streams })
    }

    fn forward(self, sender: &Sender, job: u64) {
        for (mut stream, number) in self.streams {
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut count = 0;
                let repeated = ![libc::SIGWINCH, libc::SIGTSTP, libc::SIGCONT].contains(&number);
                while stream.recv().await.is_some() {
                    count += 1;
                    if count >= 3 && repeated {
                        super::terminal::restore();
                        eprintln!("ferry: giving up waiting for job {job}");
                        std::process::exit(128 + number);
                    }
                    let sent = if number == libc::SIGTSTP {
                        // Written before ferry stops, or it would never go.
                        sender.signal_written(job, number).await
                    } else {
                        sender.signal(job, number).await
                    };
                    if sent.is_err() {
                        return;
                    }
                    if number == libc::SIGTSTP {
                        // The job is stopping: so does ferry, until `fg` continues it.
                        let _ = rustix::process::kill_process(
                            rustix::process::getpid(),
                            rustix::process::Signal::STOP,
                        );
                    }
                }
            });
        }
    }
}
