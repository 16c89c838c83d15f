//! The agent's HTTP server: a unix socket, one tokio task per connection, clean shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ipam_core::engine::Engine;
use ipam_core::store::{Deleted, Store};
use ipam_store_sled::{OpenOptions, SledStore};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::agent::protocol::{
    self, AddArgs, CheckArgs, DelArgs, DeleteArgs, DeleteResponse, GetArgs, Healthy, ListArgs,
    ListResponse, NetworkGcArgs, ObjectResponse, StoreError, WriteArgs,
};
use crate::agent::record;
use crate::datadir::open_error;
use berth_cni::CniError;
use berth_cni::error::code;

use crate::error::Error;
use crate::ipam::ops;
use crate::ipam::probe::Detection;
use berth_cni::version::Version;

/// Largest request body the agent reads (a `/v1/store/*` write of a big pool).
pub const MAX_BODY: usize = 64 << 20;

/// Where and how [`serve`] listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentOptions {
    /// The unix socket to listen on (created with mode 0600; its parent dir is created if
    /// missing; a stale socket file is replaced).
    pub socket: PathBuf,
    /// The data dir whose store the engine holds: the socket is recorded in
    /// `<data_dir>/agent` while serving (see [`record`]). `None` records nothing.
    pub data_dir: Option<PathBuf>,
}

struct State<S> {
    engine: Arc<Engine<S>>,
    node: String,
    detection: Detection,
    pods: Option<Arc<dyn ops::PodSource>>,
}

/// Binds the agent's socket ([`AgentOptions::socket`], mode 0600) and records it in the data
/// dir, if one is named. The socket accepts connections when this returns: connections made
/// before [`Listening::serve`] runs wait in the backlog, so nobody needs to poll for the socket.
///
/// Fails when the socket cannot be set up, e.g. because another agent listens on it.
pub async fn bind(options: &AgentOptions) -> Result<Listening, Error> {
    let listener = bind_socket(&options.socket).await?;
    listening(listener, options.clone(), true)
}

/// Serves on a socket that a service manager created and listens on (systemd socket
/// activation: [`activated_listener`]), and records it in `data_dir`, if named. The socket's
/// file belongs to the service manager: the agent neither replaces nor removes it.
pub fn adopt(
    listener: std::os::unix::net::UnixListener,
    data_dir: Option<PathBuf>,
) -> Result<Listening, Error> {
    let socket = activated_path(&listener)?;
    adopt_at(listener, socket, data_dir)
}

/// [`adopt`] of a listener whose path the caller has read ([`activated_path`]).
fn adopt_at(
    listener: std::os::unix::net::UnixListener,
    socket: PathBuf,
    data_dir: Option<PathBuf>,
) -> Result<Listening, Error> {
    let listener = listener
        .set_nonblocking(true)
        .and_then(|()| UnixListener::from_std(listener))
        .map_err(|e| Error::io(format!("listening on {}", socket.display()), e))?;
    listening(listener, AgentOptions { socket, data_dir }, false)
}

/// The listening unix socket a service manager passed to this process (systemd socket
/// activation: `LISTEN_FDS` names it, `LISTEN_PID` this process), if any.
///
/// Call it before the process starts threads: it clears `LISTEN_FDS` and `LISTEN_PID`, so
/// that no child takes the socket for its own, and changing the environment is only sound
/// while one thread runs.
pub fn activated_listener() -> Result<Option<std::os::unix::net::UnixListener>, Error> {
    if std::env::var_os("LISTEN_FDS").is_none() {
        return Ok(None);
    }
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() > 1 {
        tracing::warn!(
            passed = fds.len(),
            "socket activation passed several sockets; the agent serves the first"
        );
    }
    fds.take_unix_listener(0).map_err(|e| {
        Error::io(
            "taking the socket passed by socket activation (LISTEN_FDS): it must be a \
             listening unix stream socket (ListenStream=/path in the .socket unit)"
                .to_string(),
            e,
        )
    })
}

/// The path of an activated listener.
fn activated_path(listener: &std::os::unix::net::UnixListener) -> Result<PathBuf, Error> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the activated socket's address".to_string(), e))?;
    addr.as_pathname()
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::Agent {
            msg: "the socket passed by socket activation has no path: use ListenStream=/path \
                  (berth-ipam finds the agent by path)"
                .into(),
            source: None,
        })
}

