//! A fault proxy in front of the API server: clients pointed at it (through
//! [`Cluster::proxy_kubeconfig`](crate::Cluster::proxy_kubeconfig)) reach the API server unchanged
//! until a test tells the proxy to misbehave.
//!
//! It is an HTTP proxy, not a TCP one, because one fault needs to see requests: "forward the next
//! mutating request, then drop the connection before the response comes back" (the write happened,
//! the acknowledgement is lost). So it terminates TLS with a certificate from the cluster CA for
//! `127.0.0.1`, and speaks to the API server as a front proxy: with a client certificate from the
//! front-proxy CA, passing the client's identity in `X-Remote-User` / `X-Remote-Group`, as the
//! aggregation layer does (`--requestheader-*` flags). It knows a client's identity from the
//! certificate the harness issued to it; a client with a bearer token instead has its
//! `Authorization` header passed through.
//!
//! Each client connection has its own connection to the API server, so a reset, a restart of the
//! API server or a black hole looks to the client as it would without the proxy.
//!
//! | fault | effect |
//! |---|---|
//! | [`latency`](Proxy::set_latency) | every request waits that long before it is forwarded |
//! | [`black hole`](Proxy::set_black_hole) | nothing moves: new connections hang before TLS, requests are held, streaming responses (watches) stall; all resume when it is lifted |
//! | [`reset`](Proxy::reset_connections) | every open connection is closed with a TCP RST, at once |
//! | [`refuse`](Proxy::set_refuse) | new connections are reset as soon as they are accepted |
//! | [`lose the next acknowledgement`](Proxy::drop_next_mutation_response) | the next POST/PUT/PATCH/DELETE is forwarded and answered, and then its connection is reset instead of the answer reaching the client |
//! | [`lose the next write`](Proxy::drop_next_mutation) | the next POST/PUT/PATCH/DELETE is not forwarded: its connection is reset, the API server never sees it |

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::Error;
use crate::pki::{CertPair, Identity, Pki};

/// The faults in force. Cloned into every connection through a watch channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Faults {
    latency: Duration,
    black_hole: bool,
    refuse: bool,
    /// Bumped by every reset: a connection opened before the bump ends.
    generation: u64,
}

/// A mutating request whose response the proxy withheld.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostAck {
    /// The request's method.
    pub method: String,
    /// Its path and query.
    pub path: String,
    /// The status the API server answered with, which the client never saw.
    pub status: u16,
}

/// Counts of what went through the proxy.
#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
}

struct Shared {
    faults: watch::Sender<Faults>,
    lose_next_ack: Mutex<Option<oneshot::Sender<LostAck>>>,
    lose_next_write: Mutex<Option<oneshot::Sender<LostAck>>>,
    pki: Arc<Pki>,
    upstream: SocketAddr,
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    counters: Counters,
}

