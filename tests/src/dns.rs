//! DNS for the domain tests: a responder inside `fw` (UDP and TCP port 53) and queries sent
//! from `peer`. Messages are built and read here, by hand and only as far as the tests need (a
//! header, uncompressed questions, A answers), so the suite needs no resolver package and can
//! send what no resolver sends, such as one query with two questions (upstream W19).
//!
//! Every query is a new flow: it gets a fresh socket and a source port no earlier query of
//! this process used, so a flow the dataplane remembers as blocked never hides a later query.
//! The responder records every query it receives, so a test can tell "dropped before the
//! server" from "answered but lost".
//!
//! Must not: resolve anything for real or send to any address but the bed's.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::Netns;

pub const PORT: u16 = 53;
/// Record type A and class IN.
pub const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
/// The address in every A answer (TEST-NET-1).
pub const ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
const TTL: u32 = 60;
/// Header flags: QR (response), RD (recursion desired), RA (recursion available).
const FLAG_QR: u16 = 0x8000;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
/// Largest message either side handles (a query or answer of these tests is far smaller).
const MAX_MESSAGE: usize = 4096;
/// Most questions the responder accepts in one query.
const MAX_QUESTIONS: usize = 16;
/// How often the responder's threads look at their stop flag.
const SERVER_TICK: Duration = Duration::from_millis(100);

/// Transport of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    /// One query per connection, with the two-byte length prefix of RFC 1035 §4.2.2.
    Tcp,
    /// As `Tcp`, but the message is written in three TCP segments (the length prefix alone,
    /// then the DNS header, then the questions), so the name is never in the first one.
    TcpSplit,
}

impl Transport {
    /// What the responder sees: a split TCP query arrives as a TCP query.
    fn as_received(self) -> Transport {
        match self {
            Transport::TcpSplit => Transport::Tcp,
            t => t,
        }
    }
}

/// One question: a name (as sent, letter case included) and a record type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
}

impl Question {
    /// An A question for `name`.
    pub fn a(name: &str) -> Question {
        Question {
            name: name.to_owned(),
            qtype: TYPE_A,
        }
    }
}

/// The wire form of `name` (no compression). Refuses what DNS cannot carry.
fn encode_name(name: &str, out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    for label in name.trim_end_matches('.').split('.') {
        ensure!(
            !label.is_empty() && label.len() <= 63,
            "bad label {label:?} in {name:?}"
        );
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    ensure!(
        out.len() - start <= 255,
        "{name:?} is longer than 255 bytes"
    );
    Ok(())
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// A standard query (RD set) with `questions`, in this order.
pub fn encode_query(id: u16, questions: &[Question]) -> Result<Vec<u8>> {
    ensure!(
        !questions.is_empty() && questions.len() <= MAX_QUESTIONS,
        "a query needs 1..={MAX_QUESTIONS} questions"
    );
    let mut out = Vec::with_capacity(64);
    put_u16(&mut out, id);
    put_u16(&mut out, FLAG_RD);
    put_u16(&mut out, questions.len() as u16);
    for _ in 0..3 {
        put_u16(&mut out, 0);
    }
    for q in questions {
        encode_name(&q.name, &mut out)?;
        put_u16(&mut out, q.qtype);
        put_u16(&mut out, CLASS_IN);
    }
    Ok(out)
}

/// A bounds-checked reader over a message.
struct Cursor<'a> {
    msg: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.msg.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A name at the cursor. Compression pointers are followed (at most `MAX_POINTERS`, each
    /// to an earlier offset), so a hostile message cannot loop.
    fn name(&mut self) -> Option<String> {
        const MAX_POINTERS: usize = 16;
        let mut labels: Vec<String> = Vec::new();
        let mut at = self.at;
        let mut resume: Option<usize> = None;
        let mut pointers = 0;
        loop {
            let len = *self.msg.get(at)? as usize;
            match len {
                0 => {
                    at += 1;
                    break;
                }
                l if l & 0xc0 == 0xc0 => {
                    let lo = *self.msg.get(at + 1)? as usize;
                    let target = ((l & 0x3f) << 8) | lo;
                    pointers += 1;
                    if pointers > MAX_POINTERS || target >= at {
                        return None;
                    }
                    resume.get_or_insert(at + 2);
                    at = target;
                }
                l if l <= 63 => {
                    let label = self.msg.get(at + 1..at + 1 + l)?;
                    labels.push(String::from_utf8_lossy(label).into_owned());
                    at += 1 + l;
                }
                _ => return None,
            }
        }
        self.at = resume.unwrap_or(at);
        Some(labels.join("."))
    }

    fn question(&mut self) -> Option<Question> {
        let name = self.name()?;
        let qtype = self.u16()?;
        let _class = self.u16()?;
        Some(Question { name, qtype })
    }
}

/// A query as the responder reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub flags: u16,
    pub questions: Vec<Question>,
}

/// Read a query; `None` for anything that is not one (a response, malformed, too many
/// questions).
pub fn decode_query(msg: &[u8]) -> Option<Query> {
    let mut c = Cursor { msg, at: 0 };
    let id = c.u16()?;
    let flags = c.u16()?;
    let qdcount = c.u16()? as usize;
    if flags & FLAG_QR != 0 || qdcount == 0 || qdcount > MAX_QUESTIONS {
        return None;
    }
    c.take(6)?;
    let questions = (0..qdcount)
        .map(|_| c.question())
        .collect::<Option<Vec<_>>>()?;
    Some(Query {
        id,
        flags,
        questions,
    })
}

/// The responder's answer to `query`: the questions echoed, one A record ([`ANSWER`]) for
/// each A question (its name as a compression pointer to the question), NOERROR.
pub fn encode_response(query: &Query) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    put_u16(&mut out, query.id);
    put_u16(&mut out, FLAG_QR | (query.flags & FLAG_RD) | FLAG_RA);
    let answers = query.questions.iter().filter(|q| q.qtype == TYPE_A).count();
    put_u16(&mut out, query.questions.len() as u16);
    put_u16(&mut out, answers as u16);
    put_u16(&mut out, 0);
    put_u16(&mut out, 0);
    let mut offsets = Vec::new();
    for q in &query.questions {
        offsets.push(out.len());
        encode_name(&q.name, &mut out)?;
        put_u16(&mut out, q.qtype);
        put_u16(&mut out, CLASS_IN);
    }
    for (q, offset) in query.questions.iter().zip(offsets) {
        if q.qtype != TYPE_A {
            continue;
        }
        ensure!(offset < 0x4000, "question offset {offset} not addressable");
        put_u16(&mut out, 0xc000 | offset as u16);
        put_u16(&mut out, TYPE_A);
        put_u16(&mut out, CLASS_IN);
        out.extend_from_slice(&TTL.to_be_bytes());
        put_u16(&mut out, 4);
        out.extend_from_slice(&ANSWER.octets());
    }
    Ok(out)
}

