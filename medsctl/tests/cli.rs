//! The real `medsctl` binary against an in-test Admin server (a fake, in-memory controller) on
//! a temporary Unix socket: output in table and JSON modes, and every exit code.
//!
//! The fake follows the Admin service's documented contract (meds.proto): entries parsed with
//! `Entry::parse_user`, CheckEntry answering with the covering prefixes or the parent domains,
//! most specific first, and fingerprints exactly.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests panic on purpose.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};

use meds_proto::pb;
use meds_proto::pb::admin_server::{Admin, AdminServer};
use meds_proto::{Entry, ListKind};
use serde_json::{Value, json};
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status};

/// What the fake controller stores and how it behaves.
#[derive(Debug, Default)]
struct State {
    lists: BTreeMap<ListKind, BTreeSet<Entry>>,
    generation: u64,
    /// A connected dataplane acknowledges every generation at once.
    dataplane_connected: bool,
    applied_generation: u64,
    /// Answer `Status` with INTERNAL.
    fail_status: bool,
    /// Never answer `Status`.
    hang_status: bool,
    /// Every RPC received, by name.
    calls: Vec<&'static str>,
    /// The list of every ListEntries, AddEntries, RemoveEntries and CheckEntry request.
    list_requests: Vec<ListKind>,
    /// `wait_applied` of the last Add/Remove.
    last_wait: Option<bool>,
    /// The feeds, as ListFeeds reports them.
    feeds: Vec<pb::FeedStatus>,
    /// Feeds whose next update attempt fails with this error.
    failing_feeds: BTreeMap<String, String>,
    /// Names of the last UpdateFeeds request.
    last_update: Option<Vec<String>>,
    /// The last ConfigureFeed request.
    last_configure: Option<pb::ConfigureFeedRequest>,
    /// The CheckIp answers, by address.
    reports: BTreeMap<String, pb::CheckIpResponse>,
    /// The last Explain query.
    last_explain: Option<pb::ExplainQuery>,
    /// The events the fake has (oldest first); a follower gets them, then nothing more.
    events: Vec<pb::DropEvent>,
    /// The last Events request.
    last_events: Option<pb::EventsRequest>,
}

#[derive(Debug, Clone, Default)]
struct FakeController(Arc<Mutex<State>>);

