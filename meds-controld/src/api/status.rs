//! `GET /v1/status`: the controller's [`Status`](crate::core::Status) as JSON.
//! `dataplane_settings` is the dataplane's reported settings object, or `null` when none was
//! reported (no dataplane seen yet, or one older than the field).

use std::sync::Arc;

use axum::Json;

use super::ApiState;
use crate::core::Status;

pub(crate) async fn status(state: Arc<ApiState>) -> Json<Status> {
    Json(state.controller.status())
}
