//! Rendering: command results to the text an operator reads (tables via `tabled`) or to the
//! JSON documents scripts read (`--json`). Pure functions: no I/O, no clock, no controller.
//!
//! The JSON shapes are part of medsctl's interface (see the README); change them only in a
//! compatible way.

use meds_proto::pb;
use meds_proto::{Cidr, ListKind};
use serde_json::{Value, json};
use tabled::builder::Builder;
use tabled::settings::object::Columns;
use tabled::settings::{Alignment, Padding, Style};

/// The name operators use for a list (also the `"list"` field of `list --json`).
pub fn list_name(list: ListKind) -> &'static str {
    match list {
        ListKind::IpAllow => "whitelist",
        ListKind::IpBlock => "blacklist",
    }
}

/// Which modification was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Add,
    Remove,
}

/// The answer for one `check` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The argument as the operator typed it.
    pub query: String,
    pub found: bool,
    /// Stored prefixes containing the query, most specific first.
    pub matches: Vec<String>,
}

/// Why a change the controller stored is not yet live on the packet path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// No dataplane is connected to the controller.
    NotConnected,
    /// A dataplane is connected but its last acknowledged generation is older.
    Behind { applied: u64 },
    /// The controller's status could not be read.
    Unknown,
}

impl Pending {
    /// Derive the reason from a status read after the change (`None`: status unavailable).
    pub fn from_status(status: Option<&pb::StatusResponse>) -> Pending {
        match status {
            None => Pending::Unknown,
            Some(s) if !s.dataplane_connected => Pending::NotConnected,
            Some(s) => Pending::Behind {
                applied: s.applied_generation,
            },
        }
    }
}

/// Table for `list`: one row per entry with its address family.
pub fn list_table(list: ListKind, entries: &[String]) -> String {
    if entries.is_empty() {
        return format!("the {} is empty", list_name(list));
    }
    let mut builder = Builder::default();
    builder.push_record(["ENTRY", "FAMILY"]);
    for entry in entries {
        builder.push_record([entry.as_str(), family(entry)]);
    }
    grid(builder)
}

/// `{"list":"whitelist","entries":[...]}`.
pub fn list_json(list: ListKind, entries: &[String]) -> Value {
    json!({ "list": list_name(list), "entries": entries })
}

/// One line summarising an add/remove; `requested` is the number of arguments sent and
/// `waited` whether the controller was asked to wait for the dataplane.
pub fn modify_summary(
    change: Change,
    list: ListKind,
    requested: usize,
    response: &pb::ModifyEntriesResponse,
    waited: bool,
) -> String {
    let name = list_name(list);
    let changed = u64::from(response.changed);
    let requested = u64::try_from(requested).unwrap_or(u64::MAX);
    let what = match (change, changed) {
        (Change::Add, 0) => format!("no change: the {name} already had {}", entries(requested)),
        (Change::Remove, 0) => format!("no change: the {name} had none of {}", entries(requested)),
        (Change::Add, n) if n == requested => format!("added {} to the {name}", entries(n)),
        (Change::Remove, n) if n == requested => format!("removed {} from the {name}", entries(n)),
        (Change::Add, n) => format!("added {n} of {} to the {name}", entries(requested)),
        (Change::Remove, n) => format!("removed {n} of {} from the {name}", entries(requested)),
    };
    let applied = if response.applied {
        "applied by the dataplane"
    } else if waited {
        "not yet applied"
    } else {
        "not waiting for the dataplane"
    };
    format!("{what} (generation {}, {applied})", response.generation)
}

/// The warning printed (on stderr) when a waited-for change is not yet live.
pub fn pending_warning(generation: u64, pending: Pending) -> String {
    let why = match pending {
        Pending::NotConnected => "dataplane not connected".to_string(),
        Pending::Behind { applied } => {
            format!("the dataplane has acknowledged only generation {applied} so far")
        }
        Pending::Unknown => "the dataplane has not acknowledged it".to_string(),
    };
    format!(
        "warning: generation {generation} is stored but not yet applied: {why}; \
         the dataplane applies it when it catches up"
    )
}

/// `{"changed":N,"generation":G,"applied":bool}`.
pub fn modify_json(response: &pb::ModifyEntriesResponse) -> Value {
    json!({
        "changed": response.changed,
        "generation": response.generation,
        "applied": response.applied,
    })
}

