//! Stamps the build with the git commit of the checkout it comes from: `BERTH_GIT_COMMIT`
//! (`git rev-parse --short HEAD`, or "unknown" outside a git checkout or without git), read by
//! `berth_cni::BUILD`. It reruns when HEAD moves: a new commit, a checkout, a worktree's own
//! HEAD.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// A path git prints, relative to the crate's directory when it is not absolute.
fn git_path(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(git(&["rev-parse", "--git-path", name])?);
    Some(if p.is_absolute() {
        p
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
    })
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // HEAD names the branch (or is the commit); the branch's ref file or packed-refs hold the
    // commit. Only existing files: cargo reruns every build for a missing one.
    let mut watched = vec![git_path("HEAD")];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git_path(&branch));
        watched.push(git_path("packed-refs"));
    }
    for path in watched.into_iter().flatten().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rustc-env=BERTH_GIT_COMMIT={commit}");
}
