//! `GET /v1/status`: the controller's [`Status`](crate::core::Status) as JSON.

use std::sync::Arc;

use axum::Json;

use super::ApiState;
use crate::core::Status;

pub(crate) async fn status(state: Arc<ApiState>) -> Json<Status> {
    Json(state.controller.status())
}
