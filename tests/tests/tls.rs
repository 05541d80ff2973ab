//! TLS policy end to end: real clients (`openssl s_client`, `curl`, `gnutls-cli`) in the peer
//! namespace connect to `openssl s_server` on the firewall host; the dataplane reads their
//! ClientHellos. A blocked SNI, JA3 or JA4 must stop the handshake (the hello and its
//! retransmissions are dropped, so the client times out), anything else must complete, also
//! when the hello is split over several TCP segments.
//!
//! The abuse.ch SSLBL JA3 feed blocks a listed client (`ja3`/`Abuse`), and a hello whose every
//! name is on the domain allowlist passes the fingerprint lists (the original's precedence).
//!
//! The fingerprints to block are not hard-coded: each test first captures the clients' hellos
//! with tcpdump and reads their JA3/JA4 with `meds-dataplane replay` (tshark.rs checks those
//! against Wireshark).
//!
//! Needs root, `ip`, `iptables`/`ip6tables`, `ping`, `openssl`, `curl`, `gnutls-cli` and
//! `tcpdump`; skips otherwise (fails instead with MEDS_E2E_REQUIRE=1).

use std::net::IpAddr;

use anyhow::{Context, Result, ensure};
use meds_e2e::bed::Auth;
use meds_e2e::capture::{self, Capture, Hello};
use meds_e2e::feedserver::FeedServer;
use meds_e2e::host;
use meds_e2e::medsctl::{List, field_bool, field_u64};
use meds_e2e::tls::{self, Client, Lab, Outcome, Probe};
use meds_e2e::topology::{FW_IF, FW4, PEER4, PEER6, fw_addr_for};
use meds_e2e::{Bed, eventually};

/// Run `test` on a bed with a TLS lab, or skip when a TLS tool is missing.
fn run(name: &str, test: impl FnOnce(&mut Bed, &Lab) -> Result<()>) -> Result<()> {
    if !host::should_run(name, tls::skip_reason())? {
        return Ok(());
    }
    Bed::run(name, |bed| {
        let lab = Lab::new(&bed.layout.root.join("tls"))?;
        test(bed, &lab)
    })
}

fn probe(bed: &Bed, lab: &Lab, src: IpAddr, client: &Client) -> Result<Probe> {
    lab.probe(&bed.topo.fw, &bed.topo.peer, fw_addr_for(src), client)
}

/// `client` from `src` must end with `want`. A handshake that should complete is retried
/// (new flow each time) while a just-changed policy settles; a blocked one is tried once.
fn expect(bed: &Bed, lab: &Lab, src: IpAddr, client: &Client, want: Outcome) -> Result<Probe> {
    let what = format!("{} from {src}: {want:?}", client.describe());
    match want {
        Outcome::Done => eventually(meds_e2e::bed::POLICY_TIMEOUT, &what, || {
            let p = probe(bed, lab, src, client)?;
            ensure!(
                p.outcome == Outcome::Done,
                "{:?} (port {})",
                p.outcome,
                p.port
            );
            Ok(p)
        }),
        Outcome::NoHandshake => {
            let p = probe(bed, lab, src, client)?;
            ensure!(
                p.outcome == Outcome::NoHandshake,
                "{what}: the handshake completed (port {})",
                p.port
            );
            Ok(p)
        }
    }
}

fn change(bed: &Bed, verb: &str, list: List, entry: &str) -> Result<()> {
    let c = match verb {
        "add" => bed.ctl.add(list, &[entry])?,
        _ => bed.ctl.remove(list, &[entry])?,
    };
    ensure!(
        c.changed == 1 && c.applied,
        "medsctl {} {verb} {entry}: {c:?}",
        list.as_str()
    );
    Ok(())
}

/// POST `{key:[entry]}` to `path`: 202, stored and applied.
fn post(bed: &Bed, path: &str, key: &str, entry: &str) -> Result<()> {
    let body = serde_json::json!({ key: [entry] }).to_string();
    let r = bed.http("POST", path, Some(&body), Auth::Valid)?;
    ensure!(
        r.status == 202,
        "POST {path} {body}: {} {}",
        r.status,
        r.body
    );
    let v = r.json()?;
    ensure!(
        field_u64(&v, "changed")? == 1 && field_bool(&v, "applied")?,
        "POST {path} {body}: {v}"
    );
    Ok(())
}

