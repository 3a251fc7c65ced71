//! `ferry session` (new, state, close) and `ferry sh`, a small interactive loop over one
//! session.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::{Context, Result};
use ferry_client::{Client, ClientError, Endpoint, RunRequest, Sender};
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{SessionArgs, SessionCommand, ShArgs};
use crate::commands::run::own_stdio;
use crate::follow::{exit_status, print_job_output, Followed};

/// Runs `ferry session ...`.
pub fn run(target: &Endpoint, args: SessionArgs) -> Result<i32> {
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        match args.command {
            SessionCommand::New => {
                let id = new_session(&mut client, target).await?;
                println!("{id}");
            }
            SessionCommand::State { id } => {
                let state = client.session_state(&id).await?;
                let mut out = std::io::stdout().lock();
                out.write_all(&state.render())?;
                out.write_all(b"\n")?;
            }
            SessionCommand::Close { id } => client.session_close(&id).await?,
        }
        Ok(0)
    })
}

/// Makes a session in the current directory (a remote daemon picks its own).
async fn new_session(client: &mut Client, target: &Endpoint) -> Result<String> {
    let cwd = match target {
        Endpoint::Unix(_) => {
            Some(std::env::current_dir().context("cannot read the current directory")?)
        }
        Endpoint::Tcp { .. } => None,
    };
    Ok(client.session_new(cwd.as_deref()).await?)
}

/// Runs `ferry sh`.
pub fn sh(target: &Endpoint, args: ShArgs) -> Result<i32> {
    crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        let (id, owned) = match args.session {
            Some(id) => (id, false),
            None => (new_session(&mut client, target).await?, true),
        };
        let interactive = std::io::stdin().is_terminal();
        let pass_stdio = matches!(target, Endpoint::Unix(_));
        let current = Arc::new(CurrentJob::default());
        forward_signals_to_current(&client.sender(), Arc::clone(&current))?;
        let mut shell = Shell {
            client: &mut client,
            id: &id,
            current,
        };
        let mut lines = Lines::new(interactive);
        let mut status = 0;
        loop {
            let prompt = if interactive {
                let cwd = shell.cwd().await.unwrap_or_else(|_| "?".into());
                format!("ferry:{cwd}$ ")
            } else {
                String::new()
            };
            let Some(line) = lines.next(&prompt)? else {
                break;
            };
            let trimmed = line.trim_ascii();
            if trimmed.is_empty() || trimmed.starts_with(b"#") {
                continue;
            }
            // `exit` leaves with the last command's status, `exit N` with N, as a shell does.
            if let Some(code) = exit_request(trimmed, status) {
                status = code;
                break;
            }
            status = shell.run(line, pass_stdio).await?;
        }
        lines.finish();
        if interactive {
            eprintln!();
        }
        if owned {
            // Closed before ferry leaves.
            let _ = client.session_close(&id).await;
        }
        Ok(status)
    })
}

/// The status `exit` or `exit N` asks to leave with (`last` for a bare `exit`); `None` for
/// any other line.
fn exit_request(line: &[u8], last: i32) -> Option<i32> {
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    if words.next()? != "exit" {
        return None;
    }
    match (words.next(), words.next()) {
        (None, _) => Some(last),
        (Some(code), None) => code.parse::<i64>().ok().map(|n| (n & 0xff) as i32),
        _ => None,
    }
}

/// Where `ferry sh` reads its lines: a line editor with history on a terminal (the history
/// kept in the state directory's `sh_history`), else stdin a byte at a time, as a shell reads
/// a script, so that the commands run on that stdin find the lines after theirs unread.
enum Lines {
    Editor(Box<rustyline::DefaultEditor>, Option<std::path::PathBuf>),
    Plain,
}

impl Lines {
    fn new(interactive: bool) -> Lines {
        if !interactive {
            return Lines::Plain;
        }
        let Ok(mut editor) = rustyline::DefaultEditor::new() else {
            return Lines::Plain;
        };
        let history = crate::state_dir_from_env().join("sh_history");
        let _ = editor.load_history(&history);
        Lines::Editor(Box::new(editor), Some(history))
    }

    /// The next line; `None` at the end of input (Ctrl-D). Ctrl-C at the prompt gives an
    /// empty line (a new prompt), as in a shell.
    fn next(&mut self, prompt: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Lines::Plain => read_line(),
            Lines::Editor(editor, _) => match editor.readline(prompt) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    Ok(Some(line.into_bytes()))
                }
                Err(rustyline::error::ReadlineError::Interrupted) => Ok(Some(Vec::new())),
                Err(rustyline::error::ReadlineError::Eof) => Ok(None),
                Err(e) => Err(e).context("cannot read the terminal"),
            },
        }
    }

    /// Keeps the history for the next `ferry sh`.
    fn finish(&mut self) {
        if let Lines::Editor(editor, Some(history)) = self {
            if let Some(dir) = history.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = editor.save_history(history);
        }
    }
}

/// One session driven line by line.
struct Shell<'a> {
    client: &'a mut Client,
    id: &'a str,
    /// The job running now, for signal forwarding.
    current: Arc<CurrentJob>,
}

impl Shell<'_> {
    /// Runs one command line in the session; its status.
    async fn run(&mut self, line: Vec<u8>, pass_stdio: bool) -> Result<i32> {
        use std::os::unix::ffi::OsStringExt;
        let run = RunRequest {
            argv: vec![std::ffi::OsString::from_vec(line)],
            hangup_on_disconnect: true,
            follow: true,
            session: Some(self.id.to_owned()),
            pass_stdio: pass_stdio.then(own_stdio),
            ..RunRequest::default()
        };
        self.current.submitting();
        let job = match self.client.run(&run).await {
            Ok(started) => started.job,
            Err(ClientError::Refused { message, .. }) => {
                self.current.ended();
                eprintln!("ferry: {message}");
                return Ok(125);
            }
            Err(e) => return Err(e.into()),
        };
        let sender = self.client.sender();
        for signal in self.current.started(job) {
            let _ = sender.signal(job, signal).await;
        }
        let followed = print_job_output(self.client, job, Some(&sender)).await;
        self.current.ended();
        match followed? {
            Followed::Exit(exit) => Ok(exit_status(job, &exit)),
            Followed::LogEnd => {
                anyhow::bail!("the daemon ended job {job}'s output without an exit")
            }
        }
    }

    /// The session's working directory, for the prompt.
    async fn cwd(&mut self) -> Result<String> {
        let state = self.client.session_state(self.id).await?;
        Ok(String::from_utf8_lossy(&state.cwd).into_owned())
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
