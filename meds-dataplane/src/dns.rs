//! DNS names: the domain names a DNS message carries, read from a hostile UDP or TCP payload.
//!
//! As in the original Meds, the names of a message are **every question name** and **the
//! target of every CNAME answer**; the data of other records (A, AAAA, MX, …), the owner names
//! of answers and the authority and additional sections are not reported. Unlike the original,
//! DNS over TCP (RFC 1035 §4.2.2 two-byte length prefix) is parsed too ([`parse_tcp`]).
//!
//! The parser is total and bounded: it never panics, never allocates, and never reads past a
//! length it checked.
//! * The 12-byte header is required ([`DnsError::ShortHeader`]); an unassigned opcode makes the
//!   payload [`DnsOutcome::NotDns`].
//! * At most [`MAX_QUESTIONS`] questions and [`MAX_ANSWERS`] answers are examined; the records
//!   beyond are counted in [`DnsNames::skipped_records`] (with more than [`MAX_QUESTIONS`]
//!   questions the answer section is not reached at all, so its records are counted too).
//! * Names: labels of at most 63 octets (a length byte 0x40..=0xBF is the reserved or obsolete
//!   extended label type, [`DnsError::BadLabel`]); at most 255 octets on the wire once expanded
//!   ([`DnsError::NameTooLong`]); compression pointers must point **strictly below every offset
//!   already visited for this name** (so below the name's own start, then below the previous
//!   pointer's target) and not into the header ([`DnsError::BadPointer`]). The targets therefore
//!   strictly decrease and no pointer loop is possible; the hop limit [`MAX_POINTER_HOPS`] caps
//!   the work besides ([`DnsError::TooManyPointers`]). Legitimate compressors only point at
//!   names written earlier, so they always satisfy this.
//! * At most [`MAX_NAMES`] distinct names, [`NAMES_CAPACITY`] bytes of text in all, are kept
//!   in the caller's reusable [`DnsNames`]; names that do not fit are counted in
//!   [`DnsNames::dropped_names`]. Duplicates are stored once. The root name is not reported.
//!
//! ## Name text
//! Names are lower-cased ASCII, labels joined by `.`, without a trailing dot. Octets outside
//! `a-z 0-9 - _` (after lower-casing) are written as an RFC 1035 master-file escape `\DDD`
//! (three decimal digits): a dot *inside* a label becomes `\046`, a space `\032`, a backslash
//! `\092`, non-ASCII octets `\128`..`\255`. So splitting the text on `.` always yields exactly
//! the labels on the wire, and a label holding an escape can never equal a label of a valid
//! list entry (lists accept no `\`): `evil.bad` + `com` on the wire is `evil\046bad.com` and
//! does not match `bad.com`, while `x y` + `bad` + `com` is `x\032y.bad.com` and does (its
//! last two labels are `bad` and `com`). Such names are flagged [`DnsName::escaped`] for
//! callers that want to be stricter.
//!
//! ## Results
//! [`parse`] / [`parse_tcp`] append names to a [`DnsNames`] and return
//! * `Ok(`[`DnsOutcome::Names`]`)`: a DNS message (possibly with no names);
//! * `Ok(`[`DnsOutcome::NotDns`]`)`: not a DNS message we understand (unassigned opcode, empty
//!   TCP payload); no names;
//! * `Ok(`[`DnsOutcome::Incomplete`]`)`: TCP only, the last message is cut off;
//! * `Err(`[`DnsError`]`)`: malformed. The names read before the error stay in the
//!   [`DnsNames`], so a caller may still match them (e.g. block a malformed packet that asks
//!   for a blocklisted name).
//!
//! This module decides nothing about verdicts; [`is_dns_port`] tells the caller when to try.

use std::fmt;

/// The DNS port, on either side of the flow.
pub const DNS_PORT: u16 = 53;
/// The fixed DNS header.
pub const HEADER_LEN: usize = 12;
/// Questions examined per message; the rest are counted as skipped.
pub const MAX_QUESTIONS: usize = 32;
/// Answers examined per message; the rest are counted as skipped.
pub const MAX_ANSWERS: usize = 64;
/// Names kept per [`DnsNames`].
pub const MAX_NAMES: usize = 16;
/// Bytes of name text kept per [`DnsNames`] (four worst-case escaped names).
pub const NAMES_CAPACITY: usize = 4096;
/// Compression pointers followed per name.
pub const MAX_POINTER_HOPS: usize = 16;
/// A name's length on the wire, length octets and the root included (RFC 1035 §2.3.4).
pub const MAX_NAME_WIRE_LEN: usize = 255;
/// A label's length (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// Messages parsed per TCP segment; the rest are counted as skipped records.
pub const MAX_TCP_MESSAGES: usize = 8;

