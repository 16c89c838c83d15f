//! Liveness in embedded mode: a container is alive while its network namespace exists.

use std::io::ErrorKind;
use std::path::Path;

use async_trait::async_trait;
use ipam_core::IpRecord;
use ipam_core::engine::Liveness;

/// Embedded-mode liveness for `Engine::gc` (DESIGN §5): the holder of an IP is alive while
/// the netns path recorded at ADD (`CNI_NETNS`) exists. A record without a netns is dead.
/// A path that cannot be checked (permission denied, I/O error) counts as alive — GC keeps
/// what it is unsure of.
///
/// The CNI 1.1 GC of a network is the other half of the rule ("and the last CNI GC of its
/// network did not leave it out"): it releases the attachments it was not given at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetnsLiveness;

impl NetnsLiveness {
    /// Whether a netns path exists (`Err` when that cannot be told).
    pub fn exists(path: &Path) -> std::io::Result<bool> {
        match std::fs::metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Liveness for NetnsLiveness {
    async fn alive(&self, record: &IpRecord) -> Result<bool, ipam_core::Error> {
        let Some(netns) = record.netns.as_deref().filter(|n| !n.is_empty()) else {
            return Ok(false);
        };
        NetnsLiveness::exists(Path::new(netns))
            .map_err(|e| ipam_core::Error::backend(format!("check the netns {netns}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(netns: Option<&str>) -> IpRecord {
        IpRecord {
            pod: "default/p".into(),
            pod_uid: "u".into(),
            container_id: Some("c".into()),
            interface: Some("eth0".into()),
            network: Some("n".into()),
            netns: netns.map(str::to_owned),
        }
    }

    #[test]
    fn alive_while_the_netns_path_exists() {
        let dir = tempfile::tempdir().unwrap();
        let ns = dir.path().join("ns");
        std::fs::write(&ns, b"").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let alive = |r: IpRecord| rt.block_on(NetnsLiveness.alive(&r)).unwrap();
        assert!(alive(record(Some(ns.to_str().unwrap()))));
        std::fs::remove_file(&ns).unwrap();
        assert!(!alive(record(Some(ns.to_str().unwrap()))));
        assert!(!alive(record(None)));
        assert!(!alive(record(Some(""))));
        let under_a_file = dir.path().join("f");
        std::fs::write(&under_a_file, b"").unwrap();
        assert!(!alive(record(Some(
            under_a_file.join("ns").to_str().unwrap()
        ))));
    }
}
