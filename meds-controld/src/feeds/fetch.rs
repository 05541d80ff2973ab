//! `feeds::fetch`: download one feed body, carefully.
//!
//! * `http://` and `https://` through reqwest (rustls with the ring provider, the system's
//!   root certificates, proxy settings from the environment: `HTTPS_PROXY`, `NO_PROXY`, …);
//!   `file://` is read from disk (an air-gapped mirror). No other scheme is accepted
//!   ([`FeedUrl::parse`]).
//! * Every request names Meds in its `User-Agent`, follows at most [`MAX_REDIRECTS`] redirects
//!   and never from `https` down to `http`, and only 200 (a new body) and 304 (not modified,
//!   when we sent `If-None-Match` / `If-Modified-Since`) count as success.
//! * The body is read chunk by chunk and refused as soon as it goes over the size limit; a
//!   `Content-Length` over the limit is refused before reading. A body cut short (the
//!   connection closed before `Content-Length` bytes) is an error, never a shorter feed.
//! * One call is bounded by [`FetchOptions::timeout`], connect and whole body, retries and
//!   their back-off included. Transient failures (connection errors, a cut body, 408, 429,
//!   5xx) are retried up to [`FetchOptions::attempts`] times with a growing delay, as long as
//!   the delay still ends before the deadline.
//!
//! Must not: parse or judge the body (that is [`super::parse`] and the updater), buffer more
//! than the limit, or log response bodies.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{
    ETAG, HeaderMap, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use reqwest::{StatusCode, Url, redirect};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// Most redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;
/// Longest `ETag` / `Last-Modified` value we keep (a longer one is ignored).
const MAX_VALIDATOR_LEN: usize = 256;
/// Longest connect phase of one attempt (the deadline still bounds it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The `User-Agent` of every feed request.
pub fn user_agent() -> String {
    format!("meds/{} (+feeds)", env!("CARGO_PKG_VERSION"))
}

/// A feed URL we are willing to fetch: `http`, `https` or `file` (absolute path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedUrl(Url);

/// Why a URL is not usable for a feed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedUrlError {
    #[error("{url:?} is not a valid URL: {reason}")]
    Invalid { url: String, reason: String },
    #[error("{url:?}: scheme {scheme:?} is not allowed (only http, https and file)")]
    Scheme { url: String, scheme: String },
    #[error("{url:?}: an http(s) URL needs a host")]
    NoHost { url: String },
    #[error("{url:?}: a file URL needs an absolute local path (file:///path)")]
    FilePath { url: String },
}

impl FeedUrl {
    /// Validate `text` as a feed URL.
    pub fn parse(text: &str) -> Result<FeedUrl, FeedUrlError> {
        let shown: String = redact_text(text).chars().take(200).collect();
        let url = Url::parse(text).map_err(|e| FeedUrlError::Invalid {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
        match url.scheme() {
            "http" | "https" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(FeedUrlError::NoHost { url: shown });
                }
            }
            "file" => {
                if url.to_file_path().is_err() {
                    return Err(FeedUrlError::FilePath { url: shown });
                }
            }
            other => {
                return Err(FeedUrlError::Scheme {
                    url: shown,
                    scheme: other.to_string(),
                });
            }
        }
        Ok(FeedUrl(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    fn file_path(&self) -> Option<PathBuf> {
        (self.0.scheme() == "file")
            .then(|| self.0.to_file_path().ok())
            .flatten()
    }
}

impl std::fmt::Display for FeedUrl {
    /// The URL with any password and query string replaced by `***` (for logs and status; a
    /// mirror may carry credentials or an API key).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.password().is_none() && self.0.query().is_none() {
            return f.write_str(self.0.as_str());
        }
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            // Only fails for URLs that cannot have credentials, which this one has.
            let _ = shown.set_password(Some("***"));
        }
        if shown.query().is_some() {
            shown.set_query(Some("***"));
        }
        f.write_str(shown.as_str())
    }
}

/// `text` (an unparsed URL) with the user-info part and the query hidden, for error messages.
fn redact_text(text: &str) -> String {
    let (before_query, had_query) = match text.split_once('?') {
        Some((head, _)) => (head, true),
        None => (text, false),
    };
    let mut out = match before_query.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => before_query.to_string(),
            }
        }
        None => before_query.to_string(),
    };
    if had_query {
        out.push_str("?***");
    }
    out
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn secrets_never_reach_messages_or_display() {
        for bad in [
            "ftp://user:s3cret@mirror.example/x?key=abc123",
            "http://user:s3cret@/x?key=abc123",
        ] {
            let e = FeedUrl::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("s3cret") && !e.contains("abc123"), "{e}");
        }
        let url = FeedUrl::parse("https://user:s3cret@mirror.example/f.txt?key=abc123").unwrap();
        let shown = url.to_string();
        assert!(
            !shown.contains("s3cret") && !shown.contains("abc123"),
            "{shown}"
        );
        assert!(shown.contains("mirror.example/f.txt"), "{shown}");
        assert_eq!(redact_text("https://a.example/x"), "https://a.example/x");
    }
}