const TYPE_CNAME: u16 = 5;
/// Question: name + QTYPE + QCLASS.
const QUESTION_FIXED_LEN: usize = 4;
/// Resource record: name + TYPE + CLASS + TTL + RDLENGTH.
const RR_FIXED_LEN: usize = 10;

/// Whether a UDP or TCP flow between these ports may carry DNS (53 on either side).
pub fn is_dns_port(src_port: u16, dst_port: u16) -> bool {
    src_port == DNS_PORT || dst_port == DNS_PORT
}

/// What a payload turned out to be (the names themselves are in the [`DnsNames`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsOutcome {
    /// One or more DNS messages; their names (possibly none) were appended.
    Names,
    /// Not a DNS message this parser understands; nothing was appended.
    NotDns,
    /// TCP: the last message is cut off and needs at least `needed` more bytes (the names of
    /// the complete messages before it were appended).
    Incomplete { needed: usize },
}

/// Why a DNS message is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("shorter than the 12-byte DNS header")]
    ShortHeader,
    #[error("a record or name runs past the end of the message")]
    Truncated,
    #[error("label length octet 0x40..=0xbf: over 63 octets or a reserved label type")]
    BadLabel,
    #[error("a name is longer than 255 octets")]
    NameTooLong,
    #[error("a compression pointer does not point strictly backwards")]
    BadPointer,
    #[error("a name follows more than 16 compression pointers")]
    TooManyPointers,
    #[error("a CNAME target does not fill its record data exactly")]
    RdataLength,
}

impl DnsError {
    /// Every error, in index order.
    pub const ALL: [DnsError; 7] = [
        DnsError::ShortHeader,
        DnsError::Truncated,
        DnsError::BadLabel,
        DnsError::NameTooLong,
        DnsError::BadPointer,
        DnsError::TooManyPointers,
        DnsError::RdataLength,
    ];

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            DnsError::ShortHeader => "short_header",
            DnsError::Truncated => "truncated",
            DnsError::BadLabel => "bad_label",
            DnsError::NameTooLong => "name_too_long",
            DnsError::BadPointer => "bad_pointer",
            DnsError::TooManyPointers => "too_many_pointers",
            DnsError::RdataLength => "rdata_length",
        }
    }

    /// Dense index (position in [`DnsError::ALL`]).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Where in the message a name was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameSource {
    Question,
    CnameTarget,
}

/// One name, borrowed from a [`DnsNames`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsName<'a> {
    /// Lower-cased, dot-separated, no trailing dot, non-LDH octets escaped as `\DDD`.
    pub text: &'a str,
    pub source: NameSource,
    /// Whether `text` holds a `\DDD` escape (an octet outside `a-z 0-9 - _`).
    pub escaped: bool,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    start: u16,
    len: u16,
    source: NameSource,
    escaped: bool,
}

const EMPTY_SLOT: Slot = Slot {
    start: 0,
    len: 0,
    source: NameSource::Question,
    escaped: false,
};

/// A reusable, fixed-capacity set of names (no heap; about 4 KiB). [`DnsNames::clear`] it
/// before each packet.
#[derive(Clone)]
pub struct DnsNames {
    text: [u8; NAMES_CAPACITY],
    slots: [Slot; MAX_NAMES],
    count: usize,
    used: usize,
    skipped_records: u32,
    dropped_names: u32,
}

impl DnsNames {
    pub const fn new() -> DnsNames {
        DnsNames {
            text: [0; NAMES_CAPACITY],
            slots: [EMPTY_SLOT; MAX_NAMES],
            count: 0,
            used: 0,
            skipped_records: 0,
            dropped_names: 0,
        }
    }

