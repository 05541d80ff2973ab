//! Where the binaries under test are: `MEDS_BIN_DIR`, or the cargo profile directory the test
//! executable itself was built into (`target/debug/deps/TEST` -> `target/debug`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Environment variable naming the directory that holds the three binaries.
pub const BIN_DIR_ENV: &str = "MEDS_BIN_DIR";

/// Paths of the three binaries under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The directory they were found in (a cargo profile directory such as `target/debug`).
    pub dir: PathBuf,
    pub controld: PathBuf,
    pub dataplane: PathBuf,
    pub medsctl: PathBuf,
}

impl Binaries {
    /// Find the binaries, or fail with a message telling how to build them.
    pub fn locate() -> Result<Binaries> {
        let dir = match std::env::var_os(BIN_DIR_ENV) {
            Some(dir) => PathBuf::from(dir),
            None => profile_dir_of(&std::env::current_exe().context("current_exe")?)?,
        };
        let find = |name: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            if !path.is_file() {
                bail!(
                    "{name} not found in {}: run `cargo build --workspace --bins` first \
                     (or point {BIN_DIR_ENV} at the directory holding the binaries)",
                    dir.display()
                );
            }
            Ok(path)
        };
        Ok(Binaries {
            controld: find("meds-controld")?,
            dataplane: find("meds-dataplane")?,
            medsctl: find("medsctl")?,
            dir: dir.clone(),
        })
    }

    /// Where figures (latency reports) go: next to the profile directories, i.e. `target/`.
    pub fn figures_path(&self, file: &str) -> PathBuf {
        if let Some(p) = std::env::var_os("MEDS_E2E_FIGURES_DIR") {
            return PathBuf::from(p).join(file);
        }
        self.dir.parent().unwrap_or(&self.dir).join(file)
    }
}

/// `target/PROFILE/deps/test-HASH` -> `target/PROFILE`; a test run straight from the profile
/// directory (no `deps`) maps to that directory.
fn profile_dir_of(exe: &Path) -> Result<PathBuf> {
    let parent = exe
        .parent()
        .with_context(|| format!("{} has no parent directory", exe.display()))?;
    if parent.file_name().is_some_and(|n| n == "deps")
        && let Some(profile) = parent.parent()
    {
        return Ok(profile.to_path_buf());
    }
    Ok(parent.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_dir_strips_deps_only() -> Result<()> {
        let cases = [
            ("/w/target/debug/deps/meds_e2e-1234", "/w/target/debug"),
            ("/w/target/release/deps/latency-99", "/w/target/release"),
            ("/w/target/debug/medsctl", "/w/target/debug"),
            ("/deps/x", "/"),
        ];
        for (exe, want) in cases {
            assert_eq!(
                profile_dir_of(Path::new(exe))?,
                PathBuf::from(want),
                "{exe}"
            );
        }
        Ok(())
    }
}
