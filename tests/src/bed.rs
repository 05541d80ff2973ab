//! One end-to-end test bed: a [`Topology`], echo servers in `fw`, `meds-controld` (as `nobody`,
//! root namespace, temp state dir) and `meds-dataplane` (root, inside `fw`), and `medsctl`
//! against the controller's admin socket.
//!
//! [`Bed::run`] is the entry point of every network test: it skips cleanly when the host cannot
//! run the suite, starts the bed, runs the test body, and tears everything down. When the body
//! fails (error or panic) it prints the controller status, the firewall's rules and the tails of
//! both daemons' logs, and keeps the temp dir (its path is printed).
//!
//! Beds are independent (unique namespace, directory and port per bed; NFQUEUE numbers and
//! iptables rules are per network namespace), so the tests of one binary may run in parallel.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::binaries::Binaries;
use crate::eventually::eventually;
use crate::host::{self, Account};
use crate::http::{self, Response};
use crate::medsctl::{Medsctl, Status};
use crate::process::{Daemon, run_ok, tail, touch};
use crate::topology::{FW4, FW6, Topology};
use crate::traffic::{self, EchoServers, Reach};
use crate::workdir::WorkDir;

/// How long the daemons get to come up and find each other.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a policy change may take to show in traffic.
pub const POLICY_TIMEOUT: Duration = Duration::from_secs(5);
/// The dataplane's chain (its default `--chain`).
pub const CHAIN: &str = "MEDS";
/// Log filters (tracing directives) of the daemons: their own crates at debug, libraries (h2,
/// tonic, hyper) at info. `MEDS_E2E_LOG` replaces both.
const CONTROLD_LOG: &str = "info,meds_controld=debug";
const DATAPLANE_LOG: &str = "info,meds_dataplane=debug";
/// Lines of each daemon log printed when a test fails.
const LOG_TAIL_LINES: usize = 120;
/// The REST user the beds configure.
pub const API_USER: &str = "e2e-admin";

/// Files and directories of one bed, all below its work dir.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    /// The controller's state dir (owned by the controller's user, 0700) and database.
    pub state_dir: PathBuf,
    pub db: PathBuf,
    /// The controller's socket dir (owned by the controller's user, 0751) and sockets.
    pub run_dir: PathBuf,
    pub sync_socket: PathBuf,
    pub admin_socket: PathBuf,
    /// The dataplane's persisted policy.
    pub dataplane_state: PathBuf,
    pub controld_log: PathBuf,
    pub dataplane_log: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        let state_dir = root.join("state");
        let run_dir = root.join("run");
        Layout {
            root: root.to_path_buf(),
            db: state_dir.join("meds.db"),
            sync_socket: run_dir.join("sync.sock"),
            admin_socket: run_dir.join("admin.sock"),
            dataplane_state: root.join("dataplane").join("policy.pb"),
            controld_log: root.join("controld.log"),
            dataplane_log: root.join("dataplane.log"),
            state_dir,
            run_dir,
        }
    }

    /// Create the directories; hand the controller's to `account` when given.
    pub fn prepare(&self, account: Option<Account>) -> Result<()> {
        let dirs = [
            (&self.state_dir, 0o700, account),
            // Like /run/meds (RuntimeDirectoryMode=0751): others may traverse, not list; the
            // sockets' own modes decide who may connect.
            (&self.run_dir, 0o751, account),
            (&self.root.join("dataplane"), 0o700, None),
        ];
        for (dir, mode, owner) in dirs {
            std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
            if let Some(a) = owner {
                std::os::unix::fs::chown(dir, Some(a.uid), Some(a.gid))
                    .with_context(|| format!("chown {}", dir.display()))?;
            }
        }
        for log in [&self.controld_log, &self.dataplane_log] {
            touch(log)?;
        }
        Ok(())
    }
}

/// The log filter for a daemon whose default is `default`.
fn log_filter(default: &str) -> String {
    std::env::var("MEDS_E2E_LOG").unwrap_or_else(|_| default.to_owned())
}

