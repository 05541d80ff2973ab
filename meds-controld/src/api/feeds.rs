//! `/v1/feeds`: the feeds' status, updates on demand and run-time settings. Decode, call
//! [`Feeds`], encode; no feed logic lives here.
//!
//! | Method | Path | Body | Answer |
//! |---|---|---|---|
//! | GET | `/v1/feeds` | — | 200 `{"feeds":[{"name":"firehol_level1","list":"firehol","enabled":true,"url":"…","entries":N,"last_success_unix":T,"last_attempt_unix":T,"next_update_unix":T,"last_error":"","failures":0,"rejected_lines":0},…]}` |
//! | POST | `/v1/feeds/update` | none, or `{"names":["feodo"]}` | 200 `{"feeds":[…]}` once every attempt has ended (the named feeds, or every enabled one) |
//! | PATCH | `/v1/feeds/{name}` | `{"enabled":false}`, `{"url":"file:///srv/mirror/drop.txt"}` (`""`: back to the default), or both | 200 the feed's status |
//!
//! Errors: 404 for an unknown feed name, 400 for a bad body or URL (only `http`, `https` and
//! `file` URLs) and for updating a disabled feed. An update that outlives the REST request
//! timeout (`--api-timeout`) is answered 408 but runs to its end; `GET /v1/feeds` shows it.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::HeaderMap;
use axum::routing::{get, patch, post};
use serde::{Deserialize, Serialize};

use super::body::require_json;
use super::error::ApiError;
use crate::feeds::{FeedStatus, Feeds};

/// `GET /v1/feeds` and `POST /v1/feeds/update`.
#[derive(Debug, Serialize)]
pub struct FeedsResponse {
    pub feeds: Vec<FeedStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    enabled: Option<bool>,
    url: Option<String>,
}

/// Add the `/v1/feeds` routes, served from `feeds`, to `app`.
pub(super) fn routes(app: Router, feeds: Arc<Feeds>) -> Router {
    let (f_list, f_update, f_patch) = (Arc::clone(&feeds), Arc::clone(&feeds), feeds);
    app.route("/v1/feeds", get(move || list(Arc::clone(&f_list))))
        .route(
            "/v1/feeds/update",
            post(
                move |headers: HeaderMap, body: Result<Bytes, BytesRejection>| {
                    update(Arc::clone(&f_update), headers, body)
                },
            ),
        )
        .route(
            "/v1/feeds/{name}",
            patch(
                move |name: Result<Path<String>, PathRejection>,
                      headers: HeaderMap,
                      body: Result<Bytes, BytesRejection>| {
                    configure(Arc::clone(&f_patch), name, headers, body)
                },
            ),
        )
}

async fn list(feeds: Arc<Feeds>) -> Json<FeedsResponse> {
    Json(FeedsResponse {
        feeds: feeds.statuses(),
    })
}

async fn update(
    feeds: Arc<Feeds>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<FeedsResponse>, ApiError> {
    let body = body?;
    // Always JSON, even without a body: a cross-site form or no-cors request (which a browser
    // may send with cached credentials) cannot carry this Content-Type.
    require_json(&headers)?;
    let request: UpdateBody = if body.iter().all(u8::is_ascii_whitespace) {
        UpdateBody::default()
    } else {
        decode(&headers, &body)?
    };
    let statuses = feeds.update(&request.names).await?;
    Ok(Json(FeedsResponse { feeds: statuses }))
}

async fn configure(
    feeds: Arc<Feeds>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<FeedStatus>, ApiError> {
    let Path(name) = name?;
    // The feed name is checked first, so an unknown feed is a 404 whatever the body says.
    feeds.status(&name)?;
    let request: PatchBody = decode(&headers, &body?)?;
    if request.enabled.is_none() && request.url.is_none() {
        return Err(ApiError::BadRequest(
            "nothing to change: set \"enabled\" (a boolean) and/or \"url\" (a string)".into(),
        ));
    }
    let status = feeds
        .configure(&name, request.enabled, request.url.as_deref())
        .await?;
    Ok(Json(status))
}

fn decode<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, ApiError> {
    require_json(headers)?;
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}
