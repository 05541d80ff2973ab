//! `GET /v1/metrics` and `GET /metrics`: the Prometheus text exposition
//! ([`crate::metrics::Metrics::render`]), `text/plain; version=0.0.4; charset=utf-8`.

use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::metrics::{self, Metrics};

pub(crate) async fn metrics(exposition: Option<Arc<Metrics>>) -> Response {
    match exposition {
        Some(m) => ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], m.render()).into_response(),
        None => ApiError::Internal {
            detail: "the metrics registry could not be built".into(),
        }
        .into_response(),
    }
}
