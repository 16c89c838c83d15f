//! The engine through the seed's story and the failure modes Spiderpool users hit.

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipam_core::engine::{AnyObject, Engine, EngineConfig};
use ipam_core::store::{MemStore, Store, TypedStore};
use ipam_core::{
    Error, IpFamily, Kind, ObjectKey, SpiderEndpoint, SpiderIPPool, SpiderReservedIP, SpiderSubnet,
    WorkloadKind, ips,
};
use ipam_core::{NicRequest, PodContext};
use support::*;

async fn pools(engine: &Engine<MemStore>) -> BTreeMap<String, SpiderIPPool> {
    engine
        .store()
        .list_as::<SpiderIPPool>(None)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.metadata.name.clone(), p))
        .collect()
}

fn auto_name(p: &BTreeMap<String, SpiderIPPool>, prefix: &str) -> String {
    p.keys()
        .find(|k| k.starts_with(prefix))
        .unwrap_or_else(|| panic!("no pool {prefix}* in {:?}", p.keys()))
        .clone()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn the_seed_story() {
    let rt = rt();
    let engine = Engine::new(MemStore::new());
    rt.block_on(async {
        setup_seed(&engine).await;
        let app = seed_app(WorkloadKind::Deployment, "test-app", 2, "+1");
        engine.apply(any_workload(app.clone())).await.unwrap();
        check_quiescent(engine.store(), 1).await.unwrap();
    });
    let p = rt.block_on(pools(&engine));
    assert_eq!(p.len(), 2);
    let eth0 = auto_name(&p, "auto4-test-app-eth0-");
    let net1 = auto_name(&p, "auto4-test-app-net1-");
    assert_eq!(p[&eth0].spec.ips, ips!["10.6.168.171-10.6.168.173"]);
    assert_eq!(p[&net1].spec.ips, ips!["10.7.168.171-10.7.168.173"]);
    let subnets: Vec<SpiderSubnet> = rt.block_on(engine.store().list_as(None)).unwrap();
    for s in &subnets {
        let st = s.status.as_ref().unwrap();
        assert_eq!(
            (st.allocated_ip_count, st.total_ip_count),
            (Some(3), Some(10)),
            "{}",
            s.metadata.name
        );
    }

    rt.block_on(async {
        let app = seed_app(WorkloadKind::Deployment, "test-app", 2, "+1");
        // Two pods, one IP per NIC each.
        let a = engine
            .allocate(&request(
                &app,
                "test-app-fkqbw",
                "u1",
                "c1",
                &["eth0", "net1"],
            ))
            .await
            .unwrap();
        let b = engine
            .allocate(&request(
                &app,
                "test-app-gwlx8",
                "u2",
                "c2",
                &["eth0", "net1"],
            ))
            .await
            .unwrap();
        assert_eq!(a.nics[0].ips[0].address.to_string(), "10.6.168.171/16");
        assert_eq!(a.nics[0].ips[0].gateway, Some(ip("10.6.0.1")));
        assert_eq!(a.nics[1].ips[0].address.to_string(), "10.7.168.171/16");
        assert_eq!(b.nics[0].ips[0].address.to_string(), "10.6.168.172/16");
        // A third pod fits (the +1 spare), a fourth does not, and takes nothing.
        engine
            .allocate(&request(
                &app,
                "test-app-surge",
                "u3",
                "c3",
                &["eth0", "net1"],
            ))
            .await
            .unwrap();
        let err = engine
            .allocate(&request(
                &app,
                "test-app-extra",
                "u4",
                "c4",
                &["eth0", "net1"],
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::PoolsExhausted { ref nic, .. } if nic == "eth0"),
            "{err}"
        );
        engine
            .release(&release(Some(&app), "test-app-surge", "u3", "c3"))
            .await
            .unwrap();
        // Pods deleted and recreated stay inside their app's pools.
        engine
            .release(&release(Some(&app), "test-app-fkqbw", "u1", "c1"))
            .await
            .unwrap();
        let c = engine
            .allocate(&request(
                &app,
                "test-app-5lhgz",
                "u5",
                "c5",
                &["eth0", "net1"],
            ))
            .await
            .unwrap();
        assert!(ips!["10.6.168.171-10.6.168.173"].contains(&c.nics[0].ips[0].address.addr()));
        check_quiescent(engine.store(), 1).await.unwrap();
        // Scale to 3: pools of 4.
        engine
            .scale(WorkloadKind::Deployment, "default", "test-app", 3)
            .await
            .unwrap();
        check_quiescent(engine.store(), 1).await.unwrap();
    });
    let p = rt.block_on(pools(&engine));
    assert_eq!(p[&eth0].spec.ips, ips!["10.6.168.171-10.6.168.174"]);
    assert_eq!(p[&net1].spec.ips.len(), 4);
    assert_eq!(p[&eth0].allocated_count(), 2);
}

#[test]
fn allocation_is_idempotent_per_container_and_interface() {
    let rt = rt();
    let engine = Engine::new(MemStore::new());
    rt.block_on(async {
        setup_seed(&engine).await;
        let app = seed_app(WorkloadKind::Deployment, "web", 1, "+1");
        engine.apply(any_workload(app.clone())).await.unwrap();
        let req = request(&app, "web-1", "u1", "c1", &["eth0"]);
        let first = engine.allocate(&req).await.unwrap();
        for _ in 0..3 {
            assert_eq!(engine.allocate(&req).await.unwrap(), first);
        }
        // The second NIC added by a later call joins the same endpoint.
        let net1 = engine
            .allocate(&request(&app, "web-1", "u1", "c1", &["net1"]))
            .await
            .unwrap();
        let ep: SpiderEndpoint = engine
            .store()
            .get_as(Some("default"), "web-1")
            .await
            .unwrap()
            .unwrap();
        let nics: Vec<_> = ep
            .current()
            .ips
            .iter()
            .map(|n| n.interface.clone())
            .collect();
        assert_eq!(nics, ["eth0", "net1"]);
        assert_eq!(
            ep.nic("net1").unwrap().ipv4,
            Some(net1.nics[0].ips[0].address)
        );
        let records = engine.records().await.unwrap();
        assert_eq!(records.values().map(|r| r.len()).sum::<usize>(), 2);
    });
}

#[test]
fn one_empty_nic_pool_never_drains_the_other() {
    // Spiderpool #4295: NIC2's pool was empty, and every retry took another IP of NIC1's pool.
    let rt = rt();
    let engine = Engine::new(MemStore::new());
    rt.block_on(async {
        setup_seed(&engine).await;
        for (name, net, range) in [
            ("p-eth0", "10.6.0.0/16", "10.6.168.190-10.6.168.199"),
            ("p-net1", "10.7.0.0/16", "10.7.168.190"),
        ] {
            let pool = SpiderIPPool::new(name, net.parse().unwrap(), ips![range]);
            let _ = pool; // pools outside the subnets' IPs are refused:
        }
        let eth0 = SpiderIPPool::new(
            "p-eth0",
            "10.8.0.0/16".parse().unwrap(),
            ips!["10.8.0.10-10.8.0.19"],
        );
        let net1 = SpiderIPPool::new("p-net1", "10.9.0.0/16".parse().unwrap(), ips!["10.9.0.10"]);
        engine.apply(AnyObject::Pool(eth0)).await.unwrap();
        engine.apply(AnyObject::Pool(net1)).await.unwrap();
        let mut app = seed_app(WorkloadKind::Deployment, "bare", 1, "+1");
        app.spec.template.metadata.annotations = annotations(&[(
            "ipam.spidernet.io/ippools",
            r#"[{"interface":"eth0","ipv4":["p-eth0"]},{"interface":"net1","ipv4":["p-net1"]}]"#,
        )]);
        engine
            .allocate(&request(&app, "first", "u0", "c0", &["eth0", "net1"]))
            .await
            .unwrap();
        for i in 0..20 {
            let err = engine
                .allocate(&request(
                    &app,
                    "second",
                    &format!("u{i}"),
                    &format!("retry{i}"),
                    &["eth0", "net1"],
                ))
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::PoolsExhausted { ref nic, .. } if nic == "net1"),
                "{err}"
            );
        }
        let p = engine
            .store()
            .get_as::<SpiderIPPool>(None, "p-eth0")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.allocated_count(), 1, "failed ADDs leaked NIC1 IPs");
        check_invariants(engine.store()).await.unwrap();
    });
}

#[test]
fn statefulset_pods_keep_their_ips_until_scaled_below_their_ordinal() {
    let rt = rt();
    let engine = Engine::new(MemStore::new());
    rt.block_on(async {
        setup_seed(&engine).await;
        let sts = seed_app(WorkloadKind::StatefulSet, "db", 2, "+1");
        engine.apply(any_workload(sts.clone())).await.unwrap();
        let first = engine
            .allocate(&request(&sts, "db-1", "uid-a", "ca", &["eth0", "net1"]))
            .await
            .unwrap();
        // Other pods come and go in between.
        let other = engine
            .allocate(&request(&sts, "db-0", "uid-x", "cx", &["eth0", "net1"]))
            .await
            .unwrap();
        let released = engine
            .release(&release(Some(&sts), "db-1", "uid-a", "ca"))
            .await
            .unwrap();
        assert!(released.ips.is_empty());
        assert_eq!(released.kept_for_statefulset.len(), 2);
        engine
            .release(&release(Some(&sts), "db-0", "uid-x", "cx"))
            .await
            .unwrap();
        let filler = engine
            .allocate(&request(&sts, "db-0", "uid-y", "cy", &["eth0", "net1"]))
            .await
            .unwrap();
        assert_eq!(filler, other, "db-0 is kept too");
        // GC does not take kept IPs even though their container is gone.
        let live = LiveSet::default();
        live.add("cy");
        engine.gc(&live).await.unwrap();
        // db-1 comes back under a new uid and container: same IPs.
        let again = engine
            .allocate(&request(&sts, "db-1", "uid-b", "cb", &["eth0", "net1"]))
            .await
            .unwrap();
        assert_eq!(again, first);
        check_quiescent(engine.store(), 1).await.unwrap();
        // Scaled to 1, db-1 is no longer kept: its DEL frees the IPs.
        engine
            .scale(WorkloadKind::StatefulSet, "default", "db", 1)
            .await
            .unwrap();
        let released = engine
            .release(&release(Some(&sts), "db-1", "uid-b", "cb"))
            .await
            .unwrap();
        assert_eq!(released.ips.len(), 2);
        check_quiescent(engine.store(), 1).await.unwrap();
        let p = pools(&engine).await;
        assert_eq!(
            p.values().map(|p| p.spec.ips.len()).collect::<Vec<_>>(),
            [2, 2],
            "replicas 1 + 1"
        );
    });
}