/// A response as the client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub id: u16,
    pub rcode: u8,
    pub questions: Vec<Question>,
    /// The addresses of the A records of the answer section.
    pub addresses: Vec<Ipv4Addr>,
}

/// Read a response (an error for anything else).
pub fn decode_response(msg: &[u8]) -> Result<Response> {
    let mut c = Cursor { msg, at: 0 };
    let short = || format!("truncated or malformed response ({} bytes)", msg.len());
    let id = c.u16().with_context(short)?;
    let flags = c.u16().with_context(short)?;
    ensure!(flags & FLAG_QR != 0, "not a response (flags {flags:#06x})");
    let qdcount = c.u16().with_context(short)?;
    let ancount = c.u16().with_context(short)?;
    c.take(4).with_context(short)?;
    let mut questions = Vec::new();
    for _ in 0..qdcount {
        questions.push(c.question().with_context(short)?);
    }
    let mut addresses = Vec::new();
    for _ in 0..ancount {
        c.name().with_context(short)?;
        let rtype = c.u16().with_context(short)?;
        let _class = c.u16().with_context(short)?;
        let _ttl = c.u32().with_context(short)?;
        let len = c.u16().with_context(short)? as usize;
        let data = c.take(len).with_context(short)?;
        if rtype == TYPE_A && len == 4 {
            addresses.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
    }
    Ok(Response {
        id,
        rcode: (flags & 0x000f) as u8,
        questions,
        addresses,
    })
}

/// The queries a [`Responder`] received: (transport, query), in arrival order.
pub type Received = Arc<Mutex<Vec<(Transport, Query)>>>;

/// A DNS responder on port 53 (UDP and TCP) of the given addresses inside `fw`; it answers
/// every well-formed query with [`encode_response`]. Stopped on drop.
#[derive(Debug)]
pub struct Responder {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    received: Received,
}

impl Responder {
    pub fn start(fw: &Netns, addrs: &[IpAddr]) -> Result<Responder> {
        let addrs = addrs.to_vec();
        let sockets = fw.enter(move || -> Result<Vec<(TcpListener, UdpSocket)>> {
            addrs
                .iter()
                .map(|a| {
                    let tcp = TcpListener::bind((*a, PORT))
                        .with_context(|| format!("bind tcp {a}:{PORT}"))?;
                    let udp = UdpSocket::bind((*a, PORT))
                        .with_context(|| format!("bind udp {a}:{PORT}"))?;
                    Ok((tcp, udp))
                })
                .collect()
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let received: Received = Arc::default();
        let mut threads = Vec::new();
        for (tcp, udp) in sockets {
            udp.set_read_timeout(Some(SERVER_TICK))?;
            tcp.set_nonblocking(true)?;
            let (s, r) = (Arc::clone(&stop), Arc::clone(&received));
            threads.push(std::thread::spawn(move || serve_udp(&udp, &s, &r)));
            let (s, r) = (Arc::clone(&stop), Arc::clone(&received));
            threads.push(std::thread::spawn(move || serve_tcp(&tcp, &s, &r)));
        }
        Ok(Responder {
            stop,
            threads,
            received,
        })
    }

    /// Whether a query with this id and these question names arrived over `transport`.
    pub fn received(&self, transport: Transport, id: u16, names: &[&str]) -> bool {
        let Ok(log) = self.received.lock() else {
            return false;
        };
        log.iter().any(|(t, q)| {
            *t == transport.as_received()
                && q.id == id
                && q.questions.len() == names.len()
                && q.questions.iter().zip(names).all(|(q, n)| q.name == *n)
        })
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn record(received: &Received, transport: Transport, query: &Query) {
    if let Ok(mut log) = received.lock() {
        log.push((transport, query.clone()));
    }
}

fn serve_udp(socket: &UdpSocket, stop: &AtomicBool, received: &Received) {
    let mut buf = [0u8; MAX_MESSAGE];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some(query) = decode_query(&buf[..n]) else {
            continue;
        };
        record(received, Transport::Udp, &query);
        if let Ok(resp) = encode_response(&query) {
            let _ = socket.send_to(&resp, from);
        }
    }
}

fn serve_tcp(listener: &TcpListener, stop: &AtomicBool, received: &Received) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                let received = Arc::clone(received);
                std::thread::spawn(move || serve_tcp_conn(conn, &received));
            }
            // Nothing pending (the listener is non-blocking) or a transient accept error.
            Err(_) => std::thread::sleep(SERVER_TICK),
        }
    }
}

