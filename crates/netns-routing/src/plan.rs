//! What one NIC's wiring consists of, computed without touching the system.
//!
//! [`plan`] turns a [`Nic`], the [`Settings`], the node's addresses and the two veth MACs
//! into a [`Plan`]: routes, rules and neighbour entries for the pod and for the node, and
//! which NIC's default route leaves the pod's main table. [`crate::PodRouting`] applies a
//! plan (ADD), compares it with the system (CHECK), and undoes it (DEL). Being pure, the
//! plan is where the reference state of DESIGN §7 is unit-tested.
//!
//! The shape, for the seed's pod (eth0 10.6.168.172/16, net1 10.7.168.173/16, node IP
//! 10.6.168.123, service CIDR 10.96.0.0/12):
//!
//! - the **first NIC** (`eth0`) gets the veth pair and, in the pod's main table,
//!   `10.6.168.123 dev veth0 scope link` and `10.96.0.0/12 via 10.6.168.123 dev veth0`;
//! - **every other NIC** `net<N>` gets table 100+N−1 with its default route, its subnet
//!   route and the same veth0 routes, the rules `from <its IP>` and `to <its subnet>`, and
//!   its default route leaves main;
//! - unless it is the **default-route NIC** (`podDefaultRouteNic`): then it keeps its default
//!   in main, and the first NIC moves into its table number instead;
//! - on the node, every pod address gets `<ip> dev veth<id> scope link src <node IP>`; both
//!   sides get permanent neighbour entries for the other side's addresses.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::Error;
use crate::link::Mac;
use crate::neigh::Neighbour;
use crate::rules::{Rule, prefs_of_table};
use crate::tables::{MAIN, Route, table_of_nic};

/// The pod end of the veth pair.
pub const POD_VETH: &str = "veth0";

/// The name of the first NIC when the config names none (`podDefaultCniNic`).
pub const DEFAULT_FIRST_NIC: &str = "eth0";

/// The veth MTU when the config names none (`vethMTU`).
pub const DEFAULT_VETH_MTU: u32 = 1500;

/// The priority of the node's `from all lookup <hostRuleTable>` rule (Spiderpool's).
pub const HOST_RULE_PREF: u32 = 1000;

/// A route the main plugin gave a NIC besides its default route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicRoute {
    /// Destination.
    pub dst: IpNet,
    /// Next hop; `None` = on-link.
    pub via: Option<IpAddr>,
}

/// One pod NIC as the main plugin configured it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Its name in the pod (`eth0`, `net1`, …).
    pub name: String,
    /// Its addresses, each with its subnet's prefix length (`10.7.168.173/16`).
    pub addresses: Vec<IpNet>,
    /// Its default gateways (the first of each family is used).
    pub gateways: Vec<IpAddr>,
    /// Its other routes (not the default).
    pub routes: Vec<NicRoute>,
}

impl Nic {
    /// A NIC with addresses and nothing else.
    pub fn new(name: &str, addresses: Vec<IpNet>) -> Nic {
        Nic {
            name: name.to_owned(),
            addresses,
            gateways: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// The NIC `ifname` as a CNI result (the chained plugin's `prevResult`) describes it:
    /// the addresses whose `interface` points at `ifname` (all of them when the result
    /// names no interfaces); per family the gateway of the first default route, else of the
    /// first address; the other routes of that family (a route without `gw` goes via the
    /// family's gateway, as the main plugins install it).
    pub fn from_result(ifname: &str, result: &berth_cni::CniResult) -> Nic {
        let ours = |ip: &berth_cni::IpConfig| match ip.interface {
            None => true,
            Some(i) => result.interfaces.get(i).is_some_and(|x| x.name == ifname),
        };
        let ips: Vec<_> = result.ips.iter().filter(|ip| ours(ip)).collect();
        let mut nic = Nic::new(ifname, ips.iter().map(|ip| ip.address).collect());
        for v6 in [false, true] {
            if !nic.addresses.iter().any(|a| a.addr().is_ipv6() == v6) {
                continue;
            }
            let family = |ip: &IpAddr| ip.is_ipv6() == v6;
            let from_default = result
                .routes
                .iter()
                .filter(|r| r.dst.prefix_len() == 0 && family(&r.dst.addr()))
                .find_map(|r| r.gw);
            let from_ip = ips.iter().filter_map(|ip| ip.gateway).find(family);
            let gateway = from_default.or(from_ip);
            nic.gateways.extend(gateway);
            nic.routes.extend(
                result
                    .routes
                    .iter()
                    .filter(|r| r.dst.prefix_len() != 0 && family(&r.dst.addr()))
                    .map(|r| NicRoute {
                        dst: r.dst.trunc(),
                        via: r.gw.or(gateway),
                    }),
            );
        }
        nic
    }

    /// The gateway of one family.
    pub fn gateway(&self, ipv6: bool) -> Option<IpAddr> {
        self.gateways.iter().copied().find(|g| g.is_ipv6() == ipv6)
    }

    /// Whether it has an IPv6 address.
    pub fn has_ipv6(&self) -> bool {
        self.addresses.iter().any(|a| a.addr().is_ipv6())
    }
}

/// The node's addresses the pod reaches it by: at most one per family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeIps {
    /// The IPv4 one.
    pub v4: Option<IpAddr>,
    /// The IPv6 one.
    pub v6: Option<IpAddr>,
}

impl NodeIps {
    /// From a list (the first of each family wins).
    pub fn from_ips(ips: impl IntoIterator<Item = IpAddr>) -> NodeIps {
        let mut node = NodeIps::default();
        for ip in ips {
            let slot = if ip.is_ipv6() {
                &mut node.v6
            } else {
                &mut node.v4
            };
            slot.get_or_insert(ip);
        }
        node
    }

