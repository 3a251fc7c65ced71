//! Command-line arguments, as clap parses them (raw: values are checked where they are used).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The exit status of a command line ferry cannot parse (the status of any failure of ferry's
/// own).
pub const USAGE_FAILED: i32 = 125;

/// Run commands through a daemon that streams their output, keeps their logs, and reports
/// their exit status and run time.
///
/// The daemon starts by itself when a command needs it. Clients find it through --socket,
/// then $FERRY_SOCKET, then $XDG_RUNTIME_DIR/ferry/ferry.sock (or /tmp/ferry-$UID/ferry.sock).
#[derive(Debug, Parser)]
#[command(name = "ferry", version, propagate_version = true)]
pub struct Cli {
    /// Where the daemon is and how to reach it (options of every subcommand).
    #[command(flatten)]
    pub globals: Globals,

    #[command(subcommand)]
    pub command: Command,
}

/// The ferry daemon: runs commands for ferry's clients (and the clients of the protocols it
/// speaks), streams their output, keeps their logs and history.
///
/// `ferry daemon [OPTIONS]` runs this program with the same options; a client that needs a
/// daemon starts one by itself. It stays in the foreground until SIGTERM, SIGINT or `ferry
/// shutdown`.
#[derive(Debug, Parser)]
#[command(name = "ferryd", version)]
pub struct DaemonCli {
    /// The owner's Unix socket, where clients find the daemon.
    #[arg(long, env = "FERRY_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Write ferryd.1 and ferry-daemon.1 into DIR and exit (`ferry man --dir` asks for them:
    /// the daemon's table of listeners is in this program only).
    #[arg(long, hide = true, value_name = "DIR")]
    pub man_dir: Option<PathBuf>,

    #[command(flatten)]
    pub args: Box<DaemonArgs>,
}

impl DaemonCli {
    /// The command line, parsed; one that does not parse exits with [`USAGE_FAILED`].
    pub fn parse_args() -> DaemonCli {
        use clap::FromArgMatches;
        let parsed = DaemonCli::command_with_forms()
            .try_get_matches()
            .and_then(|matches| DaemonCli::from_arg_matches(&matches));
        match parsed {
            Ok(cli) => cli,
            Err(e) => {
                let code = if e.use_stderr() { USAGE_FAILED } else { 0 };
                let _ = e.print();
                std::process::exit(code);
            }
        }
    }

    /// The command's definition, with the forms of `--listen` from the listener table.
    pub fn command_with_forms() -> clap::Command {
        use clap::CommandFactory;
        DaemonCli::command().mut_arg("listen", |arg| {
            arg.long_help(ferry_daemon::listeners::help())
        })
    }
}

/// The options every subcommand takes: where the daemon is and how to reach it.
#[derive(Debug, Args)]
pub struct Globals {
    /// Unix socket of the daemon.
    #[arg(long, global = true, env = "FERRY_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Talk to a remote daemon at HOST:PORT over TLS instead of the local socket.
    #[arg(long, global = true, env = "FERRY_HOST", value_name = "HOST:PORT")]
    pub host: Option<String>,

    /// With --host: a directory made by `ferry tls init` (its ca.pem and token are used).
    #[arg(long, global = true, env = "FERRY_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,

    /// With --host: the CA certificate that signed the daemon's (overrides DIR/ca.pem).
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// With --host: a file holding the daemon's token (overrides DIR/token).
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// With --host: a client certificate to present (mutual TLS), with --key.
    #[arg(long, global = true, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,

    /// With --cert: the client certificate's private key.
    #[arg(long, global = true, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,

    /// With --host: plaintext TCP (daemons serve it on loopback addresses only).
    #[arg(long, global = true)]
    pub no_tls: bool,
}

impl Cli {
    /// The command line, parsed. `ferry run`, whose start-up time is measured against
    /// `sh -c true`, is parsed against a command tree holding only `run` (building clap's tree
    /// of every subcommand is most of a client's start-up); any other command line, and any
    /// that asks for help or the version or does not parse so, goes through the whole tree,
    /// which gives the same result and the usual messages.
    ///
    /// A command line ferry cannot parse exits with [`USAGE_FAILED`] (125, as `env`, `timeout`
    /// and `docker run` use for their own failures), so that a script can tell ferry's error
    /// from a job's status; help and the version exit 0.
    pub fn parse_args() -> Cli {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        if let Some(version) = Cli::version_only(&args) {
            // clap would build the tree of every subcommand to print one line.
            println!("{version}");
            std::process::exit(0);
        }
        if let Some(cli) = Cli::parse_run_only(&args) {
            return cli;
        }
        match <Cli as clap::Parser>::try_parse_from(args) {
            Ok(cli) => cli,
            Err(e) => {
                let code = if e.use_stderr() { USAGE_FAILED } else { 0 };
                let _ = e.print();
                std::process::exit(code);
            }
        }
    }

    /// What `ferry --version` (or `-V`) alone prints, as clap prints it.
    fn version_only(args: &[std::ffi::OsString]) -> Option<String> {
        match args {
            [_, flag] if flag == "--version" || flag == "-V" => {
                Some(format!("ferry {}", env!("CARGO_PKG_VERSION")))
            }
            _ => None,
        }
    }

