//! HTTP Basic authentication for every request, found route or not.
//!
//! The check compares both the user name and the password in constant time with `subtle`,
//! always both (no early exit on a wrong user name), and over the longer of the given and the
//! expected value so that timing does not reveal the expected length either. The password is
//! never logged and never appears in `Debug` output.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use subtle::{Choice, ConstantTimeEq};

use super::error::ApiError;

/// Base64 as browsers and curl send it; padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The one API account (from `MEDS_USERNAME` / `MEDS_PASSWORD`).
#[derive(Clone)]
pub struct Credentials {
    username: String,
    password: String,
}

/// Why a user name or password cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("the API user name (MEDS_USERNAME) is empty")]
    EmptyUsername,
    #[error("the API password (MEDS_PASSWORD) is empty")]
    EmptyPassword,
    #[error("the API user name (MEDS_USERNAME) contains ':', which HTTP Basic auth cannot carry")]
    ColonInUsername,
}

impl Credentials {
    /// Both values must be non-empty; the user name must not contain `:`.
    pub fn new(
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Result<Credentials, CredentialsError> {
        let username = username.into();
        let password = password.into();
        if username.is_empty() {
            return Err(CredentialsError::EmptyUsername);
        }
        if password.is_empty() {
            return Err(CredentialsError::EmptyPassword);
        }
        if username.contains(':') {
            return Err(CredentialsError::ColonInUsername);
        }
        Ok(Credentials { username, password })
    }

    /// The user name (not secret).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Check an `Authorization` header value. The error is a reason safe to show the client.
    pub fn verify(&self, authorization: Option<&HeaderValue>) -> Result<(), &'static str> {
        let Some(value) = authorization else {
            return Err("authentication required");
        };
        let malformed = "malformed Authorization header: expected Basic credentials";
        let text = value.to_str().map_err(|_| malformed)?.trim();
        let (scheme, token) = text.split_once(' ').ok_or(malformed)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(malformed);
        }
        let decoded = BASE64.decode(token.trim()).map_err(|_| malformed)?;
        let colon = decoded.iter().position(|&b| b == b':').ok_or(malformed)?;
        // INVARIANT: `colon` indexes a ':' byte, so both ranges are in bounds.
        let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
        let ok = ct_eq(user, self.username.as_bytes()) & ct_eq(pass, self.password.as_bytes());
        if bool::from(ok) {
            Ok(())
        } else {
            Err("invalid user name or password")
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Equality whose running time depends only on the longer length, never on where the
/// values first differ.
fn ct_eq(given: &[u8], expected: &[u8]) -> Choice {
    let n = given.len().max(expected.len());
    let mut same = (given.len() as u64).ct_eq(&(expected.len() as u64));
    for i in 0..n {
        let g = given.get(i).copied().unwrap_or(0);
        let e = expected.get(i).copied().unwrap_or(0);
        same &= g.ct_eq(&e);
    }
    same
}

/// Middleware: let the request through only with the right credentials.
pub(crate) async fn require(
    State(credentials): State<Arc<Credentials>>,
    request: Request,
    next: Next,
) -> Response {
    match credentials.verify(request.headers().get(header::AUTHORIZATION)) {
        Ok(()) => next.run(request).await,
        Err(reason) => {
            tracing::debug!(reason, "API request refused: not authenticated");
            ApiError::Unauthorized(reason).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(raw: &[u8]) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
        .unwrap()
    }

    #[test]
    fn constructor_refuses_unusable_values() {
        assert_eq!(
            Credentials::new("", "p").unwrap_err(),
            CredentialsError::EmptyUsername
        );
        assert_eq!(
            Credentials::new("u", "").unwrap_err(),
            CredentialsError::EmptyPassword
        );
        assert_eq!(
            Credentials::new("a:b", "p").unwrap_err(),
            CredentialsError::ColonInUsername
        );
        assert!(Credentials::new("u", "p:with:colons").is_ok());
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = Credentials::new("admin", "s3cret-value").unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret-value"), "{shown}");
        assert!(shown.contains("admin"));
    }

    #[test]
    fn verify_table() {
        let c = Credentials::new("admin", "pa:ss").unwrap();
        let ok = Ok(());
        let wrong = Err("invalid user name or password");
        let malformed = Err("malformed Authorization header: expected Basic credentials");
        let cases: Vec<(Option<HeaderValue>, Result<(), &str>)> = vec![
            (None, Err("authentication required")),
            (Some(basic(b"admin:pa:ss")), ok),
            (Some(HeaderValue::from_static("basic YWRtaW46cGE6c3M=")), ok),
            (
                Some(HeaderValue::from_static("BASIC   YWRtaW46cGE6c3M")),
                ok,
            ), // unpadded
            (Some(basic(b"admin:pa:s")), wrong),
            (Some(basic(b"admin:pa:sss")), wrong),
            (Some(basic(b"admin:")), wrong),
            (Some(basic(b"admi:pa:ss")), wrong),
            (Some(basic(b"adminn:pa:ss")), wrong),
            (Some(basic(b"Admin:pa:ss")), wrong),
            (Some(basic(b":")), wrong),
            (Some(basic(b"adminpass")), malformed),
            (Some(basic(b"")), malformed),
            (
                Some(HeaderValue::from_static("Bearer YWRtaW46cGE6c3M=")),
                malformed,
            ),
            (Some(HeaderValue::from_static("Basic")), malformed),
            (
                Some(HeaderValue::from_static("Basic !!!not-base64")),
                malformed,
            ),
            (
                Some(HeaderValue::from_bytes(b"Basic \xff\xfe").unwrap()),
                malformed,
            ),
        ];
        for (header, want) in cases {
            assert_eq!(c.verify(header.as_ref()), want, "{header:?}");
        }
    }

    #[test]
    fn ct_eq_edges() {
        let cases: [(&[u8], &[u8], bool); 6] = [
            (b"", b"", true),
            (b"a", b"a", true),
            (b"a", b"", false),
            (b"", b"a", false),
            (b"a\0", b"a", false), // zero padding must not make these equal
            (b"abc", b"abd", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(bool::from(ct_eq(a, b)), want, "{a:?} vs {b:?}");
        }
    }
}
