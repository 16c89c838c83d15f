//! `CNI_ARGS`: `K=V;K=V` pairs, and the workload owner `BERTH_OWNER` names.
//!
//! Rules (the Go library's `types.LoadArgs`, with two leniencies marked *):
//!
//! - pairs are separated by `;`; empty segments (`a=1;;b=2`, a trailing `;`) are skipped*;
//! - a pair splits at its **first** `=`, so a value may contain `=`*; a pair without `=` or
//!   with an empty key is [`Error::InvalidEnv`] (code 4);
//! - keys are case-sensitive; a key given twice keeps its last value; an empty value
//!   (`K8S_POD_UID=`) counts as absent;
//! - known keys: `IgnoreUnknown`, `K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `K8S_POD_UID`,
//!   `K8S_POD_INFRA_CONTAINER_ID`, `BERTH_OWNER`;
//! - `IgnoreUnknown` takes `1`/`true`/`0`/`false` (anything else is code 4) and applies
//!   wherever it appears in the list. Unknown keys are then kept in
//!   [`CniArgs::unknown`]; without it they are [`Error::UnknownArgs`] (code 2), naming every
//!   unknown pair;
//! - `BERTH_OWNER=<Kind>/<name>`: Kind `Deployment`/`deploy` or `StatefulSet`/`sts`, any
//!   case; name a DNS-1123 subdomain (what Kubernetes allows for both kinds). Anything else
//!   is [`Error::InvalidOwner`] (code 7) naming the value.

use std::fmt;
use std::str::FromStr;

use crate::env::CNI_ARGS;
use crate::error::Error;

/// `CNI_ARGS` key: accept unknown keys.
pub const IGNORE_UNKNOWN: &str = "IgnoreUnknown";
/// `CNI_ARGS` key: pod namespace (set by Kubernetes runtimes).
pub const K8S_POD_NAMESPACE: &str = "K8S_POD_NAMESPACE";
/// `CNI_ARGS` key: pod name.
pub const K8S_POD_NAME: &str = "K8S_POD_NAME";
/// `CNI_ARGS` key: pod uid.
pub const K8S_POD_UID: &str = "K8S_POD_UID";
/// `CNI_ARGS` key: the sandbox (infra) container id.
pub const K8S_POD_INFRA_CONTAINER_ID: &str = "K8S_POD_INFRA_CONTAINER_ID";
/// `CNI_ARGS` key: the workload the pod belongs to, `<Kind>/<name>` (Berth's own).
pub const BERTH_OWNER: &str = "BERTH_OWNER";

/// Parsed `CNI_ARGS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// `IgnoreUnknown` was `1` or `true`.
    pub ignore_unknown: bool,
    /// `K8S_POD_NAMESPACE`.
    pub k8s_pod_namespace: Option<String>,
    /// `K8S_POD_NAME`.
    pub k8s_pod_name: Option<String>,
    /// `K8S_POD_UID`.
    pub k8s_pod_uid: Option<String>,
    /// `K8S_POD_INFRA_CONTAINER_ID`.
    pub k8s_pod_infra_container_id: Option<String>,
    /// `BERTH_OWNER`, parsed.
    pub owner: Option<Owner>,
    /// Unknown `(key, value)` pairs in input order (only ever non-empty with `IgnoreUnknown`).
    pub unknown: Vec<(String, String)>,
}

impl CniArgs {
    /// Parses a `CNI_ARGS` value by the rules in the [module docs](self).
    pub fn parse(s: &str) -> Result<CniArgs, Error> {
        let mut args = CniArgs::default();
        let mut unknown = Vec::new();
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let (key, value) = match pair.split_once('=') {
                Some((k, v)) if !k.is_empty() => (k, v),
                _ => {
                    return Err(Error::InvalidEnv {
                        var: CNI_ARGS,
                        value: s.to_owned(),
                        reason: format!("invalid pair {pair:?}, expected KEY=VALUE"),
                    });
                }
            };
            let text = (!value.is_empty()).then(|| value.to_owned());
            match key {
                IGNORE_UNKNOWN => {
                    args.ignore_unknown = match value {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => {
                            return Err(Error::InvalidEnv {
                                var: CNI_ARGS,
                                value: s.to_owned(),
                                reason: format!(
                                    "IgnoreUnknown must be 1, true, 0 or false, not {value:?}"
                                ),
                            });
                        }
                    }
                }
                K8S_POD_NAMESPACE => args.k8s_pod_namespace = text,
                K8S_POD_NAME => args.k8s_pod_name = text,
                K8S_POD_UID => args.k8s_pod_uid = text,
                K8S_POD_INFRA_CONTAINER_ID => args.k8s_pod_infra_container_id = text,
                BERTH_OWNER => args.owner = text.as_deref().map(str::parse).transpose()?,
                _ => unknown.push((key.to_owned(), value.to_owned())),
            }
        }
        if !unknown.is_empty() && !args.ignore_unknown {
            return Err(Error::UnknownArgs {
                pairs: unknown.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            });
        }
        args.unknown = unknown;
        Ok(args)
    }

    /// The value of an unknown key kept under `IgnoreUnknown` (last one wins).
    pub fn unknown_value(&self, key: &str) -> Option<&str> {
        self.unknown
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl FromStr for CniArgs {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CniArgs::parse(s)
    }
}

/// The kind of workload a pod belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnerKind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
}

impl OwnerKind {
    /// The Kubernetes kind name: `Deployment` or `StatefulSet`.
    pub const fn as_str(self) -> &'static str {
        match self {
            OwnerKind::Deployment => "Deployment",
            OwnerKind::StatefulSet => "StatefulSet",
        }
    }
}

