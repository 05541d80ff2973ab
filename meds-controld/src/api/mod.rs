//! The REST API: the original Meds routes for IP prefixes, with precise JSON errors.
//!
//! Every request, including unknown paths and wrong methods, must carry HTTP Basic
//! credentials (the auth layer wraps the whole router, fallbacks included); otherwise 401 with
//! `WWW-Authenticate: Basic realm="meds"`.
//!
//! | Method | Path | Body | Answer |
//! |---|---|---|---|
//! | GET | `/v1/{list}/subnets` | — | 200 `{"subnets":["10.0.0.0/8","2001:db8::/32",…]}` (IPv4 then IPv6, sorted) |
//! | POST | `/v1/{list}/subnets` | `{"subnets":["203.0.113.7","198.51.100.0/24"]}` | 202 `{"changed":N,"generation":G,"applied":bool}` |
//! | DELETE | `/v1/{list}/subnets` | same | 202, same shape |
//! | GET | `/v1/{list}/subnets/{subnet}` | — | 200 `{"found":bool,"matches":["203.0.113.0/24",…]}` |
//! | GET | `/v1/blacklist/countries` | — | 200 `{"countries":["de","fr"]}` (lower case, sorted) |
//! | POST | `/v1/blacklist/countries` | `{"countries":["fr","DE"]}` | 202 `{"changed":N,"generation":G,"applied":bool}` |
//! | DELETE | `/v1/blacklist/countries` | same | 202, same shape |
//! | GET | `/v1/blacklist/countries/{cc}` | — | 200 `{"found":bool}` (any case) |
//! | GET | `/v1/blacklist/asns` | — | 200 `{"asns":[64496,64497]}` (numbers, ascending) |
//! | POST | `/v1/blacklist/asns` | `{"asns":[64496,"AS64497"]}` | 202, same shape as above |
//! | DELETE | `/v1/blacklist/asns` | same | 202, same shape |
//! | GET | `/v1/blacklist/asns/{asn}` | — | 200 `{"found":bool}` (`64496` or `AS64496`) |
//! | GET | `/v1/check/{ip}` | — | 200 lists, feeds, ASN and country of one address (see `check`) |
//! | GET | `/v1/status` | — | 200 controller and dataplane status |
//! | GET | `/v1/feeds` | — | 200 `{"feeds":[…]}` every feed's status (see `feeds`) |
//! | POST | `/v1/feeds/update` | none or `{"names":["feodo"]}` | 200 `{"feeds":[…]}` after the attempts |
//! | PATCH | `/v1/feeds/{name}` | `{"enabled":bool,"url":"…"}` (either or both) | 200 the feed's status |
//!
//! `{list}` is `whitelist` (the allowlist) or `blacklist` (the blocklist). Countries are
//! ISO 3166-1 alpha-2 codes (plus `xk`); AS numbers exclude the reserved 0, 23456 and
//! 4294967295. Bad values are a 400 naming the element (`countries[1]: "zz" is not an
//! assigned ISO 3166-1 alpha-2 country code`).
//!
//! * Mutations are idempotent (adding a present entry is 202 with `changed: 0`), store the
//!   masked prefix (`10.1.2.3/8` is `10.0.0.0/8`), remove exactly the given prefixes, and wait
//!   (bounded) for the dataplane: `applied: true` means the change is live.
//! * Validation is all-or-nothing: the first bad entry gives 400
//!   `{"error":"subnets[3]: \"300.1.1.1\" is not a valid IPv4 or IPv6 address"}` and nothing
//!   changes. Mutations need `Content-Type: application/json` (see `subnets::require_json`
//!   for why); bodies have exactly one field, `subnets`, an array of strings.
//! * Checking a prefix: the `{subnet}` segment is a catch-all, so all of these work:
//!   `/v1/whitelist/subnets/203.0.113.7`, `/v1/whitelist/subnets/10.0.0.0%2F8` (encoded
//!   slash) and `/v1/whitelist/subnets/10.0.0.0/8` (raw slash), and the same for IPv6
//!   (`/v1/whitelist/subnets/2001:db8::/32`). A query is found when a stored prefix covers it.
//! * Errors are `{"error":"…"}` with 400, 401, 404, 405, 408 (request timeout), 413 (body or
//!   entry count over the limit) or 500 (detail only in the log); see [`error`].
//!
//! Must not: contain policy logic (handlers decode, call [`Controller`], encode), log
//! credentials, or answer anything without authentication.

mod asns;
pub mod auth;
mod body;
mod check;
mod countries;
pub mod error;
mod feeds;
mod serve;
mod status;
mod subnets;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use meds_proto::ListKind;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::core::{Controller, MAX_ENTRIES_PER_REQUEST, public_name};

pub use asns::AsnsResponse;
pub use auth::{Credentials, CredentialsError};
pub use countries::{CountriesResponse, FoundResponse};
pub use error::ApiError;
pub use feeds::FeedsResponse;
pub use serve::{ServeOptions, serve, serve_with};
pub use subnets::{ChangeResponse, CheckResponse, SubnetsResponse};