/// Answer length-prefixed queries on one connection until EOF, an error or a read timeout.
fn serve_tcp_conn(mut conn: TcpStream, received: &Received) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    loop {
        let mut len = [0u8; 2];
        if conn.read_exact(&mut len).is_err() {
            return;
        }
        let len = u16::from_be_bytes(len) as usize;
        let mut msg = vec![0u8; len];
        if conn.read_exact(&mut msg).is_err() {
            return;
        }
        let Some(query) = decode_query(&msg) else {
            return;
        };
        record(received, Transport::Tcp, &query);
        let Ok(resp) = encode_response(&query) else {
            return;
        };
        let mut framed = (resp.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&resp);
        if conn.write_all(&framed).is_err() {
            return;
        }
    }
}

/// Source ports of queries: each query of this process takes the next one, so no two queries
/// (and no query and an earlier blocked flow) share a 5-tuple.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);
const FIRST_PORT: u16 = 20000;
const PORT_SPAN: u16 = 20000;

fn next_source_port() -> u16 {
    FIRST_PORT + NEXT_PORT.fetch_add(1, Ordering::Relaxed) % PORT_SPAN
}

/// A query id no other query of this process used recently.
fn next_id() -> u16 {
    static NEXT_ID: AtomicU16 = AtomicU16::new(0);
    // Spread ids over the space; the low bits of the pid keep parallel processes apart.
    NEXT_ID
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_mul(7919)
        .wrapping_add(std::process::id() as u16)
}

/// The outcome of one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// The id the query carried.
    pub id: u16,
    /// The matching response, `None` when none came within the timeout.
    pub response: Option<Response>,
}

fn bound_socket(src: IpAddr, ty: Type, proto: Protocol) -> Result<Socket> {
    let domain = if src.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, ty, Some(proto)).context("socket")?;
    socket.set_reuse_address(true)?;
    let local = SocketAddr::new(src, next_source_port());
    socket
        .bind(&SockAddr::from(local))
        .with_context(|| format!("bind {local}"))?;
    Ok(socket)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Send one query from `src` (inside `peer`) to `server`:53 and wait up to `timeout` for the
/// response with its id. A response with the right id that does not echo the questions is an
/// error (the responder always echoes them).
pub fn ask(
    peer: &Netns,
    transport: Transport,
    src: IpAddr,
    server: IpAddr,
    questions: &[Question],
    timeout: Duration,
) -> Result<Asked> {
    let id = next_id();
    let query = encode_query(id, questions)?;
    let response = peer.enter(|| match transport {
        Transport::Udp => ask_udp(src, server, &query, id, timeout),
        Transport::Tcp => ask_tcp(src, server, &query, id, timeout, false),
        Transport::TcpSplit => ask_tcp(src, server, &query, id, timeout, true),
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

fn ask_udp(
    src: IpAddr,
    server: IpAddr,
    query: &[u8],
    id: u16,
    timeout: Duration,
) -> Result<Option<Response>> {
    let socket = UdpSocket::from(bound_socket(src, Type::DGRAM, Protocol::UDP)?);
    socket
        .connect((server, PORT))
        .with_context(|| format!("udp connect {server}:{PORT}"))?;
    socket.send(query).context("udp send")?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; MAX_MESSAGE];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv(&mut buf) {
            Ok(n) => {
                let r = decode_response(&buf[..n])?;
                if r.id == id {
                    return Ok(Some(r));
                }
            }
            Err(e) if is_timeout(&e) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("udp recv from {server}:{PORT}")),
        }
    }
}

