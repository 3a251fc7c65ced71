//! The HTTP listener end to end: every route of the JSON API and its errors, a job's event
//! stream carrying 100 MiB with every byte checked, the hub's stream with a `ferry chat` peer,
//! `/metrics` parsed and its counters checked against what the test did, `ferry web`, and
//! the security rules (no token, a wrong Host, cross-origin requests, output that looks like
//! HTML).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;

use crate::helper::{wait_until, Daemon};
use crate::http_client::{call, read_head, request, Events, Response};

const PATIENCE: Duration = Duration::from_secs(30);

/// A daemon with a plain HTTP listener on loopback, and the dashboard's URL from `ferry web`.
pub(crate) struct Web {
    pub(crate) daemon: Daemon,
    port: u16,
    /// The daemon's web token (acts for the owner, from this uid).
    token: String,
}

impl Web {
    pub(crate) fn start(extra: &[&str]) -> Web {
        let daemon = Daemon::start_networked(extra, &["http:tcp:127.0.0.1:0"]);
        let port = daemon.listener_port("http:tcp");
        let out = daemon.run(&["web", "--print"]);
        assert!(out.status.success(), "{out:?}");
        let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let prefix = format!("http://127.0.0.1:{port}/?token=");
        let token = url
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("ferry web printed {url:?}, not {prefix}TOKEN"))
            .to_owned();
        Web {
            daemon,
            port,
            token,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        stream
    }

