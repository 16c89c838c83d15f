//! The applications a cluster has besides Deployments and StatefulSets: ReplicaSets,
//! DaemonSets, Jobs and CronJobs, read from the API server for the engine
//! ([`WorkloadSource`]), so their pods get auto pools sized as Spiderpool sizes them:
//!
//! | kind | replicas | pod template |
//! |---|---|---|
//! | ReplicaSet (`apps/v1`) | `spec.replicas` (default 1) | `spec.template` |
//! | DaemonSet (`apps/v1`) | `status.desiredNumberScheduled` (0 until the controller counts) | `spec.template` |
//! | Job (`batch/v1`) | `spec.parallelism` (default 1) | `spec.template` |
//! | CronJob (`batch/v1`) | `spec.jobTemplate.spec.parallelism` (default 1) | `spec.jobTemplate.spec.template` |
//!
//! A ReplicaSet that a Deployment controls and a Job that a CronJob controls are not
//! applications of their own: their pods belong to the Deployment's or CronJob's pools.

use ipam_core::engine::WorkloadSource;
use ipam_core::{AppKind, AppRef, Workload};
use k8s_openapi::api::apps::v1::{DaemonSet, ReplicaSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use serde_json::json;

/// The kinds this source answers for, with their API group.
pub const KINDS: [(AppKind, &str); 4] = [
    (AppKind::ReplicaSet, "apps"),
    (AppKind::DaemonSet, "apps"),
    (AppKind::Job, "batch"),
    (AppKind::CronJob, "batch"),
];

/// Applications of the kinds in [`KINDS`], read from the API server at each ask.
#[derive(Clone)]
pub struct KubeWorkloads {
    client: kube::Client,
}

impl KubeWorkloads {
    /// Reads through `client`.
    pub fn new(client: kube::Client) -> Self {
        KubeWorkloads { client }
    }
}

/// Whether an object is controlled by another (a Deployment's ReplicaSet, a CronJob's Job).
fn controlled(meta: &ObjectMeta) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true))
}

/// The engine's view of an application: its identity, replicas and pod annotations.
fn workload(
    app: &AppRef,
    meta: &ObjectMeta,
    replicas: i32,
    template: Option<&PodTemplateSpec>,
) -> Result<Workload, ipam_core::Error> {
    let annotations = template
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    let value = json!({
        "apiVersion": format!("{}/{}", app.group, app.version),
        "kind": app.kind.as_str(),
        "metadata": {
            "name": meta.name,
            "namespace": meta.namespace,
            "uid": meta.uid,
        },
        "spec": {
            "replicas": replicas,
            "template": {"metadata": {"annotations": annotations}},
        },
    });
    serde_json::from_value(value).map_err(|e| ipam_core::Error::Workload {
        workload: app.to_string(),
        reason: e.to_string(),
    })
}

impl KubeWorkloads {
    /// `name` of `api`, within the store's deadline.
    async fn get<K>(&self, api: Api<K>, app: &AppRef) -> Result<Option<K>, ipam_core::Error>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        crate::wire::ask(crate::DEFAULT_DEADLINE, || api.get_opt(&app.name))
            .await
            .ok_or_else(|| {
                ipam_core::Error::unavailable(format!("read {app}"), "no answer in time")
            })?
            .map_err(|e| ipam_core::Error::unavailable(format!("read {app}"), e))
    }
}

#[async_trait::async_trait]
impl WorkloadSource for KubeWorkloads {
    async fn workload(&self, app: &AppRef) -> Result<Option<Workload>, ipam_core::Error> {
        let (client, ns) = (self.client.clone(), app.namespace.as_str());
        let found = match (app.group.as_str(), &app.kind) {
            ("apps", AppKind::ReplicaSet) => self
                .get(Api::<ReplicaSet>::namespaced(client, ns), app)
                .await?
                .filter(|o| !controlled(&o.metadata))
                .map(|o| {
                    let replicas = o.spec.replicas.unwrap_or(1);
                    (o.metadata, replicas, o.spec.template)
                }),
            ("apps", AppKind::DaemonSet) => self
                .get(Api::<DaemonSet>::namespaced(client, ns), app)
                .await?
                .map(|o| {
                    let replicas = o.status.map_or(0, |s| s.desired_number_scheduled);
                    (o.metadata, replicas, Some(o.spec.template))
                }),
            ("batch", AppKind::Job) => self
                .get(Api::<Job>::namespaced(client, ns), app)
                .await?
                .filter(|o| !controlled(&o.metadata))
                .map(|o| {
                    let spec = o.spec;
                    let replicas = spec.as_ref().and_then(|s| s.parallelism).unwrap_or(1);
                    (o.metadata, replicas, spec.map(|s| s.template))
                }),
            ("batch", AppKind::CronJob) => self
                .get(Api::<CronJob>::namespaced(client, ns), app)
                .await?
                .map(|o| {
                    let job = o.spec.job_template.spec;
                    let replicas = job.as_ref().and_then(|s| s.parallelism).unwrap_or(1);
                    (o.metadata, replicas, job.map(|s| s.template))
                }),
            _ => None,
        };
        found
            .map(|(meta, replicas, template)| workload(app, &meta, replicas, template.as_ref()))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_application_of_another_kind_is_a_workload_the_engine_sizes() {
        let app = AppRef {
            group: "batch".into(),
            version: "v1".into(),
            kind: AppKind::Job,
            namespace: "ns".into(),
            name: "backup".into(),
        };
        let meta = ObjectMeta {
            name: Some("backup".into()),
            namespace: Some("ns".into()),
            uid: Some("0000-1111".into()),
            ..Default::default()
        };
        let template = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                annotations: Some(
                    [(
                        "ipam.spidernet.io/ippool-ip-number".to_string(),
                        "+1".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            }),
            spec: None,
        };
        let w = workload(&app, &meta, 3, Some(&template)).unwrap();
        assert_eq!(AppRef::of(&w), app);
        assert_eq!(w.replicas(), 3);
        assert_eq!(w.metadata.uid.as_deref(), Some("0000-1111"));
        assert_eq!(
            w.pod_annotations()["ipam.spidernet.io/ippool-ip-number"],
            "+1"
        );
        let mut owned = meta.clone();
        assert!(!controlled(&owned));
        owned.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                controller: Some(true),
                ..Default::default()
            },
        ]);
        assert!(controlled(&owned));
    }
}
