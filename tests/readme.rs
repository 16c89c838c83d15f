//! The README's commands do what it says they do.

use std::collections::BTreeSet;
use std::process::Command;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The binaries of the workspace's packages, by package name (`cargo metadata`).
fn binaries_of(packages: &[&str]) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| packages.contains(&p["name"].as_str().unwrap()))
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_build_command_builds_the_cli_and_both_plugins_and_berth_gets_installed() {
    let text = readme();
    let build = text
        .lines()
        .find(|l| l.starts_with("cargo build --release"))
        .expect("the README's build command");
    let words: Vec<&str> = build.split_whitespace().collect();
    let packages: Vec<&str> = words
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1])
        .collect();
    assert!(
        !packages.is_empty(),
        "a bare `cargo build` builds only the root package (berth): {build}"
    );
    let bins = binaries_of(&packages);
    for bin in ["berth", "berth-ipam", "berth-route"] {
        assert!(
            bins.contains(bin),
            "{build:?} does not build {bin}: {bins:?}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.contains("install") && l.contains("target/release/berth ")),
        "the README installs berth"
    );
}
