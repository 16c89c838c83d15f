//! Read-modify-write of one object.
//!
//! Most writes of the engine are a small change to one object just read: a claim set in a
//! subnet, a finalizer dropped, counts repaired, a NIC added to a pod's endpoint. Each is
//! written with the version it was based on as precondition, and a conflict means "read again
//! and redo the change". So the change is a function of the object, and [`Engine::modify`]
//! owns the loop around it: read, apply, write the spec or the status, back off and redo on a
//! conflict, give up after `max_retries`. It is kube-rs's `api.entry(name).and_modify(f)` with
//! the retry built in; on Kubernetes every such write is an API round trip that can conflict,
//! and this is the one place that handles it.
//!
//! Concurrent modifications of one object are queued on it (see `queue`): the leader applies
//! every queued change, in order, to one read and writes once; on a conflict it re-reads and
//! re-applies them all. So the changes are closures of the object alone (`'static`, no I/O):
//! what they need from other objects is read before, and re-applying them to newer data must
//! be right. A change that fails, or keeps the object, in a shared write is undone before the
//! next one applies, so each caller's outcome is the one it would have had alone.
//!
//! Steps that read other objects to decide (apply validates against every subnet and pool)
//! or write several objects in an order (apply of a pool, resizing an auto pool) are not a
//! change of one object: [`Engine::retry`] re-runs them whole.

use std::any::{Any, TypeId};

use tokio::sync::oneshot;

use super::Engine;
use super::queue::{owes_sync, shared_failure};
use crate::error::Error;
use crate::meta::{Object, ObjectKey};
use crate::store::{Deleted, Store, TypedStore, decode, durability_deferred};

/// Which part of an object a modification writes, as the Kubernetes API splits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// Metadata and spec ([`Store::update`]): all of the object for kinds without a status
    /// subresource.
    Spec,
    /// The status only ([`Store::update_status`]).
    Status,
}

/// What a modification made of the object it was given, with its answer `R` to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change<R = ()> {
    /// Write the object as changed, with the version read as precondition.
    Write(R),
    /// Write nothing: the object was left exactly as given.
    Keep(R),
    /// Delete the object, with the version read as precondition.
    Delete(R),
}

/// The queues of [`Engine::modify`]: one per object, typed so that a leader knows what it reads.
pub(crate) type ModifyQueues = super::queue::Queues<(ObjectKey, TypeId), Box<dyn Any + Send>>;

impl<S: Store> Engine<S> {
    /// Re-reads the object `name` (in `namespace` for namespaced kinds), lets `f` change it and
    /// writes `part` with the version read as precondition; on a conflict, reads again and
    /// re-applies `f`, with the engine's backoff, up to `max_retries` attempts
    /// ([`Error::RetriesExhausted`] then). Returns the object as stored afterwards (for a
    /// delete: as `f` left it, or as the store returned it when finalizers hold it) and `f`'s
    /// answer of the attempt that landed; `None`, without calling `f`, when the object does not
    /// exist (or went before the write could land).
    ///
    /// An error of `f` is returned as it is, and nothing is written. Concurrent calls on one
    /// object are served in order and share a write where they can (see the module doc).
    pub(crate) async fn modify<T, R, F>(
        &self,
        namespace: Option<&str>,
        name: &str,
        part: Part,
        f: F,
    ) -> Result<Option<(T, R)>, Error>
    where
        T: Object,
        R: Send + 'static,
        F: FnMut(&mut T) -> Result<Change<R>, Error> + Send + 'static,
    {
        let key = ObjectKey {
            kind: T::KIND,
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        };
        let request = Request {
            part,
            vacant: None,
            f,
        };
        // Boxed: the leader's state (a read, a write, copies of the object) would otherwise be
        // inlined into every caller's future, and the agent polls those on a 2 MiB stack.
        Box::pin(self.submit(key, request)).await
    }