    /// Forget every name and count.
    pub fn clear(&mut self) {
        self.count = 0;
        self.used = 0;
        self.skipped_records = 0;
        self.dropped_names = 0;
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `i`-th name, in message order.
    pub fn get(&self, i: usize) -> Option<DnsName<'_>> {
        let slot = self.slots.get(..self.count)?.get(i)?;
        let bytes = self
            .text
            .get(usize::from(slot.start)..usize::from(slot.start) + usize::from(slot.len))?;
        // The writer stores ASCII only, so this never fails; "" would match no list entry.
        let text = std::str::from_utf8(bytes).unwrap_or("");
        Some(DnsName {
            text,
            source: slot.source,
            escaped: slot.escaped,
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = DnsName<'_>> + '_ {
        (0..self.count).filter_map(|i| self.get(i))
    }

    /// Questions, answers or TCP messages not examined because of the bounds.
    pub fn skipped_records(&self) -> u32 {
        self.skipped_records
    }

    /// Names decoded but not kept (the set was full).
    pub fn dropped_names(&self) -> u32 {
        self.dropped_names
    }

    /// Whether the message held more than was examined or kept.
    pub fn truncated(&self) -> bool {
        self.skipped_records > 0 || self.dropped_names > 0
    }

    fn skip_records(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.skipped_records = self.skipped_records.saturating_add(n);
    }

    /// Keep the name just written at `text[used..end]` unless it is empty, a duplicate or
    /// there is no room.
    fn commit(&mut self, end: usize, overflow: bool, escaped: bool, source: NameSource) {
        if end == self.used && !overflow {
            return; // the root name
        }
        if overflow || self.count == MAX_NAMES {
            self.dropped_names = self.dropped_names.saturating_add(1);
            return;
        }
        let (Ok(start), Ok(len)) = (u16::try_from(self.used), u16::try_from(end - self.used))
        else {
            self.dropped_names = self.dropped_names.saturating_add(1);
            return;
        };
        let new = &self.text[self.used..end];
        let duplicate = self.slots[..self.count].iter().any(|s| {
            self.text
                .get(usize::from(s.start)..usize::from(s.start) + usize::from(s.len))
                == Some(new)
        });
        if duplicate {
            return;
        }
        self.slots[self.count] = Slot {
            start,
            len,
            source,
            escaped,
        };
        self.count += 1;
        self.used = end;
    }
}

impl Default for DnsNames {
    fn default() -> DnsNames {
        DnsNames::new()
    }
}

impl fmt::Debug for DnsNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsNames")
            .field("names", &self.iter().map(|n| n.text).collect::<Vec<_>>())
            .field("skipped_records", &self.skipped_records)
            .field("dropped_names", &self.dropped_names)
            .finish()
    }
}

/// Parse one DNS message (a UDP payload, or one TCP message without its length prefix) and
/// append its names to `out`.
pub fn parse(msg: &[u8], out: &mut DnsNames) -> Result<DnsOutcome, DnsError> {
    let header = msg.get(..HEADER_LEN).ok_or(DnsError::ShortHeader)?;
    let opcode = (header[2] >> 3) & 0x0f;
    // QUERY, IQUERY, STATUS, NOTIFY, UPDATE, DSO; the others are unassigned.
    if !matches!(opcode, 0 | 1 | 2 | 4 | 5 | 6) {
        return Ok(DnsOutcome::NotDns);
    }
    let qdcount = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let ancount = usize::from(u16::from_be_bytes([header[6], header[7]]));

    let mut pos = HEADER_LEN;
    for _ in 0..qdcount.min(MAX_QUESTIONS) {
        pos = read_name_into(msg, pos, out, NameSource::Question)?;
        pos = skip(msg, pos, QUESTION_FIXED_LEN)?;
    }
    if qdcount > MAX_QUESTIONS {
        // The answers lie beyond questions we did not read.
        out.skip_records(qdcount - MAX_QUESTIONS + ancount);
        return Ok(DnsOutcome::Names);
    }
    for _ in 0..ancount.min(MAX_ANSWERS) {
        pos = read_name(msg, pos, |_| {})?;
        let fixed = msg
            .get(pos..pos + RR_FIXED_LEN)
            .ok_or(DnsError::Truncated)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlength = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let rdata_start = pos + RR_FIXED_LEN;
        let rdata_end = skip(msg, rdata_start, rdlength)?;
        if rtype == TYPE_CNAME {
            let end = read_name_into(msg, rdata_start, out, NameSource::CnameTarget)?;
            if end != rdata_end {
                return Err(DnsError::RdataLength);
            }
        }
        pos = rdata_end;
    }
    if ancount > MAX_ANSWERS {
        out.skip_records(ancount - MAX_ANSWERS);
    }
    Ok(DnsOutcome::Names)
}

/// Parse a TCP payload of one or more length-prefixed DNS messages (RFC 1035 §4.2.2) and append
/// their names to `out`. At most [`MAX_TCP_MESSAGES`] messages are parsed (the rest are counted
/// as skipped records). A segment that does not start on a message boundary (a continuation
/// of a large message) cannot be told from garbage and usually comes out malformed.
pub fn parse_tcp(payload: &[u8], out: &mut DnsNames) -> Result<DnsOutcome, DnsError> {
    let mut rest = payload;
    let mut outcome = DnsOutcome::NotDns;
    let mut messages = 0;
    while !rest.is_empty() {
        if messages == MAX_TCP_MESSAGES {
            out.skip_records(1);
            break;
        }
        let Some(prefix) = rest.get(..2) else {
            return Ok(DnsOutcome::Incomplete {
                needed: 2 - rest.len(),
            });
        };
        let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        let Some(msg) = rest.get(2..2 + len) else {
            return Ok(DnsOutcome::Incomplete {
                needed: 2 + len - rest.len(),
            });
        };
        if parse(msg, out)? == DnsOutcome::Names {
            outcome = DnsOutcome::Names;
        }
        rest = &rest[2 + len..];
        messages += 1;
    }
    Ok(outcome)
}

/// `pos + n`, if the message has that many bytes.
fn skip(msg: &[u8], pos: usize, n: usize) -> Result<usize, DnsError> {
    let end = pos.checked_add(n).ok_or(DnsError::Truncated)?;
    if end > msg.len() {
        return Err(DnsError::Truncated);
    }
    Ok(end)
}

/// Decode the name at `start` into `out` (see the module docs for the text form) and keep it.
fn read_name_into(
    msg: &[u8],
    start: usize,
    out: &mut DnsNames,
    source: NameSource,
) -> Result<usize, DnsError> {
    let mut w = TextWriter {
        buf: &mut out.text,
        pos: out.used,
        start: out.used,
        overflow: false,
        escaped: false,
    };
    let end = read_name(msg, start, |label| w.label(label))?;
    let (pos, overflow, escaped) = (w.pos, w.overflow, w.escaped);
    out.commit(pos, overflow, escaped, source);
    Ok(end)
}

/// Walk the name at `start`, calling `label` for each label in order; returns the offset just
/// past the name where it starts (after its first pointer, if any).
fn read_name(msg: &[u8], start: usize, mut label: impl FnMut(&[u8])) -> Result<usize, DnsError> {
    let mut pos = start;
    // Every pointer must target strictly below everything read so far for this name.
    let mut floor = start;
    let mut end = None;
    let mut hops = 0;
    let mut wire_len = 0;
    loop {
        let len_octet = *msg.get(pos).ok_or(DnsError::Truncated)?;
        match len_octet & 0xc0 {
            0x00 => {
                let len = usize::from(len_octet);
                wire_len += 1 + len;
                if wire_len > MAX_NAME_WIRE_LEN {
                    return Err(DnsError::NameTooLong);
                }
                if len == 0 {
                    return Ok(end.unwrap_or(pos + 1));
                }
                let bytes = msg.get(pos + 1..pos + 1 + len).ok_or(DnsError::Truncated)?;
                label(bytes);
                pos += 1 + len;
            }
            0xc0 => {
                let low = *msg.get(pos + 1).ok_or(DnsError::Truncated)?;
                let target = usize::from(u16::from_be_bytes([len_octet & 0x3f, low]));
                if target >= floor || target < HEADER_LEN {
                    return Err(DnsError::BadPointer);
                }
                hops += 1;
                if hops > MAX_POINTER_HOPS {
                    return Err(DnsError::TooManyPointers);
                }
                end.get_or_insert(pos + 2);
                floor = target;
                pos = target;
            }
            _ => return Err(DnsError::BadLabel),
        }
    }
}

/// Writes labels as name text into a fixed buffer; stops writing (and remembers) once full.
struct TextWriter<'a> {
    buf: &'a mut [u8],
    start: usize,
    pos: usize,
    overflow: bool,
    escaped: bool,
}