/// The controller's command line for `layout`, with a clean environment (no credentials: the
/// caller adds them). Runs as `account` when given: std sets the gid, drops supplementary
/// groups (setgroups(0) when changing uid as root) and sets the uid before exec.
pub fn controller_command(
    bins: &Binaries,
    layout: &Layout,
    api: SocketAddr,
    account: Option<Account>,
) -> Command {
    let mut cmd = Command::new(&bins.controld);
    cmd.arg("--db-path")
        .arg(&layout.db)
        .arg("--api-addr")
        .arg(api.to_string())
        .arg("--sync-socket")
        .arg(&layout.sync_socket)
        .arg("--admin-socket")
        .arg(&layout.admin_socket)
        .arg("--log-level")
        .arg(log_filter(CONTROLD_LOG))
        // Feeds would reach for the internet; tests that need one enable it with a local URL.
        .arg("--disable-feed")
        .arg("all")
        // Local feed servers answer at once; a dead one must fail fast (retries are bounded by it).
        .arg("--update-timeout")
        .arg("4s")
        .env_clear()
        .env("PATH", host::DAEMON_PATH)
        .env("RUST_BACKTRACE", "1")
        .env("NO_COLOR", "1")
        .current_dir(&layout.state_dir);
    if let Some(a) = account {
        cmd.uid(a.uid).gid(a.gid);
    }
    cmd
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// A random password (the REST tests must not pass with a guessable one).
fn random_password() -> Result<String> {
    use base64::Engine;
    let mut buf = [0u8; 18];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut buf)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

/// REST credentials of a bed.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Which credentials a REST request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Valid,
    Missing,
    WrongPassword,
}

/// An address family of the firewall's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn iptables(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// Tables searched for leftover rules.
pub const TABLES: [&str; 3] = ["filter", "mangle", "raw"];
/// The table whose INPUT chain jumps to [`CHAIN`] (`meds_dataplane::firewall::TABLE`).
pub const HOOK_TABLE: &str = "mangle";

/// What `iptables -S` shows about the hook into `chain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// Every `-A INPUT` rule, in order.
    pub input: Vec<String>,
    /// 1-based positions in `input` of the rules that jump (`-j`/`-g`) to the chain.
    pub jumps: Vec<usize>,
}

impl Hook {
    /// Parse `iptables -S` output of [`HOOK_TABLE`].
    pub fn parse(rules: &str, chain: &str) -> Hook {
        let input: Vec<String> = rules
            .lines()
            .filter(|l| l.starts_with("-A INPUT "))
            .map(str::to_owned)
            .collect();
        let jumps = input
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.windows(2)
                    .any(|p| (p[0] == "-j" || p[0] == "-g") && p[1] == chain)
            })
            .map(|(i, _)| i + 1)
            .collect();
        Hook { input, jumps }
    }

    /// Exactly one jump, and it is the first INPUT rule.
    pub fn is_single_and_first(&self) -> bool {
        self.jumps == [1]
    }
}

/// Lines of `iptables -S` output that mention Meds (case-insensitive `meds`).
pub fn meds_lines(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("meds"))
        .map(str::to_owned)
        .collect()
}

/// How a bed runs its daemons.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Run the dataplane the way `deploy/systemd/meds-dataplane.service` does: root, but only
    /// CAP_NET_ADMIN and CAP_NET_RAW in its bounding (hence effective) set, no-new-privs, and
    /// the controller's group as its only supplementary group (so plain file permissions, not
    /// CAP_DAC_OVERRIDE, must let it reach the sync socket). Uses `setpriv` (util-linux).
    pub confined_dataplane: bool,
    /// Extra flags for meds-dataplane (e.g. rate-limiter settings).
    pub dataplane_args: &'static [&'static str],
    /// The dataplane's `MEDS_LOG` filter instead of the beds' default (`info` with the
    /// dataplane at debug, or `MEDS_E2E_LOG`), e.g. `info` to see what an operator sees.
    pub dataplane_log_filter: Option<&'static str>,
}