    /// [`Engine::modify`] of `new`'s key, where an object that does not exist is first `new`
    /// (kube-rs's `entry(name).or_insert_with(..).and_modify(f)`): it is created, whole, if
    /// `f` says [`Change::Write`]. Returns `None` only when `f` leaves a missing object missing.
    pub(crate) async fn modify_or_create<T, R, F>(
        &self,
        new: T,
        part: Part,
        f: F,
    ) -> Result<Option<(T, R)>, Error>
    where
        T: Object,
        R: Send + 'static,
        F: FnMut(&mut T) -> Result<Change<R>, Error> + Send + 'static,
    {
        let key = new.key();
        let request = Request {
            part,
            vacant: Some(new),
            f,
        };
        Box::pin(self.submit(key, request)).await
    }

    /// Queues `request` on its object and waits for its answer, serving the queue meanwhile if
    /// this call leads it.
    async fn submit<T, R, F>(
        &self,
        key: ObjectKey,
        request: Request<T, F>,
    ) -> Result<Option<(T, R)>, Error>
    where
        T: Object,
        R: Send + 'static,
        F: FnMut(&mut T) -> Result<Change<R>, Error> + Send + 'static,
    {
        let queue = (key, TypeId::of::<T>());
        let mut request = Some(request);
        while let Some(req) = request.take() {
            let (tx, rx) = oneshot::channel();
            let pending: Box<dyn Queued<T>> = Box::new(Pending {
                request: Some(req),
                defers: durability_deferred(),
                answer: None,
                reply: Some(tx),
            });
            let item: Box<dyn Any + Send> = Box::new(pending);
            if let Some(mut leader) = self.modifying.join(&queue, item) {
                while let Some(batch) = leader.next_batch() {
                    let later = self.serve::<T>(&queue.0, batch).await;
                    leader.put_back(later);
                }
            }
            match rx.await {
                Ok(Reply::Done(outcome)) => return outcome,
                // The leader was cancelled before it served this one: queue it again.
                Ok(Reply::Again(req)) => request = Some(req),
                Err(_) => break,
            }
        }
        // A queued change is answered or handed back when dropped; this is not reached.
        Err(Error::backend(
            format!("modify {}", queue.0),
            "the queued change was lost",
        ))
    }

    /// Serves one batch of a queue: the changes of the leading part, written together. Returns
    /// those that must wait for the next batch, in order.
    async fn serve<T: Object>(
        &self,
        key: &ObjectKey,
        batch: Vec<Box<dyn Any + Send>>,
    ) -> Vec<Box<dyn Any + Send>> {
        let mut ops: Vec<Box<dyn Queued<T>>> = batch
            .into_iter()
            .map(|item| {
                *item
                    .downcast::<Box<dyn Queued<T>>>()
                    .expect("a queue is keyed by the type of its objects")
            })
            .collect();
        let part = ops[0].part();
        let same_part = ops.iter().take_while(|op| op.part() == part).count();
        let mut later = ops.split_off(same_part);
        let mut attempt = 0;
        let mut round = loop {
            let began = std::time::Instant::now();
            let mut round = self.attempt(key, part, &mut ops).await;
            if let Err(e) = &round.outcome
                && matches!(
                    e,
                    Error::Conflict(_) | Error::AlreadyExists(_) | Error::NotFound(_)
                )
            {
                match self.conflicted(key, &mut attempt, began).await {
                    Ok(()) => continue,
                    Err(exhausted) => round.outcome = Err(exhausted),
                }
            }
            break round;
        };
        if round.wrote
            && owes_sync(ops[..round.took].iter().map(|op| op.defers()))
            && let Err(e) = self.store.sync().await
        {
            round.outcome = Err(e);
        }
        let mut deferred = ops.split_off(round.took);
        answer(key, ops, round);
        deferred.append(&mut later);
        deferred
            .into_iter()
            .map(|op| Box::new(op) as Box<dyn Any + Send>)
            .collect()
    }

