//! Sans-IO codecs for every wire format ferry speaks.
//!
//! This crate holds pure encode/decode functions over byte buffers: no sockets, no async runtime,
//! no clock. The daemon and the clients wrap these functions in their own I/O loops; property
//! tests and fuzz targets drive them directly.
//!
//! - [`native`]: the native `ferry` protocol (4-byte big-endian length + CBOR body).
//! - [`fanos`]: the FANOS dialect's netstrings, requests and replies (seed 003).

pub mod fanos;
pub mod native;

pub use native::{
    decode_frame, display_bytes, encode_frame, encode_output_head, ClientMessage, DaemonMessage,
    ErrorCode, FileEntry, JobExit, JobId, JobInfo, JobState, NoticeKind, Stream, WireError,
    DEFAULT_MAX_FRAME, FRAME_HEADER_LEN, HANDSHAKE_MAX_FRAME, MAX_OUTPUT_CHUNK, PROTOCOL_VERSION,
};
