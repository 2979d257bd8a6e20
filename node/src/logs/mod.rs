//! Container log files in the CRI format that kubelet and containerd write, one entry per
//! line: `2026-11-29T18:00:00.123456789Z stdout F hello`. The timestamp makes
//! `kubectl logs --timestamps` and `--since` possible; the tag is `F` for a full line and `P`
//! for a piece of a line longer than [`MAX_LINE`], continued in the next entry.
//!
//! [`LogFile::stream`] gives the guest's stdout or stderr as a wasmtime-wasi output stream.
//! A file is rotated when it passes [`Rotation::max_size`]: `N.log` becomes `N.log.1`, older
//! ones shift up, and at most [`Rotation::max_files`] files are kept, as the kubelet does
//! (`containerLogMaxSize`, `containerLogMaxFiles`). [`files`] lists them oldest first.
//! [`server`] is what `kubectl logs` reaches through the API server.

pub mod server;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
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
    path: PathBuf,
    size: u64,
    rotation: Rotation,
    /// Bytes of an unfinished line, per stream.
    pending: [Vec<u8>; 2],
}

/// When log files are rotated and how many are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_size: u64,
    /// Files kept, the one being written included (at least 1).
    pub max_files: u32,
}

impl Default for Rotation {
    /// The kubelet's defaults: 10 MiB, 5 files.
    fn default() -> Self {
        Self {
            max_size: 10 << 20,
            max_files: 5,
        }
    }
}

/// The files of the log at `path`, oldest first: `path.K` … `path.1`, then `path`; only the
/// ones that exist.
pub fn files(path: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name())
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        let prefix = format!("{}.", name.to_string_lossy());
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(k) = file.strip_prefix(&prefix).and_then(|k| k.parse().ok()) {
                rotated.push((k, entry.path()));
            }
        }
    }
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if path.exists() {
        out.push(path.to_path_buf());
    }
    out
}

fn rotated(path: &Path, k: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{k}"));
    PathBuf::from(name)
}

impl LogFile {
    /// Opens (appending) or creates the file, rotated by the kubelet's defaults.
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::open_with(path, Rotation::default())
    }

    pub fn open_with(path: &Path, rotation: Rotation) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            writer: Arc::new(Mutex::new(Writer {
                file,
                path: path.to_path_buf(),
                size,
                rotation,
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
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        if self.size >= self.rotation.max_size {
            self.rotate()?;
        }
        Ok(())
    }

    /// `path` → `path.1`, `path.1` → `path.2`, …; the oldest beyond `max_files` goes.
    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.rotation.max_files.max(1) - 1;
        if keep == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let _ = std::fs::remove_file(rotated(&self.path, keep));
        for k in (1..keep).rev() {
            let _ = std::fs::rename(rotated(&self.path, k), rotated(&self.path, k + 1));
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
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
    fn files_rotate_and_only_the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let log = LogFile::open_with(
            &path,
            Rotation {
                max_size: 200,
                max_files: 3,
            },
        )
        .unwrap();
        for i in 0..40 {
            log.write(Stream::Stdout, format!("line {i:02}\n").as_bytes())
                .unwrap();
        }
        let files = files(&path);
        assert_eq!(files.len(), 3, "{files:?}");
        assert_eq!(files[2], path);
        let lines: Vec<String> = files.iter().flat_map(|f| entries(f)).map(|e| e.2).collect();
        // What is kept is the newest lines, in order, ending with the last one.
        assert_eq!(lines.last().unwrap(), "line 39");
        let numbers: Vec<u32> = lines.iter().map(|l| l[5..].parse().unwrap()).collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        assert!(numbers[0] > 0, "the oldest lines were dropped");
        for f in &files {
            assert!(std::fs::metadata(f).unwrap().len() < 200 + 64);
        }
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