    /// One attempt: a fresh read, the changes applied in order, at most one write.
    async fn attempt<T: Object>(
        &self,
        key: &ObjectKey,
        part: Part,
        ops: &mut [Box<dyn Queued<T>>],
    ) -> Round<T> {
        let read = match self.store.get(key).await {
            Ok(doc) => doc.map(decode::<T>).transpose(),
            Err(e) => Err(e),
        };
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                return Round {
                    took: ops.len(),
                    fates: Vec::new(),
                    wrote: false,
                    outcome: Err(e),
                };
            }
        };
        let version = read.as_ref().and_then(|o| o.version()).map(str::to_string);
        let stored = read.is_some();
        let mut object = read;
        // Undoing a change needs a copy of what it was given; one caller alone needs none.
        let shared = ops.len() > 1;
        let mut fates = Vec::with_capacity(ops.len());
        let (mut write, mut delete) = (false, false);
        for op in ops.iter_mut() {
            let existed = object.is_some();
            let before = (shared || !existed).then(|| object.clone());
            if !existed {
                match op.vacant() {
                    Some(new) => object = Some(new.clone()),
                    None => {
                        fates.push(Fate::Gone);
                        continue;
                    }
                }
            }
            let obj = object.as_mut().expect("present or created above");
            match op.apply(obj) {
                Ok(Verdict::Write) => {
                    write = true;
                    fates.push(Fate::Applied);
                }
                Ok(Verdict::Keep) => {
                    if let Some(before) = before {
                        object = before;
                    }
                    fates.push(Fate::Applied);
                }
                Ok(Verdict::Delete) if !existed => {
                    object = None;
                    fates.push(Fate::Gone);
                }
                Ok(Verdict::Delete) if fates.is_empty() => {
                    // First in line: no change before it waits to be written.
                    delete = true;
                    fates.push(Fate::Applied);
                    break;
                }
                Ok(Verdict::Delete) => {
                    // The changes before it are written first; it leads the next batch.
                    if let Some(before) = before {
                        object = before;
                    }
                    break;
                }
                Err(e) => {
                    if let Some(before) = before {
                        object = before;
                    }
                    fates.push(Fate::Failed(e));
                }
            }
        }
        let took = fates.len();
        let outcome = if delete {
            match self.store.delete(key, version.as_deref()).await {
                Ok(Deleted::Terminating(doc)) => decode(doc).map(Some),
                Ok(Deleted::Gone) | Err(Error::NotFound(_)) => Ok(object),
                Err(e) => Err(e),
            }
        } else if !write {
            Ok(object)
        } else {
            let object = object.expect("a change to write has an object");
            let written = match (stored, part) {
                (false, _) => self.create_with_status(&object).await,
                (true, Part::Spec) => self.store.update_as(&object).await,
                (true, Part::Status) => self.store.update_status_as(&object).await,
            };
            written.map(Some)
        };
        if delete || write {
            // Whatever the answer: a write whose answer was lost may have happened.
            self.pool_written(key.kind, &key.name);
        }
        Round {
            took,
            fates,
            wrote: delete || write,
            outcome,
        }
    }
}

/// A change as its caller submits it (and gets it back, to submit again, when the leader that
/// took it was cancelled).
struct Request<T, F> {
    part: Part,
    /// The object to start from when there is none (`modify_or_create`).
    vacant: Option<T>,
    f: F,
}

/// What a caller waiting on a queue hears back.
enum Reply<T, R, F> {
    /// Its outcome.
    Done(Result<Option<(T, R)>, Error>),
    /// Its request, unserved: the leader was cancelled.
    Again(Request<T, F>),
}

/// A queued change of an object of type `T`, its caller's answer type erased, so that the
/// changes of different callers queue together.
trait Queued<T>: Send {
    fn part(&self) -> Part;

    /// Whether its caller defers durability (see `queue::owes_sync`).
    fn defers(&self) -> bool;

    /// The object to start from when there is none.
    fn vacant(&self) -> Option<&T>;

    /// Applies the change to `object`, keeping its answer for [`Queued::answer`].
    fn apply(&mut self, object: &mut T) -> Result<Verdict, Error>;

