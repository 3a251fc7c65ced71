//! Stateful shell sessions: each command of a session runs in the whole shell state its earlier
//! commands left (working directory, plain and exported variables, functions, aliases, shell
//! options, last exit status), as if one long-lived shell ran them all.
//!
//! Mechanism: every command is one `bash` job (so it runs on whatever stdio the job gets,
//! passed fds included, and its exit status is the job's, exactly). Bash runs a small driver
//! ([`DRIVER`]) that restores the state saved by the previous command, evaluates the command
//! line, and on exit (an `EXIT` trap, so `exit N` saves too, and so does a command ended by
//! INT, QUIT, TERM or HUP: the driver exits 128+N then, so that the next command's `$?` is
//! that status, as in a shell) dumps the state again with bash's
//! own `declare -p`, `declare -f`, `alias -p`, `shopt -p` and `shopt -op`, which print
//! re-readable shell. The dump goes to `state.new` beside the session; the engine adopts it
//! (`settle`) only when it is complete, so a command killed mid-dump leaves the previous
//! state. A command that replaces the shell (`exec prog`) or sets its own `EXIT` trap leaves
//! the state as it was before it.
//!
//! What `ferry session state` shows (the variables one by one, NUL-separated, with the working
//! directory and the last status: `summary`) is written only when asked for, by the driver in
//! its `summary` mode, which restores the state and writes nothing else: a command pays for
//! one dump, not two.
//!
//! One command runs in a session at a time: a second one is refused while the first runs.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::{Engine, EngineError, JobId, JobPhase, JobSpec, Principal};

