//! Test helpers: a real `ferry daemon` process on a temporary socket, `ferry` client commands
//! pointed at it, and a raw protocol connection for sending arbitrary bytes.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_wire::native::{
    decode_frame, encode_frame, ClientMessage, DaemonMessage, PROTOCOL_VERSION,
};

/// The ferry binary under test.
pub fn ferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}

/// A daemon process on a private temporary socket, stopped when dropped.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub child: Option<Child>,
}

impl Daemon {
    /// Starts `ferry daemon` with extra arguments and waits until it answers.
    pub fn start(extra: &[&str]) -> Daemon {
        Daemon::spawn(extra, &[], true, None, None)
    }

    /// As [`Daemon::start`], the daemon started by `sh` after it ran `shell` (to set a
    /// resource limit, say).
    pub fn start_after(shell: &str, extra: &[&str]) -> Daemon {
        Daemon::spawn(extra, &[], true, Some(shell), None)
    }

    /// Starts `ferry daemon` on its Unix socket and on the given network listeners (each
    /// `DIALECT:TRANSPORT:ADDRESS`), with TLS files from `ferry tls init` in `self.tls_dir()`.
    pub fn start_networked(extra: &[&str], listeners: &[&str]) -> Daemon {
        Daemon::spawn(extra, listeners, true, None, None)
    }

    /// As [`Daemon::start_networked`], the daemon started in the directory `cwd`.
    pub fn start_networked_in(cwd: &Path, extra: &[&str], listeners: &[&str]) -> Daemon {
        Daemon::spawn(extra, listeners, true, None, Some(cwd))
    }

    /// As [`Daemon::start_networked`], the daemon started by `sh` after it ran `shell`.
    pub fn start_networked_after(shell: &str, extra: &[&str], listeners: &[&str]) -> Daemon {
        Daemon::spawn(extra, listeners, true, Some(shell), None)
    }

    /// As [`Daemon::start_networked`], but the daemon has no token (its TLS directory holds
    /// none): only client certificates can authenticate network clients.
    pub fn start_networked_without_token(extra: &[&str], listeners: &[&str]) -> Daemon {
        Daemon::spawn(extra, listeners, false, None, None)
    }

