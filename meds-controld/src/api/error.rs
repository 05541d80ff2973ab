//! The one place where API failures become HTTP: every error response is
//! `{"error":"<message>"}` with `Content-Type: application/json` and one of the status codes
//! below. Extractor rejections (body, path) are converted here too, so axum's plain-text
//! rejection bodies never reach a client.
//!
//! Internal failures (500) answer with a short fixed message; the detail goes to the log only.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::core::CoreError;

/// The challenge sent with every 401.
pub const WWW_AUTHENTICATE: &str = "Basic realm=\"meds\"";

/// A failed API request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed; the message says what and where.
    #[error("{0}")]
    BadRequest(String),
    /// 401: credentials missing or wrong. The reason is for the client, never the secret.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 404: no such route.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists but not for this method.
    #[error("method {method} is not allowed here")]
    MethodNotAllowed { method: String },
    /// 408: the request took longer than the configured request timeout.
    #[error("request did not complete within {} s", .0.as_secs_f64())]
    Timeout(Duration),
    /// 413: the body or the number of entries is over a limit.
    #[error("{0}")]
    TooLarge(String),
    /// 503: a service the request needs is not there (no connected dataplane).
    #[error("{0}")]
    Unavailable(String),
    /// 504: the dataplane did not answer in time.
    #[error("{0}")]
    GatewayTimeout(String),
    /// 500 with a message for the client: the dataplane refused what we asked (its text).
    #[error("{0}")]
    Dataplane(String),
    /// 500: something failed on our side. `detail` is logged, never sent.
    #[error("internal error")]
    Internal { detail: String },
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl ApiError {
    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Dataplane(_) | ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal { detail } => {
                tracing::error!(%detail, "API request failed");
                "internal error; see the controller log".to_string()
            }
            other => other.to_string(),
        };
        let mut response = (status, Json(ErrorBody { error: &message })).into_response();
        if let ApiError::Unauthorized(_) = self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(WWW_AUTHENTICATE),
            );
        }
        response
    }
}

impl From<CoreError> for ApiError {
    fn from(err: CoreError) -> ApiError {
        match err {
            CoreError::TooManyEntries { .. } => ApiError::TooLarge(err.to_string()),
            CoreError::FeedList(_) => ApiError::BadRequest(err.to_string()),
            CoreError::Store(_) | CoreError::Task(_) => ApiError::Internal {
                detail: err.to_string(),
            },
        }
    }
}

impl From<crate::feeds::FeedsError> for ApiError {
    fn from(err: crate::feeds::FeedsError) -> ApiError {
        use crate::feeds::FeedsError;
        match err {
            FeedsError::UnknownFeed { .. } => ApiError::NotFound(err.to_string()),
            FeedsError::Url(_) | FeedsError::Disabled(_) => ApiError::BadRequest(err.to_string()),
            FeedsError::Core(core) => core.into(),
            FeedsError::Fetch(_) => ApiError::Internal {
                detail: err.to_string(),
            },
        }
    }
}

impl From<crate::explain::ExplainError> for ApiError {
    fn from(err: crate::explain::ExplainError) -> ApiError {
        use crate::explain::ExplainError;
        match err {
            ExplainError::Invalid { .. } => ApiError::BadRequest(err.to_string()),
            ExplainError::NoDataplane | ExplainError::Busy => {
                ApiError::Unavailable(err.to_string())
            }
            ExplainError::Timeout(_) => ApiError::GatewayTimeout(err.to_string()),
            ExplainError::Refused(_) => {
                tracing::error!(error = %err, "the dataplane refused an explain request");
                ApiError::Dataplane(err.to_string())
            }
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge("request body is larger than the configured limit".to_string())
        } else {
            ApiError::BadRequest(format!(
                "cannot read the request body: {}",
                rejection.body_text()
            ))
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        if rejection.status().is_server_error() {
            ApiError::Internal {
                detail: rejection.body_text(),
            }
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    async fn body_of(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn status_and_body_for_every_kind() {
        let cases: Vec<(ApiError, StatusCode, &str)> = vec![
            (
                ApiError::BadRequest("x".into()),
                StatusCode::BAD_REQUEST,
                r#"{"error":"x"}"#,
            ),
            (
                ApiError::Unauthorized("authentication required"),
                StatusCode::UNAUTHORIZED,
                r#"{"error":"authentication required"}"#,
            ),
            (
                ApiError::NotFound("no such route: /a".into()),
                StatusCode::NOT_FOUND,
                r#"{"error":"no such route: /a"}"#,
            ),
            (
                ApiError::MethodNotAllowed {
                    method: "PUT".into(),
                },
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"method PUT is not allowed here"}"#,
            ),
            (
                ApiError::Timeout(Duration::from_millis(1500)),
                StatusCode::REQUEST_TIMEOUT,
                r#"{"error":"request did not complete within 1.5 s"}"#,
            ),
            (
                ApiError::TooLarge("big".into()),
                StatusCode::PAYLOAD_TOO_LARGE,
                r#"{"error":"big"}"#,
            ),
            (
                ApiError::from(CoreError::TooManyEntries { given: 5, max: 4 }),
                StatusCode::PAYLOAD_TOO_LARGE,
                r#"{"error":"5 entries in one request: the limit is 4"}"#,
            ),
            (
                ApiError::from(CoreError::Store(StoreError::MissingGeneration {
                    path: "/secret/place/meds.db".into(),
                })),
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"error":"internal error; see the controller log"}"#,
            ),
            (
                ApiError::from(CoreError::Task("panicked at src/core.rs".into())),
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"error":"internal error; see the controller log"}"#,
            ),
        ];
        for (err, status, body) in cases {
            let unauthorized = matches!(err, ApiError::Unauthorized(_));
            let response = err.into_response();
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            assert_eq!(
                response.headers().get(header::WWW_AUTHENTICATE).is_some(),
                unauthorized
            );
            assert_eq!(body_of(response).await, body);
        }
    }
}