    /// Sends the caller its outcome, with the answer of the last application.
    fn answer(self: Box<Self>, outcome: Result<Option<T>, Error>);
}

/// [`Change`] without its answer.
enum Verdict {
    Write,
    Keep,
    Delete,
}

struct Pending<T, R, F> {
    /// Taken when answered.
    request: Option<Request<T, F>>,
    defers: bool,
    answer: Option<R>,
    reply: Option<oneshot::Sender<Reply<T, R, F>>>,
}

impl<T, R, F> Queued<T> for Pending<T, R, F>
where
    T: Object,
    R: Send + 'static,
    F: FnMut(&mut T) -> Result<Change<R>, Error> + Send + 'static,
{
    fn part(&self) -> Part {
        self.request.as_ref().map_or(Part::Spec, |r| r.part)
    }

    fn defers(&self) -> bool {
        self.defers
    }

    fn vacant(&self) -> Option<&T> {
        self.request.as_ref().and_then(|r| r.vacant.as_ref())
    }

    fn apply(&mut self, object: &mut T) -> Result<Verdict, Error> {
        self.answer = None;
        let request = self.request.as_mut().expect("applied before answered");
        let (verdict, answer) = match (request.f)(object)? {
            Change::Write(r) => (Verdict::Write, r),
            Change::Keep(r) => (Verdict::Keep, r),
            Change::Delete(r) => (Verdict::Delete, r),
        };
        self.answer = Some(answer);
        Ok(verdict)
    }

    fn answer(mut self: Box<Self>, outcome: Result<Option<T>, Error>) {
        self.request = None;
        let outcome = match (outcome, self.answer.take()) {
            (Ok(Some(object)), Some(answer)) => Ok(Some((object, answer))),
            (Ok(_), _) => Ok(None),
            (Err(e), _) => Err(e),
        };
        if let Some(reply) = self.reply.take() {
            // A caller that went away does not care.
            let _ = reply.send(Reply::Done(outcome));
        }
    }
}

impl<T, R, F> Drop for Pending<T, R, F> {
    fn drop(&mut self) {
        // Dropped unanswered (its leader was cancelled): hand the request back.
        if let (Some(reply), Some(request)) = (self.reply.take(), self.request.take()) {
            let _ = reply.send(Reply::Again(request));
        }
    }
}

/// What became of one change in an attempt.
enum Fate {
    /// Its object does not exist, and it creates none.
    Gone,
    /// It refused.
    Failed(Error),
    /// It was applied: its outcome is the attempt's.
    Applied,
}

/// One attempt at a batch.
struct Round<T> {
    /// How many changes, from the head, took part; the rest wait for the next batch.
    took: usize,
    /// What became of each, when the read succeeded.
    fates: Vec<Fate>,
    /// Whether it wrote (or tried to).
    wrote: bool,
    /// The object as stored afterwards, or why the read or the write failed.
    outcome: Result<Option<T>, Error>,
}

