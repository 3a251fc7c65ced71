//! A client of the Bazel Remote Execution API v2 (REAPI), as `ferry rake --reapi` uses it: it
//! does what the clients in the field do (recc, remote-apis-sdks, Pants, Buck2): asks the
//! server's capabilities, uploads only the blobs the CAS lacks (in batches, or by ByteStream
//! above the batch limit), asks the action cache before executing, follows Execute's
//! operation stream and resumes it with WaitExecution when it drops, reads outputs in batches
//! or by ByteStream, and cancels operations.
//!
//! The protocol's types and stubs come from the `bazel-remote-apis` crate (generated code
//! shipped with it, so building ferry runs no protobuf compiler).

mod cluster;
mod digest;
mod tree;

pub use bazel_remote_apis::build::bazel::remote::execution::v2 as proto;
pub use bazel_remote_apis::google::protobuf::Duration;
pub use cluster::{Cluster, ClusterError, Connection, Executed, Progress, Stage};
pub use digest::{digest_of_bytes, digest_of_file, digest_of_message, Blob, BlobSource};
pub use tree::{files_of_tree, InputRoot, TreeError, TreeFile};
