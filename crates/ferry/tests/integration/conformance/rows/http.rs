//! The HTTP rows (plain TCP on loopback, and TLS), spoken as a script does: a bearer token,
//! keep-alive requests, pipelined ones, an event stream.

use std::io::Write;

use super::{lossy, Requests, Row, KICKED, TIMED_OUT};
use crate::conformance::{Link, Matrix, Words};
use crate::http_client::{call, read_head, read_response, request, Events};

pub struct Http(pub &'static str);

impl Http {
    fn host(&self, m: &Matrix) -> String {
        format!("127.0.0.1:{}", m.port(self.0))
    }

    /// A request with the matrix's token.
    fn request(
        &self,
        m: &Matrix,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Vec<u8> {
        request(
            method,
            path,
            &self.host(m),
            Some(&m.token),
            &[],
            body.as_ref(),
        )
    }

    /// Starts `argv` on `link`; its job id.
    fn run(&self, m: &Matrix, link: &mut Link, argv: &[&str]) -> Result<u64, String> {
        let asked = self.request(
            m,
            "POST",
            "/api/v1/jobs",
            Some(serde_json::json!({ "argv": argv })),
        );
        let answer = call(link, &asked);
        if answer.status != 201 {
            return Err(format!("{} {}", answer.status, lossy(&answer.body)));
        }
        answer.json()["id"].as_u64().ok_or("no id".into())
    }

    /// Job `id`'s stdout, from its event stream on a connection of its own.
    fn stdout(&self, m: &Matrix, id: u64) -> Result<Vec<u8>, String> {
        let mut link = self.raw(m);
        link.write_all(&self.request(m, "GET", &format!("/api/v1/jobs/{id}/events"), None))
            .map_err(|e| e.to_string())?;
        let (status, _) = read_head(&mut link).map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("status {status}"));
        }
        let mut events = Events::new();
        let mut out = Vec::new();
        while let Some(event) = events.next(&mut link).map_err(|e| e.to_string())? {
            match event.kind.as_str() {
                "stdout" => out.extend(event.bytes()),
                "exit" if event.json()["status"] == 0 => return Ok(out),
                "exit" => return Err(format!("ended: {}", event.data)),
                _ => {}
            }
        }
        Err("the stream ended without the exit".into())
    }
}

/// Checks that an event stream's last event is of `kind` and says `text`.
fn last_event(read: &[u8], kind: &str, text: &str) -> Result<(), String> {
    let read = String::from_utf8_lossy(read);
    let said = read.contains(&format!("event: {kind}\n")) && read.contains(text);
    said.then_some(()).ok_or_else(|| {
        format!(
            "no `{kind}` event saying {text:?} in {:?}",
            read.chars().take(400).collect::<String>()
        )
    })
}

impl Row for Http {
    fn form(&self) -> &'static str {
        self.0
    }

    fn raw(&self, m: &Matrix) -> Link {
        match self.0 {
            "http:tls" => Link::tls(m.port(self.0), &m.tls),
            _ => Link::tcp(m.port(self.0)),
        }
    }

    /// A keep-alive connection whose first request (its authentication) is answered.
    fn connect(&self, m: &Matrix) -> Link {
        let mut link = self.raw(m);
        let answer = call(&mut link, &self.request(m, "GET", "/api/v1/jobs", None));
        assert_eq!(answer.status, 200, "{}", lossy(&answer.body));
        link
    }

    /// The job's request, and an event stream (the hub's) pipelined after it, so that the
    /// connection has something to be told on.
    fn start(&self, m: &Matrix, link: &mut Link, argv: &[String]) -> bool {
        let mut both = self.request(
            m,
            "POST",
            "/api/v1/jobs",
            Some(serde_json::json!({ "argv": argv })),
        );
        both.extend(self.request(m, "GET", "/api/v1/hub/events?name=kicked", None));
        link.write_all(&both).expect("requests");
        true
    }

    fn output(&self, m: &Matrix, argv: &[&str]) -> Option<Vec<u8>> {
        let mut link = self.raw(m);
        let id = self.run(m, &mut link, argv).expect("run");
        Some(self.stdout(m, id).expect("output"))
    }

    fn kicked(&self) -> Words {
        Words::Check(|read| last_event(read, "disconnected", KICKED))
    }

    fn going_down(&self) -> Words {
        Words::Nothing("HTTP has no unsolicited message: an idle keep-alive connection is closed (an open event stream is told, see the http tests)")
    }

    fn slow(&self) -> Option<(&'static [u8], Words)> {
        Some((
            b"GET /api/v1/jobs HTTP/1.1\r\n",
            Words::Says(b"HTTP/1.1 408 ", TIMED_OUT),
        ))
    }

    fn malformed(&self) -> (Vec<u8>, Words, bool) {
        (
            b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ten\r\n\r\n"
                .to_vec(),
            Words::Says(b"HTTP/1.1 400 ", "a Content-Length is one decimal number"),
            true,
        )
    }

    fn requests<'a>(&self, m: &'a Matrix) -> Box<dyn Requests + 'a> {
        Box::new(HttpRequests {
            m,
            row: Http(self.0),
        })
    }

    fn area(&self) -> Option<String> {
        Some("tokens/default".into())
    }

    fn other_principal(&self, m: &Matrix) -> Option<Result<String, String>> {
        let job = match m.owners_job() {
            Ok(job) => job,
            Err(why) => return Some(Err(why)),
        };
        let mut link = self.raw(m);
        let listed = call(&mut link, &self.request(m, "GET", "/api/v1/jobs", None));
        if listed.json()["jobs"]
            .as_array()
            .is_some_and(|jobs| jobs.iter().any(|j| j["id"] == job))
        {
            return Some(Err(format!("the owner's job {job} is listed")));
        }
        let kill = call(
            &mut link,
            &self.request(m, "POST", &format!("/api/v1/jobs/{job}/kill"), None),
        );
        let events = call(
            &mut link,
            &self.request(m, "GET", &format!("/api/v1/jobs/{job}/events"), None),
        );
        m.daemon.run(&["kill", &job.to_string()]);
        if kill.status != 403 || events.status != 403 {
            return Some(Err(format!(
                "kill answered {} ({}), events {}",
                kill.status,
                lossy(&kill.body),
                events.status
            )));
        }
        Some(Ok(
            "the owner's job not listed; kill and its events 403".into()
        ))
    }

    fn not_applicable(&self, guarantee: &str) -> String {
        match guarantee {
            "output cap" => "output streams as events: no answer holds it whole".into(),
            _ => "-".into(),
        }
    }
}

/// Runs `echo split` with a request the test splits and joins; its answer is the job's id,
/// then its output is read on a connection of its own.
struct HttpRequests<'a> {
    m: &'a Matrix,
    row: Http,
}

impl Requests for HttpRequests<'_> {
    fn link(&mut self) -> Link {
        self.row.raw(self.m)
    }

    fn request(&self) -> Vec<u8> {
        self.row.request(
            self.m,
            "POST",
            "/api/v1/jobs",
            Some(serde_json::json!({ "argv": ["echo", "split"] })),
        )
    }

    fn answer(&mut self, link: &mut Link) -> Result<(), String> {
        let answer = read_response(link).map_err(|e| e.to_string())?;
        if answer.status != 201 {
            return Err(format!("{} {}", answer.status, lossy(&answer.body)));
        }
        let id = answer.json()["id"].as_u64().ok_or("no id")?;
        let out = self.row.stdout(self.m, id)?;
        super::split_answer(&out)
    }
}