/// The fault proxy. Its task runs on the cluster's runtime until the cluster stops.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy on a free port of 127.0.0.1 for the API server at `upstream`.
    pub(crate) async fn start(pki: Arc<Pki>, upstream: SocketAddr) -> Result<Self, Error> {
        // ring, as kube's `ring` feature uses: no post-quantum key exchange, which a test proxy on
        // loopback does not need.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = |e: rustls::Error| Error::Tls(e.to_string());

        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(pki.ca_der())).map_err(tls)?;
        let roots = Arc::new(roots);

        let serving = pki.serving("kube-testbed-proxy")?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| Error::Tls(e.to_string()))?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certificate(&serving)?, key(&serving)?)
            .map_err(tls)?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];

        let front = pki.front_proxy_client()?;
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls)?
            .with_root_certificates(roots)
            .with_client_auth_cert(certificate(&front)?, key(&front)?)
            .map_err(tls)?;
        client.alpn_protocols = vec![b"http/1.1".to_vec()];

        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| crate::io_error("listen on", std::path::Path::new("127.0.0.1:0"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| crate::io_error("read", std::path::Path::new("the proxy's address"), e))?;
        let shared = Arc::new(Shared {
            faults: watch::Sender::new(Faults::default()),
            lose_next_ack: Mutex::new(None),
            lose_next_write: Mutex::new(None),
            pki,
            upstream,
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            counters: Counters::default(),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Self { addr, shared, task })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Delays every request by `latency` before forwarding it (zero: no delay).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.faults.send_modify(|f| f.latency = latency);
    }

    /// Starts or ends a black hole: while it lasts, nothing moves in either direction.
    pub fn set_black_hole(&self, on: bool) {
        self.shared.faults.send_modify(|f| f.black_hole = on);
    }

    /// While on, every new connection is reset as soon as it is accepted.
    pub fn set_refuse(&self, on: bool) {
        self.shared.faults.send_modify(|f| f.refuse = on);
    }

    /// Resets every connection open now (TCP RST); later ones work.
    pub fn reset_connections(&self) {
        self.shared.faults.send_modify(|f| f.generation += 1);
    }

    /// Arms the "acknowledgement lost" fault: the next mutating request is forwarded and answered
    /// by the API server, then the client's connection is reset instead. The receiver learns which
    /// request it was. Arming it again replaces the earlier one.
    pub fn drop_next_mutation_response(&self) -> oneshot::Receiver<LostAck> {
        let (sender, receiver) = oneshot::channel();
        *self.shared.lose_next_ack.lock().expect("proxy fault") = Some(sender);
        receiver
    }

    /// Arms the "write lost" fault: the next mutating request is not forwarded, and the client's
    /// connection is reset, as if the request died on the way. The receiver learns which request
    /// it was (its `status` is 0: nobody answered). Arming it again replaces the earlier one.
    pub fn drop_next_mutation(&self) -> oneshot::Receiver<LostAck> {
        let (sender, receiver) = oneshot::channel();
        *self.shared.lose_next_write.lock().expect("proxy fault") = Some(sender);
        receiver
    }

    /// Lifts every fault: no latency, no black hole, no refusal, no armed lost acknowledgement
    /// or write.
    pub fn heal(&self) {
        self.shared.faults.send_modify(|f| {
            f.latency = Duration::ZERO;
            f.black_hole = false;
            f.refuse = false;
        });
        self.shared
            .lose_next_ack
            .lock()
            .expect("proxy fault")
            .take();
        self.shared
            .lose_next_write
            .lock()
            .expect("proxy fault")
            .take();
    }

    /// Connections accepted and requests forwarded so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.counters.connections.load(Ordering::Relaxed),
            self.shared.counters.requests.load(Ordering::Relaxed),
        )
    }
}

fn certificate(pair: &CertPair) -> Result<Vec<CertificateDer<'static>>, Error> {
    let cert = CertificateDer::from_pem_slice(pair.cert_pem.as_bytes())
        .map_err(|e| Error::Tls(format!("certificate: {e}")))?;
    Ok(vec![cert])
}

fn key(pair: &CertPair) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes())
        .map_err(|e| Error::Tls(format!("private key: {e}")))
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(tcp, shared.clone()));
    }
}

/// Closing a socket with linger 0 sends RST: what a reset or a refusal must look like.
fn set_reset_on_close(tcp: &TcpStream) {
    let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
}

/// Waits until no black hole is in force. Returns false if a reset ended the wait.
async fn through_black_hole(faults: &mut watch::Receiver<Faults>, generation: u64) -> bool {
    loop {
        let current = faults.borrow_and_update().clone();
        if current.generation != generation {
            return false;
        }
        if !current.black_hole {
            return true;
        }
        if faults.changed().await.is_err() {
            return false;
        }
    }
}