    /// `args` parsed against the tree of `run` alone, when they ask for `run` (and neither
    /// help nor the version) and parse so.
    fn parse_run_only(args: &[std::ffi::OsString]) -> Option<Cli> {
        use clap::FromArgMatches;
        let mut asks_for_run = false;
        for arg in args.iter().skip(1).take_while(|a| *a != "--") {
            let arg = arg.to_str()?;
            if matches!(arg, "-h" | "--help" | "-V" | "--version" | "help") {
                return None;
            }
            asks_for_run |= arg == "run";
        }
        if !asks_for_run {
            return None;
        }
        let tree = Globals::augment_args(clap::Command::new("ferry"))
            .subcommand(RunArgs::augment_args(clap::Command::new("run")))
            .subcommand_required(true);
        let matches = tree.try_get_matches_from(args).ok()?;
        Cli::from_arg_matches(&matches).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;

    #[test]
    fn the_version_alone_is_what_clap_prints() {
        use clap::CommandFactory;
        let args: Vec<std::ffi::OsString> = vec!["ferry".into(), "--version".into()];
        let ours = Cli::version_only(&args).expect("the version alone");
        let clap = Cli::command().render_version();
        assert_eq!(format!("{ours}\n"), clap);
        let short: Vec<std::ffi::OsString> = vec!["ferry".into(), "-V".into()];
        assert_eq!(Cli::version_only(&short), Some(ours));
        let more: Vec<std::ffi::OsString> = vec!["ferry".into(), "run".into(), "--version".into()];
        assert_eq!(Cli::version_only(&more), None);
    }

    #[test]
    fn run_parsed_alone_is_run_parsed_with_every_subcommand() {
        for line in [
            "ferry run -- true",
            "ferry run true",
            "ferry --socket /tmp/s run --fds -- cat -n",
            "ferry run --socket /tmp/s -d -- sleep 1",
            "ferry --host h:1 --no-tls run -- echo --help",
            "ferry run ls -l --bogus",
        ] {
            let args: Vec<std::ffi::OsString> = line.split(' ').map(Into::into).collect();
            let quick = Cli::parse_run_only(&args).expect(line);
            let full: Cli = clap::Parser::try_parse_from(&args).expect(line);
            assert_eq!(format!("{quick:?}"), format!("{full:?}"), "{line}");
        }
        // Not run, help, a global option's value that reads "run", an unknown option before
        // the command: the whole tree (which refuses the last).
        for line in [
            "ferry ps",
            "ferry run --help",
            "ferry --socket run ps",
            "ferry run --detatch -- true",
        ] {
            let args: Vec<std::ffi::OsString> = line.split(' ').map(Into::into).collect();
            assert!(Cli::parse_run_only(&args).is_none(), "{line}");
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command through the daemon; exit with its status.
    ///
    /// Its stdout and stderr come back live on ferry's stdout and stderr; ferry's stdin is
    /// forwarded to it. Ctrl-C, SIGTERM, SIGHUP and SIGQUIT are forwarded to its process group.
    /// Exits with the command's exit code, 128+N if it was killed by signal N, 127 if it
    /// could not be started, 125 if ferry itself failed.
    Run(RunArgs),
    /// Follow a job: replay its output from the start, then live until it exits.
    ///
    /// Exits with the job's status, like `ferry run`.
    Attach(AttachArgs),
    /// Print a job's stored stdout and stderr (without waiting for it to end).
    Log(LogArgs),
    /// List jobs: id, state, exit, start time, run time, command.
    Ps(PsArgs),
    /// Send a signal to a job's whole process group (or cancel a queued job).
    Kill(KillArgs),
    /// Everything known of a job: command, directory, environment (names; values with
    /// --env), who submitted it, group, label, dependencies, times, status, log size.
    Show(crate::commands::manage::ShowArgs),
    /// Run an ended job again as it ran: its command, directory, environment, time limit,
    /// group and label (its output kept; no stdin). Prints the new job's id.
    Restart(crate::commands::manage::RestartArgs),
    /// Stop a running job (SIGSTOP to its process group; it keeps its slot), or with --group
    /// a whole group (its running jobs stopped, its queued jobs kept waiting).
    Pause(crate::commands::manage::PauseArgs),
    /// Continue a job or a group that `pause` stopped.
    Resume(crate::commands::manage::PauseArgs),
    /// Groups of jobs, each with its own limit of jobs running at once (under the daemon's
    /// --max-jobs): add, list, set, rm.
    Group(crate::commands::manage::GroupArgs),
    /// Wait until jobs end: the ones named, or every job queued or running now.
    ///
    /// Exits 0 when every one exited 0, 1 otherwise (as `pueue wait` does for its tasks).
    Wait(WaitArgs),
    /// Ask the daemon to shut down: running jobs are terminated (TERM, then KILL).
    Shutdown,
    /// Open the dashboard in a browser: the jobs live, their output, the peers, the hub.
    ///
    /// Asks the daemon for the dashboard's one-time URL (it opens an HTTP listener on a free
    /// loopback port if it has none) and opens it with xdg-open, or prints it. The URL holds
    /// the daemon's web token: the page turns it into a cookie that only this browser holds.
    /// The same listener serves the JSON API (/api/v1) and Prometheus metrics (/metrics).
    Web(WebArgs),
    /// Send a local file into the daemon's file area (size and checksum checked on arrival).
    ///
    /// REMOTE is relative to the file area (default: LOCAL's file name); directories are
    /// created as needed. The file appears under its name only once whole and verified.
    Put(PutArgs),
    /// Fetch a file from the daemon's file area (size and checksum checked on arrival).
    ///
    /// LOCAL defaults to REMOTE's file name in the current directory; an existing directory
    /// receives the file under REMOTE's file name. An existing file is replaced only with
    /// --force.
    Get(GetArgs),
    /// List the files in the daemon's file area (yours: over TLS, your part of it), or under
    /// DIR there: path, size, modification time; links and other entries are marked.
    Ls(LsArgs),
    /// Remove files from the daemon's file area (yours: over TLS, your part of it); a
    /// directory and all it holds with -r.
    Rm(RmArgs),
    /// Run the daemon in the foreground, logging to stderr.
    Daemon(Box<DaemonArgs>),
    /// Set up TLS: certificates and a token for remote daemons.
    Tls(TlsArgs),
    /// Remove ended jobs from the daemon's history: their records and logs.
    ///
    /// Running and queued jobs are never removed. Without options, nothing is removed (say
    /// --older-than, --keep, or both). The daemon also applies its retention limits by itself.
    Prune(PruneArgs),
    /// Stateful shell sessions: commands that share cwd, variables, functions, aliases,
    /// options and the last status, as in one long-lived shell.
    ///
    /// `ferry session new` prints an id; `ferry run --session ID -- CMD...` runs a command (or,
    /// as one word, a command line) in it; `ferry session state ID` shows it; `ferry sh` is an interactive loop over one.
    Session(SessionArgs),
    /// A small interactive shell over one session: each line runs through the daemon in the
    /// session's state, on this terminal (prompt: the session's cwd). Reads from a pipe too.
    ///
    /// Exits with the last command's status at end of input or `exit`.
    Sh(ShArgs),
    /// Send one request of Oils' FANOS protocol to a `fanos:unix:PATH` listener given by --socket,
    /// with ferry's stdin, stdout and stderr attached for EVAL and ARGV; prints the reply.
    ///
    /// Examples: `ferry fanos --socket PATH GETPID`, `ferry fanos --socket PATH 'EVAL ls'`,
    /// `ferry fanos --socket PATH ARGV ls -l` (ARGV's words are sent NUL-separated).
    /// Exits 0 on `OK`, the status on `STATUS n`, 1 on `ERROR`.
    Fanos(FanosArgs),
    /// List the daemon's peers: every connection, whatever its dialect (id, name, dialect,
    /// connected since, jobs started, outbox use, address). `ferry peers kick ID|all`
    /// disconnects peers (each is told in its own dialect; their jobs go on). For the daemon's
    /// owner.
    Peers(PeersArgs),
    /// Chat with the daemon's other peers (the hub): a line goes to everyone, `:msg PEER TEXT`
    /// to one, `:list` shows who is there, `:exit` leaves. From a pipe: sends the lines,
    /// prints what arrives, and leaves at the end of input (or stays, with --stay). A
    /// connection lost without a word is taken up again (for up to 15 s), with what was sent
    /// meanwhile.
    Chat(ChatArgs),
    /// Run a Rakefile: its action sets in order, the actions of a set together; local actions
    /// on the local daemon, `remote-` ones on the HOSTS daemon of lowest cost, with their
    /// `requires` files sent along and the files they make brought back.
    Rake(RakeArgs),
    /// Run a catalog command through a C2 listener (KubOS's command and control protocol):
    /// prints its output, exits with its status; an error response goes to stderr.
    C2(C2Args),
    /// How busy the daemon is and what one more job costs there (`ferry rake` places remote
    /// actions on the host of lowest cost): (running + queued jobs) * 1000 / job slots.
    Cost(CostArgs),
    /// Whether the daemon runs, its pid, where it listens, its state directory, where its log
    /// goes, and how busy it is. Never starts a daemon; exits 1 when none runs.
    ///
    /// Follow the log with `tail -f "$(ferry status --log)"`.
    Status(StatusArgs),
    /// Print shell completions: `ferry completions bash > ~/.local/share/bash-completion/completions/ferry`.
    Completions(CompletionsArgs),
    /// Print the man page ferry(1), or write it and one page per subcommand into --dir.
    Man(ManArgs),
}

/// `ferry peers`.
#[derive(Debug, Args)]
pub struct PeersArgs {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Option<PeersCommand>,
}

/// `ferry peers` subcommands.
#[derive(Debug, Subcommand)]
pub enum PeersCommand {
    /// Disconnect a peer (by its id), or every peer but this client (`all`); each is told in
    /// its own dialect, and its jobs go on.
    Kick {
        /// A peer id from `ferry peers`, or `all`.
        peer: String,
    },
    /// Send a message from the daemon (sender `server`) to one hub member (id or name) or to
    /// all (`all`).
    Msg {
        /// A member's id or name, or `all`.
        peer: String,
        /// The text.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
}

/// `ferry rake`.
#[derive(Debug, Args)]
pub struct RakeArgs {
    /// The Rakefile.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "Rakefile"
    )]
    pub file: PathBuf,

    /// Print the plan (sets, actions, their requirements, hosts) and run nothing.
    #[arg(short = 'n', long = "dry-run")]
    pub dry_run: bool,

    /// Write a summary of every action as TSV, with GNU parallel's joblog columns (Seq, Host,
    /// Starttime, JobRuntime, Send, Receive, Exitval, Signal, Command).
    #[arg(long, value_name = "FILE")]
    pub joblog: Option<PathBuf>,

    /// Write a summary of every action as JSON lines (set, command, host, first_host,
    /// reruns, exit_code, signal, error, started_ms, seconds, sent, received, cached) to
    /// FILE; `-` is stdout, after the actions' own output.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// How long a host has to answer the cost poll before it is skipped.
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    pub cost_timeout: humantime::Duration,

    /// What the HOSTS speak: ferry daemons (`ferry`), or rake64 servers (`rake64`: the
    /// CITS3002 distributed rake's protocol, plain TCP, such as `ferry daemon --listen
    /// rake64:tcp:...` or the rake authors' own server).
    #[arg(long, value_enum, default_value = "ferry")]
    pub wire: RakeWire,

    /// With --wire rake64: how long a server may take to answer (a rake64 server may never
    /// answer a command it cannot start).
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub reply_timeout: humantime::Duration,

    /// Send every remote action to a remote-execution cluster (Remote Execution API v2:
    /// BuildGrid, Buildbarn, NativeLink, BuildBuddy...) at grpc://HOST:PORT, or grpcs://
    /// for TLS, instead of the HOSTS (a Rakefile line `HOSTS = reapi://HOST:PORT[/INSTANCE]`
    /// does the same).
    #[arg(long, value_name = "URL")]
    pub reapi: Option<String>,

    /// With --reapi: the cluster's instance name.
    #[arg(long, value_name = "NAME", requires = "reapi")]
    pub instance: Option<String>,

    /// A platform property the cluster's workers must have (repeatable), e.g.
    /// OSFamily=linux.
    #[arg(long, value_name = "KEY=VALUE")]
    pub platform: Vec<String>,

    /// On a cluster: neither look results up in the action cache nor let them be cached
    /// (skip_cache_lookup and do_not_cache).
    #[arg(long)]
    pub no_cache: bool,

    /// On a cluster: each action's time limit.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub action_timeout: humantime::Duration,

    /// With grpcs://: the CA that signed the cluster's certificate (default: the system's
    /// roots).
    #[arg(long, value_name = "FILE")]
    pub reapi_ca: Option<PathBuf>,

    /// With grpcs://: a client certificate to present (PEM), with --reapi-key.
    #[arg(long, value_name = "FILE", requires = "reapi_key")]
    pub reapi_cert: Option<PathBuf>,

    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "reapi_cert")]
    pub reapi_key: Option<PathBuf>,

