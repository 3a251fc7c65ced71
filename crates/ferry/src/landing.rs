//! Where the files a server sends back land (`ferry get`, and every file of a `ferry rake`
//! action: a pool daemon's, a rake64 server's, a remote-execution cluster's): in a directory
//! opened once, written relative to it with no symbolic link followed at any step (`openat2`
//! with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` for every directory on the way), each to a
//! temporary name renamed into place, and only over a regular file or nothing. Never into
//! `.git/`, never over a protected file (the Rakefile): a server is not trusted with the
//! project. A name refused fails its action, with the name and the reason.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Every directory on the way is beneath the landing directory, and no link is followed.
const BENEATH: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS);

/// Why a returned file may not land.
#[derive(Debug)]
pub struct Refused {
    /// The name the server sent.
    pub name: String,
    /// Why it may not land there.
    pub problem: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.problem)
    }
}

impl std::error::Error for Refused {}

/// What to say of the files refused: every name with its reason.
pub fn refused_files(refused: &[Refused]) -> String {
    let each: Vec<String> = refused.iter().map(Refused::to_string).collect();
    format!(
        "{} file(s) sent back may not land here: {}",
        refused.len(),
        each.join("; ")
    )
}

/// A directory files land in, opened, and the files in it no server may write.
pub struct Landing {
    dir: OwnedFd,
    /// Names (relative to the directory) no server may write: the Rakefile.
    protected: Vec<PathBuf>,
    /// Temporary names made so far.
    made: AtomicU64,
}

/// A file being received, under a temporary name until [`Landed::commit`].
pub struct Landed {
    parent: OwnedFd,
    temp: OsString,
    name: OsString,
    shown: String,
    file: File,
    done: bool,
}

impl Landing {
    /// Opens `dir`, where files will land; `protected` names files in it no server may write.
    pub fn open(dir: &Path, protected: &[PathBuf]) -> std::io::Result<Landing> {
        let fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Landing {
            dir: fd,
            protected: protected.to_vec(),
            made: AtomicU64::new(0),
        })
    }

    /// Checks a name a server sent: relative, beneath, not `.git/` nor a protected file; the
    /// path it lands at, relative to the directory.
    pub fn check(&self, name: &[u8]) -> Result<PathBuf, Refused> {
        let shown = String::from_utf8_lossy(name).into_owned();
        let refused = |problem: &str| Refused {
            name: shown.clone(),
            problem: problem.into(),
        };
        let relative = ferry_common::names::check_name(name)
            .map_err(|e| refused(&e.to_string()))?
            .to_owned();
        if relative
            .components()
            .any(|c| c == Component::Normal(OsStr::new(".git")))
        {
            return Err(refused("a server never writes into .git/"));
        }
        if self.protected.contains(&relative) {
            return Err(refused("is the Rakefile: a server never writes it"));
        }
        Ok(relative)
    }

    /// Writes `data` as `name` (checked) with permission bits `mode`.
    pub fn write(&self, name: &[u8], data: &[u8], mode: u32) -> Result<(), Refused> {
        let mut landed = self.create(name)?;
        landed.write_all(data).map_err(|e| landed.failed(e))?;
        landed.commit(mode)
    }

    /// Starts receiving `name` (checked): write to it, then [`Landed::commit`].
    pub fn create(&self, name: &[u8]) -> Result<Landed, Refused> {
        let relative = self.check(name)?;
        let shown = relative.display().to_string();
        let refused = |problem: String| Refused {
            name: shown.clone(),
            problem,
        };
        let parent = self.parent_dir(&relative).map_err(refused)?;
        let file_name = relative
            .file_name()
            .map(OsStr::to_owned)
            .ok_or_else(|| refused("names no file".into()))?;
        // What is there now must be a regular file, or nothing: a server never writes through
        // a symbolic link, nor over a directory or a device.
        match rustix::fs::statat(&parent, file_name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
                FileType::RegularFile => {}
                FileType::Symlink => return Err(refused("is a symbolic link here".into())),
                other => return Err(refused(format!("exists and is not a file ({other:?})"))),
            },
            Err(Errno::NOENT) => {}
            Err(e) => return Err(refused(e.to_string())),
        }
        let mut temp = OsString::from(".");
        temp.push(&file_name);
        temp.push(format!(
            ".ferry-part-{}-{}",
            std::process::id(),
            self.made.fetch_add(1, Ordering::Relaxed)
        ));
        let fd = rustix::fs::openat2(
            &parent,
            temp.as_os_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
            BENEATH,
        )
        .map_err(|e| refused(e.to_string()))?;
        Ok(Landed {
            parent,
            temp,
            name: file_name,
            shown,
            file: File::from(fd),
            done: false,
        })
    }

    /// Opens the directory that holds `relative`, making the missing ones (0755), no link
    /// followed.
    fn parent_dir(&self, relative: &Path) -> Result<OwnedFd, String> {
        let mut dir = rustix::io::dup(&self.dir).map_err(|e| e.to_string())?;
        let Some(parent) = relative.parent() else {
            return Ok(dir);
        };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        for component in parent.components() {
            let part = component.as_os_str();
            let shown = part.to_string_lossy();
            dir = match rustix::fs::openat2(&dir, part, flags, Mode::empty(), BENEATH) {
                Ok(next) => next,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(format!("cannot make {shown}: {e}")),
                    }
                    rustix::fs::openat2(&dir, part, flags, Mode::empty(), BENEATH)
                        .map_err(|e| format!("{shown}: {e}"))?
                }
                Err(Errno::LOOP) | Err(Errno::XDEV) => {
                    return Err(format!("{shown} is a symbolic link here"))
                }
                Err(Errno::NOTDIR) => return Err(format!("{shown} is not a directory here")),
                Err(e) => return Err(format!("{shown}: {e}")),
            };
        }
        Ok(dir)
    }
}

