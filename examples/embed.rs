//! Berth as a library: a sled store, a pool per NIC, two NICs of a pod allocated with one disk
//! wait for the whole operation, and released again. `cargo run --example embed`.

use berth::sled::{OpenOptions, SledStore};
use berth::store::deferring_durability;
use berth::{AllocateRequest, Engine, NicRequest, PodContext, ReleaseRequest, SpiderIPPool, ips};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let engine = Engine::new(SledStore::open(dir.path(), OpenOptions::new())?);
    let eth0 = SpiderIPPool::new(
        "pool-eth0",
        "10.6.0.0/16".parse()?,
        ips!["10.6.168.171-10.6.168.180"],
    );
    let net1 = SpiderIPPool::new(
        "pool-net1",
        "10.7.0.0/16".parse()?,
        ips!["10.7.168.171-10.7.168.180"],
    );
    engine.apply(eth0).await?;
    engine.apply(net1).await?;

    let nic = |interface: &str, pool: &str| NicRequest {
        interface: interface.into(),
        default_ipv4_pools: vec![pool.into()],
        ..Default::default()
    };
    let pod = PodContext {
        namespace: "default".into(),
        name: "web-0".into(),
        ..Default::default()
    };
    let request = AllocateRequest {
        pod,
        pod_uid: "uid-1".into(),
        container_id: "c1".into(),
        nics: vec![nic("eth0", "pool-eth0"), nic("net1", "pool-net1")],
        ..Default::default()
    };
    // Every write of the allocation returns at once; one sync makes them all durable.
    let allocation = deferring_durability(engine.store(), engine.allocate(&request)).await?;
    for n in &allocation.nics {
        println!(
            "{} {} (gateway {:?})",
            n.interface, n.ips[0].address, n.ips[0].gateway
        );
    }

    let release = ReleaseRequest {
        namespace: "default".into(),
        name: "web-0".into(),
        pod_uid: "uid-1".into(),
        container_id: "c1".into(),
        ..Default::default()
    };
    let released = deferring_durability(engine.store(), engine.release(&release)).await?;
    println!("released {} IPs", released.ips.len());
    Ok(())
}
