//! Conntrack offload: which verdict and packet mark a decided packet gets, so that the rest of
//! its flow is accepted (trusted) or dropped (blocked) by the kernel without being queued.
//!
//! The dataplane never writes a conntrack entry on the packet path. It answers a packet whose
//! flow is decided with `NF_REPEAT` and a packet mark that carries one of two bits (trusted or
//! blocked) on top of the packet's own mark; the kernel runs the hook again, and the rules of
//! [`crate::firewall`] copy those bits (and only those) into the connection's mark, then accept
//! or drop the packet. Later packets of the flow match the connection mark before the queue
//! rule. One netlink message per packet (or one per batch of identical answers), no second
//! round trip, and it works on a flow's first packet, whose conntrack entry is not confirmed
//! yet while the packet sits in the queue (the original's ctnetlink update failed there).
//!
//! A packet that arrives with one of our bits already set in its mark (something else set it,
//! or the rules that act on the bits are gone) is answered with a plain verdict: a repeat could
//! otherwise loop through the queue.

use crate::chain::Verdict;

/// What the engine concluded about the rest of a packet's flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Trust {
    /// Later packets must still be queued (a TCP handshake, a hello being reassembled, DNS).
    #[default]
    Undecided,
    /// Later packets may be accepted by the kernel.
    Trusted,
    /// Later packets may be dropped by the kernel.
    Blocked,
}

/// The two mark bits (or bit groups) offload uses. Validated: both non-zero and disjoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    trusted: u32,
    blocked: u32,
}

/// Why a pair of marks is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MarksError {
    #[error("the trusted mark must not be 0")]
    TrustedZero,
    #[error("the blocked mark must not be 0")]
    BlockedZero,
    #[error("the trusted mark {trusted:#x} and the blocked mark {blocked:#x} share bits")]
    Overlap { trusted: u32, blocked: u32 },
}

impl Marks {
    /// The defaults: bit 20 (the original's `0x100000`) for trusted, bit 21 for blocked.
    pub const DEFAULT: Marks = Marks {
        trusted: 0x0010_0000,
        blocked: 0x0020_0000,
    };

    pub fn new(trusted: u32, blocked: u32) -> Result<Marks, MarksError> {
        if trusted == 0 {
            return Err(MarksError::TrustedZero);
        }
        if blocked == 0 {
            return Err(MarksError::BlockedZero);
        }
        if trusted & blocked != 0 {
            return Err(MarksError::Overlap { trusted, blocked });
        }
        Ok(Marks { trusted, blocked })
    }

    pub fn trusted(self) -> u32 {
        self.trusted
    }

    pub fn blocked(self) -> u32 {
        self.blocked
    }

    /// Every bit offload owns; no other bit of a packet or connection mark is ever changed.
    pub fn mask(self) -> u32 {
        self.trusted | self.blocked
    }
}

/// The netlink verdict for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RawVerdict {
    Accept,
    Drop,
    /// Run the hook again (with the new mark): the offload rules act on it.
    Repeat,
}

/// A verdict and, when it changes, the packet's new mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Answer {
    pub verdict: RawVerdict,
    pub mark: Option<u32>,
}

impl Answer {
    /// A verdict that leaves the mark alone.
    pub const fn plain(verdict: Verdict) -> Answer {
        Answer {
            verdict: match verdict {
                Verdict::Accept => RawVerdict::Accept,
                Verdict::Drop => RawVerdict::Drop,
            },
            mark: None,
        }
    }
}

/// The answer for a decided packet. `packet_mark` is the mark the packet was queued with (the
/// kernel reports it when non-zero); `marks` is `None` when offload is off.
pub fn answer(
    verdict: Verdict,
    trust: Trust,
    packet_mark: Option<u32>,
    marks: Option<Marks>,
) -> Answer {
    let Some(marks) = marks else {
        return Answer::plain(verdict);
    };
    let current = packet_mark.unwrap_or(0);
    if current & marks.mask() != 0 {
        return Answer::plain(verdict);
    }
    let bits = match (verdict, trust) {
        (Verdict::Accept, Trust::Trusted) => marks.trusted,
        (Verdict::Drop, Trust::Blocked) => marks.blocked,
        _ => return Answer::plain(verdict),
    };
    Answer {
        verdict: RawVerdict::Repeat,
        mark: Some(current | bits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_validated() {
        assert_eq!(Marks::new(0, 1), Err(MarksError::TrustedZero));
        assert_eq!(Marks::new(1, 0), Err(MarksError::BlockedZero));
        assert_eq!(
            Marks::new(3, 2),
            Err(MarksError::Overlap {
                trusted: 3,
                blocked: 2
            })
        );
        assert_eq!(Marks::new(1, 2).map(Marks::mask), Ok(3));
        assert_eq!(Marks::DEFAULT.mask(), 0x0030_0000);
    }

    #[test]
    fn answers() {
        let m = Some(Marks::DEFAULT);
        let repeat = |mark| Answer {
            verdict: RawVerdict::Repeat,
            mark: Some(mark),
        };
        let cases = [
            // offload off: always plain
            (
                Verdict::Accept,
                Trust::Trusted,
                None,
                None,
                Answer::plain(Verdict::Accept),
            ),
            (
                Verdict::Drop,
                Trust::Blocked,
                None,
                None,
                Answer::plain(Verdict::Drop),
            ),
            // undecided flows: plain
            (
                Verdict::Accept,
                Trust::Undecided,
                None,
                m,
                Answer::plain(Verdict::Accept),
            ),
            (
                Verdict::Drop,
                Trust::Undecided,
                None,
                m,
                Answer::plain(Verdict::Drop),
            ),
            // inconsistent pairs never mark
            (
                Verdict::Drop,
                Trust::Trusted,
                None,
                m,
                Answer::plain(Verdict::Drop),
            ),
            (
                Verdict::Accept,
                Trust::Blocked,
                None,
                m,
                Answer::plain(Verdict::Accept),
            ),
            // decided flows: repeat with our bit on top of the packet's own mark
            (
                Verdict::Accept,
                Trust::Trusted,
                None,
                m,
                repeat(0x0010_0000),
            ),
            (
                Verdict::Drop,
                Trust::Blocked,
                Some(0xff),
                m,
                repeat(0x0020_00ff),
            ),
            // our bits already set: plain, never a loop
            (
                Verdict::Accept,
                Trust::Trusted,
                Some(0x0010_0000),
                m,
                Answer::plain(Verdict::Accept),
            ),
            (
                Verdict::Drop,
                Trust::Blocked,
                Some(0x0030_0001),
                m,
                Answer::plain(Verdict::Drop),
            ),
        ];
        for (verdict, trust, mark, marks, want) in cases {
            assert_eq!(
                answer(verdict, trust, mark, marks),
                want,
                "{verdict:?} {trust:?} {mark:?}"
            );
        }
    }
}
