//! IP fragments built by hand: a UDP datagram (checksum over the whole datagram) cut into
//! IPv4 or IPv6 fragments at chosen offsets, sent from `peer` through a raw socket that
//! carries our own IP header (`IPPROTO_RAW`, i.e. `IP_HDRINCL` / `IPV6_HDRINCL`), so the
//! kernel neither fragments nor reassembles them on the way out. [`ask_fragmented`] sends a DNS
//! query this way and waits for the answer on an ordinary UDP socket bound to the query's
//! source port.
//!
//! Every query is a new flow (a source port no earlier query of this process used, a fresh
//! fragment identification), so a flow the dataplane remembers as blocked never hides a later
//! query, and fragments of different queries never mix in a reassembly queue.
//!
//! Must not: send to any address but the bed's.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::dns::{self, Asked, Question};
use crate::netns::Netns;

/// IP protocol number of UDP.
const PROTO_UDP: u8 = 17;
/// IPv6 next-header value of the fragment header.
const NEXT_FRAGMENT: u8 = 44;
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const FRAGMENT_HEADER_LEN: usize = 8;
const UDP_HEADER_LEN: usize = 8;
/// IPv4 "more fragments" flag in the flags/offset field.
const IPV4_MORE_FRAGMENTS: u16 = 0x2000;
/// Largest fragment offset (13 bits, in 8-byte units).
const MAX_OFFSET_UNITS: usize = 0x1fff;
const TTL: u8 = 64;
/// The smallest IPv6 link MTU (RFC 8200 §5): no sender that fragments to fit a real link
/// makes a non-last fragment shorter than this.
pub const IPV6_MIN_MTU: usize = 1280;
/// Largest datagram the receiving side reads.
const MAX_MESSAGE: usize = 4096;

/// The one's-complement sum of RFC 1071 over `chunks` (each of even length but the last),
/// complemented.
pub fn internet_checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for chunk in chunks {
        for &b in *chunk {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The pseudo-header of the UDP checksum (RFC 768, RFC 8200 §8.1).
fn pseudo_header(src: IpAddr, dst: IpAddr, udp_len: usize) -> Result<Vec<u8>> {
    let mut p = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, PROTO_UDP]);
            p.extend_from_slice(&u16::try_from(udp_len)?.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&u32::try_from(udp_len)?.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, PROTO_UDP]);
        }
        _ => bail!("{src} and {dst} are of different families"),
    }
    Ok(p)
}

