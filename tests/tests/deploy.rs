//! The deployment files are checked, not just written: `systemd-analyze verify` is clean for
//! both units, `systemd-analyze security --offline=true` stays within the exposure budget
//! (controller <= 2.0, dataplane <= 5.0), every flag on an `ExecStart=` line is one the binary
//! accepts, and (as root) sysusers.d/tmpfiles.d apply cleanly to an empty root.
//!
//! Skips when `systemd-analyze` is missing (fails instead with MEDS_E2E_REQUIRE=1). Needs the
//! built binaries: verify checks that `ExecStart=` is executable, so the units are checked as
//! copies whose `/usr/local/bin/` points at the cargo profile directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use meds_e2e::binaries::Binaries;
use meds_e2e::host;
use meds_e2e::process::{COMMAND_TIMEOUT, run_ok, run_with_timeout};
use meds_e2e::workdir::WorkDir;

/// (unit file, binary, exposure budget)
const UNITS: [(&str, &str, f64); 2] = [
    ("meds-controld.service", "meds-controld", 2.0),
    ("meds-dataplane.service", "meds-dataplane", 5.0),
];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy")
}

/// The `ExecStart=` command line, continuation lines joined.
fn exec_start(unit: &str) -> Option<String> {
    let mut lines = unit.lines().skip_while(|l| !l.starts_with("ExecStart="));
    let mut cmd = lines.next()?.trim_start_matches("ExecStart=").to_owned();
    while cmd.ends_with('\\') {
        cmd.pop();
        cmd.push(' ');
        cmd.push_str(lines.next()?.trim());
    }
    Some(cmd)
}

/// "→ Overall exposure level for X.service: 1.2 OK" → 1.2
fn exposure(report: &str) -> Option<f64> {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    line.rsplit(':')
        .next()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn skip_without_analyze(test: &str) -> Result<Option<PathBuf>> {
    match host::tool("systemd-analyze") {
        Some(p) => Ok(Some(p)),
        None => {
            host::should_run(
                test,
                Some("systemd-analyze is not installed (package systemd)".into()),
            )?;
            Ok(None)
        }
    }
}

#[test]
fn systemd_units_verify_and_stay_within_the_exposure_budget() -> Result<()> {
    let Some(analyze) = skip_without_analyze("systemd_units")? else {
        return Ok(());
    };
    let bins = Binaries::locate()?;
    let work = WorkDir::create("deploy_units")?;
    let mut scores = Vec::new();
    for (unit, binary, budget) in UNITS {
        let text = std::fs::read_to_string(deploy_dir().join("systemd").join(unit))
            .with_context(|| format!("read deploy/systemd/{unit}"))?;
        let cmdline = exec_start(&text).with_context(|| format!("{unit}: no ExecStart="))?;
        let want_prefix = format!("/usr/local/bin/{binary} ");
        ensure!(
            cmdline.starts_with(&want_prefix),
            "{unit}: ExecStart={cmdline}"
        );

        // Every flag in ExecStart= must be one the binary knows.
        let help = run_ok(Command::new(bins.dir.join(binary)).arg("--help"))?;
        for flag in cmdline.split_whitespace().filter(|w| w.starts_with("--")) {
            let name = flag.split('=').next().unwrap_or(flag);
            ensure!(
                help.contains(name),
                "{unit}: {binary} --help does not list {name}:\n{help}"
            );
        }

        let copy = work.join(unit);
        let bin_dir = format!("{}/", bins.dir.display());
        std::fs::write(&copy, text.replace("/usr/local/bin/", &bin_dir))?;

        let out = run_with_timeout(
            Command::new(&analyze).arg("verify").arg(&copy),
            COMMAND_TIMEOUT,
        )?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            out.status.success(),
            "systemd-analyze verify {unit}: {}\n{said}",
            out.status
        );
        let about_unit: Vec<&str> = said.lines().filter(|l| l.contains(unit)).collect();
        ensure!(
            about_unit.is_empty(),
            "systemd-analyze verify {unit} warns:\n{}",
            about_unit.join("\n")
        );

        let threshold = format!("--threshold={}", (budget * 10.0).round() as u32);
        let out = run_with_timeout(
            Command::new(&analyze)
                .args(["security", "--offline=true", "--no-pager", &threshold])
                .arg(&copy),
            COMMAND_TIMEOUT,
        )?;
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        let score = exposure(&report)
            .with_context(|| format!("no exposure level in the report for {unit}:\n{report}"))?;
        ensure!(
            out.status.success() && score <= budget,
            "{unit}: exposure {score} over the budget {budget} ({}):\n{report}",
            out.status
        );
        scores.push(format!("{unit}: exposure {score:.1} (budget {budget:.1})"));
    }
    let summary = scores.join("\n");
    println!("{summary}");
    eprintln!("{summary}");
    Ok(())
}