    /// A request as the owner (the web token), with `body` as JSON.
    pub(crate) fn ask(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Response {
        let bytes = request(
            method,
            path,
            &self.host(),
            Some(&self.token),
            &[],
            body.as_ref(),
        );
        call(&mut self.connect(), &bytes)
    }

    /// Runs `argv` through the API; its id.
    fn run(&self, argv: &[&str]) -> u64 {
        let answer = self.ask("POST", "/api/v1/jobs", Some(json!({ "argv": argv })));
        assert_eq!(
            answer.status,
            201,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        answer.json()["id"].as_u64().expect("id")
    }

    /// Opens job `id`'s event stream.
    fn events(&self, id: u64) -> (TcpStream, Events) {
        let mut stream = self.connect();
        let bytes = request(
            "GET",
            &format!("/api/v1/jobs/{id}/events"),
            &self.host(),
            Some(&self.token),
            &[],
            None,
        );
        stream.write_all(&bytes).expect("send");
        let (status, headers) = read_head(&mut stream).expect("head");
        assert_eq!(status, 200);
        assert!(
            headers
                .iter()
                .any(|(n, v)| n == "content-type" && v == "text/event-stream"),
            "{headers:?}"
        );
        (stream, Events::new())
    }

    /// Job `id`'s stdout, stderr and exit event, from its event stream.
    fn output(&self, id: u64) -> (Vec<u8>, Vec<u8>, serde_json::Value) {
        let (mut stream, mut events) = self.events(id);
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(event) = events.next(&mut stream).expect("event") {
            match event.kind.as_str() {
                "stdout" => stdout.extend(event.bytes()),
                "stderr" => stderr.extend(event.bytes()),
                "exit" => return (stdout, stderr, event.json()),
                other => panic!("unexpected event {other}: {}", event.data),
            }
        }
        panic!("the stream ended without an exit event");
    }
}

fn error_message(answer: &Response) -> String {
    answer.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn every_route_of_the_api_answers_and_its_errors_are_json_with_a_status() {
    let web = Web::start(&["--allow-any-command"]);
    let index = web.ask("GET", "/api/v1", None);
    assert_eq!(index.status, 200);
    assert!(index.json()["routes"]
        .as_array()
        .is_some_and(|r| r.len() > 10));

    // Run, then its output, its details, its log ranges.
    let answer = web.ask(
        "POST",
        "/api/v1/jobs",
        Some(json!({ "argv": ["sh", "-c", "printf out; echo err >&2; exit 3"], "label": "api-test" })),
    );
    assert_eq!(answer.status, 201);
    let id = answer.json()["id"].as_u64().expect("id");
    let (stdout, stderr, exit) = web.output(id);
    assert_eq!(stdout, b"out");
    assert_eq!(stderr, b"err\n");
    assert_eq!(exit["exit_code"], 3);
    let details = web.ask("GET", &format!("/api/v1/jobs/{id}"), None).json();
    assert_eq!(details["state"], "failed");
    assert_eq!(details["label"], "api-test");
    assert_eq!(details["stdout_bytes"], 3);
    assert_eq!(details["stderr_bytes"], 4);
    assert_eq!(details["dialect"], "http");
    let range = web.ask(
        "GET",
        &format!("/api/v1/jobs/{id}/log?stream=stdout&offset=1&length=1"),
        None,
    );
    assert_eq!(range.body, b"u");
    assert_eq!(range.header("x-ferry-stream-length"), Some("3"));
    let whole = web.ask("GET", &format!("/api/v1/jobs/{id}/log?stream=stderr"), None);
    assert_eq!(whole.body, b"err\n");

    // The ps filters.
    let listed = |query: &str| -> Vec<u64> {
        let answer = web.ask("GET", &format!("/api/v1/jobs{query}"), None);
        assert_eq!(answer.status, 200, "{query}: {}", error_message(&answer));
        answer.json()["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .filter_map(|j| j["id"].as_u64())
            .collect()
    };
    assert!(listed("?state=failed").contains(&id));
    assert!(!listed("?state=running,queued").contains(&id));
    assert!(listed("?label=api-test").contains(&id));
    assert!(!listed("?label=other").contains(&id));
    assert!(listed("?all=1&state=exited").contains(&id));

    // Kill a running job, then restart it.
    let sleeper = web.run(&["sleep", "30"]);
    let killed = web.ask(
        "POST",
        &format!("/api/v1/jobs/{sleeper}/kill"),
        Some(json!({ "signal": "TERM" })),
    );
    assert_eq!(killed.status, 200, "{}", error_message(&killed));
    let (_, _, exit) = web.output(sleeper);
    assert_eq!(exit["signal"], 15);
    assert_eq!(exit["killed"], true);
    let restarted = web.ask("POST", &format!("/api/v1/jobs/{sleeper}/restart"), None);
    assert_eq!(restarted.status, 201);
    let again = restarted.json()["id"].as_u64().expect("id");
    let details = web
        .ask("GET", &format!("/api/v1/jobs/{again}"), None)
        .json();
    assert_eq!(details["command"], json!(["sleep", "30"]));
    web.ask(
        "POST",
        &format!("/api/v1/jobs/{again}/kill"),
        Some(json!({ "signal": "KILL" })),
    );

    // Peers and the counters.
    let peers = web.ask("GET", "/api/v1/peers", None).json();
    assert!(peers["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .any(|p| p["you"] == true && p["dialect"] == "http"));
    let stats = web.ask("GET", "/api/v1/stats", None).json();
    assert!(stats["jobs_started"].as_u64() >= Some(3), "{stats}");

    // HEAD: the head alone.
    let mut stream = web.connect();
    stream
        .write_all(&request(
            "HEAD",
            "/api/v1/jobs",
            &web.host(),
            Some(&web.token),
            &[],
            None,
        ))
        .expect("send");
    let (status, headers) = read_head(&mut stream).expect("head");
    assert_eq!(status, 200);
    assert!(headers.iter().any(|(n, _)| n == "content-length"));

    // Errors: JSON, with the status.
    for (method, path, body, status, says) in [
        ("GET", "/api/v1/jobs/999999".to_owned(), None, 404, "999999"),
        (
            "GET",
            "/api/v1/jobs/abc".to_owned(),
            None,
            400,
            "not a job id",
        ),
        (
            "GET",
            "/api/v1/nothing".to_owned(),
            None,
            404,
            "no such API",
        ),
        (
            "DELETE",
            "/api/v1/jobs".to_owned(),
            None,
            405,
            "DELETE is not served",
        ),
        (
            "GET",
            "/api/v1/jobs?state=bogus".to_owned(),
            None,
            400,
            "unknown state 'bogus'",
        ),
        (
            "POST",
            "/api/v1/jobs".to_owned(),
            Some(json!({ "argv": [] })),
            400,
            "argv is empty",
        ),
        (
            "POST",
            "/api/v1/jobs".to_owned(),
            Some(json!({ "command": "ls" })),
            400,
            "not the JSON this route takes",
        ),
        (
            "POST",
            format!("/api/v1/jobs/{id}/kill"),
            Some(json!({ "signal": "NOPE" })),
            400,
            "not a signal",
        ),
        (
            "GET",
            format!("/api/v1/jobs/{id}/log?stream=both"),
            None,
            400,
            "stdout or stderr",
        ),
        (
            "POST",
            "/api/v1/peers/nobody/kick".to_owned(),
            None,
            404,
            "no peer",
        ),
    ] {
        let answer = web.ask(method, &path, body);
        assert_eq!(
            answer.status,
            status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_eq!(answer.json()["error"]["status"], status);
        assert!(
            error_message(&answer).contains(says),
            "{method} {path}: {}",
            error_message(&answer)
        );
    }
    web.daemon.assert_serving();
}

#[test]
fn an_event_stream_carries_100_mib_of_output_every_byte_in_order() {
    // A log that stores it all: this (debug) reader may fall behind the live window.
    let web = Web::start(&["--allow-any-command", "--max-log-size", "134217728"]);
    // Random bytes (not UTF-8: base64 events) kept in a file to compare with.
    let id = web.run(&["sh", "-c", "head -c 104857600 /dev/urandom | tee out.bin"]);
    let (mut stream, mut events) = web.events(id);
    let mut got = Vec::with_capacity(100 << 20);
    let mut next_offset = 0u64;
    let exit = loop {
        let event = events
            .next(&mut stream)
            .expect("event")
            .expect("more events");
        match event.kind.as_str() {
            "stdout" => {
                assert_eq!(
                    event.json()["offset"],
                    next_offset,
                    "events in order, none skipped"
                );
                let bytes = event.bytes();
                next_offset += bytes.len() as u64;
                got.extend(bytes);
            }
            "exit" => break event.json(),
            other => panic!("unexpected event {other}: {}", event.data),
        }
    };
    assert_eq!(exit["status"], 0, "{exit}");
    let written =
        std::fs::read(web.daemon.state_dir.join("files").join("out.bin")).expect("the job's copy");
    assert_eq!(written.len(), 100 << 20);
    assert!(
        got == written,
        "the stream's {} bytes differ from the job's {}",
        got.len(),
        written.len()
    );
    // The stream ended whole, and the connection goes on.
    assert!(events.next(&mut stream).expect("end").is_none());
    let again = call(
        &mut stream,
        &request(
            "GET",
            "/api/v1/jobs",
            &web.host(),
            Some(&web.token),
            &[],
            None,
        ),
    );
    assert_eq!(again.status, 200);
}

#[test]
fn text_output_arrives_as_text_with_characters_whole_and_never_as_html() {
    let web = Web::start(&["--allow-any-command"]);
    let script = "printf '<script>alert(1)</script>\\n'; printf 'h\\303'; sleep 0.2; printf '\\251llo \\342\\234'; sleep 0.2; printf '\\223\\n'";
    let id = web.run(&["sh", "-c", script]);
    let (mut stream, mut events) = web.events(id);
    let mut text = String::new();
    while let Some(event) = events.next(&mut stream).expect("event") {
        match event.kind.as_str() {
            "stdout" => text.push_str(event.json()["text"].as_str().expect("text, not base64")),
            "exit" => break,
            other => panic!("{other}"),
        }
    }
    assert_eq!(text, "<script>alert(1)</script>\nhéllo ✓\n");
    // The stored log is served as plain text that no browser may sniff as HTML.
    let log = web.ask("GET", &format!("/api/v1/jobs/{id}/log"), None);
    assert_eq!(
        log.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(log.header("x-content-type-options"), Some("nosniff"));
    assert!(log.body.starts_with(b"<script>"));
    // The page may run its own script alone.
    let page = web.ask("GET", "/", None);
    assert_eq!(page.status, 200);
    let policy = page.header("content-security-policy").expect("a policy");
    assert!(
        policy.contains("script-src 'self'") && policy.contains("default-src 'none'"),
        "{policy}"
    );
    assert!(
        page.headers
            .iter()
            .all(|(n, _)| !n.starts_with("access-control-")),
        "no CORS: {:?}",
        page.headers
    );
}

#[test]
fn requests_without_the_token_from_another_host_or_another_origin_are_refused() {
    let web = Web::start(&["--allow-any-command"]);
    let host = web.host();
    let job = web.run(&["sleep", "30"]);
    let kill = format!("/api/v1/jobs/{job}/kill");
    let send = |bytes: Vec<u8>| call(&mut web.connect(), &bytes);

    // No token, a wrong one.
    let answer = send(request("GET", "/api/v1/jobs", &host, None, &[], None));
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.header("www-authenticate"),
        Some("Bearer realm=\"ferry\"")
    );
    assert!(error_message(&answer).contains("ferry web"));
    assert_eq!(
        send(request("GET", "/metrics", &host, Some("wrong"), &[], None)).status,
        401
    );
    assert_eq!(
        send(request("GET", "/", &host, None, &[], None)).status,
        401
    );

    // A Host that does not name the listener (DNS rebinding).
    for bad in [
        "evil.example",
        "evil.example:80",
        &format!("evil.example:{}", web.port),
        "127.0.0.1:1",
    ] {
        let answer = send(request(
            "GET",
            "/api/v1/jobs",
            bad,
            Some(&web.token),
            &[],
            None,
        ));
        assert_eq!(answer.status, 421, "Host {bad}");
    }
    for good in [
        format!("localhost:{}", web.port),
        format!("[::1]:{}", web.port),
    ] {
        assert_eq!(
            send(request(
                "GET",
                "/api/v1/jobs",
                &good,
                Some(&web.token),
                &[],
                None
            ))
            .status,
            200,
            "{good}"
        );
    }

    // The one-time URL sets an HttpOnly, SameSite=Strict cookie for this port and leaves the
    // address bar.
    let page = send(request(
        "GET",
        &format!("/?token={}", web.token),
        &host,
        None,
        &[],
        None,
    ));
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/"));
    let cookie = page.header("set-cookie").expect("a cookie").to_owned();
    let name = format!("ferry_token_{}", web.port);
    assert!(
        cookie.starts_with(&format!("{name}={}", web.token)),
        "{cookie}"
    );
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let with_cookie = format!("{name}={}", web.token);
    let origin = format!("http://{host}");

    // Reading with the cookie works; changing needs this origin.
    let read = send(request(
        "GET",
        "/api/v1/jobs",
        &host,
        None,
        &[("Cookie", &with_cookie)],
        None,
    ));
    assert_eq!(read.status, 200);
    for fields in [
        vec![("Cookie", with_cookie.as_str())],
        vec![
            ("Cookie", with_cookie.as_str()),
            ("Origin", "http://evil.example"),
        ],
        vec![("Cookie", with_cookie.as_str()), ("Origin", "null")],
        vec![
            ("Cookie", with_cookie.as_str()),
            ("Origin", origin.as_str()),
            ("Sec-Fetch-Site", "cross-site"),
        ],
    ] {
        let answer = send(request("POST", &kill, &host, None, &fields, None));
        assert_eq!(answer.status, 403, "{fields:?}");
        assert!(
            error_message(&answer).contains("cross-origin"),
            "{}",
            error_message(&answer)
        );
    }
    let bearer_cross = send(request(
        "POST",
        &kill,
        &host,
        Some(&web.token),
        &[("Origin", "http://evil.example")],
        None,
    ));
    assert_eq!(bearer_cross.status, 403);
    // Nothing was killed meanwhile.
    assert_eq!(
        web.ask("GET", &format!("/api/v1/jobs/{job}"), None).json()["state"],
        "running"
    );
    let same_origin = send(request(
        "POST",
        &kill,
        &host,
        None,
        &[
            ("Cookie", &with_cookie),
            ("Origin", &origin),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        None,
    ));
    assert_eq!(same_origin.status, 200, "{}", error_message(&same_origin));

    // A configured token acts for its label: the owner's jobs are not its own.
    let label_token = std::fs::read_to_string(web.daemon.tls_dir().join("token")).expect("token");
    let theirs = send(request(
        "GET",
        "/api/v1/jobs",
        &host,
        Some(label_token.trim()),
        &[],
        None,
    ));
    assert_eq!(theirs.status, 200);
    assert_eq!(theirs.json()["jobs"], json!([]));
    let label = Some(label_token.trim());
    let peers = send(request("GET", "/api/v1/peers", &host, label, &[], None));
    assert_eq!(peers.status, 403, "the owner's route");
    // Counts only: a monitoring system scrapes with a token of its own.
    let metrics = send(request(
        "GET",
        "/metrics",
        &host,
        Some(label_token.trim()),
        &[],
        None,
    ));
    assert_eq!(metrics.status, 200);
    web.daemon.assert_serving();
}

#[test]
fn the_hub_stream_meets_a_chat_peer_both_ways_and_hears_the_daemon_go_down() {
    let web = Web::start(&[]);
    let mut stream = web.connect();
    stream
        .write_all(&request(
            "GET",
            "/api/v1/hub/events?name=browser",
            &web.host(),
            Some(&web.token),
            &[],
            None,
        ))
        .expect("send");
    let (status, _) = read_head(&mut stream).expect("head");
    assert_eq!(status, 200);
    let mut events = Events::new();
    let joined = events.next(&mut stream).expect("event").expect("joined");
    assert_eq!(joined.kind, "joined");
    let me = joined.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(joined.json()["name"], "browser");

    let mut chat = crate::hub::chat_from_a_pipe(&web.daemon, "ann");
    let mut next_event = |kind: &str| loop {
        let event = events.next(&mut stream).expect("event").expect("more");
        if event.kind == kind {
            return event.json();
        }
    };
    let presence = next_event("presence");
    assert_eq!(presence["name"], "ann");
    assert_eq!(presence["joined"], true);
    let mut input = chat.stdin.take().expect("stdin");
    writeln!(input, "hello from the terminal").expect("say");
    let message = next_event("message");
    assert_eq!(message["name"], "ann");
    assert_eq!(message["text"], "hello from the terminal");

    // The browser's message reaches the chat.
    let said = web.ask(
        "POST",
        "/api/v1/hub/messages",
        Some(json!({ "as": me, "text": "hello from the browser" })),
    );
    assert_eq!(said.status, 200, "{}", String::from_utf8_lossy(&said.body));
    assert_eq!(said.json()["delivered"], 1);
    let mut chat_out = chat.stdout.take().expect("stdout");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reading = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = chat_out.read(&mut buf) {
            let mut seen = reading.lock().unwrap_or_else(|e| e.into_inner());
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let shown = || seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    wait_until(
        "the chat to print the browser's message",
        PATIENCE,
        || shown().contains("hello from the browser").then_some(()),
        shown,
    );
    // Only a member of one's own may be spoken for.
    let ann = web.ask("GET", "/api/v1/hub/members", None).json()["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["name"] == "ann")
        .and_then(|m| m["id"].as_str().map(str::to_owned))
        .expect("ann listed");
    let forged = web.ask(
        "POST",
        "/api/v1/hub/messages",
        Some(json!({ "as": ann, "text": "not me" })),
    );
    assert_eq!(forged.status, 403);

    // The daemon going down is said on the open stream.
    let out = web.daemon.run(&["shutdown"]);
    assert!(out.status.success(), "{out:?}");
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.contains("event: shutdown") && rest.contains("the ferry daemon is going down"),
        "{rest}"
    );
    drop(input);
    let _ = chat.wait();
}

#[test]
fn metrics_count_what_was_done() {
    let web = Web::start(&["--allow-any-command"]);
    for argv in [&["true"][..], &["false"], &["sh", "-c", "printf 12345"]] {
        let id = web.run(argv);
        web.output(id);
    }
    let sleeper = web.run(&["sleep", "30"]);
    web.ask("POST", &format!("/api/v1/jobs/{sleeper}/kill"), None);
    web.output(sleeper);
    let running = web.run(&["sleep", "30"]);
    // The test's earlier connections are closed by the daemon a moment after the test drops
    // them: scraped once only the scrape's own is open.
    let open = format!(
        "ferry_connections_open{{dialect=\"http\",listener=\"http:tcp:127.0.0.1:{}\"}} ",
        web.port
    );
    let scraped = wait_until(
        "the test's earlier connections to be closed",
        PATIENCE,
        || {
            let scraped = web.ask("GET", "/metrics", None);
            let body = String::from_utf8_lossy(&scraped.body);
            body.lines()
                .any(|line| line == format!("{open}1"))
                .then_some(scraped)
        },
        || String::from_utf8_lossy(&web.ask("GET", "/metrics", None).body).into_owned(),
    );
    assert_eq!(scraped.status, 200);
    assert!(scraped
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")));
    let text = String::from_utf8_lossy(&scraped.body).into_owned();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
            .parse()
            .expect("a number")
    };
    assert_eq!(value("ferry_jobs_submitted_total"), 5.0);
    assert_eq!(value("ferry_jobs_started_total"), 5.0);
    assert_eq!(value("ferry_jobs_ended_total{outcome=\"succeeded\"}"), 2.0);
    assert_eq!(value("ferry_jobs_ended_total{outcome=\"failed\"}"), 1.0);
    assert_eq!(value("ferry_jobs_ended_total{outcome=\"killed\"}"), 1.0);
    assert_eq!(value("ferry_jobs_running{group=\"default\"}"), 1.0);
    assert_eq!(value("ferry_job_run_time_seconds_count"), 4.0);
    assert_eq!(value("ferry_job_run_time_seconds_bucket{le=\"+Inf\"}"), 4.0);
    assert_eq!(value("ferry_output_bytes_total{stream=\"stdout\"}"), 5.0);
    let listener = format!(
        "{{dialect=\"http\",listener=\"http:tcp:127.0.0.1:{}\"}}",
        web.port
    );
    assert!(value(&format!("ferry_connections_accepted_total{listener}")) >= 10.0);
    assert_eq!(value(&format!("ferry_connections_open{listener}")), 1.0);
    assert!(value("ferry_store_commit_seconds_count") >= 1.0);
    assert_eq!(value("ferry_hub_members"), 0.0);
    // Every family has its help and type, and names follow the conventions.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut words = line.split(' ').skip(2);
        let (name, kind) = (
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default(),
        );
        assert!(name.starts_with("ferry_"), "{line}");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no help"
        );
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{line}");
        }
    }
    web.ask("POST", &format!("/api/v1/jobs/{running}/kill"), None);
}

#[test]
fn ferry_web_opens_one_loopback_listener_when_the_daemon_has_none() {
    let daemon = Daemon::start(&[]);
    let url = |daemon: &Daemon| {
        let out = daemon.run(&["web", "--print"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let first = url(&daemon);
    assert_eq!(
        url(&daemon),
        first,
        "the same listener and token the second time"
    );
    let rest = first
        .strip_prefix("http://127.0.0.1:")
        .expect("a loopback URL");
    let (port, token) = rest.split_once("/?token=").expect("a token");
    assert_eq!(token.len(), 64);
    let port: u16 = port.parse().expect("port");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // The owner's dashboard runs any command, as its socket does (no other token exists).
    let host = format!("127.0.0.1:{port}");
    let run = call(
        &mut stream,
        &request(
            "POST",
            "/api/v1/jobs",
            &host,
            Some(token),
            &[],
            Some(&json!({ "argv": ["echo", "hi"] })),
        ),
    );
    assert_eq!(run.status, 201, "{}", String::from_utf8_lossy(&run.body));
    assert!(daemon.log_shows("opened an HTTP listener for the dashboard"));
}