/// Table for `check`: QUERY | FOUND | MATCHES.
pub fn check_table(results: &[CheckResult]) -> String {
    let mut builder = Builder::default();
    builder.push_record(["QUERY", "FOUND", "MATCHES"]);
    for r in results {
        let matches = if r.matches.is_empty() {
            "-".to_string()
        } else {
            r.matches.join(", ")
        };
        builder.push_record([r.query.clone(), yes_no(r.found).to_string(), matches]);
    }
    grid(builder)
}

/// `{"results":[{"query":..,"found":bool,"matches":[..]}]}`.
pub fn check_json(results: &[CheckResult]) -> Value {
    let results: Vec<Value> = results
        .iter()
        .map(|r| json!({ "query": r.query, "found": r.found, "matches": r.matches }))
        .collect();
    json!({ "results": results })
}

/// The `status` view: a key/value table, then the decision counters when reported.
pub fn status_text(status: &pb::StatusResponse) -> String {
    let (whitelist, blacklist) = list_sizes(status);
    let mut kv = Builder::default();
    let mut row = |key: &str, value: String| kv.push_record([key.to_string(), value]);
    row("controller version", or_dash(&status.controller_version));
    row(
        "controller uptime",
        duration_text(status.controller_uptime_seconds),
    );
    row("generation", status.generation.to_string());
    row(
        "dataplane connected",
        yes_no(status.dataplane_connected).to_string(),
    );
    row(
        "applied generation",
        applied_text(status.applied_generation, status.generation),
    );
    row("dataplane version", or_dash(&status.dataplane_version));
    row("dataplane queues", queues_text(&status.dataplane_queues));
    row("whitelist entries", whitelist.to_string());
    row("blacklist entries", blacklist.to_string());
    match &status.dataplane_stats {
        None => row("dataplane stats", "none reported".to_string()),
        Some(stats) => {
            row("packets processed", stats.packets_processed.to_string());
            row("updates rejected", stats.updates_rejected.to_string());
            row("verdict errors", stats.verdict_errors.to_string());
        }
    }
    let mut table = kv.build();
    table
        .with(Style::empty())
        .modify(Columns::first(), Padding::new(0, 2, 0, 0))
        .modify(Columns::last(), Padding::zero());
    let mut out = trim_lines(&table.to_string());

    if let Some(stats) = &status.dataplane_stats
        && !stats.decisions.is_empty()
    {
        let mut builder = Builder::default();
        builder.push_record(["VERDICT", "FILTER", "REASON", "PACKETS"]);
        for d in &stats.decisions {
            builder.push_record([
                d.verdict.clone(),
                d.filter.clone(),
                d.reason.clone(),
                d.packets.to_string(),
            ]);
        }
        let mut table = builder.build();
        table
            .with(Style::psql())
            .modify(Columns::last(), Alignment::right());
        out.push_str("\n\n");
        out.push_str(&trim_lines(&table.to_string()));
    }
    out
}

/// The `status --json` document (shape documented in the README).
pub fn status_json(status: &pb::StatusResponse) -> Value {
    let (whitelist, blacklist) = list_sizes(status);
    let stats = match &status.dataplane_stats {
        None => Value::Null,
        Some(s) => {
            let decisions: Vec<Value> = s
                .decisions
                .iter()
                .map(|d| {
                    json!({
                        "verdict": d.verdict,
                        "filter": d.filter,
                        "reason": d.reason,
                        "packets": d.packets,
                    })
                })
                .collect();
            json!({
                "packets_processed": s.packets_processed,
                "updates_rejected": s.updates_rejected,
                "verdict_errors": s.verdict_errors,
                "decisions": decisions,
            })
        }
    };
    let dataplane_version = if status.dataplane_version.is_empty() {
        Value::Null
    } else {
        Value::from(status.dataplane_version.clone())
    };
    json!({
        "controller_version": status.controller_version,
        "generation": status.generation,
        "dataplane_connected": status.dataplane_connected,
        "applied_generation": status.applied_generation,
        "dataplane_version": dataplane_version,
        "dataplane_queues": status.dataplane_queues,
        "lists": { "whitelist": whitelist, "blacklist": blacklist },
        "controller_uptime_seconds": status.controller_uptime_seconds,
        "dataplane_stats": stats,
    })
}

/// Entry counts of (whitelist, blacklist); lists the controller did not report count as 0 and
/// lists this medsctl does not know are ignored.
fn list_sizes(status: &pb::StatusResponse) -> (u64, u64) {
    let mut sizes = (0u64, 0u64);
    for size in &status.lists {
        match ListKind::from_wire(size.list) {
            Some(ListKind::IpAllow) => sizes.0 = sizes.0.saturating_add(size.entries),
            Some(ListKind::IpBlock) => sizes.1 = sizes.1.saturating_add(size.entries),
            None => {}
        }
    }
    sizes
}