    /// Both, IPv4 first.
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> {
        self.v4.into_iter().chain(self.v6)
    }

    /// The one of the family of `ip`.
    pub fn for_family_of(&self, ip: IpAddr) -> Option<IpAddr> {
        if ip.is_ipv6() { self.v6 } else { self.v4 }
    }
}

/// How a pod's NICs are wired (the plugin's config keys, DESIGN §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The first NIC, which gets the veth pair (`podDefaultCniNic`, default `eth0`).
    pub first_nic: String,
    /// The NIC that keeps its default route in main (`podDefaultRouteNic` or the pod
    /// annotation `ipam.spidernet.io/default-route-nic`); `None` = the first NIC.
    pub default_route_nic: Option<String>,
    /// CIDRs reached through the node over veth0: service, cluster and additional CIDRs.
    pub hijack: Vec<IpNet>,
    /// Policy routing for the further NICs (`tunePodRoutes`, default on). Off: only the veth
    /// pair, the node routes and the hijacked CIDRs.
    pub tune_pod_routes: bool,
    /// MTU of both veth ends (`vethMTU`).
    pub veth_mtu: u32,
    /// On the node, put the pod routes in this table behind `from all lookup <t> pref 1000`
    /// (`hostRuleTable`); `None` = the node's main table.
    pub host_rule_table: Option<u32>,
    /// `net.ipv4.conf.all.rp_filter` in the pod (`podRPFilter`); `None` = leave it.
    pub pod_rp_filter: Option<u8>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            first_nic: DEFAULT_FIRST_NIC.into(),
            default_route_nic: None,
            hijack: Vec::new(),
            tune_pod_routes: true,
            veth_mtu: DEFAULT_VETH_MTU,
            host_rule_table: None,
            pod_rp_filter: Some(0),
        }
    }
}

impl Settings {
    /// The NIC that keeps the default route.
    pub fn default_route_nic(&self) -> &str {
        self.default_route_nic.as_deref().unwrap_or(&self.first_nic)
    }
}

/// The node end of the veth pair: `veth` + the first 11 characters of the container id
/// (15 characters, the longest interface name).
pub fn host_veth_name(container_id: &str) -> String {
    let prefix: String = container_id.chars().take(11).collect();
    format!("veth{prefix}")
}

/// Everything one NIC's wiring puts in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Routes in the pod (main and policy tables), in the order they are added.
    pub pod_routes: Vec<Route>,
    /// Rules in the pod.
    pub pod_rules: Vec<Rule>,
    /// The NIC whose default routes must leave the pod's main table, if any.
    pub main_default_leaves: Option<String>,
    /// Permanent neighbour entries in the pod.
    pub pod_neighbours: Vec<Neighbour>,
    /// Routes on the node.
    pub node_routes: Vec<Route>,
    /// Rules on the node.
    pub node_rules: Vec<Rule>,
    /// Permanent neighbour entries on the node.
    pub node_neighbours: Vec<Neighbour>,
}

