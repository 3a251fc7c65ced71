//! The file area: where clients put files and get them from, with names from the wire that
//! can never reach outside it.
//!
//! A name is checked twice. Lexically ([`check_name`], the rules both sides of the wire share):
//! not empty, relative, no NUL, no `.` or `..` component. Then by the kernel: every lookup goes
//! through `openat2` with `RESOLVE_BENEATH` from the area's directory, so a symbolic link that
//! leads outside is refused (`EXDEV`) however it is built. Only regular files are read or
//! replaced; a device, FIFO or directory is refused before any byte moves.
//!
//! Uploads are written to a hidden temporary file in the target directory and renamed to
//! their name only after the size and the checksum (XXH3-128) match; a transfer that fails
//! or is abandoned leaves nothing under the final name (the temporary file is removed when
//! the upload is dropped). Temporary files are named `.ferry-part.INSTANCE.RANDOM`
//! ([`IN_FLIGHT`]): no listing shows them, no get or link reads them, no upload may take such
//! a name, and [`FileArea::sweep_in_flight`] removes those a daemon killed mid-upload left
//! (every instance but the running one's).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use ferry_common::checksum::FileChecksum;
pub use ferry_common::names::{check_name, BadName};

/// The directory, in the area, that holds sandboxes.
const SANDBOXES: &str = ".sandboxes";

/// How the name of an upload in progress starts: `.ferry-part.INSTANCE.RANDOM`.
pub const IN_FLIGHT: &str = ".ferry-part.";

/// This process's mark in its uploads' temporary names, so that a sweep of a killed daemon's
/// leftovers never touches an upload of the running one.
fn instance() -> &'static str {
    static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INSTANCE.get_or_init(random_hex)
}

/// Whether the last component of `name` is an upload in progress (never served).
fn in_flight(name: &Path) -> bool {
    name.file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(IN_FLIGHT.as_bytes()))
}

/// An upload in progress, refused as a file: it does not exist yet.
fn not_there(name: &Path) -> FileError {
    FileError::Refused {
        name: name.display().to_string(),
        problem: "no such file in the file area".into(),
    }
}

