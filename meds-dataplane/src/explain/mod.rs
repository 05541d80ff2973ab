//! `explain`: why the live chain would accept or drop a hypothetical packet.
//!
//! [`explain`] walks the filters of [`crate::chain`] in exactly the order of
//! [`RuleSet::evaluate_source_limited`] and [`RuleSet::evaluate_app`] (allowlist, rate limiter,
//! IP blocklist and feeds, country, ASN-DROP, user ASNs, then the domain allowlist, the domain
//! blocklist and hosts feeds with per-name precedence, SSLBL, JA3, JA4, default) and reports
//! one [`Step`] per filter: what it consulted (the public list name of
//! [`ListKind::public_name`]), whether it matched, and a human-readable detail (the covering
//! prefix, the IP-to-ASN row, which name matched which entry, why a step was skipped). The
//! decision is the first match, and equals [`RuleSet::evaluate_with`] for the same source and
//! payload view (a property test checks it). The rate limiter is never asked (it would consume
//! a token, and its answer depends on traffic): it is shown with its configuration only. Prefix
//! sets merge overlapping and adjacent entries when they are built, so a shown prefix is the
//! list's range around the address: the entry itself unless entries overlap or touch. This
//! module is engine code: no wire types, no I/O, no locks; it runs on the control path, never
//! per packet. [`wire`] validates an `ExplainRequest` and encodes the answer.

pub mod wire;

use std::fmt::Write as _;
use std::net::IpAddr;

use meds_proto::{DomainName, Ja3Hash, Ja4, ListKind};

use crate::chain::{AppView, Decision, Filter, RuleSet, Verdict};
use crate::dns::DNS_PORT;
use crate::lists::{DomainSet, FingerprintSet, IpSet, Origin};
use crate::ratelimit::RateLimitConfig;

/// `list` of the rate limiter step (it is not a list).
pub const RATE_LIMITER: &str = "rate_limiter";
/// `list` of the final step, taken when nothing matched.
pub const DEFAULT: &str = "default";

/// A validated hypothetical packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Source address: what steps 1–8 match.
    pub source: IpAddr,
    /// Destination port, when known: DNS names are read only from port-53 traffic and a
    /// ClientHello only from other ports.
    pub port: Option<u16>,
    /// TLS server name.
    pub sni: Option<DomainName>,
    /// DNS question names (and CNAME targets).
    pub dns: Vec<DomainName>,
    pub ja3: Option<Ja3Hash>,
    pub ja4: Option<Ja4>,
}

impl Query {
    /// A query for the source address only.
    pub fn source(source: IpAddr) -> Query {
        Query {
            source,
            port: None,
            sni: None,
            dns: Vec::new(),
            ja3: None,
            ja4: None,
        }
    }

    /// The packet is DNS: port 53, or DNS names without a port (53 assumed).
    pub fn is_dns(&self) -> bool {
        match self.port {
            Some(port) => port == DNS_PORT,
            None => !self.dns.is_empty(),
        }
    }

    /// The DNS names the dataplane would read: none with a port other than 53.
    pub fn dns_seen(&self) -> &[DomainName] {
        match self.port {
            Some(port) if port != DNS_PORT => &[],
            _ => &self.dns,
        }
    }

    /// The dataplane would read a ClientHello (SNI, JA3, JA4): not on port 53, whose payload
    /// is read as DNS.
    pub fn hello_seen(&self) -> bool {
        self.port != Some(DNS_PORT)
    }

    /// The SNI the dataplane would read.
    pub fn sni_seen(&self) -> Option<&DomainName> {
        self.sni.as_ref().filter(|_| self.hello_seen())
    }

    /// The JA3 the dataplane would compute.
    pub fn ja3_seen(&self) -> Option<Ja3Hash> {
        self.ja3.filter(|_| self.hello_seen())
    }

    /// The JA4 the dataplane would compute.
    pub fn ja4_seen(&self) -> Option<Ja4> {
        self.ja4.filter(|_| self.hello_seen())
    }

    /// The names the chain sees, in its order: DNS names, then the SNI.
    fn names_seen(&self) -> impl Iterator<Item = &DomainName> + '_ {
        self.dns_seen().iter().chain(self.sni_seen())
    }
}

/// How one filter answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The filter looked and did not match.
    NoMatch,
    /// The filter matched: the first match is the decision.
    Match,
    /// An earlier filter decided.
    NotReached,
    /// Not applicable: its list is empty, the query lacks what it matches on, or (the rate
    /// limiter) it is not evaluated.
    Skipped,
}