    /// A file holding a bearer token, sent to the cluster as `authorization: Bearer TOKEN`.
    #[arg(long, value_name = "FILE")]
    pub reapi_token_file: Option<PathBuf>,

    /// Run only these sets (by name, e.g. actionset2), in the Rakefile's order.
    #[arg(value_name = "ACTIONSET")]
    pub sets: Vec<String>,
}

/// `ferry c2`.
#[derive(Debug, Args)]
pub struct C2Args {
    /// The C2 listener over TCP (`ferry daemon --listen c2:tcp:HOST:PORT`).
    #[arg(
        long,
        value_name = "HOST:PORT",
        required_unless_present = "fifo",
        conflicts_with = "fifo"
    )]
    pub addr: Option<String>,

    /// The C2 listener's FIFO pair (`ferry daemon --listen c2:fifo:IN,OUT`): requests are
    /// written to IN, answers read from OUT (one client at a time).
    #[arg(long, value_name = "IN,OUT")]
    pub fifo: Option<String>,

    /// Also print the command's run time (EXEC_TIME) on stderr.
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// The command (a catalog name) and its arguments.
    #[arg(required = true, num_args = 1.., trailing_var_arg = true)]
    pub command: Vec<String>,
}

/// What `ferry rake`'s hosts speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RakeWire {
    /// The native protocol (ferry daemons).
    Ferry,
    /// The CITS3002 distributed rake's 64-byte-header protocol.
    Rake64,
}

