//! Integration tests: the real `ferry` binary, a real daemon process per test on a temporary
//! socket, real Unix sockets. One test binary; each module covers one area.

mod access;
mod admission;
mod bad_input;
mod c2;
mod cbsd;
mod cli;
mod conformance;
mod console;
mod doc_examples;
mod escape;
mod fanos;
mod fds;
mod files;
mod helper;
mod history;
mod http_client;
mod hub;
mod hub_fairness;
mod jobs;
mod layering;
mod lifecycle;
mod limits;
mod peers;
mod queueing;
mod quota;
mod rake;
mod rake64;
mod reapi;
mod remote;
mod remote_tty;
mod returned;
mod run;
mod sessions;
mod sockets;
mod tsockm;
