//! A journal write that fails part-way (a full disk) must not leave a torn record in the
//! middle of the journal: the next open cuts the journal at the first torn record, and would
//! drop with it every later record, those of writes that returned included. Needs root, to
//! mount a small tmpfs where the journal lives.

use std::path::Path;
use std::process::Command;

use ipam_core::store::TypedStore;
use ipam_core::{SpiderIPPool, ips};
use ipam_store_sled::{OpenOptions, SledStore};

fn pool(name: &str) -> SpiderIPPool {
    let mut p = SpiderIPPool::new(name, "10.9.0.0/16".parse().unwrap(), ips!["10.9.0.0/16"]);
    // Big enough that a few dozen fill the small file system.
    p.metadata
        .annotations
        .insert("padding".into(), "x".repeat(3000));
    p
}

/// A tmpfs of `size` at `dir`, unmounted when dropped.
struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(dir: &'a Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot mount a tmpfs at {}", dir.display());
        Tmpfs(dir)
    }

    fn grow(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot grow the tmpfs");
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[tokio::test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root to mount a tmpfs: scripts/test runs it as root"
)]
async fn a_write_that_fills_the_disk_loses_no_later_write() {
    let tmp = tempfile::tempdir().unwrap();
    let journal = tmp.path().join("journal");
    let disk = Tmpfs::mount(&journal, "64k");

    let mut acknowledged = Vec::new();
    {
        let store = SledStore::open(tmp.path(), OpenOptions::new()).unwrap();
        let mut failed = 0;
        for i in 0..200 {
            let name = format!("p{i}");
            match store.create_as(&pool(&name)).await {
                Ok(_) => acknowledged.push(name),
                Err(e) => {
                    let mut chain = e.to_string();
                    let mut cause = std::error::Error::source(&e);
                    while let Some(c) = cause {
                        chain = format!("{chain}: {c}");
                        cause = c.source();
                    }
                    assert!(chain.contains("No space left"), "{chain}");
                    failed += 1;
                    break;
                }
            }
        }
        assert_eq!(failed, 1, "the journal never filled the disk");
        // Room again; the writes that follow are acknowledged.
        disk.grow("8m");
        for i in 200..205 {
            let name = format!("p{i}");
            store.create_as(&pool(&name)).await.unwrap();
            acknowledged.push(name);
        }
    }

    let store = SledStore::open(tmp.path(), OpenOptions::new()).unwrap();
    let stored: Vec<SpiderIPPool> = store.list_as(None).await.unwrap();
    let names: Vec<&str> = stored.iter().map(|p| p.metadata.name.as_str()).collect();
    for name in &acknowledged {
        assert!(
            names.contains(&name.as_str()),
            "{name} was acknowledged and is gone after a reopen ({} of {} kept)",
            names.len(),
            acknowledged.len()
        );
    }
    drop(store);
    drop(disk);
}