/// Why a file operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The name is not acceptable (see [`ferry_common::names`]).
    #[error(transparent)]
    BadName(#[from] BadName),
    /// The file is not one that may be transferred.
    #[error("{name}: {problem}")]
    Refused {
        /// The name.
        name: String,
        /// Why.
        problem: String,
    },
    /// The transfer did not match what was announced.
    #[error("{name}: {problem}")]
    Mismatch {
        /// The name.
        name: String,
        /// What did not match.
        problem: String,
    },
    /// An operating-system call failed.
    #[error("{name}: {source}")]
    Io {
        /// The name.
        name: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A regular file found by [`FileArea::list`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListedFile {
    /// Its path, relative to the listed directory.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, in nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
}

/// What [`FileArea::list`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The regular files.
    pub files: Vec<ListedFile>,
    /// The other entries (not directories) and what each is ("a symbolic link"...).
    pub others: Vec<(PathBuf, &'static str)>,
}

/// A directory that clients' names are resolved beneath.
#[derive(Debug)]
pub struct FileArea {
    root: OwnedFd,
    path: PathBuf,
}

fn io_error(name: &Path) -> impl Fn(Errno) -> FileError + '_ {
    move |errno| match errno {
        Errno::XDEV => FileError::Refused {
            name: name.display().to_string(),
            problem: "the path leads outside the file area (through a symbolic link)".into(),
        },
        Errno::LOOP => FileError::Refused {
            name: name.display().to_string(),
            problem: "too many symbolic links".into(),
        },
        other => FileError::Io {
            name: name.display().to_string(),
            source: other.into(),
        },
    }
}

const BENEATH: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

impl FileArea {
    /// Opens (creating with mode 0700 if needed) the area at `path`.
    pub fn open(path: &Path) -> std::io::Result<FileArea> {
        std::fs::create_dir_all(path)?;
        let root = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(FileArea {
            root,
            path: path.to_owned(),
        })
    }

    /// The area's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the directory that holds `name`, creating missing directories (mode 0700).
    fn parent_dir(&self, name: &Path) -> Result<OwnedFd, FileError> {
        let mut dir = rustix::io::dup(&self.root).map_err(io_error(name))?;
        let Some(parent) = name.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(dir);
        };
        for component in parent.components() {
            let part = component.as_os_str();
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            dir = match rustix::fs::openat2(&dir, part, flags, Mode::empty(), BENEATH) {
                Ok(next) => next,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io_error(name)(e)),
                    }
                    rustix::fs::openat2(&dir, part, flags, Mode::empty(), BENEATH)
                        .map_err(io_error(name))?
                }
                Err(Errno::NOTDIR) => {
                    return Err(FileError::Refused {
                        name: name.display().to_string(),
                        problem: format!("{} is not a directory", part.to_string_lossy()),
                    })
                }
                Err(e) => return Err(io_error(name)(e)),
            };
        }
        Ok(dir)
    }

    /// Starts an upload of `size` bytes to `name`, created with permission bits `mode`.
    pub fn upload(&self, name: &Path, size: u64, mode: u32) -> Result<Upload, FileError> {
        let dir = self.parent_dir(name)?;
        let final_name = name
            .file_name()
            .map(OsStr::to_owned)
            .ok_or_else(|| BadName {
                name: name.display().to_string(),
                problem: "has no file name",
            })?;
        if in_flight(name) {
            return Err(FileError::Refused {
                name: name.display().to_string(),
                problem: format!(
                    "names starting with {IN_FLIGHT} are kept for uploads in progress"
                ),
            });
        }
        // What is there now must be a regular file (or nothing): never replace a directory or
        // a device by accident.
        match rustix::fs::statat(&dir, final_name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => {
                let kind = rustix::fs::FileType::from_raw_mode(stat.st_mode);
                if kind != rustix::fs::FileType::RegularFile
                    && kind != rustix::fs::FileType::Symlink
                {
                    return Err(FileError::Refused {
                        name: name.display().to_string(),
                        problem: format!("exists and is not a regular file ({kind:?})"),
                    });
                }
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(io_error(name)(e)),
        }
        let temp = format!("{IN_FLIGHT}{}.{}", instance(), random_hex());
        let fd = rustix::fs::openat2(
            &dir,
            temp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
            BENEATH,
        )
        .map_err(io_error(name))?;
        Ok(Upload {
            dir,
            temp,
            final_name,
            display: name.display().to_string(),
            file: File::from(fd),
            size,
            written: 0,
            hasher: FileChecksum::new(),
            mode: mode & 0o777,
            done: false,
            writeback_from: 0,
        })
    }

    /// Removes, anywhere in the area, the temporary files of uploads that no running daemon
    /// will finish (those of other instances: a daemon killed mid-upload); how many.
    pub fn sweep_in_flight(&self) -> usize {
        let mine = format!("{IN_FLIGHT}{}.", instance());
        let mut removed = 0;
        self.walk(|dir, name, _| {
            let bytes = name.to_bytes();
            if bytes.starts_with(IN_FLIGHT.as_bytes())
                && !bytes.starts_with(mine.as_bytes())
                && rustix::fs::unlinkat(dir, name, AtFlags::empty()).is_ok()
            {
                removed += 1;
            }
        });
        removed
    }

    /// The bytes the area's regular files hold (each inode once; uploads in progress left
    /// out): what counts against a quota.
    pub fn usage(&self) -> u64 {
        let mut seen = std::collections::HashSet::new();
        let mut total = 0u64;
        self.walk(|_, name, stat| {
            if !name.to_bytes().starts_with(IN_FLIGHT.as_bytes())
                && seen.insert((stat.st_dev, stat.st_ino))
            {
                total = total.saturating_add(stat.st_size.max(0) as u64);
            }
        });
        total
    }

    /// Calls `visit` with every regular file beneath the area (its directory, its name, its
    /// status), directory by directory through opened descriptors, following no symbolic
    /// link.
    fn walk(&self, mut visit: impl FnMut(&OwnedFd, &std::ffi::CStr, &rustix::fs::Stat)) {
        let Ok(root) = rustix::io::dup(&self.root) else {
            return;
        };
        let mut pending = vec![root];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = rustix::fs::Dir::read_from(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if matches!(name.to_bytes(), b"." | b"..") {
                    continue;
                }
                let Ok(stat) = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
                    continue;
                };
                match rustix::fs::FileType::from_raw_mode(stat.st_mode) {
                    rustix::fs::FileType::Directory => {
                        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
                        let resolve = BENEATH.union(ResolveFlags::NO_SYMLINKS);
                        if let Ok(child) =
                            rustix::fs::openat2(&dir, name, flags, Mode::empty(), resolve)
                        {
                            pending.push(child);
                        }
                    }
                    rustix::fs::FileType::RegularFile => visit(&dir, name, &stat),
                    _ => {}
                }
            }
        }
    }

    /// Creates a fresh, empty sandbox directory (mode 0700) and returns its name relative to
    /// the area.
    pub fn create_sandbox(&self) -> Result<PathBuf, FileError> {
        let base = Path::new(SANDBOXES);
        match rustix::fs::mkdirat(&self.root, base, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(io_error(base)(e)),
        }
        let name = base.join(random_hex());
        let dir = self.parent_dir(&name.join("x"))?;
        drop(dir);
        Ok(name)
    }

    /// The absolute path of a directory beneath the area (checked: it must exist, be a
    /// directory, and be reached without leaving the area).
    pub fn directory(&self, name: &Path) -> Result<PathBuf, FileError> {
        self.open_directory(name, name)?;
        Ok(self.path.join(name))
    }

    /// Opens the existing directory `dir` beneath the area (errors name `name`).
    fn open_directory(&self, dir: &Path, name: &Path) -> Result<OwnedFd, FileError> {
        rustix::fs::openat2(
            &self.root,
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            BENEATH,
        )
        .map_err(|e| match e {
            Errno::NOENT | Errno::NOTDIR => FileError::Refused {
                name: name.display().to_string(),
                problem: "no such directory in the file area".into(),
            },
            other => io_error(name)(other),
        })
    }

    /// What lies under the directory `name` (recursively, not following symbolic links): its
    /// regular files, and the other entries that are not directories (symbolic links, FIFOs,
    /// sockets, devices: never transferred), sorted by path. At most `limit` entries.
    pub fn list(&self, name: &Path, limit: usize) -> Result<Listing, FileError> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let top = self.directory(name)?;
        let mut listing = Listing::default();
        let mut pending = vec![PathBuf::new()];
        while let Some(relative) = pending.pop() {
            let entries =
                std::fs::read_dir(top.join(&relative)).map_err(|source| FileError::Io {
                    name: name.join(&relative).display().to_string(),
                    source,
                })?;
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                let path = relative.join(entry.file_name());
                let kind = meta.file_type();
                if kind.is_dir() {
                    pending.push(path);
                    continue;
                }
                if listing.files.len() + listing.others.len() >= limit {
                    return Err(FileError::Refused {
                        name: name.display().to_string(),
                        problem: format!("holds more than {limit} files"),
                    });
                }
                if kind.is_file() && in_flight(&path) {
                    continue;
                }
                if kind.is_file() {
                    let mtime = (meta.mtime().max(0) as u64) * 1_000_000_000
                        + meta.mtime_nsec().max(0) as u64;
                    listing.files.push(ListedFile {
                        path,
                        size: meta.len(),
                        mtime_ns: mtime,
                    });
                } else {
                    let what = if kind.is_symlink() {
                        "a symbolic link"
                    } else if kind.is_fifo() {
                        "a FIFO"
                    } else if kind.is_socket() {
                        "a socket"
                    } else {
                        "a device"
                    };
                    listing.others.push((path, what));
                }
            }
        }
        listing.files.sort();
        listing.others.sort();
        Ok(listing)
    }

    /// Removes a sandbox made by [`FileArea::create_sandbox`] and everything in it.
    pub fn remove_sandbox(&self, name: &Path) -> Result<(), FileError> {
        if name.parent() != Some(Path::new(SANDBOXES)) {
            return Err(FileError::Refused {
                name: name.display().to_string(),
                problem: "is not a sandbox".into(),
            });
        }
        let path = self.directory(name)?;
        std::fs::remove_dir_all(&path).map_err(|source| FileError::Io {
            name: name.display().to_string(),
            source,
        })
    }

    /// Gives the regular file `from` a second name `to` (a hard link: no bytes are copied),
    /// both beneath the area; `to` must not exist yet.
    pub fn link(&self, from: &Path, to: &Path) -> Result<(), FileError> {
        if in_flight(from) {
            return Err(not_there(from));
        }
        if in_flight(to) {
            return Err(FileError::Refused {
                name: to.display().to_string(),
                problem: format!(
                    "names starting with {IN_FLIGHT} are kept for uploads in progress"
                ),
            });
        }
        let from_dir = self.existing_parent(from)?;
        let from_name = file_name(from)?;
        let stat = rustix::fs::statat(&from_dir, from_name, AtFlags::SYMLINK_NOFOLLOW).map_err(
            |e| match e {
                Errno::NOENT => FileError::Refused {
                    name: from.display().to_string(),
                    problem: "no such file in the file area".into(),
                },
                other => io_error(from)(other),
            },
        )?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(FileError::Refused {
                name: from.display().to_string(),
                problem: "is not a regular file".into(),
            });
        }
        let to_dir = self.parent_dir(to)?;
        let to_name = file_name(to)?;
        rustix::fs::linkat(&from_dir, from_name, &to_dir, to_name, AtFlags::empty())
            .map_err(io_error(to))
    }

    /// Removes `name`: a file (a symbolic link is removed, never followed) or, with
    /// `recursive`, a directory and everything under it, walked through opened directories.
    pub fn remove(&self, name: &Path, recursive: bool) -> Result<(), FileError> {
        if in_flight(name) {
            return Err(not_there(name));
        }
        let dir = self.existing_parent(name)?;
        let last = file_name(name)?;
        let stat =
            rustix::fs::statat(&dir, last, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| match e {
                Errno::NOENT => not_there(name),
                other => io_error(name)(other),
            })?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Directory {
            return rustix::fs::unlinkat(&dir, last, AtFlags::empty()).map_err(io_error(name));
        }
        if !recursive {
            return Err(FileError::Refused {
                name: name.display().to_string(),
                problem: "is a directory: remove it and all it holds with --recursive (-r)".into(),
            });
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let resolve = BENEATH.union(ResolveFlags::NO_SYMLINKS);
        let opened = rustix::fs::openat2(&dir, last, flags, Mode::empty(), resolve)
            .map_err(io_error(name))?;
        remove_contents(&opened).map_err(io_error(name))?;
        rustix::fs::unlinkat(&dir, last, AtFlags::REMOVEDIR).map_err(io_error(name))
    }

    /// Opens the existing directory holding `name` (none is made).
    fn existing_parent(&self, name: &Path) -> Result<OwnedFd, FileError> {
        match name.parent().filter(|p| !p.as_os_str().is_empty()) {
            None => rustix::io::dup(&self.root).map_err(io_error(name)),
            Some(parent) => self.open_directory(parent, name),
        }
    }

    /// Opens `name` for download: it must be a regular file beneath the area.
    pub fn download(&self, name: &Path) -> Result<Download, FileError> {
        if in_flight(name) {
            return Err(not_there(name));
        }
        // O_NONBLOCK: opening a FIFO must not wait for a writer before we can refuse it.
        let fd = rustix::fs::openat2(
            &self.root,
            name,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
            BENEATH,
        )
        .map_err(|e| match e {
            Errno::NOENT => FileError::Refused {
                name: name.display().to_string(),
                problem: "no such file in the file area".into(),
            },
            other => io_error(name)(other),
        })?;
        let stat = rustix::fs::fstat(&fd).map_err(io_error(name))?;
        let kind = rustix::fs::FileType::from_raw_mode(stat.st_mode);
        if kind != rustix::fs::FileType::RegularFile {
            return Err(FileError::Refused {
                name: name.display().to_string(),
                problem: format!("is not a regular file ({kind:?}); only regular files are sent"),
            });
        }
        Ok(Download {
            file: File::from(fd),
            size: stat.st_size as u64,
            mode: stat.st_mode & 0o777,
            display: name.display().to_string(),
            hasher: FileChecksum::new(),
        })
    }
}