/// Which protocol `ferry chat` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChatWire {
    /// The native protocol (the --socket, or --host over TLS).
    Ferry,
    /// TsockM's protocol, over TCP to --addr.
    Tsockm,
}

/// `ferry chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The name to be known by [default: your user name, or the certificate's or token's].
    #[arg(long)]
    pub name: Option<String>,

    /// The protocol to speak.
    #[arg(long, value_enum, default_value = "ferry")]
    pub wire: ChatWire,

    /// The TsockM server, for --wire tsockm.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:6969")]
    pub addr: String,

    /// From a pipe: keep printing what arrives after the input ends (until the daemon
    /// closes the connection, or SIGINT).
    #[arg(long)]
    pub stay: bool,
}

/// `ferry completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// `ferry man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write ferry.1 and ferry-SUBCOMMAND.1 here (e.g. ~/.local/share/man/man1) instead of
    /// printing ferry(1).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `ferry session`.
#[derive(Debug, Args)]
pub struct SessionArgs {
    #[command(subcommand)]
    pub command: SessionCommand,
}

/// `ferry session` subcommands.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Make a session (starting in the current directory) and print its id.
    New,
    /// Print a session's cwd, last exit status, and the variables that differ from a fresh
    /// shell's in the daemon's environment (as `declare` lines; `unset NAME` for removed ones).
    State {
        /// The session id.
        id: String,
    },
    /// End a session and forget its state.
    Close {
        /// The session id.
        id: String,
    },
}

