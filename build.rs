//! Build script: the git commit the binary is built from, for `eventide --version`, as the
//! variable `EVENTIDE_BUILD_COMMIT` of the compilation.
//!
//! From `EVENTIDE_GIT_COMMIT` when it is set (a Docker build, whose context has no `.git`),
//! otherwise from the checkout's HEAD (through `git`, which knows worktrees and packed refs),
//! otherwise `unknown` (a source tarball, or no `git` installed). The script runs again when
//! HEAD moves (a commit or a checkout): cargo watches HEAD and the branch's ref file, so an
//! incremental build refreshes the commit, and nothing else (a script that watched every
//! file, cargo's default, would rebuild the crate after any edit).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=EVENTIDE_GIT_COMMIT");
    let commit = match std::env::var("EVENTIDE_GIT_COMMIT") {
        Ok(given) if !given.trim().is_empty() => given.trim().to_owned(),
        _ => head_commit().unwrap_or_else(|| "unknown".to_owned()),
    };
    println!("cargo:rustc-env=EVENTIDE_BUILD_COMMIT={commit}");
}

/// HEAD's commit, after telling cargo which files to watch for it to move.
fn head_commit() -> Option<String> {
    // HEAD itself: it changes on a checkout of another branch (or a detached commit).
    watch(&git(&["rev-parse", "--git-path", "HEAD"])?);
    // The branch's ref when HEAD names one (a commit rewrites it), and the packed refs, where
    // the branch may live without a file of its own until its next commit.
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        for path in [branch.as_str(), "packed-refs"] {
            if let Some(file) = git(&["rev-parse", "--git-path", path]) {
                watch(&file);
            }
        }
    }
    git(&["rev-parse", "HEAD"]).filter(|commit| commit.len() >= 40)
}

/// `git ARGS` in the package's directory: its first line of output, if it succeeded.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(manifest_dir())
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let line = text.lines().next()?.trim().to_owned();
    (output.status.success() && !line.is_empty()).then_some(line)
}

/// Reruns this script when `path` (relative to the package, or absolute) changes; only for a
/// file that exists, since cargo would rerun the script on every build for a missing one.
fn watch(path: &str) {
    let path = manifest_dir().join(path);
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
}
