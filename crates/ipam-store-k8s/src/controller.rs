//! `berth controller`: keeps the auto pools of a cluster's applications sized, one replica at a
//! time.
//!
//! Replicas elect one leader through a `coordination.k8s.io/v1` Lease ([`Election`]): the
//! holder renews it every third of its duration; a candidate takes it over once it has not
//! been renewed for the whole duration. Only the leader writes.
//!
//! On taking the lead it reconciles every application the store knows of
//! ([`Engine::reconcile_all`]: the pools of one deleted meanwhile are reclaimed), then acts on
//! watch events as they come: each change of a Deployment, StatefulSet, ReplicaSet,
//! DaemonSet, Job or CronJob (created, scaled, its annotations changed, deleted) reconciles
//! that application ([`Engine::reconcile`]), up to [`Controller::workers`] applications at
//! once, each by one worker at a time. ReplicaSets a Deployment controls and Jobs a
//! CronJob controls are skipped: their pods are their owner's. The engine reads the last
//! four kinds through a [`crate::workloads::KubeWorkloads`] source, which the caller gives it. A
//! leader that cannot renew its Lease in time stops writing and becomes a candidate again.
//!
//! The leader also reserves the IPs of new pods ([`Engine::reserve`]): it watches the pods,
//! and those it sees within [`RESERVE_HOLD`] of the first one waiting (and, on taking the
//! lead, every pending pod) get their records in the manual pools their `ippools` annotation
//! names, with one write per pool, before the scheduler has placed them. Their ADDs then
//! write only their endpoints (see `ipam_core::engine` on reservations, which says why auto
//! pools are left out, and [`Controller::reserve_ahead`]).
//!
//! The leader also runs GC ([`Engine::gc`] with [`PodLiveness`]): soon after pods are deleted,
//! and every [`Controller::gc_every`]. It frees the IPs of pods that are gone, replaced under
//! the same name, finished, or stuck terminating, re-validating each record just before
//! releasing it, so an IP a new pod took meanwhile stays with it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use ipam_core::engine::{Engine, Liveness, Reservation};
use ipam_core::store::Store;
use ipam_core::{AppKind, AppRef, IpRecord, WorkloadKind};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, ResourceExt};

use crate::Error;
use crate::pods::Owners;

/// A Lease that one of several processes holds at a time.
pub struct Election {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

/// What a look at the Lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// This process holds it (it just took or renewed it).
    Held,
    /// Another holds it and renewed it within its duration.
    HeldBy(String),
}

impl Election {
    /// The Lease `namespace/name`, contended for as `identity`, held for `duration` after each
    /// renewal.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Election {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    /// This process's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Takes the Lease if it is free or expired, renews it if it is ours, and says who holds
    /// it. Two candidates racing for it write under the version they read: one gets a 409
    /// and sees the other as the holder.
    pub async fn try_lead(&self) -> Result<Leadership, Error> {
        let api_error = |action: &str, source| Error::Api {
            action: format!("{action} the Lease {}", self.name),
            source,
        };
        let now = Timestamp::now();
        let seconds = i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| api_error("read", e))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Leadership::Held),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    Ok(Leadership::HeldBy("another candidate".into()))
                }
                Err(e) => Err(api_error("create", e)),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        if !ours && !holder.is_empty() {
            let held_for = Duration::from_secs(
                spec.lease_duration_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or(15),
            );
            let renewed = spec.renew_time.as_ref().map(|t| t.0);
            let expired = renewed.is_none_or(|t| {
                now.duration_since(t)
                    .try_into()
                    .map_or(true, |d: Duration| d > held_for)
            });
            if !expired {
                return Ok(Leadership::HeldBy(holder));
            }
        }
        if !ours {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(MicroTime(now));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Leadership::Held),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                Ok(Leadership::HeldBy("another candidate".into()))
            }
            Err(e) => Err(api_error("update", e)),
        }
    }

    /// Gives the Lease up if this process holds it, so a successor need not wait it out.
    pub async fn step_down(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        let _ = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await;
    }
}