/// A file being received. Dropping it before [`Upload::finish`] removes what was written.
pub struct Upload {
    dir: OwnedFd,
    temp: String,
    final_name: OsString,
    display: String,
    file: File,
    size: u64,
    written: u64,
    hasher: FileChecksum,
    mode: u32,
    done: bool,
    /// Where the bytes not yet handed to writeback start.
    writeback_from: u64,
}

/// Bytes written between two writeback starts.
const WRITEBACK_WINDOW: u64 = 8 * 1024 * 1024;

/// Asks the kernel to start writing `from..to` of `file` to disk now, without waiting, so that
/// the fsync at the end of an upload finds little left to do (the disk works while the network
/// does, and a large upload does not pile up dirty pages). Advisory: a failure changes nothing,
/// since `finish` syncs everything anyway.
fn start_writeback(file: &File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(to - from)) else {
        return;
    };
    // SAFETY: sync_file_range reads no memory of ours; the fd is open for the whole call
    // because `file` is borrowed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

impl Upload {
    /// Appends a chunk.
    pub fn write(&mut self, data: &[u8]) -> Result<(), FileError> {
        if self.written + data.len() as u64 > self.size {
            return Err(FileError::Mismatch {
                name: self.display.clone(),
                problem: format!("more than the {} bytes announced", self.size),
            });
        }
        self.file.write_all(data).map_err(|source| FileError::Io {
            name: self.display.clone(),
            source,
        })?;
        self.hasher.update(data);
        self.written += data.len() as u64;
        if self.written - self.writeback_from >= WRITEBACK_WINDOW {
            start_writeback(&self.file, self.writeback_from, self.written);
            self.writeback_from = self.written;
        }
        Ok(())
    }

