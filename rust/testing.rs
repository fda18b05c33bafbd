//! Scratch trees for the tests that walk, list or watch real directories.

use std::fs;
use std::path::{Path, PathBuf};

/// A scratch directory for one test, `scanarr-{tag}-{pid}` in the temporary directory: not
/// created, and whatever an earlier run left there removed.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("scanarr-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    root
}

/// Writes each of `files` (a path below `root`, its content), creating its directories.
pub fn write_files(root: &Path, files: &[(&str, &[u8])]) {
    for (rel, content) in files {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
}

/// Gives the file `existing` the further name `link`, both below `root`.
pub fn hard_link(root: &Path, existing: &str, link: &str) {
    fs::hard_link(root.join(existing), root.join(link)).unwrap();
}