/// A listener set up, recorded in the data dir if one is named. `owns_socket`: the agent made
/// the socket's file, so it removes it when it stops (or fails here).
fn listening(
    listener: UnixListener,
    options: AgentOptions,
    owns_socket: bool,
) -> Result<Listening, Error> {
    if let Some(dir) = &options.data_dir
        && let Err(source) = record::write_record(dir, &options.socket)
    {
        drop(listener);
        if owns_socket {
            let _ = std::fs::remove_file(&options.socket);
        }
        return Err(Error::io(
            format!("recording the agent socket in {}", dir.display()),
            source,
        ));
    }
    Ok(Listening {
        listener,
        options,
        owns_socket,
        detection: Detection::default(),
        pods: None,
    })
}

/// [`bind`], then [`Listening::serve`].
pub async fn serve<S, F>(
    engine: Arc<Engine<S>>,
    options: &AgentOptions,
    shutdown: F,
) -> Result<(), Error>
where
    S: Store + 'static,
    F: Future<Output = ()>,
{
    bind(options).await?.serve(engine, shutdown).await
}

/// An agent socket that listens ([`bind`]).
pub struct Listening {
    listener: UnixListener,
    options: AgentOptions,
    /// Whether the agent made the socket's file (not so under socket activation).
    owns_socket: bool,
    detection: Detection,
    /// Kubernetes mode: the node served and where its pods' facts come from.
    pods: Option<(String, Arc<dyn ops::PodSource>)>,
}

impl Listening {
    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.options.socket
    }

    /// The agent's detection defaults: every ADD answer marks its addresses with them
    /// (Spiderpool's `enableIPConflictDetection` / `enableGatewayDetection`), and
    /// `berth-ipam` probes accordingly unless the network config says otherwise. Off unless
    /// set.
    pub fn with_detection(mut self, detection: Detection) -> Self {
        self.detection = detection;
        self
    }

    /// Kubernetes mode: the agent serves the pods of `node`, and learns each pod's facts
    /// (labels, annotations, application, namespace) from `pods` instead of the request's
    /// `BERTH_OWNER`. A pod `pods` does not know is refused with code 109.
    pub fn with_pods(mut self, node: impl Into<String>, pods: Arc<dyn ops::PodSource>) -> Self {
        self.pods = Some((node.into(), pods));
        self
    }

    /// Answers `berth-ipam` and remote-store requests on the socket with `engine`, one task per
    /// connection, until `shutdown` completes.
    ///
    /// Concurrency: every connection runs on its own task, and requests share the engine (the
    /// engine merges concurrent writes to one pool, and the sled store shares flushes between
    /// concurrent writers); run it on a multi-thread runtime to use more than one core. When
    /// `shutdown` completes, the agent stops accepting, removes the data-dir record and the
    /// socket (but in Kubernetes mode, [`Listening::with_pods`], where the file stays for the
    /// next agent), lets every request in flight finish and answer, and returns. Every write was
    /// durable before it was acknowledged, so a restarted agent loses nothing it acknowledged.
    pub async fn serve<S, F>(self, engine: Arc<Engine<S>>, shutdown: F) -> Result<(), Error>
    where
        S: Store + 'static,
        F: Future<Output = ()>,
    {
        let Listening {
            listener,
            options,
            owns_socket,
            detection,
            pods,
        } = self;
        // In Kubernetes mode the socket's file stays when the agent stops: a plugin whose
        // config names no socket picks agent mode by the file's presence, and a DaemonSet
        // rollout must find it there (and wait for the next agent) instead of falling back
        // to an embedded store the cluster knows nothing of.
        let owns_socket = owns_socket && pods.is_none();
        let (node, pods) = match pods {
            Some((node, pods)) => (node, Some(pods)),
            None => (ops::node_name(), None),
        };
        let state = Arc::new(State {
            engine,
            node,
            detection,
            pods,
        });
        serve_on(listener, &options, owns_socket, state, shutdown).await
    }
}