impl Landed {
    /// A failure of this file, as a refusal.
    pub fn failed(&self, error: impl std::fmt::Display) -> Refused {
        Refused {
            name: self.shown.clone(),
            problem: error.to_string(),
        }
    }

    /// The file being written.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Gives the file its permission bits and its name.
    pub fn commit(mut self, mode: u32) -> Result<(), Refused> {
        rustix::fs::fchmod(&self.file, Mode::from_raw_mode(mode & 0o777))
            .map_err(|e| self.failed(e))?;
        rustix::fs::renameat(
            &self.parent,
            self.temp.as_os_str(),
            &self.parent,
            self.name.as_os_str(),
        )
        .map_err(|e| self.failed(e))?;
        self.done = true;
        Ok(())
    }
}

impl Write for Landed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Landed {
    fn drop(&mut self) {
        if !self.done {
            let _ = rustix::fs::unlinkat(&self.parent, self.temp.as_os_str(), AtFlags::empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_leave_or_harm_the_project_are_refused() {
        let project = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let root = project.path();
        std::fs::write(root.join("Rakefile"), "x").expect("rakefile");
        std::fs::write(outside.path().join("victim"), "safe").expect("victim");
        std::os::unix::fs::symlink(outside.path().join("victim"), root.join("finallink"))
            .expect("symlink");
        std::os::unix::fs::symlink(outside.path(), root.join("link")).expect("symlink");
        let landing = Landing::open(root, &[PathBuf::from("Rakefile")]).expect("open");
        for (name, problem) in [
            ("../x", "'..'"),
            ("/abs", "absolute"),
            ("finallink", "symbolic link"),
            ("link/x", "symbolic link"),
            (".git/hooks/pre-commit", ".git/"),
            ("sub/.git/config", ".git/"),
            ("Rakefile", "Rakefile"),
        ] {
            let refused = landing
                .write(name.as_bytes(), b"#!/bin/sh\n", 0o755)
                .expect_err(name);
            assert!(refused.to_string().contains(problem), "{name}: {refused}");
        }
        assert_eq!(
            std::fs::read_to_string(outside.path().join("victim")).expect("victim"),
            "safe"
        );
        assert!(!outside.path().join("x").exists());
        assert_eq!(
            std::fs::read_to_string(root.join("Rakefile")).expect("r"),
            "x"
        );
        // A plain name lands, its directories made; no temporary file is left.
        landing.write(b"out/a.o", b"object", 0o644).expect("lands");
        assert_eq!(std::fs::read(root.join("out/a.o")).expect("a.o"), b"object");
        let left: Vec<_> = std::fs::read_dir(root.join("out"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![OsString::from("a.o")]);
    }
}
