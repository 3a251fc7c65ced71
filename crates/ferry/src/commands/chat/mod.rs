//! `ferry chat`: a line client of the daemon's peer hub, over the native protocol (or, with
//! `--wire tsockm`, over TsockM's: see [`tsockm`]).
//!
//! A plain line goes to everyone; `:msg PEER TEXT` to one member (id or name); `:list` shows
//! the members; `:exit` leaves; `:help`. Arriving messages show the sender's name and the
//! time; joins and leaves are shown as `* ...` lines. From a pipe the lines are sent in
//! order, each after the daemon took the one before, and the chat leaves at the end of input
//! (or, with `--stay`, keeps printing until the daemon closes the connection).
//!
//! A connection lost without a word (a network failure, a daemon killed) is not the end: the
//! chat connects again and takes its place back with its resume token, within the hub's grace
//! period, getting what was sent to it meanwhile (in a hub cluster, exactly what came after
//! the last message it showed). A kick or a daemon's shutdown ends the chat.

mod screen;
pub mod tsockm;

use anyhow::Result;
use ferry_client::{Client, ClientError, Endpoint, Event, HubMember, NoticeKind};
use ferry_common::text::visible;
use ferry_wire::native::SERVER_PEER;
use std::io::IsTerminal;
use std::time::Duration;

use crate::cli::{ChatArgs, ChatWire};
use screen::{Input, Screen};

/// The chat's commands, as `:help` prints them.
const HELP: &str = "\
* a line goes to everyone
* :msg PEER TEXT   to one member (its id or name)
* :list            the members
* :exit            leave
* :help            this list";

/// Runs the chat until the user leaves, the input ends, or the daemon closes.
pub fn run(target: &Endpoint, args: ChatArgs) -> Result<i32> {
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let screen = Screen::new(terminal);
    match args.wire {
        ChatWire::Tsockm => tsockm::run(&args, &screen),
        ChatWire::Ferry => crate::client_runtime()?.block_on(native(target, &args, &screen)),
    }
}

/// The chat over the native protocol.
async fn native(target: &Endpoint, args: &ChatArgs, screen: &Screen) -> Result<i32> {
    let mut client = super::connect(target).await?;
    let joined = client.join(args.name.as_deref(), None).await?;
    let taken = match args.name.as_deref() {
        // In a cluster the name comes qualified by the daemon (`ann@build1`).
        Some(asked)
            if asked
                != joined
                    .name
                    .rsplit_once('@')
                    .map_or(joined.name.as_str(), |(n, _)| n) =>
        {
            format!(" ('{asked}' is another member's name)")
        }
        _ => String::new(),
    };
    screen.print(&format!(
        "* joined as {}{taken} ({}); here: {}",
        joined.name,
        joined.peer,
        roster(&joined.members, &joined.peer, joined.total_members)
    ));
    let (mut input, _raw) = screen.read_input();
    let mut input_open = true;
    let token = joined.resume;
    // The stream position of the last message shown (in a hub cluster), for a resume.
    let mut seen = 0;
    loop {
        tokio::select! {
            event = client.next_event() => match event {
                Ok(Some(event)) => {
                    if let Event::Message { seq, .. } = &event {
                        seen = seen.max(*seq);
                    }
                    if let Some(code) = show(screen, event) {
                        return Ok(code);
                    }
                }
                // Lost without a word (a network failure, a daemon killed): the hub holds
                // this member's place for its grace period.
                Ok(None) | Err(_) => {
                    let lost = match event {
                        Err(e) => e.to_string(),
                        _ => "the daemon closed the connection".to_owned(),
                    };
                    match take_place_again(target, &token, seen, screen, &lost).await {
                        Some(again) => client = again,
                        None => return Ok(1),
                    }
                }
            },
            line = input.recv(), if input_open => match line {
                Some(Input::Line(line)) => {
                    if !command(&mut client, screen, &line).await? {
                        client.leave().await?;
                        return Ok(0);
                    }
                }
                Some(Input::End) | None => {
                    input_open = false;
                    if !args.stay {
                        client.leave().await?;
                        return Ok(0);
                    }
                }
            },
        }
    }
}

/// How long the chat tries to take its place again after its connection was lost (the hub
/// holds a place for its grace period, 13 s unless the daemon says otherwise).
const RECONNECT_FOR: Duration = Duration::from_secs(15);

