//! The `CNI_*` environment: which variables each command needs, and how they are checked.
//!
//! | command | required | optional (checked when given) | ignored |
//! |---|---|---|---|
//! | ADD, CHECK | `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME` | `CNI_ARGS`, `CNI_PATH` | |
//! | DEL | `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_IFNAME` | `CNI_NETNS`, `CNI_ARGS`, `CNI_PATH` | |
//! | GC, STATUS | `CNI_COMMAND` | `CNI_PATH` | the attachment variables |
//! | VERSION | `CNI_COMMAND` | | all others |
//!
//! An empty variable counts as missing (as in the Go skeleton). Missing variables are
//! reported together, in the order above, as one code-4 error. `CNI_PATH` is never
//! required: the spec lists it as optional for every command but GC, and Berth's plugins
//! delegate to nobody; DESIGN §5 says GC and STATUS need only `CNI_COMMAND` and stdin.

use std::path::{Component, Path, PathBuf};

use crate::command::Command;
use crate::error::Error;

/// `CNI_COMMAND`.
pub const CNI_COMMAND: &str = "CNI_COMMAND";
/// `CNI_CONTAINERID`.
pub const CNI_CONTAINERID: &str = "CNI_CONTAINERID";
/// `CNI_NETNS`.
pub const CNI_NETNS: &str = "CNI_NETNS";
/// `CNI_IFNAME`.
pub const CNI_IFNAME: &str = "CNI_IFNAME";
/// `CNI_ARGS`.
pub const CNI_ARGS: &str = "CNI_ARGS";
/// `CNI_PATH`.
pub const CNI_PATH: &str = "CNI_PATH";

/// Longest Linux interface name in bytes (`IFNAMSIZ` − 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// The environment of one invocation, checked against the rules of its command.
///
/// Fields the command does not use are `None` / empty even when the variable was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (ADD, DEL, CHECK), validated.
    pub container_id: Option<String>,
    /// `CNI_NETNS` (required on ADD and CHECK, optional on DEL), validated.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (ADD, DEL, CHECK), validated.
    pub ifname: Option<String>,
    /// `CNI_ARGS` as given, unparsed (see [`crate::CniArgs`]); ADD, DEL, CHECK only.
    pub args: Option<String>,
    /// `CNI_PATH` split on `:`, empty entries dropped.
    pub path: Vec<PathBuf>,
}

