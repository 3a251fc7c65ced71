//! The rules for file names that cross the wire (put, get, sandboxes, listings): what a daemon
//! accepts from a client, and what a client accepts from a daemon before it writes a file.
//!
//! A name is relative, not empty, holds no NUL, no `.` or `..` component and no component
//! longer than 255 bytes, does not end with `/`, and is at most 4096 bytes long. The daemon
//! then resolves it beneath its file area with the kernel's help (`openat2`), so that symbolic
//! links cannot lead outside either.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Longest name accepted, in bytes.
pub const MAX_NAME: usize = 4096;

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("file name {name:?}: {problem}")]
pub struct BadName {
    /// The name, as received (lossy).
    pub name: String,
    /// Why it is refused.
    pub problem: &'static str,
}

/// Checks a name from the wire and returns it as a relative path.
pub fn check_name(name: &[u8]) -> Result<&Path, BadName> {
    let refuse = |problem| BadName {
        name: String::from_utf8_lossy(name).into_owned(),
        problem,
    };
    if name.is_empty() {
        return Err(refuse("empty"));
    }
    if name.len() > MAX_NAME {
        return Err(refuse("too long"));
    }
    if name.contains(&0) {
        return Err(refuse("contains a NUL byte"));
    }
    if name.starts_with(b"/") {
        return Err(refuse(
            "absolute paths are refused; names are relative to the file area",
        ));
    }
    if name.ends_with(b"/") {
        return Err(refuse("names a directory"));
    }
    for part in name.split(|&b| b == b'/') {
        match part {
            b".." => return Err(refuse("'..' is refused")),
            b"." => return Err(refuse("'.' is refused")),
            _ if part.len() > 255 => return Err(refuse("a component is longer than 255 bytes")),
            _ => {}
        }
    }
    Ok(Path::new(OsStr::from_bytes(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        for name in [
            &b""[..],
            b"/etc/passwd",
            b"../x",
            b"a/../../x",
            b"a/./b",
            b"a\0b",
            b"dir/",
            &[b'a'; 256],
            &[b'a'; MAX_NAME + 1],
        ] {
            assert!(check_name(name).is_err(), "{name:?}");
        }
        assert_eq!(check_name(b"a/b/c.txt"), Ok(Path::new("a/b/c.txt")));
    }
}
