//! One action's run: locally on the local daemon, or remotely in a fresh sandbox on the host
//! [`super::place`] chose, with its `requires` files put first and the files it made or
//! changed fetched after (through [`crate::landing`]: nothing lands outside the Rakefile's
//! directory, through a symbolic link, in `.git/` or over the Rakefile). A remote action whose host fails before
//! it ends is run again once on another host.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use ferry_client::{Client, Endpoint, Event, JobExit, Listing, RunRequest};
use ferry_rake::Action;

use super::output::Printer;
use super::place::{Pool, INPUT_CACHE};
use super::rake64::Rake64;
use crate::cli::RakeWire;
use crate::commands::transfer;
use crate::landing::{refused_files, Landing};

/// What every action of a run shares.
pub struct Work {
    /// The local daemon.
    pub local: Endpoint,
    /// The Rakefile's directory: local actions run there, requirements come from there and
    /// results go there.
    pub dir: PathBuf,
    /// The same directory, opened: where every returned file lands.
    pub landing: Landing,
    /// The hosts.
    pub pool: Arc<Pool>,
    /// Local actions running at once (each holds a connection to the local daemon, whose
    /// connection and job limits are finite).
    pub local_slots: Arc<tokio::sync::Semaphore>,
    /// Connections to the local daemon between two local actions.
    pub idle_local: std::sync::Mutex<Vec<Client>>,
    /// The remote-execution cluster remote actions go to, instead of the pool.
    pub cluster: Option<Arc<super::reapi::Backend>>,
}

/// Local actions that run at once; the others of a set wait for a place.
pub const LOCAL_AT_ONCE: usize = 64;

/// How an action ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Its command.
    pub command: String,
    /// Where it ran last (`local`, or `HOST:PORT`).
    pub host: String,
    /// Where it ran first, when it was run again elsewhere.
    pub first_host: Option<String>,
    /// Runs after the first.
    pub reruns: u32,
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Why it could not run or finish, if so.
    pub error: Option<String>,
    /// When it started.
    pub started: SystemTime,
    /// How long it took (placement and transfers included).
    pub elapsed: Duration,
    /// Bytes of requirements sent.
    pub sent: u64,
    /// Bytes of results fetched.
    pub received: u64,
    /// Its result came from a cluster's action cache (nothing ran).
    pub cached: bool,
}

impl Outcome {
    /// It ran and exited 0.
    pub fn succeeded(&self) -> bool {
        self.error.is_none() && self.code == Some(0)
    }

    /// The exit column of the summary.
    pub fn exit_text(&self) -> String {
        match (self.code, self.signal, &self.error) {
            (_, _, Some(_)) => "error".into(),
            (Some(code), _, _) => code.to_string(),
            (None, Some(signal), _) => format!("signal {signal}"),
            (None, None, None) => "?".into(),
        }
    }

    /// What went wrong, for the report.
    pub fn failure(&self) -> String {
        match &self.error {
            Some(error) => format!("`{}` on {}: {error}", self.command, self.host),
            None => format!(
                "`{}` failed on {} with exit {}",
                self.command,
                self.host,
                self.exit_text()
            ),
        }
    }
}

/// What one attempt came to.
enum Attempt {
    /// The command ran to its end.
    Ended(JobExit, u64, u64),
    /// The host failed (unreachable, gone mid-way): worth another host.
    HostFailed(String),
    /// Something on this side failed: not worth another host.
    Failed(String),
}

/// Runs one action to its end.
pub async fn run(work: &Work, action: &Action, tagged: bool) -> Outcome {
    let started = SystemTime::now();
    let clock = Instant::now();
    let mut outcome = Outcome {
        command: action.command.clone(),
        // A remote action is on no host until it is placed (it may never be).
        host: if action.remote {
            "(not placed)".into()
        } else {
            "local".into()
        },
        first_host: None,
        reruns: 0,
        code: None,
        signal: None,
        error: None,
        started,
        elapsed: Duration::ZERO,
        sent: 0,
        received: 0,
        cached: false,
    };
    let tag = tagged.then(|| action.command.clone());
    let attempt = if action.remote {
        remote(work, action, tag, &mut outcome).await
    } else {
        let mut printer = Printer::new(tag);
        local(work, action, &mut printer).await
    };
    match attempt {
        Attempt::Ended(exit, sent, received) => {
            outcome.code = exit.code;
            outcome.signal = exit.signal;
            outcome.error = exit.error;
            outcome.sent = sent;
            outcome.received = received;
        }
        Attempt::HostFailed(why) | Attempt::Failed(why) => outcome.error = Some(why),
    }
    outcome.elapsed = clock.elapsed();
    outcome
}

