//! [`AdminClient`]: the controller's gRPC Admin service over its Unix admin socket.
//!
//! Thin: one method per RPC, wire requests built from domain values, every failure mapped to a
//! [`CtlError`] that names the socket. No rendering, no retries.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use meds_proto::ListKind;
use meds_proto::pb;
use meds_proto::pb::admin_client::AdminClient as WireClient;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::CtlError;

/// Largest response we decode (a list of a few million entries); tonic's default is 4 MiB.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// A connected Admin client.
#[derive(Debug, Clone)]
pub struct AdminClient {
    inner: WireClient<Channel>,
    socket: PathBuf,
}

impl AdminClient {
    /// Connect to the admin socket at `socket`. Fails with [`CtlError::Connect`] when the socket
    /// is missing, refused or not accessible.
    pub async fn connect(
        socket: &Path,
        connect_timeout: Duration,
    ) -> Result<AdminClient, CtlError> {
        // The URI is required by the HTTP/2 layer but never resolved: the connector below
        // ignores it and dials the Unix socket.
        let endpoint =
            Endpoint::from_static("http://meds.invalid").connect_timeout(connect_timeout);
        let path = socket.to_path_buf();
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|e| CtlError::from_transport(e, socket.to_path_buf()))?;
        Ok(AdminClient {
            inner: WireClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES),
            socket: socket.to_path_buf(),
        })
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn status_error(&self, status: tonic::Status) -> CtlError {
        CtlError::from_status(status, self.socket.clone())
    }

    /// Controller, dataplane and list status.
    pub async fn status(&mut self) -> Result<pb::StatusResponse, CtlError> {
        match self.inner.status(pb::StatusRequest {}).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.status_error(s)),
        }
    }

    /// Every entry of `list`, in the controller's canonical order.
    pub async fn list(&mut self, list: ListKind) -> Result<Vec<String>, CtlError> {
        let request = pb::ListEntriesRequest {
            list: list.to_wire().into(),
        };
        match self.inner.list_entries(request).await {
            Ok(r) => Ok(r.into_inner().entries),
            Err(s) => Err(self.status_error(s)),
        }
    }

    /// Add `entries` (text as typed) to `list`, all or nothing.
    pub async fn add(
        &mut self,
        list: ListKind,
        entries: Vec<String>,
        wait_applied: bool,
    ) -> Result<pb::ModifyEntriesResponse, CtlError> {
        let request = modify_request(list, entries, wait_applied);
        match self.inner.add_entries(request).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.status_error(s)),
        }
    }

    /// Remove `entries` (text as typed) from `list`, all or nothing.
    pub async fn remove(
        &mut self,
        list: ListKind,
        entries: Vec<String>,
        wait_applied: bool,
    ) -> Result<pb::ModifyEntriesResponse, CtlError> {
        let request = modify_request(list, entries, wait_applied);
        match self.inner.remove_entries(request).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.status_error(s)),
        }
    }

    /// Which stored entries of `list` match `query`, most specific first: the prefixes covering
    /// an address or prefix, the domain itself and its parent domains, or the same fingerprint.
    pub async fn check(
        &mut self,
        list: ListKind,
        query: String,
    ) -> Result<pb::CheckEntryResponse, CtlError> {
        let request = pb::CheckEntryRequest {
            list: list.to_wire().into(),
            query,
        };
        match self.inner.check_entry(request).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.status_error(s)),
        }
    }

    /// Which lists and feeds contain `ip`, and its ASN and country.
    pub async fn check_ip(&mut self, ip: String) -> Result<pb::CheckIpResponse, CtlError> {
        match self.inner.check_ip(pb::CheckIpRequest { ip }).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.status_error(s)),
        }
    }

    /// How the dataplane's live chain decides the packet described by `query`.
    pub async fn explain(
        &mut self,
        query: pb::ExplainQuery,
    ) -> Result<pb::ExplainResponse, CtlError> {
        match self.inner.explain(query).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.status_error(s)),
        }
    }

    /// The drop-event stream.
    pub async fn events(
        &mut self,
        request: pb::EventsRequest,
    ) -> Result<tonic::Streaming<pb::EventBatch>, CtlError> {
        match self.inner.events(request).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.status_error(s)),
        }
    }

    /// Map a status received on a stream.
    pub fn stream_error(&self, status: tonic::Status) -> CtlError {
        self.status_error(status)
    }

    /// The state of every feed.
    pub async fn list_feeds(&mut self) -> Result<Vec<pb::FeedStatus>, CtlError> {
        match self.inner.list_feeds(pb::ListFeedsRequest {}).await {
            Ok(r) => Ok(r.into_inner().feeds),
            Err(s) => Err(self.status_error(s)),
        }
    }

    /// Fetch the named feeds (every enabled feed when `names` is empty) and return their state
    /// after the attempts.
    pub async fn update_feeds(
        &mut self,
        names: Vec<String>,
    ) -> Result<Vec<pb::FeedStatus>, CtlError> {
        match self
            .inner
            .update_feeds(pb::UpdateFeedsRequest { names })
            .await
        {
            Ok(r) => Ok(r.into_inner().feeds),
            Err(s) => Err(self.status_error(s)),
        }
    }

    /// Enable/disable a feed or set its URL (`Some("")`: back to the default URL).
    pub async fn configure_feed(
        &mut self,
        name: String,
        enabled: Option<bool>,
        url: Option<String>,
    ) -> Result<pb::FeedStatus, CtlError> {
        let request = pb::ConfigureFeedRequest { name, enabled, url };
        match self.inner.configure_feed(request).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.status_error(s)),
        }
    }
}

fn modify_request(
    list: ListKind,
    entries: Vec<String>,
    wait_applied: bool,
) -> pb::ModifyEntriesRequest {
    pb::ModifyEntriesRequest {
        list: list.to_wire().into(),
        entries,
        wait_applied,
    }
}