    /// Checks size and checksum, then gives the file its mode and its name.
    pub fn finish(mut self, checksum: &[u8]) -> Result<(), FileError> {
        if self.written != self.size {
            return Err(FileError::Mismatch {
                name: self.display.clone(),
                problem: format!("{} bytes arrived, {} announced", self.written, self.size),
            });
        }
        if !self.hasher.matches(checksum) {
            return Err(FileError::Mismatch {
                name: self.display.clone(),
                problem:
                    "the checksum (XXH3-128) does not match: the file was corrupted on the way"
                        .into(),
            });
        }
        let io = |source: Errno| FileError::Io {
            name: self.display.clone(),
            source: source.into(),
        };
        rustix::fs::fchmod(&self.file, Mode::from_raw_mode(self.mode)).map_err(io)?;
        self.file.sync_all().map_err(|source| FileError::Io {
            name: self.display.clone(),
            source,
        })?;
        rustix::fs::renameat(
            &self.dir,
            self.temp.as_str(),
            &self.dir,
            self.final_name.as_os_str(),
        )
        .map_err(io)?;
        self.done = true;
        // The rename is durable once the directory is synced.
        rustix::fs::fsync(&self.dir).map_err(io)?;
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done {
            let _ = rustix::fs::unlinkat(&self.dir, self.temp.as_str(), AtFlags::empty());
        }
    }
}

