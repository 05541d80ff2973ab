//! Offline replay: `meds-dataplane replay FILE` runs every packet of a pcap or pcapng capture
//! through the same engine as the live dataplane and prints one JSON object per frame, so a
//! policy can be tested against captured traffic before it is enforced. Unprivileged: no
//! NFQUEUE, no iptables, nothing is sent anywhere.
//!
//! ```text
//! meds-dataplane replay FILE [--sync-socket PATH | --snapshot PATH] [--unparsable accept|drop]
//!     [--tls-uninspectable accept|drop] [--verify-checksums]
//! ```
//! The policy is the controller's current one (`--sync-socket`: connect as a read-only
//! observer, take the first full snapshot, disconnect — [`fetch_policy`]), an exported state
//! file (`--snapshot`, the dataplane's `--state-file` format), or, given neither, empty lists.
//!
//! Output, one line per frame (`index` is the 1-based frame number, as Wireshark counts):
//! `{"index":1,"ts":1700000000.123456,"src":"203.0.113.7","dst":"…","src_port":443,
//! "dst_port":51000,"protocol":{"number":6,"name":"tcp"},"sni":null,"ja3":null,
//! "ja3_hash":null,"ja4":null,"ja4_r":null,"dns_names":[],"verdict":"accept","filter":"empty",
//! "reason":"default","skipped":null,"errors":[]}`.
//! Every packet goes through the live engine, an [`Inspector`] in [`Extract::All`] mode: the
//! same decision as the daemon (the whole chain, steps 1–15, the blocked-flow table, the
//! `--tls-uninspectable` policy), with every name and fingerprint extracted for the output
//! even when no list needs them or the source already decided. `verdict`/`filter`/`reason`
//! are the live chain's labels. A frame that is not IPv4/IPv6 (ARP, an unknown link type) is
//! still printed, with `"verdict":null` and the reason in `skipped`, so that indices stay
//! aligned with the capture. Parse problems of the DNS or TLS payload (and an unreadable IP
//! header, a hello segment not inspected) are listed in `errors`. A ClientHello split over
//! TCP segments is reassembled per flow (capture timestamps as the clock) and its
//! `sni`/`ja3`/`ja4` are reported on the segment that completes it; the earlier segments
//! report none.
//!
//! TCP checksums are not verified unless `--verify-checksums` is given: a capture taken on the
//! sending host holds the partial checksums of checksum offload, which the daemon never sees
//! (the kernel completes them before queueing a packet), so verifying would hide every hello
//! of such a capture.
//!
//! Captures are read by [`CaptureReader`], a small streaming reader of our own rather than the
//! `pcap-file` crate: pcap-file 2.x stops advancing on a malformed packet, so a reader loop
//! never ends (courvoif/pcap-file#48, unfixed in 3.0-rc), and this reader had to bound every
//! allocation for hostile files anyway. Frames are read one at a time into one reused buffer.
//! Link types: Ethernet (802.1Q/802.1ad/QinQ tags), raw IP (101, 12, 14, 228, 229), Linux
//! cooked SLL (113) and SLL2 (276), BSD NULL (0) and LOOP (108).
//!
//! A malformed or truncated capture never panics: [`replay`] stops at the first unreadable
//! block and returns the [`Summary`] so far together with the error.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meds_proto::pb::{self, controller_message, dataplane_message};
use meds_proto::sync::{MAX_MESSAGE_BYTES, Stager, SyncError};
use serde::Serialize;

use crate::chain::{RuleSet, UnparsableVerdict, Verdict};
use crate::inspect::{Extract, HelloKind, InspectConfig, Inspector, Note, Uninspectable};
use crate::policy::PolicyState;

/// Largest frame accepted (the largest snapshot length libpcap writes, 256 KiB).
pub const MAX_FRAME_LEN: usize = 262_144;
/// Largest pcapng block read into memory (SHB/IDB/EPB); other block types are skipped unread.
pub const MAX_BLOCK_LEN: usize = MAX_FRAME_LEN + 64 * 1024;
/// VLAN tags skipped in one Ethernet frame.
const MAX_VLAN_TAGS: usize = 8;
/// Interfaces remembered per pcapng section.
const MAX_INTERFACES: usize = 4096;

