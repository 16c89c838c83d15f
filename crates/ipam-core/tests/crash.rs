//! Crash safety: a script of everyday operations runs on a store that fails its N-th write (and
//! every write after it, as a dead process would), for every N, once with the write lost and
//! once with the write done but its acknowledgement lost. At the crash no IP may have two
//! holders; after a restart, a retry of the interrupted operation and the rest of the script,
//! and GC, every invariant holds and the outcome is the one of a run without crash.

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipam_core::engine::{AnyObject, Engine};
use ipam_core::store::{MemStore, Store, TypedStore};
use ipam_core::{Error, Kind, ObjectKey, SpiderIPPool, Workload, WorkloadKind, ips};
use support::*;

#[derive(Debug, Clone)]
enum Step {
    Subnets,
    Apply(Workload),
    Scale(WorkloadKind, &'static str, u32),
    Add(Workload, &'static str, &'static str),
    Del(Workload, &'static str, &'static str),
    ManualPool,
    Delete(Kind, &'static str),
    Gc,
}

fn web(replicas: i32) -> Workload {
    seed_app(WorkloadKind::Deployment, "web", replicas, "+1")
}

fn db() -> Workload {
    seed_app(WorkloadKind::StatefulSet, "db", 1, "+1")
}

fn bare() -> Workload {
    let mut w = seed_app(WorkloadKind::Deployment, "bare", 1, "+1");
    w.spec.template.metadata.annotations =
        annotations(&[("ipam.spidernet.io/ippool", r#"{"ipv4":["manual"]}"#)]);
    w
}

fn script() -> Vec<Step> {
    vec![
        Step::Subnets,
        Step::Apply(web(2)),
        Step::Apply(db()),
        Step::Add(web(2), "web-a", "ca"),
        Step::Add(web(2), "web-b", "cb"),
        Step::Add(db(), "db-0", "cd1"),
        Step::Scale(WorkloadKind::Deployment, "web", 3),
        Step::Del(web(3), "web-a", "ca"),
        Step::Del(db(), "db-0", "cd1"),
        Step::Add(db(), "db-0", "cd2"),
        Step::Add(web(3), "web-c", "cc"),
        Step::Scale(WorkloadKind::Deployment, "web", 1),
        Step::ManualPool,
        Step::Add(bare(), "bare-0", "cm"),
        Step::Delete(Kind::Deployment, "web"),
        Step::Del(web(1), "web-b", "cb"),
        Step::Gc,
    ]
}

/// Containers alive at the end of the script (web-c is never deleted: it died).
const ALIVE: [&str; 2] = ["cd2", "cm"];

async fn run_step<S: Store>(
    engine: &Engine<S>,
    live: &LiveSet,
    step: &Step,
    retry: bool,
) -> Result<(), Error> {
    match step {
        Step::Subnets => {
            for s in seed_subnets() {
                engine.apply(AnyObject::Subnet(s)).await?;
            }
        }
        Step::Apply(w) => {
            engine.apply(any_workload(w.clone())).await?;
        }
        Step::Scale(kind, name, n) => engine.scale(*kind, "default", name, *n).await?,
        Step::Add(w, pod, c) => {
            let uid = format!("uid-{c}");
            engine
                .allocate(&request(w, pod, &uid, c, &["eth0", "net1"]))
                .await?;
        }
        Step::Del(w, pod, c) => {
            engine
                .release(&release(Some(w), pod, &format!("uid-{c}"), c))
                .await?;
        }
        Step::ManualPool => {
            let p = SpiderIPPool::new(
                "manual",
                "10.6.0.0/16".parse().unwrap(),
                ips!["10.6.168.179-10.6.168.180"],
            );
            engine.apply(AnyObject::Pool(p)).await?;
        }
        Step::Delete(kind, name) => match engine
            .delete(&ObjectKey::namespaced(*kind, "default", *name))
            .await
        {
            Err(Error::NotFound(_)) if retry => {}
            other => other?,
        },
        Step::Gc => {
            engine.gc(live).await?;
        }
    }
    Ok(())
}

fn final_live() -> LiveSet {
    let live = LiveSet::default();
    for c in ALIVE {
        live.add(c);
    }
    live
}

/// Per pool (named without its uid suffix): its size, its allocated count, its holders.
type Outcome = BTreeMap<String, (u128, usize, Vec<String>)>;

/// What the outcome looks like, independent of which free IP round robin picked.
async fn outcome(store: &impl Store) -> Outcome {
    let pools: Vec<SpiderIPPool> = store.list_as(None).await.unwrap();
    pools
        .into_iter()
        .map(|p| {
            let name = p
                .metadata
                .name
                .rsplit_once('-')
                .map_or(p.metadata.name.clone(), |(a, _)| a.to_string());
            let mut holders: Vec<String> = p.records().values().map(|r| r.pod.clone()).collect();
            holders.sort();
            (name, (p.spec.ips.len(), p.allocated_count(), holders))
        })
        .collect()
}

/// The IPs db-0 holds (its StatefulSet keeps them across the restart).
async fn db0_ips(store: &impl Store) -> Vec<IpAddr> {
    let pools: Vec<SpiderIPPool> = store.list_as(None).await.unwrap();
    let mut v: Vec<IpAddr> = pools
        .iter()
        .flat_map(|p| {
            p.records()
                .into_iter()
                .filter(|(_, r)| r.pod == "default/db-0")
                .map(|(ip, _)| ip)
        })
        .collect();
    v.sort();
    v
}

fn clean_run() -> (usize, Outcome) {
    rt().block_on(async {
        let inner = Arc::new(MemStore::new());
        let store = FaultyStore::new(inner.clone(), 0, Fault::Crash);
        let engine = Engine::new(store);
        let live = final_live();
        for step in script() {
            run_step(&engine, &live, &step, false).await.unwrap();
        }
        check_quiescent(inner.as_ref(), 1).await.unwrap();
        let writes = engine
            .store()
            .writes
            .load(std::sync::atomic::Ordering::SeqCst);
        (writes, outcome(inner.as_ref()).await)
    })
}

/// What must hold even mid-operation (`ipam_core::audit::safety`).
async fn check_no_two_holders(store: &impl Store) -> Result<(), String> {
    let v = ipam_core::audit::safety(store)
        .await
        .map_err(|e| e.to_string())?;
    if v.is_empty() {
        Ok(())
    } else {
        Err(v.join("; "))
    }
}

fn crash_at(n: usize, fault: Fault, expected: &Outcome) {
    rt().block_on(async {
        let inner = Arc::new(MemStore::new());
        let engine = Engine::new(FaultyStore::new(inner.clone(), n, fault));
        let live = final_live();
        let steps = script();
        let mut crashed = None;
        let mut db0_before = None;
        for (i, step) in steps.iter().enumerate() {
            if matches!(step, Step::Del(_, "db-0", _)) {
                db0_before = Some(db0_ips(inner.as_ref()).await);
            }
            if let Err(e) = run_step(&engine, &live, step, false).await {
                assert!(
                    matches!(e, Error::Backend { .. } | Error::RetriesExhausted { .. }),
                    "write {n}: step {i} failed with {e}"
                );
                crashed = Some(i);
                break;
            }
        }
        let Some(k) = crashed else {
            panic!("write {n} ({fault:?}) was never reached");
        };
        check_no_two_holders(inner.as_ref())
            .await
            .unwrap_or_else(|e| panic!("write {n} ({fault:?}), step {k}: at the crash: {e}"));
        // Restart: a new engine on what the store holds; retry the step and go on.
        let engine = Engine::new(inner.clone());
        for step in &steps[k..] {
            if matches!(step, Step::Del(_, "db-0", _)) && db0_before.is_none() {
                db0_before = Some(db0_ips(inner.as_ref()).await);
            }
            run_step(&engine, &live, step, true)
                .await
                .unwrap_or_else(|e| {
                    panic!("write {n} ({fault:?}), step {k}: retry of {step:?} failed: {e}")
                });
            check_no_two_holders(inner.as_ref())
                .await
                .unwrap_or_else(|e| panic!("write {n} ({fault:?}) after {step:?}: {e}"));
        }
        engine.gc(&live).await.unwrap();
        check_quiescent(inner.as_ref(), 1)
            .await
            .unwrap_or_else(|e| {
                panic!("write {n} ({fault:?}), crash in step {k}: after recovery: {e}")
            });
        assert_eq!(
            &outcome(inner.as_ref()).await,
            expected,
            "write {n} ({fault:?}), crash in step {k}"
        );
        if let Some(before) = db0_before {
            assert_eq!(
                db0_ips(inner.as_ref()).await,
                before,
                "write {n} ({fault:?}): db-0 lost its IPs"
            );
        }
    });
}

#[test]
fn every_write_can_fail_and_recovery_converges() {
    let (writes, expected) = clean_run();
    assert!(writes > 40, "the script writes {writes} times");
    for fault in [Fault::Crash, Fault::AckLost] {
        for n in 1..=writes {
            crash_at(n, fault, &expected);
        }
    }
    eprintln!("crash test: {writes} write points x 2 fault kinds recovered");
}
