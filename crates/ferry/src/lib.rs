//! The `ferry` package's code, shared by its two programs: `ferry`, the client with every
//! subcommand ([`client_main`]), and `ferryd`, the daemon ([`daemon_main`]). They are two
//! binaries, as `ssh`/`sshd` and `pueue`/`pueued` are, so that the client, started once per
//! command, loads none of the daemon's code (and is linked for a fast start), while the daemon
//! keeps a position-independent executable. `ferry daemon` executes `ferryd`, found next to
//! `ferry`; a client that needs the daemon starts it the same way.

mod cli;
mod commands;
mod config;
mod endpoint;
mod follow;
mod landing;
mod launch;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use cli::{Cli, Command};

/// Exit status when ferry itself fails (as opposed to the job it ran).
pub(crate) const FERRY_FAILED: u8 = 125;

/// The `ferry` program: parses the command line and runs the subcommand (`ferry daemon`
/// becomes `ferryd`).
pub fn client_main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(error) = launch::exec_daemon_if_asked(&args) {
        eprintln!("ferry: {}", error_chain(&error));
        return ExitCode::from(FERRY_FAILED);
    }
    let cli = Cli::parse_args();
    // (`ferry daemon` never comes here: launch.rs hands it to ferryd, which refuses these.)
    if let Command::Tls(args) = &cli.command {
        if let Some(option) = args.no_daemon.given() {
            eprintln!("ferry: {option} is a client's option, to reach a daemon: it means nothing to `ferry tls`");
            return ExitCode::from(FERRY_FAILED);
        }
    }
    let socket = cli
        .globals
        .socket
        .clone()
        .unwrap_or_else(ferry_client::default_socket_path);
    let remote = endpoint::RemoteOptions::from_cli(&cli);
    let result = match endpoint::from_cli(&cli, &socket) {
        Err(e) => Err(e),
        Ok(target) => match cli.command {
            // Handed to ferryd before the command line reached clap (launch.rs).
            Command::Daemon(_) => Err(anyhow::anyhow!(
                "this `ferry daemon` command line could not be handed to ferryd: run ferryd with its options"
            )),
            Command::Tls(args) => commands::tls::run(args).map(|()| 0),
            Command::Run(args) => commands::run::run(&target, args),
            Command::Attach(args) => commands::attach::attach(&target, args),
            Command::Log(args) => commands::attach::log(&target, args),
            Command::Ps(args) => commands::ps::run(&target, args),
            Command::Kill(args) => commands::kill::run(&target, args),
            Command::Show(args) => commands::manage::show(&target, args),
            Command::Restart(args) => commands::manage::restart(&target, args),
            Command::Pause(args) => commands::manage::pause(&target, args, true),
            Command::Resume(args) => commands::manage::pause(&target, args, false),
            Command::Group(args) => commands::manage::group(&target, args),
            Command::Wait(args) => commands::wait::run(&target, args),
            Command::Shutdown => commands::shutdown::run(&target),
            Command::Web(args) => commands::web::run(&target, args),
            Command::Put(args) => commands::transfer::put(&target, args),
            Command::Get(args) => commands::transfer::get(&target, args),
            Command::Ls(args) => commands::files::ls(&target, args),
            Command::Rm(args) => commands::files::rm(&target, args),
            Command::Prune(args) => commands::prune::run(&target, args),
            Command::Session(args) => commands::session::run(&target, args),
            Command::Sh(args) => commands::session::sh(&target, args),
            Command::Fanos(args) => commands::fanos::run(cli.globals.socket.as_deref(), args),
            Command::Peers(args) => commands::peers::run(&target, args),
            Command::Chat(args) => commands::chat::run(&target, args),
            Command::Cost(args) => commands::cost::run(&target, args),
            Command::Status(args) => commands::status::run(&target, args),
            Command::C2(args) => commands::c2::run(args),
            Command::Rake(args) => commands::rake::run(&target, &remote, args),
            Command::Completions(args) => commands::completions::completions(args),
            Command::Man(args) => commands::completions::man(args),
        },
    };
    match result {
        // Job statuses are 0..=255 (128+N for signals); anything else is reported as failure.
        Ok(status) => ExitCode::from(u8::try_from(status).unwrap_or(FERRY_FAILED)),
        Err(e) => {
            eprintln!("ferry: {}", error_chain(&e));
            ExitCode::from(FERRY_FAILED)
        }
    }
}

/// The `ferryd` program: the daemon, in the foreground until SIGTERM, SIGINT or `ferry
/// shutdown` (`ferry daemon` runs it with the same options).
pub fn daemon_main() -> ExitCode {
    let cli = cli::DaemonCli::parse_args();
    let result = if let Some(dir) = &cli.man_dir {
        commands::completions::daemon_man_pages(dir)
    } else if let Some(option) = cli.args.not_the_daemons.given() {
        Err(anyhow::anyhow!(
            "{option} is a client's option, to reach a daemon: it means nothing to the daemon"
        ))
    } else {
        let socket = cli
            .socket
            .clone()
            .unwrap_or_else(ferry_client::default_socket_path);
        commands::daemon::run(&socket, *cli.args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferryd: {}", error_chain(&e));
            ExitCode::from(FERRY_FAILED)
        }
    }
}

/// An error and its causes on one line, each cause once (library errors often repeat their
/// source's text in their own).
pub(crate) fn error_chain(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

/// The daemon's state directory: `$XDG_STATE_HOME/ferry`, or `~/.local/state/ferry`.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("ferry");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/state/ferry");
    }
    let uid = rustix::process::getuid().as_raw();
    PathBuf::from(format!("/tmp/ferry-{uid}/state"))
}

/// The state directory in force: `$FERRY_STATE_DIR` or the default.
pub fn state_dir_from_env() -> PathBuf {
    std::env::var_os("FERRY_STATE_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(default_state_dir)
}

/// A runtime for a client subcommand.
pub fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The name clients give in their `Hello`.
pub const CLIENT_NAME: &str = concat!("ferry-cli/", env!("CARGO_PKG_VERSION"));
