//! The TLS ClientHello, read from one TCP payload without copying (unless the hello is split
//! over several TLS records) and without trusting a single length.
//!
//! What [`parse`] accepts: a payload that starts with a TLS handshake record (content type 22,
//! record version 3.0–3.4) whose first handshake message is a ClientHello. The handshake message
//! may be fragmented over several consecutive handshake records inside the payload; their bytes
//! are joined in the caller's scratch buffer (bounded by [`MAX_HELLO_LEN`]). Anything else is
//! [`HelloOutcome::NotTls`] (including SSLv2-compatible hellos, which no current client sends);
//! a payload that ends before the hello does is [`HelloOutcome::Incomplete`], so the flow
//! table can keep the segment and feed the joined bytes again; a hello whose bytes are all there
//! but do not add up is a [`ClientHelloError`].
//!
//! Strictness, decided here and relied on by the fingerprints:
//! * Every vector length must fit its enclosing field exactly; bytes after the extensions block
//!   or after a list inside an extension are an error, not ignored. Bytes after the ClientHello
//!   message itself (a second message or record in the same payload) are ignored.
//! * Extension bodies are read only for the six extensions the filters use (server_name,
//!   supported_groups, ec_point_formats, signature_algorithms, ALPN, supported_versions); all
//!   others, GREASE included, are kept as raw `(type, body)` in the order sent.
//! * A repeated extension (forbidden by RFC 8446 §4.2) is kept in the extension list as sent,
//!   and its typed fields come from its first occurrence.
//! * SNI: the first `host_name` (type 0) entry of the server_name list is [`ClientHello::sni`]
//!   (RFC 6066 allows one per type; OpenSSL rejects lists with more entries, the original Meds
//!   used the last one). [`ClientHello::host_names`] yields every `host_name` entry, so a
//!   blocklist can check all of them. Every entry is length-checked, including the crafted
//!   overrunning entry that crashed the original's parser (W8a). A host name must be 1–255
//!   bytes of ASCII letters, digits, `-`, `_` and `.` (an IP literal passes; case is kept); any
//!   other byte makes the hello an error, so an odd name cannot slip past a domain blocklist as
//!   "no SNI".
//! * ALPN protocol names must be non-empty (RFC 7301).

use std::fmt;

/// Largest TLS record fragment accepted (2^14, RFC 8446 §5.1).
pub const MAX_RECORD_LEN: usize = 1 << 14;
/// Largest ClientHello body accepted. Current post-quantum hellos are about 1.8 KiB; 16 KiB
/// leaves room for large session tickets and padding and bounds the scratch buffer.
pub const MAX_HELLO_LEN: usize = 1 << 14;

const CONTENT_TYPE_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
const MAX_SESSION_ID_LEN: usize = 32;
const MAX_HOST_NAME_LEN: usize = 255;
const SNI_HOST_NAME: u8 = 0;

/// Extension type numbers used by the parser and the fingerprints.
pub mod ext {
    pub const SERVER_NAME: u16 = 0;
    pub const SUPPORTED_GROUPS: u16 = 10;
    pub const EC_POINT_FORMATS: u16 = 11;
    pub const SIGNATURE_ALGORITHMS: u16 = 13;
    pub const ALPN: u16 = 16;
    pub const SUPPORTED_VERSIONS: u16 = 43;
}

/// What one payload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloOutcome<'a> {
    /// A whole, well-formed ClientHello.
    Complete(ClientHello<'a>),
    /// The payload is the start of a ClientHello that continues beyond it: at least `needed`
    /// more bytes are required (a lower bound; the caller may reassemble and try again).
    Incomplete { needed: usize },
    /// Not the start of a TLS ClientHello (another protocol, or another TLS message).
    NotTls,
}