/// A local action: `sh -c COMMAND` on the local daemon, in the Rakefile's directory.
async fn local(work: &Work, action: &Action, printer: &mut Printer) -> Attempt {
    let Ok(_slot) = work.local_slots.acquire().await else {
        return Attempt::Failed("the run is ending".into());
    };
    let result: Result<JobExit> = async {
        let mut client = local_client(work).await?;
        let run = RunRequest {
            argv: shell(&action.command),
            cwd: Some(work.dir.clone()),
            env: Some(std::env::vars_os().collect()),
            hangup_on_disconnect: true,
            follow: true,
            ..RunRequest::default()
        };
        let started = client.run(&run).await?;
        let exit = follow(&mut client, started.job, printer).await?;
        // The connection serves the next local action.
        work.idle_local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(client);
        Ok(exit)
    }
    .await;
    match result {
        Ok(exit) => Attempt::Ended(exit, 0, 0),
        Err(e) => Attempt::Failed(format!("{e:#}")),
    }
}

/// A remote action, with one more try on another host if its host fails.
async fn remote(
    work: &Work,
    action: &Action,
    tag: Option<String>,
    outcome: &mut Outcome,
) -> Attempt {
    if let Some(backend) = &work.cluster {
        outcome.host.clone_from(&backend.cluster.url);
        let mut printer = Printer::new(tag);
        return match backend
            .run(&work.dir, &work.landing, action, &mut printer)
            .await
        {
            Ok(ran) => {
                outcome.cached = ran.cached;
                Attempt::Ended(ran.exit, ran.sent, ran.received)
            }
            Err(e) => Attempt::Failed(format!("{e:#}")),
        };
    }
    let inputs = match input_hashes(&work.dir, &action.requires) {
        Ok(inputs) => inputs,
        Err(e) => return Attempt::Failed(format!("{e:#}")),
    };
    let mut tried = Vec::new();
    // Why the first host failed, said with the reason no other took the action.
    let mut lost: Option<String> = None;
    loop {
        let index = match work.pool.choose(&tried, &inputs).await {
            Ok(index) => index,
            Err(e) => {
                return Attempt::Failed(match &lost {
                    Some(why) => format!("{why}; no other host could take it: {e:#}"),
                    None => format!("{e:#}"),
                })
            }
        };
        let host = &work.pool.hosts[index];
        if !tried.is_empty() {
            outcome.first_host = Some(outcome.host.clone());
            outcome.reruns += 1;
        }
        outcome.host = host.name.clone();
        tried.push(index);
        if work.pool.wire == RakeWire::Rake64 {
            let mut printer = Printer::new(tag.clone());
            match on_rake64_host(work, &host.name, action, &mut printer).await {
                Attempt::HostFailed(why) if tried.len() < 2 => {
                    super::output::note(&format!(
                        "ferry: rake: `{}` lost its host {} ({why}): running it again elsewhere",
                        action.command, host.name
                    ));
                    lost = Some(format!("{} failed: {why}", host.name));
                    continue;
                }
                other => return other,
            }
        }
        if host.endpoint().is_none() {
            return Attempt::Failed(format!("{} cannot be reached", host.name));
        }
        let mut printer = Printer::new(tag.clone());
        match on_host(work, index, action, &inputs, &mut printer).await {
            Attempt::HostFailed(why) if tried.len() < 2 => {
                super::output::note(&format!(
                    "ferry: rake: `{}` lost its host {} ({why}): running it again elsewhere",
                    action.command, host.name
                ));
                lost = Some(format!("{} failed: {why}", host.name));
            }
            other => return other,
        }
    }
}

