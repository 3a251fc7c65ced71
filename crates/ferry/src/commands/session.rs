//! `ferry session` (new, state, close) and `ferry sh`, a small interactive loop over one
//! session.

use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStringExt;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use ferry_client::{Client, Endpoint, Receiver, Sender};
use ferry_common::SessionState;
use ferry_wire::native::{ClientMessage, DaemonMessage};
use serde_bytes::ByteBuf;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{SessionArgs, SessionCommand, ShArgs};
use crate::commands::run::{connect_local, own_stdio};
use crate::follow::{exit_status, print_job_output, Followed};

/// Runs `ferry session ...`.
pub fn run(target: &Endpoint, args: SessionArgs) -> Result<i32> {
    crate::client_runtime()?.block_on(async {
        let mut client = connect(target).await?;
        match args.command {
            SessionCommand::New => {
                let id = new_session(&mut client, target).await?;
                println!("{id}");
            }
            SessionCommand::State { id } => {
                let request = client.request_id();
                client
                    .send(&ClientMessage::SessionState {
                        request,
                        session: id,
                    })
                    .await?;
                match answer(&mut client).await? {
                    DaemonMessage::SessionInfo {
                        cwd,
                        status,
                        changed,
                        unset,
                        ..
                    } => {
                        let state = SessionState {
                            cwd: cwd.into_vec(),
                            status,
                            changed: changed.into_iter().map(ByteBuf::into_vec).collect(),
                            unset: unset.into_iter().map(ByteBuf::into_vec).collect(),
                        };
                        let mut out = std::io::stdout().lock();
                        out.write_all(&state.render())?;
                        out.write_all(b"\n")?;
                    }
                    other => bail!("unexpected answer {other:?}"),
                }
            }
            SessionCommand::Close { id } => close_session(&mut client, id).await?,
        }
        Ok(0)
    })
}

/// Connects (starting the local daemon when needed).
async fn connect(target: &Endpoint) -> Result<Client> {
    match target {
        Endpoint::Unix(socket) => connect_local(socket, None).await,
        Endpoint::Tcp { .. } => Ok(Client::connect(target, crate::CLIENT_NAME).await?),
    }
}

/// The next answer that is not a notice; an error answer becomes an error.
async fn answer(client: &mut Client) -> Result<DaemonMessage> {
    loop {
        match client.recv().await? {
            Some(DaemonMessage::Error { message, .. }) => bail!("{message}"),
            Some(DaemonMessage::Notice { message, .. }) => eprintln!("ferry: {message}"),
            Some(message) => return Ok(message),
            None => bail!("the daemon closed the connection"),
        }
    }
}

async fn new_session(client: &mut Client, target: &Endpoint) -> Result<String> {
    let cwd = match target {
        Endpoint::Unix(_) => Some(ByteBuf::from(
            std::env::current_dir()
                .context("cannot read the current directory")?
                .into_os_string()
                .into_vec(),
        )),
        Endpoint::Tcp { .. } => None,
    };
    let request = client.request_id();
    client
        .send(&ClientMessage::SessionNew { request, cwd })
        .await?;
    match answer(client).await? {
        DaemonMessage::SessionReady { session, .. } => Ok(session),
        other => bail!("unexpected answer {other:?}"),
    }
}

async fn close_session(client: &mut Client, id: String) -> Result<()> {
    let request = client.request_id();
    client
        .send(&ClientMessage::SessionClose {
            request,
            session: id,
        })
        .await?;
    match answer(client).await? {
        DaemonMessage::Done { .. } => Ok(()),
        other => bail!("unexpected answer {other:?}"),
    }
}

/// Runs `ferry sh`.
pub fn sh(target: &Endpoint, args: ShArgs) -> Result<i32> {
    crate::client_runtime()?.block_on(async {
        let mut client = connect(target).await?;
        let (id, owned) = match args.session {
            Some(id) => (id, false),
            None => (new_session(&mut client, target).await?, true),
        };
        let interactive = std::io::stdin().is_terminal();
        let pass_stdio = matches!(target, Endpoint::Unix(_));
        let (mut receiver, sender) = client.split();
        let current = Arc::new(CurrentJob::default());
        forward_signals_to_current(&sender, Arc::clone(&current))?;
        let mut shell = Shell {
            receiver: &mut receiver,
            sender: &sender,
            id: &id,
            next_request: 1 << 32,
            current,
        };
        let mut status = 0;
        loop {
            if interactive {
                let cwd = shell.cwd().await.unwrap_or_else(|_| "?".into());
                eprint!("ferry:{cwd}$ ");
            }
            let Some(line) = read_line()? else { break };
            let trimmed = line.trim_ascii();
            if trimmed.is_empty() || trimmed.starts_with(b"#") {
                continue;
            }
            if trimmed == b"exit" {
                break;
            }
            status = shell.run(line, pass_stdio).await?;
        }
        if interactive {
            eprintln!();
        }
        if owned {
            let request = shell.request_id();
            let _ = sender
                .send(ClientMessage::SessionClose {
                    request,
                    session: id.clone(),
                })
                .await;
            // Wait for the answer, so that the close is done before ferry leaves.
            let _ = receiver.recv().await;
        }
        Ok(status)
    })
}

/// One session driven line by line.
struct Shell<'a> {
    receiver: &'a mut Receiver,
    sender: &'a Sender,
    id: &'a str,
    next_request: u64,
    /// The job running now, for signal forwarding.
    current: Arc<CurrentJob>,
}

