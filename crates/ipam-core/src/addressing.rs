//! What subnets and pools share: a CIDR, address lists, a gateway and routes, with Spiderpool's
//! rules for them and the JSON-in-a-string codec of Spiderpool's status blobs.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Problem;
use crate::range::{IpFamily, IpSet, network_and_broadcast};

/// A route: `dst` via `gw`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Route {
    /// Destination CIDR.
    pub dst: IpNet,
    /// Next hop.
    pub gw: IpAddr,
}

/// The address fields of a subnet or pool spec, borrowed for validation.
pub(crate) struct Addressing<'a> {
    pub ip_version: Option<i64>,
    pub subnet: &'a IpNet,
    pub ips: &'a IpSet,
    pub exclude_ips: &'a IpSet,
    pub gateway: Option<&'a IpAddr>,
    pub routes: Option<&'a [Route]>,
}

/// The family of a CIDR.
pub fn family_of(net: &IpNet) -> IpFamily {
    match net {
        IpNet::V4(_) => IpFamily::V4,
        IpNet::V6(_) => IpFamily::V6,
    }
}

/// Spiderpool's CIDR label value: the network with `.`, `:` and `/` replaced by `-`
/// (`10.6.0.0/16` → `10-6-0-0-16`). Non-canonical CIDRs label as their network.
pub fn cidr_label(net: &IpNet) -> String {
    net.trunc().to_string().replace(['.', ':', '/'], "-")
}

/// The addresses a subnet or pool counts as its own: `ips` minus `excludeIPs` and, for IPv4
/// subnets of /30 and wider, minus the network and broadcast addresses.
pub fn usable_ips(subnet: &IpNet, ips: &IpSet, exclude: &IpSet) -> IpSet {
    ips.difference(exclude)
        .difference(&network_and_broadcast(subnet))
}

impl Addressing<'_> {
    /// Spiderpool's webhook checks on the address fields, in its order.
    pub fn validate(&self) -> Result<(), Problem> {
        let family = family_of(self.subnet);
        if let Some(v) = self.ip_version {
            let declared = IpFamily::from_version(v).ok_or(Problem::UnknownIpVersion(v))?;
            if declared != family {
                return Err(Problem::IpVersionMismatch {
                    version: v,
                    what: "spec.subnet",
                    value: self.subnet.to_string(),
                });
            }
        }
        let all = IpSet::from_net(self.subnet);
        for (field, set) in [("ips", self.ips), ("excludeIPs", self.exclude_ips)] {
            let outside = set.difference(&all);
            if !outside.is_empty() {
                return Err(Problem::OutsideSubnet {
                    field,
                    ips: outside,
                    subnet: *self.subnet,
                });
            }
        }
        if let Some(gw) = self.gateway {
            if !all.contains(gw) {
                return Err(Problem::GatewayOutsideSubnet {
                    gateway: *gw,
                    subnet: *self.subnet,
                });
            }
            if self.ips.contains(gw) && !self.exclude_ips.contains(gw) {
                return Err(Problem::GatewayAllocatable(*gw));
            }
        }
        let mut seen: Vec<IpNet> = Vec::new();
        for r in self.routes.unwrap_or_default() {
            if family_of(&r.dst) != family {
                return Err(Problem::Route(format!(
                    "dst {} is not {family} like the subnet {}",
                    r.dst, self.subnet
                )));
            }
            if r.dst.prefix_len() == 0 {
                return Err(Problem::Route(format!(
                    "dst {} is a default route; set spec.gateway instead",
                    r.dst
                )));
            }
            if seen.contains(&r.dst.trunc()) {
                return Err(Problem::Route(format!("dst {} is listed twice", r.dst)));
            }
            seen.push(r.dst.trunc());
            if !all.contains(&r.gw) {
                return Err(Problem::Route(format!(
                    "gw {} of dst {} is outside the subnet {}",
                    r.gw, r.dst, self.subnet
                )));
            }
        }
        Ok(())
    }
}

