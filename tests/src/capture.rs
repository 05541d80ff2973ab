//! Packet captures for the TLS tests, and the readers they are compared with.
//!
//! * [`Capture`]: `tcpdump` on an interface inside a namespace, writing a pcap file. It is
//!   stopped only once a marker datagram, sent after the traffic, is in the file, so nothing the
//!   test sent is still in the kernel's capture buffer when tcpdump exits.
//! * [`segments`]: the TCP segments of a capture (our own small pcap reader, Ethernet and
//!   IPv4/IPv6 only), to check how the traffic really went over the wire (e.g. that a
//!   ClientHello took two segments) without trusting the code under test.
//! * [`replay`]: `meds-dataplane replay FILE`, its JSON lines and the ClientHellos among them.
//! * [`tshark_hellos`]: the same hellos as Wireshark's dissector sees them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::eventually::eventually;
use crate::host;
use crate::netns::Netns;
use crate::process::{Daemon, display_command, run_with_timeout};

/// Destination port of the end-of-capture marker (discard; nothing listens in `fw`).
pub const MARKER_PORT: u16 = 9;
/// How long tcpdump gets to start, and the marker to reach the file.
const CAPTURE_WAIT: Duration = Duration::from_secs(10);
/// Deadline of one replay or tshark run.
const READER_TIMEOUT: Duration = Duration::from_secs(60);
const LINKTYPE_ETHERNET: u32 = 1;

/// A running `tcpdump -i IFACE -w FILE FILTER` inside a namespace; killed on drop if not
/// finished.
#[derive(Debug)]
pub struct Capture {
    daemon: Daemon,
    pub path: PathBuf,
    log: PathBuf,
}

impl Capture {
    /// Start capturing on `iface` inside `ns` what `filter` (pcap-filter syntax) selects, plus
    /// the marker. Returns once tcpdump is listening.
    pub fn start(ns: &Netns, iface: &str, filter: &str, path: &Path) -> Result<Capture> {
        let log = path.with_extension("tcpdump.log");
        let mut cmd = ns.command(host::require_tool("tcpdump")?);
        // -U with --immediate-mode: every packet is written as it arrives; -s 0: whole frames.
        cmd.args(["-i", iface, "-n", "-U", "--immediate-mode", "-s", "0", "-w"])
            .arg(path)
            .arg(format!("({filter}) or (udp dst port {MARKER_PORT})"));
        let mut daemon = Daemon::spawn("tcpdump", &mut cmd, &log)?;
        eventually(CAPTURE_WAIT, "tcpdump is listening", || {
            daemon.ensure_running()?;
            let text = std::fs::read_to_string(&log)?;
            if !text.contains("listening on") {
                bail!("tcpdump has not started yet: {}", text.trim());
            }
            Ok(())
        })?;
        Ok(Capture {
            daemon,
            path: path.to_path_buf(),
            log,
        })
    }

    /// Send the marker from `src` inside `peer` to `dst` (it must cross the captured
    /// interface), wait until it is in the file, stop tcpdump and return the file's path.
    pub fn finish(mut self, peer: &Netns, src: IpAddr, dst: IpAddr) -> Result<PathBuf> {
        let token = format!(
            "meds-e2e end of capture {} {}",
            std::process::id(),
            crate::workdir::unique_id()
        );
        let path = self.path.clone();
        eventually(CAPTURE_WAIT, "the capture holds the end marker", || {
            peer.enter(|| -> Result<()> {
                let s = UdpSocket::bind(SocketAddr::new(src, 0))?;
                s.send_to(token.as_bytes(), SocketAddr::new(dst, MARKER_PORT))?;
                Ok(())
            })??;
            let bytes = std::fs::read(&path)?;
            if !bytes.windows(token.len()).any(|w| w == token.as_bytes()) {
                bail!("marker not captured yet ({} bytes)", bytes.len());
            }
            Ok(())
        })?;
        let status = self.daemon.terminate()?;
        // tcpdump exits 0 on SIGTERM after closing the file.
        ensure!(
            status.success() || status.code().is_none(),
            "tcpdump exited with {status}: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        Ok(path)
    }
}

/// One TCP segment of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// 1-based frame number (as Wireshark and `meds-dataplane replay` count).
    pub frame: u64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub flags: u8,
    pub payload_len: usize,
}