/// A file being sent.
pub struct Download {
    file: File,
    /// Its size when opened.
    pub size: u64,
    /// Its permission bits.
    pub mode: u32,
    display: String,
    hasher: FileChecksum,
}

impl Download {
    /// The next chunk of at most `max` bytes; empty at the end.
    pub fn read_chunk(&mut self, max: usize) -> Result<Vec<u8>, FileError> {
        let mut buf = vec![0; max];
        let mut filled = 0;
        while filled < max {
            match self.file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(FileError::Io {
                        name: self.display.clone(),
                        source,
                    })
                }
            }
        }
        buf.truncate(filled);
        self.hasher.update(&buf);
        Ok(buf)
    }

    /// Checksum of everything read so far, as sent on the wire.
    pub fn checksum(&self) -> Vec<u8> {
        self.hasher.digest().to_vec()
    }
}

/// Removes everything in the opened directory `dir`, depth first, following no link.
fn remove_contents(dir: &OwnedFd) -> Result<(), Errno> {
    let entries: Vec<(std::ffi::CString, bool)> = rustix::fs::Dir::read_from(dir)?
        .flatten()
        .filter(|entry| !matches!(entry.file_name().to_bytes(), b"." | b".."))
        .map(|entry| {
            let is_dir = match entry.file_type() {
                rustix::fs::FileType::Unknown => {
                    rustix::fs::statat(dir, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW).is_ok_and(
                        |stat| {
                            rustix::fs::FileType::from_raw_mode(stat.st_mode)
                                == rustix::fs::FileType::Directory
                        },
                    )
                }
                kind => kind == rustix::fs::FileType::Directory,
            };
            (entry.file_name().to_owned(), is_dir)
        })
        .collect();
    for (name, is_dir) in entries {
        if is_dir {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let child = rustix::fs::openat(dir, &name, flags, Mode::empty())?;
            remove_contents(&child)?;
            rustix::fs::unlinkat(dir, &name, AtFlags::REMOVEDIR)?;
        } else {
            rustix::fs::unlinkat(dir, &name, AtFlags::empty())?;
        }
    }
    Ok(())
}