/// The bash program that runs one command of a session: `$1` is the session's directory,
/// `$2` the command line. Aliases expand, as in an interactive shell. A signal that comes
/// while the state is restored ends the command once it is (as 128+N, the state saved), not
/// the shell halfway. With `$3` `summary` it
/// runs no command: it restores the state and writes `summary.new` (its scratch file apart,
/// so that it may run beside a command). `$4` names its scratch file (a list of names written
/// and read back), else it is in the session's directory.
pub const DRIVER: &str = r#"__ferry_signalled=
trap '__ferry_signalled=130' INT
trap '__ferry_signalled=131' QUIT
trap '__ferry_signalled=143' TERM
trap '__ferry_signalled=129' HUP
__ferry_dir=$1
__ferry_code=$2
__ferry_mode=$3
__ferry_scratch=${4:-$__ferry_dir/names${__ferry_mode:+.$__ferry_mode}}
set --
shopt -s expand_aliases
__ferry_last=0
__ferry_restore_options() { :; }
if [[ -f $__ferry_dir/state.sh ]]; then
  compgen -e -X FERRY_JOB >|"$__ferry_scratch" && mapfile -t __ferry_names <"$__ferry_scratch"
  ((${#__ferry_names[@]})) && unset -v "${__ferry_names[@]}" 2>/dev/null
  . "$__ferry_dir/state.sh" 2>/dev/null
fi
# The shell's own variables, the driver's and the job's mark (each command has its own),
# which a state never holds (a pattern for compgen -X, with extglob).
__ferry_skip='@(__ferry_*|FERRY_JOB|BASH|BASHOPTS|BASHPID|BASH_*|COLUMNS|COMP_WORDBREAKS|DIRSTACK|'
__ferry_skip+='EPOCHREALTIME|EPOCHSECONDS|EUID|FUNCNAME|GROUPS|HISTCMD|HOSTNAME|HOSTTYPE|LINENO|'
__ferry_skip+='LINES|MACHTYPE|OPTERR|OPTIND|OSTYPE|PIPESTATUS|PPID|PWD|RANDOM|SECONDS|SHELLOPTS|'
__ferry_skip+='SHLVL|SRANDOM|UID|_)'
__ferry_kept() {
  __ferry_vars=()
  shopt -s extglob
  compgen -v -X "$__ferry_skip" >|"$__ferry_scratch" && mapfile -t __ferry_vars <"$__ferry_scratch"
}
__ferry_summary() {
  __ferry_kept
  {
    printf '%s\0%d\0' "$PWD" "$1"
    for __ferry_n in "${__ferry_vars[@]}"; do
      declare -p -- "$__ferry_n"; printf '\0'
    done
    printf 'ferry-end\0'
  } >|"$__ferry_dir/summary.new"
}
if [[ $__ferry_mode == summary ]]; then
  __ferry_summary "$__ferry_last" 2>/dev/null
  exit 0
fi
__ferry_save() {
  __ferry_status=$1
  { printf '__ferry_restore_options() {\n'; shopt -op; shopt -p; printf '}\n'; } >|"$__ferry_dir/state.new"
  set +euo pipefail
  __ferry_kept
  compgen -A function >|"$__ferry_scratch" && mapfile -t __ferry_functions <"$__ferry_scratch"
  __ferry_user_functions=()
  for __ferry_n in "${__ferry_functions[@]}"; do
    [[ $__ferry_n == __ferry_* ]] || __ferry_user_functions+=("$__ferry_n")
  done
  {
    printf 'builtin cd -- %q\n' "$PWD"
    ((${#__ferry_vars[@]})) && declare -p -- "${__ferry_vars[@]}"
    ((${#__ferry_user_functions[@]})) && declare -f -- "${__ferry_user_functions[@]}"
    alias -p
    printf '__ferry_last=%d\n# ferry-state-end\n' "$__ferry_status"
  } >>"$__ferry_dir/state.new"
}
trap '__ferry_save "$?" 2>/dev/null' EXIT
trap 'exit 130' INT
trap 'exit 131' QUIT
trap 'exit 143' TERM
trap 'exit 129' HUP
[[ -z $__ferry_signalled ]] || exit "$__ferry_signalled"
__ferry_restore_options 2>/dev/null
__ferry_status_is() { return "$1"; }
if [[ $__ferry_last == 0 ]]; then
  eval "$__ferry_code"
else
  __ferry_status_is "$__ferry_last" || eval "$__ferry_code"
fi
"#;

/// The file, in a session's directory, that names who it belongs to.
const PRINCIPAL_FILE: &str = "principal";

/// What ends a complete `state.new`.
const STATE_END: &[u8] = b"\n# ferry-state-end\n";

/// What ends a complete `summary.new`.
const SUMMARY_END: &[u8] = b"\0ferry-end\0";

/// Why a session request failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No session has that id.
    #[error("no session '{0}' (see `ferry session new`)")]
    NotFound(String),
    /// A command is running in the session.
    #[error(
        "session '{session}' is busy: job {job} is still running in it (one command at a time)"
    )]
    Busy {
        /// The session.
        session: String,
        /// Its running job.
        job: JobId,
    },
    /// The request is not valid.
    #[error("{0}")]
    Invalid(String),
    /// The file system failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// The engine refused the job.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

pub use ferry_common::SessionState;

/// The sessions of one daemon, each a directory under one parent.
#[derive(Debug)]
pub struct SessionStore {
    dir: PathBuf,
    /// The job each session runs now (stale entries are cleared when seen finished).
    busy: Mutex<HashMap<String, JobId>>,
    /// `declare -p` lines of a fresh shell in the daemon's environment.
    baseline: OnceLock<Vec<Vec<u8>>>,
    /// Held while a summary is made (one at a time: they share the scratch files).
    summarizing: Mutex<()>,
    /// A private directory in memory (tmpfs) for the driver's scratch files, where there is
    /// one: a list of names written and read back costs 0.25 ms less there than on disk, and
    /// a command writes three. Made at the first command, removed with the store.
    scratch: OnceLock<Option<PathBuf>>,
}

impl Drop for SessionStore {
    fn drop(&mut self) {
        if let Some(Some(dir)) = self.scratch.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl SessionStore {
    /// Opens (creating, mode 0700) the directory that holds the sessions.
    pub fn open(dir: &Path) -> Result<SessionStore, SessionError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| SessionError::Io {
                context: format!("cannot create the sessions directory {}", dir.display()),
                source,
            })?;
        Ok(SessionStore {
            dir: dir.to_owned(),
            busy: Mutex::new(HashMap::new()),
            baseline: OnceLock::new(),
            summarizing: Mutex::default(),
            scratch: OnceLock::new(),
        })
    }

    /// The driver's scratch file `name`, in memory where possible (else the driver uses its
    /// session's directory).
    fn scratch_file(&self, name: &str) -> Option<PathBuf> {
        self.scratch
            .get_or_init(|| scratch_dir(&self.dir))
            .as_ref()
            .map(|dir| dir.join(name))
    }

    /// Makes a session for `principal` whose first command runs in `cwd`; returns its id.
    pub fn create(&self, cwd: &Path, principal: &Principal) -> Result<String, SessionError> {
        let id = format!("s{}", crate::files::random_hex());
        let dir = self.dir.join(&id);
        std::fs::create_dir(&dir).map_err(|source| SessionError::Io {
            context: format!("cannot create session directory {}", dir.display()),
            source,
        })?;
        std::fs::write(dir.join("origin"), cwd.as_os_str().as_bytes())
            .and_then(|()| std::fs::write(dir.join(PRINCIPAL_FILE), principal.to_string()))
            .map_err(|source| SessionError::Io {
                context: "cannot write the session's origin".into(),
                source,
            })?;
        Ok(id)
    }

    /// Who the session belongs to (sessions made before principals: the owner).
    pub fn principal(&self, id: &str) -> Result<Principal, SessionError> {
        let dir = self.session_dir(id)?;
        match std::fs::read_to_string(dir.join(PRINCIPAL_FILE)) {
            Ok(text) => text
                .trim()
                .parse()
                .map_err(|e: crate::BadPrincipal| SessionError::Invalid(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Principal::Owner),
            Err(source) => Err(SessionError::Io {
                context: format!("cannot read the principal of session {id}"),
                source,
            }),
        }
    }

    /// Forgets a session and its state.
    pub fn remove(&self, id: &str) -> Result<(), SessionError> {
        let dir = self.session_dir(id)?;
        self.lock_busy().remove(id);
        if let Some(Some(scratch)) = self.scratch.get() {
            for name in [id.to_owned(), format!("{id}.summary")] {
                let _ = std::fs::remove_file(scratch.join(name));
            }
        }
        std::fs::remove_dir_all(&dir).map_err(|source| SessionError::Io {
            context: format!("cannot remove session {id}"),
            source,
        })
    }

    /// Submits `code` (a shell command line) to run in the session; the job's id and whether
    /// it was queued. `job` gives the rest (stdio, stdin, timeout, origin); its argv, cwd and
    /// environment are the session's.
    pub fn submit(
        &self,
        engine: &Engine,
        id: &str,
        code: &[u8],
        job: JobSpec,
    ) -> Result<(JobId, bool), SessionError> {
        let dir = self.session_dir(id)?;
        let mut busy = self.lock_busy();
        if let Some(&job) = busy.get(id) {
            let finished = match engine.snapshot(job) {
                Ok(snapshot) => matches!(snapshot.phase, JobPhase::Finished(_)),
                Err(_) => true,
            };
            if !finished {
                return Err(SessionError::Busy {
                    session: id.to_owned(),
                    job,
                });
            }
            busy.remove(id);
        }
        settle(&dir);
        let first_cwd = std::fs::read(dir.join("origin")).unwrap_or_else(|_| b"/".to_vec());
        // Listed as what it is: the caller's words, or bash running the command line.
        let shown = job.shown.clone().unwrap_or_else(|| {
            vec![
                "bash".into(),
                "-c".into(),
                OsString::from_vec(code.to_vec()),
            ]
        });
        let spec = JobSpec {
            argv: driver_argv(&dir, code, "", self.scratch_file(id).as_deref()),
            shown: Some(shown),
            cwd: Some(PathBuf::from(OsString::from_vec(first_cwd))),
            env: None,
            session: Some(id.to_owned()),
            ..job
        };
        let (job, queued) = engine.submit(spec)?;
        busy.insert(id.to_owned(), job);
        Ok((job, queued))
    }

    /// The session's state as its last finished command left it. Blocks (it may run a fresh
    /// shell once, to learn what a fresh shell's variables are).
    pub fn state(&self, engine: &Engine, id: &str) -> Result<SessionState, SessionError> {
        let dir = self.session_dir(id)?;
        let running = self.lock_busy().get(id).is_some_and(|&job| {
            engine
                .snapshot(job)
                .is_ok_and(|s| !matches!(s.phase, JobPhase::Finished(_)))
        });
        if !running {
            settle(&dir);
        }
        let summary = match std::fs::read(dir.join("summary")) {
            Ok(summary) => Some(summary),
            // Not asked for since the last command: made now, from the saved state.
            Err(_) if dir.join("state.sh").is_file() => {
                let _one_at_a_time = self.summarizing.lock().unwrap_or_else(|e| e.into_inner());
                let scratch = self.scratch_file(&format!("{id}.summary"));
                let summary = summarize(&dir, scratch.as_deref())?;
                if summary.ends_with(SUMMARY_END) {
                    let kept = dir.join("summary.kept");
                    let _ = std::fs::write(&kept, &summary)
                        .and_then(|()| std::fs::rename(&kept, dir.join("summary")));
                }
                Some(summary)
            }
            Err(_) => None,
        };
        let (cwd, status, declarations) = match summary {
            Some(summary) => parse_summary(&summary).ok_or_else(|| {
                SessionError::Invalid(format!("session {id}'s saved state is damaged"))
            })?,
            // No command has run yet: the state of a fresh shell in the origin.
            None => (
                std::fs::read(dir.join("origin")).unwrap_or_default(),
                0,
                self.baseline()?.clone(),
            ),
        };
        let baseline = self.baseline()?;
        let fresh: HashSet<&[u8]> = baseline.iter().map(Vec::as_slice).collect();
        let names: HashSet<&[u8]> = declarations.iter().map(|d| declared_name(d)).collect();
        Ok(SessionState {
            cwd,
            status,
            changed: declarations
                .iter()
                .filter(|d| !fresh.contains(d.as_slice()))
                .cloned()
                .collect(),
            unset: baseline
                .iter()
                .map(|d| declared_name(d))
                .filter(|name| !names.contains(name))
                .map(<[u8]>::to_vec)
                .collect(),
        })
    }

    /// The state dump of a fresh shell in the daemon's environment (computed once).
    fn baseline(&self) -> Result<&Vec<Vec<u8>>, SessionError> {
        if let Some(baseline) = self.baseline.get() {
            return Ok(baseline);
        }
        let dir = self
            .dir
            .join(format!(".baseline-{}", crate::files::random_hex()));
        let io = |context: &str| {
            let context = context.to_owned();
            move |source| SessionError::Io { context, source }
        };
        std::fs::create_dir(&dir).map_err(io("cannot make a scratch session"))?;
        let scratch = self.scratch_file(".baseline");
        let summary = summarize(&dir, scratch.as_deref());
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(scratch) = scratch {
            let _ = std::fs::remove_file(scratch);
        }
        let summary = summary?;
        let (_, _, declarations) = parse_summary(&summary).ok_or_else(|| {
            SessionError::Invalid("a fresh bash left a damaged state dump".into())
        })?;
        Ok(self.baseline.get_or_init(|| declarations))
    }

    fn session_dir(&self, id: &str) -> Result<PathBuf, SessionError> {
        let valid = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return Err(SessionError::NotFound(id.to_owned()));
        }
        let dir = self.dir.join(id);
        if dir.join("origin").is_file() {
            Ok(dir)
        } else {
            Err(SessionError::NotFound(id.to_owned()))
        }
    }

    fn lock_busy(&self) -> std::sync::MutexGuard<'_, HashMap<String, JobId>> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `bash --noprofile --norc -c DRIVER ferry-session DIR CODE MODE SCRATCH` (no SCRATCH: the
/// driver uses a file in DIR).
fn driver_argv(dir: &Path, code: &[u8], mode: &str, scratch: Option<&Path>) -> Vec<OsString> {
    vec![
        "bash".into(),
        "--noprofile".into(),
        "--norc".into(),
        "-c".into(),
        DRIVER.into(),
        "ferry-session".into(),
        dir.as_os_str().to_owned(),
        OsString::from_vec(code.to_vec()),
        mode.into(),
        scratch
            .map(|s| s.as_os_str().to_owned())
            .unwrap_or_default(),
    ]
}

/// Runs the driver in its `summary` mode on `dir` and reads the `summary.new` it wrote (which
/// is removed).
fn summarize(dir: &Path, scratch: Option<&Path>) -> Result<Vec<u8>, SessionError> {
    let io = |context: &str| {
        let context = context.to_owned();
        move |source| SessionError::Io { context, source }
    };
    let argv = driver_argv(dir, b"", "summary", scratch);
    let ran = std::process::Command::new("bash")
        .args(argv.iter().skip(1))
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    ran.map_err(io("cannot run bash for sessions"))?;
    let summary = std::fs::read(dir.join("summary.new"));
    let _ = std::fs::remove_file(dir.join("summary.new"));
    summary.map_err(io("bash left no summary of the session's state"))
}

/// The private directory in memory for the drivers' scratch files of the sessions in
/// `sessions`: in `$XDG_RUNTIME_DIR`, else `/dev/shm`, named after this user and that
/// directory (a daemon started again on the same state takes the same one back, so none
/// piles up after a crash). `None` when there is no such place, or what is there is not a
/// directory of this user's that only this user may enter.
fn scratch_dir(sessions: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute() && dir.is_dir())
        .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|dir| dir.is_dir()))?;
    let mut checksum = ferry_common::checksum::FileChecksum::new();
    checksum.update(sessions.as_os_str().as_bytes());
    let named: String = checksum.digest()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let uid = rustix::process::getuid().as_raw();
    let dir = base.join(format!("ferry-sessions-{uid}-{named}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    let private = meta.is_dir() && meta.uid() == uid && meta.mode() & 0o077 == 0;
    private.then_some(dir)
}

/// Adopts the state the last command dumped, if the dump is complete (the summary of the
/// previous state goes with it); discards it otherwise.
fn settle(dir: &Path) {
    if let Ok(state) = std::fs::read(dir.join("state.new")) {
        if state.ends_with(STATE_END)
            && std::fs::rename(dir.join("state.new"), dir.join("state.sh")).is_ok()
        {
            let _ = std::fs::remove_file(dir.join("summary"));
            return;
        }
    }
    let _ = std::fs::remove_file(dir.join("state.new"));
}

/// Splits a summary (`cwd NUL status NUL declaration NUL ... ferry-end NUL`).
pub fn parse_summary(summary: &[u8]) -> Option<(Vec<u8>, i32, Vec<Vec<u8>>)> {
    let body = summary.strip_suffix(SUMMARY_END)?;
    let mut fields = body.split(|&b| b == 0);
    let cwd = fields.next()?.to_vec();
    let status = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    let declarations = fields
        .filter(|d| !d.is_empty())
        .map(|d| d.strip_suffix(b"\n").unwrap_or(d).to_vec())
        .collect();
    Some((cwd, status, declarations))
}

/// Writes a summary as the driver does (for tests and fuzzing: the driver writes them in bash).
pub fn encode_summary(cwd: &[u8], status: i32, declarations: &[Vec<u8>]) -> Vec<u8> {
    let mut summary = cwd.to_vec();
    summary.push(0);
    summary.extend_from_slice(status.to_string().as_bytes());
    summary.push(0);
    for declaration in declarations {
        summary.extend_from_slice(declaration);
        summary.extend_from_slice(b"\n\0");
    }
    summary.extend_from_slice(b"ferry-end\0");
    summary
}

/// The variable name in a `declare -FLAGS NAME[=VALUE]` line.
fn declared_name(declaration: &[u8]) -> &[u8] {
    let rest = declaration.strip_prefix(b"declare ").unwrap_or(declaration);
    let rest = match rest.iter().position(|&b| b == b' ') {
        Some(space) if rest.starts_with(b"-") => &rest[space + 1..],
        _ => rest,
    };
    let end = rest.iter().position(|&b| b == b'=').unwrap_or(rest.len());
    &rest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    #[test]
    fn summaries_split_into_their_fields() {
        let summary =
            b"/tmp\x003\x00declare -- x=\"42\"\n\x00declare -x E=\"a\nb\"\n\x00ferry-end\x00";
        let (cwd, status, declarations) = parse_summary(summary).expect("complete");
        assert_eq!(cwd, b"/tmp");
        assert_eq!(status, 3);
        assert_eq!(
            declarations,
            vec![
                b"declare -- x=\"42\"".to_vec(),
                b"declare -x E=\"a\nb\"".to_vec()
            ]
        );
        assert!(parse_summary(&summary[..summary.len() - 1]).is_none());
        assert!(parse_summary(b"/tmp\x00x\x00ferry-end\x00").is_none());
    }

    proptest::proptest! {
        #[test]
        fn summaries_roundtrip(
            cwd in proptest::collection::vec(1u8..=255, 0..32),
            status in proptest::prelude::any::<i32>(),
            declarations in proptest::collection::vec(
                proptest::collection::vec(1u8..=255, 1..24)
                    .prop_filter("no trailing newline", |d| !d.ends_with(b"\n")),
                0..6,
            ),
        ) {
            let summary = encode_summary(&cwd, status, &declarations);
            let parsed = parse_summary(&summary);
            proptest::prop_assert_eq!(parsed, Some((cwd, status, declarations)));
        }

        #[test]
        fn any_bytes_parse_or_are_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Some((cwd, status, declarations)) = parse_summary(&bytes) {
                let again = encode_summary(&cwd, status, &declarations);
                proptest::prop_assert_eq!(parse_summary(&again), Some((cwd, status, declarations)));
            }
        }
    }

    #[test]
    fn declared_names() {
        assert_eq!(declared_name(b"declare -- x=\"42\""), b"x");
        assert_eq!(declared_name(b"declare -ax arr=([0]=\"a\")"), b"arr");
        assert_eq!(declared_name(b"declare -x E"), b"E");
    }
}