async fn serve_on<S, F>(
    listener: UnixListener,
    options: &AgentOptions,
    owns_socket: bool,
    state: Arc<State<S>>,
    shutdown: F,
) -> Result<(), Error>
where
    S: Store + 'static,
    F: Future<Output = ()>,
{
    tracing::info!(socket = %options.socket.display(), data_dir = ?options.data_dir, detection = ?state.detection, node = %state.node, "berth agent listening");
    let (stop_tx, stop_rx) = watch::channel(());
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, Arc::clone(&state), stop_rx.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    tracing::warn!(error = %e, "a connection task failed");
                }
            }
        }
    }
    drop(listener);
    if let Some(dir) = &options.data_dir {
        record::remove_record(dir, &options.socket);
    }
    // An activated socket stays: the service manager listens on it again and starts the
    // agent at the next connection.
    if owns_socket && let Err(e) = std::fs::remove_file(&options.socket) {
        tracing::warn!(socket = %options.socket.display(), error = %e, "cannot remove the socket");
    }
    tracing::info!(
        in_flight = connections.len(),
        "berth agent stopping: no new connections; finishing the requests in flight"
    );
    stop_tx.send_replace(());
    while let Some(done) = connections.join_next().await {
        if let Err(e) = done {
            tracing::warn!(error = %e, "a connection task failed");
        }
    }
    tracing::info!("berth agent stopped");
    Ok(())
}

/// The agent of a data dir, bound ([`bind_data_dir`]): the sled store opened, the socket
/// listening and recorded in the data dir.
pub struct DataDirAgent {
    engine: Arc<Engine<SledStore>>,
    listening: Listening,
}

/// Where an agent listens.
#[derive(Debug)]
pub enum Listen {
    /// A socket the agent binds itself at this path ([`bind`]).
    Bind(PathBuf),
    /// A socket a service manager made and passed ([`activated_listener`], [`adopt`]).
    Activated(std::os::unix::net::UnixListener),
}

/// Opens the sled store in `data_dir` (waiting for its lock), binds `socket` and records it in
/// the data dir. Refuses a data dir that a live agent already serves. The socket accepts
/// connections when this returns.
pub async fn bind_data_dir(data_dir: &Path, socket: &Path) -> Result<DataDirAgent, Error> {
    bind_data_dir_on(data_dir, Listen::Bind(socket.to_path_buf())).await
}

/// [`bind_data_dir`], listening where `listen` says: on a socket of its own or on one a
/// service manager passed (systemd socket activation).
pub async fn bind_data_dir_on(data_dir: &Path, listen: Listen) -> Result<DataDirAgent, Error> {
    let own = match &listen {
        Listen::Bind(path) => path.clone(),
        Listen::Activated(listener) => activated_path(listener)?,
    };
    // Under socket activation a record naming our own socket is not another agent: the
    // service manager listens there (and a connect would land in our own backlog).
    let mine = matches!(listen, Listen::Activated(_))
        && record::read_record(data_dir).as_deref() == Some(own.as_path());
    if !mine && let Some(other) = record::live_agent(data_dir).await {
        return Err(Error::Agent {
            msg: format!(
                "the data dir {} is already served by the berth agent at {}",
                data_dir.display(),
                other.display()
            ),
            source: None,
        });
    }
    let dir = data_dir.to_path_buf();
    let store = tokio::task::spawn_blocking(move || SledStore::open(&dir, OpenOptions::new()))
        .await
        .map_err(|e| Error::internal("opening the store", Some(Box::new(e))))?
        .map_err(open_error)?;
    let listening = match listen {
        Listen::Bind(socket) => {
            bind(&AgentOptions {
                socket,
                data_dir: Some(data_dir.to_path_buf()),
            })
            .await?
        }
        Listen::Activated(listener) => adopt_at(listener, own, Some(data_dir.to_path_buf()))?,
    };
    Ok(DataDirAgent {
        engine: Arc::new(Engine::new(store)),
        listening,
    })
}

impl DataDirAgent {
    /// The socket.
    pub fn socket(&self) -> &Path {
        self.listening.socket()
    }

    /// The agent's detection defaults ([`Listening::with_detection`]).
    pub fn with_detection(mut self, detection: Detection) -> Self {
        self.listening = self.listening.with_detection(detection);
        self
    }

    /// Serves the data dir's store until `shutdown` completes ([`Listening::serve`]), then
    /// closes the store, releasing its lock.
    pub async fn serve<F: Future<Output = ()>>(self, shutdown: F) -> Result<(), Error> {
        let DataDirAgent { engine, listening } = self;
        let result = listening.serve(Arc::clone(&engine), shutdown).await;
        drop(engine);
        result
    }
}

/// [`bind_data_dir`], then [`DataDirAgent::serve`].
pub async fn serve_data_dir<F>(data_dir: &Path, socket: &Path, shutdown: F) -> Result<(), Error>
where
    F: Future<Output = ()>,
{
    bind_data_dir(data_dir, socket).await?.serve(shutdown).await
}

/// A future that completes on SIGTERM or SIGINT, for [`serve`]'s `shutdown`. The handlers
/// are installed when this is called (inside a tokio runtime), so a signal that arrives
/// before the future is first polled is not lost.
pub fn termination_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    })
}

