//! Links as `ip link` shows them: name, index, MAC, peer, alias — and the lookups the other
//! modules need (`ip link show dev X`, `ip link set X up`, `ip link del X`).

use std::collections::BTreeMap;
use std::fmt;

use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};

use crate::error::{self, Error, Side};

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A random locally administered unicast address. Setting it explicitly at creation
    /// keeps udev's `MACAddressPolicy=persistent` from changing it later behind the static
    /// neighbour entries (the race Cilium and Spiderpool hit).
    pub fn random() -> Mac {
        let mut bytes: [u8; 6] = rand::random();
        bytes[0] = (bytes[0] & 0xfe) | 0x02;
        Mac(bytes)
    }

    /// From an `IFLA_ADDRESS` / `NDA_LLADDR` payload; `None` unless it is 6 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Mac> {
        bytes.try_into().ok().map(Mac)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// One link of a namespace, the fields Berth reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// `ifindex`.
    pub index: u32,
    /// `IFLA_IFNAME`.
    pub name: String,
    /// `IFLA_ADDRESS`, when it is an Ethernet address.
    pub mac: Option<Mac>,
    /// `IFLA_LINK`: for a veth, the peer's index (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// `IFLA_IFALIAS`.
    pub alias: Option<String>,
    /// Administratively up.
    pub up: bool,
    /// `IFLA_MTU`.
    pub mtu: Option<u32>,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Option<Link> {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mac: None,
            peer_index: None,
            alias: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            mtu: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::Address(bytes) => link.mac = Mac::from_slice(bytes),
                LinkAttribute::Link(index) => link.peer_index = Some(*index),
                LinkAttribute::IfAlias(alias) => link.alias = Some(alias.clone()),
                LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
                _ => {}
            }
        }
        (!link.name.is_empty()).then_some(link)
    }
}

/// The links of one namespace by name (`ip link show`), to resolve `dev X` and back.
#[derive(Debug, Clone, Default)]
pub struct Links {
    by_name: BTreeMap<String, Link>,
}

impl Links {
    /// Dumps the links of the handle's namespace.
    pub async fn dump(handle: &Handle, side: Side) -> Result<Links, Error> {
        let messages: Vec<LinkMessage> = error::dump(handle.link().get().execute(), side, || {
            "ip link show".into()
        })
        .await?;
        Ok(Links {
            by_name: messages
                .iter()
                .filter_map(Link::from_message)
                .map(|l| (l.name.clone(), l))
                .collect(),
        })
    }

    /// The link named `name`.
    pub fn get(&self, name: &str) -> Option<&Link> {
        self.by_name.get(name)
    }

    /// The index of `name`.
    pub fn index(&self, name: &str) -> Option<u32> {
        self.get(name).map(|l| l.index)
    }

    /// The name of the link with `index`.
    pub fn name_of(&self, index: u32) -> Option<&str> {
        self.by_name
            .values()
            .find(|l| l.index == index)
            .map(|l| l.name.as_str())
    }

    /// Every link.
    pub fn iter(&self) -> impl Iterator<Item = &Link> {
        self.by_name.values()
    }

    /// The index of `name`, or [`Error::LinkNotFound`].
    pub fn require(&self, name: &str, side: Side) -> Result<u32, Error> {
        self.index(name).ok_or_else(|| Error::LinkNotFound {
            side,
            name: name.to_owned(),
            hint: String::new(),
        })
    }
}

/// `ip link set dev <index> up`.
pub async fn set_up(handle: &Handle, side: Side, link: &Link) -> Result<(), Error> {
    if link.up {
        return Ok(());
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(link.index).up().build())
        .execute()
        .await
        .map_err(|source| Error::Netlink {
            side,
            op: format!("ip link set {} up", link.name),
            source,
        })
}

/// `ip link set dev <index> alias <alias>`.
pub async fn set_alias(handle: &Handle, side: Side, link: &Link, alias: &str) -> Result<(), Error> {
    if link.alias.as_deref() == Some(alias) {
        return Ok(());
    }
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(link.index)
                .append_extra_attribute(LinkAttribute::IfAlias(alias.to_owned()))
                .build(),
        )
        .execute()
        .await
        .map_err(|source| Error::Netlink {
            side,
            op: format!("ip link set {} alias {alias}", link.name),
            source,
        })
}

/// `ip link del <name>`; a link already gone is success.
pub async fn delete(handle: &Handle, side: Side, link: &Link) -> Result<(), Error> {
    error::outcome(
        handle.link().del(link.index).execute().await,
        &[nix::libc::ENODEV],
        side,
        || format!("ip link del {}", link.name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_macs_are_local_unicast() {
        for _ in 0..64 {
            let m = Mac::random();
            assert_eq!(m.0[0] & 0x01, 0, "unicast");
            assert_eq!(m.0[0] & 0x02, 0x02, "locally administered");
        }
        assert_eq!(
            Mac([0x26, 0x6f, 0x22, 0x91, 0x22, 0xf9]).to_string(),
            "26:6f:22:91:22:f9"
        );
        assert_eq!(Mac::from_slice(&[1, 2, 3]), None);
    }
}