/// A payload that starts like a ClientHello but is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientHelloError {
    #[error("TLS record of {len} bytes exceeds {MAX_RECORD_LEN}")]
    RecordTooLong { len: usize },
    #[error("empty TLS handshake record")]
    EmptyRecord,
    #[error("TLS record of content type {content_type} inside a split ClientHello")]
    UnexpectedRecord { content_type: u8 },
    #[error("TLS record version {major}.{minor} inside a split ClientHello")]
    UnexpectedVersion { major: u8, minor: u8 },
    #[error("ClientHello of {len} bytes exceeds {MAX_HELLO_LEN}")]
    HelloTooLong { len: usize },
    #[error("ClientHello field {field} runs past its enclosing length")]
    Truncated { field: &'static str },
    #[error("ClientHello field {field} has an invalid length")]
    BadLength { field: &'static str },
    #[error("{extra} unexpected bytes after ClientHello field {field}")]
    TrailingBytes { field: &'static str, extra: usize },
    #[error("ClientHello session id of {len} bytes exceeds 32")]
    SessionIdTooLong { len: usize },
    #[error("ClientHello server name is not a host name")]
    InvalidServerName,
}

/// A list of big-endian `u16` values, borrowed from the hello (always an even number of bytes).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct U16List<'a>(&'a [u8]);

impl<'a> U16List<'a> {
    /// An empty list (what an absent extension gives).
    pub const EMPTY: U16List<'static> = U16List(&[]);

    /// `None` for an odd number of bytes.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        bytes.len().is_multiple_of(2).then_some(Self(bytes))
    }

    pub fn len(&self) -> usize {
        self.0.len() / 2
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + 'a {
        self.0
            .chunks_exact(2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}

impl fmt::Debug for U16List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|v| format!("{v:#06x}")))
            .finish()
    }
}

/// The extensions block, validated: iterates `(type, body)` in the order sent, GREASE included.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Extensions<'a>(&'a [u8]);

impl<'a> Extensions<'a> {
    pub fn iter(&self) -> ExtensionIter<'a> {
        ExtensionIter(Reader::new(self.0))
    }

    /// Extension types in the order sent.
    pub fn types(&self) -> impl Iterator<Item = u16> + 'a {
        self.iter().map(|(ty, _)| ty)
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ty: u16) -> bool {
        self.types().any(|t| t == ty)
    }
}

impl fmt::Debug for Extensions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(ty, body)| (ty, body.len())))
            .finish()
    }
}

/// Iterator over a validated extensions block.
#[derive(Clone)]
pub struct ExtensionIter<'a>(Reader<'a>);

impl<'a> Iterator for ExtensionIter<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // The block was validated by `parse_body`; a failure here just ends the iteration.
        let ty = self.0.u16("extension type").ok()?;
        let body = self.0.vec16("extension").ok()?;
        Some((ty, body))
    }
}

/// A ClientHello, borrowed from the payload (or from the scratch buffer of a split hello).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello<'a> {
    /// `legacy_version` / `client_version` (0x0303 even for TLS 1.3 clients).
    pub legacy_version: u16,
    pub random: &'a [u8],
    pub session_id: &'a [u8],
    pub cipher_suites: U16List<'a>,
    pub compression_methods: &'a [u8],
    /// Empty when the hello has no extensions block (SSLv3-style) or an empty one.
    pub extensions: Extensions<'a>,
    /// The first `host_name` entry of the first server_name extension, validated (see the
    /// module doc).
    pub sni: Option<&'a str>,
    /// The first ALPN protocol name (non-empty).
    pub alpn_first: Option<&'a [u8]>,
    pub supported_groups: U16List<'a>,
    pub ec_point_formats: &'a [u8],
    pub signature_algorithms: U16List<'a>,
    pub supported_versions: U16List<'a>,
    /// The validated server_name list (entries), empty when there is none.
    server_names: &'a [u8],
}

impl<'a> ClientHello<'a> {
    /// Every `host_name` entry of the server_name extension, in order (validated).
    pub fn host_names(&self) -> impl Iterator<Item = &'a str> + 'a {
        let mut reader = Reader::new(self.server_names);
        std::iter::from_fn(move || {
            loop {
                let ty = reader.u8("server_name type").ok()?;
                let name = reader.vec16("server_name").ok()?;
                if ty == SNI_HOST_NAME {
                    return std::str::from_utf8(name).ok();
                }
            }
        })
    }
}