impl Outcome {
    /// Label for logs and tests (`match`, `no_match`, `not_reached`, `skipped`).
    pub fn label(self) -> &'static str {
        match self {
            Outcome::NoMatch => "no_match",
            Outcome::Match => "match",
            Outcome::NotReached => "not_reached",
            Outcome::Skipped => "skipped",
        }
    }
}

/// One filter of the chain, as it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub filter: Filter,
    /// What was consulted: a public list name ([`ListKind::public_name`]), [`RATE_LIMITER`]
    /// or [`DEFAULT`].
    pub list: &'static str,
    pub outcome: Outcome,
    /// Human-readable: the matching entry, the origin looked up, why it was skipped.
    pub detail: String,
    /// With [`Outcome::Match`]: the decision it takes.
    pub decision: Option<Decision>,
}

/// The whole answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Every filter, in chain order.
    pub steps: Vec<Step>,
    /// The decision: that of the first matching step.
    pub decision: Decision,
    /// Generation of the rule set that was evaluated.
    pub generation: u64,
    /// What the dataplane would do with the flow's later packets (see [`offload_note`]).
    pub offload: String,
}

/// Builds the steps; once a step decided, later ones are `NotReached`.
struct Walk {
    steps: Vec<Step>,
    decided: Option<Decision>,
}

impl Walk {
    fn decided(&self) -> bool {
        self.decided.is_some()
    }

    fn not_reached(&mut self, filter: Filter, list: &'static str) {
        self.push(filter, list, Outcome::NotReached, String::new(), None);
    }

    fn skipped(&mut self, filter: Filter, list: &'static str, detail: impl Into<String>) {
        self.push(filter, list, Outcome::Skipped, detail.into(), None);
    }

    fn no_match(&mut self, filter: Filter, list: &'static str, detail: String) {
        self.push(filter, list, Outcome::NoMatch, detail, None);
    }

    fn matched(&mut self, list: &'static str, decision: Decision, detail: String) {
        self.decided = Some(decision);
        self.push(
            decision.filter,
            list,
            Outcome::Match,
            detail,
            Some(decision),
        );
    }

    fn push(
        &mut self,
        filter: Filter,
        list: &'static str,
        outcome: Outcome,
        detail: String,
        decision: Option<Decision>,
    ) {
        self.steps.push(Step {
            filter,
            list,
            outcome,
            detail,
            decision,
        });
    }
}

/// The decision a match in `kind` gives (every list but the IP-to-ASN table has one).
fn decision_of(kind: ListKind) -> Decision {
    Decision::on_match(kind).unwrap_or(Decision::DEFAULT)
}

/// Explain what `rules` would decide for `query`. `rate_limit` is the rate limiter's
/// configuration (`None`: off); `offload` whether connection-mark offload is on.
pub fn explain(
    rules: &RuleSet,
    rate_limit: Option<&RateLimitConfig>,
    offload: bool,
    query: &Query,
) -> Explanation {
    let mut walk = Walk {
        steps: Vec::with_capacity(17),
        decided: None,
    };
    let src = query.source;

    // 1. allowlist
    ip_step(&mut walk, rules.allow(), ListKind::IpAllow, src);
    // 1a. rate limiter: never asked.
    if walk.decided() {
        walk.not_reached(Filter::Rate, RATE_LIMITER);
    } else {
        let detail = match rate_limit {
            Some(c) => format!(
                "not evaluated (depends on traffic): {} packets/s per source, burst {}; a source over its rate is dropped here (rate/Limiter)",
                c.rate(),
                c.burst()
            ),
            None => "off".to_string(),
        };
        walk.skipped(Filter::Rate, RATE_LIMITER, detail);
    }
    // 2–5. IP blocklist and feeds
    ip_step(&mut walk, rules.block(), ListKind::IpBlock, src);
    ip_step(&mut walk, rules.firehol(), ListKind::FeedFireHol, src);
    ip_step(&mut walk, rules.spamhaus(), ListKind::FeedSpamhaus, src);
    ip_step(&mut walk, rules.feodo(), ListKind::FeedFeodo, src);
    // 6–8. origin
    origin_steps(&mut walk, rules, src);

    // 9–15. payload
    app_steps(&mut walk, rules, query);

    // default
    let decision = match walk.decided {
        Some(d) => {
            walk.not_reached(Filter::Empty, DEFAULT);
            d
        }
        None => {
            walk.matched(DEFAULT, Decision::DEFAULT, "no filter matched".to_string());
            Decision::DEFAULT
        }
    };
    Explanation {
        steps: walk.steps,
        decision,
        generation: rules.generation(),
        offload: offload_note(rules, offload, query, decision),
    }
}

