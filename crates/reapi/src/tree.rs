//! Directory trees as REAPI holds them: an input root built from files (each directory a
//! `Directory` message naming its files and subdirectories by digest, sorted by name), and the
//! files of an output `Tree`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path};

use crate::digest::{digest_of_file, Blob, BlobSource};
use crate::proto::{Digest, Directory, DirectoryNode, FileNode, Tree};

/// Why a tree could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A name that is not a plain relative path.
    #[error("{0:?} is not a relative path inside the directory")]
    BadName(String),
    /// A name used both as a file and as a directory.
    #[error("{0:?} is both a file and a directory")]
    Clash(String),
    /// A file that cannot be read.
    #[error("cannot read {name}: {source}")]
    Read {
        /// Its name.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// A Tree that names a directory it does not hold.
    #[error("the output tree lacks the directory {0}")]
    MissingChild(String),
}

/// An input root: its digest, every blob it is made of, and each file's digest by name.
#[derive(Debug, Clone)]
pub struct InputRoot {
    /// The root directory's digest (an Action's `input_root_digest`).
    pub digest: Digest,
    /// The Directory messages and the files.
    pub blobs: Vec<Blob>,
    /// Each file (relative to the working directory) with its digest.
    pub files: HashMap<String, Digest>,
}

enum Node {
    File { digest: Digest, executable: bool },
    Dir(BTreeMap<String, Node>),
}

impl InputRoot {
    /// The root holding `names` (files relative to `dir`) inside the subdirectory `subdir` (the
    /// action's working directory; empty: at the root).
    pub fn build(dir: &Path, names: &[String], subdir: &str) -> Result<InputRoot, TreeError> {
        let mut top = BTreeMap::new();
        let mut blobs = Vec::new();
        let mut files = HashMap::new();
        for name in names {
            let parts = components(name)?;
            let path = dir.join(name);
            let read = |source| TreeError::Read {
                name: name.clone(),
                source,
            };
            let digest = digest_of_file(&path).map_err(read)?;
            let executable = is_executable(&path).map_err(read)?;
            insert(&mut top, &parts, name, digest.clone(), executable)?;
            if files.insert(name.clone(), digest.clone()).is_none() {
                blobs.push(Blob {
                    digest,
                    source: BlobSource::File(path),
                });
            }
        }
        let mut digest = encode(Node::Dir(top), &mut blobs);
        if !subdir.is_empty() {
            let root = Directory {
                directories: vec![DirectoryNode {
                    name: subdir.to_owned(),
                    digest: Some(digest),
                }],
                ..Directory::default()
            };
            let blob = Blob::message(&root);
            digest = blob.digest.clone();
            blobs.push(blob);
        }
        Ok(InputRoot {
            digest,
            blobs,
            files,
        })
    }
}

fn is_executable(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o100 != 0)
}

/// A name's components: plain names only.
fn components(name: &str) -> Result<Vec<String>, TreeError> {
    let bad = || TreeError::BadName(name.to_owned());
    let mut parts = Vec::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().ok_or_else(bad)?.to_owned()),
            Component::CurDir => {}
            _ => return Err(bad()),
        }
    }
    if parts.is_empty() {
        return Err(bad());
    }
    Ok(parts)
}

fn insert(
    dir: &mut BTreeMap<String, Node>,
    parts: &[String],
    name: &str,
    digest: Digest,
    executable: bool,
) -> Result<(), TreeError> {
    let clash = || TreeError::Clash(name.to_owned());
    match parts {
        [] => Err(clash()),
        [last] => match dir.get(last) {
            Some(Node::Dir(_)) => Err(clash()),
            _ => {
                dir.insert(last.clone(), Node::File { digest, executable });
                Ok(())
            }
        },
        [first, rest @ ..] => {
            let entry = dir
                .entry(first.clone())
                .or_insert_with(|| Node::Dir(BTreeMap::new()));
            match entry {
                Node::Dir(inner) => insert(inner, rest, name, digest, executable),
                Node::File { .. } => Err(clash()),
            }
        }
    }
}