/// The capabilities a confined dataplane keeps (CAP_NET_ADMIN = 12, CAP_NET_RAW = 13).
pub const DATAPLANE_CAPS: u64 = (1 << 12) | (1 << 13);

/// A running test bed. See the module docs.
pub struct Bed {
    name: String,
    controller: Option<Daemon>,
    dataplane: Option<Daemon>,
    servers: Option<EchoServers>,
    pub topo: Topology,
    pub bins: Binaries,
    pub layout: Layout,
    pub ctl: Medsctl,
    pub api: SocketAddr,
    pub creds: Credentials,
    account: Option<Account>,
    options: Options,
    failed: bool,
    dir: WorkDir,
}

impl Bed {
    /// Run `test` on a fresh bed, or skip it (printing why) when this host cannot.
    pub fn run(name: &str, test: impl FnOnce(&mut Bed) -> Result<()>) -> Result<()> {
        Bed::run_with(name, Options::default(), test)
    }

    /// [`Bed::run`] with non-default [`Options`].
    pub fn run_with(
        name: &str,
        options: Options,
        test: impl FnOnce(&mut Bed) -> Result<()>,
    ) -> Result<()> {
        let mut skip = host::netns_skip_reason();
        if skip.is_none() && options.confined_dataplane && host::tool("setpriv").is_none() {
            skip = Some("`setpriv` (util-linux) is not installed".into());
        }
        if !host::should_run(name, skip)? {
            return Ok(());
        }
        let mut bed =
            Bed::start(name, options).with_context(|| format!("{name}: starting the bed"))?;
        let result = test(&mut bed);
        if result.is_err() {
            bed.failed = true;
        }
        result
    }

