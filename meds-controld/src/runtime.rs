//! [`run`]: open the store, bind every listener (failing fast, before serving anything), serve
//! the REST API and both gRPC services until shutdown, then remove the socket files.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use meds_proto::pb::{admin_server::AdminServer, sync_server::SyncServer};
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::UnixListenerStream;

use crate::api;
use crate::config::Config;
use crate::core::{Controller, CoreError};
use crate::feeds::{Feeds, FeedsError};
use crate::grpc::{AdminService, SyncService};
use crate::store::{Store, StoreError};

/// How long shutdown waits for open connections after the servers were told to stop.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Socket files are created with this mode: owner and group may connect, others may not.
const SOCKET_MODE: u32 = 0o660;

/// Why the controller could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("opening the database {path:?}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("loading the policy: {0}")]
    Core(#[from] CoreError),
    #[error("REST API: cannot listen on {addr}: {source}")]
    ApiBind {
        addr: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("{what} socket {path:?}: {message}")]
    Socket {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("REST API failed: {0}")]
    Api(io::Error),
    #[error("{what} gRPC service failed: {source}")]
    Grpc {
        what: &'static str,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("invalid API credentials: {0}")]
    Credentials(String),
    #[error("feeds: {0}")]
    Feeds(#[from] FeedsError),
}

/// Run the controller until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let store = Store::open(&config.db_path).map_err(|source| RunError::Store {
        path: config.db_path.clone(),
        source,
    })?;
    let controller = Controller::new(store)?;
    tracing::info!(
        db = %config.db_path.display(),
        generation = controller.generation(),
        "policy loaded"
    );
    // The feeds' last good copies go in force before anything is served, so the dataplane's
    // first snapshot already holds them (the original started with empty feeds, upstream W9).
    let feeds = Feeds::new(Arc::clone(&controller), config.feeds.clone())?;
    feeds.load_persisted().await?;

    let api_listener =
        TcpListener::bind(config.api_addr)
            .await
            .map_err(|source| RunError::ApiBind {
                addr: config.api_addr,
                source,
            })?;
    let sync_listener = bind_unix("sync", &config.sync_socket, config.sync_socket_gid).await?;
    let admin_listener =
        match bind_unix("admin", &config.admin_socket, config.admin_socket_gid).await {
            Ok(l) => l,
            Err(e) => {
                remove_socket(&config.sync_socket);
                return Err(e);
            }
        };

    let credentials = api::Credentials::new(&config.username, &config.password)
        .map_err(|e| RunError::Credentials(e.to_string()))?;
    let router = api::router_with_feeds(
        Arc::clone(&controller),
        Some(Arc::clone(&feeds)),
        credentials,
        api::Limits {
            body_bytes: config.api_body_limit,
            request_timeout: config.api_timeout,
            ..api::Limits::default()
        },
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let events = Arc::clone(controller.events());
    tokio::spawn(async move {
        shutdown.await;
        // Ends the open event streams (REST and gRPC), so graceful shutdown does not wait on
        // them.
        events.close();
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // First round at once, in the background; then every --update-interval until shutdown.
    tokio::spawn(Arc::clone(&feeds).run(stopped(stop_rx.clone())));
    // The dataplane's counters, folded per instance into persisted totals (≤ 1 write/s).
    tokio::spawn(Arc::clone(&controller).run_totals(stop_rx.clone()));

    tracing::info!(
        api = %config.api_addr,
        sync = %config.sync_socket.display(),
        admin = %config.admin_socket.display(),
        "meds-controld serving"
    );

    let sync = tonic::transport::Server::builder()
        .add_service(
            SyncServer::new(
                SyncService::new(Arc::clone(&controller)).with_shutdown(stop_rx.clone()),
            )
            .max_decoding_message_size(meds_proto::sync::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(meds_proto::sync::MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(sync_listener),
            stopped(stop_rx.clone()),
        );
    let admin = tonic::transport::Server::builder()
        .add_service(AdminServer::new(
            AdminService::new(Arc::clone(&controller)).with_feeds(Arc::clone(&feeds)),
        ))
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(admin_listener),
            stopped(stop_rx.clone()),
        );
    let rest = api::serve(api_listener, router, stopped(stop_rx.clone()));

    let servers = async {
        tokio::try_join!(
            async {
                sync.await.map_err(|source| RunError::Grpc {
                    what: "sync",
                    source,
                })
            },
            async {
                admin.await.map_err(|source| RunError::Grpc {
                    what: "admin",
                    source,
                })
            },
            async { rest.await.map_err(RunError::Api) },
        )
        .map(|_| ())
    };
    // Streams end on shutdown by themselves; this only bounds a client that does not let go.
    let grace = async {
        stopped(stop_rx.clone()).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let result = tokio::select! {
        r = servers => r,
        () = grace => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after shutdown; closing anyway");
            Ok(())
        }
    };
    remove_socket(&config.sync_socket);
    remove_socket(&config.admin_socket);
    tracing::info!("meds-controld stopped");
    result
}

/// Bind a Unix socket at `path`, replacing a stale socket file left by a crash (but never a
/// live one, and never a file that is not a socket), then restrict it to owner and group.
async fn bind_unix(
    what: &'static str,
    path: &Path,
    gid: Option<u32>,
) -> Result<UnixListener, RunError> {
    let fail = |message: String| RunError::Socket {
        what,
        path: path.to_path_buf(),
        message,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(fail("another process is already serving on it".into()));
            }
            std::fs::remove_file(path)
                .map_err(|e| fail(format!("removing the stale socket: {e}")))?;
        }
        Ok(_) => {
            return Err(fail(
                "exists and is not a socket; refusing to replace it".into(),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::NotFound {
            " (does its directory exist?)"
        } else {
            ""
        };
        fail(format!("cannot bind: {e}{hint}"))
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(|e| fail(format!("setting mode 0660: {e}")))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| fail(format!("changing its group to {gid}: {e}")))?;
    }
    Ok(listener)
}

fn remove_socket(path: &Path) {
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
        && let Err(e) = std::fs::remove_file(path)
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove socket");
    }
}
