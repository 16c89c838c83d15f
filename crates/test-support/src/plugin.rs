//! Running a CNI plugin as a runtime does: exactly the environment given (nothing inherited),
//! the network config on stdin, one process per command; stdout and the exit code read back.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// What one plugin run printed and how it exited.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit code (`-1` when killed by a signal).
    pub code: i32,
    /// stdout (the result or the CNI error).
    pub stdout: Vec<u8>,
    /// stderr.
    pub stderr: String,
}

impl Outcome {
    /// stdout as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The JSON of stdout (`null` when empty); panics when stdout is not JSON.
    pub fn json(&self) -> Value {
        if self.stdout.iter().all(u8::is_ascii_whitespace) {
            return Value::Null;
        }
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?}; stderr: {}",
                self.stdout_text(),
                self.stderr
            )
        })
    }

    /// The JSON of a successful run (`null` for an empty stdout); panics with the error
    /// otherwise.
    pub fn ok(&self) -> Value {
        assert_eq!(
            self.code,
            0,
            "plugin failed: {}; stderr: {}",
            self.stdout_text(),
            self.stderr
        );
        self.json()
    }

    /// The CNI error of a failed run (exit 1, a JSON object with a numeric `code`).
    pub fn err(&self) -> Value {
        assert_eq!(
            self.code,
            1,
            "expected a CNI error, got {}",
            self.stdout_text()
        );
        let v = self.json();
        assert!(v["code"].is_u64(), "not a CNI error: {v}");
        v
    }

    /// The first address of an ADD result, without its prefix length.
    pub fn ip(&self) -> IpAddr {
        let v = self.ok();
        let address = v["ips"][0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address in {v}"));
        address
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("not an address: {address}"))
    }
}

/// `program` with exactly `env` (nothing inherited) and piped stdio.
pub fn command(program: &Path, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// `program` with exactly `env`, run inside the namespace named `ns` (`ip netns exec ... env
/// -i`), as a runtime on that node would run it.
pub fn command_in(ns: &str, program: &Path, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "env", "-i"]);
    for (k, v) in env {
        c.arg(format!("{k}={v}"));
    }
    c.arg(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Starts `command` and feeds it `stdin`.
pub fn spawn(mut command: Command, stdin: &[u8]) -> Child {
    let mut child = command.spawn().expect("the plugin starts");
    let mut pipe = child.stdin.take().expect("stdin is piped");
    // A child killed early closes the pipe: that is no error of the test's.
    let _ = pipe.write_all(stdin);
    drop(pipe);
    child
}

/// Waits for a plugin started with [`spawn`].
pub fn finish(child: Child) -> Outcome {
    let out = child.wait_with_output().expect("the plugin finishes");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `command` once with `stdin`, like a runtime.
pub fn run(command: Command, stdin: &[u8]) -> Outcome {
    finish(spawn(command, stdin))
}
