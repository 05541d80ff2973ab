//! Serving the router on a TCP listener with the limits a public-facing HTTP/1.1 server needs:
//! a header read timeout (a client that never finishes its request head is disconnected, which
//! defeats slowloris), a cap on concurrent connections, and a graceful shutdown that lets
//! in-flight requests finish for a bounded time. HTTP/1.1 only: the API has no use for h2.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Connection-level limits of [`serve_with`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Longest time a client may take to send a complete request head (also bounds how long
    /// an idle keep-alive connection stays open).
    pub header_read_timeout: Duration,
    /// Most connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// After shutdown is signalled, how long in-flight requests may take before their
    /// connections are closed anyway.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 512,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// [`serve_with`] with [`ServeOptions::default`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, shutdown, ServeOptions::default()).await
}

/// Serve `router` on `listener` until `shutdown` completes, then stop accepting, let open
/// requests finish for up to `shutdown_grace`, and return. Errors on single connections are
/// logged and never end the server.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        // Reap finished connection tasks so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(p) => p,
                // The semaphore is never closed; if it were, stopping is the safe reading.
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    if is_per_connection_error(&e) {
                        tracing::debug!(error = %e, "API accept failed for one connection");
                    } else {
                        // e.g. EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "API accept failed; retrying in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "API connection ended with an error");
            }
            drop(permit);
        });
    }

    drop(listener);
    tracing::debug!(open = connections.len(), "API server stopping");
    if tokio::time::timeout(options.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_seconds = options.shutdown_grace.as_secs_f64(),
            "API connections still open after the shutdown grace period; closing them"
        );
    }
    connections.shutdown().await;
    Ok(())
}

/// Accept errors that concern one connection only (the peer gave up early).
fn is_per_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}