const PCAP_MAGIC_US: u32 = 0xa1b2_c3d4;
const PCAP_MAGIC_NS: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BYTE_ORDER: u32 = 0x1a2b_3c4d;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_PB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;
const IF_TSRESOL: u16 = 9;

/// Why a capture could not be read (further).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot read the capture")]
    Io(#[from] io::Error),
    #[error("not a pcap or pcapng file (magic {0:#010x})")]
    UnknownFormat(u32),
    #[error("the capture ends in the middle of {0}")]
    Truncated(&'static str),
    #[error("corrupt capture at byte {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
}

/// Capture container format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Pcap,
    PcapNg,
}

/// One captured frame, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame<'a> {
    /// Seconds since the Unix epoch.
    pub ts: f64,
    /// The pcap LINKTYPE_ value of the frame's interface.
    pub link_type: u32,
    /// The captured bytes (possibly fewer than were on the wire).
    pub data: &'a [u8],
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    link_type: u32,
    /// Timestamp units per second.
    units_per_sec: f64,
}

/// A streaming pcap/pcapng reader. Allocates one buffer, grown to at most [`MAX_BLOCK_LEN`].
#[derive(Debug)]
pub struct CaptureReader<R> {
    input: R,
    format: Format,
    big_endian: bool,
    /// pcap: the file's link type and timestamp resolution.
    pcap: Interface,
    /// pcapng: the current section's interfaces.
    interfaces: Vec<Interface>,
    offset: u64,
    buf: Vec<u8>,
}

/// How many bytes `read_full` got.
enum Fill {
    Full,
    Eof,
    Partial,
}

fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<Fill> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(if got == buf.len() {
        Fill::Full
    } else if got == 0 {
        Fill::Eof
    } else {
        Fill::Partial
    })
}

fn u16_at(buf: &[u8], at: usize, big: bool) -> Option<u16> {
    let b: [u8; 2] = buf.get(at..at + 2)?.try_into().ok()?;
    Some(if big {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    })
}