impl Shell<'_> {
    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// Runs one command line in the session; its status.
    async fn run(&mut self, line: Vec<u8>, pass_stdio: bool) -> Result<i32> {
        let request = self.request_id();
        let run = ClientMessage::Run {
            request,
            argv: vec![ByteBuf::from(line)],
            cwd: None,
            env: None,
            stdin: false,
            timeout_ms: None,
            hangup_on_disconnect: true,
            follow: true,
            sandbox: None,
            pass_stdio,
            session: Some(self.id.to_owned()),
        };
        self.current.submitting();
        if pass_stdio {
            let fds = own_stdio()
                .iter()
                .map(|fd| fd.try_clone_to_owned())
                .collect::<std::io::Result<Vec<_>>>()
                .context("cannot duplicate stdio")?;
            self.sender.send_with_fds(run, fds).await?;
        } else {
            self.sender.send(run).await?;
        }
        let job = loop {
            match self.receiver.recv().await? {
                Some(DaemonMessage::Accepted { job, .. }) => break job,
                Some(DaemonMessage::Error { message, .. }) => {
                    self.current.ended();
                    eprintln!("ferry: {message}");
                    return Ok(125);
                }
                Some(DaemonMessage::Notice { message, .. }) => eprintln!("ferry: {message}"),
                Some(_) => {}
                None => bail!("the daemon closed the connection"),
            }
        };
        for signal in self.current.started(job) {
            let _ = self.sender.signal(job, signal).await;
        }
        let followed = print_job_output(self.receiver, job, Some(self.sender)).await;
        self.current.ended();
        match followed? {
            Followed::Exit(exit) => Ok(exit_status(job, &exit)),
            Followed::LogEnd => bail!("the daemon ended job {job}'s output without an exit"),
        }
    }

    /// The session's working directory, for the prompt.
    async fn cwd(&mut self) -> Result<String> {
        let request = self.request_id();
        self.sender
            .send(ClientMessage::SessionState {
                request,
                session: self.id.to_owned(),
            })
            .await?;
        loop {
            match self.receiver.recv().await? {
                Some(DaemonMessage::SessionInfo { cwd, .. }) => {
                    return Ok(String::from_utf8_lossy(&cwd).into_owned())
                }
                Some(DaemonMessage::Error { message, .. }) => bail!("{message}"),
                Some(_) => {}
                None => bail!("the daemon closed the connection"),
            }
        }
    }
}

/// Forwards INT, QUIT, TERM, HUP and WINCH to the command running now, if any. Between
/// commands, INT and QUIT are ignored (as at a shell's prompt) and TERM and HUP end ferry.
/// Which command `ferry sh` runs now: none (at the prompt), one being submitted (signals wait
/// for its id), or a job.
#[derive(Default)]
struct CurrentJob {
    state: std::sync::Mutex<(Phase, Vec<i32>)>,
}

#[derive(Default, Clone, Copy, PartialEq)]
enum Phase {
    #[default]
    Idle,
    Submitting,
    Running(u64),
}

impl CurrentJob {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Phase, Vec<i32>)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn submitting(&self) {
        *self.lock() = (Phase::Submitting, Vec::new());
    }

    /// The job started: the signals that came while it was being submitted.
    fn started(&self, job: u64) -> Vec<i32> {
        let mut state = self.lock();
        state.0 = Phase::Running(job);
        std::mem::take(&mut state.1)
    }

    fn ended(&self) {
        *self.lock() = (Phase::Idle, Vec::new());
    }

    /// Where a signal goes now: a job, or nowhere (at the prompt). Signals during submission
    /// are kept for the job.
    fn route(&self, signal: i32) -> Option<u64> {
        let mut state = self.lock();
        match state.0 {
            Phase::Running(job) => Some(job),
            Phase::Submitting => {
                state.1.push(signal);
                None
            }
            Phase::Idle => {
                if signal == libc::SIGTERM || signal == libc::SIGHUP {
                    std::process::exit(128 + signal);
                }
                None
            }
        }
    }
}

fn forward_signals_to_current(sender: &Sender, current: Arc<CurrentJob>) -> Result<()> {
    let kinds = [
        (SignalKind::interrupt(), libc::SIGINT),
        (SignalKind::quit(), libc::SIGQUIT),
        (SignalKind::terminate(), libc::SIGTERM),
        (SignalKind::hangup(), libc::SIGHUP),
        (SignalKind::window_change(), libc::SIGWINCH),
    ];
    for (kind, number) in kinds {
        let mut stream = signal(kind).context("cannot handle signals")?;
        let sender = sender.clone();
        let current = Arc::clone(&current);
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                let Some(job) = current.route(number) else {
                    continue;
                };
                if sender.signal(job, number).await.is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}

/// One line of stdin without its newline; `None` at end of input. Read a byte at a time, as a
/// shell does, so that the commands run on this stdin find the lines after theirs unread.
fn read_line() -> Result<Option<Vec<u8>>> {
    let stdin = std::io::stdin();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match rustix::io::read(&stdin, &mut byte) {
            Ok(0) => return Ok((!line.is_empty()).then_some(line)),
            Ok(_) if byte[0] == b'\n' => return Ok(Some(line)),
            Ok(_) => line.push(byte[0]),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e).context("cannot read stdin"),
        }
    }
}