/// Checks a Kubernetes object name (a DNS subdomain).
pub(crate) fn check_name(name: &str) -> Result<(), Problem> {
    if name.is_empty() {
        return Err(Problem::MissingName);
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.len() > 253
        || !name.chars().all(ok_char)
        || !alnum(name.chars().next())
        || !alnum(name.chars().last())
    {
        return Err(Problem::BadName(name.to_string()));
    }
    Ok(())
}

/// A value Spiderpool stores as a JSON document inside a string field (`allocatedIPs`,
/// `controlledIPPools`). Reading also accepts the document unquoted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JsonString<T>(pub T);

impl<T: Serialize> Serialize for JsonString<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(&self.0).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for JsonString<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(text) => serde_json::from_str(&text)
                .map(JsonString)
                .map_err(serde::de::Error::custom),
            other => serde_json::from_value(other)
                .map(JsonString)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ips;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn addressing<'a>(
        subnet: &'a IpNet,
        ips: &'a IpSet,
        exclude: &'a IpSet,
        gw: Option<&'a IpAddr>,
        routes: Option<&'a [Route]>,
    ) -> Addressing<'a> {
        Addressing {
            ip_version: Some(4),
            subnet,
            ips,
            exclude_ips: exclude,
            gateway: gw,
            routes,
        }
    }

    #[test]
    fn cidr_labels_use_the_network() {
        assert_eq!(cidr_label(&net("10.6.0.1/16")), "10-6-0-0-16");
        assert_eq!(cidr_label(&net("fd00::1/64")), "fd00---64");
    }

    #[test]
    fn address_rules() {
        let subnet = net("10.6.0.1/16");
        let ok = ips!["10.6.168.171-10.6.168.180"];
        let none = IpSet::new();
        let gw: IpAddr = "10.6.0.1".parse().unwrap();
        assert_eq!(
            addressing(&subnet, &ok, &none, Some(&gw), None).validate(),
            Ok(())
        );

        let outside = ips!["10.6.255.250-10.7.0.5"];
        assert_eq!(
            addressing(&subnet, &outside, &none, None, None).validate(),
            Err(Problem::OutsideSubnet {
                field: "ips",
                ips: ips!["10.7.0.0-10.7.0.5"],
                subnet
            })
        );
        let far_gw: IpAddr = "10.7.0.1".parse().unwrap();
        assert!(matches!(
            addressing(&subnet, &ok, &none, Some(&far_gw), None).validate(),
            Err(Problem::GatewayOutsideSubnet { .. })
        ));
        let inner_gw: IpAddr = "10.6.168.175".parse().unwrap();
        assert_eq!(
            addressing(&subnet, &ok, &none, Some(&inner_gw), None).validate(),
            Err(Problem::GatewayAllocatable(inner_gw))
        );
        let excl = ips!["10.6.168.175"];
        assert_eq!(
            addressing(&subnet, &ok, &excl, Some(&inner_gw), None).validate(),
            Ok(())
        );

        let default = [Route {
            dst: net("0.0.0.0/0"),
            gw,
        }];
        let dup = [
            Route {
                dst: net("10.8.0.0/16"),
                gw,
            },
            Route {
                dst: net("10.8.0.1/16"),
                gw,
            },
        ];
        let far = [Route {
            dst: net("10.8.0.0/16"),
            gw: far_gw,
        }];
        for (routes, want) in [
            (&default[..], "default route"),
            (&dup[..], "listed twice"),
            (&far[..], "outside the subnet"),
        ] {
            let err = addressing(&subnet, &ok, &none, None, Some(routes))
                .validate()
                .unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
        let v6 = Addressing {
            ip_version: Some(6),
            ..addressing(&subnet, &ok, &none, None, None)
        };
        assert!(matches!(
            v6.validate(),
            Err(Problem::IpVersionMismatch { .. })
        ));
    }

    #[test]
    fn names_are_dns_subdomains() {
        assert!(check_name("auto4-test-app-eth0-a5bd3").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("Pool").is_err());
        assert!(check_name("-pool").is_err());
        assert!(check_name("pool_a").is_err());
    }

    #[test]
    fn json_strings_read_both_forms() {
        let quoted: JsonString<Vec<u8>> = serde_json::from_str(r#""[1,2]""#).unwrap();
        let bare: JsonString<Vec<u8>> = serde_json::from_str("[1,2]").unwrap();
        assert_eq!(quoted, bare);
        assert_eq!(serde_json::to_string(&quoted).unwrap(), r#""[1,2]""#);
    }
}
