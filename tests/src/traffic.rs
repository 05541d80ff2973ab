//! Test traffic: TCP and UDP echo servers inside `fw`, and probes from `peer` (ICMP echo via
//! `ping`, a TCP connect + echo, a UDP request/response). Every probe is a new flow (fresh
//! source port or ICMP id) and gives up after [`PROBE_TIMEOUT`].

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::Netns;
use crate::process::run_with_timeout;
use crate::topology::fw_addr_for;

/// Ports of the echo servers in `fw`.
pub const TCP_PORT: u16 = 7100;
pub const UDP_PORT: u16 = 7101;
/// Longest wait of any single probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the servers look at their stop flag.
const SERVER_TICK: Duration = Duration::from_millis(100);

/// TCP and UDP echo servers bound to the firewall's addresses; stopped on drop.
#[derive(Debug)]
pub struct EchoServers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoServers {
    /// Bind in `fw` (sockets are created on a thread inside it) and serve from plain threads.
    pub fn start(fw: &Netns, addrs: &[IpAddr]) -> Result<EchoServers> {
        let addrs = addrs.to_vec();
        let sockets = fw.enter(move || -> Result<Vec<(TcpListener, UdpSocket)>> {
            addrs
                .iter()
                .map(|a| {
                    let tcp = TcpListener::bind((*a, TCP_PORT))
                        .with_context(|| format!("bind tcp {a}:{TCP_PORT}"))?;
                    let udp = UdpSocket::bind((*a, UDP_PORT))
                        .with_context(|| format!("bind udp {a}:{UDP_PORT}"))?;
                    Ok((tcp, udp))
                })
                .collect()
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (tcp, udp) in sockets {
            udp.set_read_timeout(Some(SERVER_TICK))?;
            let s = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || serve_tcp(&tcp, &s)));
            let s = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || serve_udp(&udp, &s)));
        }
        Ok(EchoServers { stop, threads })
    }
}

impl Drop for EchoServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_tcp(listener: &TcpListener, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        if !readable(listener, SERVER_TICK) {
            continue;
        }
        let Ok((mut conn, _)) = listener.accept() else {
            continue;
        };
        std::thread::spawn(move || {
            let _ = conn.set_read_timeout(Some(PROBE_TIMEOUT));
            let mut buf = [0u8; 512];
            if let Ok(n) = conn.read(&mut buf) {
                let _ = conn.write_all(&buf[..n]);
            }
        });
    }
}

fn serve_udp(socket: &UdpSocket, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    }
}

/// Whether `fd` becomes readable within `timeout`.
fn readable(fd: &impl AsRawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pfd` is a live, initialised pollfd and we pass a count of exactly 1.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    n > 0 && pfd.revents & libc::POLLIN != 0
}

/// Which kinds of traffic got an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    pub icmp: bool,
    pub tcp: bool,
    pub udp: bool,
}

impl Reach {
    pub fn all(&self) -> bool {
        self.icmp && self.tcp && self.udp
    }
    pub fn none(&self) -> bool {
        !self.icmp && !self.tcp && !self.udp
    }
}

impl fmt::Display for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = |ok| if ok { "answered" } else { "no answer" };
        write!(
            f,
            "icmp {}, tcp {}, udp {}",
            s(self.icmp),
            s(self.tcp),
            s(self.udp)
        )
    }
}

/// Probe `fw` from `peer` with ICMP, TCP and UDP in parallel, all from source `src`.
pub fn reach(peer: &Netns, src: IpAddr) -> Result<Reach> {
    let dst = fw_addr_for(src);
    std::thread::scope(|s| {
        let icmp = s.spawn(|| ping(peer, src, dst));
        let tcp = s.spawn(|| peer.enter(|| tcp_echo(src, dst, PROBE_TIMEOUT))?);
        let udp = s.spawn(|| peer.enter(|| udp_echo(src, dst, PROBE_TIMEOUT))?);
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<bool>>, what: &str| {
            h.join()
                .map_err(|_| anyhow::anyhow!("{what} probe panicked"))?
                .with_context(|| format!("{what} probe {src} -> {dst}"))
        };
        Ok(Reach {
            icmp: join(icmp, "icmp")?,
            tcp: join(tcp, "tcp")?,
            udp: join(udp, "udp")?,
        })
    })
}

/// Two ICMP echo requests 200 ms apart from `src` to `dst` inside `peer`
/// (`ping -c2 -i0.2 -W1`): true if either is answered. One echo lost on a loaded machine must
/// not read as "blocked"; a blocked peer loses both.
pub fn ping(peer: &Netns, src: IpAddr, dst: IpAddr) -> Result<bool> {
    let family = if dst.is_ipv4() { "-4" } else { "-6" };
    let mut cmd = peer.command("ping");
    cmd.args([family, "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", "-I"])
        .arg(src.to_string())
        .arg(dst.to_string());
    let out = run_with_timeout(&mut cmd, PROBE_TIMEOUT + Duration::from_secs(4))?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => bail!(
            "ping failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(0);

/// A payload no other probe uses, so a late answer to an earlier probe is never mistaken for
/// this one's.
fn token() -> Vec<u8> {
    format!(
        "meds-e2e {} {}",
        std::process::id(),
        NEXT_TOKEN.fetch_add(1, Ordering::Relaxed)
    )
    .into_bytes()
}

fn socket_for(src: IpAddr, ty: Type, proto: Protocol) -> Result<Socket> {
    let domain = if src.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, ty, Some(proto)).context("socket")?;
    socket
        .bind(&SockAddr::from(SocketAddr::new(src, 0)))
        .with_context(|| format!("bind {src}"))?;
    Ok(socket)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// A TCP connect from `src` (new ephemeral port) to the echo server on `dst`, then one echoed
/// message. True if it all worked within `timeout` per step; false on a timeout. A refused
/// connection is an error: the packet got through, but nothing listens (a harness fault).
/// Uses the calling thread's network namespace.
pub fn tcp_echo(src: IpAddr, dst: IpAddr, timeout: Duration) -> Result<bool> {
    let socket = socket_for(src, Type::STREAM, Protocol::TCP)?;
    let to = SockAddr::from(SocketAddr::new(dst, TCP_PORT));
    match socket.connect_timeout(&to, timeout) {
        Ok(()) => {}
        Err(e) if is_timeout(&e) => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("tcp connect {dst}:{TCP_PORT}")),
    }
    let mut stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let msg = token();
    stream.write_all(&msg).context("tcp write")?;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + timeout;
    while got.len() < msg.len() && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) => return Ok(false),
            Err(e) => return Err(e).context("tcp read"),
        }
    }
    Ok(got == msg)
}

/// One UDP request from `src` (new ephemeral port) to the echo server on `dst`; true if the
/// echo comes back within `timeout`. An ICMP port-unreachable is an error (nothing listens).
/// Uses the calling thread's network namespace.
pub fn udp_echo(src: IpAddr, dst: IpAddr, timeout: Duration) -> Result<bool> {
    let socket = UdpSocket::from(socket_for(src, Type::DGRAM, Protocol::UDP)?);
    socket
        .connect((dst, UDP_PORT))
        .with_context(|| format!("udp connect {dst}:{UDP_PORT}"))?;
    let msg = token();
    socket.send(&msg).context("udp send")?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv(&mut buf) {
            Ok(n) if buf[..n] == msg[..] => return Ok(true),
            Ok(_) => continue,
            Err(e) if is_timeout(&e) => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("udp recv from {dst}:{UDP_PORT}")),
        }
    }
}
