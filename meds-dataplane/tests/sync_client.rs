//! The sync client against a scripted in-test controller on a temporary Unix socket.
//! No root needed, except for the last test, which runs the real `meds-dataplane` binary in a
//! throwaway network namespace (skipped with a message when not root).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use meds_dataplane::chain::RuleSet;
use meds_dataplane::counters::Counters;
use meds_dataplane::policy::{self, PolicyStore};
use meds_dataplane::sync::{Backoff, SyncClient, SyncConfig, SyncStats};
use meds_proto::pb::{self, controller_message, dataplane_message};
use meds_proto::sync::{delta_chunks, full_update_chunks};
use meds_proto::{Asn, Cidr, CountryCode, Entry, IpAsn, ListKind};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(10);

type Outbound = mpsc::Sender<Result<pb::ControllerMessage, Status>>;

/// One stream the client opened: what it sends us, and where we write to it.
struct Conn {
    inbound: Streaming<pb::DataplaneMessage>,
    outbound: Outbound,
}

struct ScriptedController {
    streams: mpsc::UnboundedSender<Conn>,
}

#[tonic::async_trait]
impl pb::sync_server::Sync for ScriptedController {
    type StreamStream = ReceiverStream<Result<pb::ControllerMessage, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<pb::DataplaneMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let (outbound, rx) = mpsc::channel(64);
        self.streams
            .send(Conn {
                inbound: request.into_inner(),
                outbound,
            })
            .map_err(|_| Status::unavailable("test finished"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Server {
    streams: mpsc::UnboundedReceiver<Conn>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    fn start(socket: &Path) -> Server {
        let listener = UnixListener::bind(socket).unwrap();
        let (tx, streams) = mpsc::unbounded_channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(pb::sync_server::SyncServer::new(ScriptedController {
                    streams: tx,
                }))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Server {
            streams,
            stop: Some(stop),
            task,
        }
    }

    async fn next_stream(&mut self) -> Conn {
        tokio::time::timeout(WAIT, self.streams.recv())
            .await
            .expect("client did not (re)connect")
            .unwrap()
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        drop(self.streams);
        let _ = tokio::time::timeout(WAIT, self.task).await;
    }
}

impl Conn {
    /// The next message that is not periodic stats (the stats are checked elsewhere).
    async fn next_non_stats(&mut self) -> dataplane_message::Msg {
        loop {
            let msg = tokio::time::timeout(WAIT, self.inbound.message())
                .await
                .expect("no message from the client")
                .expect("stream error")
                .expect("client closed the stream");
            match msg.msg {
                Some(dataplane_message::Msg::Stats(_)) => continue,
                Some(other) => return other,
                None => panic!("empty message"),
            }
        }
    }

    async fn hello(&mut self) -> pb::Hello {
        match self.next_non_stats().await {
            dataplane_message::Msg::Hello(h) => h,
            other => panic!("expected Hello, got {other:?}"),
        }
    }

    async fn send(&self, chunks: Vec<pb::UpdateChunk>) {
        for chunk in chunks {
            self.outbound
                .send(Ok(pb::ControllerMessage {
                    msg: Some(controller_message::Msg::Update(chunk)),
                }))
                .await
                .unwrap();
        }
    }

    async fn expect_ack(&mut self, generation: u64) {
        match self.next_non_stats().await {
            dataplane_message::Msg::Ack(a) => assert_eq!(a.generation, generation),
            other => panic!("expected Ack {generation}, got {other:?}"),
        }
    }

    /// Stats messages until one satisfies `pred`.
    async fn stats_until(
        &mut self,
        pred: impl Fn(&pb::DataplaneStats) -> bool,
    ) -> pb::DataplaneStats {
        loop {
            let msg = tokio::time::timeout(WAIT, self.inbound.message())
                .await
                .expect("no stats from the client")
                .expect("stream error")
                .expect("client closed the stream");
            if let Some(dataplane_message::Msg::Stats(s)) = msg.msg
                && pred(&s)
            {
                return s;
            }
        }
    }

    /// Wait until the client drops the stream (end or reset), ignoring its stats.
    async fn expect_closed_by_client(&mut self) {
        let ended = tokio::time::timeout(WAIT, async {
            loop {
                match self.inbound.message().await {
                    Ok(Some(pb::DataplaneMessage {
                        msg: Some(dataplane_message::Msg::Stats(_)),
                    })) => continue,
                    Ok(Some(other)) => panic!("unexpected {other:?}"),
                    Ok(None) | Err(_) => return,
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "client kept the stream open");
    }
}

fn c(s: &str) -> Entry {
    Entry::Prefix(s.parse().unwrap())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Client {
    live: Arc<ArcSwap<RuleSet>>,
    store: Arc<PolicyStore>,
    stats: Arc<SyncStats>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn start_client(socket: PathBuf, state_file: Option<PathBuf>) -> Client {
    let live = Arc::new(ArcSwap::from_pointee(RuleSet::empty()));
    let store = Arc::new(PolicyStore::new(Arc::clone(&live)));
    let mut cfg = SyncConfig::new(socket, vec![3]);
    cfg.stats_interval = Duration::from_millis(50);
    cfg.backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    let client = SyncClient::new(cfg, Arc::clone(&store), Arc::new(Counters::new()));
    let stats = client.stats();
    let (stop, stopped) = watch::channel(false);
    let mut tasks = vec![tokio::spawn(client.run(stopped.clone()))];
    if let Some(path) = state_file {
        tasks.push(tokio::spawn(policy::persist(
            Arc::clone(&store),
            path,
            Duration::from_millis(10),
            stopped,
        )));
    }
    Client {
        live,
        store,
        stats,
        stop,
        tasks,
    }
}

impl Client {
    async fn stop(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("client did not stop")
                .unwrap();
        }
    }
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_delta_malformed_then_resync() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sync.sock");
    let state_file = dir.path().join("state/policy.pb");
    let mut server = Server::start(&socket);
    let client = start_client(socket.clone(), Some(state_file.clone()));

    // Stream 1: hello, snapshot, delta, then a malformed chunk.
    let mut conn = server.next_stream().await;
    let hello = conn.hello().await;
    assert_eq!(hello.applied_generation, 0);
    assert_eq!(hello.queues, vec![3]);
    assert_eq!(hello.pid, std::process::id());
    assert!(!hello.version.is_empty());

    let block = [c("203.0.113.0/24"), c("2001:db8::/32")];
    let allow = [c("203.0.113.7")];
    conn.send(full_update_chunks(
        1,
        &[(ListKind::IpAllow, &allow), (ListKind::IpBlock, &block)],
    ))
    .await;
    conn.expect_ack(1).await;
    // The ack is only sent once the rule set is live.
    let rules = client.live.load_full();
    assert_eq!(rules.generation(), 1);
    assert!(rules.allow().contains(ip("203.0.113.7")));
    assert!(rules.block().contains(ip("203.0.113.0")));
    assert!(rules.block().contains(ip("203.0.113.255")));
    assert!(rules.block().contains(ip("2001:db8::1")));
    assert!(!rules.block().contains(ip("203.0.114.0")));

    conn.send(delta_chunks(
        2,
        ListKind::IpBlock,
        &[c("198.51.100.7")],
        &[c("203.0.113.0/24")],
    ))
    .await;
    conn.expect_ack(2).await;
    let rules = client.live.load_full();
    assert_eq!(rules.generation(), 2);
    assert!(rules.block().contains(ip("198.51.100.7")));
    assert!(!rules.block().contains(ip("203.0.113.9")));
    assert!(rules.block().contains(ip("2001:db8::1")));
    assert!(rules.allow().contains(ip("203.0.113.7")));

    // The state file follows.
    eventually("state file at generation 2", || {
        policy::read_state_file(&state_file)
            .ok()
            .flatten()
            .is_some_and(|s| s.generation() == 2)
    })
    .await;

    // A malformed chunk: an IPv4 prefix longer than 32 bits.
    let mut bad = delta_chunks(3, ListKind::IpBlock, &[c("192.0.2.1")], &[]);
    match bad[0].changes[0].add[0].value.as_mut() {
        Some(pb::entry::Value::Prefix(p)) => p.prefix_len = 33,
        other => panic!("expected a prefix, got {other:?}"),
    }
    conn.send(bad).await;
    conn.expect_closed_by_client().await;
    eventually("rejection counted", || client.stats.updates_rejected() == 1).await;
    // The previous state stays in force.
    let rules = client.live.load_full();
    assert_eq!(rules.generation(), 2);
    assert!(rules.block().contains(ip("198.51.100.7")));
    assert!(!rules.block().contains(ip("192.0.2.1")));
    assert_eq!(client.store.generation(), 2);

    // Stream 2: the client reconnects on its own, reports what it enforces, and resyncs from a
    // multi-chunk snapshot that replaces everything.
    let mut conn = server.next_stream().await;
    let hello = conn.hello().await;
    assert_eq!(hello.applied_generation, 2);
    let many: Vec<Entry> = (0..5000u32)
        .map(|i| {
            let base = u128::from("2001:db8::1:0".parse::<std::net::Ipv6Addr>().unwrap());
            Entry::Prefix(Cidr::host(IpAddr::V6((base + u128::from(i)).into())))
        })
        .collect();
    let chunks = full_update_chunks(5, &[(ListKind::IpBlock, &many)]);
    assert!(chunks.len() > 1);
    conn.send(chunks).await;
    conn.expect_ack(5).await;
    let rules = client.live.load_full();
    assert_eq!(rules.generation(), 5);
    assert_eq!(rules.block().len(), 5000);
    assert!(
        rules.allow().is_empty(),
        "a full update clears lists it does not name"
    );
    assert!(!rules.block().contains(ip("2001:db8::1")));

    // Stats carry the rejection, the process start and the instance id.
    let stats = conn.stats_until(|s| s.updates_rejected == 1).await;
    assert!(stats.started_at_unix > 0);
    assert_ne!(stats.instance_id, 0);
    let instance_id = stats.instance_id;

    // Stream 3: the controller ends the stream (e.g. restarts); the policy stays in force and
    // the client comes back, still the same instance.
    drop(conn);
    let mut conn = server.next_stream().await;
    assert_eq!(conn.hello().await.applied_generation, 5);
    let stats = conn.stats_until(|_| true).await;
    assert_eq!(stats.instance_id, instance_id);
    assert_eq!(stats.updates_rejected, 1);
    assert_eq!(client.live.load().generation(), 5);
    // The client counts a stream once the controller's response headers arrive, which can be
    // just after the Hello reached us.
    eventually("three streams counted", || {
        client.stats.streams_opened() == 3
    })
    .await;
    assert_eq!(client.stats.updates_applied(), 3);

    let store = Arc::clone(&client.store);
    client.stop().await;
    // The final state was written at shutdown.
    let saved = policy::read_state_file(&state_file).unwrap().unwrap();
    assert_eq!(saved, store.snapshot());
    assert_eq!(saved.generation(), 5);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_retrying_until_the_controller_appears() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("late.sock");
    let client = start_client(socket.clone(), None);
    // No socket yet: connection attempts fail and are counted; nothing is torn down.
    eventually("several failed attempts", || {
        client.stats.stream_failures() >= 3
    })
    .await;
    assert!(!client.stats.connected());
    assert_eq!(client.live.load().generation(), 0);

    let mut server = Server::start(&socket);
    let mut conn = server.next_stream().await;
    assert_eq!(conn.hello().await.applied_generation, 0);
    conn.send(full_update_chunks(1, &[])).await;
    conn.expect_ack(1).await;
    assert!(client.stats.connected());

    // Deltas out of order are refused like malformed chunks.
    conn.send(delta_chunks(
        3,
        ListKind::IpAllow,
        &[c("192.0.2.0/24")],
        &[],
    ))
    .await;
    conn.expect_closed_by_client().await;
    eventually("rejection counted", || client.stats.updates_rejected() == 1).await;
    assert_eq!(client.live.load().generation(), 1);
    assert!(!client.live.load().allow().contains(ip("192.0.2.1")));

    let _reconnected = server.next_stream().await;
    client.stop().await;
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_while_disconnected_is_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let client = start_client(dir.path().join("nobody.sock"), None);
    eventually("a failed attempt", || client.stats.stream_failures() >= 1).await;
    client.stop().await;
}

fn row(net: &str, asn: u32, country: &str) -> Entry {
    Entry::IpAsn(IpAsn {
        prefix: net.parse().unwrap(),
        asn: Asn::new(asn).ok(),
        country: CountryCode::from_feed(country).ok(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_kind_syncs_and_a_changed_asn_row_applies() {
    use meds_dataplane::chain::Decision;

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sync.sock");
    let mut server = Server::start(&socket);
    let client = start_client(socket.clone(), None);
    let mut conn = server.next_stream().await;
    conn.hello().await;

    let allow = [c("8.8.8.8")];
    let block = [c("203.0.113.0/24")];
    let firehol = [c("198.51.100.0/24")];
    let spamhaus = [c("2001:db8:5::/48")];
    let feodo = [c("8.8.8.8"), c("192.0.2.1")];
    let countries = [Entry::Country("ru".parse().unwrap())];
    let asn_block = [Entry::Asn("AS64498".parse().unwrap())];
    let asn_drop = [Entry::Asn(Asn::new(64497).unwrap())];
    let table = [
        row("100.64.0.0/16", 64496, "ru"),
        row("100.65.0.0/16", 64497, "de"),
        row("100.66.0.0/16", 64498, "de"),
        row("2001:db8:100::/48", 64496, "ru"),
    ];
    conn.send(full_update_chunks(
        1,
        &[
            (ListKind::IpAllow, &allow),
            (ListKind::IpBlock, &block),
            (ListKind::FeedFireHol, &firehol),
            (ListKind::FeedSpamhaus, &spamhaus),
            (ListKind::FeedFeodo, &feodo),
            (ListKind::CountryBlock, &countries),
            (ListKind::AsnBlock, &asn_block),
            (ListKind::FeedAsnDrop, &asn_drop),
            (ListKind::IpAsn, &table),
        ],
    ))
    .await;
    conn.expect_ack(1).await;
    let rules = client.live.load_full();
    let cases = [
        ("8.8.8.8", Decision::WHITELISTED),
        ("203.0.113.255", Decision::BLACKLISTED),
        ("198.51.100.0", Decision::FIREHOL),
        ("2001:db8:5:ffff:ffff:ffff:ffff:ffff", Decision::SPAMHAUS),
        ("192.0.2.1", Decision::FEODO),
        ("100.64.0.0", Decision::COUNTRY),
        ("2001:db8:100::1", Decision::COUNTRY),
        ("100.65.255.255", Decision::ASN_DROP),
        ("100.66.1.1", Decision::ASN_BLACKLISTED),
        ("100.67.0.0", Decision::DEFAULT),
    ];
    for (addr, want) in cases {
        assert_eq!(rules.evaluate_source(ip(addr)), want, "{addr}");
    }

    // The table changes one row (same prefix, new ASN and country): only the table is rebuilt.
    conn.send(delta_chunks(
        2,
        ListKind::IpAsn,
        &[row("100.64.0.0/16", 64497, "de")],
        &[row("100.64.0.0/16", 64496, "ru")],
    ))
    .await;
    conn.expect_ack(2).await;
    let after = client.live.load_full();
    assert_eq!(after.evaluate_source(ip("100.64.0.0")), Decision::ASN_DROP);
    for kind in ListKind::ALL {
        assert_eq!(
            after.shares_list(&rules, kind),
            kind != ListKind::IpAsn,
            "{kind}"
        );
    }

    // A country entry in the prefix list is refused on the wire.
    let mut wrong = delta_chunks(3, ListKind::IpBlock, &[c("192.0.2.9")], &[]);
    wrong[0].changes[0].add[0] = Entry::Country("fr".parse().unwrap()).to_wire();
    conn.send(wrong).await;
    conn.expect_closed_by_client().await;
    eventually("rejection counted", || client.stats.updates_rejected() == 1).await;
    assert_eq!(client.live.load().generation(), 2);

    let _reconnected = server.next_stream().await;
    client.stop().await;
    server.shutdown().await;
}

/// A network namespace deleted on drop, even when the test panics.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("meds-sync-{tag}-{}", std::process::id());
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .output();
        let out = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns { name }
    }

    /// Rules of `family_binary` in the table Meds hooks into that mention `needle`.
    fn rules_with(&self, family_binary: &str, needle: &str) -> Vec<String> {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.name, family_binary, "-w", "-t"])
            .arg(meds_dataplane::firewall::TABLE)
            .arg("-S")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The real binary inside a namespace; SIGKILLed on drop if still running.
struct Daemon {
    child: std::process::Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(ns: &Netns, socket: &Path, state_file: &Path, log: PathBuf) -> Daemon {
        let log_file = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                env!("CARGO_BIN_EXE_meds-dataplane"),
            ])
            .arg("--sync-socket")
            .arg(socket)
            .arg("--state-file")
            .arg(state_file)
            .args([
                "--queue-num",
                "11",
                "--chain",
                "MEDSD",
                "--log-format",
                "json",
            ])
            .env_remove("MEDS_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait for a clean exit.
    async fn terminate(mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill has no memory-safety preconditions; `pid` is our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = tokio::time::Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "daemon ignored SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(status.success(), "exit {status}; log:\n{}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipping: needs root (network namespace, NFQUEUE, iptables)");
    }
    root
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_in_netns_syncs_persists_and_cleans_up_on_sigterm() {
    if !is_root() {
        return;
    }
    let ns = Netns::new("d");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sync.sock");
    let state_file = dir.path().join("state/policy.pb");
    let mut server = Server::start(&socket);

    // First run: sync generation 7 from the controller.
    let daemon = Daemon::spawn(&ns, &socket, &state_file, dir.path().join("run1.log"));
    let mut conn = server.next_stream().await;
    let hello = conn.hello().await;
    assert_eq!(
        (hello.applied_generation, hello.queues.clone()),
        (0, vec![11])
    );
    assert_eq!(hello.pid, daemon.child.id());
    conn.send(full_update_chunks(
        7,
        &[(ListKind::IpBlock, &[c("203.0.113.0/24")])],
    ))
    .await;
    conn.expect_ack(7).await;
    for binary in ["iptables", "ip6tables"] {
        let input: Vec<String> = ns.rules_with(binary, "-A INPUT").into_iter().collect();
        assert_eq!(
            input,
            vec!["-A INPUT -m comment --comment meds -j MEDSD"],
            "{binary}"
        );
    }
    eventually("state file at generation 7", || {
        policy::read_state_file(&state_file)
            .ok()
            .flatten()
            .is_some_and(|s| s.generation() == 7)
    })
    .await;
    daemon.terminate().await;
    for binary in ["iptables", "ip6tables"] {
        assert!(
            ns.rules_with(binary, "MEDSD").is_empty(),
            "{binary} rules left behind"
        );
    }
    drop(conn);
    server.shutdown().await;
    let _ = std::fs::remove_file(&socket);

    // Second run, controller away: the saved policy is enforced and reported.
    let daemon = Daemon::spawn(&ns, &socket, &state_file, dir.path().join("run2.log"));
    eventually("saved policy restored", || {
        daemon
            .log()
            .lines()
            .any(|l| l.contains("enforcing the saved policy") && l.contains("\"generation\":7"))
    })
    .await;
    eventually("rules installed without a controller", || {
        !ns.rules_with("iptables", "-A INPUT -m comment --comment meds -j MEDSD")
            .is_empty()
    })
    .await;
    // The controller comes back: the daemon reconnects and says what it enforces.
    let mut server = Server::start(&socket);
    let mut conn = server.next_stream().await;
    assert_eq!(conn.hello().await.applied_generation, 7);
    daemon.terminate().await;
    for binary in ["iptables", "ip6tables"] {
        assert!(
            ns.rules_with(binary, "MEDSD").is_empty(),
            "{binary} rules left behind"
        );
    }
    server.shutdown().await;
}

/// Drop-event batches go out on the stream; explain requests are answered from the live rule
/// set (a bad one with an error, the stream stays open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_events_and_answers_explain() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sync.sock");
    let mut server = Server::start(&socket);
    let live = Arc::new(ArcSwap::from_pointee(RuleSet::empty()));
    let store = Arc::new(PolicyStore::new(Arc::clone(&live)));
    let mut cfg = SyncConfig::new(socket, vec![3]);
    cfg.stats_interval = Duration::from_secs(3600);
    let (events, batches) = mpsc::channel(4);
    let client = SyncClient::new(cfg, store, Arc::new(Counters::new()))
        .with_events(batches)
        .with_explain(None, true);
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(client.run(stopped));

    let mut conn = server.next_stream().await;
    conn.hello().await;
    conn.send(full_update_chunks(
        1,
        &[(ListKind::IpBlock, &[c("203.0.113.0/24")][..])],
    ))
    .await;
    conn.expect_ack(1).await;

    let batch = pb::EventBatch {
        events: vec![pb::DropEvent {
            source: vec![203, 0, 113, 7],
            filter: "ip".into(),
            reason: "BlackList".into(),
            ..pb::DropEvent::default()
        }],
        suppressed: 2,
    };
    events.send(batch.clone()).await.unwrap();
    match conn.next_non_stats().await {
        dataplane_message::Msg::Events(got) => assert_eq!(got, batch),
        other => panic!("expected events, got {other:?}"),
    }

    let explain = |id, source: Vec<u8>| pb::ControllerMessage {
        msg: Some(controller_message::Msg::Explain(pb::ExplainRequest {
            id,
            source,
            ..pb::ExplainRequest::default()
        })),
    };
    conn.outbound
        .send(Ok(explain(5, vec![203, 0, 113, 7])))
        .await
        .unwrap();
    match conn.next_non_stats().await {
        dataplane_message::Msg::Explain(r) => {
            assert_eq!(r.id, 5);
            assert!(r.error.is_empty(), "{r:?}");
            assert_eq!(
                (r.verdict.as_str(), r.reason.as_str()),
                ("drop", "BlackList")
            );
            assert_eq!(r.generation, 1);
        }
        other => panic!("expected an explain answer, got {other:?}"),
    }
    conn.outbound
        .send(Ok(explain(6, vec![1, 2, 3, 4, 5])))
        .await
        .unwrap();
    match conn.next_non_stats().await {
        dataplane_message::Msg::Explain(r) => {
            assert_eq!(r.id, 6);
            assert!(!r.error.is_empty(), "{r:?}");
        }
        other => panic!("expected an explain answer, got {other:?}"),
    }
    // still the same stream: a delta is applied and acknowledged
    conn.send(delta_chunks(
        2,
        ListKind::IpBlock,
        &[c("198.51.100.7")],
        &[],
    ))
    .await;
    conn.expect_ack(2).await;

    stop.send_replace(true);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    server.shutdown().await;
}