/// `ferry sh`.
#[derive(Debug, Args)]
pub struct ShArgs {
    /// Use this session (default: a new one, closed at the end).
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
}

/// `ferry fanos`.
#[derive(Debug, Args)]
pub struct FanosArgs {
    /// The request: its words are joined by spaces (NUL-separated after `ARGV`).
    #[arg(required = true, trailing_var_arg = true, value_name = "REQUEST")]
    pub request: Vec<std::ffi::OsString>,
}

/// `ferry tls`.
#[derive(Debug, Args)]
pub struct TlsArgs {
    #[command(flatten)]
    pub no_daemon: NoDaemonReached,

    #[command(subcommand)]
    pub command: TlsCommand,
}

/// `ferry tls` subcommands.
#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Create DIR/ca.pem, DIR/server.pem, DIR/server-key.pem and DIR/token (and the CA's key,
    /// DIR/ca-key.pem), then print the daemon and client command lines that use them.
    ///
    /// The server certificate is valid for localhost, 127.0.0.1, ::1, this machine's host
    /// name, and every --name. Keys and the token are mode 0600; DIR is mode 0700.
    Init(TlsInitArgs),
    /// Issue a client certificate signed by DIR's CA: DIR/clients/NAME.pem and NAME-key.pem.
    ///
    /// A daemon started with `--client-ca DIR/ca.pem` accepts it instead of a token:
    /// `ferry --host H:P --ca DIR/ca.pem --cert DIR/clients/NAME.pem --key DIR/clients/NAME-key.pem ...`
    Client(TlsClientArgs),
}

/// `ferry tls client`.
#[derive(Debug, Args)]
pub struct TlsClientArgs {
    /// The directory made by `ferry tls init` (its ca.pem and ca-key.pem sign the certificate).
    pub dir: PathBuf,

    /// The client's name (its certificate's common name and file name).
    pub name: String,
}

/// `ferry tls init`.
#[derive(Debug, Args)]
pub struct TlsInitArgs {
    /// Another name or address the daemon is reached by (repeatable).
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,

    /// Replace files that already exist in DIR.
    #[arg(long)]
    pub force: bool,

    /// The directory to create the files in.
    pub dir: PathBuf,
}

/// `ferry run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Start the job and print its id instead of following it (stdin is /dev/null).
    #[arg(short, long)]
    pub detach: bool,

    /// Terminate the job (TERM, then KILL after the daemon's grace period) after this long,
    /// e.g. 30s, 5m, 1h30m.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<humantime::Duration>,

    /// Give the job /dev/null as stdin instead of forwarding ferry's stdin.
    #[arg(long)]
    pub no_stdin: bool,

    /// Keep the job running if this client goes away (by default it gets SIGHUP).
    #[arg(long)]
    pub no_hangup: bool,

    /// Run in a fresh sandbox directory holding these files (repeatable; sent first).
    #[arg(long = "put", value_name = "FILE", num_args = 1..)]
    pub put: Vec<PathBuf>,

    /// After the job, fetch the sandbox files matching these patterns (`*.o`, `out/*`) into
    /// the current directory (repeatable; implies a sandbox).
    #[arg(long = "get", value_name = "PATTERN", num_args = 1..)]
    pub get: Vec<String>,

    /// After the job, fetch every sandbox file it created or changed (implies a sandbox).
    #[arg(long)]
    pub get_new: bool,

    /// Keep the sandbox after the job (its path in the file area is printed on stderr).
    #[arg(long)]
    pub keep: bool,

    /// Hand ferry's own stdin, stdout and stderr to the job (SCM_RIGHTS): it runs directly on
    /// this terminal or these pipes, and its output costs no copy through the daemon. The
    /// default when stdout is a terminal and the daemon is on its Unix socket.
    #[arg(long, conflicts_with_all = ["no_fds", "detach"])]
    pub fds: bool,

    /// Never hand ferry's stdio to the job: output travels through the daemon (and is logged).
    #[arg(long)]
    pub no_fds: bool,

    /// Run on a terminal, as `ssh -t`: on a remote daemon, a pseudo-terminal of the daemon's
    /// the size of this one (resizes follow), with this terminal in raw mode until the job
    /// ends (so Ctrl-C and Ctrl-Z reach the job as its terminal's keys); on the local daemon,
    /// this terminal itself (as --fds).
    #[arg(short = 't', long, conflicts_with_all = ["detach", "session", "no_fds"])]
    pub tty: bool,

    /// Run in this session's shell state (see `ferry session`): one word of CMD is a command
    /// line (`'cd /tmp && ls'`); several are a command and its arguments, passed as given.
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,

    /// Run in this group, under its limit of jobs at once (see `ferry group`; default: the
    /// group `default`).
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,

    /// A label for the job, shown by `ps` and `show` and matched by `ps --label`.
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,

    /// Queue the job until these earlier jobs have ended successfully (comma-separated or
    /// repeated); if one does not succeed, the job never runs and is `dependency-failed`.
    #[arg(long, value_name = "ID", value_delimiter = ',', num_args = 1..)]
    pub after: Vec<u64>,

    /// With --after: run once they have ended, whatever their outcome.
    #[arg(long, requires = "after")]
    pub after_any: bool,

    /// The command and its arguments. Everything before it is ferry's (an unknown option is
    /// an error, not a command); after `--`, everything is the command's.
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