fn ask_tcp(
    src: IpAddr,
    server: IpAddr,
    query: &[u8],
    id: u16,
    timeout: Duration,
    split: bool,
) -> Result<Option<Response>> {
    let socket = bound_socket(src, Type::STREAM, Protocol::TCP)?;
    let to = SockAddr::from(SocketAddr::new(server, PORT));
    // The handshake carries no name, so a refused or timed-out connect is a harness fault.
    socket
        .connect_timeout(&to, timeout)
        .with_context(|| format!("tcp connect {server}:{PORT}"))?;
    let mut stream = TcpStream::from(socket);
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(timeout))?;
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    if split {
        // Nagle is off: each write leaves as its own segment; the pause keeps the kernel from
        // joining them when a write finds the previous one still unsent.
        for part in [&framed[..2], &framed[2..14], &framed[14..]] {
            stream.write_all(part).context("tcp send")?;
            std::thread::sleep(Duration::from_millis(20));
        }
    } else {
        stream.write_all(&framed).context("tcp send")?;
    }
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; MAX_MESSAGE];
    loop {
        if got.len() >= 2 {
            let len = u16::from_be_bytes([got[0], got[1]]) as usize;
            if got.len() >= 2 + len {
                let r = decode_response(&got[2..2 + len])?;
                if r.id != id {
                    bail!("tcp response id {} to query {id}", r.id);
                }
                return Ok(Some(r));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => bail!("tcp {server}:{PORT} closed without an answer"),
            Ok(n) if got.len() + n <= 2 + MAX_MESSAGE => got.extend_from_slice(&buf[..n]),
            Ok(_) => bail!("tcp response longer than {MAX_MESSAGE} bytes"),
            Err(e) if is_timeout(&e) => return Ok(None),
            Err(e) => return Err(e).context("tcp recv"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_round_trip_through_the_responder_encoding() -> Result<()> {
        let questions = vec![
            Question::a("good.example"),
            Question::a("X.Bad.Example."),
            Question {
                name: "v6.example".into(),
                qtype: 28,
            },
        ];
        let wire = encode_query(0xbeef, &questions)?;
        let q = decode_query(&wire).context("own query must decode")?;
        assert_eq!(q.id, 0xbeef);
        let names: Vec<&str> = q.questions.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, ["good.example", "X.Bad.Example", "v6.example"]);
        let resp = decode_response(&encode_response(&q)?)?;
        assert_eq!(resp.id, 0xbeef);
        assert_eq!(resp.rcode, 0);
        assert_eq!(resp.questions, q.questions);
        // One A record per A question, none for the AAAA question.
        assert_eq!(resp.addresses, vec![ANSWER, ANSWER]);
        Ok(())
    }

    #[test]
    fn bad_names_and_messages_are_refused() {
        let long_label = "a".repeat(64);
        let long_name = ["abcdefghi"; 26].join(".");
        for name in ["", "a..b", long_label.as_str(), long_name.as_str()] {
            assert!(
                encode_query(1, &[Question::a(name)]).is_err(),
                "{name:?} must be refused"
            );
        }
        assert!(encode_query(1, &[]).is_err());
        let Ok(good) = encode_query(7, &[Question::a("a.example")]) else {
            panic!("a.example must encode");
        };
        // Every strict prefix of a query is incomplete, never a panic.
        for end in 0..good.len() {
            assert!(decode_query(&good[..end]).is_none(), "prefix {end}");
        }
        // A response is not a query; a query is not a response.
        let mut response = good.clone();
        response[2] |= 0x80;
        assert!(decode_query(&response).is_none());
        assert!(decode_response(&good).is_err());
        // A compression loop (a pointer to itself) is refused.
        let mut looped = good[..12].to_vec();
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(decode_query(&looped).is_none());
    }

    #[test]
    fn source_ports_do_not_repeat_soon() {
        let a: Vec<u16> = (0..100).map(|_| next_source_port()).collect();
        let mut sorted = a.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), a.len());
        assert!(
            a.iter()
                .all(|p| (FIRST_PORT..FIRST_PORT + PORT_SPAN).contains(p))
        );
    }
}
