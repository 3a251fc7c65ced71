//! The dialect adapters: each maps its wire format's frames onto engine calls and engine
//! events onto its frames, over a connection the connection layer admitted. An adapter never
//! calls another adapter.

pub(crate) mod fanos;
pub(crate) mod native;
pub(crate) mod rake64;
pub(crate) mod tsockm;
