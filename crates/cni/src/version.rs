//! CNI specification versions and the VERSION answer.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// A CNI specification version this crate speaks.
///
/// Variants are declared oldest first, so `Ord` is the spec's chronological order:
/// `Version::V0_4_0 < Version::V1_0_0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// 0.3.0: rich results (interfaces, ips, routes, dns) and plugin chaining.
    V0_3_0,
    /// 0.3.1: same result shape as 0.3.0.
    V0_3_1,
    /// 0.4.0: CHECK, and `prevResult` on DEL.
    V0_4_0,
    /// 1.0.0: `ips[].version` removed.
    V1_0_0,
    /// 1.1.0: GC and STATUS; route `mtu/advmss/priority/table/scope`, interface
    /// `mtu/socketPath/pciID`.
    V1_1_0,
}

/// Every version this crate speaks, oldest first (the `supportedVersions` of VERSION).
pub const SUPPORTED: [Version; 5] = [
    Version::V0_3_0,
    Version::V0_3_1,
    Version::V0_4_0,
    Version::V1_0_0,
    Version::V1_1_0,
];

impl Version {
    /// The newest version this crate speaks.
    pub const LATEST: Version = Version::V1_1_0;

    /// The version as written in JSON, e.g. `"0.3.1"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// Whether results of this version carry `ips[].version` (`"4"` / `"6"`): 0.3.x and 0.4.0.
    pub fn has_ip_version_field(self) -> bool {
        self < Version::V1_0_0
    }

    /// Whether results of this version know the 1.1.0 route and interface fields.
    pub fn has_v1_1_fields(self) -> bool {
        self >= Version::V1_1_0
    }

    /// `["0.3.0", "0.3.1", ...]`, the form used in error details.
    pub(crate) fn supported_list() -> String {
        let quoted: Vec<String> = SUPPORTED
            .iter()
            .map(|v| format!("{:?}", v.as_str()))
            .collect();
        format!("[{}]", quoted.join(", "))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Version {
    type Err = Error;

    /// Exact match on one of [`SUPPORTED`]; anything else (`"1.2.0"`, `"0.2.0"`, `"1.0"`)
    /// is [`Error::IncompatibleVersion`] (CNI code 1).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SUPPORTED
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| Error::IncompatibleVersion {
                requested: Some(s.to_owned()),
            })
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "unsupported CNI version {s:?}, expected one of {}",
                Version::supported_list()
            ))
        })
    }
}

/// The answer to `CNI_COMMAND=VERSION`.
///
/// VERSION ignores stdin (DESIGN §5), so `cniVersion` is always [`Version::LATEST`], as the
/// Go skeleton does; `supportedVersions` lists all of [`SUPPORTED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    /// The version of this answer: [`Version::LATEST`].
    #[serde(rename = "cniVersion")]
    pub cni_version: Version,
    /// Every version the plugin accepts.
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<Version>,
}

impl Default for VersionInfo {
    fn default() -> Self {
        VersionInfo {
            cni_version: Version::LATEST,
            supported_versions: SUPPORTED.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_and_display_round_trip() {
        for v in SUPPORTED {
            assert_eq!(v.as_str().parse::<Version>().unwrap(), v);
            assert_eq!(v.to_string(), v.as_str());
        }
    }

    #[test]
    fn unknown_versions_are_incompatible() {
        for s in ["9.9.9", "1.2.0", "0.2.0", "0.1.0", "1.0", "", " 1.0.0"] {
            let err = s.parse::<Version>().unwrap_err();
            assert_eq!(err.code(), 1, "{s:?}");
        }
    }

    #[test]
    fn order_is_chronological() {
        assert!(Version::V0_3_0 < Version::V0_3_1);
        assert!(Version::V0_3_1 < Version::V0_4_0);
        assert!(Version::V0_4_0 < Version::V1_0_0);
        assert!(Version::V1_0_0 < Version::V1_1_0);
        assert_eq!(SUPPORTED.iter().max(), Some(&Version::LATEST));
        assert!(SUPPORTED.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn version_info_json() {
        let v = serde_json::to_value(VersionInfo::default()).unwrap();
        assert_eq!(
            v,
            json!({
                "cniVersion": "1.1.0",
                "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
            })
        );
    }

    #[test]
    fn serde_as_string() {
        let v: Version = serde_json::from_value(json!("0.4.0")).unwrap();
        assert_eq!(v, Version::V0_4_0);
        assert!(serde_json::from_value::<Version>(json!("1.2.0")).is_err());
        assert_eq!(
            serde_json::to_value(Version::V1_0_0).unwrap(),
            json!("1.0.0")
        );
    }
}
