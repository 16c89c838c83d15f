//! The applications auto pools are sized for: `apps/v1` Deployments and StatefulSets.
//!
//! In embedded mode the CLI keeps these records itself (there is no cluster to ask); in
//! Kubernetes mode they are the cluster's objects. Only the name, uid, replica count, pod
//! template annotations and StatefulSet ordinals matter to Berth; every other field is kept
//! as written.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};

use serde::{Deserialize, Serialize};

use crate::meta::{Kind, Object, ObjectMeta};

/// The shape shared by Deployments and StatefulSets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// `apps/v1`.
    #[serde(default = "apps_v1")]
    pub api_version: String,
    /// `Deployment` or `StatefulSet`.
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: WorkloadSpec,
    /// Status, kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

fn apps_v1() -> String {
    "apps/v1".into()
}

/// `spec` of a Deployment or StatefulSet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// Desired pods; Kubernetes defaults an absent count to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// The pod template.
    #[serde(default)]
    pub template: PodTemplate,
    /// StatefulSet ordinals (`start`, default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordinals: Option<Ordinals>,
    /// Every other field, kept as written.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// `spec.template`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodTemplate {
    /// Labels and annotations of the pods.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Every other field (the pod spec), kept as written.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// `spec.ordinals` of a StatefulSet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ordinals {
    /// The first ordinal.
    #[serde(default)]
    pub start: i32,
}

impl Workload {
    /// A workload with a replica count and pod annotations.
    pub fn new(
        kind: WorkloadKind,
        namespace: &str,
        name: &str,
        replicas: i32,
        annotations: BTreeMap<String, String>,
    ) -> Self {
        Workload {
            api_version: apps_v1(),
            kind: kind.to_string(),
            metadata: ObjectMeta {
                name: name.into(),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            spec: WorkloadSpec {
                replicas: Some(replicas),
                template: PodTemplate {
                    metadata: ObjectMeta {
                        annotations,
                        ..Default::default()
                    },
                    extra: BTreeMap::new(),
                },
                ordinals: None,
                extra: BTreeMap::new(),
            },
            status: None,
        }
    }

    /// The replica count (Kubernetes' default of 1 when absent; negative counts as 0).
    pub fn replicas(&self) -> u32 {
        self.spec.replicas.unwrap_or(1).max(0) as u32
    }

    /// The pod template annotations.
    pub fn pod_annotations(&self) -> &BTreeMap<String, String> {
        &self.spec.template.metadata.annotations
    }

    /// The namespace (`default` when absent).
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }
}

/// Which kind of application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
}

impl WorkloadKind {
    /// The store kind.
    pub fn kind(self) -> Kind {
        match self {
            WorkloadKind::Deployment => Kind::Deployment,
            WorkloadKind::StatefulSet => Kind::StatefulSet,
        }
    }

    /// The workload kind of a kind name (`Deployment`, `StatefulSet`), exactly.
    pub fn parse(s: &str) -> Option<Self> {
        match s.parse::<Kind>().ok()? {
            Kind::Deployment => Some(WorkloadKind::Deployment),
            Kind::StatefulSet => Some(WorkloadKind::StatefulSet),
            _ => None,
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind().name())
    }
}

macro_rules! workload_kind {
    ($(#[$doc:meta])* $t:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $t(pub Workload);

        impl Object for $t {
            const KIND: Kind = Kind::$t;
            fn meta(&self) -> &ObjectMeta {
                &self.0.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.0.metadata
            }
        }

        impl Deref for $t {
            type Target = Workload;
            fn deref(&self) -> &Workload {
                &self.0
            }
        }

        impl DerefMut for $t {
            fn deref_mut(&mut self) -> &mut Workload {
                &mut self.0
            }
        }
    };
}

workload_kind!(
    /// An `apps/v1` Deployment.
    Deployment
);
workload_kind!(
    /// An `apps/v1` StatefulSet.
    StatefulSet
);

/// The kind of a pod's top controller.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AppKind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
    /// `apps/v1` ReplicaSet without a Deployment.
    ReplicaSet,
    /// `apps/v1` DaemonSet.
    DaemonSet,
    /// `batch/v1` Job without a CronJob.
    Job,
    /// `batch/v1` CronJob.
    CronJob,
    /// A pod without a controller.
    Pod,
    /// Another controller (a third party's, such as OpenKruise's `CloneSet`), by its kind name.
    Other(String),
}

impl AppKind {
    /// The kind's name (`Deployment`).
    pub fn as_str(&self) -> &str {
        match self {
            AppKind::Deployment => "Deployment",
            AppKind::StatefulSet => "StatefulSet",
            AppKind::ReplicaSet => "ReplicaSet",
            AppKind::DaemonSet => "DaemonSet",
            AppKind::Job => "Job",
            AppKind::CronJob => "CronJob",
            AppKind::Pod => "Pod",
            AppKind::Other(kind) => kind,
        }
    }
}