impl Segment {
    pub const SYN: u8 = 0x02;
    pub const FIN: u8 = 0x01;
}

/// The TCP segments of a classic pcap file of Ethernet frames (what tcpdump writes on a veth).
/// Frames that are not IPv4/IPv6 TCP are skipped, but counted in `frame`.
pub fn segments(pcap: &[u8]) -> Result<Vec<Segment>> {
    let header = pcap.get(..24).context("pcap shorter than its header")?;
    let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let little = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        m if m.swap_bytes() == 0xa1b2_c3d4 || m.swap_bytes() == 0xa1b2_3c4d => false,
        m => bail!("not a classic pcap file (magic {m:#010x})"),
    };
    let u32_at = |b: &[u8], at: usize| -> Result<u32> {
        let s: [u8; 4] = b
            .get(at..at + 4)
            .context("truncated pcap")?
            .try_into()
            .context("truncated pcap")?;
        Ok(if little {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        })
    };
    let link = u32_at(pcap, 20)?;
    ensure!(
        link == LINKTYPE_ETHERNET,
        "link type {link}: only Ethernet captures are read"
    );
    let mut out = Vec::new();
    let mut at = 24;
    let mut frame = 0u64;
    while at < pcap.len() {
        let caplen = u32_at(pcap, at + 8)? as usize;
        let data = pcap
            .get(at + 16..at + 16 + caplen)
            .with_context(|| format!("frame {} is truncated", frame + 1))?;
        frame += 1;
        at += 16 + caplen;
        if let Some(s) = tcp_of_ethernet(frame, data) {
            out.push(s);
        }
    }
    Ok(out)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn tcp_of_ethernet(frame: u64, data: &[u8]) -> Option<Segment> {
    let ethertype = be16(data, 12)?;
    let ip = data.get(14..)?;
    let (src, dst, tcp) = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let total = usize::from(be16(ip, 2)?);
            if *ip.get(9)? != 6 || ihl < 20 || total < ihl {
                return None;
            }
            let s: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (
                IpAddr::from(Ipv4Addr::from(s)),
                IpAddr::from(Ipv4Addr::from(d)),
                ip.get(ihl..total)?,
            )
        }
        0x86dd => {
            // No extension headers: the bed's traffic carries none.
            if *ip.get(6)? != 6 {
                return None;
            }
            let len = usize::from(be16(ip, 4)?);
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (
                IpAddr::from(Ipv6Addr::from(s)),
                IpAddr::from(Ipv6Addr::from(d)),
                ip.get(40..40 + len)?,
            )
        }
        _ => return None,
    };
    let offset = usize::from(tcp.get(12)? >> 4) * 4;
    if offset < 20 || offset > tcp.len() {
        return None;
    }
    let seq = u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?);
    Some(Segment {
        frame,
        src: SocketAddr::new(src, be16(tcp, 0)?),
        dst: SocketAddr::new(dst, be16(tcp, 2)?),
        seq,
        flags: *tcp.get(13)?,
        payload_len: tcp.len() - offset,
    })
}

/// How the client of a TLS connection to `server_port` sent its first flight: the payload sizes
/// of its data segments before the server's first data segment, retransmissions (a sequence
/// number seen before) left out. That is the ClientHello as the client cut it, also when the
/// server never answered it. One entry per connection, in capture order.
pub fn first_flights(segs: &[Segment], server_port: u16) -> Vec<Vec<usize>> {
    struct Flow {
        client: SocketAddr,
        sent: Vec<(u32, usize)>,
        answered: bool,
    }
    let mut flows: Vec<Flow> = Vec::new();
    for s in segs {
        if s.dst.port() == server_port {
            if s.flags & Segment::SYN != 0 {
                flows.push(Flow {
                    client: s.src,
                    sent: Vec::new(),
                    answered: false,
                });
            } else if s.payload_len > 0
                && let Some(f) = flows.iter_mut().rev().find(|f| f.client == s.src)
                && !f.answered
                && !f.sent.iter().any(|(seq, _)| *seq == s.seq)
            {
                f.sent.push((s.seq, s.payload_len));
            }
        } else if s.src.port() == server_port
            && s.payload_len > 0
            && let Some(f) = flows.iter_mut().rev().find(|f| f.client == s.dst)
        {
            f.answered = true;
        }
    }
    flows
        .into_iter()
        .map(|f| f.sent.into_iter().map(|(_, len)| len).collect())
        .collect()
}