/// Validators from the last good copy, sent so that an unchanged feed costs a 304.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// What a successful fetch brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// A new body (HTTP 200, or a file), with the validators to send next time.
    Body {
        body: Vec<u8>,
        validators: Validators,
    },
    /// HTTP 304: the last good copy is still current.
    NotModified,
}

/// Why a fetch failed. Messages name no secret and quote no body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("HTTP 304 without a conditional request")]
    UnexpectedNotModified,
    #[error("body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("no complete answer within {} s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("{0}")]
    Http(String),
    #[error("reading {path}: {reason}")]
    File { path: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl FetchError {
    /// True for failures that another attempt may not repeat.
    fn is_transient(&self) -> bool {
        match self {
            FetchError::Status(code) => *code == 408 || *code == 429 || *code >= 500,
            FetchError::Http(_) => true,
            FetchError::UnexpectedNotModified
            | FetchError::TooLarge { .. }
            | FetchError::Timeout(_)
            | FetchError::File { .. }
            | FetchError::Client(_) => false,
        }
    }
}

/// How one feed is fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchOptions {
    /// Bound on one [`Fetcher::fetch`] call: every attempt, connect and whole body, and the
    /// delays between attempts.
    pub timeout: Duration,
    /// Largest body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Attempts per call (at least 1).
    pub attempts: u32,
    /// Delay before the second attempt; each later delay is 5 times longer, up to
    /// `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for FetchOptions {
    /// 1 min, 64 MiB, 3 attempts, 2 s then 10 s apart.
    fn default() -> FetchOptions {
        FetchOptions {
            timeout: Duration::from_secs(60),
            max_body_bytes: super::parse::Limits::default().max_body_bytes,
            attempts: 3,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Fetches feed bodies. Cheap to share; holds one connection pool.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    options: FetchOptions,
}

/// Make ring the process's rustls provider (reqwest is built without one, to stay clear of
/// aws-lc's C build). A provider installed earlier, by us or anyone, is kept.
fn install_crypto_provider() {
    // `Err` only means a provider is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Follow at most [`MAX_REDIRECTS`] redirects, never from https to http.
fn redirect_policy() -> redirect::Policy {
    redirect::Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() != "https"
            && attempt.previous().iter().any(|u| u.scheme() == "https");
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else if downgrade {
            attempt.error("redirect from https to a plain http URL refused")
        } else {
            attempt.follow()
        }
    })
}

impl Fetcher {
    pub fn new(options: FetchOptions) -> Result<Fetcher, FetchError> {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .user_agent(user_agent())
            .redirect(redirect_policy())
            .connect_timeout(CONNECT_TIMEOUT.min(options.timeout))
            .build()
            .map_err(|e| FetchError::Client(error_chain(e)))?;
        Ok(Fetcher { client, options })
    }

    pub fn options(&self) -> &FetchOptions {
        &self.options
    }

    /// Fetch `url`, sending `validators` (if any) so that an unchanged feed answers 304.
    pub async fn fetch(
        &self,
        url: &FeedUrl,
        validators: &Validators,
    ) -> Result<Fetched, FetchError> {
        let deadline = Instant::now() + self.options.timeout;
        let mut delay = self.options.backoff;
        let mut attempt = 1;
        loop {
            let result =
                match tokio::time::timeout_at(deadline, self.attempt(url, validators)).await {
                    Ok(result) => result,
                    Err(_) => Err(FetchError::Timeout(self.options.timeout)),
                };
            match result {
                Err(e) if e.is_transient() && attempt < self.options.attempts.max(1) => {
                    if Instant::now() + delay >= deadline {
                        return Err(e);
                    }
                    tracing::debug!(url = %url, attempt, error = %e, delay_ms = delay.as_millis() as u64, "feed fetch failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 5).min(self.options.max_backoff.max(self.options.backoff));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn attempt(&self, url: &FeedUrl, validators: &Validators) -> Result<Fetched, FetchError> {
        match url.file_path() {
            Some(path) => self.read_file(path).await,
            None => self.get(url, validators).await,
        }
    }

    async fn read_file(&self, path: PathBuf) -> Result<Fetched, FetchError> {
        let limit = self.options.max_body_bytes;
        let fail = |e: std::io::Error| FetchError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let file = tokio::fs::File::open(&path).await.map_err(fail)?;
        let mut body = Vec::new();
        // One byte more than allowed tells "exactly at the limit" from "over it".
        file.take(limit as u64 + 1)
            .read_to_end(&mut body)
            .await
            .map_err(fail)?;
        if body.len() > limit {
            return Err(FetchError::TooLarge { limit });
        }
        Ok(Fetched::Body {
            body,
            validators: Validators::default(),
        })
    }

    async fn get(&self, url: &FeedUrl, validators: &Validators) -> Result<Fetched, FetchError> {
        let limit = self.options.max_body_bytes;
        let mut request = self.client.get(url.0.clone());
        if let Some(etag) = header_value(validators.etag.as_deref()) {
            request = request.header(IF_NONE_MATCH, etag);
        }
        if let Some(since) = header_value(validators.last_modified.as_deref()) {
            request = request.header(IF_MODIFIED_SINCE, since);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| FetchError::Http(error_chain(e)))?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_MODIFIED if !validators.is_empty() => return Ok(Fetched::NotModified),
            StatusCode::NOT_MODIFIED => return Err(FetchError::UnexpectedNotModified),
            other => return Err(FetchError::Status(other.as_u16())),
        }
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(FetchError::TooLarge { limit });
        }
        let validators = Validators {
            etag: validator(response.headers(), ETAG),
            last_modified: validator(response.headers(), LAST_MODIFIED),
        };
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::Http(error_chain(e)))?
        {
            if body.len() + chunk.len() > limit {
                return Err(FetchError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched::Body { body, validators })
    }
}

fn header_value(value: Option<&str>) -> Option<HeaderValue> {
    value.and_then(|v| HeaderValue::from_str(v).ok())
}

/// A response validator worth keeping: visible ASCII, not too long.
fn validator(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?;
    (!value.is_empty() && value.len() <= MAX_VALIDATOR_LEN).then(|| value.to_string())
}

/// The error with its causes ("error sending request: connection refused"), without the URL's
/// query string or credentials (reqwest errors carry the URL; we report it separately).
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let ok = [
            "https://www.spamhaus.org/drop/drop.txt",
            "http://127.0.0.1:8080/feed.txt",
            "file:///var/lib/meds/mirror/drop.txt",
        ];
        for url in ok {
            assert_eq!(FeedUrl::parse(url).unwrap().as_str(), url);
        }
        let bad: [(&str, &str); 6] = [
            ("ftp://example.org/x", "scheme \"ftp\""),
            ("javascript:alert(1)", "scheme"),
            ("not a url", "not a valid URL"),
            ("", "not a valid URL"),
            ("file://relative", "absolute local path"),
            ("http://", "not a valid URL"),
        ];
        for (url, want) in bad {
            let err = FeedUrl::parse(url).unwrap_err().to_string();
            assert!(err.contains(want), "{url}: {err}");
        }
    }

    #[test]
    fn passwords_are_not_shown() {
        let url = FeedUrl::parse("https://user:s3cret@mirror.example/drop.txt").unwrap();
        assert_eq!(url.to_string(), "https://user:***@mirror.example/drop.txt");
        assert_eq!(url.as_str(), "https://user:s3cret@mirror.example/drop.txt");
        let plain = FeedUrl::parse("https://mirror.example/drop.txt").unwrap();
        assert_eq!(plain.to_string(), plain.as_str());
    }

    #[test]
    fn transient_failures_are_the_retryable_ones() {
        let cases = [
            (FetchError::Status(500), true),
            (FetchError::Status(503), true),
            (FetchError::Status(429), true),
            (FetchError::Status(408), true),
            (FetchError::Status(404), false),
            (FetchError::Status(403), false),
            (FetchError::Http("connection refused".into()), true),
            (FetchError::TooLarge { limit: 1 }, false),
            (FetchError::Timeout(Duration::from_secs(1)), false),
            (FetchError::UnexpectedNotModified, false),
        ];
        for (e, transient) in cases {
            assert_eq!(e.is_transient(), transient, "{e}");
        }
    }

    #[test]
    fn user_agent_names_meds() {
        assert!(user_agent().starts_with("meds/"));
        assert!(user_agent().ends_with("(+feeds)"));
    }
}