fn start_capture(bed: &Bed, file: &str) -> Result<Capture> {
    Capture::start(
        &bed.topo.fw,
        FW_IF,
        &tls::capture_filter(),
        &bed.layout.root.join(file),
    )
}

/// Stop `cap` and return the hellos `meds-dataplane replay` finds in it, with the raw segments.
fn finish(bed: &Bed, cap: Capture) -> Result<(Vec<Hello>, Vec<capture::Segment>)> {
    let path = cap.finish(&bed.topo.peer, PEER4.into(), FW4.into())?;
    let records = capture::replay(&bed.bins.dataplane, &path)?;
    let bytes = std::fs::read(&path)?;
    Ok((
        capture::replay_hellos(&records)?,
        capture::segments(&bytes)?,
    ))
}

fn hello_on(hellos: &[Hello], port: u16) -> Result<&Hello> {
    let found: Vec<&Hello> = hellos.iter().filter(|h| h.dst_port == port).collect();
    ensure!(
        found.len() == 1,
        "want exactly one ClientHello to port {port} in the capture, replay found {found:?}"
    );
    Ok(found[0])
}

#[test]
fn blocked_sni_stops_the_handshake() -> Result<()> {
    run("tls_sni", |bed, lab| {
        let (v4, v6): (IpAddr, IpAddr) = (PEER4.into(), PEER6.into());
        // Before: the name that is about to be blocked works, with every client.
        for client in [
            Client::openssl("bad.example"),
            Client::curl("bad.example"),
            Client::gnutls("bad.example"),
        ] {
            expect(bed, lab, v4, &client, Outcome::Done)?;
        }
        change(bed, "add", List::Blacklist, "bad.example")?;
        let cases: [(IpAddr, Client, Outcome); 10] = [
            (v4, Client::openssl("bad.example"), Outcome::NoHandshake),
            (v4, Client::openssl("www.bad.example"), Outcome::NoHandshake),
            (v4, Client::openssl("WWW.Bad.Example"), Outcome::NoHandshake),
            (v6, Client::curl("bad.example"), Outcome::NoHandshake),
            (v4, Client::gnutls("api.bad.example"), Outcome::NoHandshake),
            (v6, Client::gnutls("bad.example"), Outcome::NoHandshake),
            (v4, Client::openssl("good.example"), Outcome::Done),
            (v6, Client::curl("badge.example"), Outcome::Done),
            (v4, Client::gnutls("bad.example.net"), Outcome::Done),
            (v4, Client::new(tls::Program::OpenSsl, None), Outcome::Done),
        ];
        for (src, client, want) in &cases {
            expect(bed, lab, *src, client, *want)?;
        }
        bed.expect_drops_counted("domain", "BlackList")?;
        change(bed, "remove", List::Blacklist, "bad.example")?;
        expect(bed, lab, v4, &Client::openssl("bad.example"), Outcome::Done)?;
        expect(bed, lab, v6, &Client::curl("bad.example"), Outcome::Done)?;
        Ok(())
    })
}