impl fmt::Display for Plan {
    /// The plan as the `ip` commands that would carry it out, one per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = |ip: IpAddr| if ip.is_ipv6() { "-6 " } else { "" };
        for r in &self.pod_routes {
            writeln!(f, "pod:  ip {}route replace {r}", v6(r.dst.addr()))?;
        }
        for r in &self.pod_rules {
            writeln!(
                f,
                "pod:  ip {}rule add {r}",
                if r.ipv6 { "-6 " } else { "" }
            )?;
        }
        if let Some(nic) = &self.main_default_leaves {
            writeln!(f, "pod:  ip route del default dev {nic}  (main)")?;
        }
        for n in &self.pod_neighbours {
            writeln!(f, "pod:  ip neigh replace {n}")?;
        }
        for r in &self.node_routes {
            writeln!(f, "node: ip {}route replace {r}", v6(r.dst.addr()))?;
        }
        for r in &self.node_rules {
            writeln!(
                f,
                "node: ip {}rule add {r}",
                if r.ipv6 { "-6 " } else { "" }
            )?;
        }
        for n in &self.node_neighbours {
            writeln!(f, "node: ip neigh replace {n}")?;
        }
        Ok(())
    }
}

/// What [`plan`] is computed from.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    /// The settings.
    pub settings: &'a Settings,
    /// The NIC being wired.
    pub nic: &'a Nic,
    /// The first NIC as the pod has it — needed only when `nic` is the default-route NIC
    /// and not the first one (its table then goes to the first NIC).
    pub first: Option<&'a Nic>,
    /// The node's addresses towards the pod.
    pub node_ips: &'a NodeIps,
    /// The node end's name.
    pub host_veth: &'a str,
    /// MAC of the pod end (`veth0`).
    pub pod_mac: Mac,
    /// MAC of the node end.
    pub host_mac: Mac,
}

/// The wiring of one NIC (see the [module docs](self)).
pub fn plan(input: &PlanInput<'_>) -> Result<Plan, Error> {
    let PlanInput {
        settings,
        nic,
        node_ips,
        host_veth,
        ..
    } = *input;
    if nic.addresses.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: the previous result gives this NIC no address",
            nic.name
        )));
    }
    let mut plan = Plan::default();
    let is_first = nic.name == settings.first_nic;

    if is_first {
        plan.pod_routes
            .extend(veth_routes(node_ips, &settings.hijack, MAIN));
        plan.pod_neighbours.extend(
            node_ips
                .iter()
                .map(|ip| Neighbour::new(ip, input.host_mac, POD_VETH)),
        );
    } else if settings.tune_pod_routes {
        let table = table_of_nic(&nic.name).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: no policy table for this name; further NICs must be named net<N> \
                 (N ≥ 1, table 100+N−1), or set tunePodRoutes to false",
                nic.name
            ))
        })?;
        let demoted = if nic.name == settings.default_route_nic() {
            // This NIC keeps its default route in main; the first NIC takes its table.
            for gw in &nic.gateways {
                plan.pod_routes
                    .push(Route::new(any(*gw), &nic.name).via(*gw));
            }
            input.first.ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: the first NIC {} is needed to move the default route",
                    nic.name, settings.first_nic
                ))
            })?
        } else {
            nic
        };
        plan.pod_routes
            .extend(policy_table(demoted, table, node_ips, &settings.hijack));
        plan.pod_rules.extend(policy_rules(demoted, table)?);
        plan.main_default_leaves = Some(demoted.name.clone());
    }

    for address in &nic.addresses {
        let ip = address.addr();
        let mut route = node_route(settings, ip, host_veth);
        // The node answers from the address the pod routes back over veth0. Left to
        // itself it would pick by longest prefix — for net1's address its own address in
        // net1's subnet, which the pod reaches through net1 (the macvlan parent, which
        // never delivers to its children).
        if let Some(src) = node_ips.for_family_of(ip) {
            route = route.src(src);
        }
        plan.node_routes.push(route);
        plan.node_neighbours
            .push(Neighbour::new(ip, input.pod_mac, host_veth));
    }
    if let Some(table) = settings.host_rule_table {
        for ipv6 in [false, true] {
            if nic.addresses.iter().any(|a| a.addr().is_ipv6() == ipv6) {
                plan.node_rules.push(Rule::all(ipv6, table, HOST_RULE_PREF));
            }
        }
    }
    Ok(plan)
}

