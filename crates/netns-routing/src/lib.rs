//! Multi-NIC policy routing and the veth link to the node, for pods on underlay networks;
//! and `berth-route`, the chained CNI plugin that applies them (the seed's `veth`).
//!
//! # The problem
//!
//! A pod with two macvlan NICs — `eth0` 10.6.168.172/16 and `net1` 10.7.168.173/16 — has
//! one default route, through eth0. A client outside both subnets that reaches the pod on
//! net1 gets its reply from 10.7.168.173 out of eth0, and the first stateful or
//! reverse-path-checking hop drops it. And a macvlan child cannot talk to its parent: the
//! pod cannot reach its own node (kubelet's health checks) nor, through the node, the
//! ClusterIP services kube-proxy translates there.
//!
//! # What is wired
//!
//! Per NIC, in the order the runtime adds them (DESIGN §7; the seed's reference state):
//!
//! ```text
//! eth0 (first NIC)   pod  veth0  <—veth pair—>  veth<11 chars of container id>  node
//!                    pod main:  10.6.168.123 dev veth0 scope link           (node IP)
//!                               10.96.0.0/12 via 10.6.168.123 dev veth0     (service CIDR)
//!                    node:      10.6.168.172 dev veth4f9e1c0c2b9 scope link src 10.6.168.123
//!                    both:      permanent neighbour entries for the other end's addresses
//! net1 (net<N>)      pod table 100 (100+N−1):
//!                               10.7.0.0/16 dev net1 scope link src 10.7.168.173
//!                               default via 10.7.0.1 dev net1
//!                               10.6.168.123 dev veth0 scope link
//!                               10.96.0.0/12 via 10.6.168.123 dev veth0
//!                    pod rules: from 10.7.168.173 lookup 100 pref 32764
//!                               to 10.7.0.0/16 lookup 100 pref 32765
//!                    pod main:  net1's default route removed
//!                    node:      10.7.168.173 dev veth4f9e1c0c2b9 scope link src 10.6.168.123
//! ```
//!
//! IPv6 addresses get the same routes and rules in the IPv6 tables. The NIC that keeps the
//! default route can be chosen (`podDefaultRouteNic`); the first NIC then takes that NIC's
//! table. The node IP is the `src` of `ip route get <eth0 address>` on the node.
//!
//! # Architecture
//!
//! - [`mod@plan`]: the pure part — a [`Nic`], the [`Settings`] and the node's addresses give a
//!   [`Plan`] of routes ([`tables::Route`]), rules ([`rules::Rule`]) and neighbour entries
//!   ([`neigh::Neighbour`]) that print as the `ip` commands they stand for;
//! - [`pod`]: [`PodRouting`] carries a plan out (ADD), compares it with the system (CHECK),
//!   and removes what is Berth's (DEL, GC) — idempotent, and DEL without the pod;
//! - the objects, one module each, each with the netlink calls of its `ip` twin:
//!   [`veth`] (the pair), [`tables`] (routes), [`rules`], [`neigh`], [`link`], [`node`]
//!   (`ip route get` for the node IP), [`sysctl`] (the pod's `rp_filter`);
//! - [`netns`]: the one place a thread enters a namespace — every pod-side netlink socket
//!   is created inside the pod's namespace on a throw-away thread, never by `setns` on a
//!   tokio worker; the crate has no `unsafe`;
//! - [`config`] and [`plugin`]: the CNI plugin [`BerthRoute`] on `berth_cni`'s protocol
//!   layer (binary `src/bin/berth-route.rs`); [`error`]: the one [`Error`] enum.
//!
//! Other plugins call [`PodRouting`] with their own NIC list; the plugin is one user.
//!
//! # Example
//!
//! The seed pod's `net1`, planned (applying it needs root and namespaces: see
//! [`PodRouting::add`]):
//!
//! ```
//! use netns_routing::{Nic, NodeIps, PlanInput, Settings, link::Mac, plan};
//!
//! let settings = Settings { hijack: vec!["10.96.0.0/12".parse()?], ..Settings::default() };
//! let mut net1 = Nic::new("net1", vec!["10.7.168.173/16".parse()?]);
//! net1.gateways.push("10.7.0.1".parse()?);
//! let node = NodeIps::from_ips(["10.6.168.123".parse()?]);
//! let plan = plan(&PlanInput {
//!     settings: &settings,
//!     nic: &net1,
//!     first: None,
//!     node_ips: &node,
//!     host_veth: "veth4f9e1c0c2b9",
//!     pod_mac: Mac::random(),
//!     host_mac: Mac::random(),
//! })?;
//! let rules: Vec<String> = plan.pod_rules.iter().map(ToString::to_string).collect();
//! assert_eq!(rules, [
//!     "from 10.7.168.173 lookup 100 pref 32764",
//!     "to 10.7.0.0/16 lookup 100 pref 32765",
//! ]);
//! assert_eq!(plan.pod_routes[1].to_string(), "default via 10.7.0.1 dev net1 table 100");
//! assert_eq!(plan.main_default_leaves.as_deref(), Some("net1"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod link;
pub mod neigh;
pub mod netns;
pub mod node;
pub mod plan;
pub mod plugin;
pub mod pod;
pub mod rules;
pub mod sysctl;
pub mod tables;
pub mod veth;

pub use config::RouteConfig;
pub use error::Error;
pub use plan::{Nic, NicRoute, NodeIps, Plan, PlanInput, Settings, plan};
pub use plugin::BerthRoute;
pub use pod::{Attachment, PodRouting};
