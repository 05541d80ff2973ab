//! Facts about the machine the suite runs on: privileges, installed tools, the unprivileged
//! account the controller runs as, and the decision whether a test runs or skips.

use std::path::PathBuf;

use anyhow::{Result, bail};

/// Set to `1` to turn every skip into a failure (CI: the tests must really run there).
pub const REQUIRE_ENV: &str = "MEDS_E2E_REQUIRE";

/// Directories searched for tools besides `PATH` (sudo and cron often drop the sbin ones).
const EXTRA_TOOL_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// `PATH` given to the daemons.
pub const DAEMON_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Tools the network tests need.
pub const NETNS_TOOLS: &[&str] = &["ip", "iptables", "ip6tables", "ping"];

/// Whether the effective user is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The full path of `name`, found on `PATH` or in the usual sbin/bin directories.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_TOOL_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Like [`tool`], but an error naming the package to install when it is missing.
pub fn require_tool(name: &str) -> Result<PathBuf> {
    match tool(name) {
        Some(p) => Ok(p),
        None => bail!("`{name}` is not installed (run tests/run.sh, which installs it)"),
    }
}

/// Why the namespace tests cannot run here, if they cannot.
pub fn netns_skip_reason() -> Option<String> {
    if !is_root() {
        return Some("not running as root (network namespaces and iptables need it)".into());
    }
    NETNS_TOOLS
        .iter()
        .find(|t| tool(t).is_none())
        .map(|t| format!("`{t}` is not installed"))
}

/// Decide whether `test` runs: `Ok(true)` runs it, `Ok(false)` skips it after printing `reason`,
/// and an error when skipping is forbidden by `MEDS_E2E_REQUIRE=1`.
pub fn should_run(test: &str, reason: Option<String>) -> Result<bool> {
    let Some(reason) = reason else {
        return Ok(true);
    };
    if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
        bail!("{test}: cannot run: {reason}, and {REQUIRE_ENV}=1 forbids skipping");
    }
    eprintln!("SKIPPED {test}: {reason}");
    Ok(false)
}

/// A user and group to drop to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
}

/// The conventional overflow ids, used when `/etc/passwd` has no `nobody`.
const NOBODY_FALLBACK: Account = Account {
    uid: 65534,
    gid: 65534,
};

/// The `nobody` account (its primary group is `nogroup` on Debian), read from `/etc/passwd`.
pub fn nobody() -> Account {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| parse_passwd_entry(&text, "nobody"))
        .unwrap_or(NOBODY_FALLBACK)
}

/// The uid and gid of `user` in passwd(5) text.
pub fn parse_passwd_entry(passwd: &str, user: &str) -> Option<Account> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(Account { uid, gid })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_entries_are_parsed_and_malformed_ones_ignored() {
        let text = "root:x:0:0:root:/root:/bin/bash\n\
                    nobodyx:x:1:1::/:/bin/false\n\
                    nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                    broken:x:notanumber:1::/:\n\
                    short:x:5\n";
        let cases: [(&str, Option<Account>); 5] = [
            ("root", Some(Account { uid: 0, gid: 0 })),
            (
                "nobody",
                Some(Account {
                    uid: 65534,
                    gid: 65534,
                }),
            ),
            ("broken", None),
            ("short", None),
            ("absent", None),
        ];
        for (user, want) in cases {
            assert_eq!(parse_passwd_entry(text, user), want, "{user}");
        }
    }
}
