//! Waiting without fixed sleeps: poll a check until it holds or a bounded deadline passes.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Error, Result};

/// An error that ends [`eventually`] at once instead of being retried (e.g. "the daemon
/// exited": waiting longer cannot help).
#[derive(Debug)]
pub struct Fatal(pub String);

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fatal {}

/// Wrap a message as a [`Fatal`] error.
pub fn fatal(msg: impl Into<String>) -> Error {
    Error::new(Fatal(msg.into()))
}

/// Shortest and longest pause between two checks.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// Run `check` until it returns `Ok`, at most for `within`. Errors are retried (the last one is
/// reported if time runs out), except [`Fatal`] ones, which are returned at once.
pub fn eventually<T>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T>,
) -> Result<T> {
    let start = Instant::now();
    let deadline = start + within;
    let mut pause = FIRST_PAUSE;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if e.downcast_ref::<Fatal>().is_some() => {
                return Err(e.context(format!("{what}: gave up")));
            }
            Err(e) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(e.context(format!(
                        "{what}: still not true after {:.1?} ({attempts} checks)",
                        now - start
                    )));
                }
                std::thread::sleep(pause.min(deadline - now));
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::bail;

    #[test]
    fn returns_the_first_success() -> Result<()> {
        let mut n = 0;
        let v = eventually(Duration::from_secs(5), "third try", || {
            n += 1;
            if n < 3 {
                bail!("try {n}");
            }
            Ok(n)
        })?;
        assert_eq!(v, 3);
        Ok(())
    }

    #[test]
    fn times_out_with_the_last_error() {
        let start = Instant::now();
        let r: Result<()> = eventually(Duration::from_millis(50), "never", || bail!("nope"));
        let e = format!(
            "{:#}",
            r.err().unwrap_or_else(|| anyhow::anyhow!("no error"))
        );
        assert!(e.contains("never") && e.contains("nope"), "{e}");
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn fatal_errors_stop_at_once() {
        let mut n = 0;
        let r: Result<()> = eventually(Duration::from_secs(10), "fatal", || {
            n += 1;
            Err(fatal("daemon exited"))
        });
        assert!(r.is_err());
        assert_eq!(n, 1);
    }
}
