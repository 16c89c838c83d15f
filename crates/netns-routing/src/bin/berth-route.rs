//! `berth-route`: Berth's chained routing plugin (the seed's `veth`).
//!
//! Install it as `veth` to run the seed's `{"type": "veth", "service_cidr": [...]}`
//! unchanged. Keys, commands and behaviour: the `netns_routing` crate docs.

use std::process::ExitCode;

fn main() -> ExitCode {
    berth_cni::run_process(&netns_routing::BerthRoute::new())
}