/// Parse the ClientHello at the start of one TCP payload.
///
/// `scratch` is used only when the handshake message is split over several TLS records in the
/// payload; it is cleared first and grows to at most [`MAX_HELLO_LEN`] + 4 bytes, so a worker
/// that keeps one buffer allocates once. The returned hello borrows from `payload` or from
/// `scratch`.
pub fn parse<'a>(
    payload: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> Result<HelloOutcome<'a>, ClientHelloError> {
    let body = match frame(payload)? {
        Framing::NotTls => return Ok(HelloOutcome::NotTls),
        Framing::Incomplete { needed } => return Ok(HelloOutcome::Incomplete { needed }),
        Framing::Single(body) => body,
        Framing::Split { total } => join_records(payload, total, scratch)?,
    };
    parse_body(body).map(HelloOutcome::Complete)
}

/// Parse a ClientHello handshake body (after the 4-byte handshake header), e.g. from QUIC
/// CRYPTO frames, where there is no record layer. The body must be complete.
pub fn parse_body(body: &[u8]) -> Result<ClientHello<'_>, ClientHelloError> {
    let mut r = Reader::new(body);
    let legacy_version = r.u16("legacy_version")?;
    let random = r.take(32, "random")?;
    let session_id = r.vec8("session_id")?;
    if session_id.len() > MAX_SESSION_ID_LEN {
        return Err(ClientHelloError::SessionIdTooLong {
            len: session_id.len(),
        });
    }
    let cipher_suites =
        U16List::new(r.vec16("cipher_suites")?).ok_or(ClientHelloError::BadLength {
            field: "cipher_suites",
        })?;
    let compression_methods = r.vec8("compression_methods")?;
    let mut hello = ClientHello {
        legacy_version,
        random,
        session_id,
        cipher_suites,
        compression_methods,
        extensions: Extensions::default(),
        sni: None,
        alpn_first: None,
        supported_groups: U16List::EMPTY,
        ec_point_formats: &[],
        signature_algorithms: U16List::EMPTY,
        supported_versions: U16List::EMPTY,
        server_names: &[],
    };
    if r.is_empty() {
        return Ok(hello);
    }
    let block = r.vec16("extensions")?;
    r.finish("extensions")?;
    read_extensions(block, &mut hello)?;
    hello.extensions = Extensions(block);
    Ok(hello)
}

