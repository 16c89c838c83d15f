//! `berth-ipam`'s keys in the `ipam` object of a network config: Spiderpool's, so that the
//! seed's NetworkAttachmentDefinitions work as they are, and Berth's `data_dir`.

use std::path::PathBuf;

use berth_cni::NetworkConfig;
use berth_cni::de;
use berth_cni::logging::Rotation;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::error::Error;

/// Where `berth-ipam` logs when the config sets no `log_file_path`.
pub const DEFAULT_LOG_FILE: &str = "/var/log/berth/berth-ipam.log";

/// The `ipam` object: Spiderpool's keys, Berth's own, and whatever else was there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    /// `type`: the IPAM binary's name (`spiderpool`, `berth-ipam`, …).
    #[serde(
        rename = "type",
        default,
        deserialize_with = "de::non_empty_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipam_type: Option<String>,
    /// `default_ipv4_ippool`: IPv4 pools to use when nothing more specific applies.
    #[serde(
        default,
        deserialize_with = "de::null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub default_ipv4_ippool: Vec<String>,
    /// `default_ipv6_ippool`: IPv6 pools to use when nothing more specific applies.
    #[serde(
        default,
        deserialize_with = "de::null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub default_ipv6_ippool: Vec<String>,
    /// `clean_gateway`: no default route via the pool gateway.
    #[serde(
        default,
        deserialize_with = "de::null_default",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub clean_gateway: bool,
    /// `log_level`: `DEBUG`, `INFO`, `WARN`, `ERROR`.
    #[serde(
        default,
        deserialize_with = "de::non_empty_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_level: Option<String>,
    /// `log_file_path`: where the plugin logs.
    #[serde(
        default,
        deserialize_with = "de::non_empty_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_file_path: Option<PathBuf>,
    /// `log_file_max_size`: the log rotates before it passes this many MiB (default
    /// [`Rotation::DEFAULT_MAX_SIZE_MB`]; 0 is the default, as in Spiderpool).
    #[serde(
        default,
        deserialize_with = "log_file_max_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_file_max_size: Option<u64>,
    /// `log_file_max_age`: rotated logs last written more days ago than this are deleted
    /// (default [`Rotation::DEFAULT_MAX_AGE_DAYS`]; 0 is the default).
    #[serde(
        default,
        deserialize_with = "log_file_max_age",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_file_max_age: Option<u64>,
    /// `log_file_max_count`: rotated logs kept (default [`Rotation::DEFAULT_MAX_COUNT`]; 0 is
    /// the default).
    #[serde(
        default,
        deserialize_with = "log_file_max_count",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_file_max_count: Option<u64>,
    /// `ipam_unix_socket_path`: the agent's socket (agent mode).
    #[serde(
        default,
        deserialize_with = "de::non_empty_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipam_unix_socket_path: Option<PathBuf>,
    /// `data_dir` (Berth): the sled store's directory (embedded mode).
    #[serde(
        default,
        deserialize_with = "de::non_empty_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub data_dir: Option<PathBuf>,
    /// `enable_ip_conflict_detection`: probe each address with ARP / NDP before answering ADD
    /// ([`probe`](crate::ipam::probe)). Absent: the agent's default (off in embedded mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_ip_conflict_detection: Option<bool>,
    /// `enable_gateway_detection`: ask each address's gateway before answering ADD. Absent:
    /// the agent's default (off in embedded mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_gateway_detection: Option<bool>,
    /// Every other key, kept as given (e.g. Spiderpool's `match_master_subnet`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl IpamConfig {
    /// The `ipam` keys of `config` (all defaults when it has no `ipam` object); code 6 when
    /// they do not decode.
    pub fn of(config: &NetworkConfig) -> Result<IpamConfig, Error> {
        Ok(config.ipam_keys()?.unwrap_or_default())
    }

    /// How the log file rotates: `log_file_max_size`, `log_file_max_age`,
    /// `log_file_max_count`, defaults for those unset.
    pub fn rotation(&self) -> Rotation {
        Rotation::from_limits(
            self.log_file_max_size,
            self.log_file_max_age,
            self.log_file_max_count,
        )
    }
}

// Spiderpool's units: lumberjack's MiB, days, files.
fn log_file_max_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de::limit(d, "log_file_max_size", "MiB")
}

fn log_file_max_age<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de::limit(d, "log_file_max_age", "days")
}