/// A UDP datagram (header + payload) from `src`:`sport` to `dst`:`dport` with its checksum.
pub fn udp_datagram(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Result<Vec<u8>> {
    let len = UDP_HEADER_LEN + payload.len();
    let len16 = u16::try_from(len).context("UDP datagram longer than 65535 bytes")?;
    let mut d = Vec::with_capacity(len);
    d.extend_from_slice(&sport.to_be_bytes());
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&len16.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    let sum = internet_checksum(&[&pseudo_header(src, dst, len)?, &d]);
    // A computed zero is sent as all ones (zero means "no checksum", not allowed over IPv6).
    let sum = if sum == 0 { 0xffff } else { sum };
    d[6..8].copy_from_slice(&sum.to_be_bytes());
    Ok(d)
}

/// Whether `datagram` carries a correct UDP checksum for `src` -> `dst`.
pub fn udp_checksum_ok(src: IpAddr, dst: IpAddr, datagram: &[u8]) -> bool {
    pseudo_header(src, dst, datagram.len())
        .map(|p| internet_checksum(&[&p, datagram]) == 0)
        .unwrap_or(false)
}

/// Cut `datagram` (the payload of the IP layer: transport header and data) at `cuts` (strictly
/// increasing offsets inside it, multiples of 8) and wrap each piece in an IP header from `src`
/// to `dst` with fragment identification `id` (IPv4 uses its low 16 bits, which must not be 0:
/// the kernel would replace a zero id in each packet). Returns the fragments in offset order.
pub fn fragment(
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    datagram: &[u8],
    cuts: &[usize],
) -> Result<Vec<Vec<u8>>> {
    ensure!(
        !cuts.is_empty(),
        "no cut: that is not a fragmented datagram"
    );
    let mut bounds = vec![0];
    for &c in cuts {
        let last = bounds.last().copied().unwrap_or(0);
        ensure!(
            c > last && c < datagram.len(),
            "cut {c} must lie in ({last}, {})",
            datagram.len()
        );
        ensure!(c % 8 == 0, "cut {c} is not a multiple of 8");
        bounds.push(c);
    }
    ensure!(
        (datagram.len() - 1) / 8 <= MAX_OFFSET_UNITS,
        "datagram too long to fragment"
    );
    bounds.push(datagram.len());
    let mut out = Vec::with_capacity(bounds.len() - 1);
    for w in bounds.windows(2) {
        let (start, end) = (w[0], w[1]);
        let more = end < datagram.len();
        let piece = &datagram[start..end];
        let packet = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let id16 = (id & 0xffff) as u16;
                ensure!(id16 != 0, "IPv4 fragment id must not be 0");
                let total = u16::try_from(IPV4_HEADER_LEN + piece.len())?;
                let mut flags_offset = (start / 8) as u16;
                if more {
                    flags_offset |= IPV4_MORE_FRAGMENTS;
                }
                let mut h = Vec::with_capacity(IPV4_HEADER_LEN + piece.len());
                h.extend_from_slice(&[0x45, 0]);
                h.extend_from_slice(&total.to_be_bytes());
                h.extend_from_slice(&id16.to_be_bytes());
                h.extend_from_slice(&flags_offset.to_be_bytes());
                h.extend_from_slice(&[TTL, PROTO_UDP, 0, 0]);
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                let sum = internet_checksum(&[&h]);
                h[10..12].copy_from_slice(&sum.to_be_bytes());
                h.extend_from_slice(piece);
                h
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let payload_len = u16::try_from(FRAGMENT_HEADER_LEN + piece.len())?;
                let mut offset_flags = ((start / 8) as u16) << 3;
                if more {
                    offset_flags |= 1;
                }
                let mut h = Vec::with_capacity(IPV6_HEADER_LEN + FRAGMENT_HEADER_LEN + piece.len());
                h.extend_from_slice(&[0x60, 0, 0, 0]);
                h.extend_from_slice(&payload_len.to_be_bytes());
                h.extend_from_slice(&[NEXT_FRAGMENT, TTL]);
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                h.extend_from_slice(&[PROTO_UDP, 0]);
                h.extend_from_slice(&offset_flags.to_be_bytes());
                h.extend_from_slice(&id.to_be_bytes());
                h.extend_from_slice(piece);
                h
            }
            _ => bail!("{src} and {dst} are of different families"),
        };
        out.push(packet);
    }
    Ok(out)
}

/// Where a fragmented DNS query is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The first fragment holds the UDP header, the DNS header and every question but the last
    /// (cut at the last multiple of 8 at or before the last question); the last question lies
    /// entirely in the second fragment.
    BeforeLastQuestion,
    /// The first fragment holds only the UDP header and the first 8 bytes of the DNS header;
    /// every question lies in the second (a first fragment no real link needs, which some
    /// reassemblers once refused; Linux accepts it).
    Tiny,
}

/// In which order the fragments are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    InOrder,
    /// The fragment holding the names first, the one with the UDP header last.
    Reversed,
}

/// The offset in the UDP datagram of the cut for `split`, given the offset of the last
/// question in the DNS message.
fn cut_for(split: Split, last_question_at: usize) -> Result<usize> {
    let cut = match split {
        Split::BeforeLastQuestion => (UDP_HEADER_LEN + last_question_at) / 8 * 8,
        Split::Tiny => 16,
    };
    ensure!(
        cut >= 16 && cut <= UDP_HEADER_LEN + last_question_at,
        "cut {cut} does not leave the last question (at {last_question_at}) to the second fragment"
    );
    Ok(cut)
}

/// The wire length of one question for `name` (uncompressed name, type, class).
fn question_wire_len(q: &Question) -> Result<usize> {
    let one = dns::encode_query(0, std::slice::from_ref(q))?;
    Ok(one.len() - 12)
}

/// A long name nobody blocks, distinct per `i` (about 200 bytes on the wire).
pub fn padding_name(i: usize) -> String {
    let label = |c: char| c.to_string().repeat(63);
    format!(
        "{}.{}.{}.pad{i}.example",
        label('a'),
        label('b'),
        label('c')
    )
}

/// Questions that fill the first fragment so that it (with IPv6 and fragment headers) is at
/// least [`IPV6_MIN_MTU`] bytes, as a sender's own fragmentation would make it, followed by
/// `last`: a query [`Split::BeforeLastQuestion`] cuts into a first fragment of padding and a
/// second that holds `last` alone.
pub fn padded_questions(last: Question) -> Result<Vec<Question>> {
    let mut questions = Vec::new();
    // The UDP payload before the last question: the DNS header and the padding so far.
    let mut before_last = 12;
    while IPV6_HEADER_LEN + FRAGMENT_HEADER_LEN + cut_for(Split::BeforeLastQuestion, before_last)?
        < IPV6_MIN_MTU
    {
        let q = Question::a(&padding_name(questions.len()));
        before_last += question_wire_len(&q)?;
        questions.push(q);
    }
    questions.push(last);
    Ok(questions)
}

