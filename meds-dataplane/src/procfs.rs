//! What the kernel reports about this dataplane in `/proc`, for the stats sent to the
//! controller: the NFQUEUE instances (`/proc/net/netfilter/nfnetlink_queue`) and the process's
//! resident memory (`/proc/self/statm`).
//!
//! The parsers are total: any input (a kernel with another format, a truncated read, garbage)
//! gives `None` or skips the line, never a panic. Read by the sync client once per stats
//! message, never on the packet path.

use std::path::Path;

/// The kernel's NFQUEUE instances of the current network namespace.
pub const NFQUEUE_PROC: &str = "/proc/net/netfilter/nfnetlink_queue";

/// One line of [`NFQUEUE_PROC`]. The kernel prints every column as a 32-bit unsigned number
/// (`%5u %6u %5u %1u %5u %5u %5u %8u %2d`), so the counters wrap at 2^32; see [`Unwrap`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueLine {
    pub queue: u32,
    pub peer_portid: u32,
    /// Packets waiting for a verdict.
    pub waiting: u32,
    pub copy_mode: u32,
    pub copy_range: u32,
    /// Packets dropped because the queue was full.
    pub queue_dropped: u32,
    /// Packets the kernel could not deliver to the reader's socket.
    pub user_dropped: u32,
    /// Last packet id handed out: packets enqueued since the queue was bound.
    pub id_sequence: u32,
}

/// Parse one line: exactly nine whitespace-separated decimal fields (the last one is always 1
/// and is only checked to be a number). `None` for anything else.
pub fn parse_queue_line(line: &str) -> Option<QueueLine> {
    let mut fields = line.split_ascii_whitespace();
    let mut next = || fields.next().and_then(|f| f.parse::<u32>().ok());
    let parsed = QueueLine {
        queue: next()?,
        peer_portid: next()?,
        waiting: next()?,
        copy_mode: next()?,
        copy_range: next()?,
        queue_dropped: next()?,
        user_dropped: next()?,
        id_sequence: next()?,
    };
    let _one = line.split_ascii_whitespace().nth(8)?.parse::<i64>().ok()?;
    if line.split_ascii_whitespace().nth(9).is_some() {
        return None;
    }
    Some(parsed)
}

/// The lines of [`NFQUEUE_PROC`] for the queues in `queues` (lines that do not parse, and other
/// processes' queues, are skipped).
pub fn parse_queues(text: &str, queues: &[u32]) -> Vec<QueueLine> {
    text.lines()
        .filter_map(parse_queue_line)
        .filter(|q| queues.contains(&q.queue))
        .collect()
}

/// Read [`NFQUEUE_PROC`] (or `path`) for `queues`; empty when it cannot be read (e.g. the
/// `nfnetlink_queue` module is not loaded).
pub fn read_queues(path: &Path, queues: &[u32]) -> Vec<QueueLine> {
    std::fs::read_to_string(path)
        .map(|text| parse_queues(&text, queues))
        .unwrap_or_default()
}

/// Resident set size in bytes from the text of `/proc/self/statm` (second field, in pages).
pub fn parse_statm(text: &str, page_size: u64) -> Option<u64> {
    let resident: u64 = text.split_ascii_whitespace().nth(1)?.parse().ok()?;
    resident.checked_mul(page_size)
}

/// This process's resident set size in bytes; `None` when `/proc` cannot tell.
pub fn resident_memory_bytes() -> Option<u64> {
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = u64::try_from(page).ok().filter(|&p| p > 0)?;
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    parse_statm(&text, page)
}

/// A 64-bit running total of a 32-bit kernel counter that wraps: each reading adds its
/// difference to the previous one (modulo 2^32). The first reading is taken as the total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unwrap {
    last: Option<u32>,
    total: u64,
}

impl Unwrap {
    pub fn update(&mut self, raw: u32) -> u64 {
        let delta = match self.last {
            Some(last) => raw.wrapping_sub(last),
            None => raw,
        };
        self.total = self.total.saturating_add(u64::from(delta));
        self.last = Some(raw);
        self.total
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real lines (kernel 6.x, two queues bound, one idle instance of another process).
    const REAL: &str = "    0   3041     0 2 65531     0     0     1532  1
    1 2147483 12 2  1500    17     3 4294967295  1
   77  99999     0 2 65531     0     0        0  1
";

    #[test]
    fn real_lines_parse() {
        let all = parse_queues(REAL, &[0, 1, 77]);
        assert_eq!(all.len(), 3);
        assert_eq!(
            all[0],
            QueueLine {
                queue: 0,
                peer_portid: 3041,
                waiting: 0,
                copy_mode: 2,
                copy_range: 65531,
                queue_dropped: 0,
                user_dropped: 0,
                id_sequence: 1532,
            }
        );
        assert_eq!(all[1].waiting, 12);
        assert_eq!(all[1].queue_dropped, 17);
        assert_eq!(all[1].user_dropped, 3);
        assert_eq!(all[1].id_sequence, u32::MAX);
        // only our queues are kept
        let ours: Vec<u32> = parse_queues(REAL, &[1, 5])
            .iter()
            .map(|q| q.queue)
            .collect();
        assert_eq!(ours, [1]);
    }

    #[test]
    fn garbage_never_panics_and_is_skipped() {
        let cases = [
            "",
            "\n\n",
            "0 1 2 3 4 5 6 7",
            "0 1 2 3 4 5 6 7 1 9",
            "0 1 2 3 4 5 6 x 1",
            "-1 1 2 3 4 5 6 7 1",
            "0 1 2 3 4 5 6 4294967296 1",
            "queue_number peer_portid queue_total",
            "\u{0}\u{ff}\u{7f}",
            "0 1 2 3 4 5 6 7 one",
        ];
        for case in cases {
            assert_eq!(parse_queue_line(case), None, "{case:?}");
            assert!(parse_queues(case, &[0]).is_empty(), "{case:?}");
        }
        // every prefix of a real file parses or is skipped, never panics
        for end in 0..=REAL.len() {
            if let Some(prefix) = REAL.get(..end) {
                let _ = parse_queues(prefix, &[0, 1, 77]);
            }
        }
        let mixed = format!("garbage\n{REAL}1 2 3\n");
        assert_eq!(parse_queues(&mixed, &[0, 1, 77]).len(), 3);
    }

    #[test]
    fn statm() {
        assert_eq!(
            parse_statm("1000 250 30 1 0 100 0\n", 4096),
            Some(1_024_000)
        );
        assert_eq!(parse_statm("1000", 4096), None);
        assert_eq!(parse_statm("1000 x", 4096), None);
        assert_eq!(parse_statm("", 4096), None);
        assert_eq!(parse_statm("1 18446744073709551615", 4096), None);
        assert!(resident_memory_bytes().is_some_and(|b| b > 0));
    }

    #[test]
    fn unwrap_follows_a_wrapping_counter() {
        let mut u = Unwrap::default();
        assert_eq!(u.total(), 0);
        assert_eq!(u.update(10), 10);
        assert_eq!(u.update(10), 10);
        assert_eq!(u.update(u32::MAX), u64::from(u32::MAX));
        assert_eq!(u.update(4), u64::from(u32::MAX) + 5);
    }
}
