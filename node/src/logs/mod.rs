//! Container log files in the CRI format that kubelet and containerd write, one entry per
//! line: `2026-11-29T18:00:00.123456789Z stdout F hello`. The timestamp makes
//! `kubectl logs --timestamps` and `--since` possible; the tag is `F` for a full line and `P`
//! for a piece of a line longer than [`MAX_LINE`], continued in the next entry.
//!
//! [`LogFile::stream`] gives the guest's stdout or stderr as a wasmtime-wasi output stream.
//! Rotation and the server that `kubectl logs` reaches arrive with the node agent.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// Longer lines are split into `P` entries of this size.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One container's log file, shared by its two streams.
#[derive(Clone)]
pub struct LogFile {
    writer: Arc<Mutex<Writer>>,
}

struct Writer {
    file: File,
    /// Bytes of an unfinished line, per stream.
    pending: [Vec<u8>; 2],
}

impl LogFile {
    /// Opens (appending) or creates the file.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            writer: Arc::new(Mutex::new(Writer {
                file,
                pending: [Vec::new(), Vec::new()],
            })),
        })
    }

    pub fn stream(&self, stream: Stream) -> LogStream {
        LogStream {
            log: self.clone(),
            stream,
        }
    }

    pub fn write(&self, stream: Stream, bytes: &[u8]) -> io::Result<()> {
        self.lock().write(stream, bytes)
    }

    /// Writes out unfinished lines (at the container's exit).
    pub fn finish(&self) -> io::Result<()> {
        let mut writer = self.lock();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut writer.pending[stream as usize]);
            if !rest.is_empty() {
                writer.entry(stream, "F", &rest)?;
            }
        }
        writer.file.flush()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Writer {
    fn write(&mut self, stream: Stream, mut bytes: &[u8]) -> io::Result<()> {
        let slot = stream as usize;
        while !bytes.is_empty() {
            match bytes.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    let mut line = std::mem::take(&mut self.pending[slot]);
                    line.extend_from_slice(&bytes[..end]);
                    self.entries(stream, &line)?;
                    bytes = &bytes[end + 1..];
                }
                None => {
                    self.pending[slot].extend_from_slice(bytes);
                    bytes = &[];
                    while self.pending[slot].len() > MAX_LINE {
                        let rest = self.pending[slot].split_off(MAX_LINE);
                        let piece = std::mem::replace(&mut self.pending[slot], rest);
                        self.entry(stream, "P", &piece)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A complete line: `P` pieces while it is too long, then the `F` end.
    fn entries(&mut self, stream: Stream, line: &[u8]) -> io::Result<()> {
        let mut chunks = line.chunks(MAX_LINE).peekable();
        if chunks.peek().is_none() {
            return self.entry(stream, "F", b"");
        }
        while let Some(chunk) = chunks.next() {
            let tag = if chunks.peek().is_some() { "P" } else { "F" };
            self.entry(stream, tag, chunk)?;
        }
        Ok(())
    }

    fn entry(&mut self, stream: Stream, tag: &str, content: &[u8]) -> io::Result<()> {
        let mut line = Vec::with_capacity(content.len() + 48);
        write!(
            line,
            "{} {} {tag} ",
            bosun_api::time::rfc3339_nanos(SystemTime::now()),
            stream.as_str()
        )?;
        line.extend_from_slice(content);
        line.push(b'\n');
        self.file.write_all(&line)
    }
}

/// One parsed log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    pub partial: bool,
    pub content: &'a str,
}

/// Parses one line of a log file.
pub fn parse(line: &str) -> Option<Entry<'_>> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or_default();
    Some(Entry {
        time,
        stream,
        partial: match tag {
            "P" => true,
            "F" => false,
            _ => return None,
        },
        content,
    })
}

/// A guest's stdout or stderr going into its [`LogFile`].
#[derive(Clone)]
pub struct LogStream {
    log: LogFile,
    stream: Stream,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.log
            .write(self.stream, &bytes)
            .map_err(|e| StreamError::LastOperationFailed(wasmtime::format_err!(e)))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(1024 * 1024)
    }
}

impl tokio::io::AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.log.write(self.stream, buf).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(path: &Path) -> Vec<(String, bool, String)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let e = parse(l).expect("a CRI log line");
                assert!(bosun_api::time::parse_rfc3339(e.time).is_some(), "{l}");
                (e.stream.to_string(), e.partial, e.content.to_string())
            })
            .collect()
    }

    #[test]
    fn lines_are_assembled_per_stream_and_tagged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let log = LogFile::open(&path).unwrap();
        log.write(Stream::Stdout, b"hel").unwrap();
        log.write(Stream::Stderr, b"oops\n").unwrap();
        log.write(Stream::Stdout, b"lo\nworld\n\nno newline")
            .unwrap();
        log.finish().unwrap();
        let s = |x: &str| x.to_string();
        assert_eq!(
            entries(&path),
            [
                (s("stderr"), false, s("oops")),
                (s("stdout"), false, s("hello")),
                (s("stdout"), false, s("world")),
                (s("stdout"), false, s("")),
                (s("stdout"), false, s("no newline")),
            ]
        );
    }

    #[test]
    fn long_lines_are_split_into_partial_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let log = LogFile::open(&path).unwrap();
        let long = "x".repeat(MAX_LINE * 2 + 10);
        log.write(Stream::Stdout, long.as_bytes()).unwrap();
        log.write(Stream::Stdout, b"\n").unwrap();
        let got = entries(&path);
        let tags: Vec<bool> = got.iter().map(|e| e.1).collect();
        assert_eq!(tags, [true, true, false]);
        let joined: String = got.iter().map(|e| e.2.as_str()).collect();
        assert_eq!(joined, long);
    }
}