/// Binds `socket` with mode 0600: bound inside a private (0700) directory next to it, made
/// 0600, then renamed into place, so it is never reachable with wider permissions.
async fn bind_socket(socket: &Path) -> Result<UnixListener, Error> {
    let io = |context: String| move |source| Error::io(context, source);
    let parent = socket
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    if let Ok(meta) = std::fs::symlink_metadata(socket) {
        if !meta.file_type().is_socket() {
            return Err(Error::Agent {
                msg: format!(
                    "{} exists and is not a socket; remove it or choose another --socket",
                    socket.display()
                ),
                source: None,
            });
        }
        if record::socket_is_bound(socket).await {
            return Err(Error::Agent {
                msg: format!("another agent listens on {}", socket.display()),
                source: None,
            });
        }
        std::fs::remove_file(socket).map_err(io(format!(
            "removing the stale socket {}",
            socket.display()
        )))?;
    }
    let private = parent.join(format!(".berth-agent.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(io(format!("creating {}", private.display())))?;
    let staged = private.join("s");
    let bound = std::os::unix::net::UnixListener::bind(&staged)
        .and_then(|l| {
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&staged, socket)?;
            Ok(l)
        })
        .map_err(io(format!("binding {}", socket.display())));
    let _ = std::fs::remove_dir_all(&private);
    let listener = bound?;
    listener
        .set_nonblocking(true)
        .and_then(|()| UnixListener::from_std(listener))
        .map_err(io(format!("listening on {}", socket.display())))
}

async fn connection<S: Store + 'static>(
    stream: UnixStream,
    state: Arc<State<S>>,
    mut stop: watch::Receiver<()>,
) {
    let service = service_fn(move |request| handle(Arc::clone(&state), request));
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// What a handler answers.
type Reply = Response<Full<Bytes>>;

async fn handle<S: Store + 'static>(
    state: Arc<State<S>>,
    request: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(cni_answer(Error::Agent {
                msg: format!("cannot read the request body: {e}"),
                source: None,
            }));
        }
    };
    let answer = AssertUnwindSafe(route(&state, &method, &path, &body))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            cni_answer(Error::internal(
                format!("the agent panicked serving {method} {path}: {msg}"),
                None,
            ))
        });
    // A line per call at debug: a node starting pods makes many, back to back. A failure is
    // logged at info.
    let status = answer.status().as_u16();
    let elapsed = started.elapsed();
    if answer.status().is_success() {
        tracing::debug!(%method, %path, status, ?elapsed, "request");
    } else {
        tracing::info!(%method, %path, status, ?elapsed, "request failed");
    }
    Ok(answer)
}

async fn route<S: Store + 'static>(
    state: &State<S>,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Reply {
    let engine = state.engine.as_ref();
    let store = engine.store();
    match (method, path) {
        (&Method::GET, protocol::PATH_HEALTHY) => {
            ipam(async {
                ops::healthy(engine).await?;
                Ok(Healthy {
                    status: "ok".into(),
                })
            })
            .await
        }
        (&Method::POST, protocol::PATH_IP) => {
            ipam(async {
                let args = decode::<AddArgs>(body)?;
                let answer =
                    ops::add_with(engine, &args, &state.node, state.pods.as_deref()).await?;
                Ok(answer.with_detection(state.detection))
            })
            .await
        }
        (&Method::DELETE, protocol::PATH_IP) => {
            ipam(async {
                ops::del_with(engine, &decode::<DelArgs>(body)?, state.pods.as_deref()).await
            })
            .await
        }
        (&Method::POST, protocol::PATH_CHECK) => {
            ipam(async {
                ops::check(engine, &decode::<CheckArgs>(body)?).await?;
                Ok(serde_json::json!({}))
            })
            .await
        }
        (&Method::POST, protocol::PATH_NETWORK_GC) => {
            ipam(async { ops::network_gc(engine, &decode::<NetworkGcArgs>(body)?).await }).await
        }
        (&Method::POST, protocol::PATH_GC) => ipam(ops::gc(engine)).await,
        (&Method::POST, protocol::PATH_STORE_GET) => {
            stored(async {
                let args: GetArgs = decode_store(body)?;
                Ok(ObjectResponse {
                    object: store.get(&args.key).await?,
                })
            })
            .await
        }
        (&Method::POST, protocol::PATH_STORE_LIST) => {
            stored(async {
                let args: ListArgs = decode_store(body)?;
                Ok(ListResponse {
                    items: store
                        .list(args.kind, args.namespace.as_deref(), args.selector.as_ref())
                        .await?,
                })
            })
            .await
        }
        (
            &Method::POST,
            p @ (protocol::PATH_STORE_CREATE
            | protocol::PATH_STORE_UPDATE
            | protocol::PATH_STORE_UPDATE_STATUS),
        ) => {
            stored(async {
                let args: WriteArgs = decode_store(body)?;
                let kind = args.kind;
                let object = match p {
                    protocol::PATH_STORE_CREATE => store.create(kind, args.object).await?,
                    protocol::PATH_STORE_UPDATE => store.update(kind, args.object).await?,
                    _ => store.update_status(kind, args.object).await?,
                };
                Ok(ObjectResponse {
                    object: Some(object),
                })
            })
            .await
        }
        (&Method::POST, protocol::PATH_STORE_DELETE) => {
            stored(async {
                let args: DeleteArgs = decode_store(body)?;
                Ok(
                    match store
                        .delete(&args.key, args.precondition.as_deref())
                        .await?
                    {
                        Deleted::Gone => DeleteResponse::Gone,
                        Deleted::Terminating(object) => DeleteResponse::Terminating { object },
                    },
                )
            })
            .await
        }
        (_, p) if KNOWN_PATHS.contains(&p) => plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        ),
        _ => plain(
            StatusCode::NOT_FOUND,
            format!("no endpoint {method} {path}"),
        ),
    }
}

