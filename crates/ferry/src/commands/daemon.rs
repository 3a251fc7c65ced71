//! `ferry daemon`: runs the daemon in the foreground until SIGTERM, SIGINT or `ferry shutdown`.
//!
//! Settings come from the command line, then the configuration file, then built-in defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferry_daemon::cluster::{ClusterConfig, Credentials};
use ferry_daemon::engine::{reset_inherited_signal_state, EngineConfig, HubConfig, SlowConsumer};
use ferry_daemon::{
    Catalog, CatalogEntry, CommandPolicy, ConnectionLimits, DaemonConfig, Dialect, FileQuotas,
    ListenSpec, Listener, NamedToken, TlsFiles, TransportKind,
};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

use crate::cli::DaemonArgs;
use crate::config::{self, Loaded};

/// Runs the daemon.
pub fn run(socket: &Path, args: DaemonArgs) -> Result<()> {
    if args.background {
        // Leave the starting client's session, so its terminal's signals never reach us.
        // Failing means we already lead a session or group: nothing to leave.
        let _ = rustix::process::setsid();
    }
    reset_inherited_signal_state();
    ferry_daemon::limit_malloc_arenas();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| EnvFilter::new(log_level(&args))),
        )
        .with_writer(std::io::stderr)
        // Colour for a person at a terminal; a log file gets plain text (and NO_COLOR is
        // honoured, https://no-color.org).
        .with_ansi(
            !args.background
                && std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
    let file = config::load(args.config.as_deref())?;
    let config = build(socket, &args, file.as_ref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Every running job's output pump holds a blocking thread; log reads need a few more.
        .max_blocking_threads(config.engine.max_running.saturating_add(64))
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        };
        ferry_daemon::run(config, shutdown).await?;
        Ok(())
    })
}

/// The log filter of `-s`, `-t`, the default and `-v` (TsockM's levels, and one more).
fn log_level(args: &DaemonArgs) -> &'static str {
    if args.silent {
        "off"
    } else if args.tiny {
        // Connects, leaves and errors.
        "error,ferry::presence=debug"
    } else if args.verbose {
        "debug"
    } else {
        "info"
    }
}

/// A duration from its flag, else from the file's `key` (`value`), else none.
fn flag_or_file_duration(
    flag: Option<humantime::Duration>,
    file: Option<&Loaded>,
    key: &str,
    value: &Option<toml::Spanned<String>>,
) -> Result<Option<Duration>> {
    match (flag, file) {
        (Some(flag), _) => Ok(Some(flag.into())),
        (None, Some(file)) => file.duration(value, key),
        (None, None) => Ok(None),
    }
}

/// The hub's settings from the command line and the file.
fn hub(args: &DaemonArgs, file: Option<&Loaded>) -> Result<HubConfig> {
    let empty = config::HubSection::default();
    let section = file.map_or(&empty, |f| &f.config.hub);
    let duration = |flag, key: &str, value| flag_or_file_duration(flag, file, key, value);
    let defaults = HubConfig::default();
    let outbox = args
        .hub_outbox
        .or(section.outbox)
        .unwrap_or(defaults.outbox);
    if outbox == 0 {
        bail!("--hub-outbox (hub.outbox) must be at least 1");
    }
    let after = duration(
        args.slow_consumer_after,
        "hub.slow_consumer_after",
        &section.slow_consumer_after,
    )?
    .unwrap_or(Duration::from_secs(5));
    let slow_consumer = match args
        .slow_consumer
        .as_deref()
        .or(section.slow_consumer.as_deref())
    {
        None | Some("disconnect") => SlowConsumer::Disconnect { after },
        Some("drop") => SlowConsumer::Drop,
        Some(other) => {
            bail!("--slow-consumer (hub.slow_consumer) is 'disconnect' or 'drop', not '{other}'")
        }
    };
    let ping_interval = duration(
        args.ping_interval,
        "hub.ping_interval",
        &section.ping_interval,
    )?
    .unwrap_or(defaults.ping_interval);
    if ping_interval.is_zero() {
        bail!("--ping-interval (hub.ping_interval) must be more than 0");
    }
    Ok(HubConfig {
        outbox,
        grace: duration(args.hub_grace, "hub.grace", &section.grace)?.unwrap_or(defaults.grace),
        slow_consumer,
        ping_interval,
        ping_misses: args
            .ping_misses
            .or(section.ping_misses)
            .unwrap_or(defaults.ping_misses),
        presence_max: args
            .hub_presence_max
            .or(section.presence_max)
            .unwrap_or(defaults.presence_max),
    })
}

