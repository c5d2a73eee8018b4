//! Finding the shared real-data folder from tests in any crate of the workspace.
//!
//! The folder is `$CONVCG_SHARED` when that variable is set (and not empty), else `shared`
//! beside the workspace root: the nearest ancestor of the calling crate's manifest directory
//! whose `Cargo.toml` has a `[workspace]` section, then `../shared` from there. Tests pass
//! `env!("CARGO_MANIFEST_DIR")`, so the answer does not depend on the working directory.
//!
//! When the folder or a file under it is missing, a test skips with a printed reason, unless
//! `CONVCG_REQUIRE_SHARED=1`, which turns the absence into a test failure (for machines that
//! are meant to have the data).
//!
//! ```
//! use std::path::Path;
//!
//! let rel = "data/tmall-userlog-10k/user_log_10k.csv";
//! if let Some(path) = convcg_data::testing::require_shared_file(Path::new(env!("CARGO_MANIFEST_DIR")), rel) {
//!     assert!(path.is_file());
//! }
//! ```

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The variable naming the shared folder explicitly.
pub const SHARED_ENV: &str = "CONVCG_SHARED";
/// The variable that, set to `1`, makes a missing shared folder or file a test failure.
pub const REQUIRE_ENV: &str = "CONVCG_REQUIRE_SHARED";

/// Where the shared folder (or a file under it) is, or why it is not there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SharedDir {
    /// It exists at this path.
    Present(PathBuf),
    /// It does not exist; the reason names the path looked at and how it was chosen.
    Absent {
        /// A sentence for the test log.
        reason: String,
    },
}

impl SharedDir {
    /// The path when present.
    pub fn path(&self) -> Option<&Path> {
        match self {
            SharedDir::Present(p) => Some(p),
            SharedDir::Absent { .. } => None,
        }
    }

    /// The file or folder `rel` under a present folder, if it exists; absence (of the folder or
    /// of `rel`) carries the reason.
    pub fn join(&self, rel: &str) -> SharedDir {
        match self {
            SharedDir::Absent { reason } => SharedDir::Absent {
                reason: reason.clone(),
            },
            SharedDir::Present(dir) => {
                let path = dir.join(rel);
                if path.exists() {
                    SharedDir::Present(path)
                } else {
                    SharedDir::Absent {
                        reason: format!("{} does not exist", path.display()),
                    }
                }
            }
        }
    }
}

/// The shared folder for a crate whose manifest directory is `manifest_dir` (callers pass
/// `env!("CARGO_MANIFEST_DIR")`), from `$CONVCG_SHARED` or the workspace layout.
pub fn shared_dir(manifest_dir: &Path) -> SharedDir {
    resolve_shared_dir(manifest_dir, std::env::var_os(SHARED_ENV))
}

/// [`shared_dir`] with the value of `$CONVCG_SHARED` given (`None` or empty: unset), so the
/// resolution can be checked without touching the process environment.
pub fn resolve_shared_dir(manifest_dir: &Path, env_value: Option<OsString>) -> SharedDir {
    if let Some(value) = env_value.filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(value);
        return if dir.is_dir() {
            SharedDir::Present(dir)
        } else {
            SharedDir::Absent {
                reason: format!("{SHARED_ENV}={} is not a directory", dir.display()),
            }
        };
    }
    let Some(root) = workspace_root(manifest_dir) else {
        return SharedDir::Absent {
            reason: format!(
                "no Cargo.toml with a [workspace] section above {} (and {SHARED_ENV} is not set)",
                manifest_dir.display()
            ),
        };
    };
    let dir = root.join("..").join("shared");
    if dir.is_dir() {
        SharedDir::Present(dir)
    } else {
        SharedDir::Absent {
            reason: format!(
                "{} does not exist (set {SHARED_ENV} to the shared folder to use another place)",
                dir.display()
            ),
        }
    }
}

/// The nearest ancestor of `start` (itself included) whose `Cargo.toml` has a `[workspace]`
/// section.
pub fn workspace_root(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|text| text.lines().any(|l| l.trim() == "[workspace]"))
        })
        .map(Path::to_path_buf)
}

/// The file `rel` under the shared folder (e.g. `data/trivago-100k/trivago_val_100k.parquet`),
/// for a test: `Some(path)` when it exists; when it does not, prints `skipping: <reason>` to
/// stderr and returns `None`, so the test can return early.
///
/// # Panics
/// When the file is absent and `CONVCG_REQUIRE_SHARED=1`, with the reason. This is the one
/// sanctioned panic of the crate: it exists so that a test run that must use the real data
/// fails instead of silently skipping.
#[track_caller]
pub fn require_shared_file(manifest_dir: &Path, rel: &str) -> Option<PathBuf> {
    let required = std::env::var_os(REQUIRE_ENV).is_some_and(|v| v == "1");
    require_present(shared_dir(manifest_dir).join(rel), required)
}