/// Request-level limits of the [`router`].
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body in bytes (413 above it). Default 16 MiB.
    pub body_bytes: usize,
    /// Most entries in one POST/DELETE (413 above it). Default 1,000,000.
    pub max_entries: usize,
    /// Longest time from the request head to the response (408 after it). Default 30 s.
    /// Keep it above [`APPLY_WAIT`](crate::core::APPLY_WAIT): a mutation waits up to that long
    /// for the dataplane. A change that outlives the timeout still completes (it runs on its
    /// own task); the client just does not learn the outcome.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            body_bytes: 16 * 1024 * 1024,
            max_entries: MAX_ENTRIES_PER_REQUEST,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// What every handler gets.
pub(crate) struct ApiState {
    pub(crate) controller: Arc<Controller>,
    pub(crate) max_entries: usize,
}

/// The whole REST API, authenticated, as one router (serve it with [`serve`]), without the
/// `/v1/feeds` routes.
pub fn router(controller: Arc<Controller>, credentials: Credentials, limits: Limits) -> Router {
    router_with_feeds(controller, None, credentials, limits)
}

/// [`router`], plus the `/v1/feeds` routes (see `feeds`) when `feeds` is given.
pub fn router_with_feeds(
    controller: Arc<Controller>,
    feeds: Option<Arc<crate::feeds::Feeds>>,
    credentials: Credentials,
    limits: Limits,
) -> Router {
    let state = Arc::new(ApiState {
        controller,
        max_entries: limits.max_entries,
    });
    let mut app = Router::new();
    for kind in [ListKind::IpAllow, ListKind::IpBlock] {
        let base = format!("/v1/{}/subnets", public_name(kind));
        let (s_list, s_add, s_remove, s_check) = (
            Arc::clone(&state),
            Arc::clone(&state),
            Arc::clone(&state),
            Arc::clone(&state),
        );
        app = app
            .route(
                &base,
                get(move || subnets::list(Arc::clone(&s_list), kind))
                    .post(
                        move |headers: HeaderMap, body: Result<Bytes, BytesRejection>| {
                            subnets::add(Arc::clone(&s_add), kind, headers, body)
                        },
                    )
                    .delete(
                        move |headers: HeaderMap, body: Result<Bytes, BytesRejection>| {
                            subnets::remove(Arc::clone(&s_remove), kind, headers, body)
                        },
                    ),
            )
            .route(
                &format!("{base}/{{*subnet}}"),
                get(move |subnet: Result<Path<String>, PathRejection>| {
                    subnets::check(Arc::clone(&s_check), kind, subnet)
                }),
            );
    }
    app = list_routes(app, &state);
    if let Some(feeds) = feeds {
        app = feeds::routes(app, feeds);
    }
    let s_status = Arc::clone(&state);
    app.route(
        "/v1/status",
        get(move || status::status(Arc::clone(&s_status))),
    )
    .fallback(not_found)
    .method_not_allowed_fallback(method_not_allowed)
    // Layers: the last one added runs first. Trace, then auth, then the timeout, then the
    // body limit, so nothing is read or computed for an unauthenticated client.
    .layer(DefaultBodyLimit::max(limits.body_bytes))
    .layer(middleware::from_fn_with_state(
        limits.request_timeout,
        request_timeout,
    ))
    .layer(middleware::from_fn_with_state(
        Arc::new(credentials),
        auth::require,
    ))
    .layer(
        TraceLayer::new_for_http()
            .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
            .on_response(DefaultOnResponse::new().level(Level::INFO)),
    )
}

/// The country and ASN blocklists and the per-address check.
fn list_routes(app: Router, state: &Arc<ApiState>) -> Router {
    let s = || Arc::clone(state);
    let (c_list, c_add, c_remove, c_check) = (s(), s(), s(), s());
    let (a_list, a_add, a_remove, a_check) = (s(), s(), s(), s());
    let ip_check = s();
    app.route(
        "/v1/blacklist/countries",
        get(move || countries::list(Arc::clone(&c_list)))
            .post(
                move |headers: HeaderMap, body: Result<Bytes, BytesRejection>| {
                    countries::add(Arc::clone(&c_add), headers, body)
                },
            )
            .delete(
                move |headers: HeaderMap, body: Result<Bytes, BytesRejection>| {
                    countries::remove(Arc::clone(&c_remove), headers, body)
                },
            ),
    )
    .route(
        "/v1/blacklist/countries/{country}",
        get(move |country: Result<Path<String>, PathRejection>| {
            countries::check(Arc::clone(&c_check), country)
        }),
    )
    .route(
        "/v1/blacklist/asns",
        get(move || asns::list(Arc::clone(&a_list)))
            .post(
                move |headers: HeaderMap, body: Result<Bytes, BytesRejection>| {
                    asns::add(Arc::clone(&a_add), headers, body)
                },
            )
            .delete(
                move |headers: HeaderMap, body: Result<Bytes, BytesRejection>| {
                    asns::remove(Arc::clone(&a_remove), headers, body)
                },
            ),
    )
    .route(
        "/v1/blacklist/asns/{asn}",
        get(move |asn: Result<Path<String>, PathRejection>| asns::check(Arc::clone(&a_check), asn)),
    )
    .route(
        "/v1/check/{*ip}",
        get(move |ip: Result<Path<String>, PathRejection>| check::check(Arc::clone(&ip_check), ip)),
    )
}

async fn request_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit).into_response(),
    }
}

async fn not_found(uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::NotFound(format!("no such route: {path}"))
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
    }
}