/// Validate every extension and fill the typed fields (first occurrence wins).
fn read_extensions<'a>(
    block: &'a [u8],
    hello: &mut ClientHello<'a>,
) -> Result<(), ClientHelloError> {
    let mut r = Reader::new(block);
    let mut seen = Seen::default();
    while !r.is_empty() {
        let ty = r.u16("extension type")?;
        let body = r.vec16("extension")?;
        match ty {
            ext::SERVER_NAME if !seen.server_name => {
                seen.server_name = true;
                let list = whole_vec16(body, "server_name")?;
                if list.is_empty() {
                    return Err(ClientHelloError::BadLength {
                        field: "server_name",
                    });
                }
                hello.sni = read_server_names(list)?;
                hello.server_names = list;
            }
            ext::ALPN if !seen.alpn => {
                seen.alpn = true;
                let list = whole_vec16(body, "alpn")?;
                let mut names = Reader::new(list);
                if names.is_empty() {
                    return Err(ClientHelloError::BadLength { field: "alpn" });
                }
                while !names.is_empty() {
                    let name = names.vec8("alpn protocol")?;
                    if name.is_empty() {
                        return Err(ClientHelloError::BadLength {
                            field: "alpn protocol",
                        });
                    }
                    hello.alpn_first.get_or_insert(name);
                }
            }
            ext::SUPPORTED_GROUPS if !seen.groups => {
                seen.groups = true;
                hello.supported_groups = whole_u16_list16(body, "supported_groups")?;
            }
            ext::EC_POINT_FORMATS if !seen.point_formats => {
                seen.point_formats = true;
                hello.ec_point_formats = whole_vec8(body, "ec_point_formats")?;
            }
            ext::SIGNATURE_ALGORITHMS if !seen.signature_algorithms => {
                seen.signature_algorithms = true;
                hello.signature_algorithms = whole_u16_list16(body, "signature_algorithms")?;
            }
            ext::SUPPORTED_VERSIONS if !seen.supported_versions => {
                seen.supported_versions = true;
                let list = whole_vec8(body, "supported_versions")?;
                hello.supported_versions =
                    U16List::new(list).ok_or(ClientHelloError::BadLength {
                        field: "supported_versions",
                    })?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[derive(Default)]
struct Seen {
    server_name: bool,
    alpn: bool,
    groups: bool,
    point_formats: bool,
    signature_algorithms: bool,
    supported_versions: bool,
}

/// Check every server_name entry; return the first valid `host_name`.
fn read_server_names(list: &[u8]) -> Result<Option<&str>, ClientHelloError> {
    let mut r = Reader::new(list);
    let mut first = None;
    while !r.is_empty() {
        let ty = r.u8("server_name type")?;
        let name = r.vec16("server_name")?;
        if name.is_empty() {
            return Err(ClientHelloError::BadLength {
                field: "server_name",
            });
        }
        if ty == SNI_HOST_NAME {
            let host = host_name(name)?;
            first.get_or_insert(host);
        }
    }
    Ok(first)
}

fn host_name(name: &[u8]) -> Result<&str, ClientHelloError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_HOST_NAME_LEN
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        return Err(ClientHelloError::InvalidServerName);
    }
    std::str::from_utf8(name).map_err(|_| ClientHelloError::InvalidServerName)
}

/// A body that must be exactly one `u16`-length-prefixed vector.
fn whole_vec16<'a>(body: &'a [u8], field: &'static str) -> Result<&'a [u8], ClientHelloError> {
    let mut r = Reader::new(body);
    let v = r.vec16(field)?;
    r.finish(field)?;
    Ok(v)
}

/// A body that must be exactly one `u8`-length-prefixed vector.
fn whole_vec8<'a>(body: &'a [u8], field: &'static str) -> Result<&'a [u8], ClientHelloError> {
    let mut r = Reader::new(body);
    let v = r.vec8(field)?;
    r.finish(field)?;
    Ok(v)
}

fn whole_u16_list16<'a>(
    body: &'a [u8],
    field: &'static str,
) -> Result<U16List<'a>, ClientHelloError> {
    U16List::new(whole_vec16(body, field)?).ok_or(ClientHelloError::BadLength { field })
}

/// Where the ClientHello body is, before any copying.
enum Framing<'a> {
    NotTls,
    Incomplete {
        needed: usize,
    },
    /// The whole handshake message is inside the first record.
    Single(&'a [u8]),
    /// The handshake message (header included) is `total` bytes spread over several records,
    /// all present and already validated.
    Split {
        total: usize,
    },
}