fn u32_at(buf: &[u8], at: usize, big: bool) -> Option<u32> {
    let b: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
    Some(if big {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

impl<R: Read> CaptureReader<R> {
    /// Read the file header (pcap) or the first section header (pcapng).
    pub fn new(mut input: R) -> Result<CaptureReader<R>, CaptureError> {
        let mut head = [0u8; 4];
        match read_full(&mut input, &mut head)? {
            Fill::Full => {}
            Fill::Eof | Fill::Partial => return Err(CaptureError::Truncated("the file header")),
        }
        let magic_le = u32::from_le_bytes(head);
        let magic_be = u32::from_be_bytes(head);
        let mut reader = CaptureReader {
            input,
            format: Format::Pcap,
            big_endian: false,
            pcap: Interface {
                link_type: 0,
                units_per_sec: 1e6,
            },
            interfaces: Vec::new(),
            offset: 4,
            buf: Vec::new(),
        };
        if magic_le == PCAPNG_SHB {
            reader.format = Format::PcapNg;
            reader.read_section_header()?;
            return Ok(reader);
        }
        let (big, nanos) = match (magic_le, magic_be) {
            (PCAP_MAGIC_US, _) => (false, false),
            (PCAP_MAGIC_NS, _) => (false, true),
            (_, PCAP_MAGIC_US) => (true, false),
            (_, PCAP_MAGIC_NS) => (true, true),
            _ => return Err(CaptureError::UnknownFormat(magic_be)),
        };
        let mut rest = [0u8; 20];
        match read_full(&mut reader.input, &mut rest)? {
            Fill::Full => {}
            Fill::Eof | Fill::Partial => return Err(CaptureError::Truncated("the file header")),
        }
        reader.offset += 20;
        reader.big_endian = big;
        // Bits 0-27 are the link type; 28-31 say whether frames carry an FCS.
        let network = u32_at(&rest, 16, big).unwrap_or(0);
        reader.pcap = Interface {
            link_type: network & 0x0fff_ffff,
            units_per_sec: if nanos { 1e9 } else { 1e6 },
        };
        Ok(reader)
    }

    pub fn format(&self) -> Format {
        self.format
    }

    fn corrupt(&self, reason: impl Into<String>) -> CaptureError {
        CaptureError::Corrupt {
            offset: self.offset,
            reason: reason.into(),
        }
    }

    /// The next frame; `Ok(None)` at a clean end of file.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        match self.format {
            Format::Pcap => self.next_pcap(),
            Format::PcapNg => self.next_pcapng(),
        }
    }

    fn next_pcap(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        let mut header = [0u8; 16];
        match read_full(&mut self.input, &mut header)? {
            Fill::Full => {}
            Fill::Eof => return Ok(None),
            Fill::Partial => return Err(CaptureError::Truncated("a record header")),
        }
        let big = self.big_endian;
        let sec = u32_at(&header, 0, big).unwrap_or(0);
        let frac = u32_at(&header, 4, big).unwrap_or(0);
        let incl = u32_at(&header, 8, big).unwrap_or(0) as usize;
        if incl > MAX_FRAME_LEN {
            return Err(self.corrupt(format!("record of {incl} bytes exceeds {MAX_FRAME_LEN}")));
        }
        self.offset += 16;
        self.buf.resize(incl, 0);
        match read_full(&mut self.input, &mut self.buf)? {
            Fill::Full => {}
            _ if incl == 0 => {}
            Fill::Eof | Fill::Partial => return Err(CaptureError::Truncated("a record")),
        }
        self.offset += incl as u64;
        Ok(Some(Frame {
            ts: f64::from(sec) + f64::from(frac) / self.pcap.units_per_sec,
            link_type: self.pcap.link_type,
            data: &self.buf,
        }))
    }

    /// After the 4-byte block type: length, byte-order magic, rest of the SHB.
    fn read_section_header(&mut self) -> Result<(), CaptureError> {
        let mut head = [0u8; 8];
        match read_full(&mut self.input, &mut head)? {
            Fill::Full => {}
            _ => return Err(CaptureError::Truncated("a section header block")),
        }
        let big = match (u32_at(&head, 4, false), u32_at(&head, 4, true)) {
            (Some(PCAPNG_BYTE_ORDER), _) => false,
            (_, Some(PCAPNG_BYTE_ORDER)) => true,
            _ => return Err(self.corrupt("section header without a byte-order magic")),
        };
        let total = u32_at(&head, 0, big).unwrap_or(0) as usize;
        if total < 28 || !total.is_multiple_of(4) || total > MAX_BLOCK_LEN {
            return Err(self.corrupt(format!("section header block length {total}")));
        }
        self.big_endian = big;
        self.interfaces.clear();
        self.offset += 8;
        // The rest: versions, section length, options, trailing length.
        self.buf.resize(total - 12, 0);
        match read_full(&mut self.input, &mut self.buf)? {
            Fill::Full => {}
            _ => return Err(CaptureError::Truncated("a section header block")),
        }
        self.offset += (total - 12) as u64;
        Ok(())
    }

    fn next_pcapng(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        loop {
            let mut ty = [0u8; 4];
            match read_full(&mut self.input, &mut ty)? {
                Fill::Full => {}
                Fill::Eof => return Ok(None),
                Fill::Partial => return Err(CaptureError::Truncated("a block header")),
            }
            let block_start = self.offset;
            self.offset += 4;
            let block_type = if self.big_endian {
                u32::from_be_bytes(ty)
            } else {
                u32::from_le_bytes(ty)
            };
            if block_type == PCAPNG_SHB {
                self.read_section_header()?;
                continue;
            }
            let mut len = [0u8; 4];
            match read_full(&mut self.input, &mut len)? {
                Fill::Full => {}
                _ => return Err(CaptureError::Truncated("a block header")),
            }
            self.offset += 4;
            let total = u32_at(&len, 0, self.big_endian).unwrap_or(0) as usize;
            if total < 12 || !total.is_multiple_of(4) {
                return Err(CaptureError::Corrupt {
                    offset: block_start,
                    reason: format!("block length {total}"),
                });
            }
            let body_len = total - 12;
            let wanted = matches!(block_type, PCAPNG_IDB | PCAPNG_PB | PCAPNG_SPB | PCAPNG_EPB);
            if !wanted {
                // Name resolution, statistics, custom blocks…: skipped without buffering.
                let rest = (total - 8) as u64;
                let copied = io::copy(&mut (&mut self.input).take(rest), &mut io::sink())?;
                self.offset += copied;
                if copied != rest {
                    return Err(CaptureError::Truncated("a block"));
                }
                continue;
            }
            if total > MAX_BLOCK_LEN {
                return Err(CaptureError::Corrupt {
                    offset: block_start,
                    reason: format!("block of {total} bytes exceeds {MAX_BLOCK_LEN}"),
                });
            }
            // Body plus the trailing length.
            self.buf.resize(body_len + 4, 0);
            match read_full(&mut self.input, &mut self.buf)? {
                Fill::Full => {}
                _ => return Err(CaptureError::Truncated("a block")),
            }
            self.offset += (body_len + 4) as u64;
            if u32_at(&self.buf, body_len, self.big_endian) != Some(total as u32) {
                return Err(CaptureError::Corrupt {
                    offset: block_start,
                    reason: "block length and trailing length differ".into(),
                });
            }
            if block_type == PCAPNG_IDB {
                let iface = parse_idb(&self.buf[..body_len], self.big_endian)
                    .ok_or_else(|| self.corrupt("malformed interface description block"))?;
                if self.interfaces.len() >= MAX_INTERFACES {
                    return Err(self.corrupt("too many interfaces"));
                }
                self.interfaces.push(iface);
                continue;
            }
            let (range, iface, units) = self.packet_block(block_type, body_len, block_start)?;
            let iface = *self
                .interfaces
                .get(iface)
                .ok_or_else(|| self.corrupt(format!("packet on undeclared interface {iface}")))?;
            return Ok(Some(Frame {
                ts: units as f64 / iface.units_per_sec,
                link_type: iface.link_type,
                data: &self.buf[range],
            }));
        }
    }

    /// Where the packet data of an EPB/PB/SPB lies in `buf`, its interface and timestamp.
    fn packet_block(
        &self,
        block_type: u32,
        body_len: usize,
        block_start: u64,
    ) -> Result<(std::ops::Range<usize>, usize, u64), CaptureError> {
        let big = self.big_endian;
        let body = &self.buf[..body_len];
        let bad = |what: &str| CaptureError::Corrupt {
            offset: block_start,
            reason: format!("malformed {what}"),
        };
        let ts = |at: usize| -> Option<u64> {
            let hi = u32_at(body, at, big)?;
            let lo = u32_at(body, at + 4, big)?;
            Some((u64::from(hi) << 32) | u64::from(lo))
        };
        match block_type {
            PCAPNG_EPB | PCAPNG_PB => {
                let name = if block_type == PCAPNG_EPB {
                    "enhanced packet block"
                } else {
                    "packet block"
                };
                let iface = if block_type == PCAPNG_EPB {
                    u32_at(body, 0, big).map(|v| v as usize)
                } else {
                    u16_at(body, 0, big).map(usize::from)
                }
                .ok_or_else(|| bad(name))?;
                let units = ts(4).ok_or_else(|| bad(name))?;
                let caplen = u32_at(body, 12, big).ok_or_else(|| bad(name))? as usize;
                let start: usize = 20;
                let end = start
                    .checked_add(caplen)
                    .filter(|end| *end <= body_len)
                    .ok_or_else(|| bad(name))?;
                Ok((start..end, iface, units))
            }
            _ => {
                // Simple packet block: original length, then the data (padded to 4 bytes)
                // up to the block's end; no interface id (the first) and no timestamp.
                let orig = u32_at(body, 0, big).ok_or_else(|| bad("simple packet block"))?;
                let caplen = (orig as usize).min(body_len - 4);
                Ok((4..4 + caplen, 0, 0))
            }
        }
    }
}

fn parse_idb(body: &[u8], big: bool) -> Option<Interface> {
    let link_type = u32::from(u16_at(body, 0, big)?);
    u32_at(body, 4, big)?; // snaplen
    let mut units_per_sec = 1e6;
    let mut pos = 8;
    while pos + 4 <= body.len() {
        let code = u16_at(body, pos, big)?;
        let len = usize::from(u16_at(body, pos + 2, big)?);
        let value = body.get(pos + 4..pos + 4 + len)?;
        if code == 0 {
            break;
        }
        if code == IF_TSRESOL
            && let Some(&v) = value.first()
        {
            let exp = i32::from(v & 0x7f);
            units_per_sec = if v & 0x80 == 0 {
                10f64.powi(exp)
            } else {
                2f64.powi(exp)
            };
        }
        pos += 4 + len.div_ceil(4) * 4;
    }
    Some(Interface {
        link_type,
        units_per_sec,
    })
}

/// The IP packet inside a link-layer frame, or why there is none.
pub fn link_payload(link_type: u32, frame: &[u8]) -> Result<&[u8], String> {
    let short = || {
        format!(
            "frame of {} bytes is shorter than its link header",
            frame.len()
        )
    };
    match link_type {
        // Ethernet, with any number (up to a bound) of 802.1Q / 802.1ad / QinQ tags.
        1 => {
            let mut ethertype = u16_at(frame, 12, true).ok_or_else(short)?;
            let mut pos = 14;
            for _ in 0..=MAX_VLAN_TAGS {
                if !matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) {
                    let rest = frame.get(pos..).ok_or_else(short)?;
                    return by_ethertype(ethertype, rest);
                }
                ethertype = u16_at(frame, pos + 2, true).ok_or_else(short)?;
                pos += 4;
            }
            Err(format!("more than {MAX_VLAN_TAGS} VLAN tags"))
        }
        // Raw IP: LINKTYPE_RAW, DLT_RAW as most systems (12) and OpenBSD (14) write it,
        // LINKTYPE_IPV4, LINKTYPE_IPV6.
        101 | 12 | 14 | 228 | 229 => Ok(frame),
        // Linux cooked capture v1: protocol at bytes 14-15.
        113 => {
            let proto = u16_at(frame, 14, true).ok_or_else(short)?;
            by_ethertype(proto, frame.get(16..).ok_or_else(short)?)
        }
        // Linux cooked capture v2: protocol at bytes 0-1, 20-byte header.
        276 => {
            let proto = u16_at(frame, 0, true).ok_or_else(short)?;
            by_ethertype(proto, frame.get(20..).ok_or_else(short)?)
        }
        // BSD loopback: a 4-byte address family, host byte order (NULL) or big-endian (LOOP).
        0 | 108 => {
            let le = u32_at(frame, 0, false).ok_or_else(short)?;
            let be = u32_at(frame, 0, true).ok_or_else(short)?;
            // AF_INET everywhere; AF_INET6 on Linux, NetBSD/OpenBSD, FreeBSD, macOS.
            let ip = |af: u32| matches!(af, 2 | 10 | 24 | 28 | 30);
            if (link_type == 0 && ip(le)) || ip(be) {
                Ok(&frame[4..])
            } else {
                Err(format!("loopback address family {be} is not IP"))
            }
        }
        other => Err(format!("link type {other} is not supported")),
    }
}