/// The content hash (XXH3-128, hex) of each required file.
fn input_hashes(dir: &Path, requires: &[String]) -> Result<Vec<String>> {
    requires
        .iter()
        .map(|name| {
            let mut file = std::fs::File::open(dir.join(name))
                .with_context(|| format!("required file {name}"))?;
            let mut checksum = ferry_common::checksum::FileChecksum::new();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = std::io::Read::read(&mut file, &mut buf)
                    .with_context(|| format!("required file {name}"))?;
                if n == 0 {
                    break;
                }
                checksum.update(&buf[..n]);
            }
            Ok(checksum
                .digest()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect())
        })
        .collect()
}

/// Puts the requirements into `sandbox`: a content the host holds already (in its input
/// cache) is linked, not sent; another is sent into the cache, then linked. The bytes sent.
async fn put_inputs(
    client: &mut Client,
    work: &Work,
    host: usize,
    sandbox: &str,
    requires: &[String],
    inputs: &[String],
) -> Result<u64> {
    // What the host's cache holds: listed once this run (by its cost poll, as a rule), and
    // what this run sent it since; a content gone meanwhile fails its link, and is sent.
    let pool_host = &work.pool.hosts[host];
    if !requires.is_empty() {
        pool_host.scan_cache(client).await;
    }
    let held = pool_host
        .held
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut sent = 0;
    for (name, hash) in requires.iter().zip(inputs) {
        let cached = format!("{INPUT_CACHE}/{hash}");
        let target = format!("{sandbox}/{name}");
        if held.contains(hash) && client.link(&cached, &target).await.is_ok() {
            continue;
        }
        let local = work.dir.join(name);
        sent += std::fs::metadata(&local)
            .with_context(|| format!("required file {name}"))?
            .len();
        transfer::upload(client, &local, &cached, true).await?;
        client.link(&cached, &target).await?;
        pool_host
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash.clone());
    }
    Ok(sent)
}

/// Runs a remote action on one host: sandbox, requirements, command, results. The connection
/// goes back to the pool once the sandbox is removed.
async fn on_host(
    work: &Work,
    host: usize,
    action: &Action,
    inputs: &[String],
    printer: &mut Printer,
) -> Attempt {
    let sandbox = work.pool.ask(host, async |c| c.sandbox(false).await).await;
    let (mut client, sandbox) = match sandbox {
        Ok(ready) => ready,
        Err(e) => return Attempt::HostFailed(format!("{e:#}")),
    };
    // Until the command has run, a failure is the host's (or the connection's).
    let prepared: Result<(Listing, u64)> = async {
        let sent = put_inputs(&mut client, work, host, &sandbox, &action.requires, inputs).await?;
        let before = client.list(&sandbox).await?;
        Ok((before, sent))
    }
    .await;
    // The requirements were read (and hashed) before placement: what fails here is the host
    // or the connection.
    let (before, sent) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => return Attempt::HostFailed(format!("{e:#}")),
    };
    let run = RunRequest {
        argv: shell(&action.command),
        sandbox: Some(sandbox.clone()),
        hangup_on_disconnect: true,
        follow: true,
        ..RunRequest::default()
    };
    let exit = match client.run(&run).await {
        Ok(started) => match follow(&mut client, started.job, printer).await {
            Ok(exit) => exit,
            Err(e) => return Attempt::HostFailed(format!("{e:#}")),
        },
        Err(e @ ferry_client::ClientError::Refused { .. }) => {
            return Attempt::Failed(e.to_string())
        }
        Err(e) => return Attempt::HostFailed(e.to_string()),
    };
    let fetched = fetch_results(&mut client, &work.landing, &sandbox, &before).await;
    // The sandbox goes (the daemon would remove it with the connection), and the connection
    // is kept for the run's next poll or action; off this action's path.
    let pool = Arc::clone(&work.pool);
    tokio::spawn(async move {
        if client.remove(&sandbox, true).await.is_ok() {
            pool.keep(host, client);
        }
    });
    match fetched {
        Ok(received) => Attempt::Ended(exit, sent, received),
        Err(e) => Attempt::Failed(format!("cannot fetch its results: {e:#}")),
    }
}

