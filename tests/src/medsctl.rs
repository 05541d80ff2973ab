//! `medsctl` as the tests use it: always with `--socket` and `--json`, bounded in time, its
//! JSON output decoded into the shapes the CLI documents.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::process::{display_command, run_with_timeout};

/// Deadline of one medsctl call (add/remove wait about 2 s for the dataplane themselves).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The lists a test changes, by the `medsctl` command that manages them. `whitelist` and
/// `blacklist` take addresses and domain names alike (medsctl tells them apart by their form);
/// `ja3` and `ja4` are the fingerprint blocklists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    Whitelist,
    Blacklist,
    Ja3,
    Ja4,
}

impl List {
    /// The medsctl command, which is also the `"list"` field of its `list --json` output (for
    /// addresses).
    pub fn as_str(self) -> &'static str {
        match self {
            List::Whitelist => "whitelist",
            List::Blacklist => "blacklist",
            List::Ja3 => "ja3",
            List::Ja4 => "ja4",
        }
    }
}

/// What one medsctl run printed and how it exited.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code (None: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(self.stdout.trim())
            .with_context(|| format!("medsctl printed no JSON: {:?}", self.stdout))
    }
}

/// The reply of `add`/`remove`: `{"changed":N,"generation":G,"applied":bool}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub changed: u64,
    pub generation: u64,
    pub applied: bool,
}

/// The fields of `status` the tests look at (and the whole document for messages).
#[derive(Debug, Clone)]
pub struct Status {
    pub generation: u64,
    pub applied_generation: u64,
    pub dataplane_connected: bool,
    pub raw: Value,
}

impl Status {
    /// Connected, and the policy it enforces is the current one.
    pub fn in_sync(&self) -> bool {
        self.dataplane_connected && self.applied_generation == self.generation
    }

    /// Packets the dataplane last reported (it reports about once a second) with this verdict,
    /// filter and reason (`"drop"`, `"domain"`, `"BlackList"`); 0 when it reported none.
    pub fn decisions(&self, verdict: &str, filter: &str, reason: &str) -> u64 {
        self.raw["dataplane_stats"]["decisions"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter(|d| {
                        d["verdict"] == verdict && d["filter"] == filter && d["reason"] == reason
                    })
                    .filter_map(|d| d["packets"].as_u64())
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// medsctl bound to one admin socket.
#[derive(Debug, Clone)]
pub struct Medsctl {
    bin: PathBuf,
    socket: PathBuf,
}

impl Medsctl {
    pub fn new(bin: PathBuf, socket: PathBuf) -> Medsctl {
        Medsctl { bin, socket }
    }

    /// `medsctl --socket S --json ARGS...`, whatever its exit code.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--socket")
            .arg(&self.socket)
            .arg("--json")
            .args(args);
        let out = run_with_timeout(&mut cmd, CALL_TIMEOUT)?;
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Like [`Medsctl::run`], but exit code 0 is required and stdout must be JSON.
    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let out = self.run(args)?;
        if out.code != Some(0) {
            let mut cmd = Command::new(&self.bin);
            cmd.args(args);
            bail!(
                "`{}` exited with {:?}: {}{}",
                display_command(&cmd),
                out.code,
                out.stderr.trim(),
                out.stdout.trim()
            );
        }
        out.json()
    }

    pub fn add(&self, list: List, entries: &[&str]) -> Result<Change> {
        self.modify("add", list, entries)
    }

    pub fn remove(&self, list: List, entries: &[&str]) -> Result<Change> {
        self.modify("remove", list, entries)
    }

    fn modify(&self, verb: &str, list: List, entries: &[&str]) -> Result<Change> {
        let mut args = vec![list.as_str(), verb];
        args.extend_from_slice(entries);
        let v = self.json(&args)?;
        Ok(Change {
            changed: field_u64(&v, "changed")?,
            generation: field_u64(&v, "generation")?,
            applied: field_bool(&v, "applied")?,
        })
    }

    /// The entries of `list`, as printed (canonical text, sorted by the controller).
    pub fn list(&self, list: List) -> Result<Vec<String>> {
        let v = self.json(&[list.as_str(), "list"])?;
        let got = v.get("list").and_then(Value::as_str);
        if got != Some(list.as_str()) {
            bail!("`{} list` answered for list {got:?}: {v}", list.as_str());
        }
        v.get("entries")
            .and_then(Value::as_array)
            .with_context(|| format!("no \"entries\" array in {v}"))?
            .iter()
            .map(|e| {
                e.as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("entry {e} is not a string"))
            })
            .collect()
    }

    pub fn status(&self) -> Result<Status> {
        let raw = self.json(&["status"])?;
        Ok(Status {
            generation: field_u64(&raw, "generation")?,
            applied_generation: field_u64(&raw, "applied_generation")?,
            dataplane_connected: field_bool(&raw, "dataplane_connected")?,
            raw,
        })
    }
}

pub fn field_u64(v: &Value, key: &str) -> Result<u64> {
    v.get(key)
        .and_then(Value::as_u64)
        .with_context(|| format!("no unsigned integer {key:?} in {v}"))
}

pub fn field_bool(v: &Value, key: &str) -> Result<bool> {
    v.get(key)
        .and_then(Value::as_bool)
        .with_context(|| format!("no boolean {key:?} in {v}"))
}
