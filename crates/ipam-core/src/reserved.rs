//! `SpiderReservedIP`: IPs never handed out, whatever pool holds them.

use serde::{Deserialize, Serialize};

use crate::addressing::check_name;
use crate::error::{Error, Problem};
use crate::meta::{Kind, ObjectMeta, spiderpool_api_version, spiderpool_kind};
use crate::range::{IpFamily, IpSet};
use crate::subnet::immutable;

spiderpool_kind! {
    /// A `SpiderReservedIP` (`spiderpool.spidernet.io/v2beta1`, cluster-scoped).
    pub struct SpiderReservedIP (kind default "SpiderReservedIP::kind_name") {
        /// Spec.
        pub spec: ReservedIpSpec,
    }
}

/// `SpiderReservedIP.spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReservedIpSpec {
    /// 4 or 6; derived from the first IP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<i64>,
    /// The reserved IPs.
    #[serde(default)]
    pub ips: IpSet,
}

impl SpiderReservedIP {
    /// A reservation of `ips`.
    pub fn new(name: &str, ips: IpSet) -> Self {
        SpiderReservedIP {
            api_version: spiderpool_api_version(),
            kind: Self::kind_name(),
            metadata: ObjectMeta::named(name),
            spec: ReservedIpSpec {
                ip_version: None,
                ips,
            },
        }
    }

    /// Spiderpool's mutating webhook: derive `ipVersion` from the first IP.
    pub fn mutate(&mut self) {
        if self.spec.ip_version.is_none() {
            self.spec.ip_version = self.spec.ips.families().first().map(|f| f.version());
        }
    }

    /// Spiderpool's validating webhook.
    pub fn validate(&self, old: Option<&SpiderReservedIP>) -> Result<(), Error> {
        let name = self.metadata.name.as_str();
        let fail = |p: Problem| Error::invalid(Kind::SpiderReservedIP, name, p);
        check_name(name).map_err(fail)?;
        if self.spec.ips.is_empty() {
            return Err(fail(Problem::Empty("ips")));
        }
        if let Some(v) = self.spec.ip_version {
            let family = IpFamily::from_version(v)
                .ok_or(Problem::UnknownIpVersion(v))
                .map_err(fail)?;
            let other = IpFamily::BOTH
                .into_iter()
                .find(|f| *f != family)
                .expect("two families");
            let wrong = self.spec.ips.of_family(other);
            if !wrong.is_empty() {
                return Err(fail(Problem::IpVersionMismatch {
                    version: v,
                    what: "spec.ips",
                    value: wrong.to_string(),
                }));
            }
        }
        if let Some(old) = old {
            immutable(old.spec.ip_version, self.spec.ip_version, "ipVersion").map_err(fail)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ips;

    #[test]
    fn version_comes_from_the_ips_and_must_agree() {
        let mut r = SpiderReservedIP::new("gw", ips!["10.6.0.1", "10.6.0.254"]);
        r.mutate();
        assert_eq!(r.spec.ip_version, Some(4));
        assert!(r.validate(None).is_ok());
        let mut mixed = SpiderReservedIP::new("mixed", ips!["10.6.0.1", "fd00::1"]);
        mixed.mutate();
        let err = mixed.validate(None).unwrap_err().to_string();
        assert!(err.contains("fd00::1"), "{err}");
        let empty = SpiderReservedIP::new("empty", IpSet::new());
        assert!(
            empty
                .validate(None)
                .unwrap_err()
                .to_string()
                .contains("must not be empty")
        );
    }
}
