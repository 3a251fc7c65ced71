//! Starting a job's first process: its program found as a shell would, its environment, its
//! standard fds, its process group (or a terminal's session), its cgroup; created there with
//! `clone3` ([`crate::spawn`]) where it can be, else with the standard library.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use super::{set_size, Job};
use crate::spawn::{self, Process, Spawn};
use crate::tracking::{self, Placement};
use crate::types::{JobSpec, PassedStdio};

/// Starts the job's first process: in its cgroup with `clone3` where it has one and no
/// terminal (see [`crate::spawn`]), else with the standard library (`posix_spawn` when no hook
/// is needed). The error is the job's message.
pub(super) fn start_process(
    job: &Job,
    resolved: &Path,
    placement: &Placement,
    mut passed: Option<PassedStdio>,
) -> Result<Process, String> {
    let spec = &job.spec;
    let program = &spec.argv[0];
    let clone_into = placement.clone_into && spec.tty.is_none();
    if let (Some(cgroup), true) = (&placement.cgroup, clone_into) {
        let stdio = match passed.take() {
            Some(p) => spawn::Stdio::Passed([p.stdin, p.stdout, p.stderr]),
            None => spawn::Stdio::Piped { stdin: spec.stdin },
        };
        let launch = spawn::Launch {
            path: resolved,
            argv: &spec.argv,
            env: job_environment(spec, &placement.track.mark),
            cwd: spec.cwd.as_deref(),
            stdio,
            cgroup,
        };
        match spawn::into_cgroup(launch) {
            Spawn::Started(process) => return Ok(process),
            Spawn::Failed(e) => return Err(spawn_error(program, &spec.cwd, &e)),
            Spawn::Unsupported(spawn::Stdio::Passed([stdin, stdout, stderr])) => {
                passed = Some(PassedStdio {
                    stdin,
                    stdout,
                    stderr,
                })
            }
            Spawn::Unsupported(spawn::Stdio::Piped { .. }) => {}
        }
    }
    let mut command = Command::new(resolved);
    command
        .arg0(program)
        .args(&spec.argv[1..])
        .stdin(if spec.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((rows, cols)) = spec.tty {
        match on_a_terminal(&mut command, rows, cols) {
            Ok(master) => job.status().tty_master = Some(Arc::new(master)),
            Err(e) => return Err(format!("cannot make a terminal for it: {e}")),
        }
    } else {
        command.process_group(0);
    }
    if let Some(passed) = passed {
        // The job writes straight to the client's fds; the pump only waits for its exit.
        command
            .stdin(Stdio::from(passed.stdin))
            .stdout(Stdio::from(passed.stdout))
            .stderr(Stdio::from(passed.stderr));
    }
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    command
        .env_clear()
        .envs(job_environment(spec, &placement.track.mark));
    let procs = placement
        .procs()
        .map_err(|e| format!("cannot open the job's cgroup: {e}"))?;
    if let Some(procs) = procs {
        // SAFETY: the closure runs in the forked child before it executes the command; it
        // makes one write(2) of a static buffer to an fd opened by the parent and one
        // signal(2), both async-signal-safe; it allocates nothing and takes no lock.
        unsafe {
            command.pre_exec(move || {
                default_file_size_signal();
                rustix::io::write(&procs, b"0")
                    .map(|_| ())
                    .map_err(std::io::Error::from)
            });
        }
    }
    let child = command
        .spawn()
        .map_err(|e| spawn_error(program, &spec.cwd, &e))?;
    // `command` goes here: the terminal's slave side belongs to the job alone now, and its
    // master reads the end of the output once the job's processes have closed it.
    Ok(Process::from_child(child))
}

/// The job's whole environment: its own (the daemon's when it has none), `TERM` when it has a
/// terminal, and its tracking mark. One value per name, the last given winning.
fn job_environment(spec: &JobSpec, mark: &str) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = match &spec.env {
        Some(env) => env.iter().cloned().collect(),
        None => std::env::vars_os().collect(),
    };
    if let Some(term) = &spec.term {
        env.insert("TERM".into(), term.into());
    }
    env.insert(tracking::MARKER.into(), mark.into());
    env
}

/// Finds the program to execute the way a shell would, but with the job's own `PATH` and
/// working directory: a name with a slash is taken relative to the job's directory, a bare
/// name is searched in the job's `PATH`. Resolving here (rather than letting the spawn search)
/// keeps spawning on the fast `posix_spawn` path and gives a clear error without forking.
pub(super) fn resolve_program(program: &OsStr, spec: &JobSpec) -> Result<PathBuf, String> {
    use std::os::unix::ffi::OsStrExt;
    let name = program.to_string_lossy();
    if program.is_empty() {
        return Err("cannot run an empty program name".into());
    }
    if program.as_bytes().contains(&b'/') {
        let path = Path::new(program);
        return Ok(match &spec.cwd {
            Some(cwd) if path.is_relative() => cwd.join(path),
            _ => path.to_owned(),
        });
    }
    let path_var = match &spec.env {
        Some(env) => env
            .iter()
            .find(|(key, _)| key == "PATH")
            .map(|(_, value)| value.clone()),
        None => std::env::var_os("PATH"),
    }
    .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path_var) {
        let dir = match (&spec.cwd, dir.is_relative()) {
            (Some(cwd), true) => cwd.join(dir),
            _ => dir,
        };
        let candidate = dir.join(program);
        let executable = std::fs::metadata(&candidate).is_ok_and(|m| m.is_file())
            && rustix::fs::access(&candidate, rustix::fs::Access::EXEC_OK).is_ok();
        if executable {
            return Ok(candidate);
        }
    }
    Err(format!("cannot run {name}: command not found"))
}

fn spawn_error(program: &OsStr, cwd: &Option<std::path::PathBuf>, e: &std::io::Error) -> String {
    let program = program.to_string_lossy();
    match (e.kind(), cwd) {
        (std::io::ErrorKind::NotFound, Some(cwd)) if !cwd.is_dir() => {
            format!(
                "cannot run {program}: working directory {} does not exist",
                cwd.display()
            )
        }
        _ => format!("cannot run {program}: {e}"),
    }
}

/// Gives `command` a new pseudo-terminal of `rows` by `cols` as its stdin, stdout, stderr
/// and controlling terminal, in a session (and process group) of its own; returns the
/// master side.
fn on_a_terminal(command: &mut Command, rows: u16, cols: u16) -> std::io::Result<OwnedFd> {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    set_size(&master, rows, cols)?;
    let name = ptsname(&master, Vec::new())?;
    let slave: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(std::ffi::OsStr::from_bytes(name.to_bytes()))?
        .into();
    command
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // SAFETY: the closure runs in the forked child before it executes the command; it makes
    // three system calls (signal, setsid, and the TIOCSCTTY ioctl on its new stdin),
    // async-signal-safe, allocating nothing and taking no lock.
    unsafe {
        command.pre_exec(|| {
            default_file_size_signal();
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
            Ok(())
        });
    }
    Ok(master)
}

/// Gives SIGXFSZ its default action (the daemon may ignore it: see the daemon's server), in a
/// child between fork and exec.
fn default_file_size_signal() {
    // SAFETY: signal(2) with SIG_DFL is async-signal-safe and installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
    }
}
