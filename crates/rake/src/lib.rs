//! `ferry rake`: a Rakefile (seed 001, the distributed rake of UWA's CITS3002) read by a
//! hand-written lexer and parser ([`rakefile`]) into a plan of action sets, whose actions the
//! client runs locally or places on the hosts that report the lowest cost.

pub mod rakefile;

pub use rakefile::{
    parse, parse_for_cluster, Action, ActionSet, Host, Rakefile, RakefileError, DEFAULT_PORT,
};
