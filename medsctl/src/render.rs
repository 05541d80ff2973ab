//! Rendering: command results to the text an operator reads (tables via `tabled`) or to the
//! JSON documents scripts read (`--json`). Pure functions: no I/O, no clock (the current time is
//! a parameter), no controller.
//!
//! Text that may originate outside the controller (a feed URL, a feed's error message, which
//! can quote a remote server) is shown with control characters replaced, so it cannot drive
//! the operator's terminal.
//!
//! The JSON shapes are part of medsctl's interface (see the README); change them only in a
//! compatible way.

use meds_proto::{Cidr, EntryKind, ListKind};
use meds_proto::{pb, view};
use serde_json::{Value, json};
use tabled::builder::Builder;
use tabled::settings::object::Columns;
use tabled::settings::{Alignment, Padding, Style};

/// The name operators use for a list (also the `"list"` field of `list --json` and the keys
/// of `status --json`'s `"lists"`), as the controller's REST API names it.
pub fn list_name(list: ListKind) -> &'static str {
    list.public_name()
}

/// How a sentence names a list ("added 2 entries to the country blocklist").
pub fn list_title(list: ListKind) -> &'static str {
    match list {
        ListKind::IpAllow => "whitelist",
        ListKind::IpBlock => "blacklist",
        ListKind::FeedFireHol => "FireHOL feed",
        ListKind::FeedSpamhaus => "Spamhaus DROP feed",
        ListKind::FeedFeodo => "Feodo feed",
        ListKind::CountryBlock => "country blocklist",
        ListKind::AsnBlock => "ASN blocklist",
        ListKind::FeedAsnDrop => "Spamhaus ASN-DROP feed",
        ListKind::IpAsn => "IP-to-ASN table",
        ListKind::DomainAllow => "domain whitelist",
        ListKind::DomainBlock => "domain blacklist",
        ListKind::FeedStevenBlack => "StevenBlack hosts feed",
        ListKind::FeedSomeoneWhoCares => "someonewhocares hosts feed",
        ListKind::FeedSslblJa3 => "abuse.ch SSLBL JA3 feed",
        ListKind::Ja3Block => "JA3 blocklist",
        ListKind::Ja4Block => "JA4 blocklist",
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

/// Table for `list`: one row per entry, under a header naming what the list holds; prefixes
/// with their address family.
pub fn list_table(list: ListKind, entries: &[String]) -> String {
    if entries.is_empty() {
        return format!("the {} is empty", list_title(list));
    }
    let mut builder = Builder::default();
    match list.entry_kind() {
        EntryKind::Prefix => {
            builder.push_record(["ENTRY", "FAMILY"]);
            for entry in entries {
                builder.push_record([entry.as_str(), family(entry)]);
            }
        }
        kind => {
            builder.push_record([match kind {
                EntryKind::Country => "COUNTRY",
                EntryKind::Asn => "ASN",
                EntryKind::Domain => "DOMAIN",
                EntryKind::Ja3 => "JA3",
                EntryKind::Ja4 => "JA4",
                EntryKind::Prefix | EntryKind::IpAsn => "ENTRY",
            }]);
            for entry in entries {
                builder.push_record([entry.as_str()]);
            }
        }
    }
    grid(builder)
}

/// `{"list":"whitelist","entries":[...]}`; `"list"` is [`list_name`] (`domain_blacklist`,
/// `ja3`, …).
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
    let name = list_title(list);
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

/// The `status` view: a key/value table, then the decision counters when reported. The
/// dataplane's settings (fail modes first) follow its queues; a dataplane that did not report
/// them shows one `dataplane settings  unknown (not reported)` row, never assumed defaults.
pub fn status_text(status: &pb::StatusResponse, now_unix: u64) -> String {
    let sizes = list_sizes(status);
    let mut kv = Builder::default();
    let mut row = |key: &str, value: String| kv.push_record([key.to_string(), value]);
    let problems = health_problems(status);
    row(
        "health",
        if problems.is_empty() {
            "ok".to_string()
        } else {
            format!("degraded: {}", problems.join("; "))
        },
    );
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
    match &status.dataplane_settings {
        None => row("dataplane settings", "unknown (not reported)".to_string()),
        Some(s) => {
            for (key, value) in settings_rows(s) {
                row(key, value);
            }
        }
    }
    for (list, n) in sizes {
        row(&format!("{} entries", list_name(list)), n.to_string());
    }
    match &status.dataplane_stats {
        None => row("dataplane stats", "none reported".to_string()),
        Some(stats) => {
            row("packets processed", stats.packets_processed.to_string());
            row("updates rejected", stats.updates_rejected.to_string());
            row("verdict errors", stats.verdict_errors.to_string());
            row("receive errors", stats.recv_errors.to_string());
            let (full, undelivered) = queue_drops(stats);
            row(
                "kernel queue drops",
                format!("{full} (queue full), {undelivered} (socket buffer full)"),
            );
            let trusted: u64 = stats.trusted.iter().map(|t| t.count).sum();
            row(
                "flows offloaded",
                format!("{trusted} trusted, {} blocked", stats.flows_blocked),
            );
            row(
                "drop events",
                format!(
                    "{} sampled, {} not sampled",
                    stats.events_sampled, stats.events_suppressed
                ),
            );
            if stats.resident_memory_bytes > 0 {
                row(
                    "dataplane memory",
                    format!("{} (resident)", bytes_text(stats.resident_memory_bytes)),
                );
            }
        }
    }
    let mut out = key_values(kv);

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
    if !status.feeds.is_empty() {
        out.push_str("\n\n");
        out.push_str(&feeds_table(&status.feeds, now_unix));
    }
    out
}

/// Why `status` says "degraded", worst first, as the controller reported them (made
/// printable: a feed error may come from a remote server); empty when all is well.
pub fn health_problems(status: &pb::StatusResponse) -> Vec<String> {
    status.problems.iter().map(|p| printable(p)).collect()
}

/// Packets the kernel dropped for the dataplane's queues: (queue full, not delivered because
/// the socket's receive buffer was full).
fn queue_drops(stats: &pb::DataplaneStats) -> (u64, u64) {
    stats.queues.iter().fold((0u64, 0u64), |(full, user), q| {
        (
            full.saturating_add(q.queue_dropped),
            user.saturating_add(q.user_dropped),
        )
    })
}

/// `512 B`, `3.2 MiB`, `1.5 GiB`.
fn bytes_text(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for next in UNITS.iter().skip(1) {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

/// The `status --json` document (shape documented in the README).
pub fn status_json(status: &pb::StatusResponse) -> Value {
    let lists: serde_json::Map<String, Value> = list_sizes(status)
        .into_iter()
        .map(|(list, n)| (list_name(list).to_string(), Value::from(n)))
        .collect();
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
            let (queue_full, socket_full) = queue_drops(s);
            json!({
                "packets_processed": s.packets_processed,
                "updates_rejected": s.updates_rejected,
                "verdict_errors": s.verdict_errors,
                "recv_errors": s.recv_errors,
                "decisions": decisions,
                "queue_dropped": queue_full,
                "queue_user_dropped": socket_full,
                "flows_trusted": s.trusted.iter().map(|t| t.count).sum::<u64>(),
                "flows_blocked": s.flows_blocked,
                "events_sampled": s.events_sampled,
                "events_suppressed": s.events_suppressed,
                "resident_memory_bytes": s.resident_memory_bytes,
            })
        }
    };
    let dataplane_version = if status.dataplane_version.is_empty() {
        Value::Null
    } else {
        Value::from(status.dataplane_version.clone())
    };
    let problems = health_problems(status);
    json!({
        "health": { "ok": problems.is_empty(), "problems": problems },
        "controller_version": status.controller_version,
        "generation": status.generation,
        "dataplane_connected": status.dataplane_connected,
        "applied_generation": status.applied_generation,
        "dataplane_version": dataplane_version,
        "dataplane_queues": status.dataplane_queues,
        "lists": lists,
        "controller_uptime_seconds": status.controller_uptime_seconds,
        "dataplane_stats": stats,
        "dataplane_settings": settings_json(status.dataplane_settings.as_ref()),
        "feeds": status.feeds.iter().map(feed_json).collect::<Vec<_>>(),
    })
}

/// The `status` rows of the dataplane's settings, in display order.
fn settings_rows(s: &pb::DataplaneSettings) -> [(&'static str, String); 9] {
    let on_off = |b: bool| if b { "on" } else { "off" }.to_string();
    [
        (
            "queue full",
            if s.fail_open {
                "accept (fail-open)"
            } else {
                "drop (fail-closed)"
            }
            .to_string(),
        ),
        (
            "no dataplane bound",
            if s.queue_bypass {
                "accept (--queue-bypass)"
            } else {
                "drop (fail-closed)"
            }
            .to_string(),
        ),
        (
            "offload",
            if s.offload {
                format!(
                    "on (trusted {:#x}, blocked {:#x})",
                    s.mark_trusted, s.mark_blocked
                )
            } else {
                "off".to_string()
            },
        ),
        (
            "rate limiter",
            if s.rate_limiter {
                format!(
                    "{}/s, burst {}, IPv6 /{}, {} keys",
                    s.rate_limiter_rate,
                    s.rate_limiter_burst,
                    s.rate_limiter_ipv6_prefix,
                    s.rate_limiter_cache_size
                )
            } else {
                "off".to_string()
            },
        ),
        ("readers", s.readers.to_string()),
        ("queue max len", s.queue_max_len.to_string()),
        ("copy range", format!("{} bytes", s.copy_range)),
        ("recv batch", s.recv_batch.to_string()),
        ("gso", on_off(s.gso)),
    ]
}

/// `status --json`'s `"dataplane_settings"`: every DataplaneSettings field as it is (the same
/// object as the REST `/v1/status`), or `null` when the dataplane did not report them.
fn settings_json(settings: Option<&pb::DataplaneSettings>) -> Value {
    let Some(s) = settings else {
        return Value::Null;
    };
    json!({
        "fail_open": s.fail_open,
        "queue_bypass": s.queue_bypass,
        "offload": s.offload,
        "mark_trusted": s.mark_trusted,
        "mark_blocked": s.mark_blocked,
        "gso": s.gso,
        "recv_batch": s.recv_batch,
        "rate_limiter": s.rate_limiter,
        "rate_limiter_rate": s.rate_limiter_rate,
        "rate_limiter_burst": s.rate_limiter_burst,
        "rate_limiter_ipv6_prefix": s.rate_limiter_ipv6_prefix,
        "rate_limiter_cache_size": s.rate_limiter_cache_size,
        "readers": s.readers,
        "queue_max_len": s.queue_max_len,
        "copy_range": s.copy_range,
    })
}

/// Entry counts of every list, in chain order; lists the controller did not report count as 0
/// and lists this medsctl does not know are ignored.
fn list_sizes(status: &pb::StatusResponse) -> [(ListKind, u64); ListKind::ALL.len()] {
    let mut sizes = ListKind::ALL.map(|k| (k, 0u64));
    for size in &status.lists {
        if let Some(kind) = ListKind::from_wire(size.list)
            && let Some(slot) = sizes.iter_mut().find(|(k, _)| *k == kind)
        {
            slot.1 = slot.1.saturating_add(size.entries);
        }
    }
    sizes
}

/// The `check IP` view: the lists and feeds containing the address (most specific entry of
/// each), then what the IP-to-ASN table says about it.
pub fn check_ip_text(report: &pb::CheckIpResponse) -> String {
    let mut out = if report.lists.is_empty() {
        format!("{} is on no list or feed", report.ip)
    } else {
        let mut builder = Builder::default();
        builder.push_record(["LIST", "ENTRY"]);
        for m in &report.lists {
            builder.push_record([m.list.as_str(), m.entry.as_str()]);
        }
        grid(builder)
    };
    let mut kv = Builder::default();
    let mut row = |key: &str, value: String| kv.push_record([key.to_string(), value]);
    row(
        "asn",
        if report.asn == 0 {
            "-".to_string()
        } else {
            format!("AS{}", report.asn)
        },
    );
    row("country", or_dash(&report.country));
    row("network", or_dash(&report.network));
    row(
        "country blocked",
        yes_no(report.country_blocked).to_string(),
    );
    row(
        "asn lists",
        if report.asn_lists.is_empty() {
            "-".to_string()
        } else {
            report.asn_lists.join(", ")
        },
    );
    out.push_str("\n\n");
    out.push_str(&key_values(kv));
    out
}

/// The `check IP --json` document: the CheckIpResponse fields; `asn`, `country` and `network`
/// are `null` when the IP-to-ASN table has no row for the address.
pub fn check_ip_json(report: &pb::CheckIpResponse) -> Value {
    let lists: Vec<Value> = report
        .lists
        .iter()
        .map(|m| json!({ "list": m.list, "entry": m.entry }))
        .collect();
    json!({
        "ip": report.ip,
        "lists": lists,
        "asn": (report.asn != 0).then_some(report.asn),
        "country": non_empty(&report.country),
        "network": non_empty(&report.network),
        "country_blocked": report.country_blocked,
        "asn_lists": report.asn_lists,
    })
}

/// Longest feed error shown in the `feeds list` table (the JSON has all of it).
const ERROR_CELL_CHARS: usize = 48;

/// The `feeds list` / `feeds update` table. `now_unix` is the current time, for relative times.
pub fn feeds_table(feeds: &[pb::FeedStatus], now_unix: u64) -> String {
    if feeds.is_empty() {
        return "no feeds".to_string();
    }
    let mut builder = Builder::default();
    builder.push_record([
        "NAME",
        "LIST",
        "ENABLED",
        "ENTRIES",
        "LAST SUCCESS",
        "LAST ERROR",
        "NEXT UPDATE",
    ]);
    for f in feeds {
        let error = if f.last_error.is_empty() {
            "-".to_string()
        } else {
            clip(&printable(&f.last_error), ERROR_CELL_CHARS)
        };
        let next = if !f.enabled {
            "-".to_string()
        } else if f.next_update_unix == 0 {
            "not scheduled".to_string()
        } else if f.next_update_unix <= now_unix {
            "due now".to_string()
        } else {
            relative_time(f.next_update_unix, now_unix)
        };
        builder.push_record([
            printable(&f.name),
            printable(&f.list),
            yes_no(f.enabled).to_string(),
            f.entries.to_string(),
            relative_time(f.last_success_unix, now_unix),
            error,
            next,
        ]);
    }
    let mut table = builder.build();
    table
        .with(Style::psql())
        .modify(Columns::one(3), Alignment::right());
    trim_lines(&table.to_string())
}

/// `{"feeds":[...]}`, each as [`feed_json`].
pub fn feeds_json(feeds: &[pb::FeedStatus]) -> Value {
    json!({ "feeds": feeds.iter().map(feed_json).collect::<Vec<_>>() })
}

/// One feed: the FeedStatus fields (times as Unix seconds, `null` for never) plus the same
/// times in ISO 8601 UTC (`last_success`, `last_attempt`, `next_update`); `last_error` is
/// `null` when the last attempt succeeded.
pub fn feed_json(f: &pb::FeedStatus) -> Value {
    let unix = |t: u64| (t != 0).then_some(t);
    let iso = |t: u64| (t != 0).then(|| view::rfc3339(t));
    json!({
        "name": f.name,
        "list": f.list,
        "enabled": f.enabled,
        "url": f.url,
        "entries": f.entries,
        "last_success_unix": unix(f.last_success_unix),
        "last_success": iso(f.last_success_unix),
        "last_attempt_unix": unix(f.last_attempt_unix),
        "last_attempt": iso(f.last_attempt_unix),
        "next_update_unix": unix(f.next_update_unix),
        "next_update": iso(f.next_update_unix),
        "last_error": non_empty(&f.last_error),
        "failures": f.failures,
        "rejected_lines": f.rejected_lines,
    })
}

/// What `feeds enable|disable|set-url|reset-url` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedChange {
    Enable,
    Disable,
    SetUrl,
    ResetUrl,
}

/// One line confirming a feed configuration change, from the controller's answer.
pub fn feed_summary(change: FeedChange, f: &pb::FeedStatus, now_unix: u64) -> String {
    let name = printable(&f.name);
    let state = format!(
        "{} list, {}, last success {}",
        printable(&f.list),
        entries(f.entries),
        relative_time(f.last_success_unix, now_unix)
    );
    match change {
        FeedChange::Enable => format!("enabled feed {name} ({state})"),
        FeedChange::Disable => format!("disabled feed {name} ({state})"),
        FeedChange::SetUrl => format!("feed {name} now fetches {}", printable(&f.url)),
        FeedChange::ResetUrl => {
            format!(
                "feed {name} fetches its default URL again: {}",
                printable(&f.url)
            )
        }
    }
}

/// The warning printed (on stderr) for a feed whose update attempt failed.
pub fn feed_failure_warning(f: &pb::FeedStatus) -> String {
    format!(
        "feed {} was not updated: {}; its last good copy ({}) stays in force",
        printable(&f.name),
        printable(&f.last_error),
        entries(f.entries)
    )
}

/// `3h 2m ago`, `in 59m 30s`, `never` (0), `now`; two units at most.
pub fn relative_time(t: u64, now_unix: u64) -> String {
    if t == 0 {
        return "never".to_string();
    }
    match t.cmp(&now_unix) {
        std::cmp::Ordering::Less => format!("{} ago", short_duration(now_unix - t)),
        std::cmp::Ordering::Equal => "now".to_string(),
        std::cmp::Ordering::Greater => format!("in {}", short_duration(t - now_unix)),
    }
}

/// The two largest non-zero units: `2d 3h`, `3h 0m`, `5m 7s`, `42s`.
fn short_duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// Control characters (including escape sequences' ESC) become `?`.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// At most `max` characters, `…` marking a cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn non_empty(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::from(s)
    }
}

