//! The conformance matrix: every promise of the connection layer, run against every form the
//! listener table serves, on a real daemon over real sockets, with each dialect's peer
//! speaking as its own clients do. The forms come from the table itself
//! (`ferry_daemon::listeners::served_forms`): a form with no fixture here fails the test, so
//! a new dialect cannot skip it. At the end it prints a dialect x guarantee table (run with
//! `--nocapture` to see it when it passes).
//!
//! The guarantees: the kick (the connection closed within a second, the peer told in its own
//! words where its dialect has any, gone from `ferry peers`, its job going on); the going-down
//! notice; a peer sending a byte a second closed at the first-request limit while the owner is
//! served; a request split at every byte boundary (the daemon reading the first part before
//! the second is sent) is one request, and two in one write are two; a malformed request
//! answered in the dialect's words, others served; a job's working directory is its
//! principal's file area, never the daemon's; another principal's jobs neither listed nor
//! touched; an answer's output past the dialect's cap cut with a note.

mod guarantees;
mod links;
mod rows;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::helper::{wait_until, Daemon};

pub use links::Link;

/// The first-request time limit of the matrix's daemons.
const FIRST_REQUEST_LIMIT: &str = "1500ms";

/// A daemon serving every form of the table.
pub struct Matrix {
    /// The daemon.
    pub daemon: Daemon,
    /// Sockets, FIFOs and scripts.
    pub dir: tempfile::TempDir,
    /// The daemon's own working directory (no job may run there).
    pub cwd: PathBuf,
    /// TLS clients' configuration (the daemon's CA).
    pub tls: Arc<rustls::ClientConfig>,
    /// The token network clients show.
    pub token: String,
    /// Connections made before a guarantee's check, by form.
    waiting: std::sync::Mutex<std::collections::HashMap<&'static str, Link>>,
}

impl Matrix {
    /// A daemon listening on every form (any command allowed, so that anonymous peers run
    /// the test's commands; first requests within [`FIRST_REQUEST_LIMIT`]).
    pub fn start() -> Matrix {
        let dir = tempfile::tempdir().expect("tempdir");
        let cwd = dir.path().join("daemon-cwd");
        std::fs::create_dir(&cwd).expect("cwd");
        let path = |name: &str| dir.path().join(name).display().to_string();
        let listeners = [
            "ferry:tls:127.0.0.1:0".to_owned(),
            "ferry:tcp:127.0.0.1:0".to_owned(),
            format!("fanos:unix:{}", path("fanos.sock")),
            format!("cbsd:unix:{}", path("cbsd.sock")),
            format!("cbsdng:unix:{}", path("cbsdng.sock")),
            "rake64:tcp:127.0.0.1:0".to_owned(),
            "tsockm:tcp:127.0.0.1:0".to_owned(),
            format!("c2:fifo:{},{}", path("c2.in"), path("c2.out")),
            "c2:tcp:127.0.0.1:0".to_owned(),
            "http:tcp:127.0.0.1:0".to_owned(),
            "http:tls:127.0.0.1:0".to_owned(),
        ];
        let listeners: Vec<&str> = listeners.iter().map(String::as_str).collect();
        let daemon = Daemon::start_networked_in(
            &cwd,
            &[
                "--allow-any-command",
                "--handshake-timeout",
                FIRST_REQUEST_LIMIT,
            ],
            &listeners,
        );
        for form in ["fanos:unix", "cbsd:unix", "cbsdng:unix", "c2:fifo"] {
            assert!(
                daemon.log_shows(&format!("listening on {form}:")),
                "{}",
                daemon.log()
            );
        }
        let tls = ferry_client::tls::client_config(&daemon.tls_dir().join("ca.pem"), None)
            .expect("TLS client configuration");
        let token = std::fs::read_to_string(daemon.tls_dir().join("token"))
            .expect("token")
            .trim()
            .to_owned();
        // A script for jobs that must outlive their connection: it marks its end.
        std::fs::write(dir.path().join("job.sh"), "sleep 1\necho done > \"$1\"\n").expect("script");
        Matrix {
            daemon,
            dir,
            cwd,
            tls,
            token,
            waiting: Default::default(),
        }
    }

