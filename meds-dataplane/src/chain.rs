//! The filter chain: an immutable [`RuleSet`] and the [`Decision`] it takes for one packet.
//!
//! Order (compatible with the original Meds): the allowlist first (hit → accept, `ip` /
//! `WhiteList`), then the blocklist (hit → drop, `ip` / `BlackList`), otherwise accept
//! (`empty` / `default`). Both lists match the packet's **source** address. A packet without a
//! readable source address never reaches the lists: it gets the configured
//! [`UnparsableVerdict`] with `empty` / `unparsable`.
//!
//! A `RuleSet` is built off the hot path (by the sync client) and swapped in atomically; the
//! packet threads only read it. Nothing here allocates, locks, logs or does I/O.

use crate::lists::IpSet;
use crate::packet::{self, PacketMeta};

/// What the kernel is told to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Accept,
    Drop,
}

impl Verdict {
    /// Every verdict, in index order.
    pub const ALL: [Verdict; 2] = [Verdict::Accept, Verdict::Drop];

    /// Metric / status label.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Drop => "drop",
        }
    }

    /// Dense index (position in [`Verdict::ALL`]).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Which filter took the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter {
    /// No filter matched (or the packet could not be read).
    Empty,
    /// The IP allow/block lists.
    Ip,
}

impl Filter {
    /// Every filter, in index order.
    pub const ALL: [Filter; 2] = [Filter::Empty, Filter::Ip];

    /// Metric / status label.
    pub fn label(self) -> &'static str {
        match self {
            Filter::Empty => "empty",
            Filter::Ip => "ip",
        }
    }

    /// Dense index (position in [`Filter::ALL`]).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why the filter decided as it did. Labels keep the original's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Default,
    Unparsable,
    WhiteList,
    BlackList,
}

impl Reason {
    /// Every reason, in index order.
    pub const ALL: [Reason; 4] = [
        Reason::Default,
        Reason::Unparsable,
        Reason::WhiteList,
        Reason::BlackList,
    ];

    /// Metric / status label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Default => "default",
            Reason::Unparsable => "unparsable",
            Reason::WhiteList => "WhiteList",
            Reason::BlackList => "BlackList",
        }
    }

    /// Dense index (position in [`Reason::ALL`]).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The outcome for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub filter: Filter,
    pub reason: Reason,
}

impl Decision {
    /// Nothing matched.
    pub const DEFAULT: Decision = Decision {
        verdict: Verdict::Accept,
        filter: Filter::Empty,
        reason: Reason::Default,
    };
    /// Source in the allowlist.
    pub const WHITELISTED: Decision = Decision {
        verdict: Verdict::Accept,
        filter: Filter::Ip,
        reason: Reason::WhiteList,
    };
    /// Source in the blocklist (and not in the allowlist).
    pub const BLACKLISTED: Decision = Decision {
        verdict: Verdict::Drop,
        filter: Filter::Ip,
        reason: Reason::BlackList,
    };

    /// The decision for a packet without a readable source address.
    pub fn unparsable(policy: UnparsableVerdict) -> Decision {
        Decision {
            verdict: policy.verdict(),
            filter: Filter::Empty,
            reason: Reason::Unparsable,
        }
    }
}

/// Policy for packets without a readable source address (not IPv4/IPv6, or shorter than the
/// fixed IP header, or a queue message without a usable payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnparsableVerdict {
    Accept,
    Drop,
}

impl UnparsableVerdict {
    pub fn verdict(self) -> Verdict {
        match self {
            UnparsableVerdict::Accept => Verdict::Accept,
            UnparsableVerdict::Drop => Verdict::Drop,
        }
    }
}

/// An immutable rule set: the lists of one controller generation. `Send + Sync`.
#[derive(Debug, Default)]
pub struct RuleSet {
    generation: u64,
    allow: IpSet,
    block: IpSet,
}

impl RuleSet {
    /// Generation 0 with empty lists: accepts everything (`empty` / `default`).
    pub fn empty() -> RuleSet {
        RuleSet::default()
    }

    pub fn new(generation: u64, allow: IpSet, block: IpSet) -> RuleSet {
        RuleSet {
            generation,
            allow,
            block,
        }
    }

    /// The controller generation these lists come from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The allowlist ("whitelist").
    pub fn allow(&self) -> &IpSet {
        &self.allow
    }

    /// The blocklist ("blacklist").
    pub fn block(&self) -> &IpSet {
        &self.block
    }

    /// Run the chain for a parsed packet.
    pub fn evaluate(&self, packet: &PacketMeta) -> Decision {
        if self.allow.contains(packet.src) {
            Decision::WHITELISTED
        } else if self.block.contains(packet.src) {
            Decision::BLACKLISTED
        } else {
            Decision::DEFAULT
        }
    }
}