/// The last component of `name`.
fn file_name(name: &Path) -> Result<&OsStr, FileError> {
    name.file_name().ok_or_else(|| FileError::Refused {
        name: name.display().to_string(),
        problem: "has no file name".into(),
    })
}

/// 16 random hex digits (for temporary names).
pub(crate) fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    // Without randomness the name still is unique enough with the pid and time.
    if rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        bytes[..4].copy_from_slice(&std::process::id().to_le_bytes());
        bytes[4..].copy_from_slice(&nanos.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> Vec<u8> {
        ferry_common::checksum::checksum(data).to_vec()
    }

    #[test]
    fn an_upload_appears_only_when_whole_and_correct() {
        let dir = tempfile::tempdir().expect("tempdir");
        let area = FileArea::open(dir.path()).expect("area");
        let name = check_name(b"sub/file.bin").expect("name");
        let mut upload = area.upload(name, 6, 0o640).expect("upload");
        upload.write(b"abc").expect("write");
        assert!(!dir.path().join("sub/file.bin").exists());
        upload.write(b"def").expect("write");
        upload.finish(&sha(b"abcdef")).expect("finish");
        assert_eq!(
            std::fs::read(dir.path().join("sub/file.bin")).expect("read"),
            b"abcdef"
        );
        // A wrong checksum leaves the old file and no temporary behind.
        let mut upload = area.upload(name, 3, 0o640).expect("upload");
        upload.write(b"xyz").expect("write");
        assert!(upload.finish(&sha(b"nope")).is_err());
        assert_eq!(
            std::fs::read(dir.path().join("sub/file.bin")).expect("read"),
            b"abcdef"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("file.bin")]);
    }

    #[test]
    fn uploads_in_flight_are_never_served_and_only_a_dead_instances_are_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let area = FileArea::open(dir.path()).expect("area");
        let name = check_name(b"sub/file.bin").expect("name");
        let mut upload = area.upload(name, 6, 0o640).expect("upload");
        upload.write(b"abc").expect("write");
        let stale = dir
            .path()
            .join("sub/deep/.ferry-part.0123456789abcdef.fedcba9876543210");
        std::fs::create_dir_all(stale.parent().expect("parent")).expect("dir");
        std::fs::write(&stale, b"half").expect("stale");
        let listing = area.list(Path::new("sub"), 100).expect("list");
        assert!(listing.files.is_empty(), "{listing:?}");
        let stale_name = Path::new("sub/deep/.ferry-part.0123456789abcdef.fedcba9876543210");
        assert!(area.download(stale_name).is_err());
        assert!(area.upload(stale_name, 1, 0o644).is_err());
        assert!(area.link(stale_name, Path::new("copy")).is_err());
        assert_eq!(area.sweep_in_flight(), 1);
        assert!(!stale.exists());
        // The running upload was left alone and finishes.
        upload.write(b"def").expect("write");
        upload.finish(&sha(b"abcdef")).expect("finish");
        assert_eq!(
            std::fs::read(dir.path().join("sub/file.bin")).expect("read"),
            b"abcdef"
        );
    }

    #[test]
    fn symlinks_leading_outside_and_special_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("outside");
        let area = FileArea::open(dir.path()).expect("area");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("escape")).expect("link");
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("passwd")).expect("link");
        let into = check_name(b"escape/x").expect("name");
        assert!(area.upload(into, 1, 0o644).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).expect("dir").count(), 0);
        assert!(area.download(check_name(b"passwd").expect("name")).is_err());
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("fifo"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .expect("fifo");
        let err = area
            .download(check_name(b"fifo").expect("name"))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
