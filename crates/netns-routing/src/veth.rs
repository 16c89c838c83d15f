//! The veth pair between the pod and its node: `veth0` in the pod, `veth<id>` on the node.
//!
//! It is created in one message from inside the pod, with the node end placed directly in
//! the node's namespace (`IFLA_NET_NS_FD`, like Go's `PeerNamespace`), so no link named
//! `veth0` ever appears on the node. Both ends get random MACs set explicitly (udev leaves
//! set addresses alone) and the MTU of the config. The node end carries the alias
//! `berth-route:<network>:<container id>`: DEL and GC only ever delete links with their own
//! alias, never another container's `veth…` that happens to share the name prefix.

use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{Handle, LinkUnspec, LinkVeth};

use crate::error::{Error, Side};
use crate::link::{self, Link, Links, Mac};
use crate::netns::Netns;
use crate::plan::{POD_VETH, host_veth_name};

/// The prefix of the alias on every node end Berth creates.
pub const ALIAS_PREFIX: &str = "berth-route:";

/// The alias of a node end: `berth-route:<network>:<container id>`.
pub fn alias(network: &str, container_id: &str) -> String {
    format!("{ALIAS_PREFIX}{network}:{container_id}")
}

/// The `(network, container id)` an alias names, if it is one of Berth's.
pub fn parse_alias(alias: &str) -> Option<(&str, &str)> {
    alias.strip_prefix(ALIAS_PREFIX)?.split_once(':')
}

/// Whether the node link `link` may be deleted as `container_id`'s: its alias names that
/// container, or it has no alias (a creation interrupted before the alias was set).
pub fn is_ours(link: &Link, container_id: &str) -> bool {
    match link.alias.as_deref() {
        None | Some("") => true,
        Some(alias) => parse_alias(alias).is_some_and(|(_, id)| id == container_id),
    }
}

/// The two ends, as they are now.
#[derive(Debug, Clone)]
pub struct VethPair {
    /// `veth0` in the pod.
    pub pod: Link,
    /// `veth<id>` on the node.
    pub host: Link,
}

impl VethPair {
    /// The pair in the two link dumps, if both ends exist and are each other's peer.
    pub fn find(pod_links: &Links, node_links: &Links, container_id: &str) -> Option<VethPair> {
        let pod = pod_links.get(POD_VETH)?;
        let host = node_links.get(&host_veth_name(container_id))?;
        (pod.peer_index == Some(host.index) && host.peer_index == Some(pod.index)).then(|| {
            VethPair {
                pod: pod.clone(),
                host: host.clone(),
            }
        })
    }
}

/// What [`ensure`] needs to know about the pod.
#[derive(Debug, Clone, Copy)]
pub struct VethSpec<'a> {
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// The CNI network name (for the alias).
    pub network: &'a str,
    /// MTU of both ends.
    pub mtu: u32,
}

/// What [`ensure`] leaves: the pair, and the link dumps it found the pair in. The dumps were
/// taken before the ends were set up and aliased: right for names, indexes and MACs, not for
/// those flags.
#[derive(Debug, Clone)]
pub struct Ensured {
    /// The pair.
    pub pair: VethPair,
    /// The pod's links.
    pub pod_links: Links,
    /// The node's links.
    pub node_links: Links,
}

/// Makes sure the pair exists, both ends up, the node end aliased: reuses a correct pair,
/// replaces a broken one (a `veth0` whose peer is not this container's node end, a stale
/// node end of this container), creates a missing one.
pub async fn ensure(
    pod: &Handle,
    node: &Handle,
    node_ns: &Netns,
    spec: VethSpec<'_>,
) -> Result<Ensured, Error> {
    let host_name = host_veth_name(spec.container_id);
    let mut pod_links = Links::dump(pod, Side::Pod).await?;
    let mut node_links = Links::dump(node, Side::Node).await?;
    let pair = match VethPair::find(&pod_links, &node_links, spec.container_id) {
        Some(pair) => pair,
        None => {
            if let Some(stale) = pod_links.get(POD_VETH) {
                tracing::warn!(peer = ?stale.peer_index, "replacing a veth0 that is not paired with {host_name}");
                link::delete(pod, Side::Pod, stale).await?;
            }
            if let Some(stale) = node_links.get(&host_name) {
                if !is_ours(stale, spec.container_id) {
                    return Err(Error::Invalid(format!(
                        "node link {host_name} exists and belongs to {:?}, not to container {}",
                        stale.alias.as_deref().unwrap_or_default(),
                        spec.container_id
                    )));
                }
                tracing::warn!("replacing a stale {host_name} on the node");
                link::delete(node, Side::Node, stale).await?;
            }
            create(pod, node_ns, &host_name, spec.mtu).await?;
            pod_links = Links::dump(pod, Side::Pod).await?;
            node_links = Links::dump(node, Side::Node).await?;
            VethPair::find(&pod_links, &node_links, spec.container_id).ok_or_else(|| {
                Error::LinkNotFound {
                    side: Side::Node,
                    name: host_name.clone(),
                    hint: " right after creating the veth pair".into(),
                }
            })?
        }
    };
    link::set_up(pod, Side::Pod, &pair.pod).await?;
    link::set_up(node, Side::Node, &pair.host).await?;
    link::set_alias(
        node,
        Side::Node,
        &pair.host,
        &alias(spec.network, spec.container_id),
    )
    .await?;
    Ok(Ensured {
        pair,
        pod_links,
        node_links,
    })
}

/// `ip link add veth0 address <mac> mtu <mtu> up type veth peer name <host> address <mac>
/// mtu <mtu> netns <node>`, sent from inside the pod.
async fn create(pod: &Handle, node_ns: &Netns, host_name: &str, mtu: u32) -> Result<(), Error> {
    let peer = LinkUnspec::new_with_name(host_name)
        .address(Mac::random().0.to_vec())
        .mtu(mtu)
        .setns_by_fd(node_ns.raw_fd())
        // Not `up` here: the kernel opens the peer before pairing it (veth_open → ENOTCONN);
        // ensure() brings it up afterwards.
        .build();
    let message = LinkVeth::new(POD_VETH, host_name)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .address(Mac::random().0.to_vec())
        .mtu(mtu)
        .up()
        .build();
    pod.link()
        .add(message)
        .execute()
        .await
        .map_err(|source| Error::Netlink {
            side: Side::Pod,
            op: format!(
                "ip link add {POD_VETH} mtu {mtu} up type veth peer name {host_name} netns <node>"
            ),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases() {
        let a = alias("macvlan-conf-ens192", "4f9e1c0c2b9a");
        assert_eq!(a, "berth-route:macvlan-conf-ens192:4f9e1c0c2b9a");
        assert_eq!(
            parse_alias(&a),
            Some(("macvlan-conf-ens192", "4f9e1c0c2b9a"))
        );
        assert_eq!(parse_alias("uplink"), None);
        let mut link = Link {
            index: 7,
            name: "veth4f9e1c0c2b9".into(),
            mac: None,
            peer_index: Some(4),
            alias: Some(a),
            up: true,
            mtu: Some(1500),
        };
        assert!(is_ours(&link, "4f9e1c0c2b9a"));
        assert!(!is_ours(&link, "4f9e1c0c2b9b"));
        link.alias = None;
        assert!(is_ours(&link, "4f9e1c0c2b9b"));
    }
}