impl fmt::Display for OwnerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `BERTH_OWNER`: the workload (in the pod's namespace) whose pools the pod draws from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// Deployment or StatefulSet.
    pub kind: OwnerKind,
    /// The workload's name.
    pub name: String,
}

impl FromStr for Owner {
    type Err = Error;

    /// `deployment/web`, `Deploy/web`, `StatefulSet/db`, `sts/db`, … (kind in any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| Error::InvalidOwner {
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (kind, name) = s
            .split_once('/')
            .ok_or_else(|| invalid("expected <Kind>/<name>"))?;
        let kind = match kind.to_ascii_lowercase().as_str() {
            "deployment" | "deploy" => OwnerKind::Deployment,
            "statefulset" | "sts" => OwnerKind::StatefulSet,
            _ => {
                return Err(invalid(
                    "kind must be Deployment (deploy) or StatefulSet (sts)",
                ));
            }
        };
        if !is_dns1123_subdomain(name) {
            return Err(invalid(
                "name must be lower-case letters, digits, '-' and '.', start and end with a \
                 letter or digit, at most 253 characters",
            ));
        }
        Ok(Owner {
            kind,
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for Owner {
    /// The normalised form, `Deployment/web`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

fn is_dns1123_subdomain(name: &str) -> bool {
    let edge_ok =
        |b: Option<&u8>| matches!(b, Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit());
    name.len() <= 253
        && edge_ok(name.as_bytes().first())
        && edge_ok(name.as_bytes().last())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_runtime_args() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=4f9e;K8S_POD_UID=1234-abcd",
        )
        .unwrap();
        assert_eq!(
            a,
            CniArgs {
                ignore_unknown: true,
                k8s_pod_namespace: Some("default".into()),
                k8s_pod_name: Some("web-0".into()),
                k8s_pod_uid: Some("1234-abcd".into()),
                k8s_pod_infra_container_id: Some("4f9e".into()),
                owner: None,
                unknown: vec![],
            }
        );
    }

    #[test]
    fn empty_and_blank() {
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        assert_eq!(CniArgs::parse(";;").unwrap(), CniArgs::default());
        let a = CniArgs::parse("K8S_POD_NAME=;K8S_POD_UID=u;").unwrap();
        assert_eq!(a.k8s_pod_name, None);
        assert_eq!(a.k8s_pod_uid.as_deref(), Some("u"));
    }

    #[test]
    fn malformed_pair_is_code_4() {
        for bad in ["K8S_POD_NAME", "a=1;b", "=v"] {
            let err = CniArgs::parse(bad).unwrap_err();
            assert_eq!(err.code(), 4, "{bad:?}");
        }
        let err = CniArgs::parse("IgnoreUnknown=yes").unwrap_err();
        assert_eq!(err.code(), 4);
    }

    #[test]
    fn unknown_keys_need_ignore_unknown() {
        let err = CniArgs::parse("K8S_POD_NAME=p;IP=10.0.0.5;MAC=aa").unwrap_err();
        assert_eq!(err.code(), 2);
        assert_eq!(
            err.to_string(),
            "unknown CNI_ARGS [IP=10.0.0.5;MAC=aa] (set IgnoreUnknown=1 to allow them)"
        );
        // IgnoreUnknown applies wherever it is, and keeps the unknown pairs.
        for s in [
            "IP=10.0.0.5;IgnoreUnknown=true",
            "IgnoreUnknown=1;IP=10.0.0.4;IP=10.0.0.5",
        ] {
            let a = CniArgs::parse(s).unwrap();
            assert!(a.ignore_unknown);
            assert_eq!(a.unknown_value("IP"), Some("10.0.0.5"));
        }
        assert_eq!(
            CniArgs::parse("IgnoreUnknown=0;IP=1").unwrap_err().code(),
            2
        );
        // Keys are case-sensitive.
        assert_eq!(CniArgs::parse("k8s_pod_name=p").unwrap_err().code(), 2);
    }

    #[test]
    fn value_may_contain_equals_and_last_wins() {
        let a = CniArgs::parse("K8S_POD_NAME=a;K8S_POD_NAME=b=c").unwrap();
        assert_eq!(a.k8s_pod_name.as_deref(), Some("b=c"));
    }

    #[test]
    fn owner_kinds_are_normalised() {
        for (s, kind) in [
            ("Deployment/web", OwnerKind::Deployment),
            ("deployment/web", OwnerKind::Deployment),
            ("DEPLOY/web", OwnerKind::Deployment),
            ("StatefulSet/web", OwnerKind::StatefulSet),
            ("statefulset/web", OwnerKind::StatefulSet),
            ("sts/web", OwnerKind::StatefulSet),
        ] {
            let o: Owner = s.parse().unwrap();
            assert_eq!(o.kind, kind, "{s}");
            assert_eq!(o.name, "web");
        }
        let a = CniArgs::parse("BERTH_OWNER=sts/db.v2-0").unwrap();
        assert_eq!(a.owner.unwrap().to_string(), "StatefulSet/db.v2-0");
    }

    #[test]
    fn malformed_owner_is_code_7_naming_the_value() {
        for bad in [
            "web",
            "Pod/web",
            "Deployment/",
            "Deployment/Web",
            "Deployment/a/b",
            "Deployment/-a",
            "/web",
            "ReplicaSet/web",
        ] {
            let err = CniArgs::parse(&format!("BERTH_OWNER={bad}")).unwrap_err();
            assert_eq!(err.code(), 7, "{bad:?}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        let long = format!("Deployment/{}", "a".repeat(254));
        assert_eq!(long.parse::<Owner>().unwrap_err().code(), 7);
    }
}