/// Resolves when a reset happens after `generation`.
async fn reset_after(mut faults: watch::Receiver<Faults>, generation: u64) {
    loop {
        if faults.borrow_and_update().generation != generation {
            return;
        }
        if faults.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn connection(tcp: TcpStream, shared: Arc<Shared>) {
    set_reset_on_close(&tcp);
    let mut faults = shared.faults.subscribe();
    let generation = faults.borrow().generation;
    if faults.borrow().refuse || !through_black_hole(&mut faults, generation).await {
        return;
    }
    let reset = reset_after(shared.faults.subscribe(), generation);
    tokio::select! {
        _ = serve(tcp, shared.clone()) => {}
        _ = reset => {}
    }
}

async fn serve(tcp: TcpStream, shared: Arc<Shared>) {
    // The upstream connection first: if the API server is down, the client's connection fails
    // as it would without the proxy.
    let Ok(upstream) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    set_reset_on_close(&upstream);
    let server_name = ServerName::IpAddress(shared.upstream.ip().into());
    let Ok(upstream) = shared.connector.connect(server_name, upstream).await else {
        return;
    };
    let Ok(client) = shared.acceptor.accept(tcp).await else {
        return;
    };
    let identity = client
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|cert| shared.pki.identity_of(cert.as_ref()));
    let identity = match identity {
        Some(Some(identity)) => Some(Arc::new(identity)),
        Some(None) => return, // a certificate the harness did not issue
        None => None,         // no certificate: a bearer token, passed through
    };
    let Ok((sender, upstream_conn)) =
        hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await
    else {
        return;
    };
    let upstream_task = tokio::spawn(upstream_conn);
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    let service = hyper::service::service_fn(move |request| {
        forward(request, sender.clone(), identity.clone(), shared.clone())
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(client), service)
        .await;
    upstream_task.abort();
}

type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// Why the proxy answered a request with a closed connection.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("reset by a fault")]
    Fault,
    #[error("the API server's connection failed: {0}")]
    Upstream(#[from] hyper::Error),
}

const X_REMOTE: &str = "x-remote-";

async fn forward(
    mut request: Request<Incoming>,
    sender: Arc<tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Incoming>>>,
    identity: Option<Arc<Identity>>,
    shared: Arc<Shared>,
) -> Result<Response<ProxyBody>, Closed> {
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    let mut faults = shared.faults.subscribe();
    let current = faults.borrow().clone();
    if !current.latency.is_zero() {
        tokio::time::sleep(current.latency).await;
    }
    if !through_black_hole(&mut faults, current.generation).await {
        return Err(Closed::Fault);
    }

    // The identity is the proxy's to assert: drop any the client sent.
    let headers = request.headers_mut();
    let forged: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(X_REMOTE))
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
    if let Some(identity) = &identity {
        if let Ok(user) = HeaderValue::from_str(&identity.user) {
            headers.insert("x-remote-user", user);
        }
        if let Some(group) = identity
            .group
            .as_deref()
            .and_then(|g| HeaderValue::from_str(g).ok())
        {
            headers.insert("x-remote-group", group);
        }
    }

    let mutating = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let (lose_ack, lose_write) = if mutating {
        (
            shared.lose_next_ack.lock().expect("proxy fault").take(),
            shared.lose_next_write.lock().expect("proxy fault").take(),
        )
    } else {
        (None, None)
    };
    let method = request.method().to_string();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    if let Some(lost) = lose_write {
        let _ = lost.send(LostAck {
            method,
            path,
            status: 0,
        });
        return Err(Closed::Fault);
    }

    let response = {
        let mut sender = sender.lock().await;
        sender.ready().await?;
        sender.send_request(request).await?
    };

    if let Some(lost) = lose_ack {
        let status = response.status().as_u16();
        // Read the whole answer, so the write is surely done, then drop it.
        let _ = response.into_body().collect().await;
        let _ = lost.send(LostAck {
            method,
            path,
            status,
        });
        return Err(Closed::Fault);
    }

    let (parts, body) = response.into_parts();
    let generation = current.generation;
    let frames = futures::stream::unfold(
        (body, shared.faults.subscribe()),
        move |(mut body, mut faults)| async move {
            if !through_black_hole(&mut faults, generation).await {
                return None;
            }
            let frame: Result<Frame<Bytes>, hyper::Error> = body.frame().await?;
            Some((frame, (body, faults)))
        },
    );
    Ok(Response::from_parts(
        parts,
        BodyExt::boxed_unsync(StreamBody::new(frames.boxed())),
    ))
}