impl From<&str> for AppKind {
    fn from(kind: &str) -> Self {
        match kind {
            "Deployment" => AppKind::Deployment,
            "StatefulSet" => AppKind::StatefulSet,
            "ReplicaSet" => AppKind::ReplicaSet,
            "DaemonSet" => AppKind::DaemonSet,
            "Job" => AppKind::Job,
            "CronJob" => AppKind::CronJob,
            "Pod" => AppKind::Pod,
            other => AppKind::Other(other.to_owned()),
        }
    }
}

impl From<WorkloadKind> for AppKind {
    fn from(kind: WorkloadKind) -> Self {
        match kind {
            WorkloadKind::Deployment => AppKind::Deployment,
            WorkloadKind::StatefulSet => AppKind::StatefulSet,
        }
    }
}

impl fmt::Display for AppKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The application a pod belongs to (its top controller), as auto pools record it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppRef {
    /// API group (`apps`; empty for core).
    pub group: String,
    /// API version (`v1`).
    pub version: String,
    /// Kind.
    pub kind: AppKind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl AppRef {
    /// The application of a workload (its group and version from its `apiVersion`:
    /// `apps/v1`, `batch/v1`).
    pub fn of(w: &Workload) -> Self {
        let (group, version) = match w.api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", w.api_version.as_str()),
        };
        AppRef {
            group: group.into(),
            version: version.into(),
            kind: AppKind::from(w.kind.as_str()),
            namespace: w.namespace().to_string(),
            name: w.metadata.name.clone(),
        }
    }

    /// An `apps/v1` application.
    pub fn apps_v1(kind: WorkloadKind, namespace: &str, name: &str) -> Self {
        AppRef {
            group: "apps".into(),
            version: "v1".into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// `apps_v1`, as in the `owner-application-gv` label.
    pub fn gv_label(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}_{}", self.group, self.version)
        }
    }

    /// The group and version of a [`gv_label`](Self::gv_label): `apps_v1` is `("apps", "v1")`,
    /// `v1` (the core group) is `("", "v1")`.
    pub fn parse_gv_label(gv: &str) -> (String, String) {
        match gv.split_once('_') {
            Some((group, version)) => (group.to_string(), version.to_string()),
            None => (String::new(), gv.to_string()),
        }
    }

    /// `apps_v1_Deployment_default_test-app`, as in `controlledIPPools[].application`.
    pub fn application_id(&self) -> String {
        format!(
            "{}_{}_{}_{}",
            self.gv_label(),
            self.kind,
            self.namespace,
            self.name
        )
    }

    /// The workload kind, for apps/v1 Deployments and StatefulSets.
    pub fn workload_kind(&self) -> Option<WorkloadKind> {
        match (self.group.as_str(), &self.kind) {
            ("apps", AppKind::Deployment) => Some(WorkloadKind::Deployment),
            ("apps", AppKind::StatefulSet) => Some(WorkloadKind::StatefulSet),
            _ => None,
        }
    }
}

/// An application id that does not read as `<group>_<version>_<Kind>_<namespace>_<name>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid application id {0:?}; expected <group>_<version>_<Kind>_<namespace>_<name>")]
pub struct InvalidApplicationId(pub String);

impl std::str::FromStr for AppRef {
    type Err = InvalidApplicationId;

    /// Reads an [`AppRef::application_id`] (`apps_v1_Deployment_default_web`, or
    /// `v1_Pod_default_web` for the core group): names and namespaces hold no `_`.
    fn from_str(id: &str) -> Result<AppRef, InvalidApplicationId> {
        let invalid = || InvalidApplicationId(id.to_owned());
        let mut parts = id.rsplitn(4, '_');
        let (Some(name), Some(namespace), Some(kind), Some(gv)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        if [name, namespace, kind, gv].iter().any(|p| p.is_empty()) {
            return Err(invalid());
        }
        let (group, version) = gv.split_once('_').unwrap_or(("", gv));
        Ok(AppRef {
            group: group.into(),
            version: version.into(),
            kind: AppKind::from(kind),
            namespace: namespace.into(),
            name: name.into(),
        })
    }
}

/// `Option<AppRef>` as the application id string Spiderpool writes
/// (`#[serde(with = "application_id")]`).
pub(crate) mod application_id {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::AppRef;

    pub(crate) fn serialize<S: Serializer>(app: &Option<AppRef>, s: S) -> Result<S::Ok, S::Error> {
        match app {
            Some(app) => s.serialize_some(&app.application_id()),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AppRef>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|id| id.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl fmt::Display for AppRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} \"{}/{}\"", self.kind, self.namespace, self.name)
    }
}