fn by_ethertype(ethertype: u16, rest: &[u8]) -> Result<&[u8], String> {
    match ethertype {
        0x0800 | 0x86dd => Ok(rest),
        other => Err(format!("ethertype {other:#06x} is not IP")),
    }
}

/// An IP protocol number and its name (when it has a well-known one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Protocol {
    pub number: u8,
    pub name: Option<&'static str>,
}

impl Protocol {
    pub fn new(number: u8) -> Protocol {
        let name = match number {
            0 => Some("hopopt"),
            1 => Some("icmp"),
            2 => Some("igmp"),
            4 => Some("ipip"),
            6 => Some("tcp"),
            17 => Some("udp"),
            41 => Some("ipv6"),
            43 => Some("ipv6-route"),
            44 => Some("ipv6-frag"),
            47 => Some("gre"),
            50 => Some("esp"),
            51 => Some("ah"),
            58 => Some("icmpv6"),
            59 => Some("ipv6-nonxt"),
            60 => Some("ipv6-opts"),
            103 => Some("pim"),
            112 => Some("vrrp"),
            132 => Some("sctp"),
            136 => Some("udplite"),
            _ => None,
        };
        Protocol { number, name }
    }
}

/// One output line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    pub index: u64,
    pub ts: f64,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub protocol: Option<Protocol>,
    pub sni: Option<String>,
    pub ja3: Option<String>,
    pub ja3_hash: Option<String>,
    pub ja4: Option<String>,
    /// The raw JA4 (`ja4_r`), for debugging a fingerprint.
    pub ja4_r: Option<String>,
    pub dns_names: Vec<String>,
    pub verdict: Option<&'static str>,
    pub filter: Option<&'static str>,
    pub reason: Option<&'static str>,
    /// Why the frame was not evaluated (not IP).
    pub skipped: Option<String>,
    /// Parse problems (IP header, DNS, TLS); the verdict stands.
    pub errors: Vec<String>,
}

