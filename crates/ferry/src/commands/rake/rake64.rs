//! `ferry rake --wire rake64`: the client side of the distributed rake's protocol, for rake64 servers
//! (ferry's own `rake64` listener, or the rake authors' server): `!E` cost polls, `!R` and a
//! filestream for requirements, `!C` commands, `!S`/`!F` replies, files back through the
//! filestream. Every connection ends with `!D` (the authors' server spins on a connection
//! closed without it). The file count of a filestream we send is in its `!SSIF` header (the
//! authors' form, which ferry's server also takes); text payloads count characters (see
//! `rake64::text_len`), file contents bytes.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ferry_client::Stream;
use ferry_wire::rake64::{
    bytes_of_chars, count_payload_len, decode_header, file_count, text_len, Code, Header, Options,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::output::Printer;
use crate::landing::{Landed, Landing, Refused};

/// How long a lone code waits for padding before it is taken alone.
const QUIET: Duration = Duration::from_millis(50);

/// How long the payload of a seed-form `!SSIF` may take.
const COUNT_WAIT: Duration = Duration::from_millis(50);

/// One connection to a rake64 server.
pub struct Rake64 {
    stream: TcpStream,
    buf: Vec<u8>,
    /// How long a reply may take (the authors' server never answers a command it cannot
    /// start).
    reply_wait: Duration,
}

/// How a command ended on a rake64 server.
pub struct Ended {
    /// Its exit code (0 on `!S`).
    pub code: i32,
    /// Bytes of requirements sent.
    pub sent: u64,
    /// Bytes of files received.
    pub received: u64,
    /// Files sent back that may not land: the action fails with them.
    pub refused: Vec<Refused>,
}

impl Rake64 {
    /// Connects to `address` (`HOST:PORT`).
    pub async fn connect(address: &str, reply_wait: Duration) -> Result<Rake64> {
        let stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("cannot connect to {address}"))?;
        Ok(Rake64 {
            stream,
            buf: Vec::new(),
            reply_wait,
        })
    }

    /// Reads more bytes within `limit`; `false` when none came in time.
    async fn fill(&mut self, limit: Duration) -> Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(limit, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) => bail!("the server closed the connection"),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Ok(false),
        }
    }

    /// The next header, waiting at most `limit` for it to begin.
    async fn header(&mut self, limit: Duration) -> Result<Header> {
        self.header_or_lone(limit, false).await
    }

    /// The next header; with `request`, a filestream request is expected, and two bytes of a
    /// code are taken at once (its padding, if any, is skipped later).
    async fn header_or_lone(&mut self, limit: Duration, request: bool) -> Result<Header> {
        let mut lone = request;
        loop {
            if let Some((header, used)) = decode_header(&self.buf, lone)? {
                self.buf.drain(..used);
                return Ok(header);
            }
            let waiting_lone = self.buf.iter().filter(|b| **b != b' ').count() == 2;
            let wait = if waiting_lone { QUIET } else { limit };
            if !self.fill(wait).await? {
                if waiting_lone {
                    lone = true;
                } else {
                    bail!(
                        "no answer within {}s (a rake64 server may not answer a command it cannot start)",
                        limit.as_secs()
                    );
                }
            }
        }
    }

    /// The next text payload of `chars` characters (see `rake64::text_len`).
    async fn text(&mut self, chars: u64) -> Result<Vec<u8>> {
        loop {
            if let Some(len) = bytes_of_chars(&self.buf, chars) {
                return Ok(self.buf.drain(..len).collect());
            }
            if !self.fill(self.reply_wait).await? {
                bail!("the server stopped in the middle of a payload");
            }
        }
    }

    async fn send(&mut self, header: Header, payload: &[u8]) -> Result<()> {
        self.stream.write_all(&header.encode()).await?;
        self.stream.write_all(payload).await?;
        Ok(())
    }

    /// Says goodbye (`!D`), as every connection must.
    pub async fn close(mut self) {
        let _ = self
            .stream
            .write_all(&Header::new(Code::Disconnect, None).encode())
            .await;
        let _ = self.stream.shutdown().await;
    }

    /// The server's cost.
    pub async fn cost(&mut self) -> Result<u64> {
        self.send(Header::new(Code::Cost, None), b"").await?;
        let header = self.header(self.reply_wait).await?;
        if header.code != Code::Cost {
            bail!("a cost poll was answered {header}");
        }
        let text = self.text(header.length.unwrap_or(0)).await?;
        String::from_utf8_lossy(&text)
            .trim()
            .parse()
            .map_err(|_| anyhow!("the cost is not a number"))
    }

    /// Sends `files` (relative to `dir`) as requirements.
    async fn requirements(&mut self, dir: &Path, files: &[String]) -> Result<u64> {
        self.send(Header::new(Code::Requirements, None), b"")
            .await?;
        let meta = Header {
            options: Options {
                stdout: true,
                incoming: true,
                filestream: true,
            },
            ..Header::new(Code::Success, Some(files.len() as u64))
        };
        self.send(meta, b"").await?;
        let mut sent = 0;
        for name in files {
            let data =
                std::fs::read(dir.join(name)).with_context(|| format!("required file {name}"))?;
            let size = data.len().to_string();
            for (asked, payload) in [(Code::Name, name.as_bytes()), (Code::Size, size.as_bytes())] {
                let request = self.header_or_lone(self.reply_wait, true).await?;
                if request.code != asked {
                    bail!(
                        "the server asked {request}, not !{}",
                        asked.letter() as char
                    );
                }
                let answer = Header::filestream_answer(asked, text_len(payload));
                self.send(answer, payload).await?;
            }
            let request = self.header_or_lone(self.reply_wait, true).await?;
            if request.code != Code::Transfer {
                bail!("the server asked {request}, not !T");
            }
            self.stream.write_all(&data).await?;
            sent += data.len() as u64;
        }
        Ok(sent)
    }

    /// Receives a filestream into `landing`; the bytes received. A file that may not land
    /// (see [`Landing`]) is read and dropped, and said in `refused`, so that the stream stays
    /// in step and the others land.
    async fn receive_files(
        &mut self,
        landing: &Landing,
        refused: &mut Vec<Refused>,
    ) -> Result<u64> {
        let meta = self.header(self.reply_wait).await?;
        if meta.code != Code::Success || !meta.options.filestream {
            bail!("expected the filestream's !SSIF header, not {meta}");
        }
        let announced = meta.length.unwrap_or(0);
        // The seed's form sends the count as a payload; the authors' puts it in the header
        // and sends nothing more until asked: wait briefly for a payload.
        while self.buf.len() < count_payload_len(announced) && self.fill(COUNT_WAIT).await? {}
        let (count, used) = file_count(announced, &self.buf);
        self.buf.drain(..used);
        let mut received = 0;
        for _ in 0..count {
            let name = self.ask(Code::Name).await?;
            let size = self.ask(Code::Size).await?;
            let size: u64 = String::from_utf8_lossy(&size)
                .trim()
                .parse()
                .map_err(|_| anyhow!("the server sent a size that is not a number"))?;
            let mut landed = match landing.create(&name) {
                Ok(landed) => Some(landed),
                Err(refusal) => {
                    refused.push(refusal);
                    None
                }
            };
            self.send(Header::new(Code::Transfer, None), b"").await?;
            let head = self.payload_into(size, &mut landed, refused).await?;
            // The wire carries no mode: a program (an ELF binary, a script) is made executable,
            // so that a later action can run what an earlier one built.
            let program = head.starts_with(b"\x7fELF") || head.starts_with(b"#!");
            if let Some(landed) = landed {
                if let Err(refusal) = landed.commit(if program { 0o755 } else { 0o644 }) {
                    refused.push(refusal);
                }
            }
            received += size;
        }
        Ok(received)
    }

    /// Reads a payload of `len` bytes into `sink` (dropping it when there is none, or when
    /// writing fails: that is said in `refused`); its first bytes.
    async fn payload_into(
        &mut self,
        len: u64,
        sink: &mut Option<Landed>,
        refused: &mut Vec<Refused>,
    ) -> Result<Vec<u8>> {
        let mut head = Vec::new();
        let mut left = len;
        loop {
            let take = self
                .buf
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let chunk = &self.buf[..take];
            if head.len() < 4 {
                head.extend_from_slice(&chunk[..chunk.len().min(4 - head.len())]);
            }
            if let Some(landed) = sink {
                if let Err(e) = landed.write_all(chunk) {
                    refused.push(landed.failed(e));
                    *sink = None;
                }
            }
            self.buf.drain(..take);
            left -= take as u64;
            if left == 0 {
                return Ok(head);
            }
            if !self.fill(self.reply_wait).await? {
                bail!("the server stopped in the middle of a file");
            }
        }
    }

    /// Asks for a file's name or size; the answer's payload.
    async fn ask(&mut self, code: Code) -> Result<Vec<u8>> {
        self.send(Header::new(code, None), b"").await?;
        let answer = self.header(self.reply_wait).await?;
        if answer.answers != Some(code) {
            bail!(
                "asked !{}, the server answered {answer}",
                code.letter() as char
            );
        }
        self.text(answer.length.unwrap_or(0)).await
    }

    /// Runs one action: requirements, command, output, files back.
    pub async fn run(
        &mut self,
        dir: &Path,
        landing: &Landing,
        command: &str,
        requires: &[String],
        printer: &mut Printer,
    ) -> Result<Ended> {
        let sent = if requires.is_empty() {
            0
        } else {
            self.requirements(dir, requires).await?
        };
        self.send(
            Header::new(Code::Command, Some(text_len(command.as_bytes()))),
            command.as_bytes(),
        )
        .await?;
        let reply = self.header(self.reply_wait).await?;
        match reply.code {
            Code::Success => {
                let stdout = self.text(reply.length.unwrap_or(0)).await?;
                printer.write(Stream::Stdout, &stdout);
                printer.finish();
                let mut refused = Vec::new();
                let received = if reply.options.incoming {
                    self.receive_files(landing, &mut refused).await?
                } else {
                    0
                };
                Ok(Ended {
                    code: 0,
                    sent,
                    received,
                    refused,
                })
            }
            Code::Failure => {
                let stderr = self.text(reply.length.unwrap_or(0)).await?;
                printer.write(Stream::Stderr, &stderr);
                printer.finish();
                // The authors' server follows with the exit code; the seed's with nothing.
                let code = match self.header(Duration::from_secs(1)).await {
                    Ok(second) if second.code == Code::Failure => {
                        let text = self.text(second.length.unwrap_or(0)).await?;
                        String::from_utf8_lossy(&text).trim().parse().unwrap_or(1)
                    }
                    _ => 1,
                };
                Ok(Ended {
                    code: if code == 0 { 1 } else { code },
                    sent,
                    received: 0,
                    refused: Vec::new(),
                })
            }
            _ => bail!("a command was answered {reply}"),
        }
    }
}