impl TextWriter<'_> {
    fn label(&mut self, label: &[u8]) {
        if self.pos != self.start {
            self.push(b'.');
        }
        for &b in label {
            let b = b.to_ascii_lowercase();
            if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' {
                self.push(b);
            } else {
                self.escaped = true;
                self.push(b'\\');
                self.push(b'0' + b / 100);
                self.push(b'0' + (b / 10) % 10);
                self.push(b'0' + b % 10);
            }
        }
    }

    fn push(&mut self, b: u8) {
        if self.overflow {
            return;
        }
        match self.buf.get_mut(self.pos) {
            Some(slot) => {
                *slot = b;
                self.pos += 1;
            }
            None => self.overflow = true,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::*;

    /// Encode a dotted name as uncompressed wire labels.
    pub(crate) fn wire_name(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    pub(crate) fn header(id: u16, flags: u16, qd: u16, an: u16) -> Vec<u8> {
        let mut h = Vec::new();
        for v in [id, flags, qd, an, 0, 0] {
            h.extend_from_slice(&v.to_be_bytes());
        }
        h
    }

    pub(crate) fn query(name: &str) -> Vec<u8> {
        let mut m = header(0x1234, 0x0100, 1, 0);
        m.extend(wire_name(name));
        m.extend_from_slice(&[0, 1, 0, 1]);
        m
    }

    fn rr(owner: &[u8], rtype: u16, rdata: &[u8]) -> Vec<u8> {
        let mut r = owner.to_vec();
        r.extend_from_slice(&rtype.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&300u32.to_be_bytes());
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(rdata);
        r
    }

    fn names(msg: &[u8]) -> (Result<DnsOutcome, DnsError>, Vec<String>) {
        let mut out = DnsNames::new();
        let r = parse(msg, &mut out);
        (r, out.iter().map(|n| n.text.to_string()).collect())
    }

    #[test]
    fn dns_port_either_side() {
        for (s, d, want) in [
            (53, 40000, true),
            (40000, 53, true),
            (53, 53, true),
            (52, 54, false),
            (5353, 853, false),
        ] {
            assert_eq!(is_dns_port(s, d), want, "{s} {d}");
        }
    }

    #[test]
    fn simple_query_lower_cased() {
        let (r, n) = names(&query("WWW.Example.COM"));
        assert_eq!(r, Ok(DnsOutcome::Names));
        assert_eq!(n, ["www.example.com"]);
    }

    #[test]
    fn cname_chain_response() {
        // Question www.example.com; answers: www.example.com CNAME a.cdn.example.net (owner
        // compressed to the question), a.cdn.example.net CNAME b.edge.example.org (owner
        // compressed to the first target, target's suffix to "example" of... uncompressed),
        // b.edge.example.org A 203.0.113.7, then a CNAME whose target is compressed.
        let mut m = header(1, 0x8180, 1, 4);
        let q_off = m.len() as u16;
        m.extend(wire_name("www.example.com"));
        m.extend_from_slice(&[0, 1, 0, 1]);
        let ptr = |off: u16| (0xc000 | off).to_be_bytes();
        let first_rdata_off = (m.len() + 2 + RR_FIXED_LEN) as u16;
        m.extend(rr(&ptr(q_off), TYPE_CNAME, &wire_name("A.CDN.example.net")));
        let second_rdata_off = (m.len() + 2 + RR_FIXED_LEN) as u16;
        m.extend(rr(
            &ptr(first_rdata_off),
            TYPE_CNAME,
            &wire_name("b.edge.example.org"),
        ));
        m.extend(rr(&ptr(second_rdata_off), 1, &[203, 0, 113, 7]));
        // "x" + pointer to "edge.example.org" (second target + 2: skip the "b" label).
        let mut target = vec![1, b'x'];
        target.extend_from_slice(&ptr(second_rdata_off + 2));
        m.extend(rr(&ptr(q_off), TYPE_CNAME, &target));
        let (r, n) = names(&m);
        assert_eq!(r, Ok(DnsOutcome::Names));
        assert_eq!(
            n,
            [
                "www.example.com",
                "a.cdn.example.net",
                "b.edge.example.org",
                "x.edge.example.org"
            ]
        );
        let mut out = DnsNames::new();
        parse(&m, &mut out).unwrap();
        let sources: Vec<_> = out.iter().map(|n| n.source).collect();
        assert_eq!(sources[0], NameSource::Question);
        assert!(sources[1..].iter().all(|s| *s == NameSource::CnameTarget));
    }

    #[test]
    fn cname_rdata_must_match_its_name() {
        let mut m = header(1, 0x8180, 0, 1);
        let mut rdata = wire_name("a.example");
        rdata.push(0xff); // junk after the name inside RDATA
        m.extend(rr(&[0], TYPE_CNAME, &rdata));
        assert_eq!(names(&m).0, Err(DnsError::RdataLength));
        // RDLENGTH shorter than the name: the name is read from the message, then mismatches.
        let mut m = header(1, 0x8180, 0, 1);
        let mut r = rr(&[0], TYPE_CNAME, &wire_name("a.example"));
        let len_at = 1 + 8;
        r[len_at..len_at + 2].copy_from_slice(&3u16.to_be_bytes());
        m.extend(r);
        assert_eq!(names(&m).0, Err(DnsError::RdataLength));
    }

    #[test]
    fn pointer_loops_and_bad_pointers_are_malformed() {
        let q = |name: &[u8]| {
            let mut m = header(1, 0x0100, 1, 0);
            m.extend_from_slice(name);
            m.extend_from_slice(&[0, 1, 0, 1]);
            m
        };
        // Self pointer at offset 12.
        assert_eq!(names(&q(&[0xc0, 12])).0, Err(DnsError::BadPointer));
        // Forward pointer.
        assert_eq!(names(&q(&[0xc0, 40])).0, Err(DnsError::BadPointer));
        // Pointer into the header.
        assert_eq!(names(&q(&[0xc0, 2])).0, Err(DnsError::BadPointer));
        // Label then a pointer back into its own labels: a loop through offset 12.
        assert_eq!(names(&q(&[1, b'a', 0xc0, 12])).0, Err(DnsError::BadPointer));
        // Two names pointing at each other: the second name's pointer is backwards, the
        // first's target lies at or after its own start.
        let mut m = header(1, 0x0100, 2, 0);
        m.extend_from_slice(&[1, b'a', 0xc0, 22]); // offset 12: forward to 22
        m.extend_from_slice(&[0, 1, 0, 1]);
        m.extend_from_slice(&[1, b'b', 0xc0, 12]); // offset 20
        m.extend_from_slice(&[0, 1, 0, 1]);
        assert_eq!(names(&m).0, Err(DnsError::BadPointer));
        // Pointer to a later label that points back (backwards-then-forward chain).
        let mut m = header(1, 0x0100, 2, 0);
        m.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]); // offset 12: "a", qtype/class
        // offset 19: "b" then pointer to 12... fine; then "c" pointing to 19 whose pointer
        // targets 12 < 19: legitimate.
        m.extend_from_slice(&[1, b'b', 0xc0, 12, 0, 1, 0, 1]);
        m[5] = 2;
        let (r, n) = names(&m);
        assert_eq!(r, Ok(DnsOutcome::Names), "{n:?}");
        assert_eq!(n, ["a", "b.a"]);
    }

    #[test]
    fn pointer_chain_over_the_hop_limit() {
        // Question: the root name at offset 12. Answer 1 (TXT) holds a chain of pointers as
        // its data: link 0 points at 12, link i at link i-1. Answer 2 is a CNAME whose target
        // is a pointer to the last link: `hops` pointers in all, every one backwards.
        for (hops, want) in [
            (MAX_POINTER_HOPS, Ok(DnsOutcome::Names)),
            (MAX_POINTER_HOPS + 1, Err(DnsError::TooManyPointers)),
        ] {
            let mut m = header(1, 0x8180, 1, 2);
            m.extend_from_slice(&[0, 0, 1, 0, 1]);
            let chain_off = m.len() + 1 + RR_FIXED_LEN;
            let links = hops - 1;
            let chain: Vec<u8> = (0..links)
                .flat_map(|i| {
                    let target = if i == 0 { 12 } else { chain_off + 2 * (i - 1) };
                    (0xc000 | target as u16).to_be_bytes()
                })
                .collect();
            m.extend(rr(&[0], 16, &chain));
            let last = (chain_off + 2 * (links - 1)) as u16;
            m.extend(rr(&[0], TYPE_CNAME, &(0xc000 | last).to_be_bytes()));
            assert_eq!(names(&m).0, want, "hops {hops}");
        }
    }

    #[test]
    fn label_and_name_length_edges() {
        let label63 = "a".repeat(63);
        let (r, n) = names(&query(&format!("{label63}.example")));
        assert_eq!(r, Ok(DnsOutcome::Names));
        assert_eq!(n[0].len(), 63 + 8);
        // A 64-octet label: the length octet 0x40 is a reserved label type.
        let mut m = header(1, 0x0100, 1, 0);
        m.push(64);
        m.extend_from_slice(&[b'a'; 64]);
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(names(&m).0, Err(DnsError::BadLabel));
        // Wire length exactly 255: 3 labels of 63 + one of 61 = 3*64 + 62 + root = 255.
        let name255 = format!("{label63}.{label63}.{label63}.{}", "b".repeat(61));
        assert_eq!(wire_name(&name255).len(), 255);
        let (r, n) = names(&query(&name255));
        assert_eq!(r, Ok(DnsOutcome::Names));
        assert_eq!(n, [name255]);
        let name256 = format!("{label63}.{label63}.{label63}.{}", "b".repeat(62));
        assert_eq!(wire_name(&name256).len(), 256);
        assert_eq!(names(&query(&name256)).0, Err(DnsError::NameTooLong));
    }

    #[test]
    fn unusual_octets_are_escaped_label_faithfully() {
        for (labels, want, escaped) in [
            (vec![&b"evil.bad"[..], b"com"], "evil\\046bad.com", true),
            (vec![&b"x y"[..], b"bad", b"com"], "x\\032y.bad.com", true),
            (vec![&b"caf\xc3\xa9"[..], b"fr"], "caf\\195\\169.fr", true),
            (vec![&b"a\\b"[..]], "a\\092b", true),
            (vec![&b"_dmarc"[..], b"Ex-1"], "_dmarc.ex-1", false),
            (vec![&b"*"[..], b"example"], "\\042.example", true),
        ] {
            let mut m = header(1, 0x0100, 1, 0);
            for l in &labels {
                m.push(l.len() as u8);
                m.extend_from_slice(l);
            }
            m.extend_from_slice(&[0, 0, 1, 0, 1]);
            let mut out = DnsNames::new();
            assert_eq!(parse(&m, &mut out), Ok(DnsOutcome::Names));
            let name = out.get(0).unwrap();
            assert_eq!(name.text, want);
            assert_eq!(name.escaped, escaped, "{want}");
            assert_eq!(name.text.split('.').count(), labels.len(), "{want}");
        }
    }

    #[test]
    fn header_and_opcode() {
        assert_eq!(names(&[]).0, Err(DnsError::ShortHeader));
        assert_eq!(names(&[0; 11]).0, Err(DnsError::ShortHeader));
        assert_eq!(names(&[0; 12]), (Ok(DnsOutcome::Names), vec![]));
        for (opcode, want) in [
            (0u8, DnsOutcome::Names),
            (3, DnsOutcome::NotDns),
            (5, DnsOutcome::Names),
            (6, DnsOutcome::Names),
            (7, DnsOutcome::NotDns),
            (15, DnsOutcome::NotDns),
        ] {
            let mut m = query("example.com");
            m[2] = opcode << 3;
            assert_eq!(names(&m).0, Ok(want), "opcode {opcode}");
        }
        // Counts larger than the message.
        let mut m = query("example.com");
        m[5] = 2;
        assert_eq!(names(&m).0, Err(DnsError::Truncated));
    }

    #[test]
    fn record_bounds_are_counted() {
        // 33 questions of the root name + one answer: 1 question + the answer skipped.
        let mut m = header(1, 0x0100, 33, 1);
        for _ in 0..33 {
            m.extend_from_slice(&[0, 0, 1, 0, 1]);
        }
        let mut out = DnsNames::new();
        assert_eq!(parse(&m, &mut out), Ok(DnsOutcome::Names));
        assert_eq!(out.skipped_records(), 2);
        assert!(out.truncated());
        // Exactly 32 questions: nothing skipped.
        let mut m = header(1, 0x0100, 32, 0);
        for _ in 0..32 {
            m.extend_from_slice(&[0, 0, 1, 0, 1]);
        }
        let mut out = DnsNames::new();
        assert_eq!(parse(&m, &mut out), Ok(DnsOutcome::Names));
        assert!(!out.truncated());
        // 65 answers: one skipped.
        let mut m = header(1, 0x8180, 0, 65);
        for _ in 0..65 {
            m.extend(rr(&[0], 1, &[203, 0, 113, 1]));
        }
        let mut out = DnsNames::new();
        assert_eq!(parse(&m, &mut out), Ok(DnsOutcome::Names));
        assert_eq!(out.skipped_records(), 1);
    }

    #[test]
    fn names_beyond_capacity_are_counted_and_duplicates_kept_once() {
        let mut m = header(1, 0x0100, 20, 0);
        for i in 0..20 {
            m.extend(wire_name(&format!("n{i}.example")));
            m.extend_from_slice(&[0, 1, 0, 1]);
        }
        let mut out = DnsNames::new();
        assert_eq!(parse(&m, &mut out), Ok(DnsOutcome::Names));
        assert_eq!(out.len(), MAX_NAMES);
        assert_eq!(out.dropped_names(), 4);
        assert_eq!(out.get(15).unwrap().text, "n15.example");
        assert!(out.get(16).is_none());

        let mut m = header(1, 0x0100, 3, 0);
        for name in ["a.example", "A.EXAMPLE", "b.example"] {
            m.extend(wire_name(name));
            m.extend_from_slice(&[0, 1, 0, 1]);
        }
        let (_, n) = names(&m);
        assert_eq!(n, ["a.example", "b.example"]);

        // Text capacity: worst-case escaped names (~1000 bytes each) fill 4 KiB after 4.
        let label = [0xffu8; 63];
        let mut m = header(1, 0x0100, 6, 0);
        for i in 0..6u8 {
            for _ in 0..3 {
                m.push(63);
                m.extend_from_slice(&label);
            }
            m.extend_from_slice(&[2, b'x', b'0' + i, 0]);
            m.extend_from_slice(&[0, 1, 0, 1]);
        }
        let mut out = DnsNames::new();
        assert_eq!(parse(&m, &mut out), Ok(DnsOutcome::Names));
        // Each name is 3 × 63 × 4 escaped bytes + 3 dots + "x0" = 761 bytes: 5 fit in 4096.
        assert_eq!(out.len(), 5);
        assert_eq!(out.dropped_names(), 1);
        for (i, name) in out.iter().enumerate() {
            assert_eq!(name.text.len(), 761);
            assert!(name.escaped && name.text.ends_with(&format!(".x{i}")));
        }
        out.clear();
        assert!(out.is_empty() && !out.truncated());
    }

    #[test]
    fn tcp_framing() {
        let a = query("a.example");
        let b = query("b.example");
        let mut seg = Vec::new();
        for m in [&a, &b] {
            seg.extend_from_slice(&(m.len() as u16).to_be_bytes());
            seg.extend_from_slice(m);
        }
        let mut out = DnsNames::new();
        assert_eq!(parse_tcp(&seg, &mut out), Ok(DnsOutcome::Names));
        let n: Vec<_> = out.iter().map(|n| n.text).collect();
        assert_eq!(n, ["a.example", "b.example"]);

        // Every split point inside the second message: the first message's name is read,
        // the rest reported as incomplete with the exact number of missing bytes.
        let first_len = 2 + a.len();
        for cut in first_len + 1..seg.len() {
            let mut out = DnsNames::new();
            let r = parse_tcp(&seg[..cut], &mut out);
            let needed = if cut == first_len + 1 {
                1
            } else {
                seg.len() - cut
            };
            assert_eq!(r, Ok(DnsOutcome::Incomplete { needed }), "cut {cut}");
            assert_eq!(out.len(), 1);
        }
        assert_eq!(parse_tcp(&[], &mut DnsNames::new()), Ok(DnsOutcome::NotDns));
        assert_eq!(
            parse_tcp(&[0, 1, 0], &mut DnsNames::new()),
            Err(DnsError::ShortHeader)
        );
        // More than MAX_TCP_MESSAGES messages: the rest are counted.
        let mut many = Vec::new();
        for _ in 0..MAX_TCP_MESSAGES + 2 {
            many.extend_from_slice(&(a.len() as u16).to_be_bytes());
            many.extend_from_slice(&a);
        }
        let mut out = DnsNames::new();
        assert_eq!(parse_tcp(&many, &mut out), Ok(DnsOutcome::Names));
        assert_eq!(out.skipped_records(), 1);
    }

    #[test]
    fn every_prefix_of_a_response_is_safe() {
        let mut m = header(1, 0x8180, 1, 1);
        m.extend(wire_name("www.example.com"));
        m.extend_from_slice(&[0, 1, 0, 1]);
        m.extend(rr(
            &[0xc0, 12],
            TYPE_CNAME,
            &[3, b'c', b'd', b'n', 0xc0, 16],
        ));
        assert_eq!(names(&m).1, ["www.example.com", "cdn.example.com"]);
        for cut in 0..m.len() {
            assert!(names(&m[..cut]).0.is_err(), "cut {cut}");
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut out = DnsNames::new();
            let _ = parse(&data, &mut out);
            for name in out.iter() {
                prop_assert!(!name.text.is_empty());
                prop_assert!(name.text.is_ascii());
                prop_assert_eq!(name.escaped, name.text.contains('\\'));
                prop_assert!(name.text.split('.').all(|l| !l.is_empty()));
            }
            out.clear();
            let _ = parse_tcp(&data, &mut out);
        }

        #[test]
        fn header_prefixed_random_bodies_never_panic(
            counts in any::<[u8; 4]>(),
            body in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut m = header(7, 0x8180, u16::from(counts[0] % 40), u16::from(counts[1] % 70));
            m.extend_from_slice(&body);
            let _ = parse(&m, &mut DnsNames::new());
        }

        #[test]
        fn encoded_names_round_trip(
            labels in proptest::collection::vec("[a-zA-Z0-9_-]{1,20}", 1..6),
        ) {
            let name = labels.join(".");
            let (r, n) = names(&query(&name));
            prop_assert_eq!(r, Ok(DnsOutcome::Names));
            prop_assert_eq!(n, vec![name.to_ascii_lowercase()]);
        }
    }
}