/// Walk the records at the start of `payload` and find the ClientHello's extent.
fn frame(payload: &[u8]) -> Result<Framing<'_>, ClientHelloError> {
    // The first record decides whether this is TLS at all; check what is there of its header.
    match payload {
        [] => return Ok(Framing::NotTls),
        [ct, ..] if *ct != CONTENT_TYPE_HANDSHAKE => return Ok(Framing::NotTls),
        [_, major, ..] if *major != 3 => return Ok(Framing::NotTls),
        [_, _, minor, ..] if *minor > 4 => return Ok(Framing::NotTls),
        _ => {}
    }
    let mut rest = payload;
    let mut first_record = true;
    let mut header = [0u8; HANDSHAKE_HEADER_LEN];
    // Handshake bytes seen so far (header included) and, once the header is known, the total.
    let mut have = 0usize;
    let mut total: Option<usize> = None;
    loop {
        let missing = match total {
            Some(t) => t.saturating_sub(have),
            None => HANDSHAKE_HEADER_LEN - have,
        };
        let Some((record_header, after)) = rest.split_at_checked(RECORD_HEADER_LEN) else {
            if let Some(&ct) = rest.first()
                && ct != CONTENT_TYPE_HANDSHAKE
            {
                return Err(ClientHelloError::UnexpectedRecord { content_type: ct });
            }
            return Ok(Framing::Incomplete {
                needed: RECORD_HEADER_LEN - rest.len() + missing,
            });
        };
        let [content_type, major, minor, len_hi, len_lo] = *record_header else {
            // Cannot happen: `split_at_checked` gave exactly five bytes.
            return Err(ClientHelloError::Truncated { field: "record" });
        };
        if !first_record {
            if content_type != CONTENT_TYPE_HANDSHAKE {
                return Err(ClientHelloError::UnexpectedRecord { content_type });
            }
            if major != 3 || minor > 4 {
                return Err(ClientHelloError::UnexpectedVersion { major, minor });
            }
        }
        let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
        if len == 0 {
            return Err(ClientHelloError::EmptyRecord);
        }
        if len > MAX_RECORD_LEN {
            return Err(ClientHelloError::RecordTooLong { len });
        }
        let available = after.get(..len).unwrap_or(after);
        let mut fragment = available;
        while have < HANDSHAKE_HEADER_LEN {
            let Some((&b, tail)) = fragment.split_first() else {
                break;
            };
            if have == 0 && b != HANDSHAKE_CLIENT_HELLO {
                return Ok(Framing::NotTls);
            }
            header[have] = b;
            have += 1;
            fragment = tail;
            if have == HANDSHAKE_HEADER_LEN {
                let body_len = usize::from(header[1]) << 16
                    | usize::from(header[2]) << 8
                    | usize::from(header[3]);
                if body_len > MAX_HELLO_LEN {
                    return Err(ClientHelloError::HelloTooLong { len: body_len });
                }
                total = Some(HANDSHAKE_HEADER_LEN + body_len);
            }
        }
        if let Some(t) = total {
            have = have.saturating_add(fragment.len()).min(t);
            if have == t {
                if first_record {
                    let body = available
                        .get(HANDSHAKE_HEADER_LEN..t)
                        .ok_or(ClientHelloError::Truncated { field: "record" })?;
                    return Ok(Framing::Single(body));
                }
                return Ok(Framing::Split { total: t });
            }
        }
        let missing = match total {
            Some(t) => t - have,
            None => HANDSHAKE_HEADER_LEN - have,
        };
        if available.len() < len {
            // The payload ends inside this record.
            let record_missing = len - available.len();
            let needed = if missing <= record_missing {
                missing
            } else {
                // The rest of this record, then at least one more record header.
                missing + RECORD_HEADER_LEN
            };
            return Ok(Framing::Incomplete { needed });
        }
        rest = after.get(len..).unwrap_or_default();
        first_record = false;
    }
}

/// Copy the handshake message's fragments into `scratch`; return the ClientHello body.
fn join_records<'a>(
    payload: &[u8],
    total: usize,
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8], ClientHelloError> {
    scratch.clear();
    scratch.reserve(total);
    let mut rest = payload;
    while scratch.len() < total {
        let Some((header, after)) = rest.split_at_checked(RECORD_HEADER_LEN) else {
            break;
        };
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let Some((fragment, next)) = after.split_at_checked(len) else {
            // The last needed record may end beyond the payload after the message's end.
            let want = total - scratch.len();
            scratch.extend_from_slice(after.get(..want).unwrap_or(after));
            break;
        };
        let want = total - scratch.len();
        scratch.extend_from_slice(fragment.get(..want).unwrap_or(fragment));
        rest = next;
    }
    if scratch.len() != total {
        return Err(ClientHelloError::Truncated { field: "record" });
    }
    scratch
        .get(HANDSHAKE_HEADER_LEN..)
        .ok_or(ClientHelloError::Truncated { field: "record" })
}