/// Parse a raw IP packet and run the chain; a packet without a source address gets the
/// `unparsable` policy.
pub fn decide(rules: &RuleSet, packet: &[u8], unparsable: UnparsableVerdict) -> Decision {
    match packet::parse(packet) {
        Ok(meta) => rules.evaluate(&meta),
        Err(_) => Decision::unparsable(unparsable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tests::{A4, A6, B4, B6, TCP, UDP, tcp, udp, v4, v6};
    use meds_proto::Cidr;
    use proptest::prelude::*;

    fn ipset(prefixes: &[&str]) -> IpSet {
        IpSet::from_prefixes(prefixes.iter().map(|p| p.parse::<Cidr>().unwrap()))
    }

    #[test]
    fn labels() {
        let verdicts: Vec<_> = Verdict::ALL.iter().map(|v| v.label()).collect();
        assert_eq!(verdicts, ["accept", "drop"]);
        let filters: Vec<_> = Filter::ALL.iter().map(|f| f.label()).collect();
        assert_eq!(filters, ["empty", "ip"]);
        let reasons: Vec<_> = Reason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(reasons, ["default", "unparsable", "WhiteList", "BlackList"]);
        for (i, v) in Verdict::ALL.iter().enumerate() {
            assert_eq!(v.index(), i);
        }
        for (i, f) in Filter::ALL.iter().enumerate() {
            assert_eq!(f.index(), i);
        }
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RuleSet>();
    }

    #[test]
    fn chain_order() {
        let rules = RuleSet::new(
            7,
            ipset(&["203.0.113.7/32", "2001:db8::7/128"]),
            ipset(&["203.0.113.0/24", "2001:db8::/32"]),
        );
        assert_eq!(rules.generation(), 7);
        assert_eq!(rules.allow().len(), 2);
        assert_eq!(rules.block().len(), 2);
        let v4_from = |src: [u8; 4]| v4(UDP, src, B4, &udp(1, 53, b""));
        let v6_from = |src: [u8; 16]| v6(TCP, src, B6, &tcp(1, 443));
        let mut other6 = A6;
        other6[1] = 0x02; // 2002:db8::7, outside 2001:db8::/32
        let cases: [(&str, Vec<u8>, Decision); 8] = [
            (
                "allowed v4 also in blocklist",
                v4_from(A4),
                Decision::WHITELISTED,
            ),
            (
                "blocked v4 first address",
                v4_from([203, 0, 113, 0]),
                Decision::BLACKLISTED,
            ),
            (
                "blocked v4 last address",
                v4_from([203, 0, 113, 255]),
                Decision::BLACKLISTED,
            ),
            (
                "v4 just outside",
                v4_from([203, 0, 114, 0]),
                Decision::DEFAULT,
            ),
            ("allowed v6", v6_from(A6), Decision::WHITELISTED),
            ("blocked v6", v6_from(B6), Decision::BLACKLISTED),
            ("v6 outside", v6_from(other6), Decision::DEFAULT),
            // the destination never matters
            (
                "dst in blocklist",
                v4(UDP, [198, 51, 100, 1], A4, &[]),
                Decision::DEFAULT,
            ),
        ];
        for (name, packet, want) in cases {
            assert_eq!(
                decide(&rules, &packet, UnparsableVerdict::Drop),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn garbage_transport_still_meets_the_blocklist() {
        let rules = RuleSet::new(1, IpSet::empty(), ipset(&["203.0.113.0/24"]));
        let mut packet = v4(TCP, A4, B4, &[0xff; 3]);
        packet[0] = 0x4f; // options claimed past the end
        assert_eq!(
            decide(&rules, &packet, UnparsableVerdict::Accept),
            Decision::BLACKLISTED
        );
    }

    #[test]
    fn unparsable_follows_policy() {
        let rules = RuleSet::new(1, IpSet::empty(), ipset(&["0.0.0.0/0", "::/0"]));
        for input in [&[][..], &[0x45; 19], &[0x70; 60], &[0x60; 39]] {
            for policy in [UnparsableVerdict::Accept, UnparsableVerdict::Drop] {
                let d = decide(&rules, input, policy);
                assert_eq!(d.verdict, policy.verdict(), "{input:?}");
                assert_eq!(d.filter, Filter::Empty);
                assert_eq!(d.reason, Reason::Unparsable);
            }
        }
    }

    #[test]
    fn empty_rules_accept_by_default() {
        let rules = RuleSet::empty();
        assert_eq!(rules.generation(), 0);
        assert!(rules.allow().is_empty() && rules.block().is_empty());
        let packet = v4(UDP, A4, B4, &udp(1, 2, b""));
        assert_eq!(
            decide(&rules, &packet, UnparsableVerdict::Drop),
            Decision::DEFAULT
        );
    }

    proptest! {
        #[test]
        fn decide_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let rules = RuleSet::new(1, ipset(&["0.0.0.0/1"]), ipset(&["128.0.0.0/1", "::/0"]));
            let d = decide(&rules, &bytes, UnparsableVerdict::Accept);
            prop_assert_eq!(d.reason == Reason::Unparsable, packet::parse(&bytes).is_err());
        }
    }
}
