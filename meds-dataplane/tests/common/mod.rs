//! Helpers shared by the dataplane's network-namespace tests: run a command, a namespace that
//! is deleted (with its interfaces and rules) when dropped, threads inside a namespace.
//! Each test crate uses only some of them.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Run `program`; panics with its stderr unless it succeeds. Returns its stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace that is deleted (with its interfaces and rules) when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A new namespace `meds-TAG-PID-NANOS` with loopback up.
    pub fn create(tag: &str) -> Netns {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("meds-{tag}-{}-{nanos:x}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Run a command inside the namespace (see [`run`]).
    pub fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Run `body` on a new thread that has joined this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        body: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        spawn_in(format!("/run/netns/{}", self.name), body)
    }

    /// Run `body` on a thread inside this namespace and wait for it; panics propagate.
    pub fn run_inside<T: Send + 'static>(&self, body: impl FnOnce() -> T + Send + 'static) -> T {
        join(self.spawn(body))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Run `body` on a new thread that has joined the namespace at `path`.
pub fn spawn_in<T: Send + 'static>(
    path: String,
    body: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    std::thread::spawn(move || {
        let ns = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: `ns` is an open namespace file; setns only affects this thread.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        body()
    })
}

/// Join a thread; its panic propagates.
pub fn join<T>(handle: JoinHandle<T>) -> T {
    match handle.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