/// Totals of one replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Frames read from the capture.
    pub frames: u64,
    /// Frames not evaluated (not IP).
    pub skipped: u64,
    pub accepted: u64,
    pub dropped: u64,
    /// IP packets without a readable source address (their verdict is `--unparsable`).
    pub unparsable: u64,
    /// Evaluated packets whose DNS or TLS payload was malformed.
    pub payload_errors: u64,
    /// Complete ClientHellos (one per hello, on the segment that completed it).
    pub hellos: u64,
    /// ClientHellos that needed more than one segment.
    pub split_hellos: u64,
    /// Split hellos abandoned (limit, timeout, conflicting data).
    pub hellos_given_up: u64,
    /// Packets whose DNS payload gave names.
    pub dns_packets: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} frames: {} accept, {} drop, {} skipped (not IP); {} unparsable IP, {} payload \
             parse errors; {} ClientHellos ({} split, {} abandoned), {} DNS packets",
            self.frames,
            self.accepted,
            self.dropped,
            self.skipped,
            self.unparsable,
            self.payload_errors,
            self.hellos,
            self.split_hellos,
            self.hellos_given_up,
            self.dns_packets,
        )
    }
}

/// Why a replay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("cannot write the output")]
    Output(#[source] io::Error),
    #[error("invalid inspection settings")]
    Inspect(#[source] crate::inspect::InspectConfigError),
}

/// What [`replay`] did: the totals, and the error that stopped it, if any.
#[derive(Debug)]
pub struct Report {
    pub format: Option<Format>,
    pub summary: Summary,
    pub error: Option<ReplayError>,
}

/// How a replay decides, besides the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayOptions {
    pub unparsable: UnparsableVerdict,
    pub uninspectable: Uninspectable,
    /// Inspect TLS segments only when their TCP checksum is valid (the daemon always does).
    pub verify_checksums: bool,
}

