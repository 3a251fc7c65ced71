//! Whom a Unix socket belongs to. The daemon binds its sockets only in a directory that is its
//! user's own and that no one else may write (anyone who can write there can replace the
//! socket); a client applies the same rule to the socket's directory before it connects, and
//! checks that the process at the other end runs as its own user (`SO_PEERCRED`) before it
//! sends anything: its environment, its working directory and its terminal's fds go to its own
//! daemon only.

use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Why a socket is not to be trusted.
#[derive(Debug, thiserror::Error)]
pub enum Untrusted {
    /// The directory belongs to another user.
    #[error("its directory {} belongs to uid {found}, not to you (uid {you})", dir.display())]
    DirOwner {
        /// The directory.
        dir: PathBuf,
        /// Its owner.
        found: u32,
        /// This process's uid.
        you: u32,
    },
    /// Others may write in the directory (and so replace the socket).
    #[error("its directory {} is writable by others (mode {mode:o}): anyone could put a socket there", dir.display())]
    DirWritable {
        /// The directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The process at the other end runs as another user.
    #[error("it is served by a process of uid {found} (pid {pid}), not by you (uid {you})")]
    PeerUid {
        /// The peer's uid.
        found: u32,
        /// The peer's pid.
        pid: i32,
        /// This process's uid.
        you: u32,
    },
    /// The directory or the socket could not be inspected or made.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The directory a socket path lies in (`.` for a bare name).
pub fn socket_dir(socket: &Path) -> &Path {
    socket
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Checks that `dir` is this user's own and not writable by group or others.
pub fn check_private_dir(dir: &Path) -> Result<(), Untrusted> {
    let meta = std::fs::metadata(dir).map_err(|source| Untrusted::Io {
        what: format!("inspect {}", dir.display()),
        source,
    })?;
    let you = rustix::process::getuid().as_raw();
    if meta.uid() != you {
        return Err(Untrusted::DirOwner {
            dir: dir.to_owned(),
            found: meta.uid(),
            you,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Untrusted::DirWritable {
            dir: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Creates `dir` (and its parents) with mode 0700 if it is missing, then checks it as
/// [`check_private_dir`] does.
pub fn ensure_private_dir(dir: &Path) -> Result<(), Untrusted> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| Untrusted::Io {
                what: format!("create {}", dir.display()),
                source,
            })?;
    }
    check_private_dir(dir)
}

/// Checks that the process at the other end of the connected Unix socket runs as this user.
pub fn check_peer_is_me(socket: impl AsFd) -> Result<(), Untrusted> {
    let cred = rustix::net::sockopt::socket_peercred(&socket).map_err(|e| Untrusted::Io {
        what: "read the socket's peer credentials".into(),
        source: e.into(),
    })?;
    let you = rustix::process::getuid().as_raw();
    if cred.uid.as_raw() != you {
        return Err(Untrusted::PeerUid {
            found: cred.uid.as_raw(),
            pid: cred.pid.as_raw_nonzero().get(),
            you,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_private_directory_passes_and_an_open_one_does_not() {
        let top = tempfile::tempdir().expect("tempdir");
        let made = top.path().join("a/b");
        ensure_private_dir(&made).expect("made private");
        let mode = std::fs::metadata(&made).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        for open in [0o770, 0o777, 0o1777, 0o702] {
            std::fs::set_permissions(&made, std::fs::Permissions::from_mode(open)).expect("chmod");
            let err = check_private_dir(&made).expect_err("open directory");
            assert!(err.to_string().contains("writable by others"), "{err}");
        }
        // Root-owned system directories are someone else's, unless we are root.
        if rustix::process::getuid().as_raw() != 0 {
            assert!(check_private_dir(Path::new("/")).is_err());
        }
    }

    #[test]
    fn the_peer_of_our_own_socket_is_us() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        check_peer_is_me(&a).expect("our own process");
    }
}
