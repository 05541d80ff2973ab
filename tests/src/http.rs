//! A tiny HTTP/1.1 client over `std::net::TcpStream` for the REST tests: one request per
//! connection (`Connection: close`), Basic Auth, JSON bodies, content-length / chunked / EOF
//! framed responses. Enough for tests; not a general client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::Value;

/// Deadline for connecting, sending and receiving.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response the client reads.
const MAX_RESPONSE: u64 = 16 * 1024 * 1024;

/// A decoded response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("HTTP {} body is not JSON: {:?}", self.status, self.body))
    }
}

/// Send one request. `path` goes on the request line as given (already percent-encoded).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    body: Option<&str>,
) -> Result<Response> {
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some((user, pass)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        req.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    stream
        .write_all(req.as_bytes())
        .with_context(|| format!("send {method} {path}"))?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut raw)
        .with_context(|| format!("read response to {method} {path}"))?;
    parse_response(&raw).with_context(|| format!("response to {method} {path}"))
}

/// Parse a complete HTTP/1.1 response (the connection was read to EOF).
pub fn parse_response(raw: &[u8]) -> Result<Response> {
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("no end of headers in {} bytes", raw.len());
    };
    let head = std::str::from_utf8(&raw[..head_end]).context("headers are not UTF-8")?;
    let rest = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("bad status line {status_line:?}");
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            bail!("bad header line {line:?}");
        };
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let body: Vec<u8> =
        if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            dechunk(rest)?
        } else if let Some(len) = find("content-length") {
            let len: usize = len
                .parse()
                .with_context(|| format!("bad content-length {len:?}"))?;
            if rest.len() < len {
                bail!("body has {} of {len} bytes", rest.len());
            }
            rest[..len].to_vec()
        } else {
            rest.to_vec()
        };
    Ok(Response {
        status,
        headers,
        body: String::from_utf8(body).context("body is not UTF-8")?,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            bail!("chunk size line not terminated");
        };
        let size_line = std::str::from_utf8(&data[..eol]).context("chunk size not UTF-8")?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .with_context(|| format!("bad chunk size {size_line:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 || &data[size..size + 2] != b"\r\n" {
            bail!("truncated chunk of {size} bytes");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_framed_every_way() -> Result<()> {
        let cases: [(&[u8], u16, &str); 4] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra", 200, "{}"),
            (b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\n\r\n", 401, ""),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n",
                200,
                "{\"a\":1}",
            ),
            (b"HTTP/1.0 400 Bad Request\r\n\r\nbad cidr", 400, "bad cidr"),
        ];
        for (raw, status, body) in cases {
            let r = parse_response(raw)?;
            assert_eq!((r.status, r.body.as_str()), (status, body));
        }
        let r = parse_response(cases[1].0)?;
        assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"x\""));
        Ok(())
    }

    #[test]
    fn malformed_responses_are_errors() {
        let cases: [&[u8]; 6] = [
            b"",
            b"HTTP/1.1 200 OK\r\n",
            b"SPDY 200 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ];
        for raw in cases {
            assert!(
                parse_response(raw).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