#[test]
fn statefulset_pods_whose_nics_come_back_one_call_each_keep_every_ip() {
    // Multus calls the IPAM once per NIC; the first call of the new incarnation must not make
    // the endpoint forget the other NIC.
    let rt = rt();
    let engine = Engine::new(MemStore::new());
    rt.block_on(async {
        setup_seed(&engine).await;
        let sts = seed_app(WorkloadKind::StatefulSet, "db", 2, "+1");
        engine.apply(any_workload(sts.clone())).await.unwrap();
        let mut before = Vec::new();
        for nic in ["eth0", "net1"] {
            before.push(
                engine
                    .allocate(&request(&sts, "db-1", "uid-a", "ca", &[nic]))
                    .await
                    .unwrap(),
            );
        }
        engine
            .release(&release(Some(&sts), "db-1", "uid-a", "ca"))
            .await
            .unwrap();
        let mut after = Vec::new();
        for nic in ["eth0", "net1"] {
            after.push(
                engine
                    .allocate(&request(&sts, "db-1", "uid-b", "cb", &[nic]))
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(after, before);
        check_quiescent(engine.store(), 1).await.unwrap();
    });
}

#[test]
fn scaling_down_frees_ips_kept_for_pods_that_are_gone() {
    let rt = rt();
    let engine = Engine::new(MemStore::new());
    rt.block_on(async {
        setup_seed(&engine).await;
        let sts = seed_app(WorkloadKind::StatefulSet, "db", 3, "+0");
        engine.apply(any_workload(sts.clone())).await.unwrap();
        for i in 0..3 {
            engine
                .allocate(&request(
                    &sts,
                    &format!("db-{i}"),
                    &format!("u{i}"),
                    &format!("c{i}"),
                    &["eth0", "net1"],
                ))
                .await
                .unwrap();
        }
        // db-2 restarts: its DEL keeps its IPs (detached), then the StatefulSet shrinks to 2.
        engine
            .release(&release(Some(&sts), "db-2", "u2", "c2"))
            .await
            .unwrap();
        engine
            .scale(WorkloadKind::StatefulSet, "default", "db", 2)
            .await
            .unwrap();
        let records = engine.records().await.unwrap();
        assert!(
            records
                .values()
                .all(|r| r.values().all(|r| r.pod != "default/db-2")),
            "{records:?}"
        );
        let ep: Option<SpiderEndpoint> = engine
            .store()
            .get_as(Some("default"), "db-2")
            .await
            .unwrap();
        assert!(ep.is_none());
        check_quiescent(engine.store(), 0).await.unwrap();
    });
}

#[test]
fn a_scale_the_subnet_cannot_serve_changes_nothing() {
    let rt = rt();
    let engine = Engine::new(MemStore::new());
    rt.block_on(async {
        setup_seed(&engine).await;
        let app = seed_app(WorkloadKind::Deployment, "web", 2, "+1");
        engine.apply(any_workload(app.clone())).await.unwrap();
        let before = pools(&engine).await;
        let err = engine
            .scale(WorkloadKind::Deployment, "default", "web", 12)
            .await
            .unwrap_err();
        match &err {
            Error::SubnetExhausted { free, needed, .. } => assert_eq!((*free, *needed), (7, 10)),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("has 7 free IPs but"), "{err}");
        assert_eq!(pools(&engine).await, before);
        let w = engine
            .workload(&ipam_core::AppRef::of(&app))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.replicas(), 2, "the replica count was not recorded");
    });
}

#[test]
fn shrinking_only_gives_back_unallocated_ips() {
    let rt = rt();
    let engine = Engine::new(MemStore::new());
    rt.block_on(async {
        setup_seed(&engine).await;
        let app = seed_app(WorkloadKind::Deployment, "web", 4, "+0");
        engine.apply(any_workload(app.clone())).await.unwrap();
        for i in 0..4 {
            engine
                .allocate(&request(
                    &app,
                    &format!("web-{i}"),
                    &format!("u{i}"),
                    &format!("c{i}"),
                    &["eth0"],
                ))
                .await
                .unwrap();
        }
        engine
            .scale(WorkloadKind::Deployment, "default", "web", 1)
            .await
            .unwrap();
        let eth0 = auto_name(&pools(&engine).await, "auto4-web-eth0");
        assert_eq!(
            pools(&engine).await[&eth0].spec.ips.len(),
            4,
            "all four are held"
        );
        check_quiescent(engine.store(), 0).await.unwrap();
        for i in 0..3 {
            engine
                .release(&release(
                    Some(&app),
                    &format!("web-{i}"),
                    &format!("u{i}"),
                    &format!("c{i}"),
                ))
                .await
                .unwrap();
            check_quiescent(engine.store(), 0).await.unwrap();
        }
        let p = &pools(&engine).await[&eth0];
        assert_eq!(p.spec.ips.len(), 1);
        assert_eq!(
            p.allocated_ips(),
            ips!["10.6.168.174"],
            "the held IP stayed"
        );
    });
}

#[test]
fn deleting_the_app_reclaims_its_pools_when_their_last_ip_goes() {
    let rt = rt();
    let engine = Engine::new(MemStore::new());
    rt.block_on(async {
        setup_seed(&engine).await;
        let app = seed_app(WorkloadKind::Deployment, "web", 2, "+1");
        engine.apply(any_workload(app.clone())).await.unwrap();
        engine
            .allocate(&request(&app, "web-1", "u1", "c1", &["eth0", "net1"]))
            .await
            .unwrap();
        engine
            .delete(&ObjectKey::namespaced(Kind::Deployment, "default", "web"))
            .await
            .unwrap();
        let p = pools(&engine).await;
        assert_eq!(p.len(), 2);
        assert!(p.values().all(|p| p.metadata.is_terminating()));
        // Reconciling the gone application again (the controller's GC does, every period)
        // writes nothing: the pools wait for their last IP.
        engine
            .reconcile(&ipam_core::AppRef::of(&app))
            .await
            .unwrap();
        assert_eq!(
            pools(&engine).await,
            p,
            "a reconcile rewrote a terminating pool"
        );
        let err = engine
            .allocate(&request(&app, "web-2", "u2", "c2", &["eth0"]))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("terminating") || err.to_string().contains("does not exist"),
            "{err}"
        );
        engine
            .release(&release(Some(&app), "web-1", "u1", "c1"))
            .await
            .unwrap();
        assert!(pools(&engine).await.is_empty());
        let subnets: Vec<SpiderSubnet> = engine.store().list_as(None).await.unwrap();
        assert!(
            subnets.iter().all(|s| s.claims().is_empty()
                && s.status.as_ref().unwrap().allocated_ip_count == Some(0))
        );
        check_quiescent(engine.store(), 1).await.unwrap();
    });
}

#[test]
fn a_retained_pool_is_adopted_by_the_next_app_of_the_same_name() {
    let rt = rt();
    let engine = Engine::new(MemStore::new());
    rt.block_on(async {
        setup_seed(&engine).await;
        let mut app = seed_app(WorkloadKind::Deployment, "keep", 1, "+1");
        app.spec.template.metadata.annotations.insert("ipam.spidernet.io/ippool-reclaim".into(), "false".into());
        engine.apply(any_workload(app.clone())).await.unwrap();
        let before = pools(&engine).await;
        engine.delete(&ObjectKey::namespaced(Kind::Deployment, "default", "keep")).await.unwrap();
        assert_eq!(pools(&engine).await.len(), 2, "retained");
        assert!(pools(&engine).await.values().all(|p| !p.metadata.is_terminating()));
        let mut again = app.clone();
        again.metadata.uid = None;
        engine.apply(any_workload(again)).await.unwrap();
        let after = pools(&engine).await;
        assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
        let new_uid = engine.workload(&ipam_core::AppRef::of(&app)).await.unwrap().unwrap().metadata.uid.unwrap();
        assert!(after.values().all(|p| p.metadata.label(ipam_core::LABEL_OWNER_APP_UID) == Some(new_uid.as_str())));
        check_quiescent(engine.store(), 1).await.unwrap();
    });
}

#[test]
fn gc_frees_dead_holders_but_never_a_reused_ip() {
    let rt = rt();
    let engine = Engine::new(MemStore::new());
    rt.block_on(async {
        setup_seed(&engine).await;
        let app = seed_app(WorkloadKind::Deployment, "web", 2, "+1");
        engine.apply(any_workload(app.clone())).await.unwrap();
        let live = LiveSet::default();
        engine
            .allocate(&request(&app, "web-a", "ua", "ca", &["eth0", "net1"]))
            .await
            .unwrap();
        engine
            .allocate(&request(&app, "web-b", "ub", "cb", &["eth0", "net1"]))
            .await
            .unwrap();
        live.add("cb");
        let report = engine.gc(&live).await.unwrap();
        assert_eq!(report.released.len(), 2, "web-a's two IPs: {report:?}");
        assert_eq!(report.endpoints_deleted, ["default/web-a"]);
        check_quiescent(engine.store(), 1).await.unwrap();
        // The ABA case: a stale judgement of a record must not free a newer holder of the IP.
        let c = engine
            .allocate(&request(&app, "web-c", "uc", "cc", &["eth0"]))
            .await
            .unwrap();
        live.add("cc");
        let report = engine.gc(&live).await.unwrap();
        assert!(report.released.is_empty());
        let records = engine.records().await.unwrap();
        let holder = records
            .values()
            .find_map(|r| r.get(&c.nics[0].ips[0].address.addr()))
            .unwrap();
        assert_eq!(holder.pod, "default/web-c");
    });
}

