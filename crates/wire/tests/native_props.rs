//! Property tests for the native frame codec: every message round-trips, a frame split at any
//! point decodes the same once whole, concatenated frames decode in order, and no input panics.

use ferry_wire::native::*;
use proptest::prelude::*;
use serde_bytes::ByteBuf;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn byte_bufs() -> impl Strategy<Value = Vec<ByteBuf>> {
    proptest::collection::vec(bytes(16).prop_map(ByteBuf::from), 0..4)
}

fn job_exit() -> impl Strategy<Value = JobExit> {
    (
        any::<Option<i32>>(),
        any::<Option<i32>>(),
        any::<u64>(),
        any::<bool>(),
        any::<Option<String>>(),
        any::<(bool, bool)>(),
    )
        .prop_map(
            |(code, signal, wall_us, timed_out, error, (killed, lost))| JobExit {
                code,
                signal,
                wall_us,
                timed_out,
                error,
                killed,
                lost,
            },
        )
}

fn job_info() -> impl Strategy<Value = JobInfo> {
    (
        any::<u64>(),
        prop_oneof![
            Just(JobState::Queued),
            Just(JobState::Running),
            Just(JobState::Finished),
            Just(JobState::Paused),
            Just(JobState::DependencyFailed),
            Just(JobState::Lost)
        ],
        byte_bufs(),
        any::<Option<u32>>(),
        any::<u64>(),
        any::<Option<u64>>(),
        any::<u64>(),
        (
            proptest::option::of(job_exit()),
            any::<u64>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                id,
                state,
                argv,
                pid,
                submitted_ms,
                started_ms,
                run_us,
                (exit, unstored_bytes, no_log),
            )| {
                JobInfo {
                    id,
                    state,
                    argv,
                    pid,
                    submitted_ms,
                    started_ms,
                    run_us,
                    exit,
                    unstored_bytes,
                    principal: "token:ci".into(),
                    no_log,
                    group: if no_log { "default" } else { "builds" }.into(),
                    label: started_ms.map(|ms| format!("label {ms}")),
                    after: pid.map(u64::from).into_iter().collect(),
                    paused_us: run_us / 2,
                    ended_ms: started_ms.map(|ms| ms.saturating_add(run_us)),
                }
            },
        )
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (any::<u32>(), ".{0,8}", any::<Option<String>>()).prop_map(|(version, client, token)| {
            ClientMessage::Hello {
                version,
                client,
                token,
            }
        }),
        (
            any::<u64>(),
            byte_bufs(),
            proptest::option::of(bytes(8).prop_map(ByteBuf::from)),
            proptest::option::of(proptest::collection::vec(
                (
                    bytes(8).prop_map(ByteBuf::from),
                    bytes(8).prop_map(ByteBuf::from)
                ),
                0..3
            )),
            any::<(bool, Option<u64>, bool, bool)>(),
            any::<bool>(),
            proptest::option::of("[a-z0-9]{0,8}"),
        )
            .prop_map(
                |(
                    request,
                    argv,
                    cwd,
                    env,
                    (stdin, timeout_ms, hangup, follow),
                    pass_stdio,
                    session,
                )| {
                    ClientMessage::Run {
                        request,
                        argv,
                        cwd,
                        env,
                        stdin,
                        timeout_ms,
                        hangup_on_disconnect: hangup,
                        follow,
                        sandbox: None,
                        pass_stdio,
                        group: session.clone(),
                        label: session.clone().filter(|_| follow),
                        after: timeout_ms.into_iter().collect(),
                        after_any: stdin && follow,
                        tty: pass_stdio.then(|| TtySize {
                            rows: 24,
                            cols: 80,
                            term: Some("xterm".into()),
                        }),
                        session,
                    }
                }
            ),
        (any::<u64>(), bytes(64)).prop_map(|(job, data)| ClientMessage::Stdin { job, data }),
        any::<u64>().prop_map(|job| ClientMessage::CloseStdin { job }),
        any::<(u64, u64, bool, bool)>().prop_map(|(request, job, replay, follow)| {
            ClientMessage::Attach {
                request,
                job,
                replay,
                follow,
            }
        }),
        any::<(u64, bool)>().prop_map(|(request, all)| ClientMessage::ListJobs { request, all }),
        (any::<u64>(), any::<Option<u64>>(), any::<Option<u64>>()).prop_map(
            |(request, older_than_ms, keep)| ClientMessage::Prune {
                request,
                older_than_ms,
                keep
            }
        ),
        any::<(u64, u64, i32)>().prop_map(|(request, job, signal)| ClientMessage::Signal {
            request,
            job,
            signal
        }),
        any::<u64>().prop_map(|request| ClientMessage::Shutdown { request }),
        (any::<u64>(), bytes(16), any::<u64>(), any::<u32>()).prop_map(
            |(request, path, size, mode)| {
                ClientMessage::PutStart {
                    request,
                    path: ByteBuf::from(path),
                    size,
                    mode,
                }
            }
        ),
        (any::<u64>(), bytes(64))
            .prop_map(|(request, data)| ClientMessage::PutData { request, data }),
        (any::<u64>(), bytes(32)).prop_map(|(request, sha)| ClientMessage::PutEnd {
            request,
            checksum: ByteBuf::from(sha)
        }),
        (any::<u64>(), bytes(16)).prop_map(|(request, path)| ClientMessage::Get {
            request,
            path: ByteBuf::from(path)
        }),
        (any::<u64>(), proptest::option::of(bytes(16))).prop_map(|(request, cwd)| {
            ClientMessage::SessionNew {
                request,
                cwd: cwd.map(ByteBuf::from),
            }
        }),
        (any::<u64>(), ".{0,8}")
            .prop_map(|(request, session)| ClientMessage::SessionState { request, session }),
        (any::<u64>(), ".{0,8}")
            .prop_map(|(request, session)| ClientMessage::SessionClose { request, session }),
        any::<u64>().prop_map(|request| ClientMessage::ListPeers { request }),
        (any::<u64>(), proptest::option::of(".{0,12}"))
            .prop_map(|(request, peer)| ClientMessage::KickPeers { request, peer }),
        (
            any::<u64>(),
            proptest::option::of(".{0,12}"),
            proptest::option::of("[0-9a-f]{32}"),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(request, name, resume, seen)| ClientMessage::Join {
                request,
                name,
                resume,
                seen
            }),
        (
            any::<u64>(),
            proptest::option::of(".{0,12}"),
            ".{0,64}",
            any::<bool>()
        )
            .prop_map(|(request, to, text, as_daemon)| ClientMessage::Say {
                request,
                to,
                text,
                as_daemon
            }),
        any::<u64>().prop_map(|request| ClientMessage::Members { request }),
        any::<u64>().prop_map(|request| ClientMessage::Leave { request }),
        any::<u64>().prop_map(|nonce| ClientMessage::Pong { nonce }),
        any::<u64>().prop_map(|request| ClientMessage::Cost { request }),
        (any::<u64>(), bytes(16), bytes(16)).prop_map(|(request, from, to)| ClientMessage::Link {
            request,
            from,
            to
        }),
        (any::<u64>(), bytes(16), any::<bool>()).prop_map(|(request, path, recursive)| {
            ClientMessage::Remove {
                request,
                path,
                recursive,
            }
        }),
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(request, job, follow)| {
            ClientMessage::Restart {
                request,
                job,
                follow,
            }
        }),
        (
            any::<u64>(),
            proptest::option::of(any::<u64>()),
            proptest::option::of("[a-z0-9._-]{0,12}"),
            any::<bool>()
        )
            .prop_map(|(request, job, group, pause)| if pause {
                ClientMessage::Pause {
                    request,
                    job,
                    group,
                }
            } else {
                ClientMessage::Resume {
                    request,
                    job,
                    group,
                }
            }),
        (any::<u64>(), any::<u64>(), any::<bool>())
            .prop_map(|(request, job, env)| ClientMessage::Show { request, job, env }),
        (any::<u64>(), ".{0,12}", any::<u64>(), 0u8..3).prop_map(
            |(request, name, parallel, action)| ClientMessage::Group {
                request,
                name,
                action: match action {
                    0 => GroupAction::Add { parallel },
                    1 => GroupAction::Set { parallel },
                    _ => GroupAction::Remove,
                },
            }
        ),
        any::<u64>().prop_map(|request| ClientMessage::ListGroups { request }),
        any::<(u64, u16, u16)>().prop_map(|(job, rows, cols)| ClientMessage::Resize {
            job,
            size: TtySize {
                rows,
                cols,
                term: None
            }
        }),
    ]
}

