//! TLS for the SNI and fingerprint tests: a throw-away self-signed certificate, `openssl
//! s_server` inside `fw`, and real clients run from `peer` (`openssl s_client`, `curl`,
//! `gnutls-cli`), each bounded in time and classified as "handshake done" or "no handshake".
//!
//! `openssl s_server` serves one connection at a time, and a client whose ClientHello the
//! dataplane drops keeps it waiting (the dataplane may keep dropping that flow's later packets,
//! its FIN included). So every probe gets a server of its own on a port no other probe of the
//! process used ([`Lab::probe`]), stopped when the probe ends; the new port also makes every
//! probe a new flow. Clients connect from the peer's primary address of the server's family
//! (`PEER4`/`PEER6`: the kernel's source address choice).
//!
//! Must not: reach anything but the bed's addresses (no default route exists there anyway).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::eventually::eventually;
use crate::host;
use crate::netns::Netns;
use crate::process::{Bounded, Daemon, display_command, run_bounded, run_ok};

/// How long a probe waits for its handshake. A dropped hello is retransmitted several times
/// within it (the retransmission timeout starts at about 200 ms on a fast link), so "no
/// handshake" also shows that the retransmissions were dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `openssl s_server` gets to start listening.
const SERVER_READY: Duration = Duration::from_secs(10);
/// Ports of the probes' servers: each probe takes the next one.
pub const FIRST_PORT: u16 = 44300;
const PORT_SPAN: u16 = 2000;

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A port no earlier probe of this process used (until 2000 probes wrap around).
pub fn next_port() -> u16 {
    FIRST_PORT + NEXT_PORT.fetch_add(1, Ordering::Relaxed) % PORT_SPAN
}

/// A pcap-filter expression selecting every probe's TCP traffic.
pub fn capture_filter() -> String {
    format!("tcp portrange {FIRST_PORT}-{}", FIRST_PORT + PORT_SPAN - 1)
}

/// The packages the TLS tests need, by tool.
pub const TOOLS: &[(&str, &str)] = &[
    ("openssl", "openssl"),
    ("curl", "curl"),
    ("gnutls-cli", "gnutls-bin"),
    ("tcpdump", "tcpdump"),
];

/// Why the TLS tests cannot run here (a missing tool and its package), if they cannot.
pub fn skip_reason() -> Option<String> {
    TOOLS
        .iter()
        .find(|(tool, _)| host::tool(tool).is_none())
        .map(|(tool, package)| format!("`{tool}` is not installed (package {package})"))
}

/// A TLS client program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    OpenSsl,
    Curl,
    Gnutls,
}

impl Program {
    pub fn name(self) -> &'static str {
        match self {
            Program::OpenSsl => "openssl s_client",
            Program::Curl => "curl",
            Program::Gnutls => "gnutls-cli",
        }
    }
}

/// What a client sends: the program, the server name (SNI) and the ALPN protocols.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub program: Program,
    /// The server name; `None` sends no SNI extension.
    pub sni: Option<String>,
    /// ALPN protocols to offer (openssl and gnutls-cli; curl always offers its own, `h2` and
    /// `http/1.1`, and this must be empty for it).
    pub alpn: Vec<String>,
}

impl Client {
    pub fn new(program: Program, sni: Option<&str>) -> Client {
        Client {
            program,
            sni: sni.map(str::to_owned),
            alpn: Vec::new(),
        }
    }

    pub fn openssl(sni: &str) -> Client {
        Client::new(Program::OpenSsl, Some(sni))
    }

    pub fn curl(sni: &str) -> Client {
        Client::new(Program::Curl, Some(sni))
    }

    pub fn gnutls(sni: &str) -> Client {
        Client::new(Program::Gnutls, Some(sni))
    }

    /// The same client offering `alpn` as well.
    pub fn with_alpn(mut self, alpn: Vec<String>) -> Client {
        self.alpn = alpn;
        self
    }

    /// `openssl s_client` with a ClientHello of at least `bytes` bytes: besides `sni`, it offers
    /// ALPN protocols named `meds-e2e-NNN-xxxx…` (200 bytes each) until the hello is that long.
    pub fn openssl_large(sni: &str, bytes: usize) -> Client {
        Client::openssl(sni).with_alpn(padding_protocols(bytes))
    }