/// `ferry attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Only output produced from now on (no replay).
    #[arg(long)]
    pub no_replay: bool,

    /// The job id.
    pub job: u64,
}

/// `ferry log`.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// One JSON object: id, stdout, stderr (bytes that are not UTF-8 replaced),
    /// unstored_bytes, no_log.
    #[arg(long, conflicts_with_all = ["lines", "head", "follow"])]
    pub json: bool,

    /// Only the last N lines (of the streams shown).
    #[arg(short = 'n', long, value_name = "N", conflicts_with = "head")]
    pub lines: Option<usize>,

    /// Only the first N lines.
    #[arg(long, value_name = "N")]
    pub head: Option<usize>,

    /// Only the job's stdout.
    #[arg(long, conflicts_with = "stderr")]
    pub stdout: bool,

    /// Only the job's stderr.
    #[arg(long)]
    pub stderr: bool,

    /// Then follow its output live until it ends, as `attach` does (`tail -f`); exits with
    /// its status.
    #[arg(short, long, conflicts_with = "head")]
    pub follow: bool,

    /// The job id.
    pub job: u64,
}

/// `ferry put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// No progress bar (there is none anyway when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,

    /// The local file.
    pub local: PathBuf,

    /// Its name in the daemon's file area.
    pub remote: Option<String>,
}

/// `ferry get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// No progress bar (there is none anyway when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,

    /// The name in the daemon's file area.
    pub remote: String,

    /// Where to write it.
    pub local: Option<PathBuf>,

    /// Replace LOCAL if it exists (it is never replaced otherwise).
    #[arg(short, long)]
    pub force: bool,
}

/// `ferry ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// One JSON object per entry: path, size, mtime_ms (files), or path, kind (others).
    #[arg(long)]
    pub json: bool,

    /// The directory to list, relative to the file area (default: all of it).
    pub dir: Option<String>,
}

/// `ferry rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Remove directories and everything they hold.
    #[arg(short, long)]
    pub recursive: bool,

    /// What to remove, relative to the file area.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
}

/// `ferry ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Every job in the daemon's history (earlier daemon runs too, lost jobs included), not
    /// only this daemon run's.
    #[arg(short, long)]
    pub all: bool,

    /// Only jobs in these states (comma-separated or repeated): queued, running, paused,
    /// exited (ended on its own, any status), failed (ended with a status other than 0:
    /// non-zero, killed, timed out, never started, dependency failed), lost.
    #[arg(long, value_name = "STATE", value_delimiter = ',', num_args = 1..)]
    pub state: Vec<crate::commands::ps::StateFilter>,

    /// Only jobs of this group.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,

    /// Only jobs with this label.
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
}

/// `ferry prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove ended jobs submitted longer ago than this (e.g. 7d, 12h).
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<humantime::Duration>,

    /// Keep only the newest N ended jobs.
    #[arg(long, value_name = "N")]
    pub keep: Option<u64>,
}

/// `ferry web`.
#[derive(Debug, Args)]
pub struct WebArgs {
    /// Print the URL instead of opening a browser.
    #[arg(long)]
    pub print: bool,
}

/// `ferry kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal name or number (TERM, SIGKILL, 9...).
    #[arg(short, long, default_value = "TERM", value_name = "SIG")]
    pub signal: String,

    /// The job id.
    pub job: u64,
}

/// `ferry wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Print nothing on stderr (by default each job that did not succeed is named with how it
    /// ended, then a line says how many jobs ended and failed).
    #[arg(short, long)]
    pub quiet: bool,

    /// One JSON line per job on stdout: id, success, exit_code, signal, timed_out, lost, error.
    #[arg(long)]
    pub json: bool,

    /// The job ids (default: every job queued or running now).
    #[arg(value_name = "JOB")]
    pub jobs: Vec<u64>,
}

/// The options that reach a remote daemon, which mean nothing to the daemon itself: hidden
/// from its help, refused when given (from the environment they are ignored).
#[derive(Debug, Args)]
pub struct NotTheDaemons {
    #[arg(long, hide = true)]
    pub host: Option<String>,
    #[arg(long, hide = true)]
    pub ca: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub cert: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub key: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub no_tls: bool,
}

impl NotTheDaemons {
    /// The first of these options given, if any.
    pub fn given(&self) -> Option<&'static str> {
        [
            (self.host.is_some(), "--host"),
            (self.ca.is_some(), "--ca"),
            (self.cert.is_some(), "--cert"),
            (self.key.is_some(), "--key"),
            (self.no_tls, "--no-tls"),
        ]
        .into_iter()
        .find_map(|(given, name)| given.then_some(name))
    }
}

/// Every option that reaches a daemon, which means nothing to `ferry tls`: hidden from its
/// help, refused when given (from the environment they are ignored).
#[derive(Debug, Args)]
pub struct NoDaemonReached {
    #[arg(long, hide = true)]
    pub socket: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub tls_dir: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub token_file: Option<PathBuf>,
    #[command(flatten)]
    pub remote: NotTheDaemons,
}

impl NoDaemonReached {
    /// The first of these options given, if any.
    pub fn given(&self) -> Option<&'static str> {
        [
            (self.socket.is_some(), "--socket"),
            (self.tls_dir.is_some(), "--tls-dir"),
            (self.token_file.is_some(), "--token-file"),
        ]
        .into_iter()
        .find_map(|(given, name)| given.then_some(name))
        .or_else(|| self.remote.given())
    }
}

