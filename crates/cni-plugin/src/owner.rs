//! `BERTH_OWNER=<Kind>/<name>` in `CNI_ARGS`: the workload a pod belongs to, registered in the
//! embedded store with `berth apply`.
//!
//! Kind `Deployment`/`deploy` or `StatefulSet`/`sts`, any case; name a DNS-1123 subdomain
//! (what Kubernetes allows for both kinds). Anything else is [`Error::InvalidOwner`] (code 7)
//! naming the value.

use std::fmt;
use std::str::FromStr;

use berth_cni::CniArgs;
use ipam_core::WorkloadKind;

use crate::error::Error;

/// `CNI_ARGS` key: the workload the pod belongs to, `<Kind>/<name>` (Berth's own).
pub const BERTH_OWNER: &str = "BERTH_OWNER";

/// The owner `CNI_ARGS` names, if any.
pub fn owner_of(args: &CniArgs) -> Result<Option<Owner>, Error> {
    args.plugin_value(BERTH_OWNER).map(str::parse).transpose()
}

/// `BERTH_OWNER`: the workload (in the pod's namespace) whose pools the pod draws from. On the
/// agent's wire it is the string `Kind/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Owner {
    /// Deployment or StatefulSet.
    pub kind: WorkloadKind,
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
            "deployment" | "deploy" => WorkloadKind::Deployment,
            "statefulset" | "sts" => WorkloadKind::StatefulSet,
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

impl TryFrom<String> for Owner {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Owner> for String {
    fn from(owner: Owner) -> String {
        owner.to_string()
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
    fn owner_kinds_are_normalised() {
        for (s, kind) in [
            ("Deployment/web", WorkloadKind::Deployment),
            ("deployment/web", WorkloadKind::Deployment),
            ("DEPLOY/web", WorkloadKind::Deployment),
            ("StatefulSet/web", WorkloadKind::StatefulSet),
            ("statefulset/web", WorkloadKind::StatefulSet),
            ("sts/web", WorkloadKind::StatefulSet),
        ] {
            let o: Owner = s.parse().unwrap();
            assert_eq!(o.kind, kind, "{s}");
            assert_eq!(o.name, "web");
        }
        let args = CniArgs::parse_with("BERTH_OWNER=sts/db.v2-0", &[BERTH_OWNER]).unwrap();
        assert_eq!(
            owner_of(&args).unwrap().unwrap().to_string(),
            "StatefulSet/db.v2-0"
        );
        assert_eq!(owner_of(&CniArgs::default()).unwrap(), None);
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
            let err = bad.parse::<Owner>().unwrap_err();
            assert_eq!(err.code(), 7, "{bad:?}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        let long = format!("Deployment/{}", "a".repeat(254));
        assert_eq!(long.parse::<Owner>().unwrap_err().code(), 7);
    }
}
