//! `ferry chat --wire tsockm`: a TsockM client, which behaves as TsockM's own: the login's
//! connection stays open for what the server pushes; every request (`MSG`, `GET_PEER`,
//! `COMM_END`, and `RES::COMM` answering a health check) goes on a connection of its own.
//! Each pushed message is followed by a `GET_PEER` for its sender's name, as TsockM's client
//! does, so that messages show who sent them.
//!
//! TsockM has no direct messages and no list of peers: `:msg` and `:list` say so; `:gp ID`
//! asks for one peer's name.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use ferry_common::text::visible;
use ferry_wire::tsockm::{decode, Action, Kind, Message, Status, CLIENT_READ};

use super::screen::{Input, Screen};
use crate::cli::ChatArgs;

/// How long the server has to answer the login.
const LOGIN_WAIT: Duration = Duration::from_secs(5);

/// What the chat's main loop hears.
enum Heard {
    Input(Input),
    Pushed(Message),
    Closed,
}

/// Runs the TsockM chat.
pub fn run(args: &ChatArgs, screen: &Screen) -> Result<i32> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => std::env::var("USER").unwrap_or_else(|_| "ferry".into()),
    };
    let addr = args.addr.as_str();
    let mut comm = TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
    let login = Message::new(
        Kind::Req,
        Action::Comm,
        Status::Ok,
        "client",
        "client",
        addr,
        &name,
    );
    comm.write_all(&login.encode())?;
    comm.set_read_timeout(Some(LOGIN_WAIT))?;
    let answer = read_one(&mut comm)?.context("the server closed the connection at login")?;
    if answer.kind != Kind::Res || answer.status != Status::Ok {
        bail!("login refused: {}", answer.body);
    }
    comm.set_read_timeout(None)?;
    let id = answer.body.clone();
    screen.print(&format!("* logged in to {addr} as {name} ({id})"));

    let (tx, heard) = std_mpsc::channel();
    let pushes = tx.clone();
    let mut reader = comm.try_clone()?;
    std::thread::spawn(move || loop {
        match read_one(&mut reader) {
            Ok(Some(message)) => {
                if pushes.send(Heard::Pushed(message)).is_err() {
                    return;
                }
            }
            _ => {
                let _ = pushes.send(Heard::Closed);
                return;
            }
        }
    });
    let (mut input, _raw) = screen.read_input();
    std::thread::spawn(move || {
        while let Some(line) = input.blocking_recv() {
            if tx.send(Heard::Input(line)).is_err() {
                return;
            }
        }
    });
    let client = Client {
        addr: addr.to_owned(),
        id,
    };
    // Messages whose sender's name was asked for, oldest first.
    let mut unnamed: VecDeque<String> = VecDeque::new();
    let mut leaving = false;
    while let Ok(heard) = heard.recv() {
        match heard {
            Heard::Pushed(message) => {
                if !client.pushed(screen, message, &mut unnamed)? {
                    return Ok(if leaving { 0 } else { 1 });
                }
            }
            Heard::Closed => {
                screen.print("* the server closed the connection");
                return Ok(if leaving { 0 } else { 1 });
            }
            Heard::Input(Input::Line(line)) => {
                if !client.typed(screen, &line)? {
                    leaving = true;
                }
            }
            Heard::Input(Input::End) if !args.stay => {
                client.request(Action::CommEnd, "")?;
                leaving = true;
            }
            Heard::Input(Input::End) => {}
        }
    }
    Ok(0)
}

/// The logged-in client's side of the requests.
struct Client {
    addr: String,
    id: String,
}

impl Client {
    /// Sends one request on a connection of its own, as TsockM's client does.
    fn request(&self, action: Action, body: &str) -> Result<()> {
        self.send(Kind::Req, action, body)
    }

    fn send(&self, kind: Kind, action: Action, body: &str) -> Result<()> {
        let message = Message::new(
            kind,
            action,
            Status::Ok,
            &self.id,
            "client",
            &self.addr,
            body,
        );
        let mut stream = TcpStream::connect(&self.addr)
            .with_context(|| format!("cannot connect to {}", self.addr))?;
        stream.write_all(&message.encode())?;
        // The server answers a request only with an error.
        stream.shutdown(std::net::Shutdown::Write)?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        if let Ok(Some(answer)) = read_one(&mut stream) {
            if answer.kind == Kind::Err {
                bail!("{}", answer.body);
            }
        }
        Ok(())
    }

    /// Shows what the server pushed; `false` when the server ended the connection.
    fn pushed(
        &self,
        screen: &Screen,
        message: Message,
        unnamed: &mut VecDeque<String>,
    ) -> Result<bool> {
        match (message.kind, message.action) {
            (Kind::Res, Action::Msg) => {
                unnamed.push_back(message.body);
                self.request(Action::GetPeer, &message.sender_id)?;
            }
            (Kind::Res, Action::GetPeer) => {
                let name = if message.status == Status::Ok {
                    message.body
                } else {
                    "(unknown)".into()
                };
                // The daemon's lines look like no member's (no member may go by its name).
                let who = if name == ferry_wire::native::SERVER_PEER {
                    "[daemon]".to_owned()
                } else {
                    format!("{}:", visible(&name))
                };
                match unnamed.pop_front() {
                    Some(text) => screen.print(&format!("[{}] {who} {}", clock(), visible(&text))),
                    None => screen.print(&format!("* peer name: {}", visible(&name))),
                }
            }
            (Kind::Req, Action::Comm) => self.send(Kind::Res, Action::Comm, "OK")?,
            (Kind::Res, Action::CommEnd) => {
                screen.print("* the server ended the connection");
                return Ok(false);
            }
            (Kind::Err, _) => screen.print(&format!("* error: {}", visible(&message.body))),
            _ => {}
        }
        Ok(true)
    }

    /// Runs one typed line; `false` once the user leaves.
    fn typed(&self, screen: &Screen, line: &str) -> Result<bool> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let sent = match word {
            ":exit" => {
                self.request(Action::CommEnd, "")?;
                return Ok(false);
            }
            ":gp" if !rest.trim().is_empty() => self.request(Action::GetPeer, rest.trim()),
            ":gp" => {
                screen.print("* usage: :gp PEER_ID");
                Ok(())
            }
            ":msg" | ":list" => {
                screen.print("* TsockM has no direct messages and no list of peers: a line goes to everyone; :gp ID asks for a peer's name");
                Ok(())
            }
            ":help" => {
                screen
                    .print("* a line goes to everyone\n* :gp ID   a peer's name\n* :exit    leave");
                Ok(())
            }
            _ if line.trim().is_empty() => Ok(()),
            _ => self.request(Action::Msg, line),
        };
        if let Err(e) = sent {
            screen.print(&format!("* {e}"));
        }
        Ok(true)
    }
}

/// Reads one message as TsockM's client does: one `read()`.
fn read_one(stream: &mut TcpStream) -> Result<Option<Message>> {
    let mut buf = [0u8; CLIENT_READ];
    let n = stream.read(&mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(
        decode(&buf[..n]).context("the server sent a malformed message")?,
    ))
}

/// The time now, `HH:MM:SS` (UTC).
fn clock() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}
