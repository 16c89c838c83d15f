//! The seed lab (`examples/lab.rs`) leaves nothing behind when it is interrupted: SIGINT or
//! SIGTERM, sent to the lab alone or to its process group as a terminal sends Ctrl-C, while
//! it runs.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

mod support;

/// What one interrupted run left.
struct Run {
    /// The pid in the lab's namespace names (`node-<pid>-0`).
    pid: String,
    /// Its temporary dir.
    dir: PathBuf,
    /// Its exit code.
    code: Option<i32>,
    /// Everything it printed.
    output: String,
}

/// Starts `cmd` in a process group of its own, reads its output until a line starts with
/// `step`, sends `signal` to the lab's pid or (`group`) to the group, and waits for it.
fn interrupt(mut cmd: Command, step: &str, signal: &str, group: bool) -> Run {
    let mut child: Child = cmd
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut output = String::new();
    let (mut pid, mut dir) = (None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        output.push_str(&line);
        output.push('\n');
        if let Some(rest) = line.split(" node node-").nth(1) {
            pid = rest.split('-').next().map(str::to_owned);
        }
        if let Some(d) = line.strip_prefix("# store and plugin logs: ") {
            dir = Some(PathBuf::from(d));
        }
        if line.starts_with(step) {
            break;
        }
    }
    let (pid, dir) = (pid.expect(&output), dir.expect(&output));
    let target = if group {
        format!("-{}", child.id())
    } else {
        pid.clone()
    };
    let status = Command::new("kill")
        .args([&format!("-{signal}"), "--", &target])
        .status()
        .unwrap();
    assert!(status.success());
    for line in lines {
        output.push_str(&line.unwrap());
        output.push('\n');
    }
    let code = child.wait().unwrap().code();
    Run {
        pid,
        dir,
        code,
        output,
    }
}

fn assert_clean(run: &Run, want_code: i32) {
    assert_eq!(run.code, Some(want_code), "{}", run.output);
    assert!(!run.dir.exists(), "{} is left", run.dir.display());
    let netns = berth_test_support::ip(&["netns", "list"]);
    let marker = format!("-{}-", run.pid);
    let left: Vec<&str> = netns.lines().filter(|l| l.contains(&marker)).collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: scripts/test runs it as root"
)]
fn an_interrupted_lab_removes_its_namespaces_and_its_dir() {
    berth_test_support::require(&["/usr/lib/cni/macvlan"]);
    let lab = support::example("lab");
    // The lab alone, as `kill PID` does; at different steps.
    let run = interrupt(Command::new(&lab), "## The Deployment", "INT", false);
    assert_clean(&run, 130);
    let run = interrupt(Command::new(&lab), "# by traffic", "TERM", false);
    assert_clean(&run, 143);
    // The whole group, as Ctrl-C at a terminal does: the commands the lab runs get it too.
    // Through `cargo run`, as the README says to start it.
    let cargo_run = || {
        let mut c = Command::new(env!("CARGO"));
        c.args(["run", "--quiet", "--example", "lab"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        c
    };
    let run = interrupt(cargo_run(), "## Pods restarted", "INT", true);
    assert_clean(&run, 130);
    let run = interrupt(cargo_run(), "## The Deployment", "TERM", true);
    assert_clean(&run, 143);
}
