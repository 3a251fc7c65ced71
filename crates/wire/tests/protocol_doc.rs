//! The byte-exact examples of `docs/protocol.md`: each message encodes to exactly the bytes
//! shown there, those bytes decode back to the message, and the document still shows them.

use ferry_wire::native::*;
use serde_bytes::ByteBuf;

/// Lowercase hex, bytes separated by spaces, as the document prints them.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn client_examples() -> Vec<(&'static str, ClientMessage)> {
    vec![
        (
            "hello",
            ClientMessage::Hello {
                version: 3,
                client: "cli".into(),
                token: None,
            },
        ),
        (
            "run",
            ClientMessage::Run {
                request: 1,
                argv: vec![ByteBuf::from(b"true".to_vec())],
                cwd: None,
                env: None,
                stdin: false,
                timeout_ms: None,
                hangup_on_disconnect: false,
                follow: true,
                sandbox: None,
                pass_stdio: false,
                session: None,
                group: None,
                label: None,
                after: Vec::new(),
                after_any: false,
                tty: None,
            },
        ),
        (
            "stdin",
            ClientMessage::Stdin {
                job: 7,
                data: b"hi\n".to_vec(),
            },
        ),
        ("close-stdin", ClientMessage::CloseStdin { job: 7 }),
        (
            "signal",
            ClientMessage::Signal {
                request: 2,
                job: 7,
                signal: 15,
            },
        ),
        (
            "kick-peers",
            ClientMessage::KickPeers {
                request: 3,
                peer: Some("bM3u6dF2ne".into()),
            },
        ),
        (
            "say",
            ClientMessage::Say {
                request: 4,
                to: None,
                text: "hi".into(),
                as_daemon: false,
            },
        ),
    ]
}

fn daemon_examples() -> Vec<(&'static str, DaemonMessage)> {
    vec![
        (
            "welcome",
            DaemonMessage::Welcome {
                version: 3,
                peer: "R8gTnNYsUl".into(),
                daemon: "ferry".into(),
                capabilities: vec!["jobs".into()],
                max_frame: 16_777_216,
                notice: None,
            },
        ),
        (
            "accepted",
            DaemonMessage::Accepted {
                request: 1,
                job: 7,
                queued: false,
            },
        ),
        (
            "output",
            DaemonMessage::Output {
                job: 7,
                stream: Stream::Stdout,
                offset: 0,
                data: b"hi\n".to_vec(),
            },
        ),
        (
            "exit",
            DaemonMessage::Exit {
                job: 7,
                exit: JobExit {
                    code: Some(0),
                    signal: None,
                    wall_us: 1500,
                    timed_out: false,
                    error: None,
                    killed: false,
                    lost: false,
                },
            },
        ),
        (
            "message",
            DaemonMessage::Message {
                from: "R8gTnNYsUl".into(),
                name: "ann".into(),
                sent_ms: 1_764_169_200_000,
                text: "hi".into(),
                direct: false,
                seq: 0,
            },
        ),
        (
            "error",
            DaemonMessage::Error {
                request: None,
                code: ErrorCode::BadHandshake,
                message: "bad".into(),
            },
        ),
    ]
}

fn encoded<T: serde::Serialize>(message: &T) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_frame(message, &mut bytes).expect("encode");
    bytes
}

/// The hex blocks of `docs/protocol.md`, by name: each is a fenced `hex` block whose first
/// line is `# NAME`.
fn documented_frames() -> std::collections::HashMap<String, Vec<u8>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    let text = std::fs::read_to_string(path).expect("docs/protocol.md");
    let mut frames = std::collections::HashMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```hex" {
            continue;
        }
        let name = lines
            .next()
            .and_then(|l| l.strip_prefix("# "))
            .expect("a hex block starts with '# NAME'")
            .to_owned();
        let mut bytes = Vec::new();
        for line in lines.by_ref() {
            if line.trim() == "```" {
                break;
            }
            for byte in line.split_whitespace() {
                bytes.push(u8::from_str_radix(byte, 16).expect("hex byte"));
            }
        }
        frames.insert(name, bytes);
    }
    frames
}

#[test]
fn every_documented_client_frame_is_exact() {
    let documented = documented_frames();
    for (name, message) in client_examples() {
        let bytes = documented
            .get(name)
            .unwrap_or_else(|| panic!("docs/protocol.md has no '{name}' example"));
        assert_eq!(hex(&encoded(&message)), hex(bytes), "{name}");
        let (decoded, used) = decode_frame::<ClientMessage>(bytes, DEFAULT_MAX_FRAME)
            .expect("decode")
            .expect("whole");
        assert_eq!(used, bytes.len());
        assert_eq!(decoded, message, "{name}");
    }
}

#[test]
fn every_documented_daemon_frame_is_exact() {
    let documented = documented_frames();
    for (name, message) in daemon_examples() {
        let bytes = documented
            .get(name)
            .unwrap_or_else(|| panic!("docs/protocol.md has no '{name}' example"));
        assert_eq!(hex(&encoded(&message)), hex(bytes), "{name}");
        let (decoded, used) = decode_frame::<DaemonMessage>(bytes, DEFAULT_MAX_FRAME)
            .expect("decode")
            .expect("whole");
        assert_eq!(used, bytes.len());
        assert_eq!(decoded, message, "{name}");
    }
}

#[test]
fn the_document_shows_no_example_the_code_does_not_check() {
    let mut names: Vec<String> = documented_frames().into_keys().collect();
    names.sort();
    let mut checked: Vec<String> = client_examples()
        .into_iter()
        .map(|(n, _)| n.to_owned())
        .chain(daemon_examples().into_iter().map(|(n, _)| n.to_owned()))
        .collect();
    checked.sort();
    assert_eq!(names, checked);
}
