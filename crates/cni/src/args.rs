//! `CNI_ARGS`: `K=V;K=V` pairs.
//!
//! Rules (the Go library's `types.LoadArgs`, with two leniencies marked *):
//!
//! - pairs are separated by `;`; empty segments (`a=1;;b=2`, a trailing `;`) are skipped*;
//! - a pair splits at its **first** `=`, so a value may contain `=`*; a pair without `=` or
//!   with an empty key is [`Error::InvalidEnv`] (code 4);
//! - keys are case-sensitive; a key given twice keeps its last value; an empty value
//!   (`K8S_POD_UID=`) counts as absent;
//! - known keys: `IgnoreUnknown`, `K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `K8S_POD_UID`,
//!   `K8S_POD_INFRA_CONTAINER_ID`, and the plugin's own ([`Plugin::args_keys`](crate::Plugin::args_keys)),
//!   kept in [`CniArgs::plugin`] for the plugin to read and judge;
//! - `IgnoreUnknown` takes `1`/`true`/`0`/`false` (anything else is code 4) and applies
//!   wherever it appears in the list. Unknown keys are then kept in
//!   [`CniArgs::unknown`]; without it they are [`Error::UnknownArgs`] (code 2), naming every
//!   unknown pair.

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
    /// The plugin's own keys (those it names in [`Plugin::args_keys`](crate::Plugin::args_keys)),
    /// as `(key, value)` pairs in input order, empty values included.
    pub plugin: Vec<(String, String)>,
    /// Unknown `(key, value)` pairs in input order (only ever non-empty with `IgnoreUnknown`).
    pub unknown: Vec<(String, String)>,
}

impl CniArgs {
    /// Parses a `CNI_ARGS` value by the rules in the [module docs](self), knowing only the
    /// spec's and Kubernetes' keys.
    pub fn parse(s: &str) -> Result<CniArgs, Error> {
        CniArgs::parse_with(s, &[])
    }

    /// [`CniArgs::parse`], with `plugin_keys` known too: they are kept in [`CniArgs::plugin`]
    /// and need no `IgnoreUnknown`.
    pub fn parse_with(s: &str, plugin_keys: &[&str]) -> Result<CniArgs, Error> {
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
                _ if plugin_keys.contains(&key) => {
                    args.plugin.push((key.to_owned(), value.to_owned()))
                }
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

    /// The value of one of the plugin's own keys (the last one given); `None` when absent or
    /// empty.
    pub fn plugin_value(&self, key: &str) -> Option<&str> {
        self.plugin
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
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
                plugin: vec![],
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
    fn a_plugins_own_keys_need_no_ignore_unknown() {
        assert_eq!(CniArgs::parse("BERTH_OWNER=sts/db").unwrap_err().code(), 2);
        let a = CniArgs::parse_with(
            "BERTH_OWNER=x;K8S_POD_NAME=p;BERTH_OWNER=sts/db",
            &["BERTH_OWNER"],
        )
        .unwrap();
        assert_eq!(a.plugin_value("BERTH_OWNER"), Some("sts/db"));
        assert_eq!(a.k8s_pod_name.as_deref(), Some("p"));
        assert!(a.unknown.is_empty());
        let empty = CniArgs::parse_with("BERTH_OWNER=", &["BERTH_OWNER"]).unwrap();
        assert_eq!(empty.plugin_value("BERTH_OWNER"), None);
    }
}
