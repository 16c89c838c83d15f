//! The webhook configurations: one mutating, one validating, both named after the options'
//! `configuration`, written with server-side apply so a second start (or a replica) that
//! registers the same thing changes nothing.

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams};

use super::Reach;
use crate::Error;

/// The field manager of the configurations.
const MANAGER: &str = "berth-webhook";

/// The kinds admitted, as their resources.
pub(crate) const RESOURCES: [&str; 3] = ["spidersubnets", "spiderippools", "spiderreservedips"];

/// The webhook names in both configurations (the API server prints them in refusals).
pub(crate) const MUTATING: &str = "berth-mutate.spiderpool.spidernet.io";
/// See [`MUTATING`].
pub(crate) const VALIDATING: &str = "berth-validate.spiderpool.spidernet.io";

/// How long the API server waits for an answer (at most 30 s in Kubernetes).
const TIMEOUT_SECONDS: i32 = 10;

fn client_config(reach: &Reach, base: &str, path: &str, ca_bundle: &str) -> WebhookClientConfig {
    let ca_bundle = Some(ByteString(ca_bundle.as_bytes().to_vec()));
    match reach {
        Reach::Service {
            namespace,
            name,
            port,
        } => WebhookClientConfig {
            ca_bundle,
            service: Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                path: Some(path.into()),
                port: Some(i32::from(*port)),
            }),
            url: None,
        },
        Reach::Url(_) | Reach::Listen => WebhookClientConfig {
            ca_bundle,
            service: None,
            url: Some(format!("{}{path}", base.trim_end_matches('/'))),
        },
    }
}

fn rules() -> Vec<RuleWithOperations> {
    vec![RuleWithOperations {
        api_groups: Some(vec!["spiderpool.spidernet.io".into()]),
        api_versions: Some(vec!["v2beta1".into()]),
        operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
        // The objects only: `*/status` is not listed, so status writes are not admitted.
        resources: Some(RESOURCES.iter().map(|r| r.to_string()).collect()),
        scope: Some("Cluster".into()),
    }]
}

fn metadata(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        labels: Some(
            [(
                "app.kubernetes.io/managed-by".to_string(),
                "berth".to_string(),
            )]
            .into(),
        ),
        ..Default::default()
    }
}

/// Writes both configurations, pointing at `base` (a URL) or the Service of `reach`, trusting
/// `ca_bundle`.
pub(crate) async fn register(
    client: &kube::Client,
    name: &str,
    reach: &Reach,
    base: &str,
    ca_bundle: &str,
) -> Result<(), Error> {
    let params = PatchParams::apply(MANAGER).force();
    let common = |path: &str| client_config(reach, base, path, ca_bundle);
    let mutating = MutatingWebhookConfiguration {
        metadata: metadata(name),
        webhooks: Some(vec![MutatingWebhook {
            name: MUTATING.into(),
            admission_review_versions: vec!["v1".into()],
            client_config: common("/mutate"),
            failure_policy: Some("Fail".into()),
            match_policy: Some("Equivalent".into()),
            reinvocation_policy: Some("Never".into()),
            rules: Some(rules()),
            side_effects: "None".into(),
            timeout_seconds: Some(TIMEOUT_SECONDS),
            ..Default::default()
        }]),
    };
    let validating = ValidatingWebhookConfiguration {
        metadata: metadata(name),
        webhooks: Some(vec![ValidatingWebhook {
            name: VALIDATING.into(),
            admission_review_versions: vec!["v1".into()],
            client_config: common("/validate"),
            failure_policy: Some("Fail".into()),
            match_policy: Some("Equivalent".into()),
            rules: Some(rules()),
            side_effects: "None".into(),
            timeout_seconds: Some(TIMEOUT_SECONDS),
            ..Default::default()
        }]),
    };
    let api_error = |what: &str, source| Error::Api {
        action: format!("register the {what} {name}"),
        source,
    };
    let typed = |mut v: serde_json::Value, kind: &str| {
        v["apiVersion"] = "admissionregistration.k8s.io/v1".into();
        v["kind"] = kind.into();
        v
    };
    let m = serde_json::to_value(&mutating).expect("configurations serialize");
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(
            name,
            &params,
            &Patch::Apply(typed(m, "MutatingWebhookConfiguration")),
        )
        .await
        .map_err(|e| api_error("MutatingWebhookConfiguration", e))?;
    let v = serde_json::to_value(&validating).expect("configurations serialize");
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch(
            name,
            &params,
            &Patch::Apply(typed(v, "ValidatingWebhookConfiguration")),
        )
        .await
        .map_err(|e| api_error("ValidatingWebhookConfiguration", e))?;
    Ok(())
}
