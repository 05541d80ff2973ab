//! Shared by the `feeds_*` tests: a scripted HTTP/1.1 feed server on 127.0.0.1 (raw TCP, so
//! that it can lie about `Content-Length`, stall, or answer 304), fixtures, and a controller
//! with feeds pointed at the server.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meds_controld::core::Controller;
use meds_controld::feeds::{FEEDS, FeedStatus, Feeds, FeedsConfig, FetchOptions};
use meds_proto::{Entry, ListKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the server answers on one path.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with the body; with an ETag, a request carrying `If-None-Match: <etag>` gets 304.
    Ok { body: Vec<u8>, etag: Option<String> },
    /// Any status with a body.
    Status(u16, Vec<u8>),
    /// 200 announcing `declared` bytes, sending `body` (shorter), then closing.
    Truncated { declared: usize, body: Vec<u8> },
    /// Wait, then 200 with the body.
    Slow(Duration, Vec<u8>),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    /// Lower-case header names.
    pub headers: HashMap<String, String>,
}

pub struct FeedServer {
    pub addr: SocketAddr,
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FeedServer {
    pub async fn start() -> FeedServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let replies: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (r, s) = (Arc::clone(&replies), Arc::clone(&seen));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (r, s) = (Arc::clone(&r), Arc::clone(&s));
                tokio::spawn(async move {
                    let _ = answer(stream, r, s).await;
                });
            }
        });
        FeedServer {
            addr,
            replies,
            seen,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set(&self, path: &str, reply: Reply) {
        self.replies.lock().unwrap().insert(path.to_string(), reply);
    }

    pub fn ok(&self, path: &str, body: &[u8]) {
        self.set(
            path,
            Reply::Ok {
                body: body.to_vec(),
                etag: None,
            },
        );
    }

    /// Requests seen on `path` so far.
    pub fn seen(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    /// Stop accepting connections (the port is closed: connections are refused).
    pub fn stop(self) {
        self.task.abort();
    }
}

async fn answer(
    mut stream: tokio::net::TcpStream,
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("/")
        .to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let reply = replies.lock().unwrap().get(&path).cloned();
    seen.lock().unwrap().push(Seen {
        path,
        headers: headers.clone(),
    });
    let response = |status: &str, extra: &str, body: &[u8], declared: usize| {
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {declared}\r\nConnection: close\r\n{extra}\r\n"
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    };
    let bytes = match reply {
        None => response("404 Not Found", "", b"no such feed\n", 13),
        Some(Reply::Ok { body, etag }) => match etag {
            Some(tag) if headers.get("if-none-match") == Some(&tag) => {
                response("304 Not Modified", &format!("ETag: {tag}\r\n"), b"", 0)
            }
            Some(tag) => response("200 OK", &format!("ETag: {tag}\r\n"), &body, body.len()),
            None => response("200 OK", "", &body, body.len()),
        },
        Some(Reply::Status(code, body)) => {
            response(&format!("{code} Whatever"), "", &body, body.len())
        }
        Some(Reply::Truncated { declared, body }) => response("200 OK", "", &body, declared),
        Some(Reply::Slow(delay, body)) => {
            tokio::time::sleep(delay).await;
            response("200 OK", "", &body, body.len())
        }
    };
    stream.write_all(&bytes).await?;
    stream.shutdown().await?;
    Ok(())
}

/// A fixture from `tests/data/feeds`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/feeds")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An IPLocate-style ZIP holding `csv` as `ip-to-asn.csv`.
pub fn zipped(csv: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    writer.start_file("ip-to-asn.csv", options).unwrap();
    writer.write_all(csv).unwrap();
    writer.finish().unwrap().into_inner()
}

/// Fast fetch settings for tests: `timeout` per feed, 3 attempts 20 ms then 40 ms apart.
pub fn fetch_options(timeout: Duration) -> FetchOptions {
    FetchOptions {
        timeout,
        attempts: 3,
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(40),
        ..FetchOptions::default()
    }
}

/// Feed settings: only the feeds in `urls` enabled, each at its URL.
pub fn config(urls: &[(&str, String)]) -> FeedsConfig {
    let flags: Vec<String> = urls.iter().map(|(n, u)| format!("{n}={u}")).collect();
    let mut config = FeedsConfig {
        fetch: fetch_options(Duration::from_secs(2)),
        ..FeedsConfig::default()
    }
    .with_flags(&flags, &[])
    .unwrap();
    config.disabled = FEEDS
        .iter()
        .map(|f| f.name)
        .filter(|name| !urls.iter().any(|(n, _)| n == name))
        .collect();
    config
}

/// A controller on an in-memory store with `config`'s feeds, copies loaded.
pub async fn feeds(config: FeedsConfig) -> (Arc<Controller>, Arc<Feeds>) {
    let controller = Controller::new_for_tests();
    let feeds = Feeds::new(Arc::clone(&controller), config).unwrap();
    feeds.load_persisted().await.unwrap();
    (controller, feeds)
}

/// The status of feed `name`.
pub fn status(feeds: &Feeds, name: &str) -> FeedStatus {
    feeds.status(name).unwrap()
}

/// Update `name` now and return its status.
pub async fn update(feeds: &Arc<Feeds>, name: &str) -> FeedStatus {
    let statuses = tokio::time::timeout(Duration::from_secs(30), feeds.update(&[name.into()]))
        .await
        .expect("update ends in time")
        .unwrap();
    assert_eq!(statuses.len(), 1);
    statuses.into_iter().next().unwrap()
}

/// The entries of `list`, as text.
pub fn texts(controller: &Controller, list: ListKind) -> Vec<String> {
    controller.list(list).iter().map(Entry::to_string).collect()
}

/// Wait (bounded) until `check` holds.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