/// Source ports of fragmented queries: each takes the next one (see the module docs).
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);
const FIRST_PORT: u16 = 42000;
const PORT_SPAN: u16 = 16000;

fn next_source_port() -> u16 {
    FIRST_PORT + NEXT_PORT.fetch_add(1, Ordering::Relaxed) % PORT_SPAN
}

/// A query id and a fragment identification not used recently by this process (never 0 in
/// its low 16 bits).
fn next_ids() -> (u16, u32) {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let id = (n.wrapping_mul(7919).wrapping_add(std::process::id()) & 0xffff) as u16;
    let frag = (std::process::id() << 16) | (n & 0xffff).max(1);
    (id, frag)
}

/// Send `packets` (each with its own IP header) from inside the calling thread's namespace.
fn send_raw(dst: IpAddr, packets: &[Vec<u8>]) -> Result<()> {
    let domain = if dst.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    // IPPROTO_RAW: the header is ours (IP_HDRINCL / IPV6_HDRINCL implied); the kernel fills
    // in nothing we set, except the IPv4 header checksum and total length, which we set right.
    let socket = Socket::new(
        domain,
        Type::from(libc::SOCK_RAW),
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )
    .context("raw socket (needs CAP_NET_RAW)")?;
    let to = SockAddr::from(SocketAddr::new(dst, 0));
    for p in packets {
        let n = socket
            .send_to(p, &to)
            .with_context(|| format!("raw send of {} bytes to {dst}", p.len()))?;
        ensure!(n == p.len(), "raw send to {dst}: {n} of {} bytes", p.len());
    }
    Ok(())
}

