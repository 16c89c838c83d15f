//! `berth-ipam`: Berth's CNI IPAM plugin.
//!
//! Install it under any name the CNI config's `ipam.type` uses — e.g. as `spiderpool`, so
//! the seed's `"ipam": {"type": "spiderpool"}` works unchanged. Modes, keys and commands:
//! the `cni_plugin::ipam` module docs.

use std::process::ExitCode;

fn main() -> ExitCode {
    berth_cni::run_process(&cni_plugin::BerthIpam::new())
}