/// The ordinal of a StatefulSet pod: `web-3` of StatefulSet `web` is 3.
pub fn pod_ordinal(pod_name: &str, statefulset: &str) -> Option<u32> {
    let rest = pod_name.strip_prefix(statefulset)?.strip_prefix('-')?;
    if rest.is_empty()
        || !rest.bytes().all(|b| b.is_ascii_digit())
        || (rest.len() > 1 && rest.starts_with('0'))
    {
        return None;
    }
    rest.parse().ok()
}

impl StatefulSet {
    /// Whether a pod name is one the StatefulSet keeps at its current replica count, so its
    /// IPs must stay reserved for it across restarts.
    pub fn keeps(&self, pod_name: &str) -> bool {
        let Some(ord) = pod_ordinal(pod_name, &self.metadata.name) else {
            return false;
        };
        let start = self.spec.ordinals.as_ref().map_or(0, |o| o.start.max(0)) as u64;
        let ord = ord as u64;
        ord >= start && ord < start + self.replicas() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_ids_read_back_typed() {
        let app = AppRef::apps_v1(WorkloadKind::Deployment, "default", "test-app");
        assert_eq!(app.application_id(), "apps_v1_Deployment_default_test-app");
        assert_eq!(app.application_id().parse::<AppRef>(), Ok(app.clone()));
        assert_eq!(app.workload_kind(), Some(WorkloadKind::Deployment));
        let pod: AppRef = "v1_Pod_ns_p".parse().unwrap();
        assert_eq!((pod.group.as_str(), &pod.kind), ("", &AppKind::Pod));
        assert_eq!(pod.workload_kind(), None);
        let clone_set: AppRef = "apps.kruise.io_v1alpha1_CloneSet_ns_web".parse().unwrap();
        assert_eq!(clone_set.kind, AppKind::Other("CloneSet".into()));
        assert_eq!(
            clone_set.application_id(),
            "apps.kruise.io_v1alpha1_CloneSet_ns_web"
        );
        for bad in ["garbage", "a_b_c", "apps_v1_Deployment__web"] {
            assert!(bad.parse::<AppRef>().is_err(), "{bad}");
        }
        // In a subnet's claims, as Spiderpool writes it.
        let claim: crate::subnet::PoolClaim = serde_json::from_value(serde_json::json!({
            "ips": ["10.6.168.171-10.6.168.173"],
            "application": "apps_v1_Deployment_default_test-app"
        }))
        .unwrap();
        assert_eq!(claim.application, Some(app));
        assert_eq!(
            serde_json::to_value(&claim).unwrap()["application"],
            "apps_v1_Deployment_default_test-app"
        );
    }

    const SEED: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: test-app
spec:
  replicas: 2
  selector:
    matchLabels:
      app: test-app
  template:
    metadata:
      annotations:
        ipam.spidernet.io/ippool-ip-number: '+1'
        v1.multus-cni.io/default-network: kube-system/macvlan-conf-ens192
      labels:
        app: test-app
    spec:
      containers:
      - name: test-app
        image: nginx
"#;

    #[test]
    fn the_seed_deployment_parses_and_keeps_its_pod_spec() {
        let d: Deployment = serde_yaml::from_str(SEED).unwrap();
        assert_eq!(d.replicas(), 2);
        assert_eq!(d.namespace(), "default");
        assert_eq!(
            d.pod_annotations()["ipam.spidernet.io/ippool-ip-number"],
            "+1"
        );
        let back = serde_json::to_value(&d).unwrap();
        assert_eq!(
            back["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx"
        );
        assert_eq!(back["spec"]["selector"]["matchLabels"]["app"], "test-app");
        assert_eq!(d.key().to_string(), r#"Deployment "default/test-app""#);
        assert_eq!(
            AppRef::of(&d).application_id(),
            "apps_v1_Deployment_default_test-app"
        );
    }

    #[test]
    fn statefulset_keeps_pods_below_the_replica_count() {
        let mut s = StatefulSet(Workload::new(
            WorkloadKind::StatefulSet,
            "default",
            "web",
            2,
            BTreeMap::new(),
        ));
        assert!(s.keeps("web-0") && s.keeps("web-1"));
        assert!(!s.keeps("web-2") && !s.keeps("web-01") && !s.keeps("webx-0") && !s.keeps("web-"));
        s.spec.ordinals = Some(Ordinals { start: 5 });
        assert!(!s.keeps("web-0") && s.keeps("web-5") && s.keeps("web-6") && !s.keeps("web-7"));
        assert_eq!(pod_ordinal("my-db-12", "my-db"), Some(12));
    }
}