impl FakeController {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn list_of(raw: i32) -> Result<ListKind, Status> {
    ListKind::from_wire(raw).ok_or_else(|| Status::invalid_argument(format!("unknown list {raw}")))
}

/// Parse like the real controller does, and refuse prefixes that would match everything.
fn parse_entries(list: ListKind, entries: &[String]) -> Result<Vec<Entry>, Status> {
    let mut out = Vec::new();
    for entry in entries {
        let parsed = Entry::parse_user(list.entry_kind(), entry)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if matches!(parsed, Entry::Prefix(c) if c.is_empty()) {
            return Err(Status::invalid_argument(format!(
                "{entry:?} would match every address"
            )));
        }
        out.push(parsed);
    }
    Ok(out)
}

/// The current time in Unix seconds.
fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The fake's feeds, with times relative to `now` chosen away from minute boundaries (a test
/// may take a few seconds between the fake answering and medsctl rendering).
fn seed_feeds(now: u64) -> Vec<pb::FeedStatus> {
    let feed = |name: &str, list: &str, entries: u64| pb::FeedStatus {
        name: name.into(),
        list: list.into(),
        enabled: true,
        url: format!("https://feeds.example.invalid/{name}"),
        entries,
        last_success_unix: now - 3750,
        last_attempt_unix: now - 3750,
        next_update_unix: now + 10_770,
        last_error: String::new(),
        failures: 0,
        rejected_lines: 0,
    };
    vec![
        feed("firehol_level1", "firehol", 4521),
        pb::FeedStatus {
            last_error: "HTTP 503 from feeds.example.invalid".into(),
            last_attempt_unix: now - 630,
            failures: 2,
            ..feed("spamhaus_drop", "spamhaus", 1234)
        },
        pb::FeedStatus {
            enabled: false,
            last_success_unix: 0,
            last_attempt_unix: 0,
            entries: 0,
            ..feed("feodo", "feodo", 0)
        },
    ]
}

impl FakeController {
    fn modify(
        &self,
        request: pb::ModifyEntriesRequest,
        add: bool,
    ) -> Result<Response<pb::ModifyEntriesResponse>, Status> {
        let mut state = self.state();
        state
            .calls
            .push(if add { "AddEntries" } else { "RemoveEntries" });
        state.last_wait = Some(request.wait_applied);
        let list = list_of(request.list)?;
        state.list_requests.push(list);
        if list.is_feed() {
            return Err(Status::invalid_argument(format!(
                "the {list} list is filled by its feed and cannot be edited"
            )));
        }
        let entries = parse_entries(list, &request.entries)?;
        let set = state.lists.entry(list).or_default();
        let mut changed = 0u32;
        for entry in entries {
            let did = if add {
                set.insert(entry)
            } else {
                set.remove(&entry)
            };
            changed += u32::from(did);
        }
        if changed > 0 {
            state.generation += 1;
        }
        if state.dataplane_connected {
            state.applied_generation = state.generation;
        }
        Ok(Response::new(pb::ModifyEntriesResponse {
            changed,
            generation: state.generation,
            applied: state.dataplane_connected && state.applied_generation == state.generation,
        }))
    }
}

#[tonic::async_trait]
impl Admin for FakeController {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let hang = {
            let mut state = self.state();
            state.calls.push("Status");
            if state.fail_status {
                return Err(Status::internal("fake failure: database is locked"));
            }
            state.hang_status
        };
        if hang {
            std::future::pending::<()>().await;
        }
        let state = self.state();
        let size = |kind: ListKind| pb::ListSize {
            list: kind.to_wire().into(),
            entries: state.lists.get(&kind).map_or(0, |s| s.len() as u64),
        };
        let connected = state.dataplane_connected;
        Ok(Response::new(pb::StatusResponse {
            controller_version: "9.9.9-test".into(),
            generation: state.generation,
            dataplane_connected: connected,
            applied_generation: state.applied_generation,
            dataplane_version: if connected {
                "9.9.8-test".into()
            } else {
                String::new()
            },
            dataplane_queues: if connected { vec![0, 1] } else { vec![] },
            lists: ListKind::ALL.into_iter().map(size).collect(),
            dataplane_stats: connected.then(|| pb::DataplaneStats {
                packets_processed: 1000,
                decisions: vec![
                    pb::DecisionCount {
                        verdict: "drop".into(),
                        filter: "ip".into(),
                        reason: "BlackList".into(),
                        packets: 7,
                    },
                    pb::DecisionCount {
                        verdict: "accept".into(),
                        filter: "empty".into(),
                        reason: "default".into(),
                        packets: 993,
                    },
                ],
                updates_rejected: 0,
                verdict_errors: 2,
                started_at_unix: 1_700_000_000,
                ..pb::DataplaneStats::default()
            }),
            controller_uptime_seconds: 3_725,
            dataplane_settings: connected.then_some(pb::DataplaneSettings {
                fail_open: false,
                queue_bypass: true,
                offload: true,
                mark_trusted: 0x10_0000,
                mark_blocked: 0x20_0000,
                gso: false,
                recv_batch: 64,
                rate_limiter: true,
                rate_limiter_rate: 3000,
                rate_limiter_burst: 1500,
                rate_limiter_ipv6_prefix: 64,
                rate_limiter_cache_size: 100_000,
                readers: 2,
                queue_max_len: 4096,
                copy_range: 256,
            }),
            feeds: state.feeds.clone(),
            // As the controller words them (meds-controld's health module).
            problems: (!connected)
                .then(|| "no dataplane connected".to_string())
                .into_iter()
                .chain(
                    state
                        .feeds
                        .iter()
                        .filter(|f| f.enabled && !f.last_error.is_empty())
                        .map(|f| format!("feed {} failing: {}", f.name, f.last_error)),
                )
                .collect(),
        }))
    }

    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let mut state = self.state();
        state.calls.push("ListEntries");
        let list = list_of(request.into_inner().list)?;
        state.list_requests.push(list);
        let entries = state
            .lists
            .get(&list)
            .map_or_else(Vec::new, |s| s.iter().map(Entry::to_string).collect());
        Ok(Response::new(pb::ListEntriesResponse { entries }))
    }

    async fn add_entries(
        &self,
        request: Request<pb::ModifyEntriesRequest>,
    ) -> Result<Response<pb::ModifyEntriesResponse>, Status> {
        self.modify(request.into_inner(), true)
    }

    async fn remove_entries(
        &self,
        request: Request<pb::ModifyEntriesRequest>,
    ) -> Result<Response<pb::ModifyEntriesResponse>, Status> {
        self.modify(request.into_inner(), false)
    }

    async fn check_entry(
        &self,
        request: Request<pb::CheckEntryRequest>,
    ) -> Result<Response<pb::CheckEntryResponse>, Status> {
        let mut state = self.state();
        state.calls.push("CheckEntry");
        let request = request.into_inner();
        let list = list_of(request.list)?;
        state.list_requests.push(list);
        let query = Entry::parse_user(list.entry_kind(), &request.query)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let stored = state.lists.get(&list).cloned().unwrap_or_default();
        let matches: Vec<String> = match query {
            Entry::Prefix(q) => {
                let mut covering: Vec<_> = stored
                    .iter()
                    .filter_map(|e| match e {
                        Entry::Prefix(c) if c.covers(&q) => Some(*c),
                        _ => None,
                    })
                    .collect();
                covering.sort_by_key(|c| std::cmp::Reverse(c.len()));
                covering.iter().map(ToString::to_string).collect()
            }
            Entry::Domain(q) => {
                let mut parents: Vec<_> = stored
                    .iter()
                    .filter_map(|e| match e {
                        Entry::Domain(d) if q.is_within(d) => Some(d.clone()),
                        _ => None,
                    })
                    .collect();
                parents.sort_by_key(|d| std::cmp::Reverse(d.label_count()));
                parents.iter().map(ToString::to_string).collect()
            }
            other if stored.contains(&other) => vec![other.to_string()],
            _ => Vec::new(),
        };
        Ok(Response::new(pb::CheckEntryResponse {
            found: !matches.is_empty(),
            matches,
        }))
    }

    async fn check_ip(
        &self,
        request: Request<pb::CheckIpRequest>,
    ) -> Result<Response<pb::CheckIpResponse>, Status> {
        let mut state = self.state();
        state.calls.push("CheckIp");
        let ip = request.into_inner().ip;
        let parsed: std::net::IpAddr = ip
            .parse()
            .map_err(|_| Status::invalid_argument(format!("{ip:?} is not an address")))?;
        let report = state
            .reports
            .get(&ip)
            .cloned()
            .unwrap_or_else(|| pb::CheckIpResponse {
                ip: parsed.to_string(),
                ..Default::default()
            });
        Ok(Response::new(report))
    }

    async fn list_feeds(
        &self,
        _: Request<pb::ListFeedsRequest>,
    ) -> Result<Response<pb::ListFeedsResponse>, Status> {
        let mut state = self.state();
        state.calls.push("ListFeeds");
        Ok(Response::new(pb::ListFeedsResponse {
            feeds: state.feeds.clone(),
        }))
    }

    async fn update_feeds(
        &self,
        request: Request<pb::UpdateFeedsRequest>,
    ) -> Result<Response<pb::UpdateFeedsResponse>, Status> {
        let mut state = self.state();
        state.calls.push("UpdateFeeds");
        let names = request.into_inner().names;
        state.last_update = Some(names.clone());
        for name in &names {
            if !state.feeds.iter().any(|f| &f.name == name) {
                return Err(Status::not_found(format!("no feed named {name:?}")));
            }
        }
        let now = now_unix();
        let failing = state.failing_feeds.clone();
        let mut out = Vec::new();
        for feed in state.feeds.iter_mut() {
            let wanted = if names.is_empty() {
                feed.enabled
            } else {
                names.contains(&feed.name)
            };
            if !wanted {
                continue;
            }
            feed.last_attempt_unix = now;
            match failing.get(&feed.name) {
                Some(error) => {
                    feed.last_error = error.clone();
                    feed.failures += 1;
                }
                None => {
                    feed.last_error.clear();
                    // Away from minute boundaries: rendered as "1h 0m ago".
                    feed.last_success_unix = now - 3630;
                    feed.entries += 1;
                }
            }
            feed.next_update_unix = now + 14_370;
            out.push(feed.clone());
        }
        Ok(Response::new(pb::UpdateFeedsResponse { feeds: out }))
    }

    /// Like the controller: validated fields, FAILED_PRECONDITION without a dataplane; the
    /// dataplane behind it blocks 203.0.113.0/24.
    async fn explain(
        &self,
        request: Request<pb::ExplainQuery>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let mut state = self.state();
        state.calls.push("Explain");
        let q = request.into_inner();
        state.last_explain = Some(q.clone());
        if !q.ja3.is_empty() {
            q.ja3
                .parse::<meds_proto::Ja3Hash>()
                .map_err(|e| Status::invalid_argument(format!("ja3: {e}")))?;
        }
        if !state.dataplane_connected {
            return Err(Status::failed_precondition(
                "no enforcing dataplane is connected (observers do not count)",
            ));
        }
        let blocked = q.ip.starts_with("203.0.113.");
        let step =
            |list: &str, outcome: pb::ExplainOutcome, detail: &str, verdict: &str, reason: &str| {
                pb::ExplainStep {
                    filter: "ip".into(),
                    list: list.into(),
                    outcome: outcome as i32,
                    detail: detail.into(),
                    verdict: verdict.into(),
                    reason: reason.into(),
                }
            };
        let response = if blocked {
            pb::ExplainResponse {
                steps: vec![
                    step("whitelist", pb::ExplainOutcome::NoMatch, "", "", ""),
                    step(
                        "blacklist",
                        pb::ExplainOutcome::Match,
                        "203.0.113.0/24",
                        "drop",
                        "BlackList",
                    ),
                    step("firehol", pb::ExplainOutcome::NotReached, "", "", ""),
                ],
                verdict: "drop".into(),
                filter: "ip".into(),
                reason: "BlackList".into(),
                generation: state.generation,
                offload: "blocked (offloaded)".into(),
                ..pb::ExplainResponse::default()
            }
        } else {
            pb::ExplainResponse {
                steps: vec![
                    step("whitelist", pb::ExplainOutcome::NoMatch, "", "", ""),
                    step("blacklist", pb::ExplainOutcome::NoMatch, "", "", ""),
                    step("firehol", pb::ExplainOutcome::Skipped, "empty list", "", ""),
                ],
                verdict: "accept".into(),
                filter: "empty".into(),
                reason: "default".into(),
                generation: state.generation,
                offload: "trusted (offloaded)".into(),
                ..pb::ExplainResponse::default()
            }
        };
        Ok(Response::new(response))
    }

    type EventsStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::EventBatch, Status>> + Send>>;

    /// The last `recent` events in one batch (with a suppressed count when some were left
    /// out); with `follow` the stream then stays open, silent.
    async fn events(
        &self,
        request: Request<pb::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let mut state = self.state();
        state.calls.push("Events");
        let req = request.into_inner();
        state.last_events = Some(req);
        let skip = state.events.len().saturating_sub(req.recent as usize);
        let batch = pb::EventBatch {
            events: state.events[skip..].to_vec(),
            suppressed: skip as u64,
        };
        let first = tokio_stream::once(Ok(batch));
        if req.follow {
            Ok(Response::new(Box::pin(
                first.chain(tokio_stream::pending()),
            )))
        } else {
            Ok(Response::new(Box::pin(first)))
        }
    }

    async fn configure_feed(
        &self,
        request: Request<pb::ConfigureFeedRequest>,
    ) -> Result<Response<pb::FeedStatus>, Status> {
        let mut state = self.state();
        state.calls.push("ConfigureFeed");
        let request = request.into_inner();
        state.last_configure = Some(request.clone());
        let Some(feed) = state.feeds.iter_mut().find(|f| f.name == request.name) else {
            return Err(Status::not_found(format!(
                "no feed named {:?}",
                request.name
            )));
        };
        if let Some(enabled) = request.enabled {
            feed.enabled = enabled;
        }
        match request.url.as_deref() {
            None => {}
            Some("") => feed.url = format!("https://feeds.example.invalid/{}", feed.name),
            Some(url) if url.starts_with("https://") || url.starts_with("file://") => {
                feed.url = url.to_string();
            }
            Some(url) => {
                return Err(Status::invalid_argument(format!(
                    "{url:?}: only https:// and file:// URLs are allowed"
                )));
            }
        }
        Ok(Response::new(feed.clone()))
    }
}

/// A fake controller serving the Admin service on a temporary socket for one test.
struct Harness {
    // Held for its Drop, declared first: the server stops before the directory goes.
    _runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    socket: PathBuf,
    fake: FakeController,
}

/// The outcome of one medsctl run.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

impl Harness {
    fn start() -> Harness {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("admin.sock");
        let fake = FakeController::default();
        fake.state().dataplane_connected = true;
        fake.state().feeds = seed_feeds(now_unix());
        let listener = {
            let _guard = runtime.enter();
            tokio::net::UnixListener::bind(&socket).expect("bind admin socket")
        };
        // Bound before medsctl runs: connections queue in the backlog, no waiting needed.
        let service = AdminServer::new(fake.clone());
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
        );
        Harness {
            _runtime: runtime,
            dir,
            socket,
            fake,
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        run_with_socket(&self.socket, args)
    }

