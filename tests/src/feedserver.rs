//! A tiny HTTP/1.1 feed server on loopback for the feed tests: serves whatever body a test put
//! under a path (`200`, `Content-Length`, `Connection: close`), `404` otherwise. Tests replace
//! bodies while it runs and stop it to simulate a feed outage. One thread; every connection is
//! read and answered within a bounded time; the thread ends on [`FeedServer::stop`] or drop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

/// Per-connection read/write deadline.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Shared {
    bodies: Mutex<HashMap<String, Vec<u8>>>,
    stop: AtomicBool,
    requests: AtomicU64,
}

/// The running server.
pub struct FeedServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl FeedServer {
    /// Listen on 127.0.0.1 (an ephemeral port).
    pub fn start() -> Result<FeedServer> {
        let listener = TcpListener::bind("127.0.0.1:0").context("feed server: bind")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("feed-server".into())
                .spawn(move || serve(&listener, &shared))?
        };
        Ok(FeedServer {
            addr,
            shared,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Serve `body` at `path` from now on.
    pub fn set(&self, path: &str, body: impl Into<Vec<u8>>) {
        let mut bodies = self.shared.bodies.lock().unwrap_or_else(|e| e.into_inner());
        bodies.insert(format!("/{}", path.trim_start_matches('/')), body.into());
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Stop listening (the port refuses connections afterwards).
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(listener: &TcpListener, shared: &Shared) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = answer(stream, shared);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn answer(stream: TcpStream, shared: &Shared) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Skip the headers (bounded: at most 100 lines).
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    let body = shared
        .bodies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&path)
        .cloned();
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let mut out = stream;
    match body {
        Some(body) => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            out.write_all(&body)?;
        }
        None => {
            out.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
            )?;
        }
    }
    out.flush()?;
    Ok(())
}
