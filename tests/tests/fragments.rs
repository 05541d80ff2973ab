//! Fragmented DNS queries end to end: the peer sends a query as IP fragments built by hand
//! (raw socket, our own headers, [`meds_e2e::frag`]), cut so that the question name lies
//! entirely in a later fragment, which has no UDP header. The dataplane must still see the
//! name: IPv4 is reassembled by the kernel before the `INPUT` hook anyway; IPv6 only because
//! the dataplane's ip6tables chain loads a rule that enables netfilter's IPv6 reassembly
//! (`meds-dataplane/src/firewall.rs`). Without that rule the IPv6 test fails: each fragment is
//! queued on its own, none of them parses as a DNS query, and the blocked name is answered.
//!
//! What must hold, per family: a fragmented query is deliverable (answered before the name is
//! blocked, and for an allowed name after); once `bad.example` is on the blocklist a fragmented
//! query for it gets no answer and never reaches the responder, whether its fragments come in
//! order or reversed. Two cuts: after padding questions that make the first fragment as long
//! as a real sender's (at least the IPv6 minimum MTU of 1280 bytes), the name alone in the
//! second; and a tiny first fragment with nothing but the UDP header and part of the DNS
//! header.
//!
//! Needs root, `ip`, `iptables`/`ip6tables`; skips otherwise (fails instead with
//! MEDS_E2E_REQUIRE=1). The two families run on separate beds, in parallel.

use std::net::IpAddr;

use anyhow::{Context, Result, ensure};
use meds_e2e::bed::{Family, HOOK_TABLE, POLICY_TIMEOUT};
use meds_e2e::dns::{ANSWER, Question, Responder, Transport};
use meds_e2e::frag::{self, Order, Split};
use meds_e2e::medsctl::List;
use meds_e2e::topology::{FW4, FW6, PEER4, PEER6, fw_addr_for};
use meds_e2e::traffic::PROBE_TIMEOUT;
use meds_e2e::{Bed, eventually};

const BLOCKED: &str = "bad.example";
const ALLOWED: &str = "good.example";

/// The cuts and orders every name is sent with.
const SHAPES: [(Split, Order); 4] = [
    (Split::BeforeLastQuestion, Order::InOrder),
    (Split::BeforeLastQuestion, Order::Reversed),
    (Split::Tiny, Order::InOrder),
    (Split::Tiny, Order::Reversed),
];

/// The questions of a query for `name`: padding first (so the first fragment of
/// [`Split::BeforeLastQuestion`] is as long as a real sender's), `name` last (so it lies in the
/// second fragment alone).
fn questions(name: &str) -> Result<Vec<Question>> {
    frag::padded_questions(Question::a(name))
}

fn names(questions: &[Question]) -> Vec<&str> {
    questions.iter().map(|q| q.name.as_str()).collect()
}

/// Wait until a fragmented query for `name` from `src` is answered, one A record per question.
fn expect_answered(bed: &Bed, src: IpAddr, name: &str, split: Split, order: Order) -> Result<()> {
    let qs = questions(name)?;
    let what = format!("fragmented query ({split:?}, {order:?}) for {name} from {src} is answered");
    eventually(POLICY_TIMEOUT, &what, || {
        let asked = frag::ask_fragmented(
            &bed.topo.peer,
            src,
            fw_addr_for(src),
            &qs,
            split,
            order,
            PROBE_TIMEOUT,
        )?;
        let r = asked
            .response
            .with_context(|| format!("no answer to query {}", asked.id))?;
        ensure!(
            r.rcode == 0 && r.addresses == vec![ANSWER; qs.len()],
            "answer {r:?}"
        );
        Ok(())
    })
}

/// One fragmented query for `name` from `src` must go unanswered, and the responder must
/// never have seen it (dropped on the way in, not lost on the way back).
fn expect_dropped(
    bed: &Bed,
    responder: &Responder,
    src: IpAddr,
    name: &str,
    split: Split,
    order: Order,
) -> Result<()> {
    let qs = questions(name)?;
    let asked = frag::ask_fragmented(
        &bed.topo.peer,
        src,
        fw_addr_for(src),
        &qs,
        split,
        order,
        PROBE_TIMEOUT,
    )?;
    ensure!(
        asked.response.is_none(),
        "fragmented query ({split:?}, {order:?}) for {name} from {src} must be dropped, got {:?}",
        asked.response
    );
    ensure!(
        !responder.received(Transport::Udp, asked.id, &names(&qs)),
        "fragmented query {} ({split:?}, {order:?}) for {name} from {src} reached the server",
        asked.id
    );
    Ok(())
}

fn block(bed: &Bed, name: &str) -> Result<()> {
    let c = bed.ctl.add(List::Blacklist, &[name])?;
    ensure!(
        c.changed == 1 && c.applied,
        "medsctl blacklist add {name}: {c:?}"
    );
    Ok(())
}

/// The whole scenario from `src`.
fn blocked_names_in_fragments_are_dropped(bed: &Bed, src: IpAddr) -> Result<()> {
    let server = Responder::start(&bed.topo.fw, &[IpAddr::V4(FW4), IpAddr::V6(FW6)])?;
    // Before the entry: the fragments are deliverable, so "no answer" below is Meds' doing.
    for (split, order) in SHAPES {
        expect_answered(bed, src, BLOCKED, split, order)?;
    }
    block(bed, BLOCKED)?;
    for (split, order) in SHAPES {
        expect_dropped(bed, &server, src, BLOCKED, split, order)?;
        expect_answered(bed, src, ALLOWED, split, order)?;
    }
    bed.expect_drops_counted("domain", "BlackList")?;
    Ok(())
}

#[test]
fn ipv6_fragmented_dns_queries_are_inspected_whole() -> Result<()> {
    Bed::run("frag_dns_v6", |bed| {
        blocked_names_in_fragments_are_dropped(bed, PEER6.into())?;
        // What made it work is the rule the module docs name (as `ip6tables -S` shows it).
        let rules = bed.rules(Family::V6, HOOK_TABLE)?;
        ensure!(
            rules.contains("-m socket -m comment --comment meds-ipv6-defrag"),
            "no IPv6 reassembly rule in:\n{rules}"
        );
        Ok(())
    })
}

#[test]
fn ipv4_fragmented_dns_queries_are_inspected_whole() -> Result<()> {
    Bed::run("frag_dns_v4", |bed| {
        blocked_names_in_fragments_are_dropped(bed, PEER4.into())
    })
}
