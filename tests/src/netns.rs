//! Network namespaces as RAII guards (`ip netns add` / `ip netns del`), and running code
//! inside one: [`Netns::enter`] runs a closure on a fresh thread that has joined the namespace
//! with `setns(CLONE_NEWNET)`. A socket belongs to the namespace it was created in, so sockets
//! made there can be used from any thread afterwards.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;

use anyhow::{Context, Result, anyhow, bail};

use crate::host;
use crate::process::{run_ok, run_with_timeout};

/// Every namespace this suite creates is named `medse2e-PID-N-ROLE`.
pub const NAME_PREFIX: &str = "medse2e-";

/// Where iproute2 keeps named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// `ip netns add NAME`. Stale namespaces of earlier, killed runs are removed first (once per
    /// process).
    pub fn create(name: String) -> Result<Netns> {
        static CLEAN: Once = Once::new();
        CLEAN.call_once(remove_stale);
        run_ok(Command::new(ip()?).args(["netns", "add", &name]))?;
        Ok(Netns { name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME PROGRAM`: iproute2 execs PROGRAM directly, so the child's pid is
    /// the program's own pid (signals reach it).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(host::tool("ip").unwrap_or_else(|| PathBuf::from("ip")));
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// `ip -n NAME ARGS...`, which must succeed; returns stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run_ok(Command::new(ip()?).args(["-n", &self.name]).args(args))
    }

    /// Run `f` on a new thread inside this namespace and return its result.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file = self.open()?;
        std::thread::scope(|s| {
            s.spawn(move || -> Result<T> {
                join_netns(&file)?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow!("thread inside netns {} panicked", self.name))?
        })
    }

    /// Start `f` on a new thread inside this namespace; join the handle for its result.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T>>> {
        let file = self.open()?;
        Ok(std::thread::spawn(move || -> Result<T> {
            join_netns(&file)?;
            Ok(f())
        }))
    }

    fn open(&self) -> Result<File> {
        let path = PathBuf::from(NETNS_DIR).join(&self.name);
        File::open(&path).with_context(|| format!("open {}", path.display()))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let deleted = ip()
            .and_then(|ip| run_ok(Command::new(ip).args(["netns", "del", &self.name])).map(|_| ()));
        if let Err(e) = deleted {
            eprintln!("warning: cannot delete netns {}: {e:#}", self.name);
        }
    }
}

/// Move the calling thread into the network namespace `file` refers to.
fn join_netns(file: &File) -> Result<()> {
    // SAFETY: setns(2) takes a valid open fd (borrowed from `file`, alive for the call) and a
    // flag; it changes only the calling thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("setns(CLONE_NEWNET)");
    }
    Ok(())
}

fn ip() -> Result<PathBuf> {
    host::require_tool("ip")
}

/// Delete namespaces left by earlier runs of this suite that were killed before their guards
/// ran (their owner pid, the `PID` in `medse2e-PID-N-ROLE`, is gone). Processes still inside
/// them were started by that run; they are killed by pid first.
pub fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = owner_pid(&name) else {
            continue;
        };
        if owner == std::process::id() || PathBuf::from(format!("/proc/{owner}")).exists() {
            continue;
        }
        if let Ok(ip) = ip() {
            kill_processes_in(&name);
            let _ = run_with_timeout(
                Command::new(&ip).args(["netns", "del", &name]),
                crate::process::COMMAND_TIMEOUT,
            );
            eprintln!("removed stale netns {name} (owner pid {owner} is gone)");
        }
    }
}

/// SIGKILL every process in the namespace `name` (`ip netns pids`). Only called for namespaces
/// this suite created, so these are processes it started.
fn kill_processes_in(name: &str) {
    let Ok(ip) = ip() else { return };
    let Ok(out) = run_with_timeout(
        Command::new(ip).args(["netns", "pids", name]),
        crate::process::COMMAND_TIMEOUT,
    ) else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// The owner pid in a name of ours, `medse2e-PID-...`.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(NAME_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// A namespace name for `role` that is unique while this process lives.
pub fn unique_name(role: &str) -> Result<String> {
    let name = format!("{NAME_PREFIX}{}-{role}", crate::workdir::unique_id());
    if name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        bail!("bad netns name {name:?}");
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pids_are_read_from_our_names_only() {
        let cases = [
            ("medse2e-123-4-fw", Some(123)),
            ("medse2e-9-0-peer", Some(9)),
            ("medse2e-x-0-peer", None),
            ("other-123-4-fw", None),
            ("medse2e-", None),
        ];
        for (name, want) in cases {
            assert_eq!(owner_pid(name), want, "{name}");
        }
    }
}