/// Between two tries.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// Connects to `target` again (never starting a daemon: a new one holds no place) and takes
/// back the member's place with its resume `token`, trying for [`RECONNECT_FOR`]; what
/// came for it meanwhile follows, and in a hub cluster nothing it was shown (up to stream
/// position `seen`) comes again. `None` when that cannot be done, said on the screen.
async fn take_place_again(
    target: &Endpoint,
    token: &str,
    seen: u64,
    screen: &Screen,
    lost: &str,
) -> Option<Client> {
    screen.print(&format!(
        "* {lost}; taking your place again (for up to {} s)",
        RECONNECT_FOR.as_secs()
    ));
    let deadline = tokio::time::Instant::now() + RECONNECT_FOR;
    let mut why = String::new();
    while tokio::time::Instant::now() < deadline {
        match Client::connect(target, crate::CLIENT_NAME).await {
            Ok(mut client) => match client.rejoin(token, (seen > 0).then_some(seen)).await {
                Ok(joined) => {
                    screen.print(&format!("* back as {} ({})", joined.name, joined.peer));
                    return Some(client);
                }
                // The daemon has not seen the old connection end yet: it will.
                Err(ClientError::Refused { message, .. })
                    if message.contains("still connected") =>
                {
                    why = message;
                }
                Err(e) => {
                    screen.print(&format!("* cannot take your place again: {e}"));
                    return None;
                }
            },
            Err(e) => why = e.to_string(),
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
    screen.print(&format!(
        "* could not take your place again within {} s: {why}",
        RECONNECT_FOR.as_secs()
    ));
    None
}

/// Runs one typed line; `false` to leave.
async fn command(client: &mut Client, screen: &Screen, line: &str) -> Result<bool> {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    match word {
        ":exit" => return Ok(false),
        ":help" => screen.print(HELP),
        ":list" => {
            let me = client.welcome().peer.clone();
            let members = client.members().await?;
            let lines: Vec<String> = members
                .iter()
                .map(|m| {
                    let away = if m.away { " (away)" } else { "" };
                    let you = if m.id == me { " (you)" } else { "" };
                    format!("* {}  {}  {}{away}{you}", m.id, m.name, m.dialect)
                })
                .collect();
            screen.print(&lines.join("\n"));
        }
        ":msg" => match rest.trim().split_once(' ') {
            Some((to, text)) if !text.trim().is_empty() => {
                say(client, screen, Some(to), text.trim()).await;
            }
            _ => screen.print("* usage: :msg PEER TEXT"),
        },
        _ if line.trim().is_empty() => {}
        _ if word.starts_with(':') => {
            screen.print(&format!("* unknown command {word}\n{HELP}"));
        }
        _ => say(client, screen, None, line).await,
    }
    Ok(true)
}

/// Sends a message and says what did not reach whom.
async fn say(client: &mut Client, screen: &Screen, to: Option<&str>, text: &str) {
    match client.say(to, text, false).await {
        Ok(said) => {
            for refused in said.refused {
                screen.print(&format!(
                    "* not delivered to {} ({}): {}",
                    refused.name, refused.peer, refused.reason
                ));
            }
            if !said.dropped.is_empty() {
                screen.print(&format!(
                    "* not delivered (their outbox is full): {}",
                    said.dropped.join(" ")
                ));
            }
        }
        Err(e) => screen.print(&format!("* {e}")),
    }
}

/// Shows an event; an exit code when the chat is over.
fn show(screen: &Screen, event: Event) -> Option<i32> {
    match event {
        Event::Message {
            from,
            name,
            sent_ms,
            text,
            direct,
            ..
        } => {
            let to_you = if direct { " (to you)" } else { "" };
            // The daemon's lines look like no member's (no member may go by its name).
            let who = if from == SERVER_PEER {
                format!("[daemon]{to_you}")
            } else {
                format!("{}{to_you}:", visible(&name))
            };
            screen.print(&format!("[{}] {who} {}", clock(sent_ms), visible(&text)));
        }
        Event::Presence {
            name,
            peer,
            dialect,
            joined: true,
            ..
        } => screen.print(&format!("* {} ({peer}, {dialect}) joined", visible(&name))),
        Event::Presence {
            name, peer, reason, ..
        } => screen.print(&format!(
            "* {} ({peer}) left: {}",
            visible(&name),
            visible(&reason)
        )),
        Event::Missed { total, from } => {
            let from: Vec<String> = from
                .iter()
                .map(|m| format!("{} from {} ({})", m.count, visible(&m.name), m.peer))
                .collect();
            screen.print(&format!(
                "* you missed {total} event(s) (your outbox was full): {}",
                from.join(", ")
            ));
        }
        Event::Notice { kind, message } => {
            screen.print(&format!("* {}", visible(&message)));
            if matches!(kind, NoticeKind::Kicked | NoticeKind::ShuttingDown) {
                return Some(1);
            }
        }
        Event::Warning { message } => screen.print(&format!("* {}", visible(&message))),
        Event::Failed { message, .. } => screen.print(&format!("* {}", visible(&message))),
        Event::Output { .. } | Event::Exit { .. } | Event::LogEnd { .. } => {}
    }
    None
}

/// The members other than `me`, for the join line (a large hub's first ones, and how many
/// more there are: its joins and leaves are not announced either).
fn roster(members: &[HubMember], me: &str, total: u64) -> String {
    let others: Vec<String> = members
        .iter()
        .filter(|m| m.id != me)
        .map(|m| format!("{} ({})", m.name, m.id))
        .collect();
    let more = total.saturating_sub(members.len() as u64);
    match (others.is_empty(), more) {
        (true, 0) => "no one else".into(),
        (false, 0) => others.join(", "),
        (_, more) => format!(
            "{} and {more} more (a large hub: joins and leaves are not announced; :list shows everyone)",
            others.join(", ")
        ),
    }
}

/// `HH:MM:SS` (UTC) of a time in milliseconds since the epoch.
fn clock(ms: u64) -> String {
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}
