//! The HTTPS server: TLS with a certificate that can change under it, HTTP/1.1, and the
//! AdmissionReview answers.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use ipam_core::engine::{AnyObject, Engine};
use ipam_core::store::Store;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::Value;
use tokio::net::TcpListener;

use super::certs::{self, Material};
use super::{Options, Reach, register};
use crate::Error;

/// The largest AdmissionReview read: an object (up to etcd's 1.5 MiB) and its old version.
const BODY_LIMIT: usize = 4 << 20;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The serving certificate, swapped when it is renewed.
#[derive(Debug)]
struct Served(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Served {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn certified(material: &Material) -> Result<Arc<CertifiedKey>, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, e: &dyn std::fmt::Display| Error::Certificate(format!("{what}: {e}"));
    let chain = CertificateDer::pem_slice_iter(material.tls_crt.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("tls.crt", &e))?;
    let key = PrivateKeyDer::from_pem_slice(material.tls_key.as_bytes())
        .map_err(|e| bad("tls.key", &e))?;
    let key =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| bad("tls.key", &e))?;
    Ok(Arc::new(CertifiedKey::new(chain, key)))
}

pub(crate) struct Server<S: Store> {
    client: kube::Client,
    engine: Arc<Engine<S>>,
    options: Options,
    listener: TcpListener,
    hosts: Vec<String>,
    base: String,
    served: Arc<Served>,
    material: Material,
}

impl<S: Store + 'static> Server<S> {
    pub(crate) async fn bind(
        client: kube::Client,
        engine: Arc<Engine<S>>,
        options: Options,
    ) -> Result<Self, Error> {
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(|e| Error::Webhook(format!("cannot listen on {}: {e}", options.listen)))?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::Webhook(format!("the listening address: {e}")))?;
        let hosts = options.hosts(bound)?;
        let base = match &options.reach {
            Reach::Url(url) => url.clone(),
            Reach::Listen => format!("https://{bound}"),
            Reach::Service {
                namespace,
                name,
                port,
            } => format!("https://{name}.{namespace}.svc:{port}"),
        };
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &options.secret_namespace);
        let material =
            certs::ensure(&secrets, &options.secret_name, &hosts, &options.lifetimes()).await?;
        let served = Arc::new(Served(RwLock::new(certified(&material)?)));
        register::register(
            &client,
            &options.configuration,
            &options.reach,
            &base,
            &material.ca_bundle(),
        )
        .await?;
        Ok(Self {
            client,
            engine,
            options,
            listener,
            hosts,
            base,
            served,
            material,
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub(crate) fn endpoint(&self) -> String {
        self.base.clone()
    }

    /// Reads the Secret again; renews, serves and registers what changed.
    async fn refresh(&mut self) -> Result<(), Error> {
        let secrets: Api<Secret> =
            Api::namespaced(self.client.clone(), &self.options.secret_namespace);
        let material = certs::ensure(
            &secrets,
            &self.options.secret_name,
            &self.hosts,
            &self.options.lifetimes(),
        )
        .await?;
        if material == self.material {
            return Ok(());
        }
        if material.tls_crt != self.material.tls_crt {
            let key = certified(&material)?;
            *self.served.0.write().unwrap_or_else(|p| p.into_inner()) = key;
            tracing::info!(
                serial = certs::facts(&material.tls_crt)
                    .map(|f| f.serial)
                    .unwrap_or_default(),
                "serving a renewed certificate"
            );
        }
        if material.ca_bundle() != self.material.ca_bundle() {
            register::register(
                &self.client,
                &self.options.configuration,
                &self.options.reach,
                &self.base,
                &material.ca_bundle(),
            )
            .await?;
        }
        self.material = material;
        Ok(())
    }

    pub(crate) async fn serve(
        mut self,
        stop: impl std::future::Future<Output = ()> + Send,
        ready: impl FnOnce() + Send,
        timeout: Duration,
    ) -> Result<(), Error> {
        // ring, as kube's client here and the test proxy use it: no post-quantum key exchange,
        // which the API server's Go client does not need.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Certificate(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.served.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let mut tick = tokio::time::interval(self.options.check_every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let probe = probe(self.client.clone(), timeout);
        tokio::pin!(stop, probe);
        let mut ready = Some(ready);
        loop {
            tokio::select! {
                () = &mut stop => return Ok(()),
                proved = &mut probe, if ready.is_some() => {
                    proved?;
                    if let Some(ready) = ready.take() {
                        ready();
                    }
                }
                _ = tick.tick() => {
                    if let Err(e) = self.refresh().await {
                        tracing::warn!(error = %chain(&e), "cannot renew the webhook's certificate; trying again");
                    }
                }
                accepted = self.listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            continue;
                        }
                    };
                    let acceptor = acceptor.clone();
                    let engine = self.engine.clone();
                    tokio::spawn(async move {
                        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                        let service = hyper::service::service_fn(move |request| {
                            let engine = engine.clone();
                            async move { Ok::<_, std::convert::Infallible>(handle(&engine, request).await) }
                        });
                        let io = hyper_util::rt::TokioIo::new(tls);
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await
                        {
                            tracing::debug!(%peer, error = %e, "connection ended");
                        }
                    });
                }
            }
        }
    }
}

