//! The REST API: the original Meds routes for IP prefixes, domains and countries, plus ASN,
//! JA3 and JA4 blocklists, feeds and status, with precise JSON errors.
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
//! | GET | `/v1/{list}/domains` | — | 200 `{"domains":["bad.com","xn--bcher-kva.example"]}` (sorted) |
//! | POST | `/v1/{list}/domains` | `{"domains":["Bad.COM.","bücher.example"]}` | 202, same shape as above |
//! | DELETE | `/v1/{list}/domains` | same | 202, same shape |
//! | GET | `/v1/{list}/domains/{domain}` | — | 200 `{"found":bool,"matches":["www.bad.com","bad.com"]}` |
//! | GET | `/v1/blacklist/countries` | — | 200 `{"countries":["de","fr"]}` (lower case, sorted) |
//! | POST | `/v1/blacklist/countries` | `{"countries":["fr","DE"]}` | 202 `{"changed":N,"generation":G,"applied":bool}` |
//! | DELETE | `/v1/blacklist/countries` | same | 202, same shape |
//! | GET | `/v1/blacklist/countries/{cc}` | — | 200 `{"found":bool}` (any case) |
//! | GET | `/v1/blacklist/asns` | — | 200 `{"asns":[64496,64497]}` (numbers, ascending) |
//! | POST | `/v1/blacklist/asns` | `{"asns":[64496,"AS64497"]}` | 202, same shape as above |
//! | DELETE | `/v1/blacklist/asns` | same | 202, same shape |
//! | GET | `/v1/blacklist/asns/{asn}` | — | 200 `{"found":bool}` (`64496` or `AS64496`) |
//! | GET | `/v1/blacklist/ja3` | — | 200 `{"ja3":["b386946a5a44d1ddcc843bc75336dfce"]}` (lower case, sorted) |
//! | POST | `/v1/blacklist/ja3` | `{"ja3":["B386946A5A44D1DDCC843BC75336DFCE"]}` | 202, same shape as above |
//! | DELETE | `/v1/blacklist/ja3` | same | 202, same shape |
//! | GET | `/v1/blacklist/ja3/{hash}` | — | 200 `{"found":bool}` (exact, any case) |
//! | GET | `/v1/blacklist/ja4` | — | 200 `{"ja4":["t13d1516h2_8daaf6152771_02713d6af862"]}` |
//! | POST | `/v1/blacklist/ja4` | `{"ja4":["t13d1516h2_8daaf6152771_02713d6af862"]}` | 202, same shape as above |
//! | DELETE | `/v1/blacklist/ja4` | same | 202, same shape |
//! | GET | `/v1/blacklist/ja4/{fingerprint}` | — | 200 `{"found":bool}` (exact, any case) |
//! | GET | `/v1/check/{ip}` | — | 200 lists, feeds, ASN and country of one address (see `check`) |
//! | GET | `/v1/status` | — | 200 controller and dataplane status |
//! | GET | `/v1/openapi.json` | — | 200 the OpenAPI 3.0 description of this API (see `openapi`) |
//! | GET | `/v1/docs` | — | 200 an HTML page rendering it (also `/swagger/index.html`) |
//! | GET | `/v1/feeds` | — | 200 `{"feeds":[…]}` every feed's status (see `feeds`) |
//! | POST | `/v1/feeds/update` | none or `{"names":["feodo"]}` | 200 `{"feeds":[…]}` after the attempts |
//! | PATCH | `/v1/feeds/{name}` | `{"enabled":bool,"url":"…"}` (either or both) | 200 the feed's status |
//! | GET | `/v1/explain/{ip}?port=&sni=&dns=&ja3=&ja4=` | — | 200 the live chain's steps and decision (see `explain`); 503 without a dataplane, 504 when it does not answer in 2 s |
//! | GET | `/v1/events?recent=N&follow=BOOL` | — | 200 `application/x-ndjson`, one drop event per line (see `events`) |
//! | GET | `/v1/metrics`, `/metrics` | — | 200 Prometheus text exposition (see [`crate::metrics`]) |
//!
//! `{list}` is `whitelist` (the allowlist) or `blacklist` (the blocklist). One set of handlers
//! serves every list route (see `lists`). Countries are ISO 3166-1 alpha-2 codes (plus `xk`);
//! AS numbers exclude the reserved 0, 23456 and 4294967295. Domain names are normalised (lower
//! case, one trailing dot dropped, Unicode to punycode) and validated: no `*` (an entry already
//! matches every subdomain), no spaces, no empty or over-long labels. A domain entry matches
//! the name and every subdomain, label-aware (`bad.com` never matches `badge.com`). JA3 is 32
//! hexadecimal digits; JA4 is `a_b_c` as in the FoxIO definition. Bad values are a 400 naming
//! the element (`countries[1]: "zz" is not an assigned ISO 3166-1 alpha-2 country code`,
//! `domains[0]: "bad .com": character ' ' is not allowed …`).
//!
//! * Mutations are idempotent (adding a present entry is 202 with `changed: 0`), store the
//!   canonical form (`10.1.2.3/8` is `10.0.0.0/8`, `Bad.COM.` is `bad.com`), remove exactly the
//!   given entries (removing `a.com` leaves `x.a.com`), and wait (bounded) for the dataplane:
//!   `applied: true` means the change is live.
//! * Validation is all-or-nothing: the first bad entry gives 400
//!   `{"error":"subnets[3]: \"300.1.1.1\" is not a valid IPv4 or IPv6 address"}` and nothing
//!   changes. Mutations need `Content-Type: application/json` (see `body::require_json` for
//!   why); bodies have exactly one field, the list's key, an array.
//! * Checking a prefix: the `{subnet}` segment is a catch-all, so all of these work:
//!   `/v1/whitelist/subnets/203.0.113.7`, `/v1/whitelist/subnets/10.0.0.0%2F8` (encoded
//!   slash) and `/v1/whitelist/subnets/10.0.0.0/8` (raw slash), and the same for IPv6
//!   (`/v1/whitelist/subnets/2001:db8::/32`). A query is found when a stored prefix covers it;
//!   a domain is found when it or a parent domain is stored.
//! * Errors are `{"error":"…"}` with 400, 401, 404, 405, 408 (request timeout), 413 (body or
//!   entry count over the limit), 500 (detail only in the log; for explain, the dataplane's
//!   refusal), 503 (explain without a dataplane) or 504 (explain unanswered); see [`error`].
//! * The request timeout bounds the time to the response head only: a following
//!   `/v1/events` stream is not cut by it.
//!
//! Must not: contain policy logic (handlers decode, call [`Controller`], encode), log
//! credentials, or answer anything without authentication.