const KNOWN_PATHS: [&str; 11] = [
    protocol::PATH_HEALTHY,
    protocol::PATH_IP,
    protocol::PATH_CHECK,
    protocol::PATH_NETWORK_GC,
    protocol::PATH_GC,
    protocol::PATH_STORE_GET,
    protocol::PATH_STORE_LIST,
    protocol::PATH_STORE_CREATE,
    protocol::PATH_STORE_UPDATE,
    protocol::PATH_STORE_UPDATE_STATUS,
    protocol::PATH_STORE_DELETE,
];

/// A request body that does not decode: code 6, like bad CNI input.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|source| {
        Error::Cni(berth_cni::Error::Decode {
            what: format!("agent request ({})", short_type_name::<T>()),
            source,
        })
    })
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

struct BadRequest(String);

enum StoreFailure {
    Bad(BadRequest),
    Store(ipam_core::Error),
}

impl From<ipam_core::Error> for StoreFailure {
    fn from(e: ipam_core::Error) -> Self {
        StoreFailure::Store(e)
    }
}

impl From<BadRequest> for StoreFailure {
    fn from(e: BadRequest) -> Self {
        StoreFailure::Bad(e)
    }
}

fn decode_store<T: DeserializeOwned>(body: &[u8]) -> Result<T, BadRequest> {
    serde_json::from_slice(body).map_err(|e| {
        BadRequest(format!(
            "cannot decode the request ({}): {e}",
            short_type_name::<T>()
        ))
    })
}

async fn ipam<T: Serialize>(work: impl Future<Output = Result<T, Error>>) -> Reply {
    match work.await {
        Ok(value) => json(StatusCode::OK, &value),
        Err(e) => cni_answer(e),
    }
}

async fn stored<T: Serialize>(work: impl Future<Output = Result<T, StoreFailure>>) -> Reply {
    match work.await {
        Ok(value) => json(StatusCode::OK, &value),
        Err(StoreFailure::Bad(BadRequest(message))) => {
            json(StatusCode::BAD_REQUEST, &StoreError::Backend { message })
        }
        Err(StoreFailure::Store(e)) => {
            let wire = StoreError::from_error(&e);
            json(wire.status(), &wire)
        }
    }
}

/// A CNI error answer: the error's CNI JSON; 400 for bad input (codes 1–7 but I/O), 500
/// otherwise.
fn cni_answer(err: Error) -> Reply {
    let cni: CniError = err.to_cni_error();
    tracing::warn!(code = cni.code, msg = %cni.msg, details = %cni.details, "agent request failed");
    let bad_input = (code::INCOMPATIBLE_VERSION..=code::INVALID_CONFIG).contains(&cni.code)
        && cni.code != code::IO;
    let status = if bad_input {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    response(status, cni.to_json(Version::LATEST))
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => response(status, body),
        Err(e) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {e}"),
        ),
    }
}

fn response(status: StatusCode, body: Vec<u8>) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn plain(status: StatusCode, text: String) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