/// Send a DNS query for `questions` from `src` (inside `peer`) to `server`:53 as IP fragments
/// cut by `split` and sent in `order`, and wait up to `timeout` for the response with its id
/// on a UDP socket bound to the query's source port. A response with that id that does not
/// echo the questions is an error.
pub fn ask_fragmented(
    peer: &Netns,
    src: IpAddr,
    server: IpAddr,
    questions: &[Question],
    split: Split,
    order: Order,
    timeout: Duration,
) -> Result<Asked> {
    let (id, frag_id) = next_ids();
    let query = dns::encode_query(id, questions)?;
    let last = questions.last().context("no question")?;
    let last_question_at = query.len() - question_wire_len(last)?;
    let port = next_source_port();
    let datagram = udp_datagram(src, server, port, dns::PORT, &query)?;
    let cut = cut_for(split, last_question_at)?;
    let mut packets = fragment(src, server, frag_id, &datagram, &[cut])?;
    if order == Order::Reversed {
        packets.reverse();
    }
    let response = peer.enter(move || -> Result<Option<dns::Response>> {
        let socket = UdpSocket::bind((src, port)).with_context(|| format!("bind {src}:{port}"))?;
        send_raw(server, &packets)?;
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; MAX_MESSAGE];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            socket.set_read_timeout(Some(left))?;
            match socket.recv_from(&mut buf) {
                Ok((n, from)) if from == SocketAddr::new(server, dns::PORT) => {
                    let r = dns::decode_response(&buf[..n])?;
                    if r.id == id {
                        return Ok(Some(r));
                    }
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e).with_context(|| format!("udp recv on {src}:{port}")),
            }
        }
    })??;
    if let Some(r) = &response {
        ensure!(
            r.questions == questions,
            "response {id} echoes {:?}, asked {questions:?}",
            r.questions
        );
    }
    Ok(Asked { id, response })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const V4: (IpAddr, IpAddr) = (
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
    );
    const V6: (IpAddr, IpAddr) = (
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
    );

    #[test]
    fn checksum_matches_rfc1071_and_verifies() -> Result<()> {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to ddf2, checksum 220d; odd lengths pad a zero.
        assert_eq!(
            internet_checksum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
            0x220d
        );
        // Split across chunks at an odd boundary, the same sum.
        assert_eq!(
            internet_checksum(&[&[0x00, 0x01, 0xf2], &[0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
            0x220d
        );
        assert_eq!(internet_checksum(&[&[0xff]]), !0xff00);
        for (src, dst) in [V4, V6] {
            for payload in [&b""[..], b"x", b"hello world", &[0xff; 1001]] {
                let d = udp_datagram(src, dst, 40000, 53, payload)?;
                assert!(udp_checksum_ok(src, dst, &d), "{src} {payload:?}");
                assert_ne!(&d[6..8], &[0, 0]);
                // One flipped bit is caught.
                let mut bad = d.clone();
                bad[d.len() - 1] ^= 1;
                assert!(!udp_checksum_ok(src, dst, &bad));
            }
        }
        Ok(())
    }

    /// Reassemble fragments built by [`fragment`] the way a receiver would, checking every
    /// header field on the way.
    fn reassemble(src: IpAddr, dst: IpAddr, id: u32, packets: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            let last = i + 1 == packets.len();
            let (offset, more, data) = if src.is_ipv4() {
                assert_eq!(p[0], 0x45);
                assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
                assert_eq!(u16::from_be_bytes([p[4], p[5]]), (id & 0xffff) as u16);
                assert_eq!(p[9], PROTO_UDP);
                assert_eq!(internet_checksum(&[&p[..20]]), 0, "header checksum");
                let fo = u16::from_be_bytes([p[6], p[7]]);
                (
                    usize::from(fo & 0x1fff) * 8,
                    fo & IPV4_MORE_FRAGMENTS != 0,
                    &p[20..],
                )
            } else {
                assert_eq!(p[0] >> 4, 6);
                assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), p.len() - 40);
                assert_eq!(p[6], NEXT_FRAGMENT);
                assert_eq!(p[40], PROTO_UDP);
                assert_eq!(u32::from_be_bytes([p[44], p[45], p[46], p[47]]), id);
                let fo = u16::from_be_bytes([p[42], p[43]]);
                (usize::from(fo >> 3) * 8, fo & 1 == 1, &p[48..])
            };
            let (s, d) = if src.is_ipv4() {
                (&p[12..16], &p[16..20])
            } else {
                (&p[8..24], &p[24..40])
            };
            let octets = |a: IpAddr| match a {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            assert_eq!((s.to_vec(), d.to_vec()), (octets(src), octets(dst)));
            assert_eq!(more, !last, "fragment {i}");
            assert_eq!(offset, out.len(), "fragment {i} offset");
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn fragments_reassemble_to_the_datagram() -> Result<()> {
        let payload: Vec<u8> = (0..=255u8).cycle().take(1500).collect();
        for (src, dst) in [V4, V6] {
            let d = udp_datagram(src, dst, 42000, 53, &payload)?;
            for cuts in [&[8][..], &[16], &[1504], &[8, 16, 1000]] {
                let packets = fragment(src, dst, 0x1234_5678, &d, cuts)?;
                assert_eq!(packets.len(), cuts.len() + 1);
                assert_eq!(reassemble(src, dst, 0x1234_5678, &packets), d, "{cuts:?}");
            }
            // Cuts that are not multiples of 8, out of range or not increasing are refused.
            for cuts in [&[][..], &[0], &[12], &[d.len()], &[16, 16], &[24, 16]] {
                assert!(fragment(src, dst, 1, &d, cuts).is_err(), "{cuts:?}");
            }
        }
        // A zero IPv4 id would be rewritten per packet by the kernel: refused.
        let d = udp_datagram(V4.0, V4.1, 1, 2, b"0123456789abcdef")?;
        assert!(fragment(V4.0, V4.1, 0x1_0000, &d, &[8]).is_err());
        Ok(())
    }

    #[test]
    fn the_last_question_lies_in_the_second_fragment() -> Result<()> {
        let questions = padded_questions(Question::a("bad.example"))?;
        let query = dns::encode_query(7, &questions)?;
        let last_at = query.len() - question_wire_len(&Question::a("bad.example"))?;
        for (split, first_at_least) in [(Split::BeforeLastQuestion, IPV6_MIN_MTU), (Split::Tiny, 0)]
        {
            let d = udp_datagram(V6.0, V6.1, 42000, 53, &query)?;
            let cut = cut_for(split, last_at)?;
            let packets = fragment(V6.0, V6.1, 9, &d, &[cut])?;
            assert!(packets[0].len() >= first_at_least, "{split:?}");
            let name = b"\x03bad\x07example\x00";
            let has_name = |p: &[u8]| p.windows(name.len()).any(|w| w == name);
            assert!(
                !has_name(&packets[0]),
                "{split:?}: name in the first fragment"
            );
            assert!(has_name(&packets[1]), "{split:?}: name not in the second");
        }
        Ok(())
    }
}
