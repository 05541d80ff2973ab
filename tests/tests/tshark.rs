//! Our ClientHello reading against Wireshark's, on real traffic: openssl, curl and gnutls-cli
//! clients (with and without SNI, with ALPN, IPv4 and IPv6, and a hello split over two TCP
//! segments) connect through the bed to `openssl s_server`; tcpdump captures it all; then
//! `meds-dataplane replay` and `tshark` read the same file and must report the same hellos, in
//! the same frames, with the same SNI, JA3 string and JA3 hash (and JA4 when the installed
//! tshark has it: Wireshark 4.2 or later; Debian 12 ships 4.0, then JA4 is checked by the
//! fixtures and the fingerprint tests only, and the test says so).
//!
//! Needs root, `ip`, `iptables`/`ip6tables`, `ping`, `openssl`, `curl`, `gnutls-cli`,
//! `tcpdump` and `tshark`; skips otherwise (fails instead with MEDS_E2E_REQUIRE=1).

use std::collections::BTreeSet;
use std::net::IpAddr;

use anyhow::{Context, Result, bail, ensure};
use meds_e2e::capture::{self, Capture, Hello};
use meds_e2e::host;
use meds_e2e::tls::{self, Client, Lab, Outcome, Program};
use meds_e2e::topology::{FW_IF, FW4, PEER4, PEER6, fw_addr_for};
use meds_e2e::{Bed, eventually};

/// Least size of the split hellos: more than the veth's MSS, so at least two segments.
const SPLIT_HELLO_BYTES: usize = 2500;

fn skip_reason() -> Option<String> {
    tls::skip_reason().or_else(|| {
        host::tool("tshark")
            .is_none()
            .then(|| "`tshark` is not installed (package tshark)".to_owned())
    })
}

/// One line per hello for a mismatch report.
fn show(h: &Hello) -> String {
    format!(
        "frame {} port {} sni {:?}\n      ja3 {} ({})\n      ja4 {:?}",
        h.frame, h.dst_port, h.sni, h.ja3, h.ja3_hash, h.ja4
    )
}

#[test]
fn replay_reads_real_hellos_like_tshark() -> Result<()> {
    let name = "tshark";
    if !host::should_run(name, skip_reason())? {
        return Ok(());
    }
    Bed::run(name, |bed| {
        let lab = Lab::new(&bed.layout.root.join("tls"))?;
        bed.topo.segment_on_the_wire()?;
        let (v4, v6): (IpAddr, IpAddr) = (PEER4.into(), PEER6.into());
        let alpn = vec!["h2".to_owned(), "http/1.1".to_owned()];
        let clients: Vec<(IpAddr, Client)> = vec![
            (v4, Client::openssl("good.example")),
            (v6, Client::openssl("v6.example")),
            (v4, Client::new(Program::OpenSsl, None)),
            (v4, Client::openssl("alpn.example").with_alpn(alpn.clone())),
            (
                v4,
                Client::openssl_large("split.example", SPLIT_HELLO_BYTES),
            ),
            (
                v6,
                Client::openssl_large("split6.example", SPLIT_HELLO_BYTES),
            ),
            (v4, Client::curl("curl.example")),
            (v6, Client::new(Program::Curl, None)),
            (v4, Client::gnutls("gnutls.example")),
            (v6, Client::gnutls("gnutls6.example").with_alpn(alpn)),
            (v4, Client::new(Program::Gnutls, None)),
        ];
        let pcap = bed.layout.root.join("clients.pcap");
        let cap = Capture::start(&bed.topo.fw, FW_IF, &tls::capture_filter(), &pcap)?;
        let mut ports = Vec::new();
        for (src, client) in &clients {
            let what = format!("{} from {src}", client.describe());
            let p = eventually(meds_e2e::bed::POLICY_TIMEOUT, &what, || {
                let p = lab.probe(&bed.topo.fw, &bed.topo.peer, fw_addr_for(*src), client)?;
                ensure!(p.outcome == Outcome::Done, "{:?}", p.outcome);
                Ok(p)
            })?;
            ports.push(p.port);
        }
        let pcap = cap.finish(&bed.topo.peer, PEER4.into(), FW4.into())?;

        // The capture really holds split hellos.
        let segs = capture::segments(&std::fs::read(&pcap)?)?;
        for (i, (_, client)) in clients.iter().enumerate() {
            if client.alpn.len() > 2 {
                let flights = capture::first_flights(&segs, ports[i]);
                ensure!(
                    flights.len() == 1 && flights[0].len() >= 2,
                    "{}: hello not split: {flights:?}",
                    client.describe()
                );
            }
        }

        let ours = capture::replay_hellos(&capture::replay(&bed.bins.dataplane, &pcap)?)?;
        let with_ja4 = capture::tshark_has_field("tls.handshake.ja4")?;
        let theirs = capture::tshark_hellos(&pcap, &ports, with_ja4)?;
        if !with_ja4 {
            eprintln!(
                "note: this tshark has no tls.handshake.ja4 (Wireshark < 4.2): JA4 is compared \
                 with the reference computed from tshark's dissection only"
            );
        }
        let reference = capture::tshark_ja4_inputs(&pcap, &ports)?;

        // Every client produced exactly one hello, on its own port.
        let want: BTreeSet<u16> = ports.iter().copied().collect();
        for (who, hellos) in [("replay", &ours), ("tshark", &theirs)] {
            let got: Vec<u16> = hellos.iter().map(|h| h.dst_port).collect();
            let got_set: BTreeSet<u16> = got.iter().copied().collect();
            ensure!(
                got.len() == ports.len() && got_set == want,
                "{who} found hellos on ports {got:?}, the clients used {ports:?}"
            );
        }
        let mut mismatches = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let find = |hs: &[Hello]| hs.iter().find(|h| h.dst_port == *port).cloned();
            let (Some(mut a), Some(b)) = (find(&ours), find(&theirs)) else {
                bail!("no hello on port {port}");
            };
            eprintln!("{}: {}", clients[i].1.describe(), show(&a));
            let input = reference
                .iter()
                .find(|r| r.dst_port == *port)
                .with_context(|| format!("tshark gave no JA4 inputs for port {port}"))?;
            let ja4_reference = input.ja4()?;
            if a.ja4.as_deref() != Some(ja4_reference.as_str()) || input.frame != a.frame {
                mismatches.push(format!(
                    "{}: JA4 {:?} (frame {}), the reference from tshark's fields gives {ja4_reference} \
                     (frame {}) from {input:?}",
                    clients[i].1.describe(),
                    a.ja4,
                    a.frame,
                    input.frame
                ));
            }
            if !with_ja4 {
                a.ja4 = None;
            }
            if a != b {
                mismatches.push(format!(
                    "{}:\n  replay {}\n  tshark {}",
                    clients[i].1.describe(),
                    show(&a),
                    show(&b)
                ));
            }
        }
        ensure!(
            mismatches.is_empty(),
            "replay and tshark disagree (capture {}):\n{}",
            pcap.display(),
            mismatches.join("\n")
        );
        // Sanity of the comparison itself: the clients' SNI came through as sent.
        for (i, (_, client)) in clients.iter().enumerate() {
            let h = ours.iter().find(|h| h.dst_port == ports[i]);
            ensure!(
                h.and_then(|h| h.sni.clone()) == client.sni,
                "{}: replay SNI {:?}",
                client.describe(),
                h.map(|h| &h.sni)
            );
        }
        Ok(())
    })
}