/// The decision of [`require_shared_file`] for a resolved `found`, with `required` standing for
/// `CONVCG_REQUIRE_SHARED=1`.
///
/// # Panics
/// When `found` is absent and `required` is true, with the reason.
#[track_caller]
pub fn require_present(found: SharedDir, required: bool) -> Option<PathBuf> {
    match found {
        SharedDir::Present(path) => Some(path),
        SharedDir::Absent { reason } if required => {
            panic!("shared data required ({REQUIRE_ENV}=1) but absent: {reason}")
        }
        SharedDir::Absent { reason } => {
            eprintln!("skipping: {reason}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("test paths have parents"))
            .expect("create test dirs");
        std::fs::write(path, text).expect("write test file");
    }

    /// A temp tree: `top/ws/Cargo.toml` ([workspace]), `top/ws/crates/c/Cargo.toml` (a
    /// member), and optionally `top/shared/data/x.csv`.
    fn tree(with_shared: bool) -> tempfile::TempDir {
        let top = tempfile::tempdir().expect("temp dir");
        write(
            &top.path().join("ws/Cargo.toml"),
            "[package]\nname = \"root\"\n\n[workspace]\nmembers = [\"crates/c\"]\n",
        );
        write(
            &top.path().join("ws/crates/c/Cargo.toml"),
            "[package]\nname = \"c\"\n# [workspace] in a comment is not a section\n",
        );
        if with_shared {
            write(&top.path().join("shared/data/x.csv"), "1,2\n");
        }
        top
    }

    #[test]
    fn finds_the_workspace_root_above_a_member() {
        let top = tree(false);
        let member = top.path().join("ws/crates/c");
        assert_eq!(workspace_root(&member), Some(top.path().join("ws")));
        assert_eq!(
            workspace_root(&top.path().join("ws")),
            Some(top.path().join("ws"))
        );
    }

    #[test]
    fn shared_beside_the_workspace_root() {
        let top = tree(true);
        let member = top.path().join("ws/crates/c");
        let dir = resolve_shared_dir(&member, None);
        let path = dir.path().expect("present").to_path_buf();
        assert_eq!(
            path.canonicalize().expect("exists"),
            top.path().join("shared").canonicalize().expect("exists")
        );
        assert!(dir.join("data/x.csv").path().is_some());
        match dir.join("data/missing.csv") {
            SharedDir::Absent { reason } => assert!(reason.contains("missing.csv"), "{reason}"),
            other => panic!("expected absent, got {other:?}"),
        }
    }

    #[test]
    fn absent_shared_folder_says_where_it_looked() {
        let top = tree(false);
        let member = top.path().join("ws/crates/c");
        match resolve_shared_dir(&member, None) {
            SharedDir::Absent { reason } => {
                assert!(reason.contains("shared"), "{reason}");
                assert!(reason.contains(SHARED_ENV), "{reason}");
            }
            other => panic!("expected absent, got {other:?}"),
        }
        assert_eq!(
            require_present(resolve_shared_dir(&member, None), false),
            None
        );
    }

    #[test]
    fn env_value_wins_over_the_layout() {
        let top = tree(true);
        let elsewhere = tempfile::tempdir().expect("temp dir");
        write(&elsewhere.path().join("data/y.csv"), "3\n");
        let member = top.path().join("ws/crates/c");
        let dir = resolve_shared_dir(&member, Some(elsewhere.path().into()));
        assert_eq!(dir, SharedDir::Present(elsewhere.path().to_path_buf()));
        assert!(dir.join("data/y.csv").path().is_some());
        assert!(dir.join("data/x.csv").path().is_none());
        // An empty value counts as unset.
        assert!(
            resolve_shared_dir(&member, Some(OsString::new()))
                .path()
                .is_some()
        );
        let missing = elsewhere.path().join("nope");
        match resolve_shared_dir(&member, Some(missing.clone().into())) {
            SharedDir::Absent { reason } => assert!(reason.contains(SHARED_ENV), "{reason}"),
            other => panic!("expected absent, got {other:?}"),
        }
    }

    #[test]
    fn no_workspace_anywhere_is_absent() {
        let top = tempfile::tempdir().expect("temp dir");
        // A temp dir may sit under a directory with a workspace manifest only on odd machines;
        // the reason must then still name the layout, so check only the no-root case.
        if workspace_root(top.path()).is_none() {
            match resolve_shared_dir(top.path(), None) {
                SharedDir::Absent { reason } => assert!(reason.contains("[workspace]"), "{reason}"),
                other => panic!("expected absent, got {other:?}"),
            }
        }
    }

    #[test]
    #[should_panic(expected = "shared data required")]
    fn required_absence_panics() {
        require_present(
            SharedDir::Absent {
                reason: "nothing here".into(),
            },
            true,
        );
    }

    #[test]
    fn present_is_returned_whether_required_or_not() {
        let p = PathBuf::from("/x");
        assert_eq!(
            require_present(SharedDir::Present(p.clone()), true),
            Some(p.clone())
        );
        assert_eq!(
            require_present(SharedDir::Present(p.clone()), false),
            Some(p)
        );
    }
}
