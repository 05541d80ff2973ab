//! A per-test temp directory: removed when the test passes, kept (and its path printed) when it
//! fails, so the daemons' logs and databases can be inspected.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};

/// Parent directory of the work dirs (default: the system temp dir).
pub const TMPDIR_ENV: &str = "MEDS_E2E_TMPDIR";

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A name unique within this machine while this process lives: `PID-N`.
pub fn unique_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temp directory owned by one test.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    /// Create `meds-e2e-TEST-PID-N` (mode 0755, so an unprivileged daemon can reach the
    /// subdirectories it is given).
    pub fn create(test: &str) -> Result<WorkDir> {
        let base = std::env::var_os(TMPDIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let safe: String = test
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = base.join(format!("meds-e2e-{safe}-{}", unique_id()));
        std::fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", path.display()))?;
        Ok(WorkDir { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// Do not remove the directory on drop.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept test directory {}", self.path.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("warning: cannot remove {}: {e}", self.path.display());
        }
    }
}