impl ReplayOptions {
    /// The daemon's defaults, without checksum verification (see the module docs).
    pub fn new(unparsable: UnparsableVerdict) -> ReplayOptions {
        ReplayOptions {
            unparsable,
            uninspectable: Uninspectable::Accept,
            verify_checksums: false,
        }
    }
}

/// Per-replay engine state: the rule set and the live engine's inspector.
struct Engine<'r> {
    rules: &'r RuleSet,
    inspector: Inspector,
    /// Monotonic clock for the flow tables, from the capture's timestamps.
    now_ms: u64,
}

impl Engine<'_> {
    fn record(&mut self, index: u64, frame: &Frame<'_>, summary: &mut Summary) -> Record {
        let mut rec = Record {
            index,
            ts: frame.ts,
            src: None,
            dst: None,
            src_port: None,
            dst_port: None,
            protocol: None,
            sni: None,
            ja3: None,
            ja3_hash: None,
            ja4: None,
            ja4_r: None,
            dns_names: Vec::new(),
            verdict: None,
            filter: None,
            reason: None,
            skipped: None,
            errors: Vec::new(),
        };
        let ip = match link_payload(frame.link_type, frame.data) {
            Ok(ip) => ip,
            Err(why) => {
                summary.skipped += 1;
                rec.skipped = Some(why);
                return rec;
            }
        };
        if frame.ts.is_finite() && frame.ts > 0.0 {
            // Saturating float-to-int conversion; the clock never goes backwards.
            self.now_ms = self.now_ms.max((frame.ts * 1000.0) as u64);
        }
        let outcome = self.inspector.inspect(self.rules, ip, self.now_ms);
        let decision = outcome.decision;
        rec.verdict = Some(decision.verdict.label());
        rec.filter = Some(decision.filter.label());
        rec.reason = Some(decision.reason.label());
        match decision.verdict {
            Verdict::Accept => summary.accepted += 1,
            Verdict::Drop => summary.dropped += 1,
        }
        if let Some(meta) = outcome.meta {
            rec.src = Some(meta.src);
            rec.dst = Some(meta.dst);
            rec.src_port = meta.src_port;
            rec.dst_port = meta.dst_port;
            rec.protocol = Some(Protocol::new(meta.protocol));
        }
        let app = self.inspector.app();
        rec.dns_names = app.dns_names().map(str::to_owned).collect();
        if !rec.dns_names.is_empty() {
            summary.dns_packets += 1;
        }
        if let Some(kind) = outcome.hello {
            summary.hellos += 1;
            if kind == HelloKind::Reassembled {
                summary.split_hellos += 1;
            }
            rec.sni = app.sni.map(str::to_owned);
            rec.ja3 = app.ja3.map(str::to_owned);
            rec.ja3_hash = app.ja3_hash.map(|h| h.to_string());
            rec.ja4 = app.ja4.map(|j| j.to_string());
            rec.ja4_r = app.ja4_r.map(str::to_owned);
        }
        match outcome.note {
            None | Some(Note::BlockedFlow) => {}
            Some(Note::Ip(e)) => {
                summary.unparsable += 1;
                rec.errors.push(format!("ip: {e}"));
            }
            Some(note) => {
                summary.payload_errors += 1;
                rec.errors.push(match note {
                    Note::Dns(e) => format!("dns: {e}"),
                    Note::Tls(e) => format!("tls: {e}"),
                    Note::GaveUp(why) => {
                        summary.hellos_given_up += 1;
                        format!("tls: split ClientHello abandoned ({why:?})")
                    }
                    Note::BadChecksum => "tcp: bad checksum; segment not inspected".to_owned(),
                    Note::Truncated => {
                        "tcp: segment cut off by the capture; not inspected".to_owned()
                    }
                    Note::Ip(_) | Note::BlockedFlow => String::new(),
                });
            }
        }
        rec
    }
}

