//! Digests (SHA-256 and size, as REAPI names content) of bytes, files and messages, and the
//! blobs an upload is made of.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::proto::Digest;

/// The digest of `data`.
pub fn digest_of_bytes(data: &[u8]) -> Digest {
    Digest {
        hash: hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref()),
        size_bytes: data.len() as i64,
    }
}

/// The digest of the file at `path`, read in pieces.
pub fn digest_of_file(path: &Path) -> std::io::Result<Digest> {
    let mut file = std::fs::File::open(path)?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        context.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Digest {
        hash: hex(context.finish().as_ref()),
        size_bytes: size as i64,
    })
}

/// A message's encoding and its digest.
pub fn digest_of_message(message: &impl prost::Message) -> (Digest, Vec<u8>) {
    let bytes = message.encode_to_vec();
    (digest_of_bytes(&bytes), bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A blob to upload: its digest and where its bytes are.
#[derive(Debug, Clone, PartialEq)]
pub struct Blob {
    /// Its digest.
    pub digest: Digest,
    /// Its bytes.
    pub source: BlobSource,
}

/// Where a blob's bytes are.
#[derive(Debug, Clone, PartialEq)]
pub enum BlobSource {
    /// In memory (an encoded message).
    Bytes(Vec<u8>),
    /// In a file, read when uploaded.
    File(PathBuf),
}

impl Blob {
    /// A blob of bytes in memory.
    pub fn bytes(data: Vec<u8>) -> Blob {
        Blob {
            digest: digest_of_bytes(&data),
            source: BlobSource::Bytes(data),
        }
    }

    /// A blob holding an encoded message.
    pub fn message(message: &impl prost::Message) -> Blob {
        Blob::bytes(message.encode_to_vec())
    }

    /// Its bytes (a file's are read now).
    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        match &self.source {
            BlobSource::Bytes(data) => Ok(data.clone()),
            BlobSource::File(path) => std::fs::read(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha256_in_hex_with_the_size() {
        let digest = digest_of_bytes(b"");
        assert_eq!(
            digest.hash,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(digest.size_bytes, 0);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let data = vec![7u8; 600_000];
        std::fs::write(&path, &data).expect("write");
        assert_eq!(
            digest_of_file(&path).expect("digest"),
            digest_of_bytes(&data)
        );
    }
}
