//! [`PodRouting`]: ADD, CHECK, DEL and GC of one NIC's wiring, on the live system.
//!
//! Every operation opens one rtnetlink socket inside the pod's namespace and one in the
//! node's ([`Netns::netlink`]), reads what is there, computes the [`Plan`] and
//! then adds what is missing (ADD), reports what is missing (CHECK) or removes what is
//! Berth's (DEL). ADD is idempotent: routes are replaced, rules carry explicit priorities,
//! neighbours are replaced, the veth pair is reused when it is intact. DEL never needs the
//! pod: the node end is found by name and alias, so a deleted namespace or a vanished parent
//! link changes nothing; it goes on after a failure and reports all of them.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use rtnetlink::Handle;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};

use crate::error::{self, Error, Side};
use crate::link::{self, Links};
use crate::neigh::{self, Neighbour};
use crate::netns::Netns;
use crate::plan::{self, Nic, NodeIps, POD_VETH, Plan, PlanInput, Settings, host_veth_name};
use crate::rules::{self, Rule};
use crate::tables::{self, MAIN, Route, table_of_nic};
use crate::veth::{self, VethPair, VethSpec};
use crate::{node, sysctl};

/// One attachment: the container, its network and its namespace.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// The CNI network name (recorded in the node end's alias, for GC).
    pub network: &'a str,
    /// The pod's namespace, e.g. `/var/run/netns/<name>`. Optional on DEL only.
    pub netns: Option<&'a Path>,
}

/// Wires pod NICs for one set of [`Settings`] (see the [crate docs](crate)).
#[derive(Debug, Clone, Default)]
pub struct PodRouting {
    settings: Settings,
    node_netns: Option<PathBuf>,
}

/// Both namespaces, open, with a netlink handle each.
struct Sides {
    pod_ns: Netns,
    node_ns: Netns,
    pod: Handle,
    node: Handle,
}

/// What was read from the system before planning.
struct Seen {
    pair: Option<VethPair>,
    pod_links: Links,
    node_links: Links,
    pod_routes: Vec<Route>,
}

impl PodRouting {
    /// Wiring with these settings; the node is the namespace this process runs in.
    pub fn new(settings: Settings) -> PodRouting {
        PodRouting {
            settings,
            node_netns: None,
        }
    }