/// Replay a capture: one JSON line per frame to `output`. Stops at the first unreadable part
/// of the capture or output error; the [`Report`] says how far it got.
pub fn replay(
    input: impl Read,
    mut output: impl Write,
    rules: &RuleSet,
    options: ReplayOptions,
) -> Report {
    let mut summary = Summary::default();
    let mut reader = match CaptureReader::new(input) {
        Ok(r) => r,
        Err(e) => {
            return Report {
                format: None,
                summary,
                error: Some(e.into()),
            };
        }
    };
    let format = Some(reader.format());
    let config = InspectConfig {
        uninspectable: options.uninspectable,
        verify_checksums: options.verify_checksums,
        extract: Extract::All,
        ..InspectConfig::new(options.unparsable)
    };
    let inspector = match Inspector::new(config) {
        Ok(inspector) => inspector,
        Err(e) => {
            return Report {
                format,
                summary,
                error: Some(ReplayError::Inspect(e)),
            };
        }
    };
    let mut engine = Engine {
        rules,
        inspector,
        now_ms: 0,
    };
    let mut line = Vec::with_capacity(512);
    let error = loop {
        let frame = match reader.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => break None,
            Err(e) => break Some(ReplayError::Capture(e)),
        };
        summary.frames += 1;
        let rec = engine.record(summary.frames, &frame, &mut summary);
        line.clear();
        if let Err(e) = serde_json::to_writer(&mut line, &rec) {
            break Some(ReplayError::Output(io::Error::other(e)));
        }
        line.push(b'\n');
        if let Err(e) = output.write_all(&line) {
            break Some(ReplayError::Output(e));
        }
    };
    let error = error.or_else(|| output.flush().err().map(ReplayError::Output));
    Report {
        format,
        summary,
        error,
    }
}

