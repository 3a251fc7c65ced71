//! A small blocking HTTP/1.1 client for the tests of the HTTP listener: requests written as
//! bytes (so that a test can split, join and break them at will), responses read with their
//! `Content-Length` or chunks, and Server-Sent Events read one at a time.

use std::io::{Read, Write};

use base64::Engine as _;

/// A response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header fields, names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first field named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A request's bytes: `method path`, with `Host: host`, a bearer `token` if given, more
/// `fields`, and a JSON `body` if given.
pub fn request(
    method: &str,
    path: &str,
    host: &str,
    token: Option<&str>,
    fields: &[(&str, &str)],
    body: Option<&serde_json::Value>,
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in fields {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    head.into_bytes()
}

/// Reads bytes up to and with `end`, one at a time (nothing past it is taken from the
/// stream).
fn read_until(stream: &mut impl Read, end: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(end) {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("ended after {:?}", String::from_utf8_lossy(&got)),
            ));
        }
        got.push(byte[0]);
    }
    Ok(got)
}

/// Reads a response's head: its status and fields.
pub fn read_head(stream: &mut impl Read) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let head = read_until(stream, b"\r\n\r\n")?;
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers))
}

/// Reads one chunk of a chunked body (empty at its end).
pub fn read_chunk(stream: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let size_line = read_until(stream, b"\r\n")?;
    let size_text = String::from_utf8_lossy(&size_line);
    let size = usize::from_str_radix(size_text.trim(), 16)
        .map_err(|_| std::io::Error::other(format!("bad chunk size {size_text:?}")))?;
    let mut data = vec![0u8; size + 2];
    stream.read_exact(&mut data)?;
    data.truncate(size);
    Ok(data)
}

/// Reads a whole response (by its length, or its chunks to the end).
pub fn read_response(stream: &mut impl Read) -> std::io::Result<Response> {
    let (status, headers) = read_head(stream)?;
    let field = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if field("transfer-encoding").is_some_and(|v| v == "chunked") {
        loop {
            let chunk = read_chunk(stream)?;
            if chunk.is_empty() {
                break;
            }
            body.extend(chunk);
        }
    } else {
        let length: usize = field("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        body.resize(length, 0);
        stream.read_exact(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Sends a request and reads its response.
pub fn call<S: Read + Write>(stream: &mut S, request: &[u8]) -> Response {
    stream.write_all(request).expect("send the request");
    read_response(stream).expect("read the response")
}

/// Server-Sent Events read from a chunked body as they come.
pub struct Events {
    buffer: Vec<u8>,
    /// The body ended.
    pub ended: bool,
}

/// One event: its type and its data.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: String,
    pub data: String,
}

impl Event {
    /// The data as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {:?}", self.data))
    }

    /// The bytes an output event carries (text or base64).
    pub fn bytes(&self) -> Vec<u8> {
        let data = self.json();
        if let Some(text) = data["text"].as_str() {
            return text.as_bytes().to_vec();
        }
        let b64 = data["base64"].as_str().unwrap_or_default();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64")
    }
}

impl Events {
    /// Events of a stream whose head was read.
    pub fn new() -> Events {
        Events {
            buffer: Vec::new(),
            ended: false,
        }
    }

    /// The next event, or `None` once the body ended.
    pub fn next(&mut self, stream: &mut impl Read) -> std::io::Result<Option<Event>> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let mut kind = String::from("message");
                let mut data = Vec::new();
                for line in text.lines() {
                    if let Some(k) = line.strip_prefix("event: ") {
                        kind = k.to_owned();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push(d.to_owned());
                    }
                }
                if data.is_empty() {
                    continue; // a comment (keep-alive)
                }
                return Ok(Some(Event {
                    kind,
                    data: data.join("\n"),
                }));
            }
            if self.ended {
                return Ok(None);
            }
            let chunk = read_chunk(stream)?;
            if chunk.is_empty() {
                self.ended = true;
            }
            self.buffer.extend(chunk);
        }
    }
}