    fn spawn(
        extra: &[&str],
        listeners: &[&str],
        token: bool,
        shell: Option<&str>,
        cwd: Option<&Path>,
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("run").join("ferry.sock");
        let state_dir = dir.path().join("state");
        let mut command = match shell {
            None => Command::new(ferry_bin()),
            Some(shell) => {
                let mut command = Command::new("sh");
                command
                    .arg("-c")
                    .arg(format!("{shell}\nexec \"$0\" \"$@\""))
                    .arg(ferry_bin());
                command
            }
        };
        command
            .arg("daemon")
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state_dir);
        if !listeners.is_empty() {
            let tls_dir = dir.path().join("tls");
            ferry_ok([
                std::ffi::OsStr::new("tls"),
                "init".as_ref(),
                tls_dir.as_os_str(),
            ]);
            if !token {
                std::fs::remove_file(tls_dir.join("token")).expect("remove the token");
            }
            command
                .arg("--listen")
                .arg(format!("ferry:unix:{}", socket.display()))
                .arg("--tls-dir")
                .arg(&tls_dir);
            for listener in listeners {
                command.arg("--listen").arg(listener);
            }
        }
        command.args(extra);
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        Daemon::launch(dir, socket, state_dir, command)
    }

    /// Starts `ferry daemon --config FILE` with the configuration `config` makes from the
    /// daemon's directory and its socket's path (the file's listeners must include
    /// `ferry:unix:SOCKET`).
    pub fn start_with_config(config: impl FnOnce(&Path, &Path) -> String) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("run").join("ferry.sock");
        let state_dir = dir.path().join("state");
        let file = dir.path().join("daemon.toml");
        std::fs::write(&file, config(dir.path(), &socket)).expect("config");
        let mut command = Command::new(ferry_bin());
        command
            .arg("daemon")
            .arg("--config")
            .arg(&file)
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state_dir);
        Daemon::launch(dir, socket, state_dir, command)
    }

    /// Spawns the daemon `command` with its log in `DIR/daemon.log`, and waits until it
    /// serves.
    fn launch(
        dir: tempfile::TempDir,
        socket: PathBuf,
        state_dir: PathBuf,
        mut command: Command,
    ) -> Daemon {
        let child = command
            .env("FERRY_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("daemon.log")).expect("log file"),
            ))
            .spawn()
            .expect("spawn daemon");
        Daemon::serving(dir, socket, state_dir, child)
    }

    /// The ports of this daemon's `kind` (`tls`, `tcp`) listeners, in the order the log
    /// announces them.
    pub fn ports(&self, kind: &str) -> Vec<u16> {
        let needle = format!("listening on ferry:{kind}:");
        self.log()
            .lines()
            .filter_map(|line| {
                let rest = &line[line.find(&needle)? + needle.len()..];
                rest.split_whitespace()
                    .next()?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// Stops this daemon (SIGTERM) if it runs, and starts a new one on the same socket and
    /// state directory with `extra` arguments, its log appended to the same file. A `limit`
    /// shell command (such as `ulimit -f 64`) runs first, in the shell that becomes the daemon.
    pub fn restart(&mut self, extra: &[&str], limit: Option<&str>) {
        if self.child.is_some() {
            assert_eq!(self.stop_with(libc::SIGTERM), Some(0), "{}", self.log());
        }
        let mut command = match limit {
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell
                    .arg("-c")
                    .arg(format!("{limit} && exec \"$0\" \"$@\""))
                    .arg(ferry_bin());
                shell
            }
            None => Command::new(ferry_bin()),
        };
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.path().join("daemon.log"))
            .expect("log file");
        let child = command
            .arg("daemon")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(extra)
            .env("FERRY_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn daemon");
        self.child = Some(child);
        self.wait_until_serving();
    }

    fn serving(
        dir: tempfile::TempDir,
        socket: PathBuf,
        state_dir: PathBuf,
        child: Child,
    ) -> Daemon {
        let daemon = Daemon {
            dir,
            socket,
            state_dir,
            child: Some(child),
        };
        daemon.wait_until_serving();
        daemon
    }

    /// Spawns `command` (a `ferry daemon` with its own stdio: a terminal, say), its log in
    /// `DIR/daemon.log`, and waits until it serves on `DIR/run/ferry.sock`.
    pub fn launch_in(dir: tempfile::TempDir, mut command: Command) -> Daemon {
        let socket = dir.path().join("run").join("ferry.sock");
        let state_dir = dir.path().join("state");
        let child = command
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state_dir)
            .env("FERRY_LOG", "debug")
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("daemon.log")).expect("log file"),
            ))
            .spawn()
            .expect("spawn daemon");
        Daemon::serving(dir, socket, state_dir, child)
    }

    /// The port of this daemon's listener `DIALECT:TRANSPORT` (`tsockm:tcp`), from the log.
    pub fn listener_port(&self, dialect_and_transport: &str) -> u16 {
        port_in_log(
            &self.dir.path().join("daemon.log"),
            &format!("{dialect_and_transport}:"),
        )
    }

    /// The directory `ferry tls init` filled for a networked daemon.
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    /// The port a network listener of this kind (`tls` or `tcp`) was bound to, from the log.
    pub fn port(&self, kind: &str) -> u16 {
        port_in_log(
            &self.dir.path().join("daemon.log"),
            &format!("ferry:{kind}:"),
        )
    }

    /// A `ferry` command pointed at this daemon's TLS listener with its CA and token.
    pub fn remote(&self) -> Command {
        self.remote_at(self.port("tls"))
    }

    /// A `ferry` command pointed at loopback port `port` (a relay to this daemon's TLS
    /// listener) with the daemon's CA and token.
    pub fn remote_at(&self, port: u16) -> Command {
        let mut command = Command::new(ferry_bin());
        command
            .env_remove("FERRY_SOCKET")
            .arg("--host")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--tls-dir")
            .arg(self.tls_dir())
            .stdin(Stdio::null());
        command
    }

    fn wait_until_serving(&self) {
        // A bound socket takes connections before the daemon accepts them; it answers a
        // Hello once every listener is bound and served.
        let welcomed = || {
            let stream = UnixStream::connect(&self.socket).ok()?;
            let mut raw = Raw::from_stream(stream);
            raw.send(&ClientMessage::Hello {
                version: ferry_wire::PROTOCOL_VERSION,
                client: "start-up probe".into(),
                token: None,
            });
            matches!(raw.recv(), Some(DaemonMessage::Welcome { .. })).then_some(())
        };
        wait_until(
            "the daemon to start",
            Duration::from_secs(10),
            welcomed,
            || self.log(),
        );
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Whether the daemon's log comes to hold `needle` within ten seconds.
    pub fn log_shows(&self, needle: &str) -> bool {
        poll_until(Duration::from_secs(10), || {
            self.log().contains(needle).then_some(())
        })
        .is_some()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A `ferry` command pointed at this daemon.
    pub fn ferry(&self) -> Command {
        let mut command = Command::new(ferry_bin());
        command
            .env("FERRY_SOCKET", &self.socket)
            .env("FERRY_STATE_DIR", &self.state_dir)
            .stdin(Stdio::null());
        command
    }

    /// Runs `ferry run --no-fds -- sh -c SCRIPT` (output through the daemon, so it is
    /// logged) and returns its output.
    pub fn run_script(&self, script: &str) -> Output {
        self.run(&["run", "--no-fds", "--", "sh", "-c", script])
    }

    /// Runs `ferry ARGS` with `input` on its stdin (a pipe) and returns its output.
    pub fn run_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .ferry()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferry");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
        child.wait_with_output().expect("wait for ferry")
    }

    /// Runs `ferry ARGS` and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.ferry().args(args).output().expect("run ferry")
    }

    /// Sends a signal to the daemon and waits for it to exit; returns its exit code.
    pub fn stop_with(&mut self, signal: i32) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        send_signal(child.id(), signal);
        wait_with_timeout(&mut child, Duration::from_secs(20))
    }

    /// A raw connection that has done the handshake.
    pub fn raw(&self) -> Raw {
        let mut raw = Raw::connect(&self.socket);
        raw.send(&ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            client: "test".into(),
            token: None,
        });
        match raw.recv() {
            Some(DaemonMessage::Welcome { .. }) => raw,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    /// Asserts that the daemon still serves a new client properly.
    pub fn assert_serving(&self) {
        let out = self.run(&["run", "--", "echo", "still serving"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "still serving\n",
            "daemon log:\n{}",
            self.log()
        );
        assert_eq!(out.status.code(), Some(0));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal(child.id(), libc::SIGTERM);
            if wait_with_timeout(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The port of the listener a daemon log announces as `listening on PREFIX...:PORT`
/// (`PREFIX` e.g. `ferry:tls:` or `ferry:tls:127.0.0.2:`), waiting up to ten seconds for it.
pub fn port_in_log(log: &Path, prefix: &str) -> u16 {
    let needle = format!("listening on {prefix}");
    let text = || std::fs::read_to_string(log).unwrap_or_default();
    let line = wait_until(
        &format!("a {prefix} listener in the log"),
        Duration::from_secs(10),
        || {
            text()
                .lines()
                .find(|l| l.contains(&needle))
                .map(str::to_owned)
        },
        text,
    );
    let rest = &line[line.find(&needle).expect("found") + needle.len()..];
    let address = rest.split_whitespace().next().expect("address");
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("port in {line}"))
}

/// Runs `ferry ARGS` and checks that it succeeded.
pub fn ferry_ok<I, S>(args: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = Command::new(ferry_bin())
        .args(args)
        .output()
        .expect("ferry");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks `condition` every 10 ms until it yields a value, for at most `timeout`: the one
/// place tests wait for something to happen.
pub fn poll_until<T>(timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `condition` yields a value, and returns it; after `timeout`, fails the test
/// saying what was awaited and what `seen` shows then.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    condition: impl FnMut() -> Option<T>,
    seen: impl FnOnce() -> String,
) -> T {
    poll_until(timeout, condition)
        .unwrap_or_else(|| panic!("waited {timeout:?} for {what}; seen:\n{}", seen()))
}

/// Bytes written on a Unix socket that its peer has not read yet (SIOCOUTQ; 0 once read).
pub fn unread_by_peer(socket: &impl std::os::fd::AsRawFd) -> i32 {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int through the pointer, which points at a live
    // c_int of this frame; the fd is borrowed from a live socket.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    assert_eq!(result, 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
    queued
}

/// Waits until the peer of `socket` has read everything written to it.
pub fn wait_until_read(socket: &impl std::os::fd::AsRawFd) {
    wait_until(
        "the daemon to read what was sent",
        Duration::from_secs(10),
        || (unread_by_peer(socket) == 0).then_some(()),
        || format!("{} bytes unread", unread_by_peer(socket)),
    );
}

/// Sends `signal` to `pid`.
pub fn send_signal(pid: u32, signal: i32) {
    // SAFETY: kill() has no memory-safety requirements; a wrong pid only yields an error.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// Waits for a child up to `timeout`; returns its exit code (None if it did not exit, or
/// was killed by a signal).
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<i32> {
    poll_until(timeout, || child.try_wait().ok().flatten())?.code()
}

/// A raw protocol connection: write any bytes, read decoded frames.
pub struct Raw {
    pub stream: UnixStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(path: &Path) -> Raw {
        Raw::from_stream(UnixStream::connect(path).expect("connect"))
    }

    /// A raw client on a connected socket.
    pub fn from_stream(stream: UnixStream) -> Raw {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn send(&mut self, message: &ClientMessage) {
        let mut bytes = Vec::new();
        encode_frame(message, &mut bytes).expect("encode");
        self.send_bytes(&bytes);
    }

    /// Sends a frame with `fds` on its first byte (SCM_RIGHTS).
    pub fn send_with_fds(&mut self, message: &ClientMessage, fds: &[std::os::fd::BorrowedFd<'_>]) {
        use std::os::fd::AsFd;
        let mut bytes = Vec::new();
        encode_frame(message, &mut bytes).expect("encode");
        ferry_io::fdpass::send_all_with_fds(self.stream.as_fd(), &bytes, fds).expect("sendmsg");
    }

    /// The next frame, or None when the daemon closed the connection.
    pub fn recv(&mut self) -> Option<DaemonMessage> {
        loop {
            if let Some((message, used)) =
                decode_frame::<DaemonMessage>(&self.buf, usize::MAX).expect("daemon frame")
            {
                self.buf.drain(..used);
                return Some(message);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read from daemon: {e}"),
            }
        }
    }

    /// Reads frames until an error frame; returns its code and message. Panics if the
    /// connection closes first.
    pub fn expect_error(&mut self) -> (ferry_wire::ErrorCode, String) {
        loop {
            match self.recv() {
                Some(DaemonMessage::Error { code, message, .. }) => return (code, message),
                Some(_) => {}
                None => panic!("connection closed without an error frame"),
            }
        }
    }

    /// Asserts that the daemon closes the connection (after any frames).
    pub fn expect_closed(&mut self) {
        while self.recv().is_some() {}
    }
}

/// A `Run` of `argv` with the given flags and nothing else set.
pub fn run_message(
    request: u64,
    argv: &[&str],
    pass_stdio: bool,
    session: Option<&str>,
) -> ClientMessage {
    ClientMessage::Run {
        request,
        argv: argv
            .iter()
            .map(|a| serde_bytes::ByteBuf::from(a.as_bytes().to_vec()))
            .collect(),
        cwd: None,
        env: None,
        stdin: false,
        timeout_ms: None,
        hangup_on_disconnect: false,
        follow: true,
        sandbox: None,
        pass_stdio,
        session: session.map(str::to_owned),
        group: None,
        label: None,
        after: Vec::new(),
        after_any: false,
        tty: None,
    }
}

/// Reads frames until job `job`'s `Exit`; returns it.
pub fn wait_exit(raw: &mut Raw) -> ferry_wire::JobExit {
    loop {
        match raw.recv() {
            Some(DaemonMessage::Exit { exit, .. }) => return exit,
            Some(DaemonMessage::Error { message, .. }) => panic!("error: {message}"),
            Some(_) => {}
            None => panic!("connection closed before the job's exit"),
        }
    }
}

/// Open fds of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("proc fd")
        .count()
}

/// Runs a shell pipeline with FERRY_SOCKET pointing at `daemon`; returns its output.
pub fn shell(daemon: &Daemon, script: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("FERRY", ferry_bin())
        .env("FERRY_SOCKET", &daemon.socket)
        .env("FERRY_STATE_DIR", &daemon.state_dir)
        .stdin(Stdio::null())
        .output()
        .expect("run sh")
}

/// Processes (not zombies) whose process group is `pgid`.
pub fn live_processes_in_group(pgid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command (which is in parentheses): state ppid pgrp ...
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            found.push(pid);
        }
    }
    found
}

/// A memory figure of a process from `/proc/PID/status` (`VmRSS`, `VmHWM`...), in KiB.
pub fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} of {pid}"))
}

/// Peak resident memory of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    memory_kib(pid, "VmHWM")
}

/// Spawns `command` with its stdout and stderr piped, and returns it once the first line of its
/// stdout (a job's sign that it runs) has come; that line too. The rest of its output is left
/// unread in the pipes.
pub fn spawn_until_first_line(command: &mut Command) -> (Child, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.as_mut().expect("stdout");
    // A byte at a time, so that nothing past the line is taken from the pipe.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        match stdout.read(&mut byte) {
            Ok(0) => panic!(
                "the output ended before a first line: {:?}",
                String::from_utf8_lossy(&line)
            ),
            Ok(_) => line.push(byte[0]),
            Err(e) => panic!("cannot read the output: {e}"),
        }
    }
    (child, String::from_utf8_lossy(&line).into_owned())
}