    /// Treats the namespace at `path` as the node (tests, and callers running elsewhere).
    pub fn with_node_netns(mut self, path: impl Into<PathBuf>) -> PodRouting {
        self.node_netns = Some(path.into());
        self
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn open_node(&self) -> Result<Netns, Error> {
        match &self.node_netns {
            Some(path) => Netns::open(path),
            None => Netns::current(),
        }
    }

    fn open(&self, at: &Attachment<'_>) -> Result<Sides, Error> {
        let path = at
            .netns
            .ok_or_else(|| Error::Invalid("the pod's network namespace is required".into()))?;
        let pod_ns = Netns::open(path)?;
        let node_ns = self.open_node()?;
        Ok(Sides {
            pod: pod_ns.netlink()?,
            node: node_ns.netlink()?,
            pod_ns,
            node_ns,
        })
    }

    /// ADD of one NIC: wires it and returns the plan it carried out. The first NIC must be
    /// added before the others (it creates the veth pair they use).
    pub async fn add(&self, at: &Attachment<'_>, nic: &Nic) -> Result<Plan, Error> {
        let sides = self.open(at)?;
        sysctl::tune_pod(&sides.pod_ns, self.settings.pod_rp_filter, nic.has_ipv6())?;
        // The first NIC's veth pair; its link dumps serve the plan too.
        let links = if nic.name == self.settings.first_nic {
            let ensured = veth::ensure(
                &sides.pod,
                &sides.node,
                &sides.node_ns,
                VethSpec {
                    container_id: at.container_id,
                    network: at.network,
                    mtu: self.settings.veth_mtu,
                },
            )
            .await?;
            Some((ensured.pod_links, ensured.node_links))
        } else {
            None
        };
        let seen = self.read(&sides, at.container_id, links).await?;
        let plan = self.plan(&sides, &seen, at.container_id, nic).await?;
        tracing::debug!(nic = %nic.name, "plan:\n{plan}");
        self.apply(&sides, &seen, &plan).await?;
        Ok(plan)
    }

    /// CHECK of one NIC: `Ok` when everything ADD set up is in place, else
    /// [`Error::Missing`] naming every missing piece.
    pub async fn check(&self, at: &Attachment<'_>, nic: &Nic) -> Result<(), Error> {
        let sides = self.open(at)?;
        let seen = self.read(&sides, at.container_id, None).await?;
        let mut missing = Vec::new();
        let Some(pair) = &seen.pair else {
            missing.push(format!(
                "pod: {POD_VETH} paired with node link {}",
                host_veth_name(at.container_id)
            ));
            return Err(Error::Missing {
                nic: nic.name.clone(),
                items: missing,
            });
        };
        for (side, link) in [(Side::Pod, &pair.pod), (Side::Node, &pair.host)] {
            if !link.up {
                missing.push(format!("{side}: link {} up", link.name));
            }
        }
        let plan = self.plan(&sides, &seen, at.container_id, nic).await?;

        for route in &plan.pod_routes {
            if !seen.pod_routes.iter().any(|r| route.is_met_by(r)) {
                missing.push(format!("pod: route {route}"));
            }
        }
        let pod_rules = rules::dump(&sides.pod, Side::Pod).await?;
        missing.extend(missing_rules(&plan.pod_rules, &pod_rules, Side::Pod));
        if let Some(dev) = &plan.main_default_leaves {
            for r in main_defaults(&seen.pod_routes, dev) {
                missing.push(format!(
                    "pod: no `{r}` in main (it belongs in table {})",
                    table_of_nic(&nic.name).unwrap_or_default()
                ));
            }
        }
        let pod_neigh = neigh::dump_permanent(&sides.pod, &seen.pod_links, Side::Pod).await?;
        missing.extend(missing_neighbours(
            &plan.pod_neighbours,
            &pod_neigh,
            Side::Pod,
        ));

        let node_routes = tables::dump(&sides.node, &seen.node_links, Side::Node).await?;
        for route in &plan.node_routes {
            if !node_routes.iter().any(|r| route.is_met_by(r)) {
                missing.push(format!("node: route {route}"));
            }
        }
        let node_rules = rules::dump(&sides.node, Side::Node).await?;
        missing.extend(missing_rules(&plan.node_rules, &node_rules, Side::Node));
        let node_neigh = neigh::dump_permanent(&sides.node, &seen.node_links, Side::Node).await?;
        missing.extend(missing_neighbours(
            &plan.node_neighbours,
            &node_neigh,
            Side::Node,
        ));
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::Missing {
                nic: nic.name.clone(),
                items: missing,
            })
        }
    }

    /// DEL of the NIC `nic_name`. The first NIC's DEL deletes the node end of the veth pair
    /// (its routes and neighbours go with it, and `veth0` with its peer). Another NIC's DEL
    /// removes its node routes (when `nic` says which addresses) and, when the pod's
    /// namespace still exists, its rules and its policy table. Succeeds when there is
    /// nothing left; otherwise goes on and reports every failure.
    pub async fn del(
        &self,
        at: &Attachment<'_>,
        nic_name: &str,
        nic: Option<&Nic>,
    ) -> Result<(), Error> {
        let mut errors = Vec::new();
        if let Err(e) = self.del_node_side(at, nic_name, nic).await {
            errors.push(e);
        }
        if nic_name != self.settings.first_nic
            && let Some(path) = at.netns
            && let Err(e) = self.del_pod_side(path, nic_name).await
        {
            errors.push(e);
        }
        Error::collect(errors)
    }

    async fn del_node_side(
        &self,
        at: &Attachment<'_>,
        nic_name: &str,
        nic: Option<&Nic>,
    ) -> Result<(), Error> {
        let node_ns = self.open_node()?;
        let node = node_ns.netlink()?;
        let links = Links::dump(&node, Side::Node).await?;
        let name = host_veth_name(at.container_id);
        let Some(host) = links.get(&name) else {
            return Ok(());
        };
        if !veth::is_ours(host, at.container_id) {
            tracing::warn!(link = %name, alias = ?host.alias, "not deleting another container's node link");
            return Ok(());
        }
        if nic_name == self.settings.first_nic {
            return link::delete(&node, Side::Node, host).await;
        }
        let mut errors = Vec::new();
        for address in nic.map(|n| n.addresses.as_slice()).unwrap_or_default() {
            let route = plan::node_route(&self.settings, address.addr(), &name);
            if let Err(e) = tables::del(&node, &links, Side::Node, &route).await {
                errors.push(e);
            }
        }
        Error::collect(errors)
    }

    async fn del_pod_side(&self, path: &Path, nic_name: &str) -> Result<(), Error> {
        let Some(table) = table_of_nic(nic_name) else {
            return Ok(());
        };
        let pod_ns = match Netns::open(path) {
            Ok(ns) => ns,
            Err(Error::Netns { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let pod = match pod_ns.netlink() {
            Ok(handle) => handle,
            // A namespace file whose namespace is gone (an unmounted bind mount).
            Err(Error::Netns { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut errors = Vec::new();
        let prefs = rules::prefs_of_table(table);
        for installed in rules::dump(&pod, Side::Pod).await? {
            let ours = installed.rule.as_ref().is_some_and(|r| {
                r.table == table && prefs.is_some_and(|(from, to)| r.pref == from || r.pref == to)
            });
            if ours && let Err(e) = rules::del(&pod, Side::Pod, &installed).await {
                errors.push(e);
            }
        }
        let links = Links::dump(&pod, Side::Pod).await?;
        for route in tables::dump(&pod, &links, Side::Pod).await? {
            if route.table == table
                && let Err(e) = tables::del(&pod, &links, Side::Pod, &route).await
            {
                errors.push(e);
            }
        }
        Error::collect(errors)
    }

    /// GC: deletes the node ends this network created for containers not in `keep`;
    /// returns their names.
    pub async fn gc(&self, network: &str, keep: &BTreeSet<String>) -> Result<Vec<String>, Error> {
        let node_ns = self.open_node()?;
        let node = node_ns.netlink()?;
        let links = Links::dump(&node, Side::Node).await?;
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for l in links.iter() {
            let Some((net, container)) = l.alias.as_deref().and_then(veth::parse_alias) else {
                continue;
            };
            if net != network || keep.contains(container) {
                continue;
            }
            match link::delete(&node, Side::Node, l).await {
                Ok(()) => deleted.push(l.name.clone()),
                Err(e) => errors.push(e),
            }
        }
        Error::collect(errors).map(|()| deleted)
    }

    /// What is installed: the links (`links` when the caller dumped them already, else
    /// dumped here), the veth pair among them, and the pod's routes.
    async fn read(
        &self,
        sides: &Sides,
        container_id: &str,
        links: Option<(Links, Links)>,
    ) -> Result<Seen, Error> {
        let (pod_links, node_links) = match links {
            Some(links) => links,
            None => (
                Links::dump(&sides.pod, Side::Pod).await?,
                Links::dump(&sides.node, Side::Node).await?,
            ),
        };
        let pod_routes = tables::dump(&sides.pod, &pod_links, Side::Pod).await?;
        Ok(Seen {
            pair: VethPair::find(&pod_links, &node_links, container_id),
            pod_links,
            node_links,
            pod_routes,
        })
    }

    async fn plan(
        &self,
        sides: &Sides,
        seen: &Seen,
        container_id: &str,
        nic: &Nic,
    ) -> Result<Plan, Error> {
        let settings = &self.settings;
        let Some(pair) = &seen.pair else {
            return Err(Error::LinkNotFound {
                side: Side::Pod,
                name: POD_VETH.into(),
                hint: format!(
                    " (paired with {}): chain berth-route after the first NIC ({}) too, \
                     and add that NIC first",
                    host_veth_name(container_id),
                    settings.first_nic
                ),
            });
        };
        let installed = installed_node_ips(&seen.pod_routes);
        let node_ips = if nic.name == settings.first_nic {
            let looked_up = node::node_ips(&sides.node, nic, Some(pair.host.index)).await?;
            NodeIps {
                v4: looked_up.v4.or(installed.v4),
                v6: looked_up.v6.or(installed.v6),
            }
        } else {
            installed
        };
        let first = if nic.name != settings.first_nic
            && nic.name == settings.default_route_nic()
            && settings.tune_pod_routes
        {
            Some(
                read_nic(
                    &sides.pod,
                    &seen.pod_links,
                    &seen.pod_routes,
                    &settings.first_nic,
                )
                .await?,
            )
        } else {
            None
        };
        let (pod_mac, host_mac) = match (pair.pod.mac, pair.host.mac) {
            (Some(p), Some(h)) => (p, h),
            _ => return Err(Error::Invalid("the veth pair has no MAC addresses".into())),
        };
        plan::plan(&PlanInput {
            settings,
            nic,
            first: first.as_ref(),
            node_ips: &node_ips,
            host_veth: &pair.host.name,
            pod_mac,
            host_mac,
        })
    }

    async fn apply(&self, sides: &Sides, seen: &Seen, plan: &Plan) -> Result<(), Error> {
        let (pod, node) = (&sides.pod, &sides.node);
        for route in &plan.pod_routes {
            tables::add(pod, &seen.pod_links, Side::Pod, route).await?;
        }
        reconcile_rules(pod, Side::Pod, &plan.pod_rules).await?;
        if let Some(dev) = &plan.main_default_leaves {
            for route in main_defaults(&seen.pod_routes, dev) {
                tables::del(pod, &seen.pod_links, Side::Pod, route).await?;
            }
        }
        for n in &plan.pod_neighbours {
            neigh::replace(pod, &seen.pod_links, Side::Pod, n).await?;
        }
        for route in &plan.node_routes {
            tables::add(node, &seen.node_links, Side::Node, route).await?;
        }
        for rule in &plan.node_rules {
            rules::add(node, Side::Node, rule).await?;
        }
        for n in &plan.node_neighbours {
            neigh::replace(node, &seen.node_links, Side::Node, n).await?;
        }
        Ok(())
    }
}

/// Adds the missing `wanted` rules and deletes rules at their priorities that look up their
/// tables but are not wanted (left by an earlier ADD with other addresses).
async fn reconcile_rules(handle: &Handle, side: Side, wanted: &[Rule]) -> Result<(), Error> {
    if wanted.is_empty() {
        return Ok(());
    }
    let installed = rules::dump(handle, side).await?;
    let slots: BTreeSet<(u32, u32, bool)> =
        wanted.iter().map(|r| (r.pref, r.table, r.ipv6)).collect();
    for i in &installed {
        if let Some(rule) = &i.rule
            && slots.contains(&(rule.pref, rule.table, rule.ipv6))
            && !wanted.contains(rule)
        {
            rules::del(handle, side, i).await?;
        }
    }
    for rule in wanted {
        if !installed.iter().any(|i| i.rule.as_ref() == Some(rule)) {
            rules::add(handle, side, rule).await?;
        }
    }
    Ok(())
}

fn missing_rules(wanted: &[Rule], installed: &[rules::InstalledRule], side: Side) -> Vec<String> {
    wanted
        .iter()
        .filter(|w| !installed.iter().any(|i| i.rule.as_ref() == Some(*w)))
        .map(|w| format!("{side}: rule {w}"))
        .collect()
}

fn missing_neighbours(wanted: &[Neighbour], installed: &[Neighbour], side: Side) -> Vec<String> {
    wanted
        .iter()
        .filter(|w| !installed.contains(w))
        .map(|w| format!("{side}: neighbour {w}"))
        .collect()
}

/// The default routes of `dev` in the main table.
fn main_defaults<'a>(routes: &'a [Route], dev: &'a str) -> impl Iterator<Item = &'a Route> {
    routes
        .iter()
        .filter(move |r| r.table == MAIN && r.is_default() && r.dev == dev)
}

/// The node IPs an earlier ADD of the first NIC installed: host routes on veth0 in main.
fn installed_node_ips(pod_routes: &[Route]) -> NodeIps {
    NodeIps::from_ips(
        pod_routes
            .iter()
            .filter(|r| {
                r.table == MAIN
                    && r.dev == POD_VETH
                    && r.via.is_none()
                    && r.dst.prefix_len() == r.dst.max_prefix_len()
            })
            .map(|r| r.dst.addr()),
    )
}

/// A NIC as the pod has it: its global addresses and the gateways of its main defaults.
async fn read_nic(pod: &Handle, links: &Links, routes: &[Route], name: &str) -> Result<Nic, Error> {
    let index = links.index(name).ok_or_else(|| Error::LinkNotFound {
        side: Side::Pod,
        name: name.to_owned(),
        hint: " (the first NIC, needed to move the default route)".into(),
    })?;
    let messages: Vec<AddressMessage> = error::dump(
        pod.address().get().set_link_index_filter(index).execute(),
        Side::Pod,
        || format!("ip address show dev {name}"),
    )
    .await?;
    let addresses = messages
        .iter()
        .filter(|m| m.header.index == index && m.header.scope == AddressScope::Universe)
        .filter_map(|m| {
            let ip: IpAddr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })?;
            IpNet::new(ip, m.header.prefix_len).ok()
        })
        .collect();
    let mut nic = Nic::new(name, addresses);
    nic.gateways = main_defaults(routes, name).filter_map(|r| r.via).collect();
    Ok(nic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(s: &str, dev: &str) -> Route {
        Route::new(s.parse().unwrap(), dev)
    }

    #[test]
    fn node_ips_are_read_back_from_veth0_host_routes_in_main() {
        let routes = [
            route("10.6.168.123/32", POD_VETH).scope_link(),
            route("10.96.0.0/12", POD_VETH).via("10.6.168.123".parse().unwrap()),
            route("10.6.168.124/32", POD_VETH).table(100),
            route("fd00:6::123/128", POD_VETH),
            route("10.7.0.1/32", "net1"),
        ];
        assert_eq!(
            installed_node_ips(&routes),
            NodeIps::from_ips([
                "10.6.168.123".parse().unwrap(),
                "fd00:6::123".parse().unwrap()
            ])
        );
    }

    #[test]
    fn main_defaults_of_one_nic() {
        let gw = |s: &str| s.parse().unwrap();
        let routes = [
            route("0.0.0.0/0", "eth0").via(gw("10.6.0.1")),
            route("0.0.0.0/0", "net1").via(gw("10.7.0.1")),
            route("::/0", "net1").via(gw("fd00:7::1")),
            route("0.0.0.0/0", "net1").via(gw("10.7.0.1")).table(100),
            route("10.7.0.0/16", "net1"),
        ];
        let found: Vec<String> = main_defaults(&routes, "net1")
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "default via 10.7.0.1 dev net1",
                "default via fd00:7::1 dev net1"
            ]
        );
    }
}