/// The daemon's configuration from the command line and the file.
fn build(socket: &Path, args: &DaemonArgs, file: Option<&Loaded>) -> Result<DaemonConfig> {
    let empty = config::FileConfig::default();
    let values = file.map_or(&empty, |f| &f.config);
    let listeners = listeners(socket, args, file)?;
    let limits = &values.limits;
    let max_jobs = at_least_one(
        args.max_jobs,
        limits.max_jobs,
        64,
        "--max-jobs (limits.max_jobs)",
    )?;
    let connections = connection_limits(args, limits)?;
    let max_finished = at_least_one(
        args.max_finished,
        limits.max_finished,
        1000,
        "--max-finished (limits.max_finished)",
    )?;
    let max_frame = args
        .max_frame_size
        .or(limits.max_frame_size)
        .unwrap_or(ferry_wire::DEFAULT_MAX_FRAME);
    if max_frame < ferry_wire::MAX_OUTPUT_CHUNK {
        bail!(
            "--max-frame-size (limits.max_frame_size) must be at least {} bytes (one output chunk)",
            ferry_wire::MAX_OUTPUT_CHUNK
        );
    }
    let duration = |flag, key: &str, value| flag_or_file_duration(flag, file, key, value);
    let kill_grace = duration(args.kill_grace, "limits.kill_grace", &limits.kill_grace)?
        .unwrap_or(Duration::from_secs(5));
    let handshake_timeout = duration(
        args.handshake_timeout,
        "limits.handshake_timeout",
        &limits.handshake_timeout,
    )?
    .unwrap_or(Duration::from_secs(5));
    let idle_timeout = duration(
        args.idle_timeout,
        "limits.idle_timeout",
        &limits.idle_timeout,
    )?
    .filter(|d| !d.is_zero());
    let upload_idle_timeout = duration(
        args.upload_idle_timeout,
        "limits.upload_idle_timeout",
        &limits.upload_idle_timeout,
    )?
    .unwrap_or(ferry_daemon::DEFAULT_UPLOAD_IDLE);
    // 0: no quota.
    let quota = |flag: Option<u64>, file: Option<u64>, default: Option<u64>| {
        flag.or(file)
            .map(|q| (q > 0).then_some(q))
            .unwrap_or(default)
    };
    let defaults = FileQuotas::default();
    let quotas = FileQuotas {
        anonymous: quota(
            args.quota_anonymous,
            limits.quota_anonymous,
            defaults.anonymous,
        ),
        network: quota(args.quota_network, limits.quota_network, defaults.network),
    };
    let state_dir = args
        .state_dir
        .clone()
        .or_else(|| values.state_dir.clone())
        .unwrap_or_else(crate::default_state_dir);
    let (tls, token) = network_credentials(args, &values.tls)?;
    let tokens = named_tokens(token, file)?;
    let mut engine = EngineConfig::new(state_dir.join("jobs"));
    engine.max_running = max_jobs;
    engine.max_queued = args.max_queued.or(limits.max_queued).unwrap_or(10_000);
    engine.max_finished = max_finished;
    engine.kill_grace = kill_grace;
    engine.hub = hub(args, file)?;
    if let Some(size) = args.max_log_size.or(limits.max_log_size) {
        engine.log_limits.max_stored = size;
    }
    let history = &values.history;
    engine.history = !args.no_history && history.enabled.unwrap_or(true);
    engine.job_cgroups = !args.no_job_cgroups;
    engine.clone_into_cgroup = !args.no_clone_into_cgroup;
    if let Some(max) = args.history_max_jobs.or(history.max_jobs) {
        engine.retention.max_jobs = max;
    }
    if let Some(max) = args.history_max_output.or(history.max_output) {
        engine.retention.max_output = max;
    }
    if let Some(age) = duration(args.history_max_age, "history.max_age", &history.max_age)? {
        engine.retention.max_age = (!age.is_zero()).then_some(age);
    }
    Ok(DaemonConfig {
        listeners,
        engine,
        max_frame,
        connections,
        handshake_timeout,
        idle_timeout,
        tls,
        tokens,
        // Made fresh by the daemon at its start.
        web_token: String::new(),
        allow_any_command: args.allow_any_command || values.allow_any_command.unwrap_or(false),
        catalog: catalog(values),
        files_dir: args
            .files_dir
            .clone()
            .or_else(|| values.files_dir.clone())
            .unwrap_or_else(|| state_dir.join("files")),
        max_file_size: args
            .max_file_size
            .or(limits.max_file_size)
            .unwrap_or(ferry_daemon::DEFAULT_MAX_FILE_SIZE),
        quotas,
        upload_idle_timeout: (!upload_idle_timeout.is_zero()).then_some(upload_idle_timeout),
        sessions_dir: state_dir.join("sessions"),
        console: args.console
            || (!args.background && std::io::IsTerminal::is_terminal(&std::io::stdin())),
        record_wire: args.record_wire.clone(),
        cluster: cluster(args, file)?,
    })
}