fn ip_step(walk: &mut Walk, set: &IpSet, kind: ListKind, src: IpAddr) {
    let decision = decision_of(kind);
    let list = kind.public_name();
    if walk.decided() {
        walk.not_reached(decision.filter, list);
    } else if set.is_empty() {
        walk.skipped(decision.filter, list, "list empty");
    } else if let Some((first, last)) = set.range_containing(src) {
        walk.matched(
            list,
            decision,
            format!("{src} is in {}", range_text(first, last)),
        );
    } else {
        walk.no_match(decision.filter, list, format!("{src} is not listed"));
    }
}

/// `first..=last` as a prefix when it is one (`203.0.113.0/24`), else `first-last`.
fn range_text(first: IpAddr, last: IpAddr) -> String {
    let (first_bits, last_bits, width) = match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return format!("{first}-{last}"),
    };
    let host = first_bits ^ last_bits;
    // A prefix: the differing bits are all the low bits, none of them set in `first`.
    if host.wrapping_add(1) & host == 0 && first_bits & host == 0 {
        format!("{first}/{}", width - host.count_ones())
    } else {
        format!("{first}-{last}")
    }
}

fn origin_text(origin: &Origin) -> String {
    let asn = origin
        .asn
        .map_or_else(|| "no ASN".to_string(), |a| format!("AS{}", a.get()));
    let country = origin
        .country
        .map_or_else(|| "no country".to_string(), |c| c.as_str().to_string());
    format!("{asn}, {country}")
}

/// Steps 6–8: the country, Spamhaus ASN-DROP, then the user ASN list (the order of
/// `evaluate_source_limited`), all from one IP-to-ASN lookup.
fn origin_steps(walk: &mut Walk, rules: &RuleSet, src: IpAddr) {
    let table_name = ListKind::IpAsn.public_name();
    let row = rules.asn_table().lookup_range(src);
    let row_text = match &row {
        Some((first, last, origin)) => format!(
            "{table_name} row {}: {}",
            range_text(*first, *last),
            origin_text(origin)
        ),
        None if rules.asn_table().is_empty() => format!("{table_name} table empty"),
        None => format!("{src} not in the {table_name} table"),
    };
    let origin = row.map(|r| r.2);

    let countries = ListKind::CountryBlock;
    let list = countries.public_name();
    let filter = Filter::Geo;
    if walk.decided() {
        walk.not_reached(filter, list);
    } else if rules.countries().is_empty() {
        walk.skipped(filter, list, "list empty");
    } else {
        match origin.and_then(|o| o.country) {
            Some(c) if rules.countries().contains(c) => walk.matched(
                list,
                decision_of(countries),
                format!("country {c} is listed ({row_text})"),
            ),
            Some(c) => walk.no_match(filter, list, format!("country {c} not listed ({row_text})")),
            None if rules.asn_table().is_empty() => {
                walk.skipped(filter, list, format!("country unknown ({row_text})"));
            }
            None => walk.no_match(filter, list, format!("country unknown ({row_text})")),
        }
    }

    for kind in [ListKind::FeedAsnDrop, ListKind::AsnBlock] {
        let set = match kind {
            ListKind::FeedAsnDrop => rules.asn_drop(),
            _ => rules.asn_block(),
        };
        let list = kind.public_name();
        let filter = Filter::Asn;
        if walk.decided() {
            walk.not_reached(filter, list);
        } else if set.is_empty() {
            walk.skipped(filter, list, "list empty");
        } else {
            match origin.and_then(|o| o.asn) {
                Some(a) if set.contains(a) => walk.matched(
                    list,
                    decision_of(kind),
                    format!("AS{} is listed ({row_text})", a.get()),
                ),
                Some(a) => walk.no_match(
                    filter,
                    list,
                    format!("AS{} not listed ({row_text})", a.get()),
                ),
                None if rules.asn_table().is_empty() => {
                    walk.skipped(filter, list, format!("ASN unknown ({row_text})"));
                }
                None => walk.no_match(filter, list, format!("ASN unknown ({row_text})")),
            }
        }
    }
}

