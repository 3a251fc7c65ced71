//! Unix-socket listeners: a private directory, one daemon per socket, stale sockets replaced,
//! and the peer's uid checked on every connection.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ferry_io::private::{ensure_private_dir, socket_dir};
use rustix::fs::{flock, FlockOperation};
use tokio::net::UnixListener;

use crate::config::DaemonError;

/// A bound Unix socket. Dropping it removes the socket file; the lock is released when the
/// process exits (or the guard is dropped).
#[derive(Debug)]
pub struct UnixSocketGuard {
    path: PathBuf,
    _lock: File,
}

impl Drop for UnixSocketGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove socket {}: {e}", self.path.display());
            }
        }
    }
}

fn io_error(context: String) -> impl FnOnce(std::io::Error) -> DaemonError {
    move |source| DaemonError::Io { context, source }
}

/// Binds a listener at `path`.
///
/// Creates the parent directory with mode 0700 if it is missing, and refuses a directory that
/// another user owns or that others can write. Takes an exclusive lock on `PATH.lock`, so two
/// daemons never serve one socket; a socket file left by a dead daemon is replaced.
pub fn bind(path: &Path) -> Result<(UnixListener, UnixSocketGuard), DaemonError> {
    prepare_private_dir(socket_dir(path))?;
    let lock_path = lock_path(path);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_error(format!(
            "cannot open lock {}",
            lock_path.display()
        )))?;
    match flock(&lock, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            return Err(DaemonError::AlreadyRunning(path.to_owned()));
        }
        Err(e) => {
            return Err(DaemonError::Io {
                context: format!("cannot lock {}", lock_path.display()),
                source: e.into(),
            })
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            if !meta.file_type().is_socket() {
                return Err(DaemonError::Config(format!(
                    "{} exists and is not a socket; remove it or choose another path",
                    path.display()
                )));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                // Someone answers there without holding the lock: do not steal the path.
                return Err(DaemonError::AlreadyRunning(path.to_owned()));
            }
            tracing::info!("replacing stale socket {}", path.display());
            std::fs::remove_file(path).map_err(io_error(format!(
                "cannot remove stale socket {}",
                path.display()
            )))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(format!("cannot inspect {}", path.display()))(e)),
    }
    let listener = UnixListener::bind(path)
        .map_err(io_error(format!("cannot listen on {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_error(format!("cannot set mode of {}", path.display())))?;
    Ok((
        listener,
        UnixSocketGuard {
            path: path.to_owned(),
            _lock: lock,
        },
    ))
}

/// The lock file that guards a socket path.
pub fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Creates `dir` (mode 0700) if missing; refuses it unless it is this user's own and others
/// may not write to it (anyone who can could replace the socket). The same rule as the clients
/// apply before they connect (`ferry_io::private`).
fn prepare_private_dir(dir: &Path) -> Result<(), DaemonError> {
    ensure_private_dir(dir).map_err(|e| DaemonError::Config(format!("socket directory: {e}")))
}

/// The name of the user with `uid` (from `/etc/passwd`), or `uid N`. Names are kept once
/// found (every connection asks, nearly always for the same few users; the name is only
/// shown, in `ferry peers` and logs).
pub fn user_name(uid: u32) -> String {
    static KNOWN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<u32, String>>> =
        std::sync::OnceLock::new();
    let known = KNOWN.get_or_init(Default::default);
    if let Some(name) = known.lock().unwrap_or_else(|e| e.into_inner()).get(&uid) {
        return name.clone();
    }
    let name = read_user_name(uid);
    known
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(uid, name.clone());
    name
}

fn read_user_name(uid: u32) -> String {
    let found = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let listed: u32 = fields.nth(1)?.parse().ok()?;
                (listed == uid && !name.is_empty()).then(|| name.to_owned())
            })
        });
    found.unwrap_or_else(|| format!("uid {uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_a_name_and_strangers_a_number() {
        assert_eq!(user_name(0), "root");
        assert_eq!(user_name(4_000_000_000), "uid 4000000000");
    }
}
