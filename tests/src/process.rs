//! Child processes: long-running daemons whose output goes to a log file and which are always
//! stopped when their guard drops, and short commands run with a deadline.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::eventually::{eventually, fatal};

/// How long a daemon gets to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Default deadline of a short command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// A daemon started by a test. Dropping it stops it: SIGTERM, then SIGKILL after
/// [`STOP_GRACE`].
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Daemon {
    /// Start `cmd`, appending its stdout and stderr to `log` after a header line naming the
    /// program and its arguments (never its environment: that holds secrets).
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Daemon> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        writeln!(file, "===== e2e: starting {}", display_command(cmd))?;
        let err = file.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("spawn {name} ({})", display_command(cmd)))?;
        Ok(Daemon {
            name: name.to_owned(),
            child,
            log: log.to_path_buf(),
            exited: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> i32 {
        // Pids fit in pid_t; the conversion only fails for values the kernel never hands out.
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The exit status if the process has exited (it is reaped then).
    pub fn exit_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().context("waitpid")?;
        }
        Ok(self.exited)
    }

    /// An error if the process has exited, naming its status and log: for checks that wait for
    /// the daemon to become ready.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.exit_status()? {
            return Err(fatal(format!(
                "{} exited ({status}); see {}",
                self.name,
                self.log.display()
            )));
        }
        Ok(())
    }

    /// Send `signal` (a `libc::SIG*` value) unless the process has already exited.
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        if self.exit_status()?.is_some() {
            bail!("{} has already exited", self.name);
        }
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child, so
        // it cannot have been recycled for another process.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("kill({}, {signal})", self.pid()));
        }
        Ok(())
    }

    /// Wait (bounded) for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus> {
        let name = self.name.clone();
        eventually(within, &format!("{name} exits"), || {
            match self.exit_status()? {
                Some(s) => Ok(s),
                None => bail!("{name} (pid {}) is still running", self.pid()),
            }
        })
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGKILL)?;
        self.wait_exit(Duration::from_secs(10))
    }

    /// SIGTERM and wait up to [`STOP_GRACE`]; SIGKILL if it does not exit, which is an error.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.exit_status()? {
            return Ok(s);
        }
        self.signal(libc::SIGTERM)?;
        match self.wait_exit(STOP_GRACE) {
            Ok(s) => Ok(s),
            Err(e) => {
                let _ = self.kill9();
                Err(e.context(format!("{} ignored SIGTERM; killed it", self.name)))
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.exit_status(), Ok(Some(_))) {
            return;
        }
        if let Err(e) = self.terminate() {
            eprintln!("warning: stopping {}: {e:#}", self.name);
        }
    }
}

/// `program arg arg...` for messages.
pub fn display_command(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run a short command with a deadline, capturing its output. Killed (and an error) when it
/// overruns.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    match run_bounded(cmd, timeout)? {
        Bounded::Exited(out) => Ok(out),
        Bounded::Killed { after, .. } => {
            bail!("`{}` did not finish within {after:?}", display_command(cmd))
        }
    }
}

/// How a command run by [`run_bounded`] ended.
#[derive(Debug)]
pub enum Bounded {
    /// It exited by itself.
    Exited(Output),
    /// It overran its deadline and was killed (SIGKILL); `output` is what it printed until then.
    Killed { output: Output, after: Duration },
}

/// Run a short command with a deadline, capturing its output; one that overruns is killed, which
/// is not an error here (for commands that are expected to hang, e.g. a TLS client whose hello
/// a firewall drops).
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Bounded> {
    let shown = display_command(cmd);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {shown}"))?;
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let started = Instant::now();
    match rx.recv_timeout(timeout) {
        Ok(out) => {
            let _ = waiter.join();
            Ok(Bounded::Exited(
                out.with_context(|| format!("wait for {shown}"))?,
            ))
        }
        Err(_) => {
            // SAFETY: kill(2) has no memory-safety preconditions. The child is not reaped until
            // the waiter thread's wait returns, so the pid still names it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let out = rx
                .recv()
                .context("the waiter thread ended without a result")?
                .with_context(|| format!("wait for {shown}"))?;
            let _ = waiter.join();
            Ok(Bounded::Killed {
                output: out,
                after: started.elapsed(),
            })
        }
    }
}

/// Run a short command that must succeed; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> Result<String> {
    let shown = display_command(cmd);
    let out = run_with_timeout(cmd, COMMAND_TIMEOUT)?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `lines` lines of a log file (for failure reports).
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Create an empty log file (so the daemons' logs exist even if a start fails early).
pub fn touch(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("create {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_commands_are_bounded() -> Result<()> {
        let out = run_ok(Command::new("sh").args(["-c", "echo hi"]))?;
        assert_eq!(out, "hi\n");
        let e = run_ok(Command::new("sh").args(["-c", "echo bad >&2; exit 3"]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("bad") && e.contains('3'), "{e}");
        let slow = run_with_timeout(Command::new("sleep").arg("30"), Duration::from_millis(200));
        assert!(slow.is_err());
        // Killed at the deadline, with what it printed before.
        let hung = run_bounded(
            Command::new("sh").args(["-c", "echo started; exec sleep 30"]),
            Duration::from_millis(300),
        )?;
        match hung {
            Bounded::Killed { output, after } => {
                assert_eq!(String::from_utf8_lossy(&output.stdout), "started\n");
                assert!(after < Duration::from_secs(10), "{after:?}");
            }
            Bounded::Exited(out) => panic!("sleep 30 exited: {out:?}"),
        }
        let quick = run_bounded(
            Command::new("sh").args(["-c", "exit 4"]),
            Duration::from_secs(10),
        )?;
        assert!(
            matches!(&quick, Bounded::Exited(o) if o.status.code() == Some(4)),
            "{quick:?}"
        );
        Ok(())
    }

    #[test]
    fn daemons_are_stopped_on_drop_and_logged() -> Result<()> {
        let dir =
            std::env::temp_dir().join(format!("meds-e2e-proc-{}", crate::workdir::unique_id()));
        std::fs::create_dir(&dir)?;
        let log = dir.join("d.log");
        let pid;
        {
            let mut d = Daemon::spawn(
                "sleeper",
                Command::new("sh").args(["-c", "echo started; exec sleep 30"]),
                &log,
            )?;
            pid = d.pid();
            d.ensure_running()?;
        }
        // Reaped by the guard: the pid no longer names our child.
        assert!(
            !Path::new(&format!("/proc/{pid}/stat")).exists() || {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                !stat.contains("(sleep)")
            }
        );
        let text = std::fs::read_to_string(&log)?;
        assert!(text.contains("===== e2e: starting sh -c"), "{text}");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
