//! The command catalog: the names a catalog-only listener lets clients run, each mapped to a
//! program and fixed arguments. A client's `argv[0]` is looked up by name; the job runs the
//! program with the fixed arguments, then the client's remaining arguments.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// One catalog entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The program to run (an absolute path is best; a bare name is looked up in `PATH`).
    pub program: PathBuf,
    /// Arguments always passed first.
    pub args: Vec<OsString>,
}

/// The command catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    entries: BTreeMap<String, CatalogEntry>,
}

impl Catalog {
    /// Adds (or replaces) a named command.
    pub fn insert(&mut self, name: impl Into<String>, entry: CatalogEntry) {
        self.entries.insert(name.into(), entry);
    }

    /// Whether the catalog is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The names in the catalog.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The argv to run for a client asking for `name` with `client_args`, if `name` is listed.
    pub fn resolve(&self, name: &OsStr, client_args: &[OsString]) -> Option<Vec<OsString>> {
        let entry = self.entries.get(name.to_str()?)?;
        let mut argv = Vec::with_capacity(1 + entry.args.len() + client_args.len());
        argv.push(entry.program.clone().into_os_string());
        argv.extend(entry.args.iter().cloned());
        argv.extend(client_args.iter().cloned());
        Some(argv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_program_fixed_args_then_client_args() {
        let mut catalog = Catalog::default();
        catalog.insert(
            "greet",
            CatalogEntry {
                program: "/bin/echo".into(),
                args: vec!["hello".into()],
            },
        );
        assert_eq!(
            catalog.resolve(OsStr::new("greet"), &["world".into()]),
            Some(vec!["/bin/echo".into(), "hello".into(), "world".into()])
        );
        assert_eq!(catalog.resolve(OsStr::new("rm"), &[]), None);
        assert_eq!(catalog.resolve(OsStr::new("/bin/echo"), &[]), None);
    }
}