/// Until `timeout`: asks the API server for a dry-run create of a SpiderReservedIP without an
/// `ipVersion`, until it comes back with one, which only the mutating webhook sets.
async fn probe(client: kube::Client, timeout: Duration) -> Result<(), Error> {
    let api: Api<DynamicObject> = Api::all_with(
        client,
        &crate::wire::resource(ipam_core::Kind::SpiderReservedIP),
    );
    let object: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1",
        "kind": "SpiderReservedIP",
        "metadata": {"name": "berth-webhook-probe"},
        "spec": {"ips": ["192.0.2.1"]},
    }))
    .expect("a valid object");
    let params = PostParams {
        dry_run: true,
        field_manager: None,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match api.create(&params, &object).await {
            Ok(o) if o.data.pointer("/spec/ipVersion").is_some() => return Ok(()),
            Ok(_) => "the API server did not call the webhook yet".to_string(),
            Err(e) => e.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Webhook(format!(
                "the API server does not call the webhook after {timeout:?}: {last}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

async fn handle<S: Store>(
    engine: &Engine<S>,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let mutating = match (request.method(), request.uri().path()) {
        (&Method::POST, "/mutate") => true,
        (&Method::POST, "/validate") => false,
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n"),
        _ => return text(StatusCode::NOT_FOUND, "not found\n"),
    };
    let body = match Limited::new(request.into_body(), BODY_LIMIT)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return text(StatusCode::PAYLOAD_TOO_LARGE, format!("{e}\n")),
    };
    let answer = review(engine, mutating, &body).await;
    let mut response = text(
        StatusCode::OK,
        serde_json::to_vec(&answer).expect("reviews serialize"),
    );
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// The answer to one AdmissionReview (JSON in `body`): from the mutating webhook when
/// `mutating`, else from the validating one. An object the engine refuses is denied with the
/// engine's message; an object it admits is allowed, with a JSON patch from the mutating
/// webhook when `berth apply` would have stored it otherwise.
pub async fn review<S: Store>(
    engine: &Engine<S>,
    mutating: bool,
    body: &[u8],
) -> AdmissionReview<DynamicObject> {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return AdmissionResponse::invalid(format!("not an AdmissionReview: {e}"))
                .into_review();
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return AdmissionResponse::invalid(e).into_review(),
    };
    let response = AdmissionResponse::from(&request);
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return response.into_review();
    }
    let Some(object) = &request.object else {
        return response.deny("the request has no object").into_review();
    };
    let original = serde_json::to_value(object).expect("objects serialize");
    let old = request
        .old_object
        .as_ref()
        .map(|o| serde_json::to_value(o).expect("objects serialize"));
    let admitted = async {
        let new = AnyObject::from_value(original.clone())?;
        let old = old.map(AnyObject::from_value).transpose()?;
        engine.admit(new, old).await
    }
    .await;
    let admitted = match admitted {
        Ok(a) => a,
        Err(e) => {
            tracing::info!(
                operation = ?request.operation,
                name = %request.name,
                error = %chain(&e),
                "refused"
            );
            return response.deny(chain(&e)).into_review();
        }
    };
    if !mutating {
        return response.into_review();
    }
    let mut wanted = match encode(&admitted) {
        Ok(v) => v,
        Err(e) => return response.deny(chain(&e)).into_review(),
    };
    // The status is the engine's and the controller's, written through /status; an object's
    // own status is left as it came (the API server ignores it anyway).
    match original.get("status") {
        Some(s) => wanted["status"] = s.clone(),
        None => {
            if let Some(o) = wanted.as_object_mut() {
                o.remove("status");
            }
        }
    }
    let patch = json_patch::diff(&original, &wanted);
    if patch.0.is_empty() {
        return response.into_review();
    }
    match response.clone().with_patch(patch) {
        Ok(r) => r.into_review(),
        Err(e) => response.deny(e).into_review(),
    }
}

fn encode(object: &AnyObject) -> Result<Value, ipam_core::Error> {
    use ipam_core::store::encode;
    match object {
        AnyObject::Subnet(o) => encode(o),
        AnyObject::Pool(o) => encode(o),
        AnyObject::ReservedIp(o) => encode(o),
        AnyObject::Deployment(o) => encode(o),
        AnyObject::StatefulSet(o) => encode(o),
    }
}

/// An error and its sources, `: `-separated, as the refusal's message.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        next = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use ipam_core::store::MemStore;
    use ipam_core::{SpiderIPPool, ips};
    use serde_json::json;

    use super::*;

    fn request(operation: &str, object: Value, old: Option<Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "7e1f",
                "kind": {"group": "spiderpool.spidernet.io", "version": "v2beta1", "kind": "SpiderIPPool"},
                "resource": {"group": "spiderpool.spidernet.io", "version": "v2beta1", "resource": "spiderippools"},
                "name": object["metadata"]["name"],
                "operation": operation,
                "userInfo": {"username": "admin"},
                "object": object,
                "oldObject": old,
                "dryRun": false,
            }
        }))
        .unwrap()
    }

    fn pool(name: &str, ips: &str) -> Value {
        json!({
            "apiVersion": "spiderpool.spidernet.io/v2beta1",
            "kind": "SpiderIPPool",
            "metadata": {"name": name, "annotations": {"note": "kept"}},
            "spec": {"subnet": "10.6.0.0/16", "ips": [ips], "vlan": 0},
        })
    }

    fn response(review: AdmissionReview<DynamicObject>) -> Value {
        serde_json::to_value(review).unwrap()["response"].clone()
    }

    async fn engine() -> Engine<MemStore> {
        let engine = Engine::new(MemStore::new());
        engine
            .apply(SpiderIPPool::new(
                "taken",
                "10.6.0.0/16".parse().unwrap(),
                ips!["10.6.1.1-10.6.1.10"],
            ))
            .await
            .unwrap();
        engine
    }

    /// Applies a JSON patch (RFC 6902) the way the API server does. Its bytes come as base64
    /// or, as kube-core writes them, as an array of numbers, which Go's decoder also takes.
    fn patched(object: &Value, response: &Value) -> Value {
        use base64::Engine as _;
        let bytes: Vec<u8> = match &response["patch"] {
            Value::String(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
            other => serde_json::from_value(other.clone()).unwrap(),
        };
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        let mut object = object.clone();
        json_patch::patch(&mut object, &patch).unwrap();
        object
    }

    #[tokio::test]
    async fn the_mutating_webhook_patches_the_object_into_what_apply_stores() {
        let engine = engine().await;
        let object = pool("new", "10.6.2.1-10.6.2.5");
        let answer =
            response(review(&engine, true, &request("CREATE", object.clone(), None)).await);
        assert_eq!(answer["uid"], "7e1f");
        assert_eq!(answer["allowed"], true, "{answer}");
        assert_eq!(answer["patchType"], "JSONPatch");
        let stored = patched(&object, &answer);
        assert_eq!(stored["spec"]["ipVersion"], 4);
        assert!(stored["spec"].get("vlan").is_none());
        assert_eq!(
            stored["metadata"]["labels"]["ipam.spidernet.io/ippool-cidr"],
            "10-6-0-0-16"
        );
        assert_eq!(
            stored["metadata"]["finalizers"],
            json!(["spiderpool.spidernet.io"])
        );
        // What the webhook does not own is left alone.
        assert_eq!(stored["metadata"]["annotations"], json!({"note": "kept"}));
        assert!(stored.get("status").is_none());

        // An object already as apply leaves it needs no patch.
        let again = response(review(&engine, true, &request("CREATE", stored.clone(), None)).await);
        assert_eq!(again["allowed"], true);
        assert!(again.get("patch").is_none(), "{again}");
    }

    #[tokio::test]
    async fn both_webhooks_refuse_what_apply_refuses_with_its_message() {
        let engine = engine().await;
        let overlapping = pool("overlapping", "10.6.1.5-10.6.1.20");
        let expected = engine
            .admit(AnyObject::from_value(overlapping.clone()).unwrap(), None)
            .await
            .unwrap_err()
            .to_string();
        for mutating in [true, false] {
            let answer = response(
                review(
                    &engine,
                    mutating,
                    &request("CREATE", overlapping.clone(), None),
                )
                .await,
            );
            assert_eq!(answer["allowed"], false, "{answer}");
            assert!(
                answer["status"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with(&expected),
                "{answer}"
            );
            assert!(answer.get("patch").is_none());
        }
    }

    #[tokio::test]
    async fn deletes_pass_and_garbage_is_refused() {
        let engine = engine().await;
        let delete = request("DELETE", pool("taken", "10.6.1.1-10.6.1.10"), None);
        assert_eq!(
            response(review(&engine, false, &delete).await)["allowed"],
            true
        );
        let garbage = response(review(&engine, true, b"{\"not\": \"a review\"}").await);
        assert_eq!(garbage["allowed"], false);
        let wrong_kind =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        let answer = response(review(&engine, true, &request("CREATE", wrong_kind, None)).await);
        assert_eq!(answer["allowed"], false, "{answer}");
    }
}
