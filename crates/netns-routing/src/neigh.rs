//! Static neighbour entries across the veth pair (`ip neigh replace … nud permanent`).
//!
//! ARP would resolve the IPv4 ones by itself (Linux answers for any local address), but
//! IPv6 neighbour solicitation across the veth gets no answer — the pod's `veth0` does not
//! own the address asked for (spidernet-io/cni-plugins #44) — and a stale entry after a
//! MAC change breaks node ↔ pod traffic (Spiderpool #2303, #2464). So both sides get
//! permanent entries, replaced on every ADD.

use std::fmt;
use std::net::IpAddr;

use rtnetlink::Handle;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};

use crate::error::{self, Error, Side};
use crate::link::{Links, Mac};

/// `<ip> lladdr <mac> dev <dev> nud permanent`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neighbour {
    /// The neighbour's address.
    pub ip: IpAddr,
    /// Its link-layer address.
    pub lladdr: Mac,
    /// The device it is reached on.
    pub dev: String,
}

impl Neighbour {
    /// `<ip> lladdr <mac> dev <dev>`.
    pub fn new(ip: IpAddr, lladdr: Mac, dev: &str) -> Neighbour {
        Neighbour {
            ip,
            lladdr,
            dev: dev.to_owned(),
        }
    }
}

impl fmt::Display for Neighbour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} lladdr {} dev {} nud permanent",
            self.ip, self.lladdr, self.dev
        )
    }
}

/// `ip neigh replace <neighbour>`.
pub async fn replace(
    handle: &Handle,
    links: &Links,
    side: Side,
    neighbour: &Neighbour,
) -> Result<(), Error> {
    let index = links.require(&neighbour.dev, side)?;
    handle
        .neighbours()
        .add(index, neighbour.ip)
        .link_layer_address(&neighbour.lladdr.0)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(|source| Error::Netlink {
            side,
            op: format!("ip neigh replace {neighbour}"),
            source,
        })
}

/// `ip neigh show nud permanent`: the permanent entries of both families.
pub async fn dump_permanent(
    handle: &Handle,
    links: &Links,
    side: Side,
) -> Result<Vec<Neighbour>, Error> {
    let messages: Vec<NeighbourMessage> =
        error::dump(handle.neighbours().get().execute(), side, || {
            "ip neigh show".into()
        })
        .await?;
    Ok(messages
        .iter()
        .filter(|m| m.header.state == NeighbourState::Permanent)
        .filter_map(|m| {
            let dev = links.name_of(m.header.ifindex)?;
            let mut ip = None;
            let mut mac = None;
            for attr in &m.attributes {
                match attr {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        ip = Some(IpAddr::V4(*v4))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        ip = Some(IpAddr::V6(*v6))
                    }
                    NeighbourAttribute::LinkLayerAddress(bytes) => mac = Mac::from_slice(bytes),
                    _ => {}
                }
            }
            Some(Neighbour::new(ip?, mac?, dev))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_ip_neigh() {
        let n = Neighbour::new(
            "10.6.168.123".parse().unwrap(),
            Mac([0x26, 0x6f, 0x22, 0x91, 0x22, 0xf9]),
            "veth0",
        );
        assert_eq!(
            n.to_string(),
            "10.6.168.123 lladdr 26:6f:22:91:22:f9 dev veth0 nud permanent"
        );
    }
}
