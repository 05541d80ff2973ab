//! Start-up refusals of `meds-controld`: missing or empty credentials, and running as root,
//! are refused with a message naming what is wrong, before any socket is bound.
//!
//! Needs only the built binaries (no namespaces). As root, the credential cases run the
//! controller as `nobody`, the way it is deployed.

use std::time::Duration;

use anyhow::{Result, ensure};
use meds_e2e::bed::{Layout, controller_command, free_port};
use meds_e2e::binaries::Binaries;
use meds_e2e::host;
use meds_e2e::process::Daemon;
use meds_e2e::workdir::WorkDir;

/// Start the controller with `env` (on top of a clean environment) and expect it to exit
/// non-zero within a few seconds with `needle` in its output.
fn expect_refusal(case: &str, env: &[(&str, &str)], as_root: bool, needle: &str) -> Result<()> {
    let bins = Binaries::locate()?;
    let dir = WorkDir::create(&format!("startup_{case}"))?;
    let layout = Layout::new(dir.path());
    let account = if as_root {
        None
    } else {
        host::is_root().then(host::nobody)
    };
    layout.prepare(account)?;
    let mut cmd = controller_command(&bins, &layout, free_port()?, account);
    cmd.envs(env.iter().copied());
    let mut daemon = Daemon::spawn("meds-controld", &mut cmd, &layout.controld_log)?;
    let status = daemon.wait_exit(Duration::from_secs(10));
    let log = std::fs::read_to_string(&layout.controld_log)?;
    let status = status.map_err(|e| e.context(format!("{case}: log:\n{log}")))?;
    ensure!(
        !status.success(),
        "{case}: the controller started ({status}); log:\n{log}"
    );
    // Exit status 2 is clap's usage error; a refused configuration is a runtime refusal.
    ensure!(
        log.contains(needle),
        "{case}: the message must name {needle}; log:\n{log}"
    );
    for socket in [&layout.sync_socket, &layout.admin_socket] {
        ensure!(
            !socket.exists(),
            "{case}: {} was bound before the refusal",
            socket.display()
        );
    }
    Ok(())
}

/// Environment variables given to the controller.
type Env = &'static [(&'static str, &'static str)];

#[test]
fn controller_refuses_missing_or_empty_credentials() -> Result<()> {
    // (case, environment, text the message must contain)
    let cases: [(&str, Env, &str); 4] = [
        (
            "no_password",
            &[("MEDS_USERNAME", "admin")],
            "MEDS_PASSWORD",
        ),
        (
            "empty_password",
            &[("MEDS_USERNAME", "admin"), ("MEDS_PASSWORD", "")],
            "MEDS_PASSWORD",
        ),
        (
            "no_username",
            &[("MEDS_PASSWORD", "pw-e2e-0123456789")],
            "MEDS_USERNAME",
        ),
        ("nothing", &[], "MEDS_"),
    ];
    for (case, env, needle) in cases {
        expect_refusal(case, env, false, needle)?;
    }
    Ok(())
}

#[test]
fn controller_refuses_to_run_as_root() -> Result<()> {
    if !host::should_run(
        "controller_refuses_to_run_as_root",
        (!host::is_root()).then(|| "not root".to_owned()),
    )? {
        return Ok(());
    }
    expect_refusal(
        "as_root",
        &[
            ("MEDS_USERNAME", "admin"),
            ("MEDS_PASSWORD", "pw-e2e-0123456789"),
        ],
        true,
        "root",
    )
}