/// The controller: an engine on the cluster's store, led by an [`Election`].
pub struct Controller<S: Store> {
    client: kube::Client,
    engine: Arc<Engine<S>>,
    election: Election,
    gc_every: Duration,
    workers: usize,
    reserve_ahead: bool,
    owners: Owners,
}

impl<S: Store + 'static> Controller<S> {
    /// A controller that writes through `engine` while `election` says it leads; `client`
    /// watches the applications.
    pub fn new(client: kube::Client, engine: Arc<Engine<S>>, election: Election) -> Self {
        Controller {
            engine,
            election,
            gc_every: DEFAULT_GC_PERIOD,
            workers: DEFAULT_WORKERS,
            reserve_ahead: true,
            owners: Owners::new(client.clone(), crate::DEFAULT_DEADLINE),
            client,
        }
    }

    /// Whether the leader reserves new pods' IPs before their ADDs (on unless told
    /// otherwise). Off, every ADD writes its pools itself, as before reservations existed.
    pub fn reserve_ahead(mut self, on: bool) -> Self {
        self.reserve_ahead = on;
        self
    }

    /// How many applications the leader reconciles at once ([`DEFAULT_WORKERS`]; at least
    /// one). Each application is reconciled by one worker at a time.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// How often the leader runs GC besides after each pod deletion ([`DEFAULT_GC_PERIOD`]).
    pub fn gc_every(mut self, period: Duration) -> Self {
        self.gc_every = period.max(Duration::from_millis(100));
        self
    }

    /// Contends for the Lease and leads while it holds it, until `stop`; then steps down.
    /// `on_lead(true)` is called on taking the lead, `on_lead(false)` on losing it.
    pub async fn run(
        &self,
        stop: impl std::future::Future<Output = ()>,
        mut on_lead: impl FnMut(bool),
    ) -> Result<(), Error> {
        let mut stop = std::pin::pin!(stop);
        let retry = (self.election.duration / 3).max(Duration::from_millis(200));
        loop {
            // A candidate: try every third of the lease duration.
            let leading = loop {
                match self.election.try_lead().await {
                    Ok(Leadership::Held) => break true,
                    Ok(Leadership::HeldBy(_)) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot read the Lease"),
                }
                tokio::select! {
                    () = &mut stop => break false,
                    () = tokio::time::sleep(retry) => {}
                }
            };
            if !leading {
                return Ok(());
            }
            tracing::info!(identity = self.election.identity(), "leading");
            on_lead(true);
            let renew = async {
                // Renewals until one fails to come within the lease's duration.
                let mut last = tokio::time::Instant::now();
                loop {
                    tokio::time::sleep(retry).await;
                    match self.election.try_lead().await {
                        Ok(Leadership::Held) => last = tokio::time::Instant::now(),
                        Ok(Leadership::HeldBy(other)) => {
                            tracing::warn!(holder = %other, "the Lease was taken over");
                            return;
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot renew the Lease"),
                    }
                    // Stop before another may take it: a third of the duration to spare.
                    if last.elapsed() > self.election.duration - retry {
                        return;
                    }
                }
            };
            tokio::select! {
                () = &mut stop => {
                    self.election.step_down().await;
                    return Ok(());
                }
                () = renew => {}
                () = self.lead() => {}
            }
            tracing::warn!("no longer leading");
            on_lead(false);
        }
    }

    /// Reconciles `app`, saying how it went.
    async fn reconcile(&self, app: AppRef) -> Work {
        let started = std::time::Instant::now();
        let result = self.engine.reconcile(&app).await;
        match &result {
            Ok(()) => tracing::debug!(%app, took = ?started.elapsed(), "reconciled"),
            Err(e) => {
                tracing::warn!(%app, error = %e, "cannot reconcile the application's auto pools; trying again in {RECONCILE_RETRY:?}");
            }
        }
        Work::Reconciled(app, result.is_ok())
    }

    /// Collects the IPs of pods that are gone.
    async fn collect(&self, liveness: &PodLiveness) -> Work {
        match self.engine.gc(liveness).await {
            Ok(report) => {
                for r in &report.released {
                    tracing::info!(pool = %r.pool, ip = %r.ip, pod = %r.holder, "GC released");
                }
            }
            Err(e) => tracing::warn!(error = %e, "GC failed; it runs again"),
        }
        Work::Collected
    }

    /// Reserves the IPs of `pods` (see [`Engine::reserve`]).
    async fn reserve(&self, pods: Vec<Arc<Pod>>) -> Work {
        let contexts = futures::future::join_all(pods.iter().map(|pod| {
            let namespace = pod.namespace().unwrap_or_default();
            async move { self.owners.context(pod, &namespace).await }
        }))
        .await;
        let mut reservations = Vec::new();
        for (pod, context) in pods.iter().zip(contexts) {
            match context {
                Ok(context) => reservations.push(Reservation {
                    pod: context,
                    pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
                }),
                Err(e) => {
                    tracing::debug!(pod = %pod.name_any(), error = %e, "no reservation: the pod's application is unknown");
                }
            }
        }
        match self.engine.reserve(&reservations).await {
            Ok(reserved) => tracing::debug!(
                pods = reservations.len(),
                ips = reserved.ips.len(),
                "reserved"
            ),
            // The ADDs allocate what was not reserved.
            Err(e) => tracing::warn!(error = %e, "reserving the IPs of new pods failed"),
        }
        Work::Reserved
    }

    /// Reconciles every application, then each one that changes, for as long as it runs:
    /// up to [`Controller::workers`] at once, and GC beside them.
    async fn lead(&self) {
        if let Err(e) = self.engine.reconcile_all().await {
            tracing::warn!(error = %e, "reconciling every application failed; events go on");
        }
        let apps_v1 = |kind| move |ns: &str, name: &str| AppRef::apps_v1(kind, ns, name);
        let other = |group: &'static str, kind: AppKind| {
            move |ns: &str, name: &str| AppRef {
                group: group.into(),
                version: "v1".into(),
                kind: kind.clone(),
                namespace: ns.into(),
                name: name.into(),
            }
        };
        let apps = futures::stream::select_all([
            changes::<Deployment>(&self.client, apps_v1(WorkloadKind::Deployment), |_| 0),
            changes::<StatefulSet>(&self.client, apps_v1(WorkloadKind::StatefulSet), |_| 0),
            changes::<ReplicaSet>(&self.client, other("apps", AppKind::ReplicaSet), |_| 0),
            // Its replicas are the nodes it is to run on, which its status counts.
            changes::<DaemonSet>(&self.client, other("apps", AppKind::DaemonSet), |d| {
                d.status
                    .as_ref()
                    .map_or(0, |s| i64::from(s.desired_number_scheduled))
            }),
            changes::<Job>(&self.client, other("batch", AppKind::Job), |_| 0),
            changes::<CronJob>(&self.client, other("batch", AppKind::CronJob), |_| 0),
        ]);
        let mut apps = std::pin::pin!(apps);
        // The pods, cached for GC's liveness answers; a GC soon after each burst of
        // deletions, and reservations for new pods.
        let (pods, writer) = reflector::store();
        let pod_events = reflector::reflector(
            writer,
            watcher(
                Api::<Pod>::all(self.client.clone()),
                watcher::Config::default(),
            ),
        )
        .default_backoff();
        let mut pod_events = std::pin::pin!(pod_events);
        // Pods waiting for a reservation pass; one pass at a time, which takes what came
        // meanwhile.
        let mut to_reserve = Waiting::default();
        let mut reserve_at: Option<tokio::time::Instant> = None;
        let mut reserving = false;
        let mut every = tokio::time::interval(self.gc_every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let liveness = PodLiveness::new(self.client.clone()).with_cache(pods);
        let (mut gc_due, mut collecting) = (false, false);
        let mut backlog = Backlog::default();
        // The reconciles and the GC under way, polled by this loop (not spawned: they end
        // with the lead).
        let mut work = futures::stream::FuturesUnordered::<BoxFuture<'_, Work>>::new();
        // Applications whose reconcile failed: the events skip status updates, so nothing
        // else may come to try them again.
        let mut failed: std::collections::BTreeSet<AppRef> = Default::default();
        // When to try them again: a deadline, so that a steady flow of events cannot put it
        // off.
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            while let Some(app) = backlog.start(self.workers) {
                work.push(Box::pin(self.reconcile(app)));
            }
            if failed.is_empty() {
                retry_at = None;
            } else if retry_at.is_none() {
                retry_at = Some(tokio::time::Instant::now() + RECONCILE_RETRY);
            }
            let retry = retry_at.unwrap_or_else(tokio::time::Instant::now);
            if to_reserve.is_empty() {
                reserve_at = None;
            } else if reserve_at.is_none() {
                reserve_at = Some(tokio::time::Instant::now() + RESERVE_HOLD);
            }
            let reserve_due = reserve_at.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                app = apps.next() => match app {
                    Some(Ok(app)) => backlog.push(app),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "a watch of the applications failed; it restarts");
                    }
                    None => return,
                },
                Some(done) = work.next(), if !work.is_empty() => match done {
                    Work::Reconciled(app, ok) => {
                        if ok {
                            failed.remove(&app);
                        } else {
                            failed.insert(app.clone());
                        }
                        backlog.finished(&app);
                    }
                    Work::Collected => collecting = false,
                    Work::Reserved => reserving = false,
                },
                () = tokio::time::sleep_until(reserve_due), if reserve_at.is_some() && !reserving => {
                    reserve_at = None;
                    reserving = true;
                    work.push(Box::pin(self.reserve(to_reserve.take())));
                }
                () = tokio::time::sleep_until(retry), if retry_at.is_some() => {
                    retry_at = None;
                    for app in std::mem::take(&mut failed) {
                        backlog.push(app);
                    }
                }
                Some(event) = pod_events.next() => match event {
                    Ok(watcher::Event::Delete(pod)) => {
                        gc_due = true;
                        to_reserve.gone(&pod);
                    }
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))
                        if self.reserve_ahead =>
                    {
                        to_reserve.note(pod);
                    }
                    _ => {}
                },
                _ = every.tick() => gc_due = true,
                // Let a burst of deletions settle, then collect once.
                () = tokio::time::sleep(Duration::from_millis(200)), if gc_due && !collecting => {
                    gc_due = false;
                    collecting = true;
                    work.push(Box::pin(self.collect(&liveness)));
                }
            }
        }
    }
}