impl Env {
    /// Reads the variables through `lookup` (e.g. a map, or the process environment) and
    /// checks them for the command they name.
    ///
    /// Errors (all code 4): `CNI_COMMAND` missing or unknown; required variables missing
    /// (all named at once); a present variable malformed.
    pub fn from_lookup<F>(lookup: F) -> Result<Env, Error>
    where
        F: Fn(&str) -> Option<String>,
    {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let command: Command = get(CNI_COMMAND)
            .ok_or_else(|| Error::MissingEnv(vec![CNI_COMMAND]))?
            .parse()?;

        let path = get(CNI_PATH)
            .map(|p| {
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        let mut env = Env {
            command,
            container_id: None,
            netns: None,
            ifname: None,
            args: None,
            path,
        };
        if !command.is_attachment() {
            return Ok(env);
        }

        let container_id = get(CNI_CONTAINERID);
        let netns = get(CNI_NETNS);
        let ifname = get(CNI_IFNAME);
        let netns_required = command != Command::Del;
        let mut missing = Vec::new();
        if container_id.is_none() {
            missing.push(CNI_CONTAINERID);
        }
        if netns_required && netns.is_none() {
            missing.push(CNI_NETNS);
        }
        if ifname.is_none() {
            missing.push(CNI_IFNAME);
        }
        if !missing.is_empty() {
            return Err(Error::MissingEnv(missing));
        }

        if let Some(id) = &container_id {
            validate_container_id(id)?;
        }
        if let Some(name) = &ifname {
            validate_ifname(name)?;
        }
        if let Some(ns) = &netns {
            validate_netns(ns)?;
        }
        env.container_id = container_id;
        env.ifname = ifname;
        env.netns = netns.map(PathBuf::from);
        env.args = get(CNI_ARGS);
        Ok(env)
    }

    /// [`Env::from_lookup`] over a map of variables.
    pub fn from_map(vars: &std::collections::HashMap<String, String>) -> Result<Env, Error> {
        Env::from_lookup(|name| vars.get(name).cloned())
    }
}

/// Alphanumeric first, then alphanumerics, `_`, `.` or `-` (the spec's rule; the same regex
/// guards the network name). ASCII only.
pub(crate) fn is_cni_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Checks a `CNI_CONTAINERID`: the spec's identifier rule, so `a/../../x` is refused.
pub fn validate_container_id(id: &str) -> Result<(), Error> {
    if is_cni_identifier(id) {
        Ok(())
    } else {
        Err(Error::InvalidEnv {
            var: CNI_CONTAINERID,
            value: id.to_owned(),
            reason: "container id must start with a letter or digit, followed by letters, \
                     digits, '_', '.' or '-'"
                .into(),
        })
    }
}

/// Checks a `CNI_IFNAME`: non-empty, at most 15 bytes, not `.` or `..`, and only
/// `A-Z a-z 0-9 _ . - @` — stricter than the kernel (which refuses only `/`, `:` and
/// whitespace) so that a name is always safe in a path, a log line or a shell.
pub fn validate_ifname(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        "interface name is empty".to_owned()
    } else if name.len() > MAX_IFNAME_LEN {
        format!("interface name is longer than {MAX_IFNAME_LEN} bytes")
    } else if name == "." || name == ".." {
        "interface name is . or ..".to_owned()
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'@'))
    {
        "interface name may only contain A-Z a-z 0-9 _ . - @".to_owned()
    } else {
        return Ok(());
    };
    Err(Error::InvalidEnv {
        var: CNI_IFNAME,
        value: name.to_owned(),
        reason,
    })
}