/// Why the query shows no name to the domain steps.
fn no_names_detail(query: &Query) -> String {
    let mut detail = "no SNI or DNS name given".to_string();
    if !query.dns.is_empty() && query.dns_seen().is_empty() {
        detail = format!(
            "no name seen: DNS names are read only from port-53 traffic (port {})",
            query.port.unwrap_or(0)
        );
    } else if query.sni.is_some() && query.sni_seen().is_none() {
        detail = "no name seen: port 53 is read as DNS, so the SNI is not seen".to_string();
    }
    detail
}

/// What the DNS-port rule hid from the payload steps, appended to their details.
fn port_note(query: &Query) -> Option<String> {
    if !query.dns.is_empty() && query.dns_seen().is_empty() {
        return Some(format!(
            "the DNS names are ignored: they are read only from port-53 traffic (port {})",
            query.port.unwrap_or(0)
        ));
    }
    let hello_given = query.sni.is_some() || query.ja3.is_some() || query.ja4.is_some();
    if hello_given && !query.hello_seen() {
        return Some(
            "the SNI, JA3 and JA4 are ignored: port-53 traffic is read as DNS, never as TLS"
                .to_string(),
        );
    }
    None
}

fn with_note(mut detail: String, note: &Option<String>) -> String {
    if let Some(note) = note {
        if !detail.is_empty() {
            detail.push_str("; ");
        }
        detail.push_str(note);
    }
    detail
}

/// `name` (matching `entry` when it is a subdomain of it).
fn name_match(name: &DomainName, set: &DomainSet) -> Option<String> {
    let m = set.matches(name.as_bytes())?;
    let entry = set.entry(m)?;
    Some(if entry == name {
        name.to_string()
    } else {
        format!("{name} (entry {entry})")
    })
}

/// Steps 9–15, mirroring `evaluate_with` (nothing to see: the source decided) and
/// `evaluate_app`.
fn app_steps(walk: &mut Walk, rules: &RuleSet, query: &Query) {
    let note = port_note(query);
    let names: Vec<&DomainName> = query.names_seen().collect();
    let allow = rules.domain_allow();

    // 9. domain allowlist: every name allowlisted accepts.
    let kind = ListKind::DomainAllow;
    let list = kind.public_name();
    if walk.decided() {
        walk.not_reached(Filter::Domain, list);
    } else if allow.is_empty() {
        walk.skipped(Filter::Domain, list, with_note("list empty".into(), &note));
    } else if names.is_empty() {
        walk.skipped(Filter::Domain, list, no_names_detail(query));
    } else {
        let mut allowed = Vec::new();
        let mut not_allowed = Vec::new();
        for name in &names {
            match name_match(name, allow) {
                Some(text) => allowed.push(text),
                None => not_allowed.push(name.to_string()),
            }
        }
        if not_allowed.is_empty() {
            let detail = format!("every name is allowlisted: {}", allowed.join(", "));
            walk.matched(list, decision_of(kind), with_note(detail, &note));
        } else {
            let mut detail = format!("not allowlisted: {}", not_allowed.join(", "));
            if !allowed.is_empty() {
                let _ = write!(
                    detail,
                    "; allowlisted (exempt from the domain blocklists): {}",
                    allowed.join(", ")
                );
            }
            walk.no_match(Filter::Domain, list, with_note(detail, &note));
        }
    }

    // 10–12. domain blocklist and hosts feeds, per name: an allowlisted name is exempt.
    let domain_lists: [(ListKind, &DomainSet); 3] = [
        (ListKind::DomainBlock, rules.domain_block()),
        (ListKind::FeedStevenBlack, rules.stevenblack()),
        (ListKind::FeedSomeoneWhoCares, rules.someonewhocares()),
    ];
    for (kind, set) in domain_lists {
        let list = kind.public_name();
        if walk.decided() {
            walk.not_reached(Filter::Domain, list);
        } else if set.is_empty() {
            walk.skipped(Filter::Domain, list, with_note("list empty".into(), &note));
        } else if names.is_empty() {
            walk.skipped(Filter::Domain, list, no_names_detail(query));
        } else {
            let mut hits = Vec::new();
            let mut exempt = Vec::new();
            for name in &names {
                if let Some(text) = name_match(name, set) {
                    if allow.contains(name.as_bytes()) {
                        exempt.push(text);
                    } else {
                        hits.push(text);
                    }
                }
            }
            let exempt_text = (!exempt.is_empty())
                .then(|| format!("listed but allowlisted, so exempt: {}", exempt.join(", ")));
            if hits.is_empty() {
                let detail = exempt_text.unwrap_or_else(|| "no name is listed".to_string());
                walk.no_match(Filter::Domain, list, with_note(detail, &note));
            } else {
                let mut detail = format!("listed: {}", hits.join(", "));
                if let Some(exempt) = exempt_text {
                    let _ = write!(detail, "; {exempt}");
                }
                walk.matched(list, decision_of(kind), with_note(detail, &note));
            }
        }
    }

    // 13–14. JA3
    let ja3 = query.ja3_seen();
    for (kind, set) in [
        (ListKind::FeedSslblJa3, rules.sslbl()),
        (ListKind::Ja3Block, rules.ja3_block()),
    ] {
        fingerprint_step(walk, kind, set, ja3, query.ja3.is_some(), "JA3", &note);
    }
    // 15. JA4
    fingerprint_step(
        walk,
        ListKind::Ja4Block,
        rules.ja4_block(),
        query.ja4_seen(),
        query.ja4.is_some(),
        "JA4",
        &note,
    );
}