/// Runs a remote action on a rake64 server.
async fn on_rake64_host(
    work: &Work,
    address: &str,
    action: &Action,
    printer: &mut Printer,
) -> Attempt {
    let mut server = match Rake64::connect(address, work.pool.reply_timeout).await {
        Ok(server) => server,
        Err(e) => return Attempt::HostFailed(format!("{e:#}")),
    };
    let ran = server
        .run(
            &work.dir,
            &work.landing,
            &action.command,
            &action.requires,
            printer,
        )
        .await;
    server.close().await;
    match ran {
        // The command ran: files that may not land fail the action, not the host.
        Ok(ended) if !ended.refused.is_empty() => Attempt::Failed(refused_files(&ended.refused)),
        Ok(ended) => Attempt::Ended(JobExit::reported(ended.code), ended.sent, ended.received),
        Err(e) => Attempt::HostFailed(format!("{e:#}")),
    }
}

/// Fetches the files the command made or changed in `sandbox` into `landing`; the bytes
/// fetched. A name that may not land there fails the action, with every such name.
async fn fetch_results(
    client: &mut Client,
    landing: &Landing,
    sandbox: &str,
    before: &Listing,
) -> Result<u64> {
    let after = client.list(sandbox).await?;
    let made: Vec<_> = after
        .files
        .iter()
        .filter(|entry| !before.files.contains(entry))
        .collect();
    transfer::download_into(
        client,
        sandbox,
        &made,
        landing,
        true,
        transfer::Flush::AsMakeDoes,
    )
    .await
}

/// Prints a followed job's output until it exits.
async fn follow(client: &mut Client, job: u64, printer: &mut Printer) -> Result<JobExit> {
    loop {
        let Some(event) = client.next_event().await? else {
            bail!("the daemon closed the connection before the action ended");
        };
        match event {
            Event::Output {
                job: of,
                stream,
                data,
                ..
            } if of == job => printer.write(stream, &data),
            Event::Exit { job: of, exit } if of == job => {
                printer.finish();
                return Ok(exit);
            }
            _ => {}
        }
    }
}

/// The command's argv: its words when it is a plain command (no character a shell would
/// treat specially), so that no shell is started for it, as make does; else `sh -c COMMAND`.
fn shell(command: &str) -> Vec<OsString> {
    const SPECIAL: &[char] = &[
        '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '"', '\'', '*', '?', '[', ']', '#', '~',
        '=', '%', '{', '}', '!', '\n',
    ];
    let words: Vec<&str> = command.split_whitespace().collect();
    // Commands only a shell has.
    const BUILTINS: &[&str] = &[
        "cd", "exit", "export", "set", "unset", ".", ":", "source", "exec", "ulimit", "umask",
        "alias", "eval", "read", "wait", "trap", "readonly", "shift", "times", "command", "hash",
        "getopts", "return", "type", "jobs", "local", "break", "continue",
    ];
    let builtin = words.first().is_some_and(|w| BUILTINS.contains(w));
    if words.is_empty() || builtin || command.contains(SPECIAL) {
        return vec!["sh".into(), "-c".into(), command.into()];
    }
    words.into_iter().map(OsString::from).collect()
}

/// Takes an idle connection to the local daemon, or opens one.
async fn local_client(work: &Work) -> Result<Client> {
    let idle = work
        .idle_local
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop();
    match idle {
        Some(client) => Ok(client),
        None => crate::commands::connect(&work.local).await,
    }
}

#[cfg(test)]
mod tests {
    use super::shell;

    #[test]
    fn plain_commands_run_without_a_shell_and_others_with_one() {
        assert_eq!(shell("cc -c  square.c"), ["cc", "-c", "square.c"]);
        assert_eq!(shell("true"), ["true"]);
        for command in [
            "echo $HOME",
            "a | b",
            "cd /tmp",
            "x=1 env",
            "ls *.c",
            "echo 'a b'",
            "exit 3",
        ] {
            assert_eq!(shell(command), ["sh", "-c", command], "{command}");
        }
    }
}