/// Whether the server on `server_port` ever sent data to `client` in `segs`.
pub fn server_answered(segs: &[Segment], server_port: u16, client: SocketAddr) -> bool {
    segs.iter()
        .any(|s| s.src.port() == server_port && s.dst == client && s.payload_len > 0)
}

/// A ClientHello as a reader reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The frame that completed the hello.
    pub frame: u64,
    /// The server's port (each probe has its own).
    pub dst_port: u16,
    pub sni: Option<String>,
    pub ja3: String,
    pub ja3_hash: String,
    pub ja4: Option<String>,
}

/// `meds-dataplane replay FILE` (no policy: empty lists): one JSON object per frame.
pub fn replay(dataplane: &Path, pcap: &Path) -> Result<Vec<Value>> {
    let mut cmd = Command::new(dataplane);
    cmd.arg("replay").arg(pcap);
    let shown = display_command(&cmd);
    let out = run_with_timeout(&mut cmd, READER_TIMEOUT)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "`{shown}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("replay line is not JSON: {l}")))
        .collect()
}

/// The hellos among replay records: those with a `ja3` (set on the frame completing a hello).
pub fn replay_hellos(records: &[Value]) -> Result<Vec<Hello>> {
    let text = |r: &Value, key: &str| -> Result<Option<String>> {
        match &r[key] {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            other => bail!("{key} is {other} in {r}"),
        }
    };
    let mut out = Vec::new();
    for r in records {
        let Some(ja3) = text(r, "ja3")? else {
            continue;
        };
        out.push(Hello {
            frame: r["index"]
                .as_u64()
                .with_context(|| format!("no index in {r}"))?,
            dst_port: r["dst_port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .with_context(|| format!("no dst_port in {r}"))?,
            sni: text(r, "sni")?,
            ja3,
            ja3_hash: text(r, "ja3_hash")?.with_context(|| format!("ja3 without ja3_hash: {r}"))?,
            ja4: text(r, "ja4")?,
        });
    }
    Ok(out)
}

/// Whether the installed tshark has a field (e.g. `tls.handshake.ja4`, Wireshark ≥ 4.2).
pub fn tshark_has_field(field: &str) -> Result<bool> {
    let out = run_with_timeout(
        Command::new(host::require_tool("tshark")?).args(["-G", "fields"]),
        READER_TIMEOUT,
    )?;
    let needle = format!("\t{field}\t");
    Ok(String::from_utf8_lossy(&out.stdout).contains(&needle))
}

/// The ClientHellos of `pcap` as tshark dissects them (TCP reassembly on, its default), with
/// `tls_ports` decoded as TLS. `ja4` only when `with_ja4`.
pub fn tshark_hellos(pcap: &Path, tls_ports: &[u16], with_ja4: bool) -> Result<Vec<Hello>> {
    let mut cmd = Command::new(host::require_tool("tshark")?);
    cmd.arg("-n").arg("-r").arg(pcap);
    for p in tls_ports {
        cmd.arg("-d").arg(format!("tcp.port=={p},tls"));
    }
    cmd.args(["-Y", "tls.handshake.type == 1", "-T", "fields"])
        .args([
            "-E",
            "separator=/t",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=|",
        ]);
    let mut fields = vec![
        "frame.number",
        "tcp.dstport",
        "tls.handshake.extensions_server_name",
        "tls.handshake.ja3_full",
        "tls.handshake.ja3",
    ];
    if with_ja4 {
        fields.push("tls.handshake.ja4");
    }
    for f in &fields {
        cmd.arg("-e").arg(f);
    }
    let shown = display_command(&cmd);
    let out = run_with_timeout(&mut cmd, READER_TIMEOUT)?;
    ensure!(
        out.status.success(),
        "`{shown}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    parse_tshark_fields(&String::from_utf8_lossy(&out.stdout), with_ja4)
}

/// Parse tshark's `-T fields` lines (frame, destination port, SNI, JA3 string, JA3 hash[,
/// JA4]). A frame carrying
/// two hellos (never in these captures) is refused rather than half-read.
pub fn parse_tshark_fields(text: &str, with_ja4: bool) -> Result<Vec<Hello>> {
    let want = if with_ja4 { 6 } else { 5 };
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        ensure!(
            cols.len() == want,
            "tshark line has {} fields: {line:?}",
            cols.len()
        );
        ensure!(
            !cols.iter().any(|c| c.contains('|')),
            "a frame with several hellos: {line:?}"
        );
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        out.push(Hello {
            frame: cols[0]
                .parse()
                .with_context(|| format!("frame number in {line:?}"))?,
            dst_port: cols[1]
                .parse()
                .with_context(|| format!("port in {line:?}"))?,
            sni: opt(cols[2]),
            ja3: cols[3].to_owned(),
            ja3_hash: cols[4].to_owned(),
            ja4: if with_ja4 { opt(cols[5]) } else { None },
        });
    }
    Ok(out)
}

/// What JA4 is computed from, as tshark dissects one ClientHello (Wireshark before 4.2 has no
/// JA4 field of its own). [`Ja4Input::ja4`] is a reference implementation written from the
/// definition (JA4 over TCP), independent of the dataplane's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ja4Input {
    pub frame: u64,
    pub dst_port: u16,
    pub legacy_version: u16,
    pub ciphers: Vec<u16>,
    pub extensions: Vec<u16>,
    pub supported_versions: Vec<u16>,
    /// signature_algorithms (extension 13), in the order sent.
    pub sig_algs: Vec<u16>,
    /// The first ALPN protocol, as tshark prints it.
    pub alpn_first: Option<String>,
    /// Whether a server_name extension carries a host name.
    pub sni: bool,
}