    fn calls(&self) -> Vec<&'static str> {
        self.fake.state().calls.clone()
    }

    fn list_requests(&self) -> Vec<ListKind> {
        self.fake.state().list_requests.clone()
    }

    /// The entries the fake stores in `list`, in canonical text form.
    fn stored(&self, list: ListKind) -> Vec<String> {
        self.fake
            .state()
            .lists
            .get(&list)
            .map_or_else(Vec::new, |s| s.iter().map(Entry::to_string).collect())
    }
}

fn medsctl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_medsctl"));
    for var in ["MEDS_SOCKET", "MEDS_JSON", "MEDS_TIMEOUT", "MEDS_NO_WAIT"] {
        cmd.env_remove(var);
    }
    cmd
}

fn finish(mut cmd: Command) -> Run {
    let out = cmd.output().expect("run medsctl");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run_with_socket(socket: &Path, args: &[&str]) -> Run {
    let mut cmd = medsctl();
    cmd.arg("--socket").arg(socket).args(args);
    finish(cmd)
}

#[track_caller]
fn assert_ok(run: &Run) {
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");
}

#[test]
fn add_list_check_remove_as_tables() {
    let h = Harness::start();

    let run = h.run(&["blacklist", "add", "203.0.113.0/24", "2001:db8::/32"]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "added 2 entries to the blacklist (generation 1, applied by the dataplane)\n"
    );
    assert_eq!(h.fake.state().last_wait, Some(true));

    // Host bits are cleared by the controller; the alias names the same list.
    let run = h.run(&["blocklist", "add", "198.51.100.7", "203.0.113.0/24"]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "added 1 of 2 entries to the blacklist (generation 2, applied by the dataplane)\n"
    );

    let run = h.run(&["blacklist", "list"]);
    assert_ok(&run);
    let want = [
        " ENTRY           | FAMILY",
        "-----------------+--------",
        " 198.51.100.7/32 | ipv4",
        " 203.0.113.0/24  | ipv4",
        " 2001:db8::/32   | ipv6",
        "",
    ];
    assert_eq!(run.stdout, want.join("\n"));

    let run = h.run(&["whitelist", "list"]);
    assert_ok(&run);
    assert_eq!(run.stdout, "the whitelist is empty\n");

    // Every query found: exit 0.
    let run = h.run(&["blacklist", "check", "203.0.113.255", "2001:db8:1::/48"]);
    assert_ok(&run);
    let want = [
        " QUERY           | FOUND | MATCHES",
        "-----------------+-------+----------------",
        " 203.0.113.255   | yes   | 203.0.113.0/24",
        " 2001:db8:1::/48 | yes   | 2001:db8::/32",
        "",
    ];
    assert_eq!(run.stdout, want.join("\n"));

    // One query not found: exit 1, still a full table, nothing on stderr.
    let run = h.run(&["blacklist", "check", "203.0.113.7", "203.0.114.0"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr, "");
    let want = [
        " QUERY       | FOUND | MATCHES",
        "-------------+-------+----------------",
        " 203.0.113.7 | yes   | 203.0.113.0/24",
        " 203.0.114.0 | no    | -",
        "",
    ];
    assert_eq!(run.stdout, want.join("\n"));

    let run = h.run(&["blacklist", "remove", "203.0.113.0/24"]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "removed 1 entry from the blacklist (generation 3, applied by the dataplane)\n"
    );
    let run = h.run(&["blacklist", "rm", "203.0.113.0/24", "--no-wait"]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "no change: the blacklist had none of 1 entry (generation 3, applied by the dataplane)\n"
    );
    assert_eq!(h.fake.state().last_wait, Some(false));

    let run = h.run(&["blacklist", "check", "203.0.113.7"]);
    assert_eq!(run.code, 1, "{run:?}");
}

#[test]
fn json_mode_shapes() {
    let h = Harness::start();

    let run = h.run(&["--json", "whitelist", "add", "10.0.0.0/8", "2001:db8::1"]);
    assert_ok(&run);
    assert_eq!(
        run.json(),
        json!({"changed": 2, "generation": 1, "applied": true})
    );

    // --json is global: it also works after the subcommand.
    let run = h.run(&["allowlist", "list", "--json"]);
    assert_ok(&run);
    assert_eq!(
        run.json(),
        json!({"list": "whitelist", "entries": ["10.0.0.0/8", "2001:db8::1/128"]})
    );

    let run = h.run(&["--json", "whitelist", "check", "10.1.2.3", "192.0.2.1"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.json(),
        json!({"results": [
            {"query": "10.1.2.3", "found": true, "matches": ["10.0.0.0/8"]},
            {"query": "192.0.2.1", "found": false, "matches": []},
        ]})
    );

    let run = h.run(&["--json", "status"]);
    assert_ok(&run);
    let mut status = run.json();
    // The feeds are the `feeds list --json` objects (times relative to now: checked there).
    let feeds = status
        .as_object_mut()
        .and_then(|o| o.remove("feeds"))
        .unwrap();
    let names: Vec<&str> = feeds
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["firehol_level1", "spamhaus_drop", "feodo"]);
    assert_eq!(
        feeds[1]["last_error"],
        "HTTP 503 from feeds.example.invalid"
    );
    assert_eq!(
        status,
        json!({
            "health": {
                "ok": false,
                "problems": ["feed spamhaus_drop failing: HTTP 503 from feeds.example.invalid"],
            },
            "controller_version": "9.9.9-test",
            "generation": 1,
            "dataplane_connected": true,
            "applied_generation": 1,
            "dataplane_version": "9.9.8-test",
            "dataplane_queues": [0, 1],
            "lists": {
                "whitelist": 2,
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
            "controller_uptime_seconds": 3725,
            "dataplane_stats": {
                "packets_processed": 1000,
                "updates_rejected": 0,
                "verdict_errors": 2,
                "decisions": [
                    {"verdict": "drop", "filter": "ip", "reason": "BlackList", "packets": 7},
                    {"verdict": "accept", "filter": "empty", "reason": "default", "packets": 993},
                ],
                "recv_errors": 0,
                "queue_dropped": 0,
                "queue_user_dropped": 0,
                "flows_trusted": 0,
                "flows_blocked": 0,
                "events_sampled": 0,
                "events_suppressed": 0,
                "resident_memory_bytes": 0,
            },
            "dataplane_settings": {
                "fail_open": false,
                "queue_bypass": true,
                "offload": true,
                "mark_trusted": 0x10_0000,
                "mark_blocked": 0x20_0000,
                "gso": false,
                "recv_batch": 64,
                "rate_limiter": true,
                "rate_limiter_rate": 3000,
                "rate_limiter_burst": 1500,
                "rate_limiter_ipv6_prefix": 64,
                "rate_limiter_cache_size": 100_000,
                "readers": 2,
                "queue_max_len": 4096,
                "copy_range": 256,
            },
        })
    );

    let run = h.run(&["--json", "whitelist", "remove", "10.0.0.0/8"]);
    assert_ok(&run);
    assert_eq!(
        run.json(),
        json!({"changed": 1, "generation": 2, "applied": true})
    );

    // MEDS_JSON works like --json.
    let mut cmd = medsctl();
    cmd.env("MEDS_JSON", "true")
        .env("MEDS_SOCKET", &h.socket)
        .args(["whitelist", "list"]);
    let run = finish(cmd);
    assert_ok(&run);
    assert_eq!(
        run.json(),
        json!({"list": "whitelist", "entries": ["2001:db8::1/128"]})
    );
}

#[test]
fn status_as_a_table() {
    let h = Harness::start();
    assert_ok(&h.run(&["blacklist", "add", "203.0.113.0/24"]));
    assert_ok(&h.run(&["countries", "add", "FR"]));

    let run = h.run(&["status"]);
    assert_ok(&run);
    let want = [
        "health                    degraded: feed spamhaus_drop failing: HTTP 503 from \
         feeds.example.invalid",
        "controller version        9.9.9-test",
        "controller uptime         1h 2m 5s",
        "generation                2",
        "dataplane connected       yes",
        "applied generation        2 (in sync)",
        "dataplane version         9.9.8-test",
        "dataplane queues          0, 1",
        "queue full                drop (fail-closed)",
        "no dataplane bound        accept (--queue-bypass)",
        "offload                   on (trusted 0x100000, blocked 0x200000)",
        "rate limiter              3000/s, burst 1500, IPv6 /64, 100000 keys",
        "readers                   2",
        "queue max len             4096",
        "copy range                256 bytes",
        "recv batch                64",
        "gso                       off",
        "whitelist entries         0",
        "blacklist entries         1",
        "firehol entries           0",
        "spamhaus entries          0",
        "feodo entries             0",
        "countries entries         1",
        "asns entries              0",
        "spamhaus_asndrop entries  0",
        "iplocate entries          0",
        "domain_whitelist entries  0",
        "domain_blacklist entries  0",
        "stevenblack entries       0",
        "someonewhocares entries   0",
        "sslbl_ja3 entries         0",
        "ja3 entries               0",
        "ja4 entries               0",
        "packets processed         1000",
        "updates rejected          0",
        "verdict errors            2",
        "receive errors            0",
        "kernel queue drops        0 (queue full), 0 (socket buffer full)",
        "flows offloaded           0 trusted, 0 blocked",
        "drop events               0 sampled, 0 not sampled",
        "",
        " VERDICT | FILTER | REASON    | PACKETS",
        "---------+--------+-----------+---------",
        " drop    | ip     | BlackList |       7",
        " accept  | empty  | default   |     993",
        "",
        " NAME           | LIST     | ENABLED | ENTRIES | LAST SUCCESS | LAST ERROR                          | NEXT UPDATE",
        "----------------+----------+---------+---------+--------------+-------------------------------------+-------------",
        " firehol_level1 | firehol  | yes     |    4521 | 1h 2m ago    | -                                   | in 2h 59m",
        " spamhaus_drop  | spamhaus | yes     |    1234 | 1h 2m ago    | HTTP 503 from feeds.example.invalid | in 2h 59m",
        " feodo          | feodo    | no      |       0 | never        | -                                   | -",
        "",
    ];
    assert_eq!(run.stdout, want.join("\n"));

    h.fake.state().dataplane_connected = false;
    assert_ok(&h.run(&["blacklist", "add", "198.51.100.0/24", "--no-wait"]));
    let run = h.run(&["status"]);
    assert_ok(&run);
    assert!(
        run.stdout.contains("dataplane connected       no\n"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("applied generation        2 (behind by 1)\n"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("dataplane stats           none reported\n"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("dataplane settings        unknown (not reported)\n"),
        "{run:?}"
    );
    assert!(!run.stdout.contains("queue full"), "{run:?}");
    assert!(!run.stdout.contains("VERDICT"), "{run:?}");
}

#[test]
fn a_change_the_dataplane_has_not_applied_warns_but_succeeds() {
    let h = Harness::start();
    h.fake.state().dataplane_connected = false;

    let run = h.run(&["blacklist", "add", "203.0.113.7"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "added 1 entry to the blacklist (generation 1, not yet applied)\n"
    );
    assert!(run.stderr.starts_with("medsctl: warning: "), "{run:?}");
    assert!(
        run.stderr
            .contains("not yet applied: dataplane not connected"),
        "{run:?}"
    );

    // JSON keeps stdout parseable; the warning still goes to stderr.
    let run = h.run(&["--json", "blacklist", "add", "203.0.113.8"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.json(),
        json!({"changed": 1, "generation": 2, "applied": false})
    );
    assert!(run.stderr.contains("dataplane not connected"), "{run:?}");

    // --no-wait: nothing to warn about, the operator asked not to wait.
    let run = h.run(&["blacklist", "add", "--no-wait", "203.0.113.9"]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "added 1 entry to the blacklist (generation 3, not waiting for the dataplane)\n"
    );
    assert_eq!(h.fake.state().last_wait, Some(false));
}

#[test]
fn invalid_arguments_exit_4() {
    let h = Harness::start();

    // Refused locally: every bad argument is named and the controller is never contacted.
    for json_flag in [false, true] {
        let mut args = vec![
            "whitelist",
            "add",
            "203.0.113.7",
            "300.1.1.1",
            "10.0.0.0/33",
        ];
        if json_flag {
            args.insert(0, "--json");
        }
        let run = h.run(&args);
        assert_eq!(run.code, 4, "{run:?}");
        assert_eq!(run.stdout, "", "{run:?}");
        assert!(run.stderr.contains("\"300.1.1.1\""), "{run:?}");
        assert!(run.stderr.contains("\"10.0.0.0/33\""), "{run:?}");
        assert!(!run.stderr.contains("203.0.113.7"), "{run:?}");
    }
    let run = h.run(&["blacklist", "check", "not an ip"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(
        run.stderr
            .contains("\"not an ip\": not an IP address or prefix"),
        "{run:?}"
    );
    assert_eq!(h.calls(), Vec::<&str>::new());

    // Refused by the controller: its message is shown and nothing changed.
    let run = h.run(&["--json", "blacklist", "add", "203.0.113.7", "0.0.0.0/0"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert_eq!(run.stdout, "", "{run:?}");
    assert_eq!(
        run.stderr,
        "medsctl: the controller refused the request: \"0.0.0.0/0\" would match every address\n"
    );
    assert_eq!(h.calls(), ["AddEntries"]);
    assert!(h.fake.state().lists.values().all(BTreeSet::is_empty));
}

#[test]
fn usage_errors_exit_2() {
    let h = Harness::start();
    for args in [
        &["whitelist", "add"][..],
        &["greylist", "list"],
        &["--timeout", "0", "status"],
    ] {
        let run = h.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}");
    }
    assert_eq!(h.calls(), Vec::<&str>::new());
}

#[test]
fn controller_failures_exit_3() {
    let h = Harness::start();
    h.fake.state().fail_status = true;
    let run = h.run(&["--json", "status"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains("fake failure: database is locked"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains(h.socket.to_str().expect("utf-8 path")),
        "{run:?}"
    );

    h.fake.state().fail_status = false;
    h.fake.state().hang_status = true;
    let run = h.run(&["--timeout", "1", "status"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("timed out after 1s"), "{run:?}");
}

#[test]
fn a_missing_socket_exits_3_naming_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("no-such.sock");
    for args in [
        &["status"][..],
        &["--json", "blacklist", "list"],
        &["whitelist", "add", "203.0.113.7"],
    ] {
        let run = run_with_socket(&socket, args);
        assert_eq!(run.code, 3, "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}");
        assert!(
            run.stderr.contains(socket.to_str().expect("utf-8 path")),
            "{run:?}"
        );
        assert!(run.stderr.contains("is meds-controld running?"), "{run:?}");
    }

    // MEDS_SOCKET is honoured.
    let mut cmd = medsctl();
    cmd.env("MEDS_SOCKET", &socket).arg("status");
    let run = finish(cmd);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains(socket.to_str().expect("utf-8 path")),
        "{run:?}"
    );
}

#[test]
fn a_stale_socket_exits_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("stale.sock");
    // Bound, then closed: the file stays but nothing listens (a crashed controller).
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    let run = run_with_socket(&socket, &["status"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("is meds-controld running?"), "{run:?}");
}

#[test]
fn a_socket_we_may_not_open_exits_3_with_the_group_hint() {
    let h = Harness::start();
    // Like the real admin socket (0660 root:meds-admin), minus the group.
    std::fs::set_permissions(h.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod dir");
    std::fs::set_permissions(&h.socket, std::fs::Permissions::from_mode(0o600))
        .expect("chmod socket");

    // SAFETY: geteuid has no preconditions and cannot fail.
    let is_root = unsafe { libc::geteuid() } == 0;
    let run = if is_root {
        // Root bypasses file permissions: run medsctl as nobody.
        let setpriv = Path::new("/usr/bin/setpriv");
        if !setpriv.exists() {
            eprintln!("skipped: running as root and /usr/bin/setpriv is missing");
            return;
        }
        let mut cmd = Command::new(setpriv);
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_medsctl"),
        ]);
        for var in ["MEDS_SOCKET", "MEDS_JSON", "MEDS_TIMEOUT", "MEDS_NO_WAIT"] {
            cmd.env_remove(var);
        }
        cmd.arg("--socket").arg(&h.socket).arg("status");
        finish(cmd)
    } else {
        h.run(&["status"])
    };
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains(h.socket.to_str().expect("utf-8 path")),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("are you in the meds-admin group?"),
        "{run:?}"
    );
    assert_eq!(h.calls(), Vec::<&str>::new());
}

#[test]
fn countries_add_list_check_remove() {
    let h = Harness::start();
    let run = h.run(&["countries", "add", "FR", "de"]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "added 2 entries to the country blocklist (generation 1, applied by the dataplane)\n"
    );
    let run = h.run(&["countries", "add", "fr"]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "no change: the country blocklist already had 1 entry (generation 1, applied by the dataplane)\n"
    );

    let run = h.run(&["countries", "list"]);
    assert_ok(&run);
    assert_eq!(run.stdout, " COUNTRY\n---------\n de\n fr\n");
    let run = h.run(&["--json", "countries", "ls"]);
    assert_ok(&run);
    assert_eq!(
        run.json(),
        json!({"list": "countries", "entries": ["de", "fr"]})
    );

    // Case-insensitive; one not found: exit 1 with the whole table.
    let run = h.run(&["countries", "check", "FR", "us"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr, "");
    let want = [
        " QUERY | FOUND | MATCHES",
        "-------+-------+---------",
        " FR    | yes   | fr",
        " us    | no    | -",
        "",
    ];
    assert_eq!(run.stdout, want.join("\n"));
    let run = h.run(&["--json", "countries", "check", "De"]);
    assert_ok(&run);
    assert_eq!(
        run.json(),
        json!({"results": [{"query": "De", "found": true, "matches": ["de"]}]})
    );

    let run = h.run(&["countries", "rm", "FR", "--no-wait"]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "removed 1 entry from the country blocklist (generation 2, applied by the dataplane)\n"
    );
    let run = h.run(&["--json", "countries", "remove", "de"]);
    assert_ok(&run);
    assert_eq!(
        run.json(),
        json!({"changed": 1, "generation": 3, "applied": true})
    );
    let run = h.run(&["countries", "list"]);
    assert_ok(&run);
    assert_eq!(run.stdout, "the country blocklist is empty\n");
    // The IP lists were never touched.
    assert!(!h.fake.state().lists.contains_key(&ListKind::IpBlock));
}

#[test]
fn asns_add_list_check_remove() {
    let h = Harness::start();
    let run = h.run(&["asns", "add", "AS64497", "64496", "as64496"]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "added 2 of 3 entries to the ASN blocklist (generation 1, applied by the dataplane)\n"
    );
    let run = h.run(&["asns", "list"]);
    assert_ok(&run);
    assert_eq!(run.stdout, " ASN\n-------\n 64496\n 64497\n");
    let run = h.run(&["--json", "asns", "list"]);
    assert_ok(&run);
    assert_eq!(
        run.json(),
        json!({"list": "asns", "entries": ["64496", "64497"]})
    );
    let run = h.run(&["--json", "asns", "check", "as64496", "64511"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.json(),
        json!({"results": [
            {"query": "as64496", "found": true, "matches": ["64496"]},
            {"query": "64511", "found": false, "matches": []},
        ]})
    );
    let run = h.run(&["asns", "remove", "AS64496"]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "removed 1 entry from the ASN blocklist (generation 2, applied by the dataplane)\n"
    );
    let run = h.run(&["asns", "check", "64497"]);
    assert_ok(&run);
}

#[test]
fn bad_countries_and_asns_exit_4_before_contacting_the_controller() {
    let h = Harness::start();
    // (arguments, every name the message must contain)
    let cases: [(&[&str], &[&str]); 6] = [
        (
            &["countries", "add", "fr", "zz", "USA"],
            &["\"zz\"", "\"USA\""],
        ),
        (
            &["countries", "remove", "eu"],
            &["\"eu\" is not an assigned"],
        ),
        (&["countries", "check", "203.0.113.7"], &["\"203.0.113.7\""]),
        (
            &["asns", "add", "64496", "AS0", "ASN5"],
            &["AS0 is reserved", "\"ASN5\""],
        ),
        (
            &["--json", "asns", "check", "4294967296"],
            &["\"4294967296\""],
        ),
        (&["asns", "remove", "23456"], &["AS23456 is reserved"]),
    ];
    for (args, needles) in cases {
        let run = h.run(args);
        assert_eq!(run.code, 4, "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}");
        assert!(
            run.stderr.starts_with("medsctl: invalid argument: "),
            "{run:?}"
        );
        for needle in needles {
            assert!(run.stderr.contains(needle), "{needle}: {run:?}");
        }
        // Only the bad arguments are reported, each once.
        assert_eq!(
            run.stderr.matches("; ").count() + 1,
            needles.len(),
            "{run:?}"
        );
    }
    assert_eq!(h.calls(), Vec::<&str>::new());
}

fn report() -> pb::CheckIpResponse {
    pb::CheckIpResponse {
        ip: "203.0.113.7".into(),
        lists: vec![
            pb::ListMatch {
                list: "blacklist".into(),
                entry: "203.0.113.7/32".into(),
            },
            pb::ListMatch {
                list: "spamhaus".into(),
                entry: "203.0.113.0/24".into(),
            },
        ],
        asn: 64496,
        country: "fr".into(),
        network: "203.0.113.0/24".into(),
        country_blocked: true,
        asn_lists: vec!["spamhaus_asndrop".into()],
    }
}

#[test]
fn check_ip_as_a_table_and_json() {
    let h = Harness::start();
    h.fake
        .state()
        .reports
        .insert("203.0.113.7".into(), report());

    let run = h.run(&["check", "203.0.113.7"]);
    assert_ok(&run);
    let want = [
        " LIST      | ENTRY",
        "-----------+----------------",
        " blacklist | 203.0.113.7/32",
        " spamhaus  | 203.0.113.0/24",
        "",
        "asn              AS64496",
        "country          fr",
        "network          203.0.113.0/24",
        "country blocked  yes",
        "asn lists        spamhaus_asndrop",
        "",
    ];
    assert_eq!(run.stdout, want.join("\n"));

    let run = h.run(&["check", "--json", " 203.0.113.7 "]);
    assert_ok(&run);
    assert_eq!(
        run.json(),
        json!({
            "ip": "203.0.113.7",
            "lists": [
                {"list": "blacklist", "entry": "203.0.113.7/32"},
                {"list": "spamhaus", "entry": "203.0.113.0/24"},
            ],
            "asn": 64496,
            "country": "fr",
            "network": "203.0.113.0/24",
            "country_blocked": true,
            "asn_lists": ["spamhaus_asndrop"],
        })
    );

    // On nothing at all: still exit 0 (it is a report, not a membership test).
    let run = h.run(&["check", "2001:DB8::1"]);
    assert_ok(&run);
    let want = [
        "2001:db8::1 is on no list or feed",
        "",
        "asn              -",
        "country          -",
        "network          -",
        "country blocked  no",
        "asn lists        -",
        "",
    ];
    assert_eq!(run.stdout, want.join("\n"));
    let run = h.run(&["--json", "check", "192.0.2.1"]);
    assert_ok(&run);
    assert_eq!(
        run.json(),
        json!({
            "ip": "192.0.2.1",
            "lists": [],
            "asn": null,
            "country": null,
            "network": null,
            "country_blocked": false,
            "asn_lists": [],
        })
    );
    assert_eq!(h.calls(), ["CheckIp", "CheckIp", "CheckIp", "CheckIp"]);

    // Not one address: exit 4 without asking.
    for bad in [
        "203.0.113.0/24",
        "300.1.1.1",
        "::ffff:192.0.2.1",
        "host.example",
    ] {
        let run = h.run(&["check", bad]);
        assert_eq!(run.code, 4, "{bad}: {run:?}");
        assert_eq!(run.stdout, "", "{bad}");
        assert!(
            run.stderr.starts_with("medsctl: invalid argument: "),
            "{run:?}"
        );
    }
    assert_eq!(h.calls().len(), 4);
}

#[test]
fn feeds_list_as_a_table_and_json() {
    let h = Harness::start();
    let run = h.run(&["feeds", "list"]);
    assert_ok(&run);
    let want = [
        " NAME           | LIST     | ENABLED | ENTRIES | LAST SUCCESS | LAST ERROR                          | NEXT UPDATE",
        "----------------+----------+---------+---------+--------------+-------------------------------------+-------------",
        " firehol_level1 | firehol  | yes     |    4521 | 1h 2m ago    | -                                   | in 2h 59m",
        " spamhaus_drop  | spamhaus | yes     |    1234 | 1h 2m ago    | HTTP 503 from feeds.example.invalid | in 2h 59m",
        " feodo          | feodo    | no      |       0 | never        | -                                   | -",
        "",
    ];
    assert_eq!(run.stdout, want.join("\n"));

    let run = h.run(&["--json", "feeds", "ls"]);
    assert_ok(&run);
    let v = run.json();
    let feeds = v["feeds"].as_array().expect("feeds array");
    assert_eq!(feeds.len(), 3);
    let state = h.fake.state().feeds.clone();
    let spamhaus = &state[1];
    let mut keys: Vec<&str> = feeds[1]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "enabled",
            "entries",
            "failures",
            "last_attempt",
            "last_attempt_unix",
            "last_error",
            "last_success",
            "last_success_unix",
            "list",
            "name",
            "next_update",
            "next_update_unix",
            "rejected_lines",
            "url",
        ]
    );
    assert_eq!(feeds[1]["name"], "spamhaus_drop");
    assert_eq!(feeds[1]["list"], "spamhaus");
    assert_eq!(feeds[1]["enabled"], true);
    assert_eq!(
        feeds[1]["url"],
        "https://feeds.example.invalid/spamhaus_drop"
    );
    assert_eq!(feeds[1]["entries"], 1234);
    assert_eq!(feeds[1]["last_success_unix"], spamhaus.last_success_unix);
    assert_eq!(feeds[1]["last_attempt_unix"], spamhaus.last_attempt_unix);
    assert_eq!(feeds[1]["next_update_unix"], spamhaus.next_update_unix);
    assert_eq!(
        feeds[1]["last_error"],
        "HTTP 503 from feeds.example.invalid"
    );
    assert_eq!(feeds[1]["failures"], 2);
    assert_eq!(feeds[1]["rejected_lines"], 0);
    let iso = feeds[1]["last_success"].as_str().unwrap();
    assert!(
        iso.len() == 20 && iso.ends_with('Z') && iso.as_bytes()[10] == b'T',
        "{iso}"
    );
    assert_eq!(feeds[0]["last_error"], Value::Null);
    assert_eq!(feeds[2]["last_success_unix"], Value::Null);
    assert_eq!(feeds[2]["last_success"], Value::Null);
    assert_eq!(h.calls(), ["ListFeeds", "ListFeeds"]);
}

#[test]
fn feeds_update_reports_failures_with_exit_3() {
    let h = Harness::start();
    // Every enabled feed; all succeed.
    let run = h.run(&["feeds", "update"]);
    assert_ok(&run);
    assert_eq!(h.fake.state().last_update, Some(vec![]));
    let want = [
        " NAME           | LIST     | ENABLED | ENTRIES | LAST SUCCESS | LAST ERROR | NEXT UPDATE",
        "----------------+----------+---------+---------+--------------+------------+-------------",
        " firehol_level1 | firehol  | yes     |    4522 | 1h 0m ago    | -          | in 3h 59m",
        " spamhaus_drop  | spamhaus | yes     |    1235 | 1h 0m ago    | -          | in 3h 59m",
        "",
    ];
    assert_eq!(run.stdout, want.join("\n"));

    // One named feed fails: its row still prints, stderr says the old copy stays, exit 3.
    h.fake.state().failing_feeds.insert(
        "spamhaus_drop".into(),
        "HTTP 500 from feeds.example.invalid".into(),
    );
    let run = h.run(&["--json", "feeds", "update", "spamhaus_drop", "feodo"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(
        h.fake.state().last_update,
        Some(vec!["spamhaus_drop".to_string(), "feodo".to_string()])
    );
    let v = run.json();
    let names: Vec<&str> = v["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["spamhaus_drop", "feodo"]);
    assert_eq!(
        v["feeds"][0]["last_error"],
        "HTTP 500 from feeds.example.invalid"
    );
    assert_eq!(v["feeds"][1]["last_error"], Value::Null);
    assert_eq!(
        run.stderr,
        "medsctl: feed spamhaus_drop was not updated: HTTP 500 from feeds.example.invalid; \
         its last good copy (1235 entries) stays in force\n"
    );

    // Nothing enabled: nothing to do, said plainly (and an empty list in JSON).
    for feed in h.fake.state().feeds.iter_mut() {
        feed.enabled = false;
    }
    let run = h.run(&["feeds", "update"]);
    assert_ok(&run);
    assert_eq!(run.stdout, "no feed was updated: every feed is disabled\n");
    let run = h.run(&["--json", "feeds", "update"]);
    assert_ok(&run);
    assert_eq!(run.json(), json!({"feeds": []}));

    // An unknown name is refused: exit 4.
    let run = h.run(&["feeds", "update", "nope"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "medsctl: the controller refused the request: no feed named \"nope\"\n"
    );
}

#[test]
fn feeds_enable_disable_and_urls() {
    let h = Harness::start();
    let last = |h: &Harness| h.fake.state().last_configure.clone().expect("configured");

    let run = h.run(&["feeds", "disable", "firehol_level1"]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "disabled feed firehol_level1 (firehol list, 4521 entries, last success 1h 2m ago)\n"
    );
    assert_eq!(
        last(&h),
        pb::ConfigureFeedRequest {
            name: "firehol_level1".into(),
            enabled: Some(false),
            url: None,
        }
    );

    let run = h.run(&["feeds", "enable", "feodo"]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "enabled feed feodo (feodo list, 0 entries, last success never)\n"
    );
    assert_eq!(last(&h).enabled, Some(true));

    let run = h.run(&[
        "feeds",
        "set-url",
        "feodo",
        "file:///srv/mirror/ipblocklist.txt",
    ]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "feed feodo now fetches file:///srv/mirror/ipblocklist.txt\n"
    );
    assert_eq!(
        last(&h),
        pb::ConfigureFeedRequest {
            name: "feodo".into(),
            enabled: None,
            url: Some("file:///srv/mirror/ipblocklist.txt".into()),
        }
    );

    let run = h.run(&["--json", "feeds", "reset-url", "feodo"]);
    assert_ok(&run);
    assert_eq!(last(&h).url, Some(String::new()));
    let v = run.json();
    assert_eq!(v["name"], "feodo");
    assert_eq!(v["url"], "https://feeds.example.invalid/feodo");
    assert_eq!(v["enabled"], true);
    let run = h.run(&["feeds", "reset-url", "feodo"]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "feed feodo fetches its default URL again: https://feeds.example.invalid/feodo\n"
    );

    // Refusals by the controller: exit 4, message kept.
    let run = h.run(&[
        "feeds",
        "set-url",
        "feodo",
        "ftp://mirror.example.invalid/x",
    ]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("only https:// and file://"), "{run:?}");
    let run = h.run(&["--json", "feeds", "enable", "nope"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("no feed named \"nope\""), "{run:?}");
    assert_eq!(
        h.calls().iter().filter(|c| **c == "ConfigureFeed").count(),
        7
    );
}

#[test]
fn domains_go_to_the_domain_lists() {
    let h = Harness::start();

    let run = h.run(&[
        "blacklist",
        "add",
        "Bad.COM.",
        "bücher.example",
        "ads.tracker.example",
    ]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "added 3 entries to the domain blacklist (generation 1, applied by the dataplane)\n"
    );
    assert_eq!(
        h.stored(ListKind::DomainBlock),
        ["ads.tracker.example", "bad.com", "xn--bcher-kva.example"]
    );
    assert_eq!(h.stored(ListKind::IpBlock), Vec::<String>::new());

    // The alias, a duplicate in another spelling: one change.
    let run = h.run(&["blocklist", "add", "bad.com", "tracker.example"]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "added 1 of 2 entries to the domain blacklist (generation 2, applied by the dataplane)\n"
    );

    // `list` still shows the IP list unless asked for the domains.
    let run = h.run(&["blacklist", "list"]);
    assert_ok(&run);
    assert_eq!(run.stdout, "the blacklist is empty\n");
    let run = h.run(&["blacklist", "list", "--domains"]);
    assert_ok(&run);
    let want = [
        " DOMAIN",
        "-----------------------",
        " ads.tracker.example",
        " bad.com",
        " tracker.example",
        " xn--bcher-kva.example",
        "",
    ];
    assert_eq!(run.stdout, want.join("\n"));
    let run = h.run(&["--json", "blocklist", "ls", "--domains"]);
    assert_ok(&run);
    assert_eq!(
        run.json(),
        json!({"list": "domain_blacklist", "entries": [
            "ads.tracker.example", "bad.com", "tracker.example", "xn--bcher-kva.example",
        ]})
    );

    // A domain is found through itself or a parent, most specific first; a label boundary
    // matters (badge.com is not under bad.com). IP queries still go to the IP list.
    let run = h.run(&[
        "blacklist",
        "check",
        "www.bad.com",
        "badge.com",
        "WWW.Ads.Tracker.Example.",
        "203.0.113.7",
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");
    let want = [
        " QUERY                    | FOUND | MATCHES",
        "--------------------------+-------+--------------------------------------",
        " www.bad.com              | yes   | bad.com",
        " badge.com                | no    | -",
        " WWW.Ads.Tracker.Example. | yes   | ads.tracker.example, tracker.example",
        " 203.0.113.7              | no    | -",
        "",
    ];
    assert_eq!(run.stdout, want.join("\n"));
    let run = h.run(&["--json", "blacklist", "check", "shop.bücher.example"]);
    assert_ok(&run);
    assert_eq!(
        run.json(),
        json!({"results": [
            {"query": "shop.bücher.example", "found": true, "matches": ["xn--bcher-kva.example"]},
        ]})
    );

    let run = h.run(&["blacklist", "rm", "BAD.com"]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "removed 1 entry from the domain blacklist (generation 3, applied by the dataplane)\n"
    );
    let run = h.run(&[
        "--json",
        "blacklist",
        "remove",
        "not-there.example",
        "--no-wait",
    ]);
    assert_ok(&run);
    assert_eq!(
        run.json(),
        json!({"changed": 0, "generation": 3, "applied": true})
    );
    assert_eq!(h.fake.state().last_wait, Some(false));

    // The whitelist has its own domain list.
    let run = h.run(&["allowlist", "add", "good.example"]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "added 1 entry to the domain whitelist (generation 4, applied by the dataplane)\n"
    );
    let run = h.run(&["--json", "whitelist", "list", "--domains"]);
    assert_ok(&run);
    assert_eq!(
        run.json(),
        json!({"list": "domain_whitelist", "entries": ["good.example"]})
    );
    let run = h.run(&["--json", "whitelist", "list"]);
    assert_ok(&run);
    assert_eq!(run.json(), json!({"list": "whitelist", "entries": []}));
    let run = h.run(&["whitelist", "check", "api.good.example"]);
    assert_ok(&run);

    use ListKind::{DomainAllow, DomainBlock, IpAllow, IpBlock};
    assert_eq!(
        h.list_requests(),
        [
            DomainBlock, // add
            DomainBlock, // add
            IpBlock,     // list
            DomainBlock, // list --domains
            DomainBlock, // list --domains --json
            DomainBlock, // check www.bad.com
            DomainBlock, // check badge.com
            DomainBlock, // check WWW.Ads.Tracker.Example.
            IpBlock,     // check 203.0.113.7
            DomainBlock, // check shop.bücher.example
            DomainBlock, // rm
            DomainBlock, // remove
            DomainAllow, // add
            DomainAllow, // list --domains
            IpAllow,     // list
            DomainAllow, // check
        ]
    );

    let run = h.run(&["--json", "status"]);
    assert_ok(&run);
    let lists = &run.json()["lists"];
    assert_eq!(lists["domain_blacklist"], 3, "{lists}");
    assert_eq!(lists["domain_whitelist"], 1, "{lists}");
    assert_eq!(lists["blacklist"], 0, "{lists}");
    let run = h.run(&["status"]);
    assert_ok(&run);
    assert!(
        run.stdout.contains("\ndomain_blacklist entries  3\n"),
        "{run:?}"
    );
}

#[test]
fn ips_and_domains_are_not_mixed_in_one_change() {
    let h = Harness::start();
    let cases: [(&[&str], &str); 3] = [
        (
            &["blacklist", "add", "203.0.113.7", "bad.com"],
            "medsctl: cannot add IP addresses and domain names in one command: they are kept \
             in two lists (the blacklist and the domain blacklist) and a command changes one \
             list, all or nothing; run two commands: `medsctl blacklist add 203.0.113.7` and \
             `medsctl blacklist add bad.com`\n",
        ),
        (
            &[
                "--json",
                "whitelist",
                "rm",
                "good.example",
                "10.0.0.0/8",
                "--no-wait",
            ],
            "medsctl: cannot remove IP addresses and domain names in one command: they are \
             kept in two lists (the whitelist and the domain whitelist) and a command changes \
             one list, all or nothing; run two commands: `medsctl whitelist remove 10.0.0.0/8` \
             and `medsctl whitelist remove good.example`\n",
        ),
        (
            &[
                "allowlist",
                "add",
                "2001:db8::1",
                "bücher.example",
                "192.0.2.0/24",
            ],
            "`medsctl whitelist add 2001:db8::1 192.0.2.0/24` and \
             `medsctl whitelist add bücher.example`\n",
        ),
    ];
    for (args, want) in cases {
        let run = h.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}");
        assert!(run.stderr.ends_with(want), "{args:?}: {run:?}");
    }
    assert_eq!(h.calls(), Vec::<&str>::new());

    // `check` changes nothing, so it may mix: each query asks its own list.
    assert_ok(&h.run(&["blacklist", "add", "203.0.113.0/24"]));
    assert_ok(&h.run(&["blacklist", "add", "bad.com"]));
    let run = h.run(&["--json", "blacklist", "check", "203.0.113.7", "www.bad.com"]);
    assert_ok(&run);
    assert_eq!(
        run.json(),
        json!({"results": [
            {"query": "203.0.113.7", "found": true, "matches": ["203.0.113.0/24"]},
            {"query": "www.bad.com", "found": true, "matches": ["bad.com"]},
        ]})
    );
    assert_eq!(
        h.list_requests(),
        [
            ListKind::IpBlock,
            ListKind::DomainBlock,
            ListKind::IpBlock,
            ListKind::DomainBlock,
        ]
    );
}

const JA3_A: &str = "0cc1e84568e471aa1d62ba4ee3b8b6f8";
const JA3_B: &str = "e7d705a3286e19ea42f587b344ee6865";
const JA4_A: &str = "t13d1516h2_8daaf6152771_02713d6af862";
const JA4_B: &str = "t13d1517h2_8daaf6152771_b1ff8ab2d16f";

#[test]
fn ja3_add_list_check_remove() {
    let h = Harness::start();
    let upper_b = JA3_B.to_uppercase();
    let run = h.run(&["ja3", "add", &upper_b, JA3_A, JA3_B]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "added 2 of 3 entries to the JA3 blocklist (generation 1, applied by the dataplane)\n"
    );
    let run = h.run(&["ja3", "list"]);
    assert_ok(&run);
    let want = [
        " JA3",
        "----------------------------------",
        " 0cc1e84568e471aa1d62ba4ee3b8b6f8",
        " e7d705a3286e19ea42f587b344ee6865",
        "",
    ];
    assert_eq!(run.stdout, want.join("\n"));
    let run = h.run(&["--json", "ja3", "ls"]);
    assert_ok(&run);
    assert_eq!(
        run.json(),
        json!({"list": "ja3", "entries": [JA3_A, JA3_B]})
    );

    // Exact matches only; one missing: exit 1.
    let missing = "ffffffffffffffffffffffffffffffff";
    let run = h.run(&["--json", "ja3", "check", &upper_b, missing]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.json(),
        json!({"results": [
            {"query": upper_b, "found": true, "matches": [JA3_B]},
            {"query": missing, "found": false, "matches": []},
        ]})
    );
    let run = h.run(&["ja3", "check", JA3_A]);
    assert_ok(&run);
    let want = [
        " QUERY                            | FOUND | MATCHES",
        "----------------------------------+-------+----------------------------------",
        " 0cc1e84568e471aa1d62ba4ee3b8b6f8 | yes   | 0cc1e84568e471aa1d62ba4ee3b8b6f8",
        "",
    ];
    assert_eq!(run.stdout, want.join("\n"));

    let run = h.run(&["ja3", "rm", JA3_A, "--no-wait"]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "removed 1 entry from the JA3 blocklist (generation 2, applied by the dataplane)\n"
    );
    assert_eq!(h.stored(ListKind::Ja3Block), [JA3_B]);
    assert!(h.list_requests().iter().all(|l| *l == ListKind::Ja3Block));
}

#[test]
fn ja4_add_list_check_remove() {
    let h = Harness::start();
    let run = h.run(&["--json", "ja4", "add", JA4_B, &JA4_A.to_uppercase()]);
    assert_ok(&run);
    assert_eq!(
        run.json(),
        json!({"changed": 2, "generation": 1, "applied": true})
    );
    let run = h.run(&["ja4", "ls"]);
    assert_ok(&run);
    let want = [
        " JA4",
        "--------------------------------------",
        " t13d1516h2_8daaf6152771_02713d6af862",
        " t13d1517h2_8daaf6152771_b1ff8ab2d16f",
        "",
    ];
    assert_eq!(run.stdout, want.join("\n"));
    let run = h.run(&["--json", "ja4", "list"]);
    assert_ok(&run);
    assert_eq!(
        run.json(),
        json!({"list": "ja4", "entries": [JA4_A, JA4_B]})
    );

    // Same a and b parts, other c part: not a match.
    let other = "t13d1516h2_8daaf6152771_000000000000";
    let run = h.run(&["ja4", "check", JA4_A, other]);
    assert_eq!(run.code, 1, "{run:?}");
    let want = [
        " QUERY                                | FOUND | MATCHES",
        "--------------------------------------+-------+--------------------------------------",
        " t13d1516h2_8daaf6152771_02713d6af862 | yes   | t13d1516h2_8daaf6152771_02713d6af862",
        " t13d1516h2_8daaf6152771_000000000000 | no    | -",
        "",
    ];
    assert_eq!(run.stdout, want.join("\n"));

    let run = h.run(&["ja4", "remove", JA4_A, JA4_B]);
    assert_ok(&run);
    assert_eq!(
        run.stdout,
        "removed 2 entries from the JA4 blocklist (generation 2, applied by the dataplane)\n"
    );
    let run = h.run(&["ja4", "list"]);
    assert_ok(&run);
    assert_eq!(run.stdout, "the JA4 blocklist is empty\n");
    assert!(h.list_requests().iter().all(|l| *l == ListKind::Ja4Block));
    assert!(!h.fake.state().lists.contains_key(&ListKind::Ja3Block));
}

#[test]
fn bad_domains_and_fingerprints_exit_4_before_contacting_the_controller() {
    let h = Harness::start();
    // (arguments, every piece the message must contain)
    let cases: [(&[&str], &[&str]); 7] = [
        (
            &["blacklist", "add", "bad.com", "*.bad.com"],
            &[
                "\"*.bad.com\": not an IP address or prefix (",
                "not a domain name (\"*.bad.com\": wildcards are not supported",
            ],
        ),
        (
            &["whitelist", "add", "300.1.1.1"],
            &[
                "\"300.1.1.1\" is not a valid IPv4 or IPv6 address",
                "top-level label \"1\" is all digits",
            ],
        ),
        (
            &[
                "--json",
                "blacklist",
                "check",
                "1.2.3",
                "bad.com",
                "bad .com",
            ],
            &[
                "\"1.2.3\": not an IP",
                "\"bad .com\": not an IP",
                "character ' '",
            ],
        ),
        (
            &["blocklist", "rm", ""],
            &["empty value: expected an IP address, a CIDR prefix or a domain name"],
        ),
        (
            &["ja3", "add", JA3_A, "e7d705a3286e19ea42f587b344ee686"],
            &["\"e7d705a3286e19ea42f587b344ee686\" is not a JA3 hash"],
        ),
        (
            &["ja4", "check", "bad.com"],
            &["\"bad.com\" is not a JA4 fingerprint (not 36 characters long)"],
        ),
        (
            &["ja4", "remove", "x13d1516h2_8daaf6152771_02713d6af862"],
            &["protocol must be 't', 'q' or 'd'"],
        ),
    ];
    for (args, needles) in cases {
        let run = h.run(args);
        assert_eq!(run.code, 4, "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}");
        assert!(
            run.stderr.starts_with("medsctl: invalid argument: "),
            "{run:?}"
        );
        for needle in needles {
            assert!(run.stderr.contains(needle), "{needle}: {run:?}");
        }
    }
    assert_eq!(h.calls(), Vec::<&str>::new());
}

#[test]
fn feeds_list_shows_the_domain_and_fingerprint_feeds() {
    let h = Harness::start();
    {
        let mut state = h.fake.state();
        let template = state.feeds[0].clone();
        state.feeds = ["stevenblack", "someonewhocares", "sslbl_ja3"]
            .iter()
            .zip([85_000, 14_000, 120])
            .map(|(name, entries)| pb::FeedStatus {
                name: name.to_string(),
                list: name.to_string(),
                url: format!("https://feeds.example.invalid/{name}"),
                entries,
                ..template.clone()
            })
            .collect();
    }
    let run = h.run(&["feeds", "list"]);
    assert_ok(&run);
    let want = [
        " NAME            | LIST            | ENABLED | ENTRIES | LAST SUCCESS | LAST ERROR | NEXT UPDATE",
        "-----------------+-----------------+---------+---------+--------------+------------+-------------",
        " stevenblack     | stevenblack     | yes     |   85000 | 1h 2m ago    | -          | in 2h 59m",
        " someonewhocares | someonewhocares | yes     |   14000 | 1h 2m ago    | -          | in 2h 59m",
        " sslbl_ja3       | sslbl_ja3       | yes     |     120 | 1h 2m ago    | -          | in 2h 59m",
        "",
    ];
    assert_eq!(run.stdout, want.join("\n"));
    let run = h.run(&["--json", "feeds", "list"]);
    assert_ok(&run);
    let names: Vec<String> = run.json()["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["list"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["stevenblack", "someonewhocares", "sslbl_ja3"]);
}

#[test]
fn explain_as_a_table_and_as_json() {
    let h = Harness::start();
    let run = h.run(&[
        "explain",
        "203.0.113.7",
        "--port",
        "443",
        "--sni",
        "www.example.com",
        "--dns",
        "a.example",
        "--dns",
        "b.example",
    ]);
    // a dropped packet is an answer, not an error
    assert_ok(&run);
    let want = [
        " # | FILTER | LIST      | OUTCOME                  | DETAIL",
        "---+--------+-----------+--------------------------+----------------",
        " 1 | ip     | whitelist | no match                 |",
        " 2 | ip     | blacklist | MATCH → drop (BlackList) | 203.0.113.0/24",
        " 3 | ip     | firehol   | not reached              |",
        "",
        "decision    drop (ip/BlackList) for 203.0.113.7",
        "generation  0",
        "offload     blocked (offloaded)",
        "",
    ];
    assert_eq!(run.stdout, want.join("\n"));
    let q = h.fake.state().last_explain.clone().unwrap();
    assert_eq!(
        (q.ip.as_str(), q.port, q.sni.as_str()),
        ("203.0.113.7", 443, "www.example.com")
    );
    assert_eq!(q.dns, ["a.example", "b.example"]);

    let run = h.run(&["--json", "explain", "2001:DB8::1"]);
    assert_ok(&run);
    assert_eq!(
        run.json(),
        json!({
            "ip": "2001:db8::1",
            "generation": 0,
            "steps": [
                {"filter":"ip","list":"whitelist","outcome":"no_match","detail":"","verdict":"","reason":""},
                {"filter":"ip","list":"blacklist","outcome":"no_match","detail":"","verdict":"","reason":""},
                {"filter":"ip","list":"firehol","outcome":"skipped","detail":"empty list","verdict":"","reason":""}
            ],
            "verdict": "accept",
            "filter": "empty",
            "reason": "default",
            "offload": "trusted (offloaded)"
        })
    );
}

#[test]
fn explain_errors() {
    let h = Harness::start();
    // a bad address is refused locally: exit 4, nothing sent
    let run = h.run(&["explain", "300.1.1.1"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("300.1.1.1"), "{run:?}");
    // a port out of range is a usage error (clap)
    let run = h.run(&["explain", "203.0.113.7", "--port", "70000"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(!h.calls().contains(&"Explain"));
    // refused by the controller: exit 4, naming the field
    let run = h.run(&["explain", "203.0.113.7", "--ja3", "xyz"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("ja3: "), "{run:?}");
    assert_eq!(run.stdout, "");
    // no dataplane: a controller-side failure, exit 3
    h.fake.state().dataplane_connected = false;
    let run = h.run(&["explain", "203.0.113.7"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("no enforcing dataplane"), "{run:?}");
    // no controller at all: exit 3 naming the socket
    let run = run_with_socket(
        &h.dir.path().join("missing.sock"),
        &["explain", "203.0.113.7"],
    );
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("missing.sock"), "{run:?}");
}

fn drop_event(last: u8, sni: &str) -> pb::DropEvent {
    pb::DropEvent {
        time_unix_ms: 1_764_383_400_123,
        source: vec![203, 0, 113, last],
        source_port: 40_000,
        destination_port: 443,
        protocol: 6,
        filter: if sni.is_empty() { "ip" } else { "domain" }.into(),
        reason: "BlackList".into(),
        sni: sni.into(),
        queue: 1,
        ..pb::DropEvent::default()
    }
}

#[test]
fn events_as_lines_and_as_json() {
    let h = Harness::start();
    h.fake.state().events = vec![
        drop_event(1, ""),
        drop_event(2, ""),
        drop_event(3, "bad.example"),
        pb::DropEvent {
            source: vec![0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            protocol: 47,
            ja3: "b386946a5a44d1ddcc843bc75336dfce".into(),
            ..drop_event(4, "")
        },
    ];
    let run = h.run(&["events", "--recent", "3"]);
    assert_ok(&run);
    let want = [
        "(1 drop decisions not shown: not sampled, or missed)",
        "2025-11-29T02:30:00.123Z  203.0.113.2:40000 → :443 tcp  ip/BlackList",
        "2025-11-29T02:30:00.123Z  203.0.113.3:40000 → :443 tcp  domain/BlackList  sni=bad.example",
        "2025-11-29T02:30:00.123Z  [2001:db8::1]:40000 → :443 47  ip/BlackList  ja3=b386946a5a44d1ddcc843bc75336dfce",
        "",
    ];
    assert_eq!(run.stdout, want.join("\n"));
    assert_eq!(
        h.fake.state().last_events,
        Some(pb::EventsRequest {
            follow: false,
            recent: 3
        })
    );

    let run = h.run(&["events", "--json"]);
    assert_ok(&run);
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines[2],
        json!({"time":"2025-11-29T02:30:00.123Z","source":"203.0.113.3","source_port":40000,
               "destination_port":443,"protocol":"tcp","filter":"domain","reason":"BlackList",
               "sni":"bad.example","queue":1})
    );
    assert_eq!(lines[3]["protocol"], 47);
    assert_eq!(lines[3]["source"], "2001:db8::1");
    // the default asks for the 100 most recent
    assert_eq!(h.fake.state().last_events.unwrap().recent, 100);

    // nothing recorded: no output, exit 0
    h.fake.state().events.clear();
    let run = h.run(&["events"]);
    assert_ok(&run);
    assert_eq!(run.stdout, "");
}

#[test]
fn events_follow_ends_cleanly_on_ctrl_c() {
    use std::io::BufRead as _;
    let h = Harness::start();
    h.fake.state().events = vec![drop_event(9, "")];
    let mut child = medsctl()
        .arg("--socket")
        .arg(&h.socket)
        .args(["--json", "events", "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let line: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(line["source"], "203.0.113.9");
    // still running (following, beyond the default 10 s timeout would not matter here)
    assert!(child.try_wait().unwrap().is_none());
    // SAFETY: signalling our own child process.
    let pid = i32::try_from(child.id()).unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(stderr, "");
    assert_eq!(
        h.fake.state().last_events,
        Some(pb::EventsRequest {
            follow: true,
            recent: 100
        })
    );
}