#[test]
fn sysusers_and_tmpfiles_apply_to_an_empty_root() -> Result<()> {
    let (Some(sysusers), Some(tmpfiles)) = (
        host::tool("systemd-sysusers"),
        host::tool("systemd-tmpfiles"),
    ) else {
        host::should_run(
            "sysusers_tmpfiles",
            Some("systemd-sysusers/systemd-tmpfiles missing".into()),
        )?;
        return Ok(());
    };
    if !host::should_run(
        "sysusers_tmpfiles",
        (!host::is_root()).then(|| "not root (tmpfiles chowns)".into()),
    )? {
        return Ok(());
    }
    let work = WorkDir::create("deploy_sysusers")?;
    let root = work.join("root");
    std::fs::create_dir_all(root.join("etc"))?;
    let deploy = deploy_dir();
    run_ok(
        Command::new(&sysusers)
            .arg(format!("--root={}", root.display()))
            .arg(deploy.join("sysusers.d/meds.conf")),
    )?;
    let passwd = std::fs::read_to_string(root.join("etc/passwd"))?;
    let group = std::fs::read_to_string(root.join("etc/group"))?;
    ensure!(
        passwd.lines().any(|l| l.starts_with("meds:")),
        "no meds user:\n{passwd}"
    );
    for g in ["meds:", "meds-admin:"] {
        ensure!(
            group.lines().any(|l| l.starts_with(g)),
            "no group {g}\n{group}"
        );
    }
    run_ok(
        Command::new(&tmpfiles)
            .arg(format!("--root={}", root.display()))
            .arg("--create")
            .arg(deploy.join("tmpfiles.d/meds.conf")),
    )?;
    for p in ["run/xtables.lock", "etc/meds"] {
        if !root.join(p).exists() {
            bail!("tmpfiles did not create /{p}");
        }
    }
    Ok(())
}

#[test]
fn shell_scripts_pass_shellcheck() -> Result<()> {
    let Some(shellcheck) = host::tool("shellcheck") else {
        host::should_run("shellcheck", Some("shellcheck is not installed".into()))?;
        return Ok(());
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scripts = [
        "deploy/common.sh",
        "deploy/dev-run.sh",
        "deploy/install.sh",
        "tests/run.sh",
        ".ci/run",
    ];
    let mut cmd = Command::new(shellcheck);
    cmd.arg("-x").current_dir(&repo).args(scripts);
    run_ok(&mut cmd).map(|_| ())
}

#[test]
fn exposure_and_exec_start_parsing() {
    let unit = "[Service]\nExecStart=/usr/local/bin/x \\\n    --a 1 \\\n    --b\nUser=x\n";
    assert_eq!(
        exec_start(unit).as_deref(),
        Some("/usr/local/bin/x  --a 1  --b")
    );
    assert_eq!(exec_start("[Service]\n"), None);
    let cases = [
        (
            "→ Overall exposure level for a.service: 1.2 OK 🙂",
            Some(1.2),
        ),
        (
            "→ Overall exposure level for a.service: 9.6 UNSAFE 😨",
            Some(9.6),
        ),
        ("nothing here", None),
    ];
    for (text, want) in cases {
        assert_eq!(exposure(text), want, "{text}");
    }
}

#[test]
fn install_script_is_idempotent_and_keeps_the_credentials() -> Result<()> {
    if !host::should_run(
        "install_script",
        (!host::is_root()).then(|| "not root (install.sh chowns)".into()),
    )? {
        return Ok(());
    }
    if host::tool("systemd-sysusers").is_none() {
        host::should_run(
            "install_script",
            Some("systemd-sysusers missing (package systemd)".into()),
        )?;
        return Ok(());
    }
    let bins = Binaries::locate()?;
    let work = WorkDir::create("deploy_install")?;
    let root = work.join("root");
    std::fs::create_dir(&root)?;
    let install = deploy_dir().join("install.sh");
    let run = || -> Result<String> {
        run_ok(
            Command::new("bash")
                .arg(&install)
                .arg("--root")
                .arg(&root)
                .arg("--bin-dir")
                .arg(&bins.dir),
        )
    };
    let first = run()?;
    ensure!(
        first.contains("created"),
        "first run did not create the env file:\n{first}"
    );
    let env_path = root.join("etc/meds/controld.env");
    let env1 = std::fs::read_to_string(&env_path)?;
    let second = run()?;
    ensure!(second.contains("left unchanged"), "second run:\n{second}");
    ensure!(
        std::fs::read_to_string(&env_path)? == env1,
        "the second run rewrote the credentials"
    );
    let password = env1
        .lines()
        .find_map(|l| l.strip_prefix("MEDS_PASSWORD="))
        .context("no MEDS_PASSWORD in the generated env file")?;
    ensure!(
        password.len() >= 20,
        "generated password too short: {password:?}"
    );

    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let group = std::fs::read_to_string(root.join("etc/group"))?;
    let meds_gid: u32 = group
        .lines()
        .find_map(|l| l.strip_prefix("meds:x:"))
        .and_then(|rest| rest.split(':').next()?.parse().ok())
        .with_context(|| format!("no meds group:\n{group}"))?;
    // (path, mode, owner gid or None)
    let cases: [(&str, u32, Option<u32>); 6] = [
        ("usr/local/bin/meds-controld", 0o755, None),
        ("usr/local/bin/meds-dataplane", 0o755, None),
        ("usr/local/bin/medsctl", 0o755, None),
        ("etc/systemd/system/meds-controld.service", 0o644, None),
        ("etc/systemd/system/meds-dataplane.service", 0o644, None),
        ("etc/meds/controld.env", 0o640, Some(meds_gid)),
    ];
    for (path, mode, gid) in cases {
        let meta =
            std::fs::metadata(root.join(path)).with_context(|| format!("/{path} missing"))?;
        ensure!(
            meta.permissions().mode() & 0o7777 == mode,
            "/{path}: mode {:o}",
            meta.permissions().mode()
        );
        if let Some(gid) = gid {
            ensure!(
                meta.gid() == gid && meta.uid() == 0,
                "/{path}: owner {}:{}",
                meta.uid(),
                meta.gid()
            );
        }
    }
    Ok(())
}