    /// A short description for messages.
    pub fn describe(&self) -> String {
        let sni = self.sni.as_deref().unwrap_or("(no SNI)");
        let alpn_bytes: usize = self.alpn.iter().map(|p| p.len() + 1).sum();
        if alpn_bytes == 0 {
            format!("{} {sni}", self.program.name())
        } else {
            format!(
                "{} {sni} (ALPN {} protocols, {alpn_bytes} bytes)",
                self.program.name(),
                self.alpn.len()
            )
        }
    }

    /// The command line against `server`:`port`, run inside `peer`.
    fn command(&self, peer: &Netns, server: IpAddr, port: u16) -> Result<Command> {
        let host = match server {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        let cmd = match self.program {
            Program::OpenSsl => {
                let mut cmd = peer.command("openssl");
                cmd.arg("s_client")
                    .arg("-connect")
                    .arg(format!("{host}:{port}"));
                match &self.sni {
                    Some(name) => cmd.arg("-servername").arg(name),
                    None => cmd.arg("-noservername"),
                };
                if !self.alpn.is_empty() {
                    cmd.arg("-alpn").arg(self.alpn.join(","));
                }
                cmd
            }
            Program::Curl => {
                if !self.alpn.is_empty() {
                    bail!(
                        "curl offers its own ALPN protocols; {:?} cannot be set",
                        self.alpn
                    );
                }
                let mut cmd = peer.command("curl");
                // Its own limit ends it before the probe's kill does, with exit code 28.
                let max = HANDSHAKE_TIMEOUT.saturating_sub(Duration::from_millis(500));
                cmd.args(["-sS", "-k", "-o", "/dev/null", "-w", "%{http_code}"])
                    .arg("--max-time")
                    .arg(format!("{:.1}", max.as_secs_f64()));
                match &self.sni {
                    // A name resolved by curl itself to the server's address; curl sends it as SNI.
                    Some(name) => cmd
                        .arg("--resolve")
                        .arg(format!("{name}:{port}:{host}"))
                        .arg(format!("https://{name}:{port}/")),
                    // An address literal in the URL: curl sends no SNI.
                    None => cmd.arg(format!("https://{host}:{port}/")),
                };
                cmd
            }
            Program::Gnutls => {
                let mut cmd = peer.command("gnutls-cli");
                cmd.arg("--insecure").arg("-p").arg(port.to_string());
                match &self.sni {
                    Some(name) => cmd.arg(format!("--sni-hostname={name}")),
                    None => cmd.arg("--disable-sni"),
                };
                for p in &self.alpn {
                    cmd.arg(format!("--alpn={p}"));
                }
                cmd.arg(server.to_string());
                cmd
            }
        };
        Ok(cmd)
    }

    /// Classify how the client ended. An exit that is neither a finished handshake nor a
    /// timeout (refused, TLS alert, bad usage) is an error: the probe could not tell.
    fn outcome(&self, run: &Bounded, shown: &str) -> Result<Outcome> {
        let out = match run {
            Bounded::Killed { .. } => return Ok(Outcome::NoHandshake),
            Bounded::Exited(out) => out,
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let done = out.status.success()
            && match self.program {
                Program::OpenSsl => stdout.contains("New, TLSv1."),
                Program::Curl => stdout.trim() == "200",
                Program::Gnutls => stdout.contains("- Handshake was completed"),
            };
        if done {
            return Ok(Outcome::Done);
        }
        if self.program == Program::Curl && out.status.code() == Some(28) {
            return Ok(Outcome::NoHandshake);
        }
        bail!("`{shown}` ended with {}: {}", out.status, excerpt(out))
    }
}

/// ALPN protocol names of 200 bytes each, enough for a ClientHello of at least `bytes` bytes
/// (each adds 201 bytes to the hello).
pub fn padding_protocols(bytes: usize) -> Vec<String> {
    (0..bytes.div_ceil(201))
        .map(|i| format!("meds-e2e-{i:03}-{}", "x".repeat(187)))
        .collect()
}

/// The last lines of a command's output, for messages.
fn excerpt(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

/// How a probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The TLS handshake finished (and, for curl, the HTTP request was answered).
    Done,
    /// No handshake within [`HANDSHAKE_TIMEOUT`]: the server never answered the hello.
    NoHandshake,
}

/// A self-signed certificate and key (P-256, one day) made with `openssl req`.
#[derive(Debug, Clone)]
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Cert {
    pub fn generate(dir: &Path) -> Result<Cert> {
        std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let cert = Cert {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        run_ok(
            Command::new(host::require_tool("openssl")?)
                .args(["req", "-x509", "-newkey", "ec"])
                .args([
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-days",
                    "1",
                ])
                .args(["-subj", "/CN=meds-e2e"])
                .arg("-keyout")
                .arg(&cert.key)
                .arg("-out")
                .arg(&cert.cert),
        )?;
        Ok(cert)
    }
}

/// `openssl s_server -www` on `*:port` inside `fw` (both families); stopped on drop.
#[derive(Debug)]
pub struct Server {
    daemon: Daemon,
    pub port: u16,
}

impl Server {
    pub fn start(fw: &Netns, cert: &Cert, port: u16, log: &Path) -> Result<Server> {
        let mut cmd = fw.command("openssl");
        cmd.arg("s_server")
            .arg("-accept")
            .arg(port.to_string())
            .arg("-cert")
            .arg(&cert.cert)
            .arg("-key")
            .arg(&cert.key)
            .arg("-www");
        let mut daemon = Daemon::spawn("openssl s_server", &mut cmd, log)?;
        eventually(SERVER_READY, &format!("s_server listens on {port}"), || {
            daemon.ensure_running()?;
            let text = std::fs::read_to_string(log)?;
            if !text.lines().any(|l| l.trim() == "ACCEPT") {
                bail!("no ACCEPT line in {} yet", log.display());
            }
            Ok(())
        })?;
        Ok(Server { daemon, port })
    }

    pub fn log(&self) -> &Path {
        self.daemon.log()
    }
}

/// The TLS side of one bed: its certificate and the directory of the servers' logs.
#[derive(Debug)]
pub struct Lab {
    pub cert: Cert,
    dir: PathBuf,
}

/// One finished probe.
#[derive(Debug, Clone)]
pub struct Probe {
    pub outcome: Outcome,
    /// The server port (the flow's destination port).
    pub port: u16,
}

impl Lab {
    /// Generate the certificate below `dir`.
    pub fn new(dir: &Path) -> Result<Lab> {
        Ok(Lab {
            cert: Cert::generate(dir)?,
            dir: dir.to_path_buf(),
        })
    }

    /// Start a server on a new port, run `client` against it from `peer`, and stop the server.
    pub fn probe(
        &self,
        fw: &Netns,
        peer: &Netns,
        server: IpAddr,
        client: &Client,
    ) -> Result<Probe> {
        let port = next_port();
        self.probe_on(fw, peer, server, port, client)
    }

    /// [`Lab::probe`] on a given port (which no other probe may be using).
    pub fn probe_on(
        &self,
        fw: &Netns,
        peer: &Netns,
        server: IpAddr,
        port: u16,
        client: &Client,
    ) -> Result<Probe> {
        let log = self.dir.join(format!("s_server-{port}.log"));
        let _server = Server::start(fw, &self.cert, port, &log)?;
        let mut cmd = client.command(peer, server, port)?;
        let shown = display_command(&cmd);
        let run = run_bounded(&mut cmd, HANDSHAKE_TIMEOUT)?;
        let outcome = client
            .outcome(&run, &shown)
            .with_context(|| format!("{} -> {server}:{port}", client.describe()))?;
        Ok(Probe { outcome, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_reaches_the_requested_size() {
        for bytes in [0usize, 1, 201, 202, 2500] {
            let p = padding_protocols(bytes);
            let added: usize = p.iter().map(|s| s.len() + 1).sum();
            assert!(added >= bytes, "{bytes}: {added}");
            assert!(added < bytes + 201, "{bytes}: {added}");
            assert!(p.iter().all(|s| s.len() == 200), "{p:?}");
        }
    }

    #[test]
    fn ports_are_not_reused_soon() {
        let a: Vec<u16> = (0..50).map(|_| next_port()).collect();
        let mut s = a.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), a.len());
    }
}
