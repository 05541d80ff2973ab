//! The privilege split as deployed: the controller runs unprivileged (its account, no extra
//! groups, no capabilities); the dataplane confined like `meds-dataplane.service`
//! (only CAP_NET_ADMIN + CAP_NET_RAW, no-new-privs, the controller's group as its only extra
//! group) still installs its rules, reaches the sync socket through group permissions and
//! enforces policy; the sockets are 0660 so a user outside the group cannot use them.
//!
//! Needs root, `ip`, `iptables`/`ip6tables`, `ping` and `setpriv`; skips otherwise (fails
//! instead with MEDS_E2E_REQUIRE=1).

use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use meds_e2e::bed::{DATAPLANE_CAPS, Options};
use meds_e2e::medsctl::List;
use meds_e2e::process::{COMMAND_TIMEOUT, run_with_timeout};
use meds_e2e::topology::PEER4;
use meds_e2e::{Bed, host};

/// A uid/gid no account on the machine uses.
const STRANGER: u32 = 47_111;

/// `Cap<what>:` of /proc/PID/status as a bit set.
fn caps(pid: i32, what: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("Cap{what}:")))
        .with_context(|| format!("no Cap{what} in /proc/{pid}/status"))?;
    Ok(u64::from_str_radix(hex.trim(), 16)?)
}

/// The value of `field:` in /proc/PID/status.
fn status_field(pid: i32, field: &str) -> Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// medsctl status as uid/gid STRANGER with the given supplementary groups: its exit code.
fn medsctl_as_stranger(bed: &Bed, groups: &str) -> Result<Option<i32>> {
    let setpriv = host::require_tool("setpriv")?;
    let mut cmd = Command::new(setpriv);
    cmd.arg(format!("--reuid={STRANGER}"))
        .arg(format!("--regid={STRANGER}"))
        .arg(format!("--groups={groups}"))
        .arg("--")
        .arg(&bed.bins.medsctl)
        .arg("--socket")
        .arg(&bed.layout.admin_socket)
        .args(["--json", "status"]);
    Ok(run_with_timeout(&mut cmd, COMMAND_TIMEOUT)?.status.code())
}

#[test]
fn confined_dataplane_and_socket_permissions() -> Result<()> {
    let options = Options {
        confined_dataplane: true,
        ..Options::default()
    };
    Bed::run_with("confined", options, |bed| {
        let pid = bed.dataplane_pid()?;
        for what in ["Eff", "Prm", "Bnd"] {
            let set = caps(pid, what)?;
            ensure!(
                set == DATAPLANE_CAPS,
                "dataplane Cap{what} = {set:#x}, want {DATAPLANE_CAPS:#x}"
            );
        }
        let account = bed
            .controller_account()
            .context("root runs the controller as nobody")?;
        let group = account.gid;
        // The controller: the unprivileged account, no supplementary groups, no capabilities.
        let ctl_pid = bed.controller_pid()?;
        let ids = (status_field(ctl_pid, "Uid")?, status_field(ctl_pid, "Gid")?);
        let uid4 = [account.uid; 4].map(|u| u.to_string()).join(" ");
        let gid4 = [account.gid; 4].map(|g| g.to_string()).join(" ");
        ensure!(
            ids == (uid4, gid4),
            "controller ids {ids:?}, want {account:?}"
        );
        let groups = status_field(ctl_pid, "Groups")?;
        ensure!(
            groups.is_empty(),
            "controller keeps supplementary groups {groups:?}"
        );
        for what in ["Eff", "Prm"] {
            let set = caps(ctl_pid, what)?;
            ensure!(set == 0, "controller Cap{what} = {set:#x}");
        }
        for socket in [&bed.layout.sync_socket, &bed.layout.admin_socket] {
            let meta = std::fs::metadata(socket)?;
            let mode = meta.permissions().mode() & 0o777;
            ensure!(
                mode == 0o660 && meta.gid() == group,
                "{}: mode {mode:o} gid {}",
                socket.display(),
                meta.gid()
            );
        }
        // Exit code 3: cannot reach the controller (EACCES on the socket).
        let code = medsctl_as_stranger(bed, &STRANGER.to_string())?;
        ensure!(
            code == Some(3),
            "a user outside the socket's group got exit {code:?}"
        );
        let code = medsctl_as_stranger(bed, &format!("{STRANGER},{group}"))?;
        ensure!(
            code == Some(0),
            "a member of the socket's group got exit {code:?}"
        );

        let peer: IpAddr = PEER4.into();
        bed.expect_open(peer)?;
        let c = bed.ctl.add(List::Blacklist, &["203.0.113.2/32"])?;
        ensure!(c.applied, "{c:?}");
        bed.expect_blocked(peer)?;
        let c = bed.ctl.remove(List::Blacklist, &["203.0.113.2/32"])?;
        ensure!(c.applied, "{c:?}");
        bed.expect_open(peer)
    })
}