    /// Build the network, start the servers and both daemons, and wait until the dataplane
    /// enforces the controller's current policy.
    pub fn start(name: &str, options: Options) -> Result<Bed> {
        let bins = Binaries::locate()?;
        let dir = WorkDir::create(name)?;
        let layout = Layout::new(dir.path());
        let account = host::is_root().then(host::nobody);
        layout.prepare(account)?;
        let topo = Topology::create()?;
        let mut bed = Bed {
            name: name.to_owned(),
            controller: None,
            dataplane: None,
            servers: None,
            ctl: Medsctl::new(bins.medsctl.clone(), layout.admin_socket.clone()),
            api: free_port()?,
            creds: Credentials {
                username: API_USER.to_owned(),
                password: random_password()?,
            },
            topo,
            bins,
            layout,
            account,
            options,
            failed: true,
            dir,
        };
        bed.servers = Some(EchoServers::start(
            &bed.topo.fw,
            &[IpAddr::V4(FW4), IpAddr::V6(FW6)],
        )?);
        bed.start_controller()?;
        bed.start_dataplane()?;
        bed.wait_in_sync()?;
        bed.failed = false;
        Ok(bed)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Start the controller (same database and sockets as any earlier one) and wait until it
    /// answers `medsctl status` and accepts REST connections.
    pub fn start_controller(&mut self) -> Result<()> {
        if self.controller.is_some() {
            bail!("controller already started");
        }
        let mut cmd = controller_command(&self.bins, &self.layout, self.api, self.account);
        cmd.env("MEDS_USERNAME", &self.creds.username)
            .env("MEDS_PASSWORD", &self.creds.password);
        let daemon = Daemon::spawn("meds-controld", &mut cmd, &self.layout.controld_log)?;
        let controller = self.controller.insert(daemon);
        let (ctl, api) = (&self.ctl, self.api);
        eventually(READY_TIMEOUT, "meds-controld is ready", || {
            controller.ensure_running()?;
            ctl.status()?;
            TcpStream::connect_timeout(&api, Duration::from_secs(1))
                .with_context(|| format!("REST API on {api}"))?;
            Ok(())
        })
    }

    /// SIGTERM the controller and wait for it to exit (bounded; SIGKILL and an error after that).
    pub fn stop_controller(&mut self) -> Result<ExitStatus> {
        let mut d = self.controller.take().context("no controller running")?;
        d.terminate()
    }

    /// SIGKILL the controller.
    pub fn kill_controller(&mut self) -> Result<ExitStatus> {
        let mut d = self.controller.take().context("no controller running")?;
        d.kill9()
    }

    /// Start the dataplane inside `fw` (it connects to the controller by itself).
    pub fn start_dataplane(&mut self) -> Result<()> {
        if self.dataplane.is_some() {
            bail!("dataplane already started");
        }
        let mut cmd = if self.options.confined_dataplane {
            let group = self.account.map_or(0, |a| a.gid);
            let mut cmd = self.topo.fw.command("setpriv");
            cmd.args([
                "--bounding-set=-all,+net_admin,+net_raw",
                "--inh-caps=-all",
                "--no-new-privs",
            ])
            .arg(format!("--groups={group}"))
            .arg("--")
            .arg(&self.bins.dataplane);
            cmd
        } else {
            self.topo.fw.command(&self.bins.dataplane)
        };
        cmd.arg("--sync-socket")
            .arg(&self.layout.sync_socket)
            .arg("--state-file")
            .arg(&self.layout.dataplane_state)
            .arg("--log-level")
            .arg("debug")
            .args(self.options.dataplane_args)
            .env_clear()
            .env("PATH", host::DAEMON_PATH)
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1")
            // --log-level takes a bare level; MEDS_LOG takes directives and wins.
            .env(
                "MEDS_LOG",
                self.options
                    .dataplane_log_filter
                    .map_or_else(|| log_filter(DATAPLANE_LOG), str::to_owned),
            );
        self.dataplane = Some(Daemon::spawn(
            "meds-dataplane",
            &mut cmd,
            &self.layout.dataplane_log,
        )?);
        Ok(())
    }

    /// The running controller's pid.
    pub fn controller_pid(&self) -> Result<i32> {
        Ok(self
            .controller
            .as_ref()
            .context("no controller running")?
            .pid())
    }

    /// The running dataplane's pid.
    pub fn dataplane_pid(&self) -> Result<i32> {
        Ok(self
            .dataplane
            .as_ref()
            .context("no dataplane running")?
            .pid())
    }

    /// The account the controller runs as (None: the test's own user).
    pub fn controller_account(&self) -> Option<Account> {
        self.account
    }

    /// SIGTERM the dataplane and wait for it to exit.
    pub fn stop_dataplane(&mut self) -> Result<ExitStatus> {
        let mut d = self.dataplane.take().context("no dataplane running")?;
        d.terminate()
    }

    /// SIGKILL the dataplane.
    pub fn kill_dataplane(&mut self) -> Result<ExitStatus> {
        let mut d = self.dataplane.take().context("no dataplane running")?;
        d.kill9()
    }

    /// Wait until the dataplane is connected, enforces the current generation, and its
    /// INPUT jump is installed in both families.
    pub fn wait_in_sync(&mut self) -> Result<Status> {
        let ctl = &self.ctl;
        let fw = &self.topo.fw;
        let (controller, dataplane) = (&mut self.controller, &mut self.dataplane);
        eventually(
            READY_TIMEOUT,
            "the dataplane enforces the current policy",
            || {
                for d in [&mut *controller, &mut *dataplane].into_iter().flatten() {
                    d.ensure_running()?;
                }
                let status = ctl.status()?;
                if !status.in_sync() {
                    bail!("not in sync: {}", status.raw);
                }
                ensure_hooked(fw)?;
                Ok(status)
            },
        )
    }

    /// Wait until the dataplane's INPUT jump is installed in both families (without asking the
    /// controller, which may be down).
    pub fn wait_hooked(&mut self) -> Result<()> {
        let fw = &self.topo.fw;
        let dataplane = &mut self.dataplane;
        eventually(READY_TIMEOUT, "the dataplane's rules are installed", || {
            dataplane
                .as_mut()
                .context("no dataplane running")?
                .ensure_running()?;
            ensure_hooked(fw)
        })
    }

    /// `iptables -S` (or `ip6tables`) of `table` inside `fw`.
    pub fn rules(&self, family: Family, table: &str) -> Result<String> {
        rules_in(&self.topo.fw, family, table)
    }

    /// One probe round (ICMP, TCP, UDP in parallel) from the peer address `src` to `fw`.
    pub fn reach(&self, src: IpAddr) -> Result<Reach> {
        traffic::reach(&self.topo.peer, src)
    }

    /// Wait until ICMP, TCP and UDP from `src` are all answered.
    pub fn expect_open(&self, src: IpAddr) -> Result<()> {
        eventually(
            POLICY_TIMEOUT,
            &format!("{src} reaches the firewall"),
            || {
                let r = self.reach(src)?;
                if !r.all() {
                    bail!("{src}: {r}");
                }
                Ok(())
            },
        )
    }

    /// Wait until ICMP, TCP and UDP from `src` all go unanswered.
    pub fn expect_blocked(&self, src: IpAddr) -> Result<()> {
        eventually(POLICY_TIMEOUT, &format!("{src} is blocked"), || {
            let r = self.reach(src)?;
            if !r.none() {
                bail!("{src}: {r}");
            }
            Ok(())
        })
    }

    /// Wait until the dataplane has reported dropping packets with `filter`/`reason` (e.g.
    /// `domain`/`BlackList`): proof that a drop a test saw was that rule's doing. Returns the
    /// count.
    pub fn expect_drops_counted(&self, filter: &str, reason: &str) -> Result<u64> {
        eventually(
            POLICY_TIMEOUT,
            &format!("the dataplane reports drops by {filter}/{reason}"),
            || {
                let status = self.ctl.status()?;
                let n = status.decisions("drop", filter, reason);
                if n == 0 {
                    bail!(
                        "no drop by {filter}/{reason} reported: {}",
                        status.raw["dataplane_stats"]
                    );
                }
                Ok(n)
            },
        )
    }

    /// Point `feed` at `url` and enable it (REST, as an operator would); the controller fetches
    /// it.
    pub fn enable_feed(&self, feed: &str, url: &str) -> Result<()> {
        let body = serde_json::json!({"enabled": true, "url": url}).to_string();
        let r = self.http(
            "PATCH",
            &format!("/v1/feeds/{feed}"),
            Some(&body),
            Auth::Valid,
        )?;
        if r.status != 200 {
            bail!("PATCH {feed}: {} {}", r.status, r.body);
        }
        Ok(())
    }

    /// The feed's entry of `medsctl feeds list`.
    pub fn feed_status(&self, feed: &str) -> Result<serde_json::Value> {
        let all = self.ctl.json(&["feeds", "list"])?;
        all["feeds"]
            .as_array()
            .and_then(|f| f.iter().find(|x| x["name"] == feed).cloned())
            .with_context(|| format!("feed {feed} not in {all}"))
    }

    /// `medsctl feeds update NAME` (waits for the fetch) and the feed's status afterwards.
    pub fn update_feed(&self, feed: &str) -> Result<serde_json::Value> {
        let out = self.ctl.run(&["feeds", "update", feed])?;
        if out.code != Some(0) {
            bail!("feeds update {feed}: {out:?}");
        }
        self.feed_status(feed)
    }

    /// Wait until the feed has `n` entries, then until the dataplane enforces the controller's
    /// generation.
    pub fn wait_feed_entries(&mut self, feed: &str, n: u64) -> Result<()> {
        eventually(READY_TIMEOUT, &format!("{feed} has {n} entries"), || {
            let s = self.feed_status(feed)?;
            if crate::medsctl::field_u64(&s, "entries")? != n {
                bail!("{s}");
            }
            Ok(())
        })?;
        self.wait_in_sync()?;
        Ok(())
    }

    /// One REST request to the controller.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        auth: Auth,
    ) -> Result<Response> {
        let wrong = format!("{}-wrong", self.creds.password);
        let creds = match auth {
            Auth::Valid => Some((self.creds.username.as_str(), self.creds.password.as_str())),
            Auth::Missing => None,
            Auth::WrongPassword => Some((self.creds.username.as_str(), wrong.as_str())),
        };
        http::request(self.api, method, path, creds, body)
    }