/// Render a psql-style grid without trailing spaces.
fn grid(builder: Builder) -> String {
    let mut table = builder.build();
    table.with(Style::psql());
    trim_lines(&table.to_string())
}

fn trim_lines(text: &str) -> String {
    text.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

fn family(entry: &str) -> &'static str {
    match entry.parse::<Cidr>() {
        Ok(c) if c.is_ipv4() => "ipv4",
        Ok(_) => "ipv6",
        Err(_) => "?",
    }
}

fn entries(n: u64) -> String {
    if n == 1 {
        "1 entry".to_string()
    } else {
        format!("{n} entries")
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

fn queues_text(queues: &[u32]) -> String {
    if queues.is_empty() {
        return "-".to_string();
    }
    queues
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn applied_text(applied: u64, generation: u64) -> String {
    if applied == 0 && generation == 0 {
        return "none".to_string();
    }
    let shown = if applied == 0 {
        "none".to_string()
    } else {
        applied.to_string()
    };
    match applied.cmp(&generation) {
        std::cmp::Ordering::Equal => format!("{shown} (in sync)"),
        std::cmp::Ordering::Less => format!("{shown} (behind by {})", generation - applied),
        std::cmp::Ordering::Greater => format!("{shown} (ahead of the store)"),
    }
}

/// `1d 2h 3m 4s`, starting at the largest non-zero unit.
fn duration_text(secs: u64) -> String {
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let mut rest = secs;
    let mut parts = Vec::new();
    for (size, suffix) in units {
        let n = rest / size;
        rest %= size;
        if n > 0 || !parts.is_empty() || size == 1 {
            parts.push(format!("{n}{suffix}"));
        }
    }
    parts.join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // Tests panic on purpose.
mod tests {
    use super::*;

    fn entries_of(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn list_table_snapshot() {
        let entries = entries_of(&["10.0.0.0/8", "203.0.113.7/32", "2001:db8::/32"]);
        let want = [
            " ENTRY          | FAMILY",
            "----------------+--------",
            " 10.0.0.0/8     | ipv4",
            " 203.0.113.7/32 | ipv4",
            " 2001:db8::/32  | ipv6",
        ];
        assert_eq!(list_table(ListKind::IpAllow, &entries), want.join("\n"));
    }

    #[test]
    fn list_table_edges() {
        assert_eq!(list_table(ListKind::IpAllow, &[]), "the whitelist is empty");
        assert_eq!(list_table(ListKind::IpBlock, &[]), "the blacklist is empty");
        // A controller answer that is not a prefix is shown, never a panic.
        let odd = entries_of(&["not-a-prefix"]);
        assert_eq!(
            list_table(ListKind::IpBlock, &odd),
            " ENTRY        | FAMILY\n--------------+--------\n not-a-prefix | ?"
        );
    }

    #[test]
    fn list_json_shape() {
        let entries = entries_of(&["10.0.0.0/8", "2001:db8::/32"]);
        assert_eq!(
            list_json(ListKind::IpAllow, &entries),
            json!({"list": "whitelist", "entries": ["10.0.0.0/8", "2001:db8::/32"]})
        );
        assert_eq!(
            list_json(ListKind::IpBlock, &[]),
            json!({"list": "blacklist", "entries": []})
        );
    }

    fn check_results() -> Vec<CheckResult> {
        vec![
            CheckResult {
                query: "203.0.113.7".into(),
                found: true,
                matches: entries_of(&["203.0.113.0/24", "203.0.0.0/16"]),
            },
            CheckResult {
                query: "2001:db8::1".into(),
                found: false,
                matches: vec![],
            },
        ]
    }

    #[test]
    fn check_table_snapshot() {
        let want = [
            " QUERY       | FOUND | MATCHES",
            "-------------+-------+------------------------------",
            " 203.0.113.7 | yes   | 203.0.113.0/24, 203.0.0.0/16",
            " 2001:db8::1 | no    | -",
        ];
        assert_eq!(check_table(&check_results()), want.join("\n"));
    }

    #[test]
    fn check_json_shape() {
        assert_eq!(
            check_json(&check_results()),
            json!({"results": [
                {"query": "203.0.113.7", "found": true, "matches": ["203.0.113.0/24", "203.0.0.0/16"]},
                {"query": "2001:db8::1", "found": false, "matches": []},
            ]})
        );
    }

    fn modified(changed: u32, generation: u64, applied: bool) -> pb::ModifyEntriesResponse {
        pb::ModifyEntriesResponse {
            changed,
            generation,
            applied,
        }
    }

    #[test]
    fn modify_summaries() {
        use ListKind::{IpAllow, IpBlock};
        let cases = [
            (
                Change::Add,
                IpBlock,
                2,
                modified(2, 17, true),
                true,
                "added 2 entries to the blacklist (generation 17, applied by the dataplane)",
            ),
            (
                Change::Add,
                IpAllow,
                1,
                modified(1, 3, false),
                true,
                "added 1 entry to the whitelist (generation 3, not yet applied)",
            ),
            (
                Change::Add,
                IpAllow,
                3,
                modified(1, 4, true),
                true,
                "added 1 of 3 entries to the whitelist (generation 4, applied by the dataplane)",
            ),
            (
                Change::Add,
                IpBlock,
                1,
                modified(0, 4, true),
                true,
                "no change: the blacklist already had 1 entry (generation 4, applied by the dataplane)",
            ),
            (
                Change::Remove,
                IpBlock,
                2,
                modified(2, 18, false),
                false,
                "removed 2 entries from the blacklist (generation 18, not waiting for the dataplane)",
            ),
            (
                Change::Remove,
                IpAllow,
                2,
                modified(1, 5, true),
                true,
                "removed 1 of 2 entries from the whitelist (generation 5, applied by the dataplane)",
            ),
            (
                Change::Remove,
                IpAllow,
                2,
                modified(0, 5, true),
                true,
                "no change: the whitelist had none of 2 entries (generation 5, applied by the dataplane)",
            ),
        ];
        for (change, list, requested, response, waited, want) in cases {
            assert_eq!(
                modify_summary(change, list, requested, &response, waited),
                want
            );
        }
    }

    #[test]
    fn modify_json_shape() {
        assert_eq!(
            modify_json(&modified(2, 17, true)),
            json!({"changed": 2, "generation": 17, "applied": true})
        );
        assert_eq!(
            modify_json(&modified(0, u64::MAX, false)),
            json!({"changed": 0, "generation": u64::MAX, "applied": false})
        );
    }

    #[test]
    fn pending_reasons_and_warnings() {
        let disconnected = pb::StatusResponse::default();
        let behind = pb::StatusResponse {
            dataplane_connected: true,
            applied_generation: 16,
            ..Default::default()
        };
        assert_eq!(Pending::from_status(None), Pending::Unknown);
        assert_eq!(
            Pending::from_status(Some(&disconnected)),
            Pending::NotConnected
        );
        assert_eq!(
            Pending::from_status(Some(&behind)),
            Pending::Behind { applied: 16 }
        );
        assert_eq!(
            pending_warning(17, Pending::NotConnected),
            "warning: generation 17 is stored but not yet applied: dataplane not connected; \
             the dataplane applies it when it catches up"
        );
        assert!(
            pending_warning(17, Pending::Behind { applied: 16 })
                .contains("acknowledged only generation 16")
        );
        assert!(pending_warning(17, Pending::Unknown).contains("generation 17"));
    }

    fn decision(verdict: &str, filter: &str, reason: &str, packets: u64) -> pb::DecisionCount {
        pb::DecisionCount {
            verdict: verdict.into(),
            filter: filter.into(),
            reason: reason.into(),
            packets,
        }
    }

    fn status_full() -> pb::StatusResponse {
        pb::StatusResponse {
            controller_version: "0.1.0".into(),
            generation: 17,
            dataplane_connected: true,
            applied_generation: 17,
            dataplane_version: "0.1.0".into(),
            dataplane_queues: vec![0, 1],
            lists: vec![
                pb::ListSize {
                    list: pb::ListKind::IpAllow as i32,
                    entries: 2,
                },
                pb::ListSize {
                    list: pb::ListKind::IpBlock as i32,
                    entries: 1500,
                },
                // A list this medsctl does not know is ignored.
                pb::ListSize {
                    list: 99,
                    entries: 7,
                },
            ],
            dataplane_stats: Some(pb::DataplaneStats {
                packets_processed: 123_456,
                decisions: vec![
                    decision("accept", "ip", "WhiteList", 10),
                    decision("drop", "ip", "BlackList", 1234),
                    decision("accept", "empty", "default", 122_212),
                ],
                updates_rejected: 1,
                verdict_errors: 0,
                started_at_unix: 1_700_000_000,
            }),
            controller_uptime_seconds: 93_784,
        }
    }

    #[test]
    fn status_text_snapshot_with_stats() {
        let want = "\
controller version   0.1.0
controller uptime    1d 2h 3m 4s
generation           17
dataplane connected  yes
applied generation   17 (in sync)
dataplane version    0.1.0
dataplane queues     0, 1
whitelist entries    2
blacklist entries    1500
packets processed    123456
updates rejected     1
verdict errors       0

";
        let decisions = [
            " VERDICT | FILTER | REASON    | PACKETS",
            "---------+--------+-----------+---------",
            " accept  | ip     | WhiteList |      10",
            " drop    | ip     | BlackList |    1234",
            " accept  | empty  | default   |  122212",
        ];
        assert_eq!(
            status_text(&status_full()),
            format!("{want}{}", decisions.join("\n"))
        );
    }

    #[test]
    fn status_text_snapshot_without_dataplane() {
        let status = pb::StatusResponse {
            controller_version: "0.1.0".into(),
            generation: 5,
            applied_generation: 3,
            controller_uptime_seconds: 59,
            ..Default::default()
        };
        let want = "\
controller version   0.1.0
controller uptime    59s
generation           5
dataplane connected  no
applied generation   3 (behind by 2)
dataplane version    -
dataplane queues     -
whitelist entries    0
blacklist entries    0
dataplane stats      none reported";
        assert_eq!(status_text(&status), want);
    }

    #[test]
    fn status_text_from_an_empty_answer_never_panics() {
        let text = status_text(&pb::StatusResponse::default());
        assert!(text.contains("applied generation   none\n"), "{text}");
        assert!(!text.contains("VERDICT"), "{text}");
    }

    #[test]
    fn status_json_shape() {
        assert_eq!(
            status_json(&status_full()),
            json!({
                "controller_version": "0.1.0",
                "generation": 17,
                "dataplane_connected": true,
                "applied_generation": 17,
                "dataplane_version": "0.1.0",
                "dataplane_queues": [0, 1],
                "lists": {"whitelist": 2, "blacklist": 1500},
                "controller_uptime_seconds": 93_784,
                "dataplane_stats": {
                    "packets_processed": 123_456,
                    "updates_rejected": 1,
                    "verdict_errors": 0,
                    "decisions": [
                        {"verdict": "accept", "filter": "ip", "reason": "WhiteList", "packets": 10},
                        {"verdict": "drop", "filter": "ip", "reason": "BlackList", "packets": 1234},
                        {"verdict": "accept", "filter": "empty", "reason": "default", "packets": 122_212},
                    ],
                },
            })
        );
        assert_eq!(
            status_json(&pb::StatusResponse::default()),
            json!({
                "controller_version": "",
                "generation": 0,
                "dataplane_connected": false,
                "applied_generation": 0,
                "dataplane_version": null,
                "dataplane_queues": [],
                "lists": {"whitelist": 0, "blacklist": 0},
                "controller_uptime_seconds": 0,
                "dataplane_stats": null,
            })
        );
    }

    #[test]
    fn applied_generation_texts() {
        let cases = [
            (0, 0, "none"),
            (0, 4, "none (behind by 4)"),
            (3, 4, "3 (behind by 1)"),
            (4, 4, "4 (in sync)"),
            (5, 4, "5 (ahead of the store)"),
            (u64::MAX, u64::MAX, "18446744073709551615 (in sync)"),
            (0, u64::MAX, "none (behind by 18446744073709551615)"),
        ];
        for (applied, generation, want) in cases {
            assert_eq!(
                applied_text(applied, generation),
                want,
                "{applied}/{generation}"
            );
        }
    }

    #[test]
    fn durations() {
        let cases = [
            (0, "0s"),
            (1, "1s"),
            (59, "59s"),
            (60, "1m 0s"),
            (3_599, "59m 59s"),
            (3_600, "1h 0m 0s"),
            (86_399, "23h 59m 59s"),
            (86_400, "1d 0h 0m 0s"),
            (93_784, "1d 2h 3m 4s"),
            (u64::MAX, "213503982334601d 7h 0m 15s"),
        ];
        for (secs, want) in cases {
            assert_eq!(duration_text(secs), want, "{secs}");
        }
    }

    #[test]
    fn list_sizes_saturate_on_hostile_duplicates() {
        let status = pb::StatusResponse {
            lists: vec![
                pb::ListSize {
                    list: pb::ListKind::IpBlock as i32,
                    entries: u64::MAX,
                },
                pb::ListSize {
                    list: pb::ListKind::IpBlock as i32,
                    entries: 1,
                },
                pb::ListSize {
                    list: pb::ListKind::Unspecified as i32,
                    entries: 3,
                },
            ],
            ..Default::default()
        };
        assert_eq!(list_sizes(&status), (0, u64::MAX));
    }
}