/// Checks a `CNI_NETNS`: an absolute path with no `..` component. Existence is not
/// checked (DEL must work when the netns is gone).
pub fn validate_netns(netns: &str) -> Result<(), Error> {
    let path = Path::new(netns);
    let reason = if !path.is_absolute() {
        "network namespace path must be absolute"
    } else if path.components().any(|c| c == Component::ParentDir) {
        "network namespace path must not contain '..'"
    } else {
        return Ok(());
    };
    Err(Error::InvalidEnv {
        var: CNI_NETNS,
        value: netns.to_owned(),
        reason: reason.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, Error> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_map(&map)
    }

    const FULL: [(&str, &str); 5] = [
        (CNI_CONTAINERID, "c0ffee"),
        (CNI_NETNS, "/var/run/netns/pod1"),
        (CNI_IFNAME, "net1"),
        (CNI_ARGS, "K8S_POD_NAME=p"),
        (CNI_PATH, "/opt/cni/bin::/usr/lib/cni"),
    ];

    #[test]
    fn add_with_everything() {
        let mut pairs = vec![(CNI_COMMAND, "ADD")];
        pairs.extend(FULL);
        let e = env(&pairs).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.container_id.as_deref(), Some("c0ffee"));
        assert_eq!(e.netns, Some(PathBuf::from("/var/run/netns/pod1")));
        assert_eq!(e.ifname.as_deref(), Some("net1"));
        assert_eq!(e.args.as_deref(), Some("K8S_POD_NAME=p"));
        assert_eq!(
            e.path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
    }

    #[test]
    fn missing_command() {
        let err = env(&[(CNI_CONTAINERID, "x")]).unwrap_err();
        assert_eq!(err.code(), 4);
        assert_eq!(
            err.to_string(),
            "required env variables [CNI_COMMAND] missing"
        );
        assert_eq!(env(&[(CNI_COMMAND, "")]).unwrap_err().code(), 4);
    }

    #[test]
    fn unknown_command() {
        let err = env(&[(CNI_COMMAND, "FROB")]).unwrap_err();
        assert_eq!(err.code(), 4);
        assert_eq!(err.to_string(), "unknown CNI_COMMAND: FROB");
    }

    #[test]
    fn add_and_check_name_all_missing_variables() {
        for cmd in ["ADD", "CHECK"] {
            let err = env(&[(CNI_COMMAND, cmd)]).unwrap_err();
            assert_eq!(err.code(), 4);
            assert_eq!(
                err.to_string(),
                "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME] missing"
            );
        }
        let err = env(&[(CNI_COMMAND, "ADD"), (CNI_NETNS, "/proc/1/ns/net")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "required env variables [CNI_CONTAINERID,CNI_IFNAME] missing"
        );
    }

    #[test]
    fn del_does_not_need_netns() {
        let err = env(&[(CNI_COMMAND, "DEL")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "required env variables [CNI_CONTAINERID,CNI_IFNAME] missing"
        );
        let e = env(&[
            (CNI_COMMAND, "DEL"),
            (CNI_CONTAINERID, "abc"),
            (CNI_IFNAME, "eth0"),
            (CNI_NETNS, ""),
        ])
        .unwrap();
        assert_eq!(e.netns, None);
        assert!(e.path.is_empty());
        // A given netns is still validated on DEL.
        let err = env(&[
            (CNI_COMMAND, "DEL"),
            (CNI_CONTAINERID, "abc"),
            (CNI_IFNAME, "eth0"),
            (CNI_NETNS, "relative/ns"),
        ])
        .unwrap_err();
        assert_eq!(err.code(), 4);
    }

    #[test]
    fn gc_status_version_need_only_the_command() {
        for cmd in ["GC", "STATUS", "VERSION"] {
            let e = env(&[(CNI_COMMAND, cmd), (CNI_IFNAME, "not valid at all!")]).unwrap();
            assert_eq!(e.container_id, None);
            assert_eq!(e.ifname, None);
            assert_eq!(e.netns, None);
        }
        let e = env(&[(CNI_COMMAND, "GC"), (CNI_PATH, "/opt/cni/bin")]).unwrap();
        assert_eq!(e.command, Command::Gc);
        assert_eq!(e.path, vec![PathBuf::from("/opt/cni/bin")]);
    }

    #[test]
    fn container_id_rule() {
        for ok in ["a", "0", "abc-DEF_1.2", "4f9e1c0c2b9a"] {
            validate_container_id(ok).unwrap();
        }
        for bad in ["a/../../x", "", "-a", ".a", "_a", "a b", "a:b", "é"] {
            let err = validate_container_id(bad).unwrap_err();
            assert_eq!(err.code(), 4, "{bad:?}");
        }
    }

    #[test]
    fn ifname_rule() {
        for ok in ["eth0", "net1", "a", "veth_0.1-x@y", "123456789012345"] {
            validate_ifname(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "eth0;rm",
            "1234567890123456",
            "a/b",
            "a:b",
            "a b",
            "tab\t",
            "ethé",
            "$(x)",
        ] {
            let err = validate_ifname(bad).unwrap_err();
            assert_eq!(err.code(), 4, "{bad:?}");
        }
        let err = validate_ifname("1234567890123456").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid CNI_IFNAME: interface name is longer than 15 bytes"
        );
    }

    #[test]
    fn netns_rule() {
        for ok in ["/var/run/netns/x", "/proc/42/ns/net", "/run/netns/a..b"] {
            validate_netns(ok).unwrap();
        }
        for bad in ["netns/x", "", "/var/run/netns/../../etc", "/.."] {
            assert_eq!(validate_netns(bad).unwrap_err().code(), 4, "{bad:?}");
        }
    }

    #[test]
    fn invalid_variable_refused_in_env() {
        let err = env(&[
            (CNI_COMMAND, "ADD"),
            (CNI_CONTAINERID, "a/../../x"),
            (CNI_NETNS, "/var/run/netns/x"),
            (CNI_IFNAME, "eth0"),
        ])
        .unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidEnv {
                var: CNI_CONTAINERID,
                ..
            }
        ));
        let err = env(&[
            (CNI_COMMAND, "CHECK"),
            (CNI_CONTAINERID, "abc"),
            (CNI_NETNS, "/var/run/netns/x"),
            (CNI_IFNAME, "eth0;rm"),
        ])
        .unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidEnv {
                var: CNI_IFNAME,
                ..
            }
        ));
    }
}