    /// Keeps `link` of `form` for its check.
    pub fn waiting(&self, form: &'static str, link: Link) {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(form, link);
    }

    /// The link of `form` kept for its check.
    pub fn waited(&self, form: &str) -> Option<Link> {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(form)
    }

    /// A path in the matrix's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The port of a TCP or TLS form (`rake64:tcp`).
    pub fn port(&self, form: &str) -> u16 {
        self.daemon.listener_port(form)
    }

    /// The daemon's file area (the owner's; other principals' are below it).
    pub fn files(&self) -> PathBuf {
        self.daemon.state_dir.join("files")
    }

    /// `ferry peers --json`, parsed.
    pub fn peers(&self) -> Vec<serde_json::Value> {
        let out = self.daemon.run(&["peers", "--json"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("json"))
            .collect()
    }

    /// The id of the peer of `dialect` connected from `address`, once it is listed.
    pub fn peer_id(&self, dialect: &str, address: &str) -> String {
        wait_until(
            &format!("a {dialect} peer from {address} in `ferry peers`"),
            Duration::from_secs(10),
            || {
                self.peers().into_iter().find_map(|peer| {
                    (peer["dialect"] == dialect && peer["address"] == address)
                        .then(|| peer["id"].as_str().map(str::to_owned))
                        .flatten()
                })
            },
            || format!("{:#?}", self.peers()),
        )
    }

    /// Whether the peer `id` is listed.
    pub fn listed(&self, id: &str) -> bool {
        self.peers().iter().any(|peer| peer["id"] == id)
    }

    /// A job of the owner's (`sleep 30`, started from its socket), for another principal to
    /// be refused: its id.
    pub fn owners_job(&self) -> Result<u64, String> {
        let out = self.daemon.run(&["run", "--detach", "--", "sleep", "30"]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| format!("cannot start the owner's job: {out:?}"))
    }

    /// The argv of a job that runs a second and then writes `marker` (which tells it ran to
    /// its end).
    pub fn job(&self, marker: &Path) -> Vec<String> {
        vec![
            "sh".into(),
            self.path("job.sh").display().to_string(),
            marker.display().to_string(),
        ]
    }
}

/// What a dialect says, as the matrix checks it on what its peer read.
pub enum Words {
    /// What was read begins with these bytes and holds this text.
    Says(&'static [u8], &'static str),
    /// Checked by this function.
    Check(fn(&[u8]) -> Result<(), String>),
    /// The dialect has no words for it (and why).
    Nothing(&'static str),
}

impl Words {
    /// Checks what was read; the words that were expected (for the table).
    fn check(&self, read: &[u8]) -> Result<String, String> {
        let shown = || {
            String::from_utf8_lossy(read)
                .chars()
                .take(200)
                .collect::<String>()
        };
        match self {
            Words::Says(start, text) => {
                if !read.starts_with(start) {
                    return Err(format!(
                        "expected words starting {:?}, read {:?}",
                        String::from_utf8_lossy(start),
                        shown()
                    ));
                }
                if !String::from_utf8_lossy(read).contains(text) {
                    return Err(format!("expected {text:?}, read {:?}", shown()));
                }
                Ok(format!("says {text:?}"))
            }
            Words::Check(check) => check(read).map(|()| "says it".into()),
            Words::Nothing(why) => {
                if read.is_empty() {
                    Ok(format!("no words ({why})"))
                } else {
                    Err(format!("expected nothing, read {:?}", shown()))
                }
            }
        }
    }
}

/// How a guarantee came out for one row.
enum Cell {
    Kept(String),
    NotApplicable(String),
    Broken(String),
}

/// What a guarantee prepares for every row at once, before it checks each.
type Prepare = fn(&Matrix, &[&dyn rows::Row]);

/// One promise of the connection layer, checked on one row at a time (after what it
/// prepares for every row at once, if anything).
struct Guarantee {
    name: &'static str,
    prepare: Option<Prepare>,
    check: fn(&Matrix, &dyn rows::Row) -> Result<Option<String>, String>,
}

/// The guarantees, in the table's column order.
const GUARANTEES: [Guarantee; 8] = [
    Guarantee {
        name: "kick",
        prepare: None,
        check: guarantees::kick,
    },
    Guarantee {
        name: "going down",
        prepare: Some(guarantees::connect_all_then_shut_down),
        check: guarantees::going_down,
    },
    Guarantee {
        name: "first-request limit",
        prepare: Some(guarantees::send_slowly),
        check: guarantees::first_request_limit,
    },
    Guarantee {
        name: "split and joined",
        prepare: None,
        check: guarantees::split_and_joined,
    },
    Guarantee {
        name: "malformed",
        prepare: None,
        check: guarantees::malformed,
    },
    Guarantee {
        name: "job's directory",
        prepare: None,
        check: guarantees::job_directory,
    },
    Guarantee {
        name: "other principal",
        prepare: None,
        check: guarantees::other_principal,
    },
    Guarantee {
        name: "output cap",
        prepare: None,
        check: guarantees::output_cap,
    },
];

#[test]
fn every_listener_row_keeps_every_promise() {
    let forms: Vec<String> = ferry_daemon::listeners::served_forms()
        .into_iter()
        .map(|(dialect, kind)| format!("{}:{}", dialect.name(), kind.name()))
        .collect();
    let fixtures = rows::all();
    let missing: Vec<&String> = forms
        .iter()
        .filter(|form| !fixtures.iter().any(|row| row.form() == form.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the listener table serves {missing:?}, which the conformance matrix has no fixture for: add one in conformance/rows.rs"
    );
    let rows: Vec<&dyn rows::Row> = forms
        .iter()
        .filter_map(|form| fixtures.iter().find(|row| row.form() == form.as_str()))
        .map(|row| row.as_ref())
        .collect();
    let mut table: Vec<Vec<Cell>> = rows.iter().map(|_| Vec::new()).collect();
    for guarantee in &GUARANTEES {
        // A daemon of its own for each guarantee (one of them stops it), shared by the rows.
        let matrix = Matrix::start();
        if let Some(prepare) = guarantee.prepare {
            prepare(&matrix, &rows);
        }
        for (row, cells) in rows.iter().zip(&mut table) {
            let checked = catch_unwind(AssertUnwindSafe(|| (guarantee.check)(&matrix, *row)));
            cells.push(match checked {
                Ok(Ok(Some(detail))) => Cell::Kept(detail),
                Ok(Ok(None)) => Cell::NotApplicable(row.not_applicable(guarantee.name)),
                Ok(Err(why)) => Cell::Broken(why),
                Err(panic) => Cell::Broken(
                    panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panicked".into()),
                ),
            });
        }
    }
    let printed = print(&rows, &table);
    println!("{printed}");
    let broken: Vec<String> = rows
        .iter()
        .zip(&table)
        .flat_map(|(row, cells)| {
            GUARANTEES
                .iter()
                .zip(cells)
                .filter_map(move |(g, cell)| match cell {
                    Cell::Broken(why) => Some(format!("{} / {}: {why}", row.form(), g.name)),
                    _ => None,
                })
        })
        .collect();
    assert!(
        broken.is_empty(),
        "{printed}\nbroken:\n{}",
        broken.join("\n")
    );
}

/// The dialect x guarantee table, then what each cell found.
fn print(rows: &[&dyn rows::Row], table: &[Vec<Cell>]) -> String {
    let mut out = format!("{:<14}", "");
    for g in &GUARANTEES {
        out.push_str(&format!("| {:<20}", g.name));
    }
    out.push('\n');
    for (row, cells) in rows.iter().zip(table) {
        out.push_str(&format!("{:<14}", row.form()));
        for cell in cells {
            let mark = match cell {
                Cell::Kept(_) => "ok",
                Cell::NotApplicable(_) => "n/a",
                Cell::Broken(_) => "BROKEN",
            };
            out.push_str(&format!("| {mark:<20}"));
        }
        out.push('\n');
    }
    out.push('\n');
    for (row, cells) in rows.iter().zip(table) {
        for (g, cell) in GUARANTEES.iter().zip(cells) {
            let (mark, detail) = match cell {
                Cell::Kept(d) => ("ok", d),
                Cell::NotApplicable(d) => ("n/a", d),
                Cell::Broken(d) => ("BROKEN", d),
            };
            out.push_str(&format!("{} / {}: {mark}: {detail}\n", row.form(), g.name));
        }
    }
    out
}