/// Encodes a directory (its subdirectories first), adding each Directory message to `blobs`;
/// its digest.
fn encode(node: Node, blobs: &mut Vec<Blob>) -> Digest {
    let Node::Dir(entries) = node else {
        unreachable!("only directories are encoded")
    };
    let mut directory = Directory::default();
    // BTreeMap order is byte order of the names, as REAPI asks.
    for (name, entry) in entries {
        match entry {
            Node::File { digest, executable } => directory.files.push(FileNode {
                name,
                digest: Some(digest),
                is_executable: executable,
                node_properties: None,
            }),
            Node::Dir(_) => {
                let digest = encode(entry, blobs);
                directory.directories.push(DirectoryNode {
                    name,
                    digest: Some(digest),
                });
            }
        }
    }
    let blob = Blob::message(&directory);
    let digest = blob.digest.clone();
    if !blobs.iter().any(|b| b.digest == digest) {
        blobs.push(blob);
    }
    digest
}

/// A file of an output tree.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeFile {
    /// Its path relative to the tree's root.
    pub path: String,
    /// Its digest.
    pub digest: Digest,
    /// Whether it is executable.
    pub executable: bool,
}

/// The files of an output `Tree` (symbolic links are left out), each with its path.
pub fn files_of_tree(tree: &Tree) -> Result<Vec<TreeFile>, TreeError> {
    let children: HashMap<String, &Directory> = tree
        .children
        .iter()
        .map(|child| (crate::digest_of_message(child).0.hash, child))
        .collect();
    let mut out = Vec::new();
    let empty = Directory::default();
    let mut pending = vec![(String::new(), tree.root.as_ref().unwrap_or(&empty))];
    while let Some((prefix, directory)) = pending.pop() {
        for file in &directory.files {
            let path = format!("{prefix}{}", file.name);
            components(&path)?;
            out.push(TreeFile {
                path,
                digest: file.digest.clone().unwrap_or_default(),
                executable: file.is_executable,
            });
        }
        for node in &directory.directories {
            let path = format!("{prefix}{}/", node.name);
            components(&path)?;
            let hash = node
                .digest
                .as_ref()
                .map(|d| d.hash.clone())
                .unwrap_or_default();
            let child = children
                .get(&hash)
                .ok_or_else(|| TreeError::MissingChild(path.clone()))?;
            pending.push((path, child));
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest_of_bytes;

    #[test]
    fn an_input_root_nests_directories_sorted_by_name_inside_the_working_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("src")).expect("mkdir");
        std::fs::write(dir.path().join("src/b.c"), "b").expect("write");
        std::fs::write(dir.path().join("a.h"), "a").expect("write");
        let names = ["src/b.c".to_owned(), "a.h".to_owned(), "a.h".to_owned()];
        let root = InputRoot::build(dir.path(), &names, "w").expect("root");
        // Two files, three directories (src, the working directory, the root).
        assert_eq!(root.blobs.len(), 5);
        assert_eq!(root.files["a.h"], digest_of_bytes(b"a"));
        let message = |digest: &Digest| -> Directory {
            let blob = root
                .blobs
                .iter()
                .find(|b| &b.digest == digest)
                .expect("blob");
            prost::Message::decode(blob.read().expect("bytes").as_slice()).expect("decode")
        };
        let top = message(&root.digest);
        assert_eq!(top.directories[0].name, "w");
        let work = message(top.directories[0].digest.as_ref().expect("digest"));
        assert_eq!(work.files[0].name, "a.h");
        assert_eq!(work.directories[0].name, "src");
        assert!(matches!(
            InputRoot::build(dir.path(), &["../x".to_owned()], "w"),
            Err(TreeError::BadName(_))
        ));
    }

    #[test]
    fn an_output_tree_lists_its_files_with_their_paths() {
        let file = |name: &str, data: &[u8]| FileNode {
            name: name.into(),
            digest: Some(digest_of_bytes(data)),
            is_executable: false,
            node_properties: None,
        };
        let sub = Directory {
            files: vec![file("x.o", b"x")],
            ..Directory::default()
        };
        let root = Directory {
            files: vec![file("out", b"o")],
            directories: vec![DirectoryNode {
                name: "obj".into(),
                digest: Some(crate::digest_of_message(&sub).0),
            }],
            ..Directory::default()
        };
        let tree = Tree {
            root: Some(root.clone()),
            children: vec![sub],
        };
        let paths: Vec<String> = files_of_tree(&tree)
            .expect("files")
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(paths, ["obj/x.o", "out"]);
        let lacking = Tree {
            root: Some(root),
            children: vec![],
        };
        assert!(matches!(
            files_of_tree(&lacking),
            Err(TreeError::MissingChild(_))
        ));
        let hostile = Tree {
            root: Some(Directory {
                files: vec![file("..", b"x")],
                ..Directory::default()
            }),
            children: vec![],
        };
        assert!(matches!(
            files_of_tree(&hostile),
            Err(TreeError::BadName(_))
        ));
    }
}