/// The hub's cluster from the command line and the file, if it joins one.
fn cluster(args: &DaemonArgs, file: Option<&Loaded>) -> Result<Option<ClusterConfig>> {
    use ferry_daemon::cluster::config::{check_subject_token, default_node, DEFAULT_CLUSTER_NAME};
    let empty = config::HubSection::default();
    let section = file.map_or(&empty, |f| &f.config.hub);
    let Some(url) = args.hub_cluster.clone().or_else(|| section.cluster.clone()) else {
        return Ok(None);
    };
    let name = args
        .hub_cluster_name
        .clone()
        .or_else(|| section.cluster_name.clone())
        .unwrap_or_else(|| DEFAULT_CLUSTER_NAME.to_owned());
    check_subject_token("cluster name (--hub-cluster-name, hub.cluster_name)", &name)
        .map_err(anyhow::Error::msg)?;
    let node = args
        .hub_node
        .clone()
        .or_else(|| section.node.clone())
        .unwrap_or_else(default_node);
    check_subject_token("daemon name (--hub-node, hub.node)", &node).map_err(anyhow::Error::msg)?;
    let user = args
        .hub_cluster_user
        .clone()
        .or_else(|| section.user.clone());
    let creds = args
        .hub_cluster_creds
        .clone()
        .or_else(|| section.creds.clone());
    let nkey = args
        .hub_cluster_nkey
        .clone()
        .or_else(|| section.nkey.clone());
    let credentials = match (user, creds, nkey) {
        (None, None, None) => Credentials::None,
        (Some(user), None, None) => {
            let password = std::env::var("FERRY_HUB_CLUSTER_PASSWORD")
                .ok()
                .or_else(|| section.password.clone())
                .context("a NATS user needs a password: set FERRY_HUB_CLUSTER_PASSWORD or hub.password")?;
            Credentials::UserPassword { user, password }
        }
        (None, Some(creds), None) => Credentials::CredsFile(creds),
        (None, None, Some(nkey)) => Credentials::NkeySeedFile(nkey),
        _ => bail!("give the hub's cluster one kind of NATS credentials: a user, a .creds file or an nkey seed"),
    };
    Ok(Some(ClusterConfig {
        url,
        name,
        node,
        credentials,
        ca: args.hub_cluster_ca.clone().or_else(|| section.ca.clone()),
    }))
}

/// The command catalog of the file's `[catalog.NAME]` tables.
fn catalog(values: &config::FileConfig) -> Catalog {
    let mut catalog = Catalog::default();
    for (name, entry) in &values.catalog {
        catalog.insert(
            name.clone(),
            CatalogEntry {
                program: entry.program.clone(),
                args: entry.args.iter().map(Into::into).collect(),
            },
        );
    }
    catalog
}

/// A count from its flag, else the file, else its default; zero is refused.
fn at_least_one(
    flag: Option<usize>,
    from_file: Option<usize>,
    default: usize,
    name: &str,
) -> Result<usize> {
    let value = flag.or(from_file).unwrap_or(default);
    if value == 0 {
        bail!("{name} must be at least 1");
    }
    Ok(value)
}

/// The daemon's connection limits (a listener may have its own pools' sizes).
fn connection_limits(args: &DaemonArgs, limits: &config::Limits) -> Result<ConnectionLimits> {
    let defaults = ConnectionLimits::default();
    Ok(ConnectionLimits {
        per_listener: at_least_one(
            args.max_connections,
            limits.max_connections,
            defaults.per_listener,
            "--max-connections (limits.max_connections)",
        )?,
        handshakes_per_listener: at_least_one(
            args.max_handshakes,
            limits.max_handshakes,
            defaults.handshakes_per_listener,
            "--max-handshakes (limits.max_handshakes)",
        )?,
        per_principal: at_least_one(
            args.max_connections_per_principal,
            limits.max_connections_per_principal,
            defaults.per_principal,
            "--max-connections-per-principal (limits.max_connections_per_principal)",
        )?,
    })
}

/// The listeners: --listen replaces the file's; without either, the client socket. The
/// owner's socket (`ferry:unix:` the client socket) is served in every case unless a
/// `ferry:unix:` listener is given: a daemon started with network listeners alone would
/// otherwise lock its owner out (no `ferry ps`, no `ferry shutdown`).
fn listeners(socket: &Path, args: &DaemonArgs, file: Option<&Loaded>) -> Result<Vec<Listener>> {
    let mut listeners = given_listeners(args, file)?;
    let owners = |l: &Listener| {
        l.spec.dialect == Dialect::native() && l.spec.transport.kind() == TransportKind::Unix
    };
    if !listeners.iter().any(owners) {
        listeners.insert(0, Listener::new(ListenSpec::native_unix(socket)));
    }
    Ok(listeners)
}