/// A borderless two-column key/value table without trailing spaces.
fn key_values(kv: Builder) -> String {
    let mut table = kv.build();
    table
        .with(Style::empty())
        .modify(Columns::first(), Padding::new(0, 2, 0, 0))
        .modify(Columns::last(), Padding::zero());
    trim_lines(&table.to_string())
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

/// `explain` as text: one row per step in chain order, then the decision, the generation and
/// the offload note. A matching step shows `MATCH` and its verdict.
pub fn explain_text(ip: &str, r: &pb::ExplainResponse) -> String {
    let mut builder = Builder::default();
    builder.push_record(["#", "FILTER", "LIST", "OUTCOME", "DETAIL"]);
    for (i, step) in r.steps.iter().enumerate() {
        let outcome = match pb::ExplainOutcome::try_from(step.outcome) {
            Ok(pb::ExplainOutcome::Match) if !step.verdict.is_empty() => {
                format!("MATCH → {} ({})", step.verdict, printable(&step.reason))
            }
            Ok(pb::ExplainOutcome::Match) => "MATCH".to_string(),
            _ => view::outcome_word(step.outcome).replace('_', " "),
        };
        builder.push_record([
            (i + 1).to_string(),
            printable(&step.filter),
            printable(&step.list),
            outcome,
            clip(&printable(&step.detail), 80),
        ]);
    }
    let mut out = grid(builder);
    let mut kv = Builder::default();
    kv.push_record([
        "decision".to_string(),
        format!(
            "{} ({}/{}) for {ip}",
            printable(&r.verdict),
            printable(&r.filter),
            printable(&r.reason)
        ),
    ]);
    kv.push_record(["generation".to_string(), r.generation.to_string()]);
    kv.push_record(["offload".to_string(), or_dash(&printable(&r.offload))]);
    out.push_str("\n\n");
    out.push_str(&key_values(kv));
    out
}

/// The lines `events` prints for one batch: a suppressed note first when some were missed,
/// then one line per event (text, or the REST NDJSON object with `json`).
pub fn event_lines(batch: &pb::EventBatch, json: bool) -> Vec<String> {
    let mut lines = Vec::with_capacity(batch.events.len() + 1);
    if batch.suppressed > 0 {
        lines.push(if json {
            json!({ "suppressed": batch.suppressed }).to_string()
        } else {
            format!(
                "({} drop decisions not shown: not sampled, or missed)",
                batch.suppressed
            )
        });
    }
    for e in &batch.events {
        lines.push(if json {
            view::event_json(e).to_string()
        } else {
            event_text(e)
        });
    }
    lines
}

/// `2026-11-29T02:30:00.123Z  203.0.113.7:40000 → :443 tcp  ip/BlackList  sni=… dns=… ja3=… ja4=…`
pub fn event_text(e: &pb::DropEvent) -> String {
    let mut line = format!(
        "{}  {} → :{} {}  {}/{}",
        view::rfc3339_ms(e.time_unix_ms),
        endpoint(&e.source, e.source_port),
        e.destination_port,
        view::protocol_name(e.protocol).map_or_else(|| e.protocol.to_string(), str::to_string),
        printable(&e.filter),
        printable(&e.reason),
    );
    for (key, value) in [
        ("sni", &e.sni),
        ("dns", &e.dns),
        ("ja3", &e.ja3),
        ("ja4", &e.ja4),
    ] {
        if !value.is_empty() {
            line.push_str(&format!("  {key}={}", printable(value)));
        }
    }
    line
}

/// `203.0.113.7:40000`, `[2001:db8::1]:40000`, `?:40000` (not an address).
fn endpoint(bytes: &[u8], port: u32) -> String {
    match view::address(bytes) {
        Some(std::net::IpAddr::V6(a)) => format!("[{a}]:{port}"),
        Some(a) => format!("{a}:{port}"),
        None => format!("?:{port}"),
    }
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
    fn country_and_asn_tables() {
        let want = [" COUNTRY", "---------", " de", " fr"];
        assert_eq!(
            list_table(ListKind::CountryBlock, &entries_of(&["de", "fr"])),
            want.join("\n")
        );
        let want = [" ASN", "------------", " 64496", " 4294967294"];
        assert_eq!(
            list_table(ListKind::AsnBlock, &entries_of(&["64496", "4294967294"])),
            want.join("\n")
        );
    }

    const JA3_A: &str = "0cc1e84568e471aa1d62ba4ee3b8b6f8";
    const JA3_B: &str = "e7d705a3286e19ea42f587b344ee6865";
    const JA4_A: &str = "t13d1516h2_8daaf6152771_02713d6af862";
    const JA4_B: &str = "t13d1517h2_8daaf6152771_b1ff8ab2d16f";

    #[test]
    fn domain_and_fingerprint_tables() {
        let domains = entries_of(&["bad.com", "tracker.example", "xn--bcher-kva.example"]);
        let want = [
            " DOMAIN",
            "-----------------------",
            " bad.com",
            " tracker.example",
            " xn--bcher-kva.example",
        ];
        for list in [ListKind::DomainAllow, ListKind::DomainBlock] {
            assert_eq!(list_table(list, &domains), want.join("\n"), "{list}");
        }
        let want = [
            " JA3",
            "----------------------------------",
            " 0cc1e84568e471aa1d62ba4ee3b8b6f8",
            " e7d705a3286e19ea42f587b344ee6865",
        ];
        assert_eq!(
            list_table(ListKind::Ja3Block, &entries_of(&[JA3_A, JA3_B])),
            want.join("\n")
        );
        let want = [
            " JA4",
            "--------------------------------------",
            " t13d1516h2_8daaf6152771_02713d6af862",
            " t13d1517h2_8daaf6152771_b1ff8ab2d16f",
        ];
        assert_eq!(
            list_table(ListKind::Ja4Block, &entries_of(&[JA4_A, JA4_B])),
            want.join("\n")
        );
        let empty = [
            (ListKind::DomainAllow, "the domain whitelist is empty"),
            (ListKind::DomainBlock, "the domain blacklist is empty"),
            (ListKind::Ja3Block, "the JA3 blocklist is empty"),
            (ListKind::Ja4Block, "the JA4 blocklist is empty"),
            (
                ListKind::FeedStevenBlack,
                "the StevenBlack hosts feed is empty",
            ),
            (
                ListKind::FeedSslblJa3,
                "the abuse.ch SSLBL JA3 feed is empty",
            ),
        ];
        for (list, want) in empty {
            assert_eq!(list_table(list, &[]), want, "{list}");
        }
    }

    #[test]
    fn domain_and_fingerprint_json() {
        let cases = [
            (
                ListKind::DomainAllow,
                &["good.example"][..],
                "domain_whitelist",
            ),
            (
                ListKind::DomainBlock,
                &["bad.com", "xn--bcher-kva.example"][..],
                "domain_blacklist",
            ),
            (ListKind::Ja3Block, &[JA3_A, JA3_B][..], "ja3"),
            (ListKind::Ja4Block, &[JA4_A][..], "ja4"),
            (
                ListKind::FeedStevenBlack,
                &["ads.example"][..],
                "stevenblack",
            ),
            (ListKind::FeedSomeoneWhoCares, &[][..], "someonewhocares"),
            (ListKind::FeedSslblJa3, &[JA3_B][..], "sslbl_ja3"),
        ];
        for (list, entries, name) in cases {
            assert_eq!(
                list_json(list, &entries_of(entries)),
                json!({"list": name, "entries": entries}),
                "{list}"
            );
        }
    }

    #[test]
    fn list_table_edges() {
        assert_eq!(list_table(ListKind::IpAllow, &[]), "the whitelist is empty");
        assert_eq!(list_table(ListKind::IpBlock, &[]), "the blacklist is empty");
        assert_eq!(
            list_table(ListKind::CountryBlock, &[]),
            "the country blocklist is empty"
        );
        assert_eq!(
            list_table(ListKind::AsnBlock, &[]),
            "the ASN blocklist is empty"
        );
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
        assert_eq!(
            list_json(ListKind::CountryBlock, &entries_of(&["de", "fr"])),
            json!({"list": "countries", "entries": ["de", "fr"]})
        );
        assert_eq!(
            list_json(ListKind::AsnBlock, &entries_of(&["64496"])),
            json!({"list": "asns", "entries": ["64496"]})
        );
    }

    #[test]
    fn every_list_has_a_distinct_name_and_title() {
        let names: std::collections::BTreeSet<&str> =
            ListKind::ALL.iter().map(|k| list_name(*k)).collect();
        let titles: std::collections::BTreeSet<&str> =
            ListKind::ALL.iter().map(|k| list_title(*k)).collect();
        assert_eq!(names.len(), ListKind::ALL.len());
        assert_eq!(titles.len(), ListKind::ALL.len());
        assert_eq!(
            ListKind::ALL.map(list_name),
            [
                "whitelist",
                "blacklist",
                "firehol",
                "spamhaus",
                "feodo",
                "countries",
                "asns",
                "spamhaus_asndrop",
                "iplocate",
                "domain_whitelist",
                "domain_blacklist",
                "stevenblack",
                "someonewhocares",
                "sslbl_ja3",
                "ja3",
                "ja4"
            ]
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

    #[test]
    fn check_of_domains_and_fingerprints() {
        // Domains match through their parents, most specific first; fingerprints exactly.
        let results = vec![
            CheckResult {
                query: "WWW.Ads.Bad.com.".into(),
                found: true,
                matches: entries_of(&["ads.bad.com", "bad.com"]),
            },
            CheckResult {
                query: "badge.com".into(),
                found: false,
                matches: vec![],
            },
            CheckResult {
                query: JA4_A.to_uppercase(),
                found: true,
                matches: entries_of(&[JA4_A]),
            },
        ];
        let want = [
            " QUERY                                | FOUND | MATCHES",
            "--------------------------------------+-------+--------------------------------------",
            " WWW.Ads.Bad.com.                     | yes   | ads.bad.com, bad.com",
            " badge.com                            | no    | -",
            " T13D1516H2_8DAAF6152771_02713D6AF862 | yes   | t13d1516h2_8daaf6152771_02713d6af862",
        ];
        assert_eq!(check_table(&results), want.join("\n"));
        assert_eq!(
            check_json(&results),
            json!({"results": [
                {"query": "WWW.Ads.Bad.com.", "found": true, "matches": ["ads.bad.com", "bad.com"]},
                {"query": "badge.com", "found": false, "matches": []},
                {"query": "T13D1516H2_8DAAF6152771_02713D6AF862", "found": true, "matches": [JA4_A]},
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
        use ListKind::{AsnBlock, CountryBlock, IpAllow, IpBlock};
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
            (
                Change::Add,
                CountryBlock,
                2,
                modified(2, 6, true),
                true,
                "added 2 entries to the country blocklist (generation 6, applied by the dataplane)",
            ),
            (
                Change::Remove,
                AsnBlock,
                1,
                modified(0, 6, false),
                false,
                "no change: the ASN blocklist had none of 1 entry (generation 6, not waiting for the dataplane)",
            ),
            (
                Change::Add,
                ListKind::DomainBlock,
                2,
                modified(2, 7, true),
                true,
                "added 2 entries to the domain blacklist (generation 7, applied by the dataplane)",
            ),
            (
                Change::Remove,
                ListKind::DomainAllow,
                1,
                modified(1, 8, false),
                true,
                "removed 1 entry from the domain whitelist (generation 8, not yet applied)",
            ),
            (
                Change::Add,
                ListKind::Ja3Block,
                1,
                modified(0, 8, true),
                true,
                "no change: the JA3 blocklist already had 1 entry (generation 8, applied by the dataplane)",
            ),
            (
                Change::Add,
                ListKind::Ja4Block,
                3,
                modified(2, 9, false),
                false,
                "added 2 of 3 entries to the JA4 blocklist (generation 9, not waiting for the dataplane)",
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

    fn size(list: pb::ListKind, entries: u64) -> pb::ListSize {
        pb::ListSize {
            list: list as i32,
            entries,
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
                size(pb::ListKind::IpAllow, 2),
                size(pb::ListKind::IpBlock, 1500),
                size(pb::ListKind::CountryBlock, 3),
                size(pb::ListKind::IpAsn, 600_000),
                size(pb::ListKind::DomainBlock, 12),
                size(pb::ListKind::FeedStevenblack, 85_000),
                size(pb::ListKind::FeedSslblJa3, 120),
                size(pb::ListKind::Ja4Block, 1),
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
                recv_errors: 3,
                trusted: vec![
                    pb::NamedCount {
                        name: "default".into(),
                        count: 900,
                    },
                    pb::NamedCount {
                        name: "WhiteList".into(),
                        count: 4,
                    },
                ],
                flows_blocked: 12,
                queues: vec![
                    pb::QueueStats {
                        queue: 0,
                        queue_dropped: 5,
                        ..Default::default()
                    },
                    pb::QueueStats {
                        queue: 1,
                        queue_dropped: 2,
                        user_dropped: 1,
                        ..Default::default()
                    },
                ],
                resident_memory_bytes: 48 * 1024 * 1024 + 512 * 1024,
                events_sampled: 40,
                events_suppressed: 1194,
                ..pb::DataplaneStats::default()
            }),
            controller_uptime_seconds: 93_784,
            dataplane_settings: Some(settings_default()),
            feeds: vec![],
            problems: vec![],
        }
    }

    fn feed(name: &str, list: &str, last_error: &str) -> pb::FeedStatus {
        pb::FeedStatus {
            name: name.into(),
            list: list.into(),
            enabled: true,
            url: format!("https://feeds.example/{name}"),
            entries: 4500,
            last_success_unix: NOW - 3600,
            last_attempt_unix: NOW - 60,
            next_update_unix: NOW + 1800,
            last_error: last_error.into(),
            failures: u64::from(!last_error.is_empty()),
            rejected_lines: 0,
        }
    }

    /// The dataplane's defaults: fail-closed on a full queue, --queue-bypass, offload on,
    /// no rate limiter.
    fn settings_default() -> pb::DataplaneSettings {
        pb::DataplaneSettings {
            fail_open: false,
            queue_bypass: true,
            offload: true,
            mark_trusted: 0x10_0000,
            mark_blocked: 0x20_0000,
            gso: false,
            recv_batch: 64,
            rate_limiter: false,
            rate_limiter_rate: 0,
            rate_limiter_burst: 0,
            rate_limiter_ipv6_prefix: 0,
            rate_limiter_cache_size: 0,
            readers: 2,
            queue_max_len: 4096,
            copy_range: 256,
        }
    }

    #[test]
    fn status_text_snapshot_with_stats() {
        let want = "\
health                    ok
controller version        0.1.0
controller uptime         1d 2h 3m 4s
generation                17
dataplane connected       yes
applied generation        17 (in sync)
dataplane version         0.1.0
dataplane queues          0, 1
queue full                drop (fail-closed)
no dataplane bound        accept (--queue-bypass)
offload                   on (trusted 0x100000, blocked 0x200000)
rate limiter              off
readers                   2
queue max len             4096
copy range                256 bytes
recv batch                64
gso                       off
whitelist entries         2
blacklist entries         1500
firehol entries           0
spamhaus entries          0
feodo entries             0
countries entries         3
asns entries              0
spamhaus_asndrop entries  0
iplocate entries          600000
domain_whitelist entries  0
domain_blacklist entries  12
stevenblack entries       85000
someonewhocares entries   0
sslbl_ja3 entries         120
ja3 entries               0
ja4 entries               1
packets processed         123456
updates rejected          1
verdict errors            0
receive errors            3
kernel queue drops        7 (queue full), 1 (socket buffer full)
flows offloaded           904 trusted, 12 blocked
drop events               40 sampled, 1194 not sampled
dataplane memory          48.5 MiB (resident)

";
        let decisions = [
            " VERDICT | FILTER | REASON    | PACKETS",
            "---------+--------+-----------+---------",
            " accept  | ip     | WhiteList |      10",
            " drop    | ip     | BlackList |    1234",
            " accept  | empty  | default   |  122212",
        ];
        assert_eq!(
            status_text(&status_full(), NOW),
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
            problems: vec!["no dataplane connected".into()],
            ..Default::default()
        };
        let want = "\
health                    degraded: no dataplane connected
controller version        0.1.0
controller uptime         59s
generation                5
dataplane connected       no
applied generation        3 (behind by 2)
dataplane version         -
dataplane queues          -
dataplane settings        unknown (not reported)
whitelist entries         0
blacklist entries         0
firehol entries           0
spamhaus entries          0
feodo entries             0
countries entries         0
asns entries              0
spamhaus_asndrop entries  0
iplocate entries          0
domain_whitelist entries  0
domain_blacklist entries  0
stevenblack entries       0
someonewhocares entries   0
sslbl_ja3 entries         0
ja3 entries               0
ja4 entries               0
dataplane stats           none reported";
        assert_eq!(status_text(&status, NOW), want);
    }

    #[test]
    fn status_text_settings_rows_for_the_other_modes() {
        // Fail-open, fail-closed without a dataplane, no offload, the rate limiter on.
        let status = pb::StatusResponse {
            dataplane_settings: Some(pb::DataplaneSettings {
                fail_open: true,
                queue_bypass: false,
                offload: false,
                gso: true,
                recv_batch: 1,
                rate_limiter: true,
                rate_limiter_rate: 3000,
                rate_limiter_burst: 1500,
                rate_limiter_ipv6_prefix: 64,
                rate_limiter_cache_size: 100_000,
                readers: 1,
                queue_max_len: 1024,
                copy_range: 65535,
                ..settings_default()
            }),
            ..Default::default()
        };
        let text = status_text(&status, NOW);
        let rows = [
            "queue full                accept (fail-open)",
            "no dataplane bound        drop (fail-closed)",
            "offload                   off",
            "rate limiter              3000/s, burst 1500, IPv6 /64, 100000 keys",
            "readers                   1",
            "queue max len             1024",
            "copy range                65535 bytes",
            "recv batch                1",
            "gso                       on",
        ];
        assert!(text.contains(&format!("\n{}\n", rows.join("\n"))), "{text}");
        assert!(!text.contains("dataplane settings"), "{text}");
    }

    #[test]
    fn status_health_names_every_problem_and_feeds_are_listed() {
        let mut status = status_full();
        assert!(health_problems(&status).is_empty());
        status.problems = vec![
            "dataplane applied generation 15 of 17".into(),
            "feed feodo failing: HTTP 503\x1b[2J".into(),
        ];
        status.feeds = vec![
            feed("firehol_level1", "firehol", ""),
            feed(
                "feodo",
                "feodo",
                "HTTP 503 from https://feeds.example/feodo",
            ),
            pb::FeedStatus {
                enabled: false,
                ..feed(
                    "spamhaus_drop",
                    "spamhaus",
                    "disabled feeds are not a problem",
                )
            },
        ];
        let text = status_text(&status, NOW);
        assert!(
            text.starts_with(
                "health                    degraded: dataplane applied generation 15 of 17; \
                 feed feodo failing: HTTP 503?[2J\n"
            ),
            "{text}"
        );
        let table = feeds_table(&status.feeds, NOW);
        assert!(text.ends_with(&format!("\n\n{table}")), "{text}");
        assert!(table.contains("firehol_level1"), "{table}");
        let json = status_json(&status);
        assert_eq!(json["health"]["ok"], false);
        assert_eq!(
            json["health"]["problems"][0],
            "dataplane applied generation 15 of 17"
        );
        assert_eq!(json["feeds"][1]["name"], "feodo");
        assert_eq!(json["feeds"][1]["failures"], 1);
    }

    #[test]
    fn bytes_text_units() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (1024 * 1024 - 1, "1024.0 KiB"),
            (1024 * 1024, "1.0 MiB"),
            (3 * 1024 * 1024 * 1024, "3.0 GiB"),
            (u64::MAX, "16777216.0 TiB"),
        ];
        for (n, want) in cases {
            assert_eq!(bytes_text(n), want, "{n}");
        }
    }

    #[test]
    fn status_text_from_an_empty_answer_never_panics() {
        let text = status_text(&pb::StatusResponse::default(), NOW);
        assert!(text.contains("applied generation        none\n"), "{text}");
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
                "lists": {
                    "whitelist": 2,
                    "blacklist": 1500,
                    "firehol": 0,
                    "spamhaus": 0,
                    "feodo": 0,
                    "countries": 3,
                    "asns": 0,
                    "spamhaus_asndrop": 0,
                    "iplocate": 600_000,
                    "domain_whitelist": 0,
                    "domain_blacklist": 12,
                    "stevenblack": 85_000,
                    "someonewhocares": 0,
                    "sslbl_ja3": 120,
                    "ja3": 0,
                    "ja4": 1,
                },
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
                    "recv_errors": 3,
                    "queue_dropped": 7,
                    "queue_user_dropped": 1,
                    "flows_trusted": 904,
                    "flows_blocked": 12,
                    "events_sampled": 40,
                    "events_suppressed": 1194,
                    "resident_memory_bytes": 48 * 1024 * 1024 + 512 * 1024,
                },
                "dataplane_settings": {
                    "fail_open": false,
                    "queue_bypass": true,
                    "offload": true,
                    "mark_trusted": 0x10_0000,
                    "mark_blocked": 0x20_0000,
                    "gso": false,
                    "recv_batch": 64,
                    "rate_limiter": false,
                    "rate_limiter_rate": 0,
                    "rate_limiter_burst": 0,
                    "rate_limiter_ipv6_prefix": 0,
                    "rate_limiter_cache_size": 0,
                    "readers": 2,
                    "queue_max_len": 4096,
                    "copy_range": 256,
                },
                "feeds": [],
                "health": {"ok": true, "problems": []},
            })
        );
        assert_eq!(
            status_json(&pb::StatusResponse::default()),
            json!({
                "health": {"ok": true, "problems": []},
                "feeds": [],
                "controller_version": "",
                "generation": 0,
                "dataplane_connected": false,
                "applied_generation": 0,
                "dataplane_version": null,
                "dataplane_queues": [],
                "lists": {
                    "whitelist": 0,
                    "blacklist": 0,
                    "firehol": 0,
                    "spamhaus": 0,
                    "feodo": 0,
                    "countries": 0,
                    "asns": 0,
                    "spamhaus_asndrop": 0,
                    "iplocate": 0,
                    "domain_whitelist": 0,
                    "domain_blacklist": 0,
                    "stevenblack": 0,
                    "someonewhocares": 0,
                    "sslbl_ja3": 0,
                    "ja3": 0,
                    "ja4": 0,
                },
                "controller_uptime_seconds": 0,
                "dataplane_stats": null,
                "dataplane_settings": null,
            })
        );
    }

    fn report_full() -> pb::CheckIpResponse {
        pb::CheckIpResponse {
            ip: "203.0.113.7".into(),
            lists: vec![
                pb::ListMatch {
                    list: "blacklist".into(),
                    entry: "203.0.113.7/32".into(),
                },
                pb::ListMatch {
                    list: "firehol".into(),
                    entry: "203.0.113.0/24".into(),
                },
            ],
            asn: 64496,
            country: "fr".into(),
            network: "203.0.113.0/24".into(),
            country_blocked: true,
            asn_lists: vec!["asns".into(), "spamhaus_asndrop".into()],
        }
    }

    #[test]
    fn check_ip_text_snapshots() {
        let want = [
            " LIST      | ENTRY",
            "-----------+----------------",
            " blacklist | 203.0.113.7/32",
            " firehol   | 203.0.113.0/24",
            "",
            "asn              AS64496",
            "country          fr",
            "network          203.0.113.0/24",
            "country blocked  yes",
            "asn lists        asns, spamhaus_asndrop",
        ];
        assert_eq!(check_ip_text(&report_full()), want.join("\n"));
        let nothing = pb::CheckIpResponse {
            ip: "192.0.2.1".into(),
            ..Default::default()
        };
        let want = [
            "192.0.2.1 is on no list or feed",
            "",
            "asn              -",
            "country          -",
            "network          -",
            "country blocked  no",
            "asn lists        -",
        ];
        assert_eq!(check_ip_text(&nothing), want.join("\n"));
    }

    #[test]
    fn check_ip_json_shape() {
        assert_eq!(
            check_ip_json(&report_full()),
            json!({
                "ip": "203.0.113.7",
                "lists": [
                    {"list": "blacklist", "entry": "203.0.113.7/32"},
                    {"list": "firehol", "entry": "203.0.113.0/24"},
                ],
                "asn": 64496,
                "country": "fr",
                "network": "203.0.113.0/24",
                "country_blocked": true,
                "asn_lists": ["asns", "spamhaus_asndrop"],
            })
        );
        assert_eq!(
            check_ip_json(&pb::CheckIpResponse {
                ip: "2001:db8::1".into(),
                ..Default::default()
            }),
            json!({
                "ip": "2001:db8::1",
                "lists": [],
                "asn": null,
                "country": null,
                "network": null,
                "country_blocked": false,
                "asn_lists": [],
            })
        );
    }

    const NOW: u64 = 1_700_000_000;

    fn feeds() -> Vec<pb::FeedStatus> {
        vec![
            pb::FeedStatus {
                name: "firehol_level1".into(),
                list: "firehol".into(),
                enabled: true,
                url: "https://iplists.firehol.org/files/firehol_level1.netset".into(),
                entries: 4521,
                last_success_unix: NOW - 3750,
                last_attempt_unix: NOW - 3750,
                next_update_unix: NOW + 14_370,
                last_error: String::new(),
                failures: 0,
                rejected_lines: 2,
            },
            pb::FeedStatus {
                name: "spamhaus_drop".into(),
                list: "spamhaus".into(),
                enabled: true,
                url: "https://www.spamhaus.org/drop/drop.txt".into(),
                entries: 1234,
                last_success_unix: NOW - 90_000,
                last_attempt_unix: NOW - 60,
                next_update_unix: NOW - 5,
                last_error:
                    "HTTP 503 Service Unavailable from https://www.spamhaus.org/drop/drop.txt"
                        .into(),
                failures: 3,
                rejected_lines: 0,
            },
            pb::FeedStatus {
                name: "feodo".into(),
                list: "feodo".into(),
                enabled: false,
                url: "file:///srv/mirror/ipblocklist.txt".into(),
                entries: 0,
                last_success_unix: 0,
                last_attempt_unix: 0,
                next_update_unix: NOW + 60,
                last_error: String::new(),
                failures: 0,
                rejected_lines: 0,
            },
            pb::FeedStatus {
                name: "iplocate_v4".into(),
                list: "iplocate".into(),
                enabled: true,
                url: "https://example.invalid/ip-to-asn.zip".into(),
                entries: 600_000,
                last_success_unix: NOW - 30,
                last_attempt_unix: NOW,
                next_update_unix: 0,
                last_error: "bad\u{1b}[31mred\nline".into(),
                failures: 1,
                rejected_lines: 17,
            },
        ]
    }

    #[test]
    fn feeds_table_snapshot() {
        let want = [
            " NAME           | LIST     | ENABLED | ENTRIES | LAST SUCCESS | LAST ERROR                                       | NEXT UPDATE",
            "----------------+----------+---------+---------+--------------+--------------------------------------------------+---------------",
            " firehol_level1 | firehol  | yes     |    4521 | 1h 2m ago    | -                                                | in 3h 59m",
            " spamhaus_drop  | spamhaus | yes     |    1234 | 1d 1h ago    | HTTP 503 Service Unavailable from https://www.s… | due now",
            " feodo          | feodo    | no      |       0 | never        | -                                                | -",
            " iplocate_v4    | iplocate | yes     |  600000 | 30s ago      | bad?[31mred?line                                 | not scheduled",
        ];
        assert_eq!(feeds_table(&feeds(), NOW), want.join("\n"));
        assert_eq!(feeds_table(&[], NOW), "no feeds");
    }

    #[test]
    fn domain_and_fingerprint_feeds_are_shown_like_the_others() {
        let feed = |name: &str, entries: u64| pb::FeedStatus {
            name: name.into(),
            list: name.into(),
            enabled: true,
            url: format!("https://feeds.example.invalid/{name}"),
            entries,
            last_success_unix: NOW - 600,
            last_attempt_unix: NOW - 600,
            next_update_unix: NOW + 3000,
            ..Default::default()
        };
        let feeds = [
            feed("stevenblack", 85_000),
            feed("someonewhocares", 14_000),
            feed("sslbl_ja3", 120),
        ];
        let want = [
            " NAME            | LIST            | ENABLED | ENTRIES | LAST SUCCESS | LAST ERROR | NEXT UPDATE",
            "-----------------+-----------------+---------+---------+--------------+------------+-------------",
            " stevenblack     | stevenblack     | yes     |   85000 | 10m 0s ago   | -          | in 50m 0s",
            " someonewhocares | someonewhocares | yes     |   14000 | 10m 0s ago   | -          | in 50m 0s",
            " sslbl_ja3       | sslbl_ja3       | yes     |     120 | 10m 0s ago   | -          | in 50m 0s",
        ];
        assert_eq!(feeds_table(&feeds, NOW), want.join("\n"));
        let v = feeds_json(&feeds);
        assert_eq!(v["feeds"][2]["name"], "sslbl_ja3");
        assert_eq!(v["feeds"][2]["list"], "sslbl_ja3");
        assert_eq!(v["feeds"][2]["entries"], 120);
        // Each feed's list is a list medsctl knows by that name.
        for f in &feeds {
            assert!(ListKind::from_public_name(&f.list).is_some_and(ListKind::is_feed));
        }
    }

    #[test]
    fn feeds_json_shape() {
        let all = feeds_json(&feeds());
        assert_eq!(all["feeds"].as_array().unwrap().len(), 4);
        assert_eq!(
            all["feeds"][0],
            json!({
                "name": "firehol_level1",
                "list": "firehol",
                "enabled": true,
                "url": "https://iplists.firehol.org/files/firehol_level1.netset",
                "entries": 4521,
                "last_success_unix": NOW - 3750,
                "last_success": "2023-11-14T21:10:50Z",
                "last_attempt_unix": NOW - 3750,
                "last_attempt": "2023-11-14T21:10:50Z",
                "next_update_unix": NOW + 14_370,
                "next_update": "2023-11-15T02:12:50Z",
                "last_error": null,
                "failures": 0,
                "rejected_lines": 2,
            })
        );
        // Never: null times; an error is kept whole, as sent.
        assert_eq!(all["feeds"][2]["last_success_unix"], Value::Null);
        assert_eq!(all["feeds"][2]["last_success"], Value::Null);
        assert_eq!(all["feeds"][3]["next_update"], Value::Null);
        assert_eq!(all["feeds"][3]["last_error"], "bad\u{1b}[31mred\nline");
        assert_eq!(feeds_json(&[]), json!({"feeds": []}));
    }

    #[test]
    fn feed_summaries() {
        let f = &feeds()[0];
        let cases = [
            (
                FeedChange::Enable,
                "enabled feed firehol_level1 (firehol list, 4521 entries, last success 1h 2m ago)",
            ),
            (
                FeedChange::Disable,
                "disabled feed firehol_level1 (firehol list, 4521 entries, last success 1h 2m ago)",
            ),
            (
                FeedChange::SetUrl,
                "feed firehol_level1 now fetches https://iplists.firehol.org/files/firehol_level1.netset",
            ),
            (
                FeedChange::ResetUrl,
                "feed firehol_level1 fetches its default URL again: https://iplists.firehol.org/files/firehol_level1.netset",
            ),
        ];
        for (change, want) in cases {
            assert_eq!(feed_summary(change, f, NOW), want);
        }
        assert_eq!(
            feed_failure_warning(&feeds()[3]),
            "feed iplocate_v4 was not updated: bad?[31mred?line; its last good copy \
             (600000 entries) stays in force"
        );
    }

    #[test]
    fn relative_times() {
        let cases = [
            (0, "never"),
            (NOW, "now"),
            (NOW - 1, "1s ago"),
            (NOW - 59, "59s ago"),
            (NOW - 60, "1m 0s ago"),
            (NOW - 3599, "59m 59s ago"),
            (NOW - 3600, "1h 0m ago"),
            (NOW - 86_399, "23h 59m ago"),
            (NOW - 86_400, "1d 0h ago"),
            (NOW + 1, "in 1s"),
            (NOW + 90_061, "in 1d 1h"),
            (u64::MAX, "in 213503982314925d 8h"),
        ];
        for (t, want) in cases {
            assert_eq!(relative_time(t, NOW), want, "{t}");
        }
        // A clock before 1970 or a controller far in the future never panics.
        assert_eq!(relative_time(5, 0), "in 5s");
        assert_eq!(relative_time(1, u64::MAX), "213503982334601d 7h ago");
    }

    #[test]
    fn clipping_and_control_characters() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "ab…");
        assert_eq!(clip("", 0), "");
        assert_eq!(clip("ééééé", 4), "ééé…");
        assert_eq!(printable("a\tb\r\n\u{7f}\u{9b}c"), "a?b????c");
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
        let sizes = list_sizes(&status);
        assert_eq!(sizes[1], (ListKind::IpBlock, u64::MAX));
        assert!(
            sizes
                .iter()
                .filter(|(k, _)| *k != ListKind::IpBlock)
                .all(|(_, n)| *n == 0)
        );
    }
}
