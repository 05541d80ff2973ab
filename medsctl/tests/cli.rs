//! The real `medsctl` binary against an in-test Admin server (a fake, in-memory controller) on
//! a temporary Unix socket: output in table and JSON modes, and every exit code.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests panic on purpose.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};

use meds_proto::pb;
use meds_proto::pb::admin_server::{Admin, AdminServer};
use meds_proto::{Cidr, ListKind};
use serde_json::{Value, json};
use tonic::{Request, Response, Status};

/// What the fake controller stores and how it behaves.
#[derive(Debug, Default)]
struct State {
    lists: BTreeMap<ListKind, BTreeSet<Cidr>>,
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
    /// `wait_applied` of the last Add/Remove.
    last_wait: Option<bool>,
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
fn parse_entries(entries: &[String]) -> Result<Vec<Cidr>, Status> {
    let mut out = Vec::new();
    for entry in entries {
        let cidr: Cidr = entry
            .parse()
            .map_err(|e: meds_proto::CidrError| Status::invalid_argument(e.to_string()))?;
        if cidr.is_empty() {
            return Err(Status::invalid_argument(format!(
                "{entry:?} would match every address"
            )));
        }
        out.push(cidr);
    }
    Ok(out)
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
        let entries = parse_entries(&request.entries)?;
        let set = state.lists.entry(list).or_default();
        let mut changed = 0u32;
        for cidr in entries {
            let did = if add {
                set.insert(cidr)
            } else {
                set.remove(&cidr)
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
            lists: vec![size(ListKind::IpAllow), size(ListKind::IpBlock)],
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
            }),
            controller_uptime_seconds: 3_725,
        }))
    }

    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let mut state = self.state();
        state.calls.push("ListEntries");
        let list = list_of(request.into_inner().list)?;
        let entries = state
            .lists
            .get(&list)
            .map_or_else(Vec::new, |s| s.iter().map(Cidr::to_string).collect());
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
        let query: Cidr = request
            .query
            .parse()
            .map_err(|e: meds_proto::CidrError| Status::invalid_argument(e.to_string()))?;
        let mut matches: Vec<Cidr> = state.lists.get(&list).map_or_else(Vec::new, |s| {
            s.iter().filter(|c| c.covers(&query)).copied().collect()
        });
        matches.sort_by_key(|c| std::cmp::Reverse(c.len()));
        Ok(Response::new(pb::CheckEntryResponse {
            found: !matches.is_empty(),
            matches: matches.iter().map(Cidr::to_string).collect(),
        }))
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
    assert_eq!(
        run.json(),
        json!({
            "controller_version": "9.9.9-test",
            "generation": 1,
            "dataplane_connected": true,
            "applied_generation": 1,
            "dataplane_version": "9.9.8-test",
            "dataplane_queues": [0, 1],
            "lists": {"whitelist": 2, "blacklist": 0},
            "controller_uptime_seconds": 3725,
            "dataplane_stats": {
                "packets_processed": 1000,
                "updates_rejected": 0,
                "verdict_errors": 2,
                "decisions": [
                    {"verdict": "drop", "filter": "ip", "reason": "BlackList", "packets": 7},
                    {"verdict": "accept", "filter": "empty", "reason": "default", "packets": 993},
                ],
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

    let run = h.run(&["status"]);
    assert_ok(&run);
    let want = [
        "controller version   9.9.9-test",
        "controller uptime    1h 2m 5s",
        "generation           1",
        "dataplane connected  yes",
        "applied generation   1 (in sync)",
        "dataplane version    9.9.8-test",
        "dataplane queues     0, 1",
        "whitelist entries    0",
        "blacklist entries    1",
        "packets processed    1000",
        "updates rejected     0",
        "verdict errors       2",
        "",
        " VERDICT | FILTER | REASON    | PACKETS",
        "---------+--------+-----------+---------",
        " drop    | ip     | BlackList |       7",
        " accept  | empty  | default   |     993",
        "",
    ];
    assert_eq!(run.stdout, want.join("\n"));

    h.fake.state().dataplane_connected = false;
    assert_ok(&h.run(&["blacklist", "add", "198.51.100.0/24", "--no-wait"]));
    let run = h.run(&["status"]);
    assert_ok(&run);
    assert!(run.stdout.contains("dataplane connected  no\n"), "{run:?}");
    assert!(
        run.stdout
            .contains("applied generation   1 (behind by 1)\n"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("dataplane stats      none reported\n"),
        "{run:?}"
    );
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
    let run = h.run(&["blacklist", "check", "not-an-ip"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("\"not-an-ip\""), "{run:?}");
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