#[test]
fn blocked_ja3_and_ja4_stop_matching_clients_only() -> Result<()> {
    run("tls_fingerprints", |bed, lab| {
        let src: IpAddr = PEER4.into();
        let openssl = Client::openssl("good.example");
        let curl = Client::curl("good.example");
        // Learn both clients' fingerprints from a capture of one handshake each.
        let cap = start_capture(bed, "fingerprints.pcap")?;
        let p_openssl = expect(bed, lab, src, &openssl, Outcome::Done)?;
        let p_curl = expect(bed, lab, src, &curl, Outcome::Done)?;
        let (hellos, _) = finish(bed, cap)?;
        let h_openssl = hello_on(&hellos, p_openssl.port)?.clone();
        let h_curl = hello_on(&hellos, p_curl.port)?.clone();
        let ja4_of = |h: &Hello| h.ja4.clone().with_context(|| format!("no JA4 in {h:?}"));
        let (ja4_openssl, ja4_curl) = (ja4_of(&h_openssl)?, ja4_of(&h_curl)?);
        ensure!(
            h_openssl.ja3_hash != h_curl.ja3_hash && ja4_openssl != ja4_curl,
            "the two clients must differ for this test to tell anything: {h_openssl:?} {h_curl:?}"
        );

        // JA3 (entered in upper case: medsctl accepts any case): openssl is stopped whatever
        // name it sends, curl is not.
        change(bed, "add", List::Ja3, &h_openssl.ja3_hash.to_uppercase())?;
        expect(bed, lab, src, &openssl, Outcome::NoHandshake)?;
        expect(
            bed,
            lab,
            src,
            &Client::openssl("other.example"),
            Outcome::NoHandshake,
        )?;
        expect(bed, lab, PEER6.into(), &openssl, Outcome::NoHandshake)?;
        expect(bed, lab, src, &curl, Outcome::Done)?;
        bed.expect_drops_counted("ja3", "BlackList")?;
        change(bed, "remove", List::Ja3, &h_openssl.ja3_hash)?;
        expect(bed, lab, src, &openssl, Outcome::Done)?;

        // JA4 likewise.
        change(bed, "add", List::Ja4, &ja4_openssl)?;
        expect(bed, lab, src, &openssl, Outcome::NoHandshake)?;
        expect(
            bed,
            lab,
            src,
            &Client::openssl("other.example"),
            Outcome::NoHandshake,
        )?;
        expect(bed, lab, src, &curl, Outcome::Done)?;
        bed.expect_drops_counted("ja4", "BlackList")?;
        change(bed, "remove", List::Ja4, &ja4_openssl)?;
        expect(bed, lab, src, &openssl, Outcome::Done)?;

        // The REST routes: curl's JA3, then (after removing it) curl's JA4.
        post(bed, "/v1/blacklist/ja3", "ja3", &h_curl.ja3_hash)?;
        expect(bed, lab, src, &curl, Outcome::NoHandshake)?;
        expect(bed, lab, src, &openssl, Outcome::Done)?;
        change(bed, "remove", List::Ja3, &h_curl.ja3_hash)?;
        post(bed, "/v1/blacklist/ja4", "ja4", &ja4_curl)?;
        expect(bed, lab, src, &curl, Outcome::NoHandshake)?;
        expect(bed, lab, src, &openssl, Outcome::Done)?;
        Ok(())
    })
}

/// Least size of the split hellos: more than the veth's MSS (1448 bytes with timestamps), so
/// at least two segments.
const SPLIT_HELLO_BYTES: usize = 2500;

/// Every probe in `probes` sent its hello in at least two segments, and (for `blocked`) the
/// server never answered it.
fn ensure_split(segs: &[capture::Segment], probes: &[(Probe, IpAddr, bool)]) -> Result<()> {
    for (p, src, blocked) in probes {
        let flights = capture::first_flights(segs, p.port);
        ensure!(
            flights.len() == 1,
            "want one connection to port {} in the capture: {flights:?}",
            p.port
        );
        let flight = &flights[0];
        ensure!(
            flight.len() >= 2 && flight.iter().sum::<usize>() >= SPLIT_HELLO_BYTES,
            "hello to port {} from {src} was not split: segment sizes {flight:?}",
            p.port
        );
        if *blocked {
            let client = segs
                .iter()
                .find(|s| s.dst.port() == p.port && s.flags & capture::Segment::SYN != 0)
                .map(|s| s.src)
                .with_context(|| format!("no SYN to port {}", p.port))?;
            ensure!(
                !capture::server_answered(segs, p.port, client),
                "the server answered the blocked hello on port {}",
                p.port
            );
        }
    }
    Ok(())
}