pub mod auth;
mod body;
mod check;
pub mod error;
mod events;
mod explain;
mod feeds;
mod lists;
mod metrics;
pub mod openapi;
mod serve;
mod status;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::core::{Controller, MAX_ENTRIES_PER_REQUEST};

pub use auth::{Credentials, CredentialsError};
pub use error::ApiError;
pub use events::batch_lines;
pub use feeds::FeedsResponse;
pub use lists::{ChangeResponse, CheckResponse};
pub use serve::{ServeOptions, serve, serve_with};

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
    /// `None`: the controller runs without feeds (tests, or a router built by [`router`]).
    pub(crate) feeds: Option<Arc<crate::feeds::Feeds>>,
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
        feeds: feeds.clone(),
        max_entries: limits.max_entries,
    });
    let mut app = Router::new();
    for route in &lists::ROUTES {
        app = lists::routes(app, &state, route);
    }
    let ip_check = Arc::clone(&state);
    app = app.route(
        "/v1/check/{*ip}",
        get(move |ip: Result<Path<String>, PathRejection>| check::check(Arc::clone(&ip_check), ip)),
    );
    let s_explain = Arc::clone(&state);
    app = app.route(
        "/v1/explain/{*ip}",
        get(move |ip, params| explain::explain(Arc::clone(&s_explain), ip, params)),
    );
    let s_events = Arc::clone(&state);
    app = app.route(
        "/v1/events",
        get(move |params| events::events(Arc::clone(&s_events), params)),
    );
    let exposition =
        match crate::metrics::Metrics::new(Arc::clone(&state.controller), feeds.clone()) {
            Ok(m) => Some(Arc::new(m)),
            Err(error) => {
                tracing::error!(error = %error, "metrics are unavailable");
                None
            }
        };
    for path in ["/v1/metrics", "/metrics"] {
        let exposition = exposition.clone();
        app = app.route(path, get(move || metrics::metrics(exposition.clone())));
    }
    if let Some(feeds) = feeds {
        app = feeds::routes(app, feeds);
    }
    let s_status = Arc::clone(&state);
    app.route(
        "/v1/status",
        get(move || status::status(Arc::clone(&s_status))),
    )
    .route("/v1/openapi.json", get(openapi::openapi_json))
    .route("/swagger/doc.json", get(openapi::openapi_json))
    .route("/v1/docs", get(openapi::docs_page))
    .route("/swagger/index.html", get(openapi::docs_page))
    .route("/v1/docs/docs.js", get(openapi::docs_script))
    .route("/v1/docs/docs.css", get(openapi::docs_style))
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