/// What a piece of the leader's work was, when it is done.
enum Work {
    /// A reconcile of the application, and whether it succeeded.
    Reconciled(AppRef, bool),
    /// A GC.
    Collected,
    /// A reservation pass.
    Reserved,
}

/// Whether `pod` may get its IPs reserved: it exists, has not started (no IPs, phase
/// `Pending`), and its annotations name its pools per NIC (the engine decides the rest:
/// nothing in auto pools, for one).
fn wants_reservation(pod: &Pod) -> bool {
    let meta = &pod.metadata;
    let started = pod.status.as_ref().is_some_and(|s| {
        s.phase.as_deref().is_some_and(|p| p != "Pending")
            || s.pod_ips.as_ref().is_some_and(|ips| !ips.is_empty())
    });
    let annotated = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ipam_core::annotations::IPPOOLS));
    meta.uid.is_some() && meta.deletion_timestamp.is_none() && !started && annotated
}

/// The pods waiting for the next reservation pass, by uid, each in the newest state seen.
#[derive(Default)]
struct Waiting(std::collections::BTreeMap<String, Arc<Pod>>);

impl Waiting {
    /// Notes a pod's new state: it waits while it wants a reservation, and leaves once it
    /// no longer does (it started, or is being deleted), so that a pod deleted while it waits
    /// gets no IPs that only GC would free.
    fn note(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if wants_reservation(&pod) {
            self.0.insert(uid, Arc::new(pod));
        } else {
            self.0.remove(&uid);
        }
    }