fn fingerprint_step<T: Ord + Copy + std::fmt::Display>(
    walk: &mut Walk,
    kind: ListKind,
    set: &FingerprintSet<T>,
    value: Option<T>,
    given: bool,
    what: &str,
    note: &Option<String>,
) {
    let decision = decision_of(kind);
    let list = kind.public_name();
    if walk.decided() {
        walk.not_reached(decision.filter, list);
    } else if set.is_empty() {
        walk.skipped(decision.filter, list, "list empty");
    } else {
        match value {
            None if given => walk.skipped(
                decision.filter,
                list,
                with_note(format!("no {what} seen"), note),
            ),
            None => walk.skipped(decision.filter, list, format!("no {what} given")),
            Some(v) if set.contains(&v) => {
                walk.matched(list, decision, format!("{what} {v} is listed"))
            }
            Some(v) => walk.no_match(decision.filter, list, format!("{what} {v} not listed")),
        }
    }
}

/// The payload view the dataplane would build for `query`: what [`RuleSet::evaluate_with`]
/// sees. `dns` is filled by the caller from `query.dns_seen()` (borrowed text).
pub fn app_view<'a>(query: &'a Query, dns: &'a [&'a str]) -> AppView<'a> {
    AppView {
        dns,
        sni: query.sni_seen().map(DomainName::as_bytes),
        ja3: query.ja3_seen(),
        ja4: query.ja4_seen(),
    }
}

/// What the dataplane would do with the rest of the flow (`crate::inspect`'s trust rules and
/// [`crate::offload`]): a decision of steps 1–8 marks the flow (allowlisted: trusted, blocked:
/// blocked, on any port, DNS included); otherwise DNS (port 53) is never offloaded, a drop
/// blocks the flow, and an accept trusts it — a TCP flow only once its first data was inspected
/// when a payload list is loaded.
pub fn offload_note(rules: &RuleSet, offload: bool, query: &Query, decision: Decision) -> String {
    const TRUSTED: &str = "trusted (offloaded to the kernel)";
    const BLOCKED: &str = "blocked (offloaded to the kernel)";
    if !offload {
        return "offload disabled".to_string();
    }
    if decision == Decision::RATE_LIMITED {
        return "not offloaded: a rate-limited drop decides nothing about the flow".to_string();
    }
    let by_source = rules.evaluate_source(query.source);
    if by_source != Decision::DEFAULT {
        return match by_source.verdict {
            Verdict::Accept => format!("{TRUSTED}: the source is allowlisted"),
            Verdict::Drop => format!("{BLOCKED}: the source is blocked"),
        };
    }
    if query.is_dns() {
        return "not offloaded: DNS (port 53) is never offloaded, every query is checked"
            .to_string();
    }
    let payload_lists = rules.wants_names() || rules.wants_ja3() || rules.wants_ja4();
    match decision.verdict {
        Verdict::Drop => format!(
            "{BLOCKED}: a TCP flow also enters the blocked-flow table, so retransmissions stay dropped"
        ),
        Verdict::Accept if payload_lists => format!(
            "{TRUSTED}: UDP and other protocols on the first accepted packet; a TCP flow only after its first data was inspected (a complete ClientHello, or data that is not TLS), its handshake packets are still queued"
        ),
        Verdict::Accept => format!("{TRUSTED} on the flow's first accepted packet"),
    }
}

#[cfg(test)]
mod tests;