#[test]
fn released_ips_are_handed_out_last() {
    let rt = rt();
    let engine = Engine::new(MemStore::new());
    rt.block_on(async {
        let pool = SpiderIPPool::new(
            "p",
            "10.1.0.0/24".parse().unwrap(),
            ips!["10.1.0.10-10.1.0.14"],
        );
        engine.apply(AnyObject::Pool(pool)).await.unwrap();
        let mut app = seed_app(WorkloadKind::Deployment, "x", 1, "+1");
        app.spec.template.metadata.annotations =
            annotations(&[("ipam.spidernet.io/ippool", r#"{"ipv4":["p"]}"#)]);
        let a = engine
            .allocate(&request(&app, "a", "ua", "ca", &["eth0"]))
            .await
            .unwrap();
        engine
            .release(&release(None, "a", "ua", "ca"))
            .await
            .unwrap();
        let b = engine
            .allocate(&request(&app, "b", "ub", "cb", &["eth0"]))
            .await
            .unwrap();
        assert_ne!(a.nics[0].ips[0].address, b.nics[0].ips[0].address);
        assert_eq!(b.nics[0].ips[0].address.to_string(), "10.1.0.11/24");
    });
}

#[test]
fn selection_errors_name_the_pool_and_nic() {
    let rt = rt();
    let engine = Engine::new(MemStore::new());
    rt.block_on(async {
        let mut pool = SpiderIPPool::new("p", "10.1.0.0/24".parse().unwrap(), ips!["10.1.0.10-10.1.0.14"]);
        pool.spec.disable = Some(true);
        engine.apply(AnyObject::Pool(pool)).await.unwrap();
        let mut app = seed_app(WorkloadKind::Deployment, "x", 1, "+1");
        app.spec.template.metadata.annotations = annotations(&[("ipam.spidernet.io/ippool", r#"{"ipv4":["p"]}"#)]);
        let err = engine.allocate(&request(&app, "a", "ua", "ca", &["eth0"])).await.unwrap_err().to_string();
        assert_eq!(err, "no IP pool available for eth0 (IPv4): every pool from the pod's ipam.spidernet.io/ippool annotation was filtered out: p: disabled");
        app.spec.template.metadata.annotations = annotations(&[("ipam.spidernet.io/ippool", r#"{"ipv4":["q"]}"#)]);
        let err = engine.allocate(&request(&app, "a", "ua", "ca", &["eth0"])).await.unwrap_err().to_string();
        assert_eq!(err, r#"ipam.spidernet.io/ippool refers to SpiderIPPool "q", which does not exist"#);
        // Nothing was recorded by the failures.
        assert!(engine.records().await.unwrap().values().all(|r| r.is_empty()));
        let ep: Option<SpiderEndpoint> = engine.store().get_as(Some("default"), "a").await.unwrap();
        assert!(ep.is_none());
    });
}

#[test]
fn reserved_ips_are_never_handed_out_nor_carved() {
    let rt = rt();
    let engine = Engine::new(MemStore::new());
    rt.block_on(async {
        setup_seed(&engine).await;
        let r = SpiderReservedIP::new("keep-out", ips!["10.6.168.171-10.6.168.172"]);
        engine.apply(AnyObject::ReservedIp(r)).await.unwrap();
        let app = seed_app(WorkloadKind::Deployment, "web", 1, "+1");
        engine.apply(any_workload(app.clone())).await.unwrap();
        let eth0 = auto_name(&pools(&engine).await, "auto4-web-eth0");
        assert_eq!(
            pools(&engine).await[&eth0].spec.ips,
            ips!["10.6.168.173-10.6.168.174"]
        );
        let got = engine
            .allocate(&request(&app, "w", "u", "c", &["eth0"]))
            .await
            .unwrap();
        assert_eq!(got.nics[0].ips[0].address.to_string(), "10.6.168.173/16");
        // The engine keeps the reserved IPs it read; a reservation made since is seen at once.
        engine
            .apply(AnyObject::ReservedIp(SpiderReservedIP::new(
                "also-out",
                ips!["10.6.168.174"],
            )))
            .await
            .unwrap();
        let err = engine
            .allocate(&request(&app, "w2", "u2", "c2", &["eth0"]))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::PoolsExhausted { .. }), "{err}");
        engine
            .delete(&ObjectKey::cluster(Kind::SpiderReservedIP, "also-out"))
            .await
            .unwrap();
        let got = engine
            .allocate(&request(&app, "w2", "u2", "c2", &["eth0"]))
            .await
            .unwrap();
        assert_eq!(got.nics[0].ips[0].address.to_string(), "10.6.168.174/16");
    });
}

#[test]
fn invalid_pools_are_refused_and_nothing_is_stored() {
    let rt = rt();
    let engine = Engine::new(MemStore::new());
    rt.block_on(async {
        setup_seed(&engine).await;
        let outside = SpiderIPPool::new("outside", "10.6.0.0/16".parse().unwrap(), ips!["10.6.1.1"]);
        let err = engine.apply(AnyObject::Pool(outside)).await.unwrap_err().to_string();
        assert_eq!(err, r#"SpiderIPPool "outside" is invalid: IPs 10.6.1.1 are not in spec.ips of SpiderSubnet "subnet-test-ens192""#);
        let mut gw = SpiderIPPool::new("gw", "10.6.0.0/16".parse().unwrap(), ips!["10.6.168.171-10.6.168.172"]);
        gw.spec.gateway = Some(ip("10.6.168.171"));
        let err = engine.apply(AnyObject::Pool(gw)).await.unwrap_err().to_string();
        assert!(err.contains("spec.gateway 10.6.168.171 is inside spec.ips"), "{err}");
        let a = SpiderIPPool::new("a", "10.6.0.0/16".parse().unwrap(), ips!["10.6.168.171-10.6.168.173"]);
        engine.apply(AnyObject::Pool(a)).await.unwrap();
        let b = SpiderIPPool::new("b", "10.6.0.0/16".parse().unwrap(), ips!["10.6.168.173-10.6.168.175"]);
        let err = engine.apply(AnyObject::Pool(b)).await.unwrap_err().to_string();
        assert!(err.contains("10.6.168.173"), "{err}");
        let stored: Vec<SpiderIPPool> = engine.store().list_as(None).await.unwrap();
        assert_eq!(stored.iter().map(|p| p.metadata.name.as_str()).collect::<Vec<_>>(), ["a"]);
        // The manual pool is counted by its subnet, and the auto pools carve around it.
        let app = seed_app(WorkloadKind::Deployment, "web", 2, "+1");
        engine.apply(any_workload(app)).await.unwrap();
        let eth0 = auto_name(&pools(&engine).await, "auto4-web-eth0");
        assert_eq!(pools(&engine).await[&eth0].spec.ips, ips!["10.6.168.174-10.6.168.176"]);
        let s: SpiderSubnet = engine.store().get_as(None, "subnet-test-ens192").await.unwrap().unwrap();
        assert_eq!(s.status.unwrap().allocated_ip_count, Some(6));
        check_quiescent(engine.store(), 1).await.unwrap();
    });
}

/// `admit` (what `berth webhook` answers) mutates and refuses exactly as `apply`, and writes
/// nothing.
#[test]
fn admission_mutates_and_refuses_as_apply_does_and_writes_nothing() {
    let rt = rt();
    let engine = Engine::new(MemStore::new());
    rt.block_on(async {
        setup_seed(&engine).await;
        let a = SpiderIPPool::new(
            "a",
            "10.6.0.0/16".parse().unwrap(),
            ips!["10.6.168.171-10.6.168.173"],
        );
        let AnyObject::Pool(admitted) = engine
            .admit(AnyObject::Pool(a.clone()), None)
            .await
            .unwrap()
        else {
            panic!("not a pool");
        };
        assert_eq!(admitted.spec.ip_version, Some(4));
        assert_eq!(
            admitted.spec.gateway,
            Some(ip("10.6.0.1")),
            "inherited from its subnet"
        );
        assert_eq!(
            admitted
                .metadata
                .label("ipam.spidernet.io/owner-spider-subnet"),
            Some("subnet-test-ens192")
        );
        assert_eq!(
            admitted.metadata.label("ipam.spidernet.io/ippool-cidr"),
            Some("10-6-0-0-16")
        );
        assert!(
            engine
                .store()
                .list_as::<SpiderIPPool>(None)
                .await
                .unwrap()
                .is_empty(),
            "admit wrote"
        );

        // What apply then stores is what admission answered (but for the version).
        engine.apply(AnyObject::Pool(a.clone())).await.unwrap();
        let mut stored: SpiderIPPool = engine.store().get_as(None, "a").await.unwrap().unwrap();
        stored.metadata.resource_version = None;
        stored.metadata.creation_timestamp = None;
        stored.metadata.uid = None;
        stored.metadata.generation = None;
        let mut answered = admitted.clone();
        answered.metadata.creation_timestamp = None;
        assert_eq!(stored, answered);

        let b = SpiderIPPool::new(
            "b",
            "10.6.0.0/16".parse().unwrap(),
            ips!["10.6.168.173-10.6.168.175"],
        );
        let err = engine
            .admit(AnyObject::Pool(b.clone()), None)
            .await
            .unwrap_err()
            .to_string();
        let apply_err = engine
            .apply(AnyObject::Pool(b))
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(err, apply_err);
        assert!(err.contains(r#"overlap with SpiderIPPool "a""#), "{err}");

        // An update: the subnet is immutable.
        let stored: SpiderIPPool = engine.store().get_as(None, "a").await.unwrap().unwrap();
        let mut moved = stored.clone();
        moved.spec.subnet = "10.7.0.0/16".parse().unwrap();
        moved.spec.ips = ips!["10.7.168.171"];
        let err = engine
            .admit(
                AnyObject::Pool(moved),
                Some(AnyObject::Pool(stored.clone())),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.subnet") && err.contains("immutable"),
            "{err}"
        );
        let err = engine
            .admit(
                AnyObject::Pool(stored),
                Some(AnyObject::Subnet(seed_subnets().remove(0))),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("another kind"), "{err}");

        // Finalizers are the writer's: a live object gets Berth's added back, a terminating
        // one whose finalizer Berth removed (to let it go) keeps it removed.
        let stored: SpiderIPPool = engine.store().get_as(None, "a").await.unwrap().unwrap();
        let mut stripped = stored.clone();
        stripped.metadata.finalizers.clear();
        let finalizers_of = |o: AnyObject| match o {
            AnyObject::Pool(p) => p.metadata.finalizers,
            AnyObject::Subnet(s) => s.metadata.finalizers,
            _ => panic!("not a pool or subnet"),
        };
        let live = engine
            .admit(
                AnyObject::Pool(stripped.clone()),
                Some(AnyObject::Pool(stored.clone())),
            )
            .await
            .unwrap();
        assert_eq!(finalizers_of(live), [ipam_core::FINALIZER]);
        stripped.metadata.deletion_timestamp = Some("2026-12-06T00:00:00Z".into());
        let mut terminating = stored.clone();
        terminating.metadata.deletion_timestamp = stripped.metadata.deletion_timestamp.clone();
        let let_go = engine
            .admit(
                AnyObject::Pool(stripped.clone()),
                Some(AnyObject::Pool(terminating.clone())),
            )
            .await
            .unwrap();
        assert!(finalizers_of(let_go).is_empty());
        // A PUT reaches admission without `deletionTimestamp`; the old object has it.
        stripped.metadata.deletion_timestamp = None;
        let let_go = engine
            .admit(
                AnyObject::Pool(stripped),
                Some(AnyObject::Pool(terminating)),
            )
            .await
            .unwrap();
        assert!(finalizers_of(let_go).is_empty());
        let subnet: SpiderSubnet = engine
            .store()
            .get_as(None, "subnet-test-ens192")
            .await
            .unwrap()
            .unwrap();
        let mut going = subnet.clone();
        going.metadata.finalizers.clear();
        let mut old = subnet.clone();
        old.metadata.deletion_timestamp = Some("2026-12-06T00:00:00Z".into());
        let let_go = engine
            .admit(
                AnyObject::Subnet(going.clone()),
                Some(AnyObject::Subnet(old.clone())),
            )
            .await
            .unwrap();
        assert!(finalizers_of(let_go).is_empty());
        // Its spec, though, is frozen.
        going.spec.ips = ips!["10.6.168.171-10.6.168.190"];
        let err = engine
            .admit(AnyObject::Subnet(going), Some(AnyObject::Subnet(old)))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("terminating"), "{err}");
    });
}

/// Admission checks a pool that takes new IPs against the pools as they are, not as a lagging
/// listing shows them: two overlapping pools applied together (`kubectl apply` of one file)
/// must not both get in. An update that takes no new IPs, and an auto pool, may use the
/// listing.
#[test]
fn admission_sees_a_pool_created_a_moment_before_that_the_listing_lacks() {
    let rt = rt();
    let engine = Engine::new(FaultyStore::new(
        std::sync::Arc::new(MemStore::new()),
        0,
        Fault::Crash,
    ));
    rt.block_on(async {
        setup_seed(&engine).await;
        let before: Vec<SpiderIPPool> = engine.store().inner.list_as(None).await.unwrap();
        engine.store().list_instead(before);
        let a = SpiderIPPool::new(
            "a",
            "10.6.0.0/16".parse().unwrap(),
            ips!["10.6.168.171-10.6.168.173"],
        );
        // As on a cluster: the webhook admits it, then the API server stores it (no subnet
        // claim yet, which the controller makes later).
        let AnyObject::Pool(a) = engine.admit(AnyObject::Pool(a), None).await.unwrap() else {
            panic!("not a pool");
        };
        engine.store().create_as(&a).await.unwrap();
        let listed: Vec<SpiderIPPool> = engine.store().list_as(None).await.unwrap();
        assert!(listed.is_empty(), "the listing must lag for this test");

        let b = SpiderIPPool::new(
            "b",
            "10.6.0.0/16".parse().unwrap(),
            ips!["10.6.168.173-10.6.168.175"],
        );
        let err = engine
            .admit(AnyObject::Pool(b), None)
            .await
            .expect_err("b overlaps a, which the listing lacks")
            .to_string();
        assert!(err.contains(r#"overlap with SpiderIPPool "a""#), "{err}");

        // A nested subnet is refused the same way.
        let nested = SpiderIPPool::new(
            "nested",
            "10.6.168.0/24".parse().unwrap(),
            ips!["10.6.168.200"],
        );
        let err = engine
            .admit(AnyObject::Pool(nested), None)
            .await
            .expect_err("nested in a's subnet")
            .to_string();
        assert!(err.contains(r#"SpiderIPPool "a""#), "{err}");

        // An update that takes no new IPs reads the lagging listing (no current one), and
        // passes; one that adds an IP asks for a current listing.
        let current = || {
            engine
                .store()
                .current_listings
                .load(std::sync::atomic::Ordering::SeqCst)
        };
        let before = current();
        let stored: SpiderIPPool = engine.store().get_as(None, "a").await.unwrap().unwrap();
        let mut labelled = stored.clone();
        labelled.metadata.labels.insert("team".into(), "x".into());
        engine
            .admit(
                AnyObject::Pool(labelled),
                Some(AnyObject::Pool(stored.clone())),
            )
            .await
            .unwrap();
        assert_eq!(current(), before, "a relabelling listed the pools afresh");
        let mut grown = stored.clone();
        grown.spec.ips = ips!["10.6.168.171-10.6.168.174"];
        engine
            .admit(AnyObject::Pool(grown), Some(AnyObject::Pool(stored)))
            .await
            .unwrap();
        assert_eq!(current(), before + 1, "new IPs, no current listing");
    });
}

#[test]
fn reapplying_the_same_objects_changes_nothing() {
    let rt = rt();
    let engine = Engine::new(MemStore::new());
    rt.block_on(async {
        setup_seed(&engine).await;
        let app = seed_app(WorkloadKind::Deployment, "web", 2, "+1");
        engine.apply(any_workload(app.clone())).await.unwrap();
        let before: Vec<serde_json::Value> = engine
            .store()
            .list(Kind::SpiderIPPool, None, None)
            .await
            .unwrap();
        for s in seed_subnets() {
            assert_eq!(
                engine.apply(AnyObject::Subnet(s)).await.unwrap(),
                ipam_core::engine::Applied::Unchanged
            );
        }
        assert_eq!(
            engine.apply(any_workload(app)).await.unwrap(),
            ipam_core::engine::Applied::Unchanged
        );
        let after: Vec<serde_json::Value> = engine
            .store()
            .list(Kind::SpiderIPPool, None, None)
            .await
            .unwrap();
        assert_eq!(before, after);
    });
}

#[test]
fn dual_stack_nics_get_one_ip_per_family() {
    let rt = rt();
    let engine = Engine::new(MemStore::new());
    rt.block_on(async {
        setup_seed(&engine).await;
        let v6 = SpiderSubnet::new(
            "v6",
            "fd00:6::/64".parse().unwrap(),
            ips!["fd00:6::10-fd00:6::ff"],
            Some(ip("fd00:6::1")),
        );
        engine.apply(AnyObject::Subnet(v6)).await.unwrap();
        let mut app = seed_app(WorkloadKind::Deployment, "dual", 1, "+1");
        app.spec.template.metadata.annotations.insert(
            "ipam.spidernet.io/subnets".into(),
            r#"[{"interface":"eth0","ipv4":["subnet-test-ens192"],"ipv6":["v6"]}]"#.into(),
        );
        engine.apply(any_workload(app.clone())).await.unwrap();
        let got = engine
            .allocate(&request(&app, "d", "u", "c", &["eth0"]))
            .await
            .unwrap();
        let addrs: Vec<String> = got.nics[0]
            .ips
            .iter()
            .map(|i| i.address.to_string())
            .collect();
        assert_eq!(addrs, ["10.6.168.171/16", "fd00:6::10/64"]);
        assert_eq!(got.nics[0].ips[1].gateway, Some(ip("fd00:6::1")));
        assert!(
            pools(&engine)
                .await
                .keys()
                .any(|k| k.starts_with("auto6-dual-eth0-"))
        );
        check_quiescent(engine.store(), 1).await.unwrap();
    });
}

#[test]
fn release_of_unknown_containers_and_repeated_release_succeed() {
    let rt = rt();
    let engine = Engine::new(MemStore::new());
    rt.block_on(async {
        setup_seed(&engine).await;
        let r = engine
            .release(&release(None, "ghost", "u", "nope"))
            .await
            .unwrap();
        assert_eq!(r, Default::default());
        let app = seed_app(WorkloadKind::Deployment, "web", 1, "+1");
        engine.apply(any_workload(app.clone())).await.unwrap();
        engine
            .allocate(&request(&app, "w", "u", "c", &["eth0", "net1"]))
            .await
            .unwrap();
        assert_eq!(
            engine
                .release(&release(Some(&app), "w", "u", "c"))
                .await
                .unwrap()
                .ips
                .len(),
            2
        );
        assert_eq!(
            engine
                .release(&release(Some(&app), "w", "u", "c"))
                .await
                .unwrap()
                .ips
                .len(),
            0
        );
        check_quiescent(engine.store(), 1).await.unwrap();
    });
}

#[test]
fn concurrent_allocations_on_one_pool_are_batched_and_distinct() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let engine = std::sync::Arc::new(Engine::new(MemStore::new()));
    rt.block_on(async {
        let pool = SpiderIPPool::new("big", "10.2.0.0/16".parse().unwrap(), ips!["10.2.0.0/16"]);
        engine.apply(AnyObject::Pool(pool)).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..64 {
            let engine = engine.clone();
            tasks.push(tokio::spawn(async move {
                let req = ipam_core::engine::AllocateRequest {
                    pod: PodContext {
                        namespace: "default".into(),
                        name: format!("p{i}"),
                        annotations: annotations(&[(
                            "ipam.spidernet.io/ippool",
                            r#"{"ipv4":["big"]}"#,
                        )]),
                        ..Default::default()
                    },
                    pod_uid: format!("u{i}"),
                    container_id: format!("c{i}"),
                    nics: vec![NicRequest {
                        interface: "eth0".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                engine.allocate(&req).await.unwrap().nics[0].ips[0]
                    .address
                    .addr()
            }));
        }
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap());
        }
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 64);
        let p: SpiderIPPool = engine.store().get_as(None, "big").await.unwrap().unwrap();
        assert_eq!(p.allocated_count(), 64);
        check_invariants(engine.store()).await.unwrap();
    });
    let _ = IpFamily::V4;
    let _ = EngineConfig::default();
}

/// An engine as a cluster's node agent runs it: an ADD whose auto pools do not exist yet
/// waits up to 300 ms for another engine (the controller) to make them.
fn waiting_agent<S: Store>(store: S) -> Engine<S> {
    Engine::with_config(
        store,
        EngineConfig {
            auto_pool_wait: Some(std::time::Duration::from_millis(300)),
            ..Default::default()
        },
    )
}

/// A waiting ADD reads one by one only the pools the controller makes for its own
/// application: the pools of other applications made meanwhile it leaves to its listings.
/// (Every waiting ADD reading every new pool made most of the API server's pool reads in the
/// 1,000-pod bench.)
#[test]
fn a_waiting_add_reads_only_the_new_pools_of_its_own_application() {
    use ipam_core::{AppRef, Deployment};
    use std::time::Duration;
    rt().block_on(async {
        let (mem, controller, view) = store_and_faulty_view();
        let agent = waiting_agent(view.clone());
        setup_seed(&controller).await;
        let others: Vec<_> = (0..4)
            .map(|i| seed_app(WorkloadKind::Deployment, &format!("other-{i}"), 1, "+1"))
            .collect();
        let app = seed_app(WorkloadKind::Deployment, "web", 1, "+1");
        for a in others.iter().chain([&app]) {
            mem.create_as(&Deployment(a.clone())).await.unwrap();
        }
        let first = request(&app, "web-1", "u1", "c1", &["eth0", "net1"]);
        let waiting = agent.allocate(&first);
        let reconcile = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            for a in others.iter().chain([&app]) {
                controller.reconcile(&AppRef::of(a)).await.unwrap();
            }
        };
        let (allocated, ()) = tokio::join!(waiting, reconcile);
        assert_eq!(allocated.unwrap().nics.len(), 2);
        let reads = view.pool_reads();
        assert!(
            reads.iter().all(|name| name.contains("-web-")),
            "the waiting ADD read pools of other applications: {reads:?}"
        );
    });
}

/// A controller's engine on a [`FaultyStore`] view of a memory store with the seed subnets,
/// and `n` Deployments `app-0`.. of one replica (`+1`) stored, not yet reconciled.
async fn controller_with_apps(
    n: usize,
) -> (
    std::sync::Arc<ipam_core::store::MemStore>,
    Engine<std::sync::Arc<support::FaultyStore>>,
    std::sync::Arc<support::FaultyStore>,
    Vec<ipam_core::Workload>,
) {
    let (mem, _, view) = store_and_faulty_view();
    let controller = Engine::new(view.clone());
    setup_seed(&controller).await;
    let apps: Vec<_> = (0..n)
        .map(|i| seed_app(WorkloadKind::Deployment, &format!("app-{i}"), 1, "+1"))
        .collect();
    for a in &apps {
        mem.create_as(&ipam_core::Deployment(a.clone()))
            .await
            .unwrap();
    }
    (mem, controller, view, apps)
}

/// Reconciles of different applications run side by side (a controller with many new
/// Deployments), and their pools, carved from one subnet at the same moment, still get disjoint
/// IPs: a reconcile whose claim another took meanwhile carves again. Five applications of two
/// IPs each take the seed subnets' ten IPs exactly.
#[test]
fn side_by_side_reconciles_carve_disjoint_pools_from_one_subnet() {
    use ipam_core::{AppRef, SpiderIPPool, SpiderSubnet};
    use std::collections::BTreeMap;
    rt().block_on(async {
        let (mem, controller, view, apps) = controller_with_apps(5).await;
        view.yield_on_reads();
        let results = futures::future::join_all(
            apps.iter()
                .map(|a| async { controller.reconcile(&AppRef::of(a)).await }),
        )
        .await;
        for (a, r) in apps.iter().zip(results) {
            r.unwrap_or_else(|e| panic!("reconcile of {}: {e}", a.metadata.name));
        }
        let pools: Vec<SpiderIPPool> = mem.list_as(None).await.unwrap();
        assert_eq!(pools.len(), 10, "one pool per application and NIC");
        let subnets: Vec<SpiderSubnet> = mem.list_as(None).await.unwrap();
        let mut holders: BTreeMap<std::net::IpAddr, String> = BTreeMap::new();
        for p in &pools {
            assert_eq!(
                p.spec.ips.len(),
                2,
                "{} holds replicas + 1",
                p.metadata.name
            );
            for ip in p.spec.ips.iter() {
                if let Some(other) = holders.insert(ip, p.metadata.name.clone()) {
                    panic!("{ip} is in {other} and {}", p.metadata.name);
                }
            }
            let claims: Vec<_> = subnets
                .iter()
                .filter_map(|s| s.claims().get(&p.metadata.name).map(|c| c.ips.clone()))
                .collect();
            assert_eq!(
                claims,
                std::slice::from_ref(&p.spec.ips),
                "{}: its claim",
                p.metadata.name
            );
        }
    });
}

/// Reconciling every application (what GC does, every minute on a cluster) costs one listing
/// of each kind when every application's pools are what it wants, and still reconciles those
/// that are not: one scaled meanwhile grows, one deleted loses its pools.
#[test]
fn reconciling_every_application_reconciles_only_those_whose_pools_are_not_settled() {
    use ipam_core::{AppRef, Deployment, SpiderIPPool};
    use std::sync::atomic::Ordering;
    rt().block_on(async {
        let (mem, controller, view, apps) = controller_with_apps(3).await;
        for a in &apps {
            controller.reconcile(&AppRef::of(a)).await.unwrap();
        }
        let (reads, writes) = (
            view.reads.load(Ordering::SeqCst),
            view.writes.load(Ordering::SeqCst),
        );
        controller.reconcile_all().await.unwrap();
        let (reads, writes) = (
            view.reads.load(Ordering::SeqCst) - reads,
            view.writes.load(Ordering::SeqCst) - writes,
        );
        assert_eq!(writes, 0);
        // Pools, subnets, Deployments, StatefulSets, endpoints: one listing each.
        assert!(reads <= 5, "{reads} reads to find nothing to do");

        let mut scaled: Deployment = mem.get_as(Some("default"), "app-0").await.unwrap().unwrap();
        scaled.0.spec.replicas = Some(3);
        mem.update_as(&scaled).await.unwrap();
        let gone: Deployment = mem.get_as(Some("default"), "app-1").await.unwrap().unwrap();
        mem.delete_as(&gone).await.unwrap();
        controller.reconcile_all().await.unwrap();
        let pools: Vec<SpiderIPPool> = mem.list_as(None).await.unwrap();
        let sizes = |app: &str| -> Vec<u128> {
            pools
                .iter()
                .filter(|p| p.metadata.name.contains(&format!("-{app}-")))
                .map(|p| p.spec.ips.len())
                .collect()
        };
        assert_eq!(sizes("app-0"), [4, 4], "scaled to 3 replicas + 1");
        assert!(
            sizes("app-1").is_empty(),
            "the deleted application's pools are reclaimed"
        );
        assert_eq!(sizes("app-2"), [2, 2]);
    });
}

/// GC reads no endpoint for an IP whose holder lives: whether a StatefulSet keeps an IP
/// matters only when its holder is gone. (Asked of every record, it made most of a
/// controller's requests in the 1,000-pod bench.) A dead holder's IP is still freed.
#[test]
fn gc_reads_endpoints_only_for_the_ips_of_dead_holders() {
    use std::sync::atomic::Ordering;
    rt().block_on(async {
        let (_, _, view) = store_and_faulty_view();
        let engine = Engine::new(view.clone());
        setup_seed(&engine).await;
        let app = seed_app(WorkloadKind::Deployment, "web", 3, "+1");
        engine.apply(any_workload(app.clone())).await.unwrap();
        let live = LiveSet::default();
        for i in 0..3 {
            let (pod, container) = (format!("web-{i}"), format!("c{i}"));
            let req = request(&app, &pod, &format!("u{i}"), &container, &["eth0", "net1"]);
            engine.allocate(&req).await.unwrap();
            live.add(&container);
        }
        let before = view.endpoint_reads.load(Ordering::SeqCst);
        let report = engine.gc(&live).await.unwrap();
        assert!(report.released.is_empty());
        assert_eq!(
            view.endpoint_reads.load(Ordering::SeqCst),
            before,
            "six live records"
        );

        live.remove("c0");
        let report = engine.gc(&live).await.unwrap();
        assert_eq!(report.released.len(), 2, "web-0's two IPs: {report:?}");
        let reads = view.endpoint_reads.load(Ordering::SeqCst) - before;
        assert!(reads <= 2, "{reads} endpoint reads for two dead records");
    });
}

/// With `auto_pool_wait` (a cluster's node agent), a pod whose auto pools do not exist yet
/// waits for another engine (the controller) to make them, on a watch; without one, the
/// allocation fails in time with a retryable error and creates nothing.
#[test]
fn an_agent_that_waits_for_auto_pools_gets_them_from_the_controller() {
    use ipam_core::{AppRef, Deployment};
    use std::sync::Arc;
    use std::time::Duration;
    let rt = rt();
    rt.block_on(async {
        let store = Arc::new(MemStore::new());
        let controller = Engine::new(store.clone());
        let agent = waiting_agent(store.clone());
        setup_seed(&controller).await;
        // The Deployment as a cluster stores it: nobody has sized its pools yet.
        let app = seed_app(WorkloadKind::Deployment, "web", 1, "+1");
        store.create_as(&Deployment(app.clone())).await.unwrap();

        let err = agent
            .allocate(&request(&app, "web-1", "u1", "c1", &["eth0", "net1"]))
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "not retryable: {err}");
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(e) = source {
            message.push_str(&format!(": {e}"));
            source = e.source();
        }
        assert!(message.contains("berth controller"), "{message}");
        let stored = |s: &Arc<MemStore>| {
            let s = s.clone();
            async move { s.list_as::<SpiderIPPool>(None).await.unwrap().len() }
        };
        assert_eq!(stored(&store).await, 0, "the agent created a pool");

        let second = request(&app, "web-1", "u1", "c2", &["eth0", "net1"]);
        let waiting = agent.allocate(&second);
        let reconcile = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            controller.reconcile(&AppRef::of(&app)).await
        };
        let (allocated, reconciled) = tokio::join!(waiting, reconcile);
        reconciled.unwrap();
        let allocation = allocated.unwrap();
        assert_eq!(allocation.nics.len(), 2);
        assert_eq!(stored(&store).await, 2);

        // A scale to 3 the controller has not carried out: the pool (1 + 1) serves one more
        // pod; the next waits for the growth, or fails as exhausted once the wait is over.
        let mut scaled: Deployment = store.get_as(Some("default"), "web").await.unwrap().unwrap();
        scaled.0.spec.replicas = Some(3);
        store.update_as(&scaled).await.unwrap();
        agent
            .allocate(&request(&app, "web-2", "u2", "c3", &["eth0", "net1"]))
            .await
            .unwrap();
        let err = agent
            .allocate(&request(&app, "web-3", "u3", "c4", &["eth0", "net1"]))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("exhausted"), "{err}");
        let third = request(&app, "web-3", "u3", "c5", &["eth0", "net1"]);
        let (allocated, reconciled) = tokio::join!(agent.allocate(&third), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            controller.reconcile(&AppRef::of(&app)).await
        });
        reconciled.unwrap();
        assert_eq!(allocated.unwrap().nics.len(), 2);
    });
}

/// A pool the watch has shown is selected even while the listings lag and do not show it yet,
/// and a pool the watch has shown deleted is not, while the listings still show it: the
/// engine's cache mends a listing with what it knows (a cluster agent lists from a watch of its
/// own, which may lag the watch that tells its cache what changed).
#[test]
fn selection_sees_pools_a_lagging_listing_lacks_and_not_those_it_still_shows() {
    let rt = rt();
    rt.block_on(async {
        let (mem, admin, faulty) = store_and_faulty_view();
        let agent = Engine::new(faulty.clone());
        let pool = |name: &str, octet: u8| {
            SpiderIPPool::new(
                name,
                format!("10.{octet}.0.0/24").parse().unwrap(),
                ips![format!("10.{octet}.0.10-10.{octet}.0.14").as_str()],
            )
        };
        admin.apply(AnyObject::Pool(pool("p", 1))).await.unwrap();
        let mut app = seed_app(WorkloadKind::Deployment, "x", 1, "+1");
        let uses = |pool: &str| {
            annotations(&[(
                "ipam.spidernet.io/ippool",
                &format!(r#"{{"ipv4":["{pool}"]}}"#),
            )])
        };
        app.spec.template.metadata.annotations = uses("p");
        // The agent's cache lists the pools once.
        agent
            .allocate(&request(&app, "a", "ua", "ca", &["eth0"]))
            .await
            .unwrap();
        // A new pool, which the listings do not show yet.
        admin.apply(AnyObject::Pool(pool("q", 2))).await.unwrap();
        faulty.hide_from_lists(["q".to_string()]);
        app.spec.template.metadata.annotations = uses("q");
        let got = agent
            .allocate(&request(&app, "b", "ub", "cb", &["eth0"]))
            .await
            .expect("the pool the watch showed is selected");
        assert_eq!(got.nics[0].ips[0].pool, "q");
        // A pool deleted while the listings still show it.
        admin.apply(AnyObject::Pool(pool("r", 3))).await.unwrap();
        let listed_before = mem.list_as::<SpiderIPPool>(None).await.unwrap();
        admin
            .delete(&ObjectKey::cluster(Kind::SpiderIPPool, "r"))
            .await
            .unwrap();
        faulty.list_instead(listed_before);
        app.spec.template.metadata.annotations = uses("r");
        let uses_r = request(&app, "c", "uc", "cc", &["eth0"]);
        for listing in ["the first", "the next"] {
            let err = agent.allocate(&uses_r).await.unwrap_err().to_string();
            assert!(
                err.contains("\"r\", which does not exist"),
                "{listing} listing after the deletion: {err}"
            );
            // Another pool's creation makes the cache list again.
            admin.apply(AnyObject::Pool(pool("s", 4))).await.unwrap();
        }
    });
}

/// A pool the engine's cache held when an ADD looked for its auto pools is selected, even if a
/// listing made in the middle of the ADD does not show it yet: a cluster agent's listings come
/// from a watch of their own, which may lag the reads that filled the cache. (The CI-sized
/// cluster run's fault phase failed so: "the auto pool ... does not exist yet", for the second
/// NIC, after a conflict on the first NIC's pool had sent the cache back to the listing.)
#[test]
fn an_add_selects_the_pools_it_saw_even_when_a_later_listing_lags() {
    use ipam_core::{AppRef, Deployment};
    let rt = rt();
    rt.block_on(async {
        let (mem, controller, faulty) = store_and_faulty_view();
        let agent = waiting_agent(faulty.clone());
        setup_seed(&controller).await;
        let app = seed_app(WorkloadKind::Deployment, "web", 2, "+1");
        mem.create_as(&Deployment(app.clone())).await.unwrap();
        controller.reconcile(&AppRef::of(&app)).await.unwrap();
        // The agent's cache lists the two auto pools and holds them.
        agent
            .allocate(&request(&app, "web-1", "u1", "c1", &["eth0", "net1"]))
            .await
            .unwrap();
        let pools: Vec<String> = mem
            .list_as::<SpiderIPPool>(None)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.metadata.name)
            .filter(|n| n.starts_with("auto"))
            .collect();
        assert_eq!(pools.len(), 2, "{pools:?}");
        // From now on listings lag behind, and the first NIC's pool write conflicts: the
        // cache drops it and lists again before the second NIC's selection.
        faulty.hide_from_lists(pools);
        faulty.conflict_next_pool_write();
        let allocation = agent
            .allocate(&request(&app, "web-2", "u2", "c2", &["eth0", "net1"]))
            .await
            .expect("the auto pools the ADD saw are selected");
        assert_eq!(allocation.nics.len(), 2);
        check_invariants(&*mem).await.unwrap();
    });
}

/// The pools a waiting ADD saw in a listing are what its selection picks from, even while the
/// watch that keeps the engine's cache lags behind the listing (a cluster's agent: its
/// listings come from one watch, its cache's news from another). The ADD must not fail for a
/// pool it has just seen.
#[test]
fn a_waiting_add_selects_from_the_pools_it_saw_while_the_cache_lags() {
    use ipam_core::{AppRef, Deployment};
    use std::sync::Arc;
    let rt = rt();
    rt.block_on(async {
        let mem = Arc::new(MemStore::new());
        let controller = Engine::new(mem.clone());
        let lagging = Arc::new(FaultyStore::lagging_watch(mem.clone()));
        let agent = waiting_agent(lagging.clone());
        setup_seed(&controller).await;
        let app = seed_app(WorkloadKind::Deployment, "web", 2, "+1");
        mem.create_as(&Deployment(app.clone())).await.unwrap();
        // The agent lists the pools (none yet) and keeps that listing as complete.
        let err = agent
            .allocate(&request(&app, "web-1", "u1", "c1", &["eth0", "net1"]))
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err}");
        // The controller makes them; the agent's watch has not told its cache yet.
        controller.reconcile(&AppRef::of(&app)).await.unwrap();
        let allocation = agent
            .allocate(&request(&app, "web-1", "u1", "c2", &["eth0", "net1"]))
            .await
            .expect("the pools the wait listed are selected");
        assert_eq!(allocation.nics.len(), 2);
        lagging.catch_up();
        let allocation = agent
            .allocate(&request(&app, "web-2", "u2", "c3", &["eth0", "net1"]))
            .await
            .unwrap();
        assert_eq!(allocation.nics.len(), 2);
        check_invariants(&*mem).await.unwrap();
    });
}

/// Liveness by pod uid, as the controller's is.
#[derive(Default)]
struct LiveUids(std::sync::Mutex<std::collections::HashSet<String>>);

#[async_trait::async_trait]
impl ipam_core::engine::Liveness for LiveUids {
    async fn alive(&self, record: &ipam_core::IpRecord) -> Result<bool, Error> {
        Ok(self.0.lock().unwrap().contains(&record.pod_uid))
    }
}

/// The controller reserves the IPs of the pods it sees created with one write per pool for
/// all of them; an ADD that finds its pod's records writes only the endpoint, and its retry,
/// its other NIC's ADD and its next sandbox write nothing. A DEL of a sandbox the endpoint no
/// longer names frees nothing; the current one's frees all. A reservation after the ADD
/// finds the ADD's record. GC frees the reservation of a pod that is gone and keeps a live
/// one's.
#[test]
fn reserved_ips_cost_a_write_per_pool_and_their_adds_write_only_the_endpoint() {
    use ipam_core::engine::Reservation;
    use std::sync::atomic::Ordering;
    rt().block_on(async {
        let mem = std::sync::Arc::new(MemStore::new());
        let view = || std::sync::Arc::new(FaultyStore::new(mem.clone(), 0, Fault::Crash));
        let (controller_view, agent_view) = (view(), view());
        let controller = Engine::new(controller_view.clone());
        let agent = Engine::new(agent_view.clone());
        // A pool per NIC, which the pods' `ippools` annotation names.
        for (name, subnet, range) in [
            ("eth0-pool", "10.6.0.0/16", "10.6.168.171-10.6.168.180"),
            ("net1-pool", "10.7.0.0/16", "10.7.168.171-10.7.168.180"),
        ] {
            let pool = SpiderIPPool::new(name, subnet.parse().unwrap(), ips![range]);
            controller.apply(AnyObject::Pool(pool)).await.unwrap();
        }
        let app = web_with_ippools(
            4,
            r#"[{"interface":"eth0","ipv4":["eth0-pool"]},{"interface":"net1","ipv4":["net1-pool"]}]"#,
        );
        let add = |pod: usize, container: &str, nics: &[&str]| {
            request(
                &app,
                &format!("web-{pod}"),
                &format!("u{pod}"),
                container,
                nics,
            )
        };
        let reservation = |pod: usize| Reservation {
            pod: add(pod, "", &[]).pod,
            pod_uid: format!("u{pod}"),
        };
        let pods: Vec<Reservation> = (0..4).map(reservation).collect();
        let writes = |v: &FaultyStore| v.writes.load(Ordering::SeqCst);

        controller.apply(any_workload(app.clone())).await.unwrap();
        let before = writes(&controller_view);
        let reserved = controller.reserve(&pods).await.unwrap();
        assert_eq!(
            writes(&controller_view) - before,
            2,
            "one write per pool for four pods"
        );
        assert_eq!(reserved.ips.len(), 8, "{reserved:?}");
        let again = controller.reserve(&pods).await.unwrap();
        assert_eq!(
            again.ips, reserved.ips,
            "reserving again finds the same IPs"
        );
        assert_eq!(writes(&controller_view) - before, 2, "and writes nothing");
        let reserved_ip = |pod: &str, pool_prefix: &str| {
            reserved
                .ips
                .iter()
                .find(|(p, ip)| p == pod && ip.pool.contains(pool_prefix))
                .map(|(_, ip)| ip.ip)
                .unwrap()
        };

        let before = writes(&agent_view);
        let got = agent
            .allocate(&add(0, "c0", &["eth0", "net1"]))
            .await
            .unwrap();
        assert_eq!(
            writes(&agent_view) - before,
            1,
            "the ADD writes only the endpoint"
        );
        assert_eq!(
            got.nics[0].ips[0].address.addr(),
            reserved_ip("default/web-0", "eth0")
        );
        assert_eq!(
            got.nics[1].ips[0].address.addr(),
            reserved_ip("default/web-0", "net1")
        );
        let before = writes(&agent_view);
        assert_eq!(
            agent
                .allocate(&add(0, "c0", &["eth0", "net1"]))
                .await
                .unwrap(),
            got
        );
        let net1 = agent.allocate(&add(0, "c0", &["net1"])).await.unwrap();
        assert_eq!(net1.nics[0].ips[0].address, got.nics[1].ips[0].address);
        assert_eq!(
            writes(&agent_view) - before,
            0,
            "a retry and the other NIC's ADD write nothing"
        );

        // A new sandbox of pod 1 takes the reserved IPs too; the old sandbox's late DEL frees
        // nothing, the new one's frees both.
        let first = agent
            .allocate(&add(1, "c1", &["eth0", "net1"]))
            .await
            .unwrap();
        let before = writes(&agent_view);
        let second = agent
            .allocate(&add(1, "c1b", &["eth0", "net1"]))
            .await
            .unwrap();
        assert_eq!(second, first);
        assert_eq!(writes(&agent_view) - before, 1, "the endpoint only");
        let stale = agent
            .release(&release(Some(&app), "web-1", "u1", "c1"))
            .await
            .unwrap();
        assert!(stale.ips.is_empty(), "{stale:?}");
        let freed = agent
            .release(&release(Some(&app), "web-1", "u1", "c1b"))
            .await
            .unwrap();
        assert_eq!(freed.ips.len(), 2, "{freed:?}");
        check_invariants(&*mem).await.unwrap();

        // An ADD before the reservation: the reservation finds its records.
        let early_add = agent
            .allocate(&add(4, "c4", &["eth0", "net1"]))
            .await
            .unwrap();
        let before = writes(&controller_view);
        let late = controller.reserve(&[reservation(4)]).await.unwrap();
        assert_eq!(writes(&controller_view) - before, 0);
        let mut late_ips: Vec<IpAddr> = late.ips.iter().map(|(_, ip)| ip.ip).collect();
        late_ips.sort();
        let mut added: Vec<IpAddr> = early_add
            .nics
            .iter()
            .map(|n| n.ips[0].address.addr())
            .collect();
        added.sort();
        assert_eq!(late_ips, added);

        // GC: pods 2 and 3 never ran; 3 is gone, 2 lives.
        let live = LiveUids::default();
        for uid in ["u0", "u2", "u4"] {
            live.0.lock().unwrap().insert(uid.to_string());
        }
        let report = controller.gc(&live).await.unwrap();
        let mut freed: Vec<&str> = report.released.iter().map(|r| r.holder.as_str()).collect();
        freed.sort();
        assert_eq!(freed, ["default/web-3", "default/web-3"], "{report:?}");
        let records = controller.records().await.unwrap();
        let holders: std::collections::BTreeSet<&str> = records
            .values()
            .flat_map(|r| r.values().map(|h| h.pod.as_str()))
            .collect();
        assert_eq!(
            holders.into_iter().collect::<Vec<_>>(),
            ["default/web-0", "default/web-2", "default/web-4"]
        );
        check_invariants(&*mem).await.unwrap();
    });
}

/// Nothing is reserved where the node could pick another pool than the controller: a
/// StatefulSet's pods (their names may keep IPs), a pool with node affinity, or a NIC whose
/// annotation names two pools. Nor in auto pools (see `engine::reserve` on why).
#[test]
fn reservations_skip_pods_whose_pool_the_node_decides() {
    use ipam_core::engine::Reservation;
    rt().block_on(async {
        let engine = Engine::new(MemStore::new());
        setup_seed(&engine).await;
        let sts = seed_app(WorkloadKind::StatefulSet, "db", 2, "+1");
        engine.apply(any_workload(sts.clone())).await.unwrap();
        let web = seed_app(WorkloadKind::Deployment, "web", 2, "+1");
        engine.apply(any_workload(web.clone())).await.unwrap();
        let mut near = SpiderIPPool::new(
            "near",
            "10.2.0.0/24".parse().unwrap(),
            ips!["10.2.0.10-10.2.0.20"],
        );
        near.spec.node_name = vec!["node1".into()];
        engine.apply(AnyObject::Pool(near)).await.unwrap();
        // A namespace affinity that the controller's context (no namespace labels) passes:
        // the agent's, with the labels, might not.
        let mut any_ns = SpiderIPPool::new(
            "any-ns",
            "10.4.0.0/24".parse().unwrap(),
            ips!["10.4.0.10-10.4.0.20"],
        );
        any_ns.spec.namespace_affinity = Some(ipam_core::LabelSelector::default());
        engine.apply(AnyObject::Pool(any_ns)).await.unwrap();
        for name in ["a", "b"] {
            let p = SpiderIPPool::new(
                name,
                "10.3.0.0/24".parse().unwrap(),
                ips![if name == "a" {
                    "10.3.0.10-10.3.0.14"
                } else {
                    "10.3.0.15-10.3.0.19"
                }],
            );
            engine.apply(AnyObject::Pool(p)).await.unwrap();
        }
        let pod = |name: &str, annotations: BTreeMap<String, String>| Reservation {
            pod: PodContext {
                namespace: "default".into(),
                name: name.into(),
                annotations,
                app: Some(ipam_core::AppRef::apps_v1(
                    WorkloadKind::Deployment,
                    "default",
                    "x",
                )),
                ..Default::default()
            },
            pod_uid: format!("uid-{name}"),
        };
        let ippools = |v: &str| annotations(&[("ipam.spidernet.io/ippools", v)]);
        let one_pool = r#"[{"interface":"eth0","ipv4":["a"]}]"#;
        // A StatefulSet whose pods name one pool, as the pod that is reserved does.
        let sts_one = ipam_core::Workload::new(
            WorkloadKind::StatefulSet,
            "default",
            "db1",
            1,
            ippools(one_pool),
        );
        let pods = vec![
            Reservation {
                pod: request(&sts, "db-0", "u", "", &[]).pod,
                pod_uid: "u".into(),
            },
            Reservation {
                pod: request(&sts_one, "db1-0", "u1", "", &[]).pod,
                pod_uid: "u1".into(),
            },
            pod(
                "any-ns",
                ippools(r#"[{"interface":"eth0","ipv4":["any-ns"]}]"#),
            ),
            Reservation {
                pod: request(&web, "web-0", "u-web", "", &[]).pod,
                pod_uid: "u-web".into(),
            },
            pod("near", ippools(r#"[{"interface":"eth0","ipv4":["near"]}]"#)),
            pod("two", ippools(r#"[{"interface":"eth0","ipv4":["a","b"]}]"#)),
            pod("one", ippools(one_pool)),
        ];
        let reserved = engine.reserve(&pods).await.unwrap();
        let who: Vec<&str> = reserved.ips.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(who, ["default/one"], "{reserved:?}");
    });
}

/// A Deployment `default/web` of `replicas` whose pods' `ippools` annotation is `ippools`.
fn web_with_ippools(replicas: i32, ippools: &str) -> ipam_core::Workload {
    ipam_core::Workload::new(
        WorkloadKind::Deployment,
        "default",
        "web",
        replicas,
        annotations(&[("ipam.spidernet.io/ippools", ippools)]),
    )
}

/// An engine on a memory store that holds one pool, `name`, of 10.2.0.10-10.2.0.20.
async fn engine_with_pool(name: &str) -> Engine<MemStore> {
    let engine = Engine::new(MemStore::new());
    let pool = SpiderIPPool::new(
        name,
        "10.2.0.0/24".parse().unwrap(),
        ips!["10.2.0.10-10.2.0.20"],
    );
    engine.apply(AnyObject::Pool(pool)).await.unwrap();
    engine
}

/// Rewrites the records of `pool` with `change`, as another writer (Spiderpool) would.
async fn rewrite_records(
    engine: &Engine<MemStore>,
    pool: &str,
    change: impl FnOnce(&mut BTreeMap<IpAddr, ipam_core::IpRecord>),
) {
    let mut pool: SpiderIPPool = engine.store().get_as(None, pool).await.unwrap().unwrap();
    let mut records = pool.records();
    change(&mut records);
    pool.set_records(records);
    engine.store().update_status_as(&pool).await.unwrap();
}

/// Records that Spiderpool wrote name no container. GC asks whether their pod lives, as it
/// does for Berth's own, and frees only those of pods that are gone. (It took every such
/// record for dead: the first GC after moving a cluster from Spiderpool freed the IPs of
/// its running pods, for new pods to take.)
#[test]
fn gc_keeps_the_spiderpool_records_of_live_pods() {
    rt().block_on(async {
        let engine = engine_with_pool("migrated").await;
        let spiderpools = |pod: &str, uid: &str| ipam_core::IpRecord {
            pod: format!("default/{pod}"),
            pod_uid: uid.into(),
            container_id: None,
            interface: None,
            network: None,
            netns: None,
        };
        rewrite_records(&engine, "migrated", |records| {
            records.insert(ip("10.2.0.10"), spiderpools("live", "u-live"));
            records.insert(ip("10.2.0.11"), spiderpools("gone", "u-gone"));
        })
        .await;
        let live = LiveUids::default();
        live.0.lock().unwrap().insert("u-live".to_string());
        let report = engine.gc(&live).await.unwrap();
        let freed: Vec<(&str, IpAddr)> = report
            .released
            .iter()
            .map(|r| (r.holder.as_str(), r.ip))
            .collect();
        assert_eq!(freed, [("default/gone", ip("10.2.0.11"))]);
        let records = engine.records().await.unwrap();
        assert_eq!(
            records["migrated"].keys().copied().collect::<Vec<_>>(),
            [ip("10.2.0.10")]
        );
        check_invariants(engine.store()).await.unwrap();
    });
}

/// A late DEL of an old sandbox frees only its own container's records, never a record
/// without a container (reserved, or Spiderpool's) that the sandbox running now took: here
/// the old sandbox's net3 shares a pool with the pod's eth0, so the DEL does look into it.
#[test]
fn a_late_del_of_an_old_sandbox_leaves_the_records_without_a_container() {
    rt().block_on(async {
        let engine = engine_with_pool("x").await;
        let app = web_with_ippools(
            1,
            r#"[{"interface":"eth0","ipv4":["x"]},{"interface":"net3","ipv4":["x"]}]"#,
        );
        engine.apply(any_workload(app.clone())).await.unwrap();
        let got = engine
            .allocate(&request(&app, "web-0", "u0", "c1", &["eth0", "net3"]))
            .await
            .unwrap();
        let (eth0, net3) = (
            got.nics[0].ips[0].address.addr(),
            got.nics[1].ips[0].address.addr(),
        );
        // eth0's record loses its container, as a reservation or Spiderpool leaves it.
        rewrite_records(&engine, "x", |records| {
            records.get_mut(&eth0).unwrap().container_id = None;
        })
        .await;
        // The next sandbox's ADD of eth0 takes it as it is; then the first one's late DEL.
        let second = engine
            .allocate(&request(&app, "web-0", "u0", "c2", &["eth0"]))
            .await
            .unwrap();
        assert_eq!(second.nics[0].ips[0].address.addr(), eth0);
        let late = engine
            .release(&release(Some(&app), "web-0", "u0", "c1"))
            .await
            .unwrap();
        let freed: Vec<IpAddr> = late.ips.iter().map(|p| p.ip).collect();
        assert_eq!(freed, [net3], "only the old sandbox's own IP");
        let records = engine.records().await.unwrap();
        assert!(records["x"].contains_key(&eth0), "{records:?}");
        check_invariants(engine.store()).await.unwrap();
    });
}

/// A StatefulSet pod whose name keeps its IPs, back under the same uid in a new sandbox, gets
/// its kept records stamped with the new container: a record without a container is what a
/// scale-down frees (`Matcher::Detached`), so its running pod must not be left with one.
#[test]
fn a_statefulset_pods_new_sandbox_stamps_its_kept_records() {
    rt().block_on(async {
        let engine = Engine::new(MemStore::new());
        setup_seed(&engine).await;
        let sts = seed_app(WorkloadKind::StatefulSet, "db", 2, "+1");
        engine.apply(any_workload(sts.clone())).await.unwrap();
        let nics = ["eth0", "net1"];
        let first = engine
            .allocate(&request(&sts, "db-0", "u0", "c1", &nics))
            .await
            .unwrap();
        let kept = engine
            .release(&release(Some(&sts), "db-0", "u0", "c1"))
            .await
            .unwrap();
        assert_eq!(kept.kept_for_statefulset.len(), 2, "{kept:?}");
        let containers = || async {
            let records = engine.records().await.unwrap();
            records
                .values()
                .flat_map(|r| r.values().map(|h| h.container_id.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(containers().await, [None, None], "detached");
        let again = engine
            .allocate(&request(&sts, "db-0", "u0", "c2", &nics))
            .await
            .unwrap();
        assert_eq!(again, first);
        let c2 = Some("c2".to_string());
        assert_eq!(containers().await, [c2.clone(), c2]);
        check_invariants(engine.store()).await.unwrap();
    });
}

/// A pod's next sandbox's ADD and its old sandbox's DEL, side by side (every read lets the
/// other run first, as a round trip to an API server does, and the DEL starts after a few
/// turns more each time), take turns: whichever goes first, every IP the ADD answers with is
/// recorded for the pod. Side by side without turns, the DEL could free the reserved IP that
/// the ADD had just taken as it was, and the ADD answered with a free IP.
#[test]
fn a_sandboxs_add_and_the_old_sandboxs_del_side_by_side_leave_the_add_its_ips() {
    use ipam_core::engine::Reservation;
    rt().block_on(async {
        for delay in 0..24 {
            let mem = std::sync::Arc::new(MemStore::new());
            let view = std::sync::Arc::new(FaultyStore::new(mem.clone(), 0, Fault::Crash));
            let engine = Engine::new(view.clone());
            let pool = SpiderIPPool::new(
                "x",
                "10.2.0.0/24".parse().unwrap(),
                ips!["10.2.0.10-10.2.0.20"],
            );
            engine.apply(AnyObject::Pool(pool)).await.unwrap();
            let app = web_with_ippools(1, r#"[{"interface":"eth0","ipv4":["x"]}]"#);
            engine.apply(any_workload(app.clone())).await.unwrap();
            engine
                .reserve(&[Reservation {
                    pod: request(&app, "web-0", "u0", "", &[]).pod,
                    pod_uid: "u0".into(),
                }])
                .await
                .unwrap();
            engine
                .allocate(&request(&app, "web-0", "u0", "c1", &["eth0"]))
                .await
                .unwrap();
            view.yield_on_reads();
            let next = request(&app, "web-0", "u0", "c2", &["eth0"]);
            let old = release(Some(&app), "web-0", "u0", "c1");
            let late_del = async {
                for _ in 0..delay {
                    tokio::task::yield_now().await;
                }
                engine.release(&old).await
            };
            let (added, _) = tokio::join!(engine.allocate(&next), late_del);
            let ip = added.unwrap().nics[0].ips[0].address.addr();
            let records = engine.records().await.unwrap();
            let holder = records["x"].get(&ip).map(|r| r.pod.as_str());
            assert_eq!(
                holder,
                Some("default/web-0"),
                "DEL after {delay} turns: {records:?}"
            );
            check_invariants(&*mem).await.unwrap();
        }
    });
}