    /// Notes that a pod is gone.
    fn gone(&mut self, pod: &Pod) {
        if let Some(uid) = &pod.metadata.uid {
            self.0.remove(uid);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The waiting pods, for a pass; none wait after it.
    fn take(&mut self) -> Vec<Arc<Pod>> {
        std::mem::take(&mut self.0).into_values().collect()
    }
}

/// How long the leader collects new pods before it reserves their IPs in one pass (a pass
/// under way collects the next one's meanwhile). A ReplicaSet creates its pods in batches a
/// few milliseconds apart.
pub const RESERVE_HOLD: Duration = Duration::from_millis(20);

/// The applications waiting for a reconcile, in the order they came, and those being
/// reconciled. One is never reconciled twice at once: a change that comes during its
/// reconcile queues it again for after.
#[derive(Default)]
struct Backlog {
    queued: std::collections::VecDeque<AppRef>,
    running: std::collections::HashSet<AppRef>,
    again: std::collections::HashSet<AppRef>,
}

impl Backlog {
    /// Notes that `app` changed.
    fn push(&mut self, app: AppRef) {
        if self.running.contains(&app) {
            self.again.insert(app);
        } else if !self.queued.contains(&app) {
            self.queued.push_back(app);
        }
    }

    /// The next application to reconcile, if fewer than `workers` are under way.
    fn start(&mut self, workers: usize) -> Option<AppRef> {
        if self.running.len() >= workers {
            return None;
        }
        let app = self.queued.pop_front()?;
        self.running.insert(app.clone());
        Some(app)
    }

    /// Notes that the reconcile of `app` ended.
    fn finished(&mut self, app: &AppRef) {
        self.running.remove(app);
        if self.again.remove(app) {
            self.queued.push_back(app.clone());
        }
    }
}

/// How many applications the leader reconciles at once, unless told otherwise. A reconcile
/// that makes pools is about a dozen requests one after the other, each a round trip to the
/// API server (and the creations pass the webhooks): one at a time, a burst of 100 new
/// Deployments got its pools at one Deployment per second, behind its pods.
pub const DEFAULT_WORKERS: usize = 4;

/// How soon the leader reconciles again an application whose reconcile failed.
const RECONCILE_RETRY: Duration = Duration::from_secs(1);

/// How often the leader runs GC unless told otherwise, besides after each pod deletion.
pub const DEFAULT_GC_PERIOD: Duration = Duration::from_secs(60);

/// How long past its grace period a terminating pod may take before its IPs are freed.
pub const TERMINATING_MARGIN: Duration = Duration::from_secs(30);

/// Whether an IP's holder still lives, asked of the API server: its pod exists as the same
/// incarnation (uid), has not finished (phase `Succeeded` or `Failed`), and is not stuck
/// terminating past its grace period plus [`TERMINATING_MARGIN`]. A pod whose node was
/// deleted is deleted by Kubernetes' pod GC, and so counts as gone. StatefulSet pods within
/// their replicas keep their IPs whatever this says (the engine asks first).
///
/// With a cache of the pods ([`PodLiveness::with_cache`]) a holder the cache shows alive costs
/// no request; one it does not is read from the API server, which decides, so a cache that
/// lags (a pod created a moment ago) never frees an IP.
pub struct PodLiveness {
    client: kube::Client,
    cache: Option<reflector::Store<Pod>>,
}

impl PodLiveness {
    /// Liveness from the cluster `client` talks to, one read per holder.
    pub fn new(client: kube::Client) -> Self {
        PodLiveness {
            client,
            cache: None,
        }
    }

    /// Answers "alive" from `pods` (a reflector's store of every pod) when it can.
    pub fn with_cache(mut self, pods: reflector::Store<Pod>) -> Self {
        self.cache = Some(pods);
        self
    }
}

/// Whether `pod` is the live holder of `record` (see [`PodLiveness`]).
fn holds(pod: &Pod, record: &IpRecord) -> bool {
    if !record.pod_uid.is_empty() && pod.metadata.uid.as_deref() != Some(&record.pod_uid) {
        return false;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    if let Some(deleted) = &pod.metadata.deletion_timestamp {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(30);
        let overdue = Timestamp::now()
            .duration_since(deleted.0)
            .try_into()
            .is_ok_and(|d: Duration| d > Duration::from_secs(grace) + TERMINATING_MARGIN);
        if overdue {
            return false;
        }
    }
    true
}

#[async_trait::async_trait]
impl Liveness for PodLiveness {
    async fn alive(&self, record: &IpRecord) -> Result<bool, ipam_core::Error> {
        let Some((namespace, name)) = record.pod.split_once('/') else {
            return Ok(false);
        };
        let cached = self
            .cache
            .as_ref()
            .and_then(|c| c.get(&reflector::ObjectRef::new(name).within(namespace)));
        if cached.is_some_and(|pod| holds(&pod, record)) {
            return Ok(true);
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = tokio::time::timeout(crate::DEFAULT_DEADLINE, api.get_opt(name))
            .await
            .map_err(|_| ipam_core::Error::unavailable("read a pod", "no answer in time"))?
            .map_err(|e| {
                ipam_core::Error::unavailable(format!("read the pod {}", record.pod), e)
            })?;
        Ok(pod.is_some_and(|pod| holds(&pod, record)))
    }
}

/// What of an application its auto pools depend on, as one number: its identity, its spec
/// (through `metadata.generation`, which only a spec change moves), labels, annotations and
/// deletion, and `extra` (a DaemonSet's replicas are in its status). A status update (one more
/// pod ready) leaves it as it was.
fn fingerprint(meta: &ObjectMeta, extra: i64) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.uid.hash(&mut h);
    meta.generation.hash(&mut h);
    meta.labels.hash(&mut h);
    meta.annotations.hash(&mut h);
    meta.deletion_timestamp.as_ref().map(|t| t.0).hash(&mut h);
    extra.hash(&mut h);
    h.finish()
}

/// An application's namespace and name.
type AppKey = (String, String);

/// Which events of a watch of applications change what their auto pools depend on
/// ([`fingerprint`]), and so call for a reconcile.
struct AppChanges<K> {
    /// The fingerprint of each application seen.
    seen: std::collections::HashMap<AppKey, u64>,
    /// While the watch lists (at its start, or after a gap), the applications listed so far.
    listing: Option<std::collections::HashSet<AppKey>>,
    /// What the fingerprint takes from the object besides its metadata.
    extra: fn(&K) -> i64,
}

impl<K: kube::Resource<DynamicType = ()>> AppChanges<K> {
    fn new(extra: fn(&K) -> i64) -> Self {
        AppChanges {
            seen: Default::default(),
            listing: None,
            extra,
        }
    }

    /// The applications `event` calls to reconcile: one created, deleted, or changed in what
    /// its pools depend on; and when a listing ends, those it no longer shows (deleted during
    /// a gap in the watch). An object another controls is not an application.
    fn on(&mut self, event: watcher::Event<K>) -> Vec<AppKey> {
        let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
        let controlled = |o: &K| {
            o.meta()
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.controller == Some(true))
        };
        match event {
            watcher::Event::Init => {
                self.listing = Some(Default::default());
                Vec::new()
            }
            watcher::Event::InitApply(o) | watcher::Event::Apply(o) if controlled(&o) => Vec::new(),
            watcher::Event::InitApply(o) | watcher::Event::Apply(o) => {
                let (k, print) = (key(&o), fingerprint(o.meta(), (self.extra)(&o)));
                if let Some(listing) = &mut self.listing {
                    listing.insert(k.clone());
                }
                if self.seen.insert(k.clone(), print) == Some(print) {
                    Vec::new()
                } else {
                    vec![k]
                }
            }
            watcher::Event::InitDone => {
                let Some(listed) = self.listing.take() else {
                    return Vec::new();
                };
                let gone: Vec<AppKey> = self
                    .seen
                    .keys()
                    .filter(|k| !listed.contains(*k))
                    .cloned()
                    .collect();
                self.seen.retain(|k, _| listed.contains(k));
                gone
            }
            watcher::Event::Delete(o) => {
                let k = key(&o);
                if self.seen.remove(&k).is_some() {
                    vec![k]
                } else {
                    Vec::new()
                }
            }
        }
    }
}

/// The applications among the objects `K` as they change ([`AppChanges`]), as
/// `app(namespace, name)`: every one at the start, then each one created, deleted, or changed
/// in what its auto pools depend on. Status updates are skipped: a Deployment's status
/// changes with every pod it starts, and each reconcile costs requests.
fn changes<K: crate::wire::Watched>(
    client: &kube::Client,
    app: impl Fn(&str, &str) -> AppRef + Send + 'static,
    extra: fn(&K) -> i64,
) -> futures::stream::BoxStream<'static, Result<AppRef, watcher::Error>> {
    let mut changes = AppChanges::new(extra);
    watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .flat_map(move |event| {
            let apps: Vec<_> = match event {
                Ok(event) => changes
                    .on(event)
                    .into_iter()
                    .map(|(namespace, name)| Ok(app(&namespace, &name)))
                    .collect(),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(apps)
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DaemonSetStatus, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use watcher::Event;

    fn deployment(name: &str, generation: i64) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                generation: Some(generation),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn app(name: &str) -> AppRef {
        AppRef::apps_v1(WorkloadKind::Deployment, "ns", name)
    }

    /// A pod `name` that has not started, with an `ippools` annotation.
    fn pending_pod(name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                annotations: Some(
                    [(
                        ipam_core::annotations::IPPOOLS.to_string(),
                        r#"[{"interface":"eth0","ipv4":["shared"]}]"#.to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            status: Some(k8s_openapi::api::core::v1::PodStatus {
                phase: Some("Pending".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn a_pod_waits_for_a_reservation_only_while_it_wants_one() {
        let mut waiting = Waiting::default();
        for name in ["deleted", "started", "gone", "kept"] {
            waiting.note(pending_pod(name));
        }
        let mut unannotated = pending_pod("unannotated");
        unannotated.metadata.annotations = None;
        waiting.note(unannotated);

        // Its next states: deleted while it waits, started by an ADD that came first, gone.
        let mut deleted = pending_pod("deleted");
        deleted.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
        );
        waiting.note(deleted);
        let mut started = pending_pod("started");
        started.status.as_mut().unwrap().phase = Some("Running".into());
        waiting.note(started);
        waiting.gone(&pending_pod("gone"));

        assert_eq!(names(&waiting.take()), ["kept"]);
        assert!(waiting.is_empty(), "a pass takes every waiting pod");
    }

    #[test]
    fn the_backlog_runs_up_to_its_workers_and_one_application_once_at_a_time() {
        let mut b = Backlog::default();
        for name in ["a", "b", "c", "a"] {
            b.push(app(name));
        }
        assert_eq!(b.start(2), Some(app("a")));
        assert_eq!(b.start(2), Some(app("b")));
        assert_eq!(b.start(2), None, "two workers are busy");
        // A change during a's reconcile reconciles it again after, not beside.
        b.push(app("a"));
        b.finished(&app("b"));
        assert_eq!(b.start(2), Some(app("c")));
        assert_eq!(b.start(3), None, "a is under way: its next reconcile waits");
        b.finished(&app("a"));
        assert_eq!(b.start(3), Some(app("a")));
        b.finished(&app("a"));
        b.finished(&app("c"));
        assert_eq!(b.start(3), None, "nothing changed since");
    }

    fn key(name: &str) -> AppKey {
        ("ns".into(), name.into())
    }

    /// A watch's start: the listing, then its end.
    fn listed(changes: &mut AppChanges<Deployment>, objects: &[Deployment]) -> Vec<AppKey> {
        let mut out = changes.on(Event::Init);
        for o in objects {
            out.extend(changes.on(Event::InitApply(o.clone())));
        }
        out.extend(changes.on(Event::InitDone));
        out
    }

    #[test]
    fn status_updates_call_for_no_reconcile_and_spec_metadata_and_deletion_do() {
        let mut changes = AppChanges::new(|_: &Deployment| 0);
        let app = deployment("app", 1);
        assert_eq!(
            listed(&mut changes, std::slice::from_ref(&app)),
            vec![key("app")]
        );

        let mut ready = app.clone();
        ready.status = Some(DeploymentStatus {
            ready_replicas: Some(3),
            ..Default::default()
        });
        assert!(changes.on(Event::Apply(ready.clone())).is_empty());

        let scaled = deployment("app", 2);
        assert_eq!(changes.on(Event::Apply(scaled.clone())), vec![key("app")]);
        assert!(changes.on(Event::Apply(scaled.clone())).is_empty());

        let mut annotated = scaled.clone();
        annotated.metadata.annotations =
            Some([("ipam.spidernet.io/ippool-reclaim".into(), "false".into())].into());
        assert_eq!(
            changes.on(Event::Apply(annotated.clone())),
            vec![key("app")]
        );

        let mut recreated = annotated.clone();
        recreated.metadata.uid = Some("another".into());
        assert_eq!(
            changes.on(Event::Apply(recreated.clone())),
            vec![key("app")]
        );

        assert_eq!(changes.on(Event::Delete(recreated)), vec![key("app")]);
        // Created again with what the deleted one had: new, so reconciled.
        assert_eq!(changes.on(Event::Apply(annotated)), vec![key("app")]);
    }

    #[test]
    fn a_new_listing_reconciles_what_changed_or_went_during_the_gap_and_nothing_else() {
        let mut changes = AppChanges::new(|_: &Deployment| 0);
        let (a, b, c) = (deployment("a", 1), deployment("b", 1), deployment("c", 1));
        let mut first = listed(&mut changes, &[a.clone(), b.clone(), c.clone()]);
        first.sort();
        assert_eq!(first, vec![key("a"), key("b"), key("c")]);

        // The watch starts over: a as it was, b scaled, c deleted, d new.
        let mut again = listed(&mut changes, &[a, deployment("b", 2), deployment("d", 1)]);
        again.sort();
        assert_eq!(again, vec![key("b"), key("c"), key("d")]);
        // c is forgotten: its deletion, arriving late, is nothing more to do.
        assert!(changes.on(Event::Delete(c)).is_empty());
    }

    #[test]
    fn objects_another_controls_are_no_applications() {
        let mut changes = AppChanges::new(|_: &Deployment| 0);
        let mut owned = deployment("owned", 1);
        owned.metadata.owner_references = Some(vec![OwnerReference {
            controller: Some(true),
            name: "owner".into(),
            ..Default::default()
        }]);
        assert!(listed(&mut changes, std::slice::from_ref(&owned)).is_empty());
        assert!(changes.on(Event::Apply(owned.clone())).is_empty());
        assert!(changes.on(Event::Delete(owned)).is_empty());
    }

    #[test]
    fn what_the_extra_takes_from_the_status_calls_for_a_reconcile() {
        let mut changes = AppChanges::new(|d: &DaemonSet| {
            d.status
                .as_ref()
                .map_or(0, |s| i64::from(s.desired_number_scheduled))
        });
        let scheduled = |desired: i32, ready: i32| DaemonSet {
            metadata: ObjectMeta {
                name: Some("ds".into()),
                namespace: Some("ns".into()),
                generation: Some(1),
                ..Default::default()
            },
            status: Some(DaemonSetStatus {
                desired_number_scheduled: desired,
                number_ready: ready,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(changes.on(Event::Apply(scheduled(0, 0))), vec![key("ds")]);
        assert_eq!(changes.on(Event::Apply(scheduled(3, 0))), vec![key("ds")]);
        assert!(changes.on(Event::Apply(scheduled(3, 2))).is_empty());
    }
}
