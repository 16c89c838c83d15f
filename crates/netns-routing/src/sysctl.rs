//! The pod's sysctls: reverse-path filtering (`podRPFilter`) and IPv6.
//!
//! `/proc/sys/net` shows the namespace of the thread that opens it, so the writes happen
//! on a thread inside the pod's namespace ([`Netns::run`]). Only the pod is touched: the
//! node's sysctls are the admin's (Spiderpool PR #3906 stopped setting them too).

use std::path::Path;

use crate::error::Error;
use crate::netns::Netns;

/// `net.ipv4.conf.all.rp_filter`.
pub const RP_FILTER: &str = "/proc/sys/net/ipv4/conf/all/rp_filter";
/// `net.ipv6.conf.all.disable_ipv6`.
pub const DISABLE_IPV6: &str = "/proc/sys/net/ipv6/conf/all/disable_ipv6";

/// Sets `rp_filter` (when given) and enables IPv6 (when the pod has IPv6 addresses) in the
/// namespace. A value already in place is not rewritten.
pub fn tune_pod(pod: &Netns, rp_filter: Option<u8>, ipv6: bool) -> Result<(), Error> {
    if rp_filter.is_none() && !ipv6 {
        return Ok(());
    }
    pod.run(|| {
        if let Some(value) = rp_filter {
            write(RP_FILTER, &value.to_string())?;
        }
        if ipv6 && Path::new(DISABLE_IPV6).exists() {
            write(DISABLE_IPV6, "0")?;
        }
        Ok(())
    })?
}

fn write(path: &str, value: &str) -> Result<(), Error> {
    let failed = |source| Error::Sysctl {
        path: path.to_owned(),
        source,
    };
    let current = std::fs::read_to_string(path).map_err(failed)?;
    if current.trim() == value {
        return Ok(());
    }
    std::fs::write(path, value).map_err(failed)
}