/// Answers the changes that took part in `round`. The last applied one gets the object and the
/// error themselves, the others copies.
fn answer<T: Object>(key: &ObjectKey, ops: Vec<Box<dyn Queued<T>>>, round: Round<T>) {
    let mut fates = round.fates.into_iter();
    let mut outcome = Some(round.outcome);
    let mut applied = ops.len() - fates.len()
        + fates
            .as_slice()
            .iter()
            .filter(|f| matches!(f, Fate::Applied))
            .count();
    for op in ops {
        let result = match fates.next().unwrap_or(Fate::Applied) {
            Fate::Gone => Ok(None),
            Fate::Failed(e) => Err(e),
            Fate::Applied => {
                applied -= 1;
                let shared = outcome.as_ref().expect("taken by the last applied change");
                if applied > 0 {
                    match shared {
                        Ok(object) => Ok(object.clone()),
                        Err(e) => Err(shared_failure(key, e)),
                    }
                } else {
                    outcome.take().expect("taken once")
                }
            }
        };
        op.answer(result);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use async_trait::async_trait;
    use serde_json::Value;

    use super::*;
    use crate::engine::EngineConfig;
    use crate::meta::{Kind, LabelSelector};
    use crate::store::{MemStore, WatchStream};
    use crate::subnet::{PoolClaim, SpiderSubnet};
    use crate::{SpiderEndpoint, ips};

    /// A [`MemStore`] that counts writes and can get in the way of them.
    #[derive(Default)]
    struct Meddling {
        inner: MemStore,
        writes: AtomicUsize,
        /// Before the next write of an update, someone else changes the object.
        cut_in: AtomicBool,
        /// Every update conflicts.
        always_conflict: AtomicBool,
        /// Writes wait for a permit.
        gate: Option<tokio::sync::Semaphore>,
        syncs: AtomicUsize,
    }

    impl Meddling {
        async fn before_write(&self, object: &Value) -> Result<(), Error> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = &self.gate {
                gate.acquire().await.expect("never closed").forget();
            }
            // Let the other callers queue while this write is under way.
            tokio::task::yield_now().await;
            let key = crate::store::semantics::key_of(Kind::SpiderSubnet, object)?;
            if self.always_conflict.load(Ordering::SeqCst) {
                return Err(Error::Conflict(key));
            }
            if self.cut_in.swap(false, Ordering::SeqCst) {
                let mut other: SpiderSubnet = decode(self.inner.get(&key).await?.expect("exists"))?;
                other.metadata.labels.insert("cut".into(), "in".into());
                self.inner.update_as(&other).await?;
            }
            Ok(())
        }
    }

    #[async_trait]
    impl Store for Meddling {
        async fn get(&self, key: &ObjectKey) -> Result<Option<Value>, Error> {
            self.inner.get(key).await
        }
        async fn list(
            &self,
            kind: Kind,
            namespace: Option<&str>,
            selector: Option<&LabelSelector>,
        ) -> Result<Vec<Value>, Error> {
            self.inner.list(kind, namespace, selector).await
        }
        async fn create(&self, kind: Kind, object: Value) -> Result<Value, Error> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.inner.create(kind, object).await
        }
        async fn update(&self, kind: Kind, object: Value) -> Result<Value, Error> {
            self.before_write(&object).await?;
            self.inner.update(kind, object).await
        }
        async fn update_status(&self, kind: Kind, object: Value) -> Result<Value, Error> {
            self.before_write(&object).await?;
            self.inner.update_status(kind, object).await
        }
        async fn delete(&self, key: &ObjectKey, pre: Option<&str>) -> Result<Deleted, Error> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.inner.delete(key, pre).await
        }
        async fn sync(&self) -> Result<(), Error> {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn watch(&self, kind: Kind) -> WatchStream {
            self.inner.watch(kind)
        }
    }

    async fn engine(store: Meddling) -> Engine<Meddling> {
        let config = EngineConfig {
            max_retries: 3,
            ..EngineConfig::default()
        };
        let engine = Engine::with_config(store, config);
        let subnet = SpiderSubnet::new(
            "s",
            "10.6.0.0/16".parse().unwrap(),
            ips!["10.6.1.1-10.6.1.100"],
            None,
        );
        engine.store.inner.create_as(&subnet).await.unwrap();
        engine
    }

    fn writes(engine: &Engine<Meddling>) -> usize {
        engine.store.writes.load(Ordering::SeqCst)
    }

    /// A change claiming `ips` for `pool`, answering the claims it saw.
    fn claim(
        pool: &'static str,
        ips: IpSet,
    ) -> impl FnMut(&mut SpiderSubnet) -> Result<Change<usize>, Error> + Send + 'static {
        move |s| {
            let mut claims = s.claims();
            let seen = claims.len();
            claims.insert(
                pool.into(),
                PoolClaim {
                    ips: ips.clone(),
                    application: None,
                    claimed_at: None,
                },
            );
            s.set_claims(claims);
            Ok(Change::Write(seen))
        }
    }

    use crate::range::IpSet;

    #[tokio::test]
    async fn a_missing_object_is_none_and_f_is_not_called() {
        let engine = engine(Meddling::default()).await;
        let got = engine
            .modify::<SpiderSubnet, (), _>(None, "nope", Part::Status, |_| {
                panic!("no object to change")
            })
            .await
            .unwrap();
        assert!(got.is_none());
        assert_eq!(writes(&engine), 0);
    }

    #[tokio::test]
    async fn status_and_spec_are_written_apart() {
        let engine = engine(Meddling::default()).await;
        let both = |s: &mut SpiderSubnet| {
            s.metadata.labels.insert("l".into(), "v".into());
            let mut claims = s.claims();
            let empty = PoolClaim {
                ips: IpSet::new(),
                application: None,
                claimed_at: None,
            };
            claims.insert("p".into(), empty);
            s.set_claims(claims);
            Ok(Change::Write(()))
        };
        let (status, ()) = engine
            .modify(None, "s", Part::Status, both)
            .await
            .unwrap()
            .unwrap();
        assert!(status.claims().contains_key("p"));
        assert_eq!(
            status.metadata.label("l"),
            None,
            "a status write leaves the spec"
        );

        let (spec, ()) = engine
            .modify(None, "s", Part::Spec, |s: &mut SpiderSubnet| {
                s.metadata.labels.insert("l".into(), "v".into());
                s.set_claims(Default::default());
                Ok(Change::Write(()))
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(spec.metadata.label("l"), Some("v"));
        assert!(
            spec.claims().contains_key("p"),
            "a spec write leaves the status"
        );
        assert_eq!(writes(&engine), 2);
    }

    #[tokio::test]
    async fn a_conflict_reapplies_f_to_a_fresh_read() {
        let engine = engine(Meddling::default()).await;
        engine.store.cut_in.store(true, Ordering::SeqCst);
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let mut change = claim("p", ips!["10.6.1.1"]);
        let (s, _) = engine
            .modify(None, "s", Part::Status, move |s: &mut SpiderSubnet| {
                counted.fetch_add(1, Ordering::SeqCst);
                change(s)
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "applied again after the conflict"
        );
        assert_eq!(
            s.metadata.label("cut"),
            Some("in"),
            "on the other writer's version"
        );
        assert!(s.claims().contains_key("p"));
    }

    #[tokio::test]
    async fn conflicts_without_end_give_up() {
        let engine = engine(Meddling::default()).await;
        engine.store.always_conflict.store(true, Ordering::SeqCst);
        let err = engine
            .modify(None, "s", Part::Status, claim("p", ips!["10.6.1.1"]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::RetriesExhausted { attempts: 3, .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_refusal_writes_nothing_and_keep_writes_nothing() {
        let engine = engine(Meddling::default()).await;
        let err = engine
            .modify(None, "s", Part::Status, |_: &mut SpiderSubnet| {
                Err::<Change, _>(Error::NotFound(ObjectKey::cluster(Kind::SpiderIPPool, "x")))
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound(_)));
        let kept = engine
            .modify(None, "s", Part::Status, |_: &mut SpiderSubnet| {
                Ok(Change::Keep(7))
            })
            .await
            .unwrap();
        assert_eq!(kept.map(|(_, r)| r), Some(7));
        assert_eq!(writes(&engine), 0);
    }

    #[tokio::test]
    async fn concurrent_callers_on_one_object_share_writes() {
        let engine = engine(Meddling::default()).await;
        const POOLS: [&str; 8] = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"];
        let calls = POOLS.iter().enumerate().map(|(i, pool)| {
            let ips = ips![format!("10.6.1.{}", i + 1)];
            let mut change = claim(pool, ips);
            let engine = &engine;
            async move {
                engine
                    .modify(None, "s", Part::Status, move |s: &mut SpiderSubnet| {
                        // One refuses after changing the object: its change must not land.
                        if *pool == "p3" {
                            change(s)?;
                            return Err::<Change<usize>, _>(Error::Conflict(s.key()));
                        }
                        change(s)
                    })
                    .await
            }
        });
        let results = futures::future::join_all(calls).await;
        let stored: SpiderSubnet = engine.store.get_as(None, "s").await.unwrap().unwrap();
        let mut claimed: Vec<String> = stored.claims().into_keys().collect();
        claimed.sort();
        assert_eq!(claimed, ["p0", "p1", "p2", "p4", "p5", "p6", "p7"]);
        for (pool, result) in POOLS.iter().zip(&results) {
            match (*pool, result) {
                ("p3", Err(Error::Conflict(_))) => {}
                (_, Ok(Some((s, _)))) => assert!(s.claims().contains_key(*pool)),
                other => panic!("unexpected {other:?}"),
            }
        }
        // The first writes alone; the seven that queued meanwhile share the second write.
        assert_eq!(writes(&engine), 2);
        // Each saw the changes queued before it, and no refused one.
        let seen: Vec<usize> = results
            .iter()
            .filter_map(|r| r.as_ref().ok()?.as_ref().map(|(_, seen)| *seen))
            .collect();
        assert_eq!(seen, [0, 1, 2, 3, 4, 5, 6]);
    }

    #[tokio::test]
    async fn a_cancelled_leader_hands_the_queue_over() {
        let store = Meddling {
            gate: Some(tokio::sync::Semaphore::new(0)),
            ..Meddling::default()
        };
        let engine = engine(store).await;
        let mut leader =
            Box::pin(engine.modify(None, "s", Part::Status, claim("a", ips!["10.6.1.1"])));
        assert!(
            futures::poll!(&mut leader).is_pending(),
            "waits at the gate"
        );
        let mut waiter =
            Box::pin(engine.modify(None, "s", Part::Status, claim("b", ips!["10.6.1.2"])));
        assert!(
            futures::poll!(&mut waiter).is_pending(),
            "queued behind the leader"
        );
        drop(leader);
        engine.store.gate.as_ref().unwrap().add_permits(10);
        let (s, _) = waiter.await.unwrap().unwrap();
        assert!(s.claims().contains_key("b"));
        assert!(
            !s.claims().contains_key("a"),
            "the cancelled change never landed"
        );
    }

    #[tokio::test]
    async fn a_deferring_leader_syncs_before_answering_a_caller_that_does_not_defer() {
        let engine = engine(Meddling::default()).await;
        let leader = crate::store::deferring_durability(
            &engine.store,
            engine.modify(None, "s", Part::Status, claim("a", ips!["10.6.1.1"])),
        );
        let waiter = engine.modify(None, "s", Part::Status, claim("b", ips!["10.6.1.2"]));
        let (a, b) = futures::join!(leader, waiter);
        assert!(a.unwrap().is_some() && b.unwrap().is_some());
        // One for the waiter, before it hears back; one at the end of the leader's scope.
        assert_eq!(engine.store.syncs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn delete_and_create() {
        let engine = engine(Meddling::default()).await;
        let ep = SpiderEndpoint::new("ns", "pod");
        let created = engine
            .modify_or_create(ep.clone(), Part::Spec, |e: &mut SpiderEndpoint| {
                e.metadata.labels.insert("l".into(), "v".into());
                Ok(Change::Write(()))
            })
            .await
            .unwrap()
            .unwrap();
        assert!(created.0.version().is_some(), "created");
        let untouched = engine
            .modify_or_create(SpiderEndpoint::new("ns", "other"), Part::Spec, |_| {
                Ok(Change::Keep(()))
            })
            .await
            .unwrap();
        assert!(untouched.is_none(), "kept missing");
        engine
            .modify(Some("ns"), "pod", Part::Spec, |_: &mut SpiderEndpoint| {
                Ok(Change::Delete(()))
            })
            .await
            .unwrap()
            .unwrap();
        let gone: Option<SpiderEndpoint> = engine.store.get_as(Some("ns"), "pod").await.unwrap();
        assert!(gone.is_none());
        assert_eq!(writes(&engine), 2);
    }
}
