//! [`Ns`]: a network namespace a test made, deleted with everything in it when dropped.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::{ip, run, unique};

/// A named network namespace, deleted (with everything in it) when dropped.
#[derive(Debug)]
pub struct Ns {
    name: String,
}

impl Ns {
    /// `ip netns add <prefix>-<pid>-<n>`, with `lo` up and IPv6 duplicate address detection
    /// off (so addresses are usable at once).
    pub fn new(prefix: &str) -> Ns {
        let ns = Ns {
            name: unique(prefix),
        };
        ip(&["netns", "add", &ns.name]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
        ns
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its file, `/var/run/netns/<name>` (what `CNI_NETNS` carries).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    /// `ip -n <ns> <args>`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// `ip -j -n <ns> <args>`, parsed.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-j", "-n", self.name.as_str()];
        full.extend_from_slice(args);
        let text = ip(&full);
        if text.trim().is_empty() {
            return json!([]);
        }
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip {full:?}: {e}: {text}"))
    }

    /// `ip netns exec <ns> <program> <args>`.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// [`Ns::exec`], panicking on failure.
    pub fn must(&self, program: &str, args: &[&str]) -> String {
        self.exec(program, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `sysctl -w key=value` inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        self.must("sysctl", &["-qw", &format!("{key}={value}")]);
    }

    /// Whether `ping` from this namespace gets an answer from `target` (three tries, one
    /// second's wait), optionally from the source address `from`.
    pub fn ping(&self, target: &str, from: Option<&str>) -> bool {
        let mut args = vec!["-c", "3", "-i", "0.2", "-W", "1", "-q"];
        if let Some(src) = from {
            args.extend(["-I", src]);
        }
        args.push(target);
        self.exec("ping", &args).is_ok()
    }

    /// `ip route get <dst> [from <src>]`: the device it leaves by, and the via.
    pub fn route_get(&self, dst: &str, from: Option<&str>) -> (String, Option<String>) {
        let mut args = vec!["route", "get", dst];
        if let Some(src) = from {
            args.extend(["from", src]);
        }
        let v = self.ip_json(&args);
        let r = &v[0];
        (
            r["dev"].as_str().unwrap_or_default().to_owned(),
            r["gateway"].as_str().map(str::to_owned),
        )
    }

    /// The rules of one family as `ip rule` prints them (`"32764: from 10.7.168.173 lookup 100"`).
    pub fn rules(&self, ipv6: bool) -> Vec<String> {
        let family = if ipv6 { "-6" } else { "-4" };
        self.ip(&[family, "rule", "show"])
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    }

    /// `ip [-6] route show [table <t>]`, one normalised line per route.
    pub fn routes(&self, ipv6: bool, table: &str) -> Vec<String> {
        let family = if ipv6 { "-6" } else { "-4" };
        self.ip(&[family, "route", "show", "table", table])
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}
