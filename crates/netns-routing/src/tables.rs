//! Routes and routing tables: a [`Route`] prints as the `ip route` line that adds it, and
//! [`add`] / [`dump`] / [`del`] are `ip route replace` / `ip route show table all` /
//! `ip route del` over rtnetlink.
//!
//! Tables: `main` is 254; the policy table of the pod NIC `net<N>` is 100+N−1
//! ([`table_of_nic`]).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::error::{self, Error, Side};
use crate::link::Links;

/// The main routing table.
pub const MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// The policy table of a NIC named `net<N>` (N ≥ 1): 100+N−1, so `net1` → 100, `net2` → 101
/// (the seed's numbering). Any other name has none.
pub fn table_of_nic(name: &str) -> Option<u32> {
    let n: u32 = name.strip_prefix("net")?.parse().ok()?;
    if n == 0 || name.starts_with("net0") || n > 10_000 {
        return None;
    }
    Some(100 + n - 1)
}

/// One route, as Berth installs it and as a dump is read back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop (`via`); `None` for an on-link route.
    pub via: Option<IpAddr>,
    /// Output device.
    pub dev: String,
    /// Table ([`MAIN`] = 254).
    pub table: u32,
    /// `scope link` (IPv4 on-link routes); otherwise scope global.
    pub scope_link: bool,
    /// Preferred source (`src`).
    pub src: Option<IpAddr>,
}

impl Route {
    /// `<dst> dev <dev>` in main, scope global.
    pub fn new(dst: IpNet, dev: &str) -> Route {
        Route {
            dst,
            via: None,
            dev: dev.to_owned(),
            table: MAIN,
            scope_link: false,
            src: None,
        }
    }

    /// `… via <gw>`.
    pub fn via(mut self, gw: IpAddr) -> Route {
        self.via = Some(gw);
        self
    }

    /// `… table <t>`.
    pub fn table(mut self, table: u32) -> Route {
        self.table = table;
        self
    }

    /// `… scope link`, for IPv4 only (IPv6 routes have no scope of their own).
    pub fn scope_link(mut self) -> Route {
        self.scope_link = self.dst.addr().is_ipv4();
        self
    }

    /// `… src <ip>`.
    pub fn src(mut self, src: IpAddr) -> Route {
        self.src = Some(src);
        self
    }

    /// Whether an installed route satisfies this one: same destination, next hop, device and
    /// table, and the same `src` when this one names it.
    pub fn is_met_by(&self, installed: &Route) -> bool {
        self.dst == installed.dst
            && self.via == installed.via
            && self.dev == installed.dev
            && self.table == installed.table
            && (self.src.is_none() || self.src == installed.src)
    }

    /// A default route (`0.0.0.0/0`, `::/0`).
    pub fn is_default(&self) -> bool {
        self.dst.prefix_len() == 0
    }

    fn message(&self, links: &Links, side: Side) -> Result<RouteMessage, Error> {
        let oif = links.require(&self.dev, side)?;
        let invalid = |e| invalid(self, e);
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(self.dst.addr(), self.dst.prefix_len())
            .map_err(invalid)?
            .output_interface(oif)
            .table_id(self.table)
            // `ip route add`'s own default, which `ip route` does not print: the listings
            // read like the seed's.
            .protocol(RouteProtocol::Boot);
        if self.scope_link {
            builder = builder.scope(RouteScope::Link);
        }
        if let Some(gw) = self.via {
            builder = builder.gateway(gw).map_err(invalid)?;
        }
        if let Some(src) = self.src {
            builder = builder.pref_source(src).map_err(invalid)?;
        }
        Ok(builder.build())
    }
}

impl fmt::Display for Route {
    /// `10.96.0.0/12 via 10.6.168.123 dev veth0 table 100` — `ip route add` syntax, with
    /// host routes written without their `/32` (`/128`) like `ip route` prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_default() {
            f.write_str("default")?;
        } else if self.dst.prefix_len() == self.dst.max_prefix_len() {
            write!(f, "{}", self.dst.addr())?;
        } else {
            write!(f, "{}", self.dst)?;
        }
        if let Some(gw) = self.via {
            write!(f, " via {gw}")?;
        }
        write!(f, " dev {}", self.dev)?;
        if self.table != MAIN {
            write!(f, " table {}", self.table)?;
        }
        if self.scope_link {
            f.write_str(" scope link")?;
        }
        if let Some(src) = self.src {
            write!(f, " src {src}")?;
        }
        Ok(())
    }
}

/// A route rtnetlink's builder refuses (a family mix-up: a bug upstream of here).
fn invalid(route: &Route, err: impl fmt::Display) -> Error {
    Error::Invalid(format!("cannot build `{route}`: {err}"))
}

/// `ip route replace <route>`: creates it or overwrites the route with the same
/// destination, table and metric, so a retried ADD converges instead of failing.
pub async fn add(handle: &Handle, links: &Links, side: Side, route: &Route) -> Result<(), Error> {
    let message = route.message(links, side)?;
    handle
        .route()
        .add(message)
        .replace()
        .execute()
        .await
        .map_err(|source| Error::Netlink {
            side,
            op: format!("ip route replace {route}"),
            source,
        })
}