    /// Print what helps to understand a failure: status, rules, log tails.
    fn report_failure(&mut self) {
        eprintln!(
            "===== e2e bed {:?} failed; work dir {}",
            self.name,
            self.dir.path().display()
        );
        match self.ctl.run(&["status"]) {
            Ok(out) => eprintln!(
                "----- medsctl status (exit {:?}): {}{}",
                out.code,
                out.stdout.trim(),
                out.stderr.trim()
            ),
            Err(e) => eprintln!("----- medsctl status: {e:#}"),
        }
        for family in Family::ALL {
            for table in TABLES {
                match self.rules(family, table) {
                    Ok(r) => eprintln!(
                        "----- {} -t {table} -S in fw:\n{}",
                        family.iptables(),
                        r.trim()
                    ),
                    Err(e) => eprintln!("----- {} -t {table} -S in fw: {e:#}", family.iptables()),
                }
            }
        }
    }
}

/// An error unless both families have a jump from INPUT to [`CHAIN`].
fn ensure_hooked(fw: &crate::netns::Netns) -> Result<()> {
    for family in Family::ALL {
        let hook = Hook::parse(&rules_in(fw, family, HOOK_TABLE)?, CHAIN);
        if hook.jumps.is_empty() {
            bail!("no {} INPUT jump to {CHAIN} yet", family.iptables());
        }
    }
    Ok(())
}