fn log_file_max_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de::limit(d, "log_file_max_count", "rotated files")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> NetworkConfig {
        NetworkConfig::parse(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    #[test]
    fn the_seeds_macvlan_config_gives_every_key() {
        // What Debian's macvlan forwards to its IPAM plugin for the seed's NAD.
        let c = parse(json!({
            "cniVersion": "0.3.1",
            "name": "macvlan-conf-ens192",
            "type": "macvlan",
            "master": "ens192",
            "mode": "bridge",
            "ipam": {
                "type": "spiderpool",
                "default_ipv4_ippool": ["pool-a", "pool-*"],
                "default_ipv6_ippool": ["pool6"],
                "clean_gateway": true,
                "log_level": "DEBUG",
                "log_file_path": "/var/log/spidernet/spiderpool.log",
                "log_file_max_size": 100,
                "log_file_max_age": 30,
                "log_file_max_count": 7,
                "match_master_subnet": false,
                "ipam_unix_socket_path": "/var/run/spidernet/spiderpool.sock",
                "data_dir": "/var/lib/berth",
                "enable_ip_conflict_detection": true,
                "enable_gateway_detection": false
            }
        }));
        let ipam = IpamConfig::of(&c).unwrap();
        assert_eq!(ipam.ipam_type.as_deref(), Some("spiderpool"));
        assert_eq!(ipam.default_ipv4_ippool, vec!["pool-a", "pool-*"]);
        assert_eq!(ipam.default_ipv6_ippool, vec!["pool6"]);
        assert!(ipam.clean_gateway);
        assert_eq!(ipam.log_level.as_deref(), Some("DEBUG"));
        assert_eq!(
            ipam.log_file_path,
            Some(PathBuf::from("/var/log/spidernet/spiderpool.log"))
        );
        assert_eq!(
            ipam.ipam_unix_socket_path,
            Some(PathBuf::from("/var/run/spidernet/spiderpool.sock"))
        );
        assert_eq!(ipam.data_dir, Some(PathBuf::from("/var/lib/berth")));
        assert_eq!(ipam.enable_ip_conflict_detection, Some(true));
        assert_eq!(ipam.enable_gateway_detection, Some(false));
        assert_eq!(
            (
                ipam.log_file_max_size,
                ipam.log_file_max_age,
                ipam.log_file_max_count
            ),
            (Some(100), Some(30), Some(7))
        );
        assert_eq!(
            ipam.rotation(),
            Rotation::from_limits(Some(100), Some(30), Some(7))
        );
        assert_eq!(
            ipam.extra,
            json!({"match_master_subnet": false})
                .as_object()
                .unwrap()
                .clone()
        );
    }

    #[test]
    fn minimal_and_absent_ipam_objects_give_defaults() {
        let c = parse(json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "spiderpool"}}));
        let ipam = IpamConfig::of(&c).unwrap();
        assert!(ipam.default_ipv4_ippool.is_empty());
        assert!(!ipam.clean_gateway);
        assert_eq!(ipam.data_dir, None);
        assert!(ipam.extra.is_empty());
        assert_eq!(
            ipam.enable_ip_conflict_detection, None,
            "absent: the agent decides"
        );
        assert_eq!(ipam.rotation(), Rotation::default());
        let none = parse(json!({"cniVersion": "1.0.0", "name": "n"}));
        assert_eq!(IpamConfig::of(&none).unwrap(), IpamConfig::default());
        // Serializing gives back only what was set.
        assert_eq!(
            serde_json::to_value(IpamConfig {
                ipam_type: Some("spiderpool".into()),
                ..Default::default()
            })
            .unwrap(),
            json!({"type": "spiderpool"})
        );
    }

    #[test]
    fn keys_of_the_wrong_type_are_a_decode_error() {
        let c =
            parse(json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"clean_gateway": "yes"}}));
        assert_eq!(IpamConfig::of(&c).unwrap_err().code(), 6);
    }

    #[test]
    fn log_rotation_keys_zero_is_the_default_and_invalid_values_are_named() {
        let ipam = |keys: Value| {
            let mut obj = json!({"type": "spiderpool"});
            obj.as_object_mut()
                .unwrap()
                .extend(keys.as_object().unwrap().clone());
            IpamConfig::of(&parse(
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": obj}),
            ))
        };
        let zero = ipam(json!({
            "log_file_max_size": 0, "log_file_max_age": 0, "log_file_max_count": null
        }))
        .unwrap();
        assert_eq!(
            (
                zero.log_file_max_size,
                zero.log_file_max_age,
                zero.log_file_max_count
            ),
            (None, None, None)
        );
        assert_eq!(zero.rotation(), Rotation::default());
        for (key, value, says) in [
            (
                "log_file_max_size",
                json!(-1),
                "log_file_max_size must be a whole number of MiB, 0 or more (0: the default), not -1",
            ),
            (
                "log_file_max_age",
                json!("30d"),
                "log_file_max_age must be a whole number of days, 0 or more (0: the default), not \"30d\"",
            ),
            (
                "log_file_max_count",
                json!(2.5),
                "log_file_max_count must be a whole number of rotated files, 0 or more (0: the default), not 2.5",
            ),
            (
                "log_file_max_size",
                json!("100"),
                "log_file_max_size must be a whole number of MiB",
            ),
        ] {
            let err = ipam(json!({ key: value })).unwrap_err();
            assert_eq!(err.code(), 6, "{key}: {value}");
            let shown = berth_cni::Error::from(err).to_cni_error();
            assert!(
                format!("{} {}", shown.msg, shown.details).contains(says),
                "{key}: {value}: {shown:?}"
            );
        }
    }
}