/// GREASE (RFC 8701): 0x?a?a with both bytes equal.
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// `sha256sum` of `text`, first 12 hex digits.
fn sha256_12(text: &str) -> Result<String> {
    let out = run_with_timeout(
        Command::new("sh").args(["-c", "printf %s \"$1\" | sha256sum", "sh", text]),
        READER_TIMEOUT,
    )?;
    let hex = String::from_utf8_lossy(&out.stdout);
    let hex = hex.split_whitespace().next().unwrap_or_default();
    ensure!(
        out.status.success() && hex.len() == 64,
        "sha256sum failed: {hex:?}"
    );
    Ok(hex[..12].to_owned())
}

impl Ja4Input {
    /// JA4 (`t…`) of this hello.
    pub fn ja4(&self) -> Result<String> {
        let version = self
            .supported_versions
            .iter()
            .copied()
            .filter(|v| !is_grease(*v))
            .max()
            .unwrap_or(self.legacy_version);
        let version = match version {
            0x0304 => "13",
            0x0303 => "12",
            0x0302 => "11",
            0x0301 => "10",
            0x0300 => "s3",
            0x0002 => "s2",
            _ => "00",
        };
        let ciphers: Vec<u16> = self
            .ciphers
            .iter()
            .copied()
            .filter(|c| !is_grease(*c))
            .collect();
        let extensions: Vec<u16> = self
            .extensions
            .iter()
            .copied()
            .filter(|e| !is_grease(*e))
            .collect();
        let alpn = match self.alpn_first.as_deref() {
            None | Some("") => "00".to_owned(),
            Some(p) => {
                ensure!(
                    p.is_ascii() && !p.contains('\\'),
                    "ALPN {p:?}: only printable ASCII is handled here"
                );
                let (first, last) = (p.as_bytes()[0], p.as_bytes()[p.len() - 1]);
                if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
                    format!("{}{}", first as char, last as char)
                } else {
                    format!("{:x}{:x}", first >> 4, last & 0x0f)
                }
            }
        };
        let a = format!(
            "t{version}{}{:02}{:02}{alpn}",
            if self.sni { 'd' } else { 'i' },
            ciphers.len().min(99),
            extensions.len().min(99)
        );
        let hex_sorted = |mut v: Vec<u16>| {
            v.sort_unstable();
            v.iter()
                .map(|x| format!("{x:04x}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let b = if ciphers.is_empty() {
            "000000000000".to_owned()
        } else {
            sha256_12(&hex_sorted(ciphers))?
        };
        let exts: Vec<u16> = extensions
            .into_iter()
            .filter(|e| *e != 0x0000 && *e != 0x0010)
            .collect();
        let mut c_text = hex_sorted(exts);
        if !self.sig_algs.is_empty() {
            let sigs: Vec<String> = self.sig_algs.iter().map(|x| format!("{x:04x}")).collect();
            c_text = format!("{c_text}_{}", sigs.join(","));
        }
        let c = if c_text.is_empty() {
            "000000000000".to_owned()
        } else {
            sha256_12(&c_text)?
        };
        Ok(format!("{a}_{b}_{c}"))
    }
}

/// The JA4 inputs of every ClientHello of `pcap`, from tshark's dissection.
pub fn tshark_ja4_inputs(pcap: &Path, tls_ports: &[u16]) -> Result<Vec<Ja4Input>> {
    let mut cmd = Command::new(host::require_tool("tshark")?);
    cmd.arg("-n").arg("-r").arg(pcap);
    for p in tls_ports {
        cmd.arg("-d").arg(format!("tcp.port=={p},tls"));
    }
    cmd.args(["-Y", "tls.handshake.type == 1", "-T", "fields"])
        .args([
            "-E",
            "separator=/t",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=|",
        ]);
    for f in [
        "frame.number",
        "tcp.dstport",
        "tls.handshake.version",
        "tls.handshake.ciphersuite",
        "tls.handshake.extension.type",
        "tls.handshake.extensions.supported_version",
        "tls.handshake.sig_hash_alg",
        "tls.handshake.extensions_alpn_str",
        "tls.handshake.extensions_server_name",
    ] {
        cmd.arg("-e").arg(f);
    }
    let shown = display_command(&cmd);
    let out = run_with_timeout(&mut cmd, READER_TIMEOUT)?;
    ensure!(
        out.status.success(),
        "`{shown}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    parse_ja4_inputs(&String::from_utf8_lossy(&out.stdout))
}

/// Parse the lines [`tshark_ja4_inputs`] asks tshark for.
pub fn parse_ja4_inputs(text: &str) -> Result<Vec<Ja4Input>> {
    let list = |s: &str, hex: bool| -> Result<Vec<u16>> {
        s.split('|')
            .filter(|v| !v.is_empty())
            .map(|v| {
                let parsed = if hex {
                    let digits = v
                        .strip_prefix("0x")
                        .with_context(|| format!("{v:?} not hex"))?;
                    u16::from_str_radix(digits, 16)
                } else {
                    v.parse()
                };
                parsed.with_context(|| format!("bad value {v:?}"))
            })
            .collect()
    };
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        ensure!(
            cols.len() == 9,
            "tshark line has {} fields: {line:?}",
            cols.len()
        );
        let extensions = list(cols[4], false)?;
        // Wireshark files signature_algorithms_cert (50) under the same field as extension 13.
        ensure!(
            !extensions.contains(&50),
            "frame {}: signature_algorithms_cert present, the reference cannot tell the lists apart",
            cols[0]
        );
        let versions = list(cols[2], true)?;
        ensure!(
            versions.len() == 1,
            "frame {}: one hello per frame",
            cols[0]
        );
        out.push(Ja4Input {
            frame: cols[0].parse().context("frame number")?,
            dst_port: cols[1].parse().context("port")?,
            legacy_version: versions[0],
            ciphers: list(cols[3], true)?,
            extensions,
            supported_versions: list(cols[5], true)?,
            sig_algs: list(cols[6], true)?,
            alpn_first: cols[7]
                .split('|')
                .next()
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            sni: !cols[8].is_empty(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pcap of Ethernet frames with the given IPv4 TCP segments (src, dst, flags, payload).
    fn pcap(segs: &[(SocketAddr, SocketAddr, u8, usize)]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, LINKTYPE_ETHERNET] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for (i, (src, dst, flags, len)) in segs.iter().enumerate() {
            let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
                panic!("IPv4 only");
            };
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let total = (20 + 20 + len) as u16;
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0, 64, 6, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            f.extend_from_slice(&src.port().to_be_bytes());
            f.extend_from_slice(&dst.port().to_be_bytes());
            f.extend_from_slice(&(1000 + i as u32).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0, 0x50, *flags, 0, 0, 0, 0, 0, 0]);
            f.extend(std::iter::repeat_n(0x16u8, *len));
            for v in [0u32, 0, f.len() as u32, f.len() as u32] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&f);
        }
        out
    }

    #[test]
    fn first_flights_count_client_segments_before_the_server_speaks() -> Result<()> {
        let c1: SocketAddr = "203.0.113.2:40000".parse()?;
        let c2: SocketAddr = "203.0.113.2:40001".parse()?;
        let s: SocketAddr = "203.0.113.1:44300".parse()?;
        let ack = 0x10;
        let file = pcap(&[
            (c1, s, Segment::SYN, 0),
            (s, c1, Segment::SYN | ack, 0),
            (c1, s, ack, 0),
            (c1, s, ack, 1200),
            (c1, s, ack, 700),
            (s, c1, ack, 900),
            (c1, s, ack, 80),
            (c2, s, Segment::SYN, 0),
            (c2, s, ack, 500),
            (c2, s, ack, 500),
        ]);
        // The generator gives every segment its own sequence number; a retransmission repeats
        // one.
        let mut retrans = segments(&file)?;
        let again = Segment {
            frame: 11,
            ..retrans[9]
        };
        retrans.push(again);
        let segs = segments(&file)?;
        assert_eq!(segs.len(), 10);
        assert_eq!(segs[3].payload_len, 1200);
        assert_eq!(segs[3].frame, 4);
        assert_eq!(
            first_flights(&segs, 44300),
            vec![vec![1200, 700], vec![500, 500]]
        );
        assert_eq!(
            first_flights(&retrans, 44300),
            vec![vec![1200, 700], vec![500, 500]]
        );
        assert!(server_answered(&segs, 44300, c1));
        assert!(!server_answered(&segs, 44300, c2));
        // Every truncation is an error or fewer segments, never a panic.
        for end in 0..file.len() {
            let _ = segments(&file[..end]);
        }
        Ok(())
    }

    #[test]
    fn grease_values_are_recognised() {
        let cases: [(u16, bool); 8] = [
            (0x0a0a, true),
            (0x1a1a, true),
            (0xaaaa, true),
            (0xfafa, true),
            (0x0a1a, false),
            (0x0a0b, false),
            (0x1301, false),
            (0x0000, false),
        ];
        for (v, want) in cases {
            assert_eq!(is_grease(v), want, "{v:#06x}");
        }
    }

    /// The worked example of the JA4 definition (FoxIO's technical details): Chrome's hello
    /// with 15 ciphers and 16 extensions, `h2` first, is t13d1516h2_8daaf6152771_e5627efa2ab1.
    #[test]
    fn reference_ja4_matches_the_published_example() -> Result<()> {
        let input = Ja4Input {
            frame: 1,
            dst_port: 443,
            legacy_version: 0x0303,
            ciphers: vec![
                0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
                0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
            ],
            extensions: vec![
                0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005, 0x0023,
                0x0012, 0x002b, 0xff01, 0x000b, 0x000a, 0x0015,
            ],
            supported_versions: vec![0x0304, 0x0303],
            sig_algs: vec![
                0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
            ],
            alpn_first: Some("h2".into()),
            sni: true,
        };
        assert_eq!(input.ja4()?, "t13d1516h2_8daaf6152771_e5627efa2ab1");
        Ok(())
    }

    #[test]
    fn tshark_lines_are_parsed_strictly() -> Result<()> {
        let text = "6\t44300\tgood.example\t771,4865,0-10,29,0\t0123456789abcdef0123456789abcdef\n\
                    9\t44301\t\t771,4865,10,29,0\tfedcba9876543210fedcba9876543210\n";
        let h = parse_tshark_fields(text, false)?;
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].frame, 6);
        assert_eq!(h[0].sni.as_deref(), Some("good.example"));
        assert_eq!(h[1].sni, None);
        assert_eq!(h[1].dst_port, 44301);
        assert_eq!(h[1].ja3, "771,4865,10,29,0");
        assert!(parse_tshark_fields("6\t1\ta\tb\n", false).is_err());
        assert!(parse_tshark_fields("6\t1\ta|b\tc\td\n", false).is_err());
        assert!(parse_tshark_fields("x\t1\ta\tb\tc\n", false).is_err());
        assert!(parse_tshark_fields("6\tx\ta\tb\tc\n", false).is_err());
        let with4 = parse_tshark_fields(
            "6\t1\ta\tb\tc\tt13d0101h2_aaaaaaaaaaaa_bbbbbbbbbbbb\n",
            true,
        )?;
        assert_eq!(
            with4[0].ja4.as_deref(),
            Some("t13d0101h2_aaaaaaaaaaaa_bbbbbbbbbbbb")
        );
        Ok(())
    }
}
