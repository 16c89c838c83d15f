//! The node address a pod reaches its node by.
//!
//! DESIGN §7: the node address that reaches the pod's first-NIC address — `ip route get
//! <pod IP>` in the node's namespace, its `src`. On a retried ADD the node already routes the
//! pod IP through the pod's own veth, whose answer says nothing about the underlay; then the
//! NIC's gateway is asked instead (same subnet, same node address).

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::error::{self, Error, Side};
use crate::plan::{Nic, NodeIps};

/// What `ip route get <ip>` answers: the source address and the output link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteGet {
    /// `src`.
    pub src: Option<IpAddr>,
    /// `dev`, by index.
    pub oif: Option<u32>,
}

/// `ip route get <ip>`; `None` when the node has no route to it.
pub async fn route_get(handle: &Handle, ip: IpAddr) -> Result<Option<RouteGet>, Error> {
    let max = if ip.is_ipv6() { 128 } else { 32 };
    let request = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(ip, max)
        .map_err(|e| Error::Invalid(format!("ip route get {ip}: {e}")))?
        .build();
    let answer: Result<Vec<RouteMessage>, _> =
        handle.route().get(request).execute().try_collect().await;
    let messages = match answer {
        Ok(m) => m,
        Err(e)
            if matches!(
                error::kernel_errno(&e),
                Some(nix::libc::ENETUNREACH | nix::libc::EHOSTUNREACH | nix::libc::ESRCH)
            ) =>
        {
            return Ok(None);
        }
        Err(source) => {
            return Err(Error::Netlink {
                side: Side::Node,
                op: format!("ip route get {ip}"),
                source,
            });
        }
    };
    Ok(messages.first().map(|m| {
        let mut got = RouteGet {
            src: None,
            oif: None,
        };
        for attr in &m.attributes {
            match attr {
                RouteAttribute::PrefSource(RouteAddress::Inet(v4)) => got.src = Some((*v4).into()),
                RouteAttribute::PrefSource(RouteAddress::Inet6(v6)) => got.src = Some((*v6).into()),
                RouteAttribute::Oif(i) => got.oif = Some(*i),
                _ => {}
            }
        }
        got
    }))
}

/// The node's addresses towards the first NIC `nic`, one per family it has: `src` of
/// `ip route get <its address>`, or of `ip route get <its gateway>` when the first answer
/// goes out through `own_veth` (the pod's node end, from an earlier ADD).
pub async fn node_ips(handle: &Handle, nic: &Nic, own_veth: Option<u32>) -> Result<NodeIps, Error> {
    let mut found = Vec::new();
    for ipv6 in [false, true] {
        let Some(address) = nic.addresses.iter().find(|a| a.addr().is_ipv6() == ipv6) else {
            continue;
        };
        let mut answer = route_get(handle, address.addr()).await?;
        if answer.is_some_and(|a| own_veth.is_some() && a.oif == own_veth) {
            answer = match nic.gateway(ipv6) {
                Some(gw) => route_get(handle, gw).await?,
                None => None,
            };
        }
        match answer.and_then(|a| a.src) {
            Some(src) => found.push(src),
            None => tracing::warn!(
                nic = %nic.name,
                address = %address,
                "the node has no route to this pod address: no veth0 routes for its family"
            ),
        }
    }
    Ok(NodeIps::from_ips(found))
}