fn peer_info() -> impl Strategy<Value = PeerInfo> {
    (
        (".{0,12}", ".{0,8}", ".{0,16}", "[a-z0-9]{0,6}"),
        any::<(u64, u64, u64, u64, u64)>(),
        proptest::collection::vec(any::<u64>(), 0..4),
        any::<bool>(),
    )
        .prop_map(
            |(
                (id, name, address, dialect),
                (connected_ms, jobs_started, used, room, dropped),
                jobs,
                you,
            )| {
                PeerInfo {
                    id,
                    name,
                    address,
                    dialect,
                    principal: "cert:alice".into(),
                    connected_ms,
                    jobs_started,
                    jobs,
                    outbox: (used, room),
                    dropped_events: dropped,
                    you,
                    member: used % 2 == 0,
                    away: room % 2 == 0,
                }
            },
        )
}

fn hub_member() -> impl Strategy<Value = HubMember> {
    (
        ".{0,12}",
        ".{0,12}",
        "[a-z0-9]{0,6}",
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(id, name, dialect, since_ms, away)| HubMember {
            id,
            name,
            dialect,
            since_ms,
            away,
        })
}

fn daemon_message() -> impl Strategy<Value = DaemonMessage> {
    prop_oneof![
        (
            any::<u32>(),
            "[a-zA-Z0-9]{10,16}",
            ".{0,8}",
            any::<u64>(),
            proptest::option::of(".{0,24}")
        )
            .prop_map(|(version, peer, daemon, max_frame, notice)| {
                DaemonMessage::Welcome {
                    version,
                    peer,
                    daemon,
                    capabilities: vec!["jobs".into()],
                    max_frame,
                    notice,
                }
            }),
        any::<(u64, u64, bool)>().prop_map(|(request, job, queued)| DaemonMessage::Accepted {
            request,
            job,
            queued
        }),
        (any::<u64>(), job_info())
            .prop_map(|(request, info)| DaemonMessage::Attached { request, info }),
        (any::<u64>(), any::<bool>(), any::<u64>(), bytes(256)).prop_map(
            |(job, err, offset, data)| DaemonMessage::Output {
                job,
                stream: if err { Stream::Stderr } else { Stream::Stdout },
                offset,
                data,
            }
        ),
        (any::<u64>(), job_exit()).prop_map(|(job, exit)| DaemonMessage::Exit { job, exit }),
        any::<(u64, u64)>().prop_map(|(request, job)| DaemonMessage::LogEnd { request, job }),
        (
            any::<u64>(),
            proptest::collection::vec(job_info(), 0..3),
            any::<bool>()
        )
            .prop_map(|(request, jobs, more)| DaemonMessage::Jobs {
                request,
                jobs,
                more
            }),
        any::<u64>().prop_map(|request| DaemonMessage::Done { request }),
        (any::<Option<u64>>(), ".{0,16}").prop_map(|(request, message)| DaemonMessage::Error {
            request,
            code: ErrorCode::BadFrame,
            message,
        }),
        (any::<bool>(), ".{0,16}").prop_map(|(kicked, message)| DaemonMessage::Notice {
            kind: if kicked {
                NoticeKind::Kicked
            } else {
                NoticeKind::ShuttingDown
            },
            message
        }),
        (
            any::<u64>(),
            proptest::collection::vec(peer_info(), 0..3),
            any::<(u64, u64, u64, u64, u64, u64, u64, u64)>(),
            any::<u64>()
        )
            .prop_map(|(request, peers, c, unannounced)| DaemonMessage::Peers {
                request,
                peers,
                hub: HubCounters {
                    messages: c.0,
                    deliveries: c.1,
                    refused: c.2,
                    dropped: c.3,
                    slow_disconnects: c.4,
                    ping_timeouts: c.5,
                    resumed: c.6,
                    expired: c.7,
                    unannounced,
                },
                cluster: (c.0 % 2 == 1).then(|| HubCluster {
                    node: "b1".into(),
                    connected: c.1 % 2 == 0,
                    position: c.2,
                    daemons: vec![HubClusterDaemon {
                        node: "b2".into(),
                        gone: true,
                        members: c.3,
                        held: c.4,
                    }],
                    published: c.5,
                    unpublished: c.6,
                    undecodable: c.7,
                    ignored: unannounced,
                    missed: request,
                }),
            }),
        (
            any::<u64>(),
            ".{0,12}",
            ".{0,12}",
            "[0-9a-f]{32}",
            proptest::collection::vec(hub_member(), 0..3),
            any::<(u64, u64)>()
        )
            .prop_map(
                |(request, peer, name, resume, members, (missed, total_members))| {
                    DaemonMessage::Joined {
                        request,
                        peer,
                        name,
                        resume,
                        members,
                        missed,
                        total_members,
                    }
                }
            ),
        (
            any::<(u64, u64)>(),
            proptest::collection::vec((".{0,8}", ".{0,8}", ".{0,24}"), 0..3),
            proptest::collection::vec(".{0,12}", 0..3)
        )
            .prop_map(
                |((request, delivered), refused, dropped)| DaemonMessage::Said {
                    request,
                    delivered,
                    refused: refused
                        .into_iter()
                        .map(|(peer, name, reason)| Undelivered { peer, name, reason })
                        .collect(),
                    dropped,
                }
            ),
        (any::<u64>(), proptest::collection::vec(hub_member(), 0..3))
            .prop_map(|(request, members)| DaemonMessage::Members { request, members }),
        (
            ".{0,12}",
            ".{0,12}",
            any::<u64>(),
            ".{0,64}",
            any::<bool>(),
            any::<u64>()
        )
            .prop_map(
                |(from, name, sent_ms, text, direct, seq)| DaemonMessage::Message {
                    from,
                    name,
                    sent_ms,
                    text,
                    direct,
                    seq
                }
            ),
        (
            ".{0,12}",
            ".{0,12}",
            "[a-z0-9]{0,6}",
            any::<bool>(),
            ".{0,24}"
        )
            .prop_map(
                |(peer, name, dialect, joined, reason)| DaemonMessage::Presence {
                    peer,
                    name,
                    dialect,
                    joined,
                    reason
                }
            ),
        (
            any::<u64>(),
            proptest::collection::vec((".{0,12}", ".{0,12}", any::<u64>()), 0..3)
        )
            .prop_map(|(total, from)| DaemonMessage::Missed {
                total,
                from: from
                    .into_iter()
                    .map(|(peer, name, count)| MissedFrom { peer, name, count })
                    .collect()
            }),
        any::<u64>().prop_map(|nonce| DaemonMessage::Ping { nonce }),
        any::<(u64, u64, u64, u64, u64)>().prop_map(|(request, cost, running, queued, slots)| {
            DaemonMessage::Cost {
                request,
                cost,
                running,
                queued,
                slots,
            }
        }),
        (any::<u64>(), proptest::collection::vec(".{0,12}", 0..3))
            .prop_map(|(request, peers)| DaemonMessage::Kicked { request, peers }),
        (
            any::<u64>(),
            proptest::collection::vec((bytes(12), any::<u64>(), any::<u64>()), 0..3),
            proptest::collection::vec((bytes(12), "[a-z ]{0,16}"), 0..3),
        )
            .prop_map(|(request, files, others)| DaemonMessage::Listing {
                request,
                entries: files
                    .into_iter()
                    .map(|(path, size, mtime_ns)| FileEntry {
                        path: ByteBuf::from(path),
                        size,
                        mtime_ns,
                    })
                    .collect(),
                others: others
                    .into_iter()
                    .map(|(path, kind)| OtherEntry {
                        path: ByteBuf::from(path),
                        kind,
                    })
                    .collect(),
            }),
        any::<(u64, u64, u32)>().prop_map(|(request, size, mode)| DaemonMessage::FileStart {
            request,
            size,
            mode
        }),
        (any::<u64>(), bytes(64))
            .prop_map(|(request, data)| DaemonMessage::FileData { request, data }),
        (any::<u64>(), bytes(32)).prop_map(|(request, sha)| DaemonMessage::FileEnd {
            request,
            checksum: ByteBuf::from(sha)
        }),
        (any::<u64>(), ".{0,8}")
            .prop_map(|(request, session)| DaemonMessage::SessionReady { request, session }),
        any::<(u64, u64, u64)>().prop_map(|(request, jobs, bytes)| DaemonMessage::Pruned {
            request,
            jobs,
            bytes
        }),
        (
            any::<u64>(),
            bytes(16),
            any::<i32>(),
            byte_bufs(),
            byte_bufs()
        )
            .prop_map(|(request, cwd, status, changed, unset)| {
                DaemonMessage::SessionInfo {
                    request,
                    cwd: ByteBuf::from(cwd),
                    status,
                    changed,
                    unset,
                }
            }),
    ]
}