/// The listeners --listen or the file give (none: none given).
fn given_listeners(args: &DaemonArgs, file: Option<&Loaded>) -> Result<Vec<Listener>> {
    let checked = |spec: ListenSpec| -> Result<ListenSpec> {
        spec.check_served()?;
        Ok(spec)
    };
    if !args.listen.is_empty() {
        return args
            .listen
            .iter()
            .map(|text| Ok(Listener::new(checked(ListenSpec::parse(text)?)?)))
            .collect();
    }
    let Some(file) = file.filter(|f| !f.config.listeners.is_empty()) else {
        return Ok(Vec::new());
    };
    file.config
        .listeners
        .iter()
        .map(|section| {
            let positive = |value: Option<usize>, key: &str| match value {
                Some(0) => Err(file.error_at(section.spec.span(), key, "must be at least 1")),
                value => Ok(value),
            };
            let spec = ListenSpec::parse(section.spec.get_ref())
                .and_then(|spec| spec.check_served().map(|()| spec))
                .map_err(|e| file.error_at(section.spec.span(), "listener.spec", e))?;
            let commands = match section.commands.as_ref() {
                None => None,
                Some(value) => Some(match value.get_ref().as_str() {
                    "any" => CommandPolicy::Any,
                    "catalog" => CommandPolicy::Catalog,
                    other => {
                        return Err(file.error_at(
                            value.span(),
                            "listener.commands",
                            format!("'{other}' is neither \"any\" nor \"catalog\""),
                        ))
                    }
                }),
            };
            Ok(Listener {
                spec,
                commands,
                client_ca: section.client_ca.clone(),
                allow_non_loopback: section.allow_non_loopback,
                see_all_jobs: section.see_all_jobs,
                max_connections: positive(section.max_connections, "listener.max_connections")?,
                max_handshakes: positive(section.max_handshakes, "listener.max_handshakes")?,
            })
        })
        .collect()
}

/// The TLS files and token for network listeners: flags, then the file's `[tls]`, each
/// explicit path overriding what its directory would give.
fn network_credentials(
    args: &DaemonArgs,
    section: &config::TlsSection,
) -> Result<(Option<TlsFiles>, Option<String>)> {
    let dir = args.tls_dir.clone().or_else(|| section.dir.clone());
    let from_dir = |name: &str| dir.as_ref().map(|dir| dir.join(name));
    let pick = |flag: &Option<PathBuf>, file: &Option<PathBuf>, name: &str| {
        flag.clone()
            .or_else(|| file.clone())
            .or_else(|| from_dir(name))
    };
    let cert = pick(&args.tls_cert, &section.cert, "server.pem");
    let key = pick(&args.tls_key, &section.key, "server-key.pem");
    let client_ca = args.client_ca.clone().or_else(|| section.client_ca.clone());
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert,
            key,
            client_ca,
        }),
        (None, None) => None,
        _ => bail!(
            "--tls-cert and --tls-key (tls.cert and tls.key) go together, or give a TLS directory"
        ),
    };
    // A TLS directory without a token is fine (client certificates may authenticate); an
    // explicitly named token file must exist.
    let token_file = args
        .token_file
        .clone()
        .or_else(|| section.token_file.clone())
        .or_else(|| from_dir("token").filter(|path| path.exists()));
    let token = match token_file {
        Some(path) => Some(crate::endpoint::read_token(&path)?),
        None => None,
    };
    Ok((tls, token))
}

/// Every token network clients may show: the default one, then the file's `[tokens]`.
fn named_tokens(default: Option<String>, file: Option<&Loaded>) -> Result<Vec<NamedToken>> {
    let mut tokens: Vec<NamedToken> = default
        .map(|secret| NamedToken {
            label: "default".into(),
            secret,
        })
        .into_iter()
        .collect();
    for (label, path) in file.map(|f| &f.config.tokens).into_iter().flatten() {
        let usable = !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !label.starts_with('.');
        if !usable || label == "default" {
            bail!("tokens.{label}: a token's label is letters, digits, '-', '_' and '.' (and not 'default', the label of the [tls] token)");
        }
        let secret = crate::endpoint::read_token(path)?;
        if tokens.iter().any(|t| t.secret == secret) {
            bail!(
                "tokens.{label}: {} holds a token already configured under another label",
                path.display()
            );
        }
        tokens.push(NamedToken {
            label: label.clone(),
            secret,
        });
    }
    Ok(tokens)
}
