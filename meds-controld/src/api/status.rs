//! `GET /v1/status`: the controller's [`Status`](crate::core::Status) as JSON, plus every
//! feed's status (`feeds`, the objects of `GET /v1/feeds`; empty without feeds) and `health`:
//! `{"ok":bool,"problems":["no dataplane connected",…]}` (see [`crate::health`]).
//! `dataplane_settings` is the dataplane's reported settings object, or `null` when none was
//! reported (no dataplane seen yet, or one older than the field).

use std::sync::Arc;

use axum::Json;
use serde::Serialize;

use super::ApiState;
use crate::core::Status;
use crate::feeds::FeedStatus;

#[derive(Debug, Serialize)]
pub(crate) struct StatusResponse {
    health: Health,
    #[serde(flatten)]
    status: Status,
    feeds: Vec<FeedStatus>,
}

#[derive(Debug, Serialize)]
struct Health {
    ok: bool,
    problems: Vec<String>,
}

pub(crate) async fn status(state: Arc<ApiState>) -> Json<StatusResponse> {
    let status = state.controller.status();
    let feeds = state
        .feeds
        .as_ref()
        .map(|f| f.statuses())
        .unwrap_or_default();
    let problems = crate::health::problems(&status, &feeds);
    Json(StatusResponse {
        health: Health {
            ok: problems.is_empty(),
            problems,
        },
        status,
        feeds,
    })
}