proptest! {
    /// A reader bounded by `message_len_at_least` never reads past a frame's end, and knows
    /// the whole length once the header is in.
    #[test]
    fn the_least_length_never_passes_the_frame_end(message in client_message()) {
        use ferry_wire::Decoder;
        let mut buf = Vec::new();
        encode_frame(&message, &mut buf).expect("encode");
        let decoder = NativeDecoder::<ClientMessage>::new(usize::MAX);
        for have in 0..buf.len() {
            let least = decoder.message_len_at_least(&buf[..have]);
            prop_assert!(least > have && least <= buf.len(), "{} of {}", have, buf.len());
            if have >= FRAME_HEADER_LEN {
                prop_assert_eq!(least, buf.len());
            }
        }
    }

    #[test]
    fn client_messages_roundtrip(message in client_message()) {
        let mut buf = Vec::new();
        encode_frame(&message, &mut buf).unwrap();
        let (decoded, used) = decode_frame::<ClientMessage>(&buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(decoded, message);
    }

    #[test]
    fn daemon_messages_roundtrip(message in daemon_message()) {
        let mut buf = Vec::new();
        encode_frame(&message, &mut buf).unwrap();
        let (decoded, used) = decode_frame::<DaemonMessage>(&buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(decoded, message);
    }

    #[test]
    fn split_frames_decode_once_whole(messages in proptest::collection::vec(client_message(), 1..5),
                                      cut in any::<prop::sample::Index>()) {
        let mut buf = Vec::new();
        for m in &messages {
            encode_frame(m, &mut buf).unwrap();
        }
        let cut = cut.index(buf.len() + 1);
        // Feed the stream in two parts, as a socket might deliver it.
        let mut pending = buf[..cut].to_vec();
        let mut rest = &buf[cut..];
        let mut decoded = Vec::new();
        loop {
            match decode_frame::<ClientMessage>(&pending, DEFAULT_MAX_FRAME).unwrap() {
                Some((m, used)) => {
                    decoded.push(m);
                    pending.drain(..used);
                }
                None if !rest.is_empty() => {
                    pending.extend_from_slice(rest);
                    rest = &[];
                }
                None => break,
            }
        }
        prop_assert!(pending.is_empty());
        prop_assert_eq!(decoded, messages);
    }

    #[test]
    fn output_head_plus_data_is_the_whole_frame(job in any::<u64>(), err in any::<bool>(),
                                                offset in any::<u64>(),
                                                len in prop_oneof![0usize..30, 200usize..300, 65_000usize..70_000]) {
        let stream = if err { Stream::Stderr } else { Stream::Stdout };
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut whole = Vec::new();
        encode_frame(&DaemonMessage::Output { job, stream, offset, data: data.clone() }, &mut whole).unwrap();
        let mut head = Vec::new();
        encode_output_head(job, stream, offset, data.len(), &mut head).unwrap();
        head.extend_from_slice(&data);
        prop_assert_eq!(head, whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic(buf in bytes(512), max in 0usize..1024) {
        let _ = decode_frame::<ClientMessage>(&buf, max);
        let _ = decode_frame::<DaemonMessage>(&buf, max);
    }

    #[test]
    fn length_over_limit_is_refused(len in 1025u32.., tail in bytes(16)) {
        let mut buf = len.to_be_bytes().to_vec();
        buf.extend_from_slice(&tail);
        let refused = matches!(decode_frame::<ClientMessage>(&buf, 1024), Err(WireError::FrameTooLarge { .. }));
        prop_assert!(refused);
    }
}