/// Why the policy could not be fetched from the controller.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot connect to the controller at {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("controller refused the sync stream")]
    Open(#[source] tonic::Status),
    #[error("sync stream failed")]
    Stream(#[source] tonic::Status),
    #[error("controller closed the sync stream before sending a full snapshot")]
    Closed,
    #[error("controller sent an update that was refused")]
    Rejected(#[source] SyncError),
    #[error("no full snapshot within {0:?}")]
    Timeout(Duration),
    #[error("cannot start the runtime")]
    Runtime(#[source] io::Error),
}

/// Connect to the controller's sync socket as a read-only observer (`Hello.observer`), take
/// the first full update and disconnect. Blocking (runs its own small runtime).
pub fn fetch_policy(socket: &Path, timeout: Duration) -> Result<PolicyState, FetchError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(FetchError::Runtime)?;
    runtime.block_on(async {
        tokio::time::timeout(timeout, fetch_full(socket, timeout))
            .await
            .map_err(|_| FetchError::Timeout(timeout))?
    })
}

async fn fetch_full(socket: &Path, timeout: Duration) -> Result<PolicyState, FetchError> {
    let channel = crate::sync::unix_channel(socket, timeout)
        .await
        .map_err(|source| FetchError::Connect {
            path: socket.to_path_buf(),
            source,
        })?;
    let mut client = pb::sync_client::SyncClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let hello = pb::DataplaneMessage {
        msg: Some(dataplane_message::Msg::Hello(pb::Hello {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            applied_generation: 0,
            queues: Vec::new(),
            pid: std::process::id(),
            observer: true,
            settings: None,
        })),
    };
    // The outbound half stays open (held by `_tx`) until the snapshot is in.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let _ = tx.try_send(hello);
    let mut inbound = client
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(FetchError::Open)?
        .into_inner();
    let mut stager = Stager::new();
    loop {
        let chunk = match inbound.message().await {
            Err(status) => return Err(FetchError::Stream(status)),
            Ok(None) => return Err(FetchError::Closed),
            Ok(Some(pb::ControllerMessage {
                msg: Some(controller_message::Msg::Update(chunk)),
            })) => chunk,
            // Observers are never asked to explain; anything else is ignored.
            Ok(Some(pb::ControllerMessage { msg: _ })) => continue,
        };
        if let Some(update) = stager.push(&chunk).map_err(FetchError::Rejected)?
            && update.full
        {
            let mut state = PolicyState::new();
            state.apply(update);
            drop(tx);
            return Ok(state);
        }
    }
}