/// A bounds-checked big-endian reader.
#[derive(Clone)]
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ClientHelloError> {
        let (head, tail) = self
            .buf
            .split_at_checked(n)
            .ok_or(ClientHelloError::Truncated { field })?;
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, ClientHelloError> {
        let (&b, tail) = self
            .buf
            .split_first()
            .ok_or(ClientHelloError::Truncated { field })?;
        self.buf = tail;
        Ok(b)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, ClientHelloError> {
        let hi = self.u8(field)?;
        let lo = self.u8(field)?;
        Ok(u16::from_be_bytes([hi, lo]))
    }

    fn vec8(&mut self, field: &'static str) -> Result<&'a [u8], ClientHelloError> {
        let len = self.u8(field)?;
        self.take(usize::from(len), field)
    }

    fn vec16(&mut self, field: &'static str) -> Result<&'a [u8], ClientHelloError> {
        let len = self.u16(field)?;
        self.take(usize::from(len), field)
    }

    fn finish(&self, field: &'static str) -> Result<(), ClientHelloError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ClientHelloError::TrailingBytes {
                field,
                extra: self.buf.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_checks_every_length() {
        let mut r = Reader::new(&[0x00, 0x02, 0xaa, 0xbb, 0x01]);
        assert_eq!(r.vec16("a"), Ok(&[0xaa, 0xbb][..]));
        assert_eq!(
            r.clone().u16("b"),
            Err(ClientHelloError::Truncated { field: "b" })
        );
        assert_eq!(
            r.finish("c"),
            Err(ClientHelloError::TrailingBytes {
                field: "c",
                extra: 1
            })
        );
        assert_eq!(r.vec8("d"), Err(ClientHelloError::Truncated { field: "d" }));
        let mut empty = Reader::new(&[]);
        assert_eq!(
            empty.u8("e"),
            Err(ClientHelloError::Truncated { field: "e" })
        );
        assert_eq!(empty.take(0, "f"), Ok(&[][..]));
        assert_eq!(
            empty.take(1, "g"),
            Err(ClientHelloError::Truncated { field: "g" })
        );
        // A length prefix one past the data, and exactly the data.
        assert!(Reader::new(&[0x00, 0x03, 1, 2]).vec16("h").is_err());
        assert_eq!(Reader::new(&[0x00, 0x02, 1, 2]).vec16("h"), Ok(&[1, 2][..]));
        assert!(Reader::new(&[0x02, 1]).vec8("i").is_err());
        assert_eq!(Reader::new(&[0x01, 1]).vec8("i"), Ok(&[1][..]));
    }

    #[test]
    fn u16_lists() {
        assert!(U16List::new(&[1]).is_none());
        let list = U16List::new(&[0x13, 0x01, 0xc0, 0x2b]).unwrap();
        assert_eq!(list.iter().collect::<Vec<_>>(), [0x1301, 0xc02b]);
        assert_eq!(list.len(), 2);
        assert!(U16List::EMPTY.is_empty());
        assert_eq!(format!("{list:?}"), "[\"0x1301\", \"0xc02b\"]");
    }

    #[test]
    fn host_name_syntax() {
        let max = [b'a'; MAX_HOST_NAME_LEN];
        let over = [b'a'; MAX_HOST_NAME_LEN + 1];
        let cases: &[(&[u8], bool)] = &[
            (b"example.com", true),
            (b"EXAMPLE.com.", true),
            (b"xn--caf-dma.example", true),
            (b"_service.example", true),
            (b"203.0.113.7", true),
            (b"a", true),
            (&max, true),
            (&over, false),
            (b"", false),
            (b"a b", false),
            (b"a\0", false),
            (b"[2001:db8::1]", false),
            (b"caf\xc3\xa9", false),
            (b"a/b", false),
        ];
        for (name, ok) in cases {
            assert_eq!(host_name(name).is_ok(), *ok, "{name:?}");
        }
    }

    #[test]
    fn extensions_iterate_in_order_with_grease() {
        let block = [0x0a, 0x0a, 0x00, 0x00, 0x00, 0x17, 0x00, 0x01, 0x00];
        let exts = Extensions(&block);
        assert_eq!(
            exts.iter().collect::<Vec<_>>(),
            [(0x0a0a, &[][..]), (0x17, &[0][..])]
        );
        assert_eq!(exts.len(), 2);
        assert!(exts.contains(0x17));
        assert!(!exts.contains(0));
    }
}