fn rules_in(fw: &crate::netns::Netns, family: Family, table: &str) -> Result<String> {
    run_ok(
        fw.command(family.iptables())
            .args(["-w", "5", "-t", table, "-S"]),
    )
}

impl Drop for Bed {
    fn drop(&mut self) {
        let failed = self.failed || std::thread::panicking();
        if failed {
            self.report_failure();
        }
        // Dataplane first: it removes its rules while the network still exists.
        drop(self.dataplane.take());
        drop(self.controller.take());
        if failed {
            for log in [&self.layout.controld_log, &self.layout.dataplane_log] {
                eprintln!(
                    "----- tail of {}:\n{}",
                    log.display(),
                    tail(log, LOG_TAIL_LINES)
                );
            }
            self.dir.keep();
        }
        // Then (field order) the echo servers, the namespaces and the work dir.
    }
}

/// Fail unless `status` (of a daemon that ran) is a clean exit.
pub fn ensure_clean_exit(what: &str, status: ExitStatus) -> Result<()> {
    if !status.success() {
        bail!("{what} exited with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_positions_and_meds_lines() {
        let rules = "-P INPUT ACCEPT\n\
                     -N MEDS\n\
                     -A INPUT -m comment --comment meds -j MEDS\n\
                     -A INPUT -p udp -m udp --dport 9 -j ACCEPT\n\
                     -A INPUT -m comment --comment \"-j MEDS\" -j ACCEPT\n\
                     -A INPUT -j MEDS2\n\
                     -A INPUT -g MEDS\n\
                     -A MEDS -i lo -j RETURN\n";
        let hook = Hook::parse(rules, "MEDS");
        assert_eq!(hook.input.len(), 5);
        assert_eq!(hook.jumps, vec![1, 5]);
        assert!(!hook.is_single_and_first());
        let cases: [(&str, Vec<usize>, bool); 4] = [
            ("-P INPUT ACCEPT\n", vec![], false),
            ("-A INPUT -j MEDS\n", vec![1], true),
            ("-A INPUT -j ACCEPT\n-A INPUT -j MEDS\n", vec![2], false),
            ("-A FORWARD -j MEDS\n-A INPUT -j MEDS\n", vec![1], true),
        ];
        for (text, jumps, single_first) in cases {
            let h = Hook::parse(text, "MEDS");
            assert_eq!(
                (h.jumps.clone(), h.is_single_and_first()),
                (jumps, single_first),
                "{text}"
            );
        }
        assert_eq!(meds_lines(rules).len(), 6);
        assert!(meds_lines("-P INPUT ACCEPT\n-A INPUT -j ACCEPT\n").is_empty());
    }
}