#[test]
fn split_client_hello_is_reassembled_and_stays_blocked() -> Result<()> {
    run("tls_split", |bed, lab| {
        bed.topo.segment_on_the_wire()?;
        let (v4, v6): (IpAddr, IpAddr) = (PEER4.into(), PEER6.into());
        let good = Client::openssl_large("good.example", SPLIT_HELLO_BYTES);
        let bad = Client::openssl_large("bad.example", SPLIT_HELLO_BYTES);

        // Without lists every split hello completes; learn the large hello's JA3.
        let cap = start_capture(bed, "split-open.pcap")?;
        let mut probes = Vec::new();
        for (src, client) in [(v4, &good), (v4, &bad), (v6, &bad)] {
            probes.push((expect(bed, lab, src, client, Outcome::Done)?, src, false));
        }
        let (hellos, segs) = finish(bed, cap)?;
        ensure_split(&segs, &probes)?;
        let h = hello_on(&hellos, probes[0].0.port)?.clone();
        ensure!(
            h.sni.as_deref() == Some("good.example"),
            "replay of the split hello: {h:?}"
        );

        // A blocked name in a split hello: dropped, and its retransmissions too (the client
        // retransmits the completing segment for the whole probe).
        change(bed, "add", List::Blacklist, "bad.example")?;
        let cap = start_capture(bed, "split-blocked.pcap")?;
        let mut probes = Vec::new();
        for (src, client, want) in [
            (v4, &bad, Outcome::NoHandshake),
            (v6, &bad, Outcome::NoHandshake),
            (v4, &good, Outcome::Done),
            (v6, &good, Outcome::Done),
        ] {
            let blocked = want == Outcome::NoHandshake;
            probes.push((expect(bed, lab, src, client, want)?, src, blocked));
        }
        let (_, segs) = finish(bed, cap)?;
        ensure_split(&segs, &probes)?;
        bed.expect_drops_counted("domain", "BlackList")?;
        change(bed, "remove", List::Blacklist, "bad.example")?;

        // The JA3 of the split hello, reassembled, is matched as well.
        change(bed, "add", List::Ja3, &h.ja3_hash)?;
        expect(bed, lab, v4, &good, Outcome::NoHandshake)?;
        expect(
            bed,
            lab,
            v4,
            &Client::openssl("good.example"),
            Outcome::Done,
        )?;
        bed.expect_drops_counted("ja3", "BlackList")?;
        Ok(())
    })
}

#[test]
fn sslbl_ja3_feed_blocks_a_listed_client() -> Result<()> {
    run("tls_sslbl", |bed, lab| {
        let src: IpAddr = PEER4.into();
        let openssl = Client::openssl("good.example");
        let gnutls = Client::gnutls("good.example");
        let cap = start_capture(bed, "sslbl.pcap")?;
        let p = expect(bed, lab, src, &openssl, Outcome::Done)?;
        expect(bed, lab, src, &gnutls, Outcome::Done)?;
        let (hellos, _) = finish(bed, cap)?;
        let ja3 = hello_on(&hellos, p.port)?.ja3_hash.clone();

        let feeds = FeedServer::start()?;
        feeds.set(
            "ja3.csv",
            format!(
                "# abuse.ch SSLBL JA3 (test)\n\
                 # ja3_md5,Firstseen,Lastseen,Listingreason\n\
                 b386946a5a44d1ddcc843bc75336dfce,2017-07-14 18:08:15,2019-07-27 20:42:54,Dridex\n\
                 {ja3},2020-01-01 00:00:00,2020-01-02 00:00:00,Test\n"
            ),
        );
        bed.enable_feed("sslbl_ja3", &feeds.url("ja3.csv"))?;
        bed.wait_feed_entries("sslbl_ja3", 2)?;
        expect(bed, lab, src, &openssl, Outcome::NoHandshake)?;
        expect(
            bed,
            lab,
            PEER6.into(),
            &Client::openssl("x.example"),
            Outcome::NoHandshake,
        )?;
        expect(bed, lab, src, &gnutls, Outcome::Done)?;
        bed.expect_drops_counted("ja3", "Abuse")?;

        // A hello whose only name is allowlisted skips the fingerprint lists; another name
        // from the same client does not.
        change(bed, "add", List::Whitelist, "good.example")?;
        expect(bed, lab, src, &openssl, Outcome::Done)?;
        expect(
            bed,
            lab,
            src,
            &Client::openssl("other.example"),
            Outcome::NoHandshake,
        )?;
        Ok(())
    })
}