/// `ferry cost`.
#[derive(Debug, Args)]
pub struct CostArgs {
    /// One JSON object: cost, running, queued, slots.
    #[arg(long)]
    pub json: bool,
}

/// `ferry status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One JSON object instead of lines.
    #[arg(long)]
    pub json: bool,

    /// Print only the path of the daemon's log file (an error when it logs elsewhere).
    #[arg(long, conflicts_with = "json")]
    pub log: bool,
}

/// `ferry daemon`. Options given here override the configuration file's values.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub not_the_daemons: NotTheDaemons,

    /// The configuration file (TOML). Default: $XDG_CONFIG_HOME/ferry/daemon.toml (or
    /// ~/.config/ferry/daemon.toml), read only if it exists. See docs/configuration.md for an example.
    #[arg(long, env = "FERRY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Listen on DIALECT:TRANSPORT:ADDRESS (repeatable); e.g. ferry:tls:0.0.0.0:7070.
    /// Replaces the configuration file's listeners. The owner's socket (ferry:unix:<the
    /// client socket>) is always served too, unless a ferry:unix: listener is given.
    /// (`ferryd --help` lists the forms, from the daemon's table of listeners.)
    #[arg(long = "listen", value_name = "SPEC")]
    pub listen: Vec<String>,

    /// Directory for job logs and the daemon's state
    /// (default $XDG_STATE_HOME/ferry, or ~/.local/state/ferry).
    #[arg(long, env = "FERRY_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Largest frame accepted from a client after the handshake, in bytes [default: 16777216].
    #[arg(long, value_name = "BYTES")]
    pub max_frame_size: Option<usize>,

    /// Authenticated connections each listener serves at once; more are refused with an
    /// error. A listener may have its own (max_connections in its [[listener]]) [default: 256].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Connections each listener holds at once that have not finished authenticating (a TLS
    /// handshake, a Hello still to show its token); more are closed as they arrive, and each
    /// is closed at the handshake time limit. The owner's Unix socket has pools of its own,
    /// which no network client can fill [default: 64].
    #[arg(long, value_name = "N")]
    pub max_handshakes: Option<usize>,

    /// Authenticated connections one network client (a certificate's name, a token's label)
    /// holds at once, on all listeners together; the owner is not counted [default: 64].
    #[arg(long, value_name = "N")]
    pub max_connections_per_principal: Option<usize>,

    /// Jobs running at once; more wait in a queue (shown as queued by `ferry ps`) [default: 64].
    #[arg(long, value_name = "N")]
    pub max_jobs: Option<usize>,

    /// Jobs waiting in the queue at once; more are refused [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_queued: Option<usize>,

    /// Finished jobs remembered, with their logs; the oldest are forgotten first
    /// [default: 1000].
    #[arg(long, value_name = "N")]
    pub max_finished: Option<usize>,

    /// Output stored per job, in bytes (what `ferry log` and a late `ferry attach` can show):
    /// past it, the log keeps the output's head and its tail (the last quarter of the cap, at
    /// most 8 MiB) and says how much was dropped between; clients following the job live still
    /// get everything [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub max_log_size: Option<u64>,

    /// Keep no history: jobs live in memory only, earlier runs' logs are removed at start
    /// (the in-memory mode, for comparison).
    #[arg(long)]
    pub no_history: bool,

    /// Track each job's processes by its process group and a FERRY_JOB environment mark
    /// only, even where the daemon could give each job a cgroup of its own (by default it
    /// does, so that no process a job starts, `setsid` or not, outlives the job).
    #[arg(long)]
    pub no_job_cgroups: bool,

    /// Move each job into its cgroup after fork (a write to cgroup.procs), as on kernels
    /// before 5.7, instead of creating it there with clone3 (for tests of that path).
    #[arg(long, hide = true)]
    pub no_clone_into_cgroup: bool,

    /// Ended jobs the history keeps at most; the oldest go first [default: 10000].
    #[arg(long, value_name = "N")]
    pub history_max_jobs: Option<usize>,

    /// Bytes of job logs the history keeps at most; the oldest jobs go first
    /// [default: 10737418240 (10 GiB)].
    #[arg(long, value_name = "BYTES")]
    pub history_max_output: Option<u64>,

    /// Ended jobs older than this leave the history, e.g. 30d, 12h; 0 keeps them forever
    /// [default: 30d].
    #[arg(long, value_name = "DURATION")]
    pub history_max_age: Option<humantime::Duration>,

    /// The file area: where `put` writes, `get` reads, sandboxes live and remote jobs run
    /// [default: STATE_DIR/files]. Client names never reach outside it.
    #[arg(long, value_name = "DIR")]
    pub files_dir: Option<PathBuf>,

    /// Largest file a client may put, in bytes [default: 68719476736 (64 GiB)].
    #[arg(long, value_name = "BYTES")]
    pub max_file_size: Option<u64>,

    /// Bytes each anonymous principal (one per dialect and local user, on loopback) may keep
    /// in its part of the file area; 0: no limit [default: 1073741824 (1 GiB)]. The owner's
    /// is never limited.
    #[arg(long, value_name = "BYTES")]
    pub quota_anonymous: Option<u64>,

    /// Bytes each token or client certificate may keep in its part of the file area; 0: no
    /// limit [default: 68719476736 (64 GiB)].
    #[arg(long, value_name = "BYTES")]
    pub quota_network: Option<u64>,

    /// Time an upload may go without a byte before it is dropped and its room given back;
    /// 0: no limit [default: 1m].
    #[arg(long, value_name = "DURATION")]
    pub upload_idle_timeout: Option<humantime::Duration>,

    /// Time between TERM and KILL when a job is terminated (timeout, shutdown) [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub kill_grace: Option<humantime::Duration>,

    /// Time a new connection has to complete its handshake [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub handshake_timeout: Option<humantime::Duration>,

    /// Time a connection of a dialect without a handshake of its own (FANOS) may stay silent
    /// between requests before it is closed; 0: no limit [default: 0].
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<humantime::Duration>,

    /// TLS files from `ferry tls init`: DIR/server.pem, DIR/server-key.pem, DIR/token.
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,

    /// The server certificate for TLS listeners (overrides DIR/server.pem).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The server certificate's key (overrides DIR/server-key.pem).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// The token network clients must present (overrides DIR/token).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Accept client certificates signed by this CA as authentication (mutual TLS).
    #[arg(long, value_name = "FILE")]
    pub client_ca: Option<PathBuf>,

    /// Let network listeners run any command (by default they run catalog commands only).
    #[arg(long)]
    pub allow_any_command: bool,

    /// Read admin commands on stdin (:list, :kill ID|all, :msg ID|all TEXT, :stats, :cc,
    /// :help); on by default when stdin is a terminal and the daemon is in the foreground.
    #[arg(long)]
    pub console: bool,

    /// Record every byte each peer sends into DIR/DIALECT/PEER-ID (up to 64 KiB a
    /// connection): to see what a client sends, and to seed the fuzz corpora (fuzz/seed).
    /// Recordings hold what peers send, tokens included.
    #[arg(long, value_name = "DIR", env = "FERRY_RECORD_WIRE")]
    pub record_wire: Option<PathBuf>,

    /// Log nothing (silent).
    #[arg(short = 's', long, conflicts_with_all = ["tiny", "verbose"])]
    pub silent: bool,

    /// Log only connects, leaves and errors (tiny).
    #[arg(short = 't', long, conflicts_with = "verbose")]
    pub tiny: bool,

    /// Log more (the default is what a developer wants to see; FERRY_LOG overrides all).
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// Messages and notices each peer's outbox holds; past it, the slow-consumer policy
    /// applies [default: 1024].
    #[arg(long, value_name = "N")]
    pub hub_outbox: Option<usize>,

    /// The largest hub whose joins and leaves are announced to every member, and the most
    /// members a join's answer lists (each announcement goes to every member: a hub growing
    /// to n members costs n*n/2 deliveries) [default: 1000].
    #[arg(long, value_name = "N")]
    pub hub_presence_max: Option<usize>,

    /// How long a hub member whose connection ended keeps its id, name and messages, for it
    /// to resume [default: 13s].
    #[arg(long, value_name = "DURATION")]
    pub hub_grace: Option<humantime::Duration>,

    /// What happens to a hub member whose outbox stays full: `disconnect` it (with a notice;
    /// its place is held for the grace period) or `drop` what does not fit [default:
    /// disconnect].
    #[arg(long, value_name = "POLICY")]
    pub slow_consumer: Option<String>,

    /// How long an outbox may stay full before `disconnect` applies [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub slow_consumer_after: Option<humantime::Duration>,

    /// How long a hub member may be silent before it is pinged [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub ping_interval: Option<humantime::Duration>,

    /// Pings in a row a hub member may leave unanswered before it is removed [default: 3].
    #[arg(long, value_name = "N")]
    pub ping_misses: Option<u32>,

    /// Join the hub to a cluster of daemons over NATS (with JetStream): members of every
    /// daemon of the cluster see one another, as `name@daemon` (`nats://HOST:4222`,
    /// `tls://...`; several servers comma-separated).
    #[arg(long, value_name = "URL", env = "FERRY_HUB_CLUSTER")]
    pub hub_cluster: Option<String>,

    /// The cluster's name: daemons with the same name on the same NATS share one hub
    /// [default: ferry].
    #[arg(long, value_name = "NAME")]
    pub hub_cluster_name: Option<String>,

    /// This daemon's name in the cluster [default: the host name's first label].
    #[arg(long, value_name = "NAME")]
    pub hub_node: Option<String>,

    /// The NATS user (its password comes from FERRY_HUB_CLUSTER_PASSWORD or the file's
    /// `hub.password`).
    #[arg(long, value_name = "USER")]
    pub hub_cluster_user: Option<String>,

    /// A NATS `.creds` file (JWT and nkey seed) to connect with.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["hub_cluster_user", "hub_cluster_nkey"])]
    pub hub_cluster_creds: Option<PathBuf>,

    /// A file holding the NATS nkey seed to connect with.
    #[arg(long, value_name = "FILE", conflicts_with = "hub_cluster_user")]
    pub hub_cluster_nkey: Option<PathBuf>,

    /// The CA certificate (PEM) to trust for the NATS server's TLS; TLS is then required.
    #[arg(long, value_name = "FILE")]
    pub hub_cluster_ca: Option<PathBuf>,

    /// Detach from the terminal's session (used when a client starts the daemon).
    #[arg(long, hide = true)]
    pub background: bool,
}
