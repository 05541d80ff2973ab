//! `api::serve_with` on a real loopback socket: a normal request, slow clients cut off by the
//! header read timeout, and graceful shutdown. Bounded: every wait has a timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

use std::time::{Duration, Instant};

use base64::Engine as _;
use meds_controld::api::{Credentials, Limits, ServeOptions, router, serve_with};
use meds_controld::core::Controller;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const HEADER_TIMEOUT: Duration = Duration::from_millis(300);

struct Server {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(
        Controller::new_for_tests(),
        Credentials::new("admin", "pw").unwrap(),
        Limits::default(),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let options = ServeOptions {
        header_read_timeout: HEADER_TIMEOUT,
        max_connections: 16,
        shutdown_grace: Duration::from_secs(2),
    };
    let task = tokio::spawn(serve_with(
        listener,
        app,
        async {
            let _ = stopped.await;
        },
        options,
    ));
    Server {
        addr,
        stop: Some(stop),
        task,
    }
}

impl Server {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stopped in time")
            .unwrap();
        result.unwrap();
    }
}

/// Read until the server closes the connection (or 5 s pass); returns what was read and when
/// the connection closed.
async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closed the connection within 5 s");
    (out, closed)
}

fn request(path: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode("admin:pw");
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
    )
}

#[tokio::test]
async fn serves_authenticated_requests_over_tcp() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(request("/v1/whitelist/subnets/10.0.0.0%2F8").as_bytes())
        .await
        .unwrap();
    let (bytes, _) = read_until_closed(&mut stream).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with(r#"{"found":true,"matches":["10.0.0.0/8"]}"#),
        "{text}"
    );

    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (bytes, _) = read_until_closed(&mut stream).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(
        text.contains("www-authenticate: Basic realm=\"meds\""),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn clients_that_never_finish_their_headers_are_disconnected() {
    let server = start().await;
    // (what the client sends, then it goes silent)
    let cases: [&[u8]; 3] = [
        b"",
        b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n",
        b"POST /v1/blacklist/subnets HTTP/1.1\r\nHost: local",
    ];
    for sent in cases {
        let started = Instant::now();
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(sent).await.unwrap();
        let (bytes, closed) = read_until_closed(&mut stream).await;
        let took = closed - started;
        assert!(
            took >= HEADER_TIMEOUT.mul_f32(0.8),
            "{:?}: closed after only {took:?}",
            String::from_utf8_lossy(sent)
        );
        assert!(
            took < HEADER_TIMEOUT * 10,
            "{:?}: closed after {took:?}",
            String::from_utf8_lossy(sent)
        );
        // Whatever the server says on the way out, it is never a success.
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(" 200 "), "{text}");
    }
    // The server is still healthy afterwards.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(request("/v1/status").as_bytes())
        .await
        .unwrap();
    let (bytes, _) = read_until_closed(&mut stream).await;
    assert!(String::from_utf8_lossy(&bytes).starts_with("HTTP/1.1 200"));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_returns() {
    let server = start().await;
    let addr = server.addr;
    // An idle keep-alive connection must not hold the shutdown up.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(
        request("/v1/status")
            .replace("Connection: close\r\n", "")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let started = Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    let (_, _) = read_until_closed(&mut idle).await;
}

#[tokio::test]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(
        Controller::new_for_tests(),
        Credentials::new("admin", "pw").unwrap(),
        Limits::default(),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let options = ServeOptions {
        header_read_timeout: Duration::from_millis(500),
        max_connections: 1,
        shutdown_grace: Duration::from_secs(1),
    };
    let task = tokio::spawn(serve_with(
        listener,
        app,
        async {
            let _ = stopped.await;
        },
        options,
    ));
    // The first connection takes the only slot and stays silent.
    let mut hog = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let mut second = TcpStream::connect(addr).await.unwrap(); // completes in the backlog
    second
        .write_all(request("/v1/status").as_bytes())
        .await
        .unwrap();
    let (bytes, answered) = read_until_closed(&mut second).await;
    assert!(String::from_utf8_lossy(&bytes).starts_with("HTTP/1.1 200"));
    // It was served only once the hog was cut off by the header timeout.
    assert!(
        answered - started >= Duration::from_millis(300),
        "{:?}",
        answered - started
    );
    let _ = read_until_closed(&mut hog).await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A following `/v1/events` stream does not hold up a graceful shutdown: the controller closes
/// the event hub first (as `run` does), the stream ends, the server stops well before its
/// grace period.
#[tokio::test]
async fn shutdown_ends_a_following_events_stream() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let controller = Controller::new_for_tests();
    let app = router(
        std::sync::Arc::clone(&controller),
        Credentials::new("admin", "pw").unwrap(),
        Limits::default(),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let grace = Duration::from_secs(5);
    let task = tokio::spawn(serve_with(
        listener,
        app,
        async {
            let _ = stopped.await;
        },
        ServeOptions {
            header_read_timeout: HEADER_TIMEOUT,
            max_connections: 16,
            shutdown_grace: grace,
        },
    ));
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(request("/v1/events?follow=true&recent=0").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("response head within 5 s")
            .unwrap();
        assert!(n > 0, "closed before the head");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/x-ndjson"), "{head}");

    let started = Instant::now();
    controller.events().close();
    stop.send(()).unwrap();
    let (_, closed) = read_until_closed(&mut stream).await;
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("server stopped")
        .unwrap()
        .unwrap();
    assert!(
        closed.duration_since(started) < Duration::from_secs(1) && started.elapsed() < grace / 2,
        "the stream held the shutdown: {:?}",
        started.elapsed()
    );
}
