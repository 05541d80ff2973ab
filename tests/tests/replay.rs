//! `meds-dataplane replay` against the real controller: a capture replayed with
//! `--sync-socket` gets the live policy (as a read-only observer) and the controller keeps the
//! enforcing dataplane as its dataplane.
//!
//! Needs root, `ip`, `iptables`/`ip6tables`; skips otherwise (fails instead with
//! MEDS_E2E_REQUIRE=1).

use std::process::Command;

use anyhow::{Context, Result, ensure};
use meds_e2e::Bed;
use meds_e2e::medsctl::List;
use meds_e2e::topology::{PEER4, PEER4_ALT};

/// A classic pcap (raw IPv4, link type 101) with one UDP datagram from each of `sources`.
fn capture(sources: &[[u8; 4]]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes()); // magic, µs timestamps
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&101u32.to_le_bytes()); // LINKTYPE_RAW
    for (i, src) in sources.iter().enumerate() {
        let payload = b"replay";
        let udp_len = 8 + payload.len() as u16;
        let total = 20 + udp_len;
        let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(src);
        ip.extend_from_slice(&[203, 0, 113, 1]);
        ip.extend_from_slice(&40000u16.to_be_bytes());
        ip.extend_from_slice(&9000u16.to_be_bytes());
        ip.extend_from_slice(&udp_len.to_be_bytes());
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(payload);
        out.extend_from_slice(&(1_700_000_000u32 + i as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(ip.len() as u32).to_le_bytes());
        out.extend_from_slice(&(ip.len() as u32).to_le_bytes());
        out.extend_from_slice(&ip);
    }
    out
}

#[test]
fn replay_uses_the_live_policy_as_an_observer() -> Result<()> {
    Bed::run("replay", |bed| {
        let c = bed.ctl.add(List::Blacklist, &[&PEER4.to_string()])?;
        ensure!(c.applied, "blacklist add not applied: {c:?}");
        let pcap = bed.layout.state_dir.join("replay.pcap");
        std::fs::write(&pcap, capture(&[PEER4.octets(), PEER4_ALT.octets()]))?;
        let out = Command::new(&bed.bins.dataplane)
            .arg("replay")
            .arg(&pcap)
            .arg("--sync-socket")
            .arg(&bed.layout.sync_socket)
            .output()
            .context("running meds-dataplane replay")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "replay failed: {:?}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<serde_json::Value> = stdout
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .with_context(|| format!("replay output is not JSON lines: {stdout}"))?;
        ensure!(lines.len() == 2, "want 2 lines: {stdout}");
        ensure!(
            lines[0]["src"] == PEER4.to_string()
                && lines[0]["verdict"] == "drop"
                && lines[0]["filter"] == "ip"
                && lines[0]["reason"] == "BlackList",
            "blocked source: {}",
            lines[0]
        );
        ensure!(
            lines[1]["verdict"] == "accept" && lines[1]["reason"] == "default",
            "other source: {}",
            lines[1]
        );
        // The enforcing dataplane is still the controller's dataplane.
        let status = bed.wait_in_sync()?;
        ensure!(status.in_sync(), "after replay: {status:?}");
        let c = bed.ctl.remove(List::Blacklist, &[&PEER4.to_string()])?;
        ensure!(
            c.applied,
            "the real dataplane must still acknowledge: {c:?}"
        );
        Ok(())
    })
}