/// `0.0.0.0/0` or `::/0`, in the family of `like`.
fn any(like: IpAddr) -> IpNet {
    let unspecified = match like {
        IpAddr::V4(_) => IpAddr::from([0u8; 4]),
        IpAddr::V6(_) => IpAddr::from([0u16; 8]),
    };
    IpNet::new(unspecified, 0).expect("a zero prefix is valid")
}

/// The node's route to a pod address through the veth's node end (`<ip>/32 dev veth<id>
/// scope link`, in the host rule table when one is set), without its source address: what
/// ADD adds and DEL matches.
pub(crate) fn node_route(settings: &Settings, ip: IpAddr, host_veth: &str) -> Route {
    Route::new(host(ip), host_veth)
        .table(settings.host_rule_table.unwrap_or(MAIN))
        .scope_link()
}

/// `<ip>/32` or `<ip>/128`.
pub fn host(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// The routes through the node over veth0 in `table`: the node IP on-link, then every
/// hijacked CIDR via it (a CIDR of a family without node IP is skipped).
pub fn veth_routes(node_ips: &NodeIps, hijack: &[IpNet], table: u32) -> Vec<Route> {
    let mut routes: Vec<Route> = node_ips
        .iter()
        .map(|ip| Route::new(host(ip), POD_VETH).table(table).scope_link())
        .collect();
    for cidr in hijack {
        if let Some(node) = node_ips.for_family_of(cidr.addr()) {
            routes.push(Route::new(cidr.trunc(), POD_VETH).via(node).table(table));
        }
    }
    routes
}

/// A NIC's policy table: its subnets (IPv4 with `src`), its other routes, its default
/// routes, then the veth0 routes.
pub fn policy_table(nic: &Nic, table: u32, node_ips: &NodeIps, hijack: &[IpNet]) -> Vec<Route> {
    let mut routes = Vec::new();
    for address in &nic.addresses {
        let mut subnet = Route::new(address.trunc(), &nic.name)
            .table(table)
            .scope_link();
        // IPv6 gets no src: the address may still be tentative (kernel bug 107071).
        if address.addr().is_ipv4() {
            subnet = subnet.src(address.addr());
        }
        routes.push(subnet);
    }
    for r in &nic.routes {
        let mut route = Route::new(r.dst, &nic.name).table(table);
        route = match r.via {
            Some(gw) => route.via(gw),
            None => route.scope_link(),
        };
        routes.push(route);
    }
    for gw in &nic.gateways {
        routes.push(Route::new(any(*gw), &nic.name).via(*gw).table(table));
    }
    routes.extend(veth_routes(node_ips, hijack, table));
    routes
}

/// A NIC's rules: `from <ip> lookup <table>` and `to <subnet> lookup <table>` per address,
/// at the table's priorities.
pub fn policy_rules(nic: &Nic, table: u32) -> Result<Vec<Rule>, Error> {
    let (from, to) = prefs_of_table(table)
        .ok_or_else(|| Error::Invalid(format!("{}: table {table} is out of range", nic.name)))?;
    let mut rules = Vec::new();
    for address in &nic.addresses {
        rules.push(Rule::from(host(address.addr()), table, from));
        rules.push(Rule::to(address.trunc(), table, to));
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const POD_MAC: Mac = Mac([0x26, 0x6f, 0x22, 0x91, 0x22, 0xf9]);
    const HOST_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0x13]);

    fn seed_settings() -> Settings {
        Settings {
            hijack: vec![net("10.96.0.0/12")],
            ..Settings::default()
        }
    }

    fn seed_nic(name: &str, address: &str, gw: &str) -> Nic {
        Nic {
            gateways: vec![ip(gw)],
            ..Nic::new(name, vec![net(address)])
        }
    }

    fn lines(plan: &Plan) -> Vec<String> {
        plan.to_string().lines().map(str::to_owned).collect()
    }

    fn plan_for(settings: &Settings, nic: &Nic, first: Option<&Nic>, node: &NodeIps) -> Plan {
        plan(&PlanInput {
            settings,
            nic,
            first,
            node_ips: node,
            host_veth: "veth4f9e1c0c2b9",
            pod_mac: POD_MAC,
            host_mac: HOST_MAC,
        })
        .unwrap()
    }

    /// DESIGN §7, the seed's pod: eth0 10.6.168.172/16, net1 10.7.168.173/16.
    #[test]
    fn the_reference_state() {
        let settings = seed_settings();
        let node = NodeIps::from_ips([ip("10.6.168.123")]);
        let eth0 = seed_nic("eth0", "10.6.168.172/16", "10.6.0.1");
        let net1 = seed_nic("net1", "10.7.168.173/16", "10.7.0.1");
        assert_eq!(
            lines(&plan_for(&settings, &eth0, None, &node)),
            [
                "pod:  ip route replace 10.6.168.123 dev veth0 scope link",
                "pod:  ip route replace 10.96.0.0/12 via 10.6.168.123 dev veth0",
                "pod:  ip neigh replace 10.6.168.123 lladdr 02:00:00:00:00:13 dev veth0 nud permanent",
                "node: ip route replace 10.6.168.172 dev veth4f9e1c0c2b9 scope link src 10.6.168.123",
                "node: ip neigh replace 10.6.168.172 lladdr 26:6f:22:91:22:f9 dev veth4f9e1c0c2b9 nud permanent",
            ]
        );
        assert_eq!(
            lines(&plan_for(&settings, &net1, None, &node)),
            [
                "pod:  ip route replace 10.7.0.0/16 dev net1 table 100 scope link src 10.7.168.173",
                "pod:  ip route replace default via 10.7.0.1 dev net1 table 100",
                "pod:  ip route replace 10.6.168.123 dev veth0 table 100 scope link",
                "pod:  ip route replace 10.96.0.0/12 via 10.6.168.123 dev veth0 table 100",
                "pod:  ip rule add from 10.7.168.173 lookup 100 pref 32764",
                "pod:  ip rule add to 10.7.0.0/16 lookup 100 pref 32765",
                "pod:  ip route del default dev net1  (main)",
                "node: ip route replace 10.7.168.173 dev veth4f9e1c0c2b9 scope link src 10.6.168.123",
                "node: ip neigh replace 10.7.168.173 lladdr 26:6f:22:91:22:f9 dev veth4f9e1c0c2b9 nud permanent",
            ]
        );
    }

    #[test]
    fn dual_stack_gets_the_same_treatment_in_ipv6() {
        let settings = Settings {
            hijack: vec![net("10.96.0.0/12"), net("fd00:96::/108")],
            ..Settings::default()
        };
        let node = NodeIps::from_ips([ip("fd00:6::123"), ip("10.6.168.123")]);
        let net1 = Nic {
            gateways: vec![ip("10.7.0.1"), ip("fd00:7::1")],
            ..Nic::new("net1", vec![net("10.7.168.173/16"), net("fd00:7::173/64")])
        };
        let p = plan_for(&settings, &net1, None, &node);
        let text = p.to_string();
        for line in [
            "pod:  ip -6 route replace fd00:7::/64 dev net1 table 100\n",
            "pod:  ip -6 route replace default via fd00:7::1 dev net1 table 100\n",
            "pod:  ip -6 route replace fd00:6::123 dev veth0 table 100\n",
            "pod:  ip -6 route replace fd00:96::/108 via fd00:6::123 dev veth0 table 100\n",
            "pod:  ip -6 rule add from fd00:7::173 lookup 100 pref 32764\n",
            "pod:  ip -6 rule add to fd00:7::/64 lookup 100 pref 32765\n",
            "node: ip -6 route replace fd00:7::173 dev veth4f9e1c0c2b9 src fd00:6::123\n",
        ] {
            assert!(text.contains(line), "{line}in\n{text}");
        }
        assert_eq!(p.pod_rules.len(), 4);
    }

    #[test]
    fn a_hijacked_cidr_without_a_node_ip_of_its_family_is_skipped() {
        let node = NodeIps::from_ips([ip("10.6.168.123")]);
        let routes = veth_routes(&node, &[net("fd00:96::/108"), net("10.96.0.0/12")], MAIN);
        assert_eq!(routes.len(), 2);
        assert_eq!(
            routes[1].to_string(),
            "10.96.0.0/12 via 10.6.168.123 dev veth0"
        );
    }

    #[test]
    fn the_default_route_nic_keeps_main_and_the_first_nic_takes_its_table() {
        let settings = Settings {
            default_route_nic: Some("net1".into()),
            ..seed_settings()
        };
        let node = NodeIps::from_ips([ip("10.6.168.123")]);
        let eth0 = seed_nic("eth0", "10.6.168.172/16", "10.6.0.1");
        let net1 = seed_nic("net1", "10.7.168.173/16", "10.7.0.1");
        let p = plan_for(&settings, &net1, Some(&eth0), &node);
        assert_eq!(
            lines(&p)[..8],
            [
                "pod:  ip route replace default via 10.7.0.1 dev net1",
                "pod:  ip route replace 10.6.0.0/16 dev eth0 table 100 scope link src 10.6.168.172",
                "pod:  ip route replace default via 10.6.0.1 dev eth0 table 100",
                "pod:  ip route replace 10.6.168.123 dev veth0 table 100 scope link",
                "pod:  ip route replace 10.96.0.0/12 via 10.6.168.123 dev veth0 table 100",
                "pod:  ip rule add from 10.6.168.172 lookup 100 pref 32764",
                "pod:  ip rule add to 10.6.0.0/16 lookup 100 pref 32765",
                "pod:  ip route del default dev eth0  (main)",
            ]
        );
        // The first NIC's own call is unchanged.
        assert_eq!(
            plan_for(&settings, &eth0, None, &node),
            plan_for(&seed_settings(), &eth0, None, &node)
        );
    }

    #[test]
    fn without_tuning_only_the_node_side() {
        let settings = Settings {
            tune_pod_routes: false,
            ..seed_settings()
        };
        let node = NodeIps::from_ips([ip("10.6.168.123")]);
        let net1 = seed_nic("net1", "10.7.168.173/16", "10.7.0.1");
        let p = plan_for(&settings, &net1, None, &node);
        assert!(p.pod_routes.is_empty() && p.pod_rules.is_empty());
        assert_eq!(p.main_default_leaves, None);
        assert_eq!(p.node_routes.len(), 1);
    }

    #[test]
    fn nics_without_a_table_number_are_refused() {
        let node = NodeIps::default();
        let nic = seed_nic("ens5", "10.7.168.173/16", "10.7.0.1");
        let err = plan(&PlanInput {
            settings: &Settings::default(),
            nic: &nic,
            first: None,
            node_ips: &node,
            host_veth: "vethx",
            pod_mac: POD_MAC,
            host_mac: HOST_MAC,
        })
        .unwrap_err();
        assert!(err.to_string().contains("net<N>"), "{err}");
    }

    #[test]
    fn host_rule_table_moves_the_node_routes() {
        let settings = Settings {
            host_rule_table: Some(500),
            ..seed_settings()
        };
        let node = NodeIps::from_ips([ip("10.6.168.123")]);
        let eth0 = seed_nic("eth0", "10.6.168.172/16", "10.6.0.1");
        let p = plan_for(&settings, &eth0, None, &node);
        assert_eq!(
            p.node_routes[0].to_string(),
            "10.6.168.172 dev veth4f9e1c0c2b9 table 500 scope link src 10.6.168.123"
        );
        assert_eq!(p.node_rules[0].to_string(), "from all lookup 500 pref 1000");
    }

    #[test]
    fn nic_from_a_macvlan_result() {
        let result = berth_cni::CniResult::parse(
            br#"{"cniVersion":"0.3.1",
                "interfaces":[{"name":"net1","mac":"d6:4b:c2:6a:62:0f","sandbox":"/var/run/netns/p"}],
                "ips":[{"version":"4","address":"10.7.168.173/16","gateway":"10.7.0.1","interface":0},
                       {"version":"6","address":"fd00:7::173/64","gateway":"fd00:7::1","interface":0}],
                "routes":[{"dst":"0.0.0.0/0","gw":"10.7.0.1"},{"dst":"172.30.0.0/16"}]}"#,
            berth_cni::Version::V0_3_1,
        )
        .unwrap();
        let nic = Nic::from_result("net1", &result);
        assert_eq!(
            nic.addresses,
            [net("10.7.168.173/16"), net("fd00:7::173/64")]
        );
        assert_eq!(nic.gateways, [ip("10.7.0.1"), ip("fd00:7::1")]);
        assert_eq!(
            nic.routes,
            [NicRoute {
                dst: net("172.30.0.0/16"),
                via: Some(ip("10.7.0.1"))
            }]
        );
        // Another interface's addresses are not this NIC's.
        assert!(Nic::from_result("eth0", &result).addresses.is_empty());
        assert_eq!(host_veth_name("4f9e1c0c2b9a77"), "veth4f9e1c0c2b9");
        assert_eq!(host_veth_name("pod1"), "vethpod1");
    }
}