/// `ip route del <route>`; a route already gone (ESRCH, ENOENT) is success.
pub async fn del(handle: &Handle, links: &Links, side: Side, route: &Route) -> Result<(), Error> {
    let Some(oif) = links.index(&route.dev) else {
        return Ok(()); // the device is gone, and its routes with it
    };
    let invalid = |e| invalid(route, e);
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.dst.addr(), route.dst.prefix_len())
        .map_err(invalid)?
        .output_interface(oif)
        .table_id(route.table);
    // A wildcard scope and protocol: match whatever installed it (`proto kernel`, `boot`, …).
    builder.get_mut().header.scope = RouteScope::NoWhere;
    builder.get_mut().header.protocol = RouteProtocol::Unspec;
    builder.get_mut().header.kind = RouteType::Unspec;
    if let Some(gw) = route.via {
        builder = builder.gateway(gw).map_err(invalid)?;
    }
    error::outcome(
        handle.route().del(builder.build()).execute().await,
        &[nix::libc::ESRCH, nix::libc::ENOENT, nix::libc::ENODEV],
        side,
        || format!("ip route del {route}"),
    )
}

/// `ip route show table all` for both families: every unicast route, multipath routes
/// split into one [`Route`] per next hop, devices by name.
pub async fn dump(handle: &Handle, links: &Links, side: Side) -> Result<Vec<Route>, Error> {
    let mut routes = Vec::new();
    for request in [
        RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
        RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    ] {
        let messages: Vec<RouteMessage> =
            error::dump(handle.route().get(request).execute(), side, || {
                "ip route show table all".into()
            })
            .await?;
        for message in &messages {
            routes.extend(read(message, links));
        }
    }
    Ok(routes)
}

fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The routes one dumped message stands for (several for a multipath route).
fn read(message: &RouteMessage, links: &Links) -> Vec<Route> {
    let header = &message.header;
    if header.kind != RouteType::Unicast {
        return Vec::new();
    }
    let mut dst = None;
    let mut table = u32::from(header.table);
    let mut oif = None;
    let mut via = None;
    let mut src = None;
    let mut hops = Vec::new();
    for attr in &message.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = ip_of(a),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(a) => via = ip_of(a),
            RouteAttribute::PrefSource(a) => src = ip_of(a),
            RouteAttribute::MultiPath(nexthops) => {
                for hop in nexthops {
                    let gw = hop.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(g) => ip_of(g),
                        _ => None,
                    });
                    hops.push((hop.interface_index, gw));
                }
            }
            _ => {}
        }
    }
    let unspecified = match header.address_family {
        rtnetlink::packet_route::AddressFamily::Inet => IpAddr::from([0u8; 4]),
        rtnetlink::packet_route::AddressFamily::Inet6 => IpAddr::from([0u16; 8]),
        _ => return Vec::new(),
    };
    let Ok(dst) = IpNet::new(dst.unwrap_or(unspecified), header.destination_prefix_length) else {
        return Vec::new();
    };
    if hops.is_empty() {
        hops.push((oif.unwrap_or(0), via));
    }
    hops.into_iter()
        .filter_map(|(index, via)| {
            Some(Route {
                dst,
                via,
                dev: links.name_of(index)?.to_owned(),
                table,
                scope_link: header.scope == RouteScope::Link,
                src,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn tables_of_nics() {
        assert_eq!(table_of_nic("net1"), Some(100));
        assert_eq!(table_of_nic("net2"), Some(101));
        assert_eq!(table_of_nic("net10"), Some(109));
        for name in ["eth0", "net0", "net", "net01", "netx", "ens224"] {
            assert_eq!(table_of_nic(name), None, "{name}");
        }
    }

    #[test]
    fn routes_print_like_ip_route() {
        let node = "10.6.168.123".parse().unwrap();
        assert_eq!(
            Route::new(net("10.6.168.123/32"), "veth0")
                .scope_link()
                .to_string(),
            "10.6.168.123 dev veth0 scope link"
        );
        assert_eq!(
            Route::new(net("10.96.0.0/12"), "veth0")
                .via(node)
                .table(100)
                .to_string(),
            "10.96.0.0/12 via 10.6.168.123 dev veth0 table 100"
        );
        assert_eq!(
            Route::new(net("0.0.0.0/0"), "net1")
                .via("10.7.0.1".parse().unwrap())
                .table(100)
                .to_string(),
            "default via 10.7.0.1 dev net1 table 100"
        );
        assert_eq!(
            Route::new(net("10.7.0.0/16"), "net1")
                .table(100)
                .scope_link()
                .src("10.7.168.173".parse().unwrap())
                .to_string(),
            "10.7.0.0/16 dev net1 table 100 scope link src 10.7.168.173"
        );
        assert_eq!(
            Route::new(net("fd00:6::123/128"), "veth0")
                .scope_link()
                .to_string(),
            "fd00:6::123 dev veth0",
            "IPv6 routes have no scope"
        );
    }

    #[test]
    fn matching_ignores_src_unless_asked() {
        let want = Route::new(net("10.7.0.0/16"), "net1").table(100);
        let got = want.clone().src("10.7.168.173".parse().unwrap());
        assert!(want.is_met_by(&got));
        assert!(!got.is_met_by(&want));
        assert!(!want.is_met_by(&want.clone().table(101)));
    }
}
