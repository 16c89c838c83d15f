//! The client side of the agent protocol: one HTTP/1.1 request per connection over the
//! agent's unix socket (like Spiderpool's plugin, which disables keep-alive).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::agent::protocol::{
    self, AddArgs, AddResponse, CheckArgs, DelArgs, DelResponse, GcResponse, Healthy, NetworkGcArgs,
};
use berth_cni::CniError;
use berth_cni::error::BoxError;

use crate::error::Error;

/// How long one request may take, connection included, unless set otherwise. Generous: a
/// busy agent queues requests behind its disk's flushes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a request keeps trying to connect while nothing listens on the socket (refused,
/// or the socket file missing), unless set otherwise. An agent being upgraded (a DaemonSet
/// rollout, a `systemctl restart`) closes its listener after its last request and the next
/// one binds a moment later; the ADDs a runtime makes in between wait for it instead of
/// failing. No request has been sent when a connect fails, so retrying it is always safe.
pub const DEFAULT_RECONNECT: Duration = Duration::from_secs(15);

/// The first pause between connect attempts; it doubles up to [`RECONNECT_PAUSE_MAX`].
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);
const RECONNECT_PAUSE_MAX: Duration = Duration::from_millis(500);

/// Whether a failed connect means "nothing listens yet" (worth waiting for), not a
/// misconfiguration.
fn not_listening(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
    )
}

/// How one exchange with the agent failed.
enum Exchange {
    /// The agent went away before it answered: worth sending again once it is back.
    AgentGone(BoxError),
    /// Anything else.
    Failed(BoxError),
}

/// A raw answer: status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

/// A client of the agent at one socket path. Cheap to clone; holds no connection.
#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
    timeout: Duration,
    reconnect: Duration,
}

impl AgentClient {
    /// A client of the agent listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        AgentClient {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
            reconnect: DEFAULT_RECONNECT,
        }
    }

    /// Sets how long a request waits for an agent that does not listen yet
    /// ([`DEFAULT_RECONNECT`]); zero fails at once.
    pub fn with_reconnect(mut self, reconnect: Duration) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// Sets the per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request (a JSON body when given) and reads the whole answer. Fails only on
    /// transport errors and timeouts; any HTTP status is an answer.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, BoxError> {
        match tokio::time::timeout(self.timeout, self.request_inner(method, path, body)).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {:?}", self.timeout).into()),
        }
    }

    async fn request_inner(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, BoxError> {
        // A full backlog (EAGAIN) means a busy agent, not a missing one: wait for room,
        // within the request's timeout. An agent that does not listen yet is waited for up to
        // the reconnect bound.
        let started = std::time::Instant::now();
        let mut pause = RECONNECT_PAUSE;
        let stream = loop {
            match tokio::net::UnixStream::connect(&self.socket).await {
                Ok(stream) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(e) if not_listening(&e) && started.elapsed() < self.reconnect => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RECONNECT_PAUSE_MAX);
                }
                Err(e) => return Err(self.connect_error(e, started)),
            }
        };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "agent connection ended with an error");
            }
        });
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "berth-agent")
            .header(header::CONNECTION, "close");
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        drop(sender);
        driver.abort();
        Ok(Answer { status, body })
    }

    /// An IPAM call: JSON in, JSON out; an error answer carrying a CNI error is passed on as
    /// [`Error::Cni`] (its code intact), anything else is [`Error::Agent`] (103).
    async fn ipam<A: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        args: Option<&A>,
    ) -> Result<R, Error> {
        let body = encode(args)?;
        let answer = self.request(method.clone(), path, body).await;
        self.decode(&method, path, answer)
    }

    /// [`Self::ipam`] on a blocking socket, with no async runtime: what a plugin process that
    /// makes one call and exits needs, and no more (an async runtime and an HTTP stack cost
    /// it a tenth of a millisecond of CPU and page faults, as much again as the call).
    fn ipam_blocking<A: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        args: Option<&A>,
    ) -> Result<R, Error> {
        let body = encode(args)?;
        let answer = self.request_blocking(&method, path, body.as_deref());
        self.decode(&method, path, answer)
    }

    /// The error of a connect that will not be retried, saying how long it was retried.
    fn connect_error(&self, e: std::io::Error, started: std::time::Instant) -> BoxError {
        if not_listening(&e) && !self.reconnect.is_zero() {
            format!(
                "{e} (nothing listened on {} for {:.1?})",
                self.socket.display(),
                started.elapsed()
            )
            .into()
        } else {
            e.into()
        }
    }

    /// One request on a blocking unix socket: HTTP/1.1 with `Connection: close`, the answer
    /// read to the end of the stream. Reads and writes time out after the client's timeout;
    /// the connect itself waits while the agent's listen queue is full, and for an agent that
    /// does not listen yet up to the reconnect bound ([`DEFAULT_RECONNECT`]).
    ///
    /// An agent that dies before it answers (the connection is reset, or closes with no
    /// answer at all) is given the request again once it listens, within the same bound. So
    /// this is for idempotent requests only, as the IPAM calls are: a repeated ADD of the same
    /// container and interface returns the same IPs, and a repeated DEL releases nothing more.
    pub fn request_blocking(
        &self,
        method: &Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Answer, BoxError> {
        let started = std::time::Instant::now();
        let mut pause = RECONNECT_PAUSE;
        loop {
            match self.exchange(method, path, body, started) {
                Err(Exchange::AgentGone(e)) if started.elapsed() < self.reconnect => {
                    tracing::debug!(error = %e, "the agent went away before it answered; sending again");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(RECONNECT_PAUSE_MAX);
                }
                Err(Exchange::AgentGone(e) | Exchange::Failed(e)) => return Err(e),
                Ok(raw) => return parse_response(&raw),
            }
        }
    }

    /// Connects, sends one request and reads the raw answer to the end of the stream.
    fn exchange(
        &self,
        method: &Method,
        path: &str,
        body: Option<&[u8]>,
        started: std::time::Instant,
    ) -> Result<Vec<u8>, Exchange> {
        use std::io::{Read, Write};
        let mut pause = RECONNECT_PAUSE;
        let mut stream = loop {
            match std::os::unix::net::UnixStream::connect(&self.socket) {
                Ok(stream) => break stream,
                Err(e) if not_listening(&e) && started.elapsed() < self.reconnect => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(RECONNECT_PAUSE_MAX);
                }
                Err(e) => return Err(Exchange::Failed(self.connect_error(e, started))),
            }
        };
        let failed = |e: std::io::Error| Exchange::Failed(e.into());
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(failed)?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(failed)?;
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nhost: berth-agent\r\nconnection: close\r\n");
        if let Some(body) = body {
            request.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body.unwrap_or_default());
        let gone = |e: std::io::Error| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) {
                Exchange::AgentGone(e.into())
            } else if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                Exchange::Failed(format!("no answer within {:?}", self.timeout).into())
            } else {
                Exchange::Failed(e.into())
            }
        };
        stream.write_all(&bytes).map_err(gone)?;
        let mut raw = Vec::with_capacity(4096);
        stream.read_to_end(&mut raw).map_err(gone)?;
        if raw.is_empty() {
            return Err(Exchange::AgentGone(
                "the agent closed the connection without an answer".into(),
            ));
        }
        Ok(raw)
    }

    fn decode<R: DeserializeOwned>(
        &self,
        method: &Method,
        path: &str,
        answer: Result<Answer, BoxError>,
    ) -> Result<R, Error> {
        let answer = answer.map_err(|source| Error::Agent {
            msg: format!(
                "cannot reach the berth agent at {} ({method} {path}); start it with \
                 `berth agent --socket {}` or fix ipam_unix_socket_path",
                self.socket.display(),
                self.socket.display()
            ),
            source: Some(source),
        })?;
        if answer.status.is_success() {
            return serde_json::from_slice(&answer.body).map_err(|e| Error::Agent {
                msg: format!("the berth agent answered {method} {path} with garbage"),
                source: Some(Box::new(e)),
            });
        }
        match serde_json::from_slice::<CniError>(&answer.body) {
            Ok(cni) => Err(Error::Cni(berth_cni::Error::Cni(cni))),
            Err(_) => Err(Error::Agent {
                msg: format!(
                    "the berth agent answered {method} {path} with {}: {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                ),
                source: None,
            }),
        }
    }

    /// `POST /v1/ipam/ip`.
    pub async fn add(&self, args: &AddArgs) -> Result<AddResponse, Error> {
        self.ipam(Method::POST, protocol::PATH_IP, Some(args)).await
    }

    /// `DELETE /v1/ipam/ip`.
    pub async fn del(&self, args: &DelArgs) -> Result<DelResponse, Error> {
        self.ipam(Method::DELETE, protocol::PATH_IP, Some(args))
            .await
    }

    /// `POST /v1/ipam/check`.
    pub async fn check(&self, args: &CheckArgs) -> Result<(), Error> {
        self.ipam::<_, serde_json::Value>(Method::POST, protocol::PATH_CHECK, Some(args))
            .await
            .map(drop)
    }

    /// `POST /v1/ipam/gc`.
    pub async fn network_gc(&self, args: &NetworkGcArgs) -> Result<GcResponse, Error> {
        self.ipam(Method::POST, protocol::PATH_NETWORK_GC, Some(args))
            .await
    }

    /// `POST /v1/gc`: `berth gc` run by the agent.
    pub async fn gc(&self) -> Result<GcResponse, Error> {
        self.ipam(
            Method::POST,
            protocol::PATH_GC,
            Some(&serde_json::json!({})),
        )
        .await
    }

    /// `GET /v1/ipam/healthy`.
    pub async fn healthy(&self) -> Result<(), Error> {
        self.ipam::<(), Healthy>(Method::GET, protocol::PATH_HEALTHY, None)
            .await
            .map(drop)
    }

    /// [`Self::add`], blocking (see [`Self::request_blocking`]).
    pub fn add_blocking(&self, args: &AddArgs) -> Result<AddResponse, Error> {
        self.ipam_blocking(Method::POST, protocol::PATH_IP, Some(args))
    }

    /// [`Self::del`], blocking.
    pub fn del_blocking(&self, args: &DelArgs) -> Result<DelResponse, Error> {
        self.ipam_blocking(Method::DELETE, protocol::PATH_IP, Some(args))
    }

    /// [`Self::check`], blocking.
    pub fn check_blocking(&self, args: &CheckArgs) -> Result<(), Error> {
        self.ipam_blocking::<_, serde_json::Value>(Method::POST, protocol::PATH_CHECK, Some(args))
            .map(drop)
    }
}

fn encode<A: Serialize>(args: Option<&A>) -> Result<Option<Vec<u8>>, Error> {
    args.map(serde_json::to_vec)
        .transpose()
        .map_err(|e| Error::internal("encoding an agent request", Some(Box::new(e))))
}

/// An HTTP/1.1 answer read to the end of the stream: the status line, the headers, and the
/// body (its `content-length` bytes when the header is there; a chunked body is refused, which
/// the agent never sends).
fn parse_response(raw: &[u8]) -> Result<Answer, BoxError> {
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(format!(
            "the answer ended before its headers did ({} bytes)",
            raw.len()
        )
        .into());
    };
    let head = std::str::from_utf8(&raw[..head_end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .ok_or_else(|| format!("not an HTTP/1.x status line: {status_line:?}"))?;
    let status = StatusCode::from_bytes(status.as_bytes())?;
    let mut body = &raw[head_end + 4..];
    for line in lines {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && !value.eq_ignore_ascii_case("identity")
        {
            return Err(format!("an answer with transfer-encoding {value} (not supported)").into());
        }
        if name.eq_ignore_ascii_case("content-length") {
            let len: usize = value.parse()?;
            if body.len() < len {
                return Err(format!(
                    "the answer ended after {} of its {len} body bytes",
                    body.len()
                )
                .into());
            }
            body = &body[..len];
        }
    }
    Ok(Answer {
        status,
        body: Bytes::copy_from_slice(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_and_truncated_ones_are_refused() {
        let ok = parse_response(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        )
        .unwrap();
        assert_eq!((ok.status, &ok.body[..]), (StatusCode::OK, &b"{}"[..]));
        let no_length =
            parse_response(b"HTTP/1.1 500 Internal Server Error\r\n\r\n{\"code\":11}").unwrap();
        assert_eq!(no_length.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(&no_length.body[..], b"{\"code\":11}");
        for bad in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// An agent that binds its socket a moment after the request (a restart) answers it; a
    /// socket nobody binds fails once the reconnect bound has passed, naming the socket.
    #[test]
    fn a_request_waits_for_an_agent_that_is_restarting() {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        // The old agent's socket file is left behind, with nothing listening: refused.
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let path = socket.clone();
        let agent = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            std::fs::remove_file(&path).unwrap();
            let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = conn.read(&mut request).unwrap();
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                .unwrap();
        });
        let answer = AgentClient::new(&socket)
            .request_blocking(&Method::GET, "/healthz", None)
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        agent.join().unwrap();

        let missing = dir.path().join("never.sock");
        let e = AgentClient::new(&missing)
            .with_reconnect(Duration::from_millis(200))
            .request_blocking(&Method::GET, "/healthz", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("never.sock") && e.contains("nothing listened"),
            "{e}"
        );
        let refused = AgentClient::new(&socket)
            .with_reconnect(Duration::ZERO)
            .request_blocking(&Method::GET, "/healthz", None)
            .unwrap_err();
        assert!(
            !refused.to_string().contains("nothing listened"),
            "{refused}"
        );
    }

    /// An agent killed after it read a request, before it answered, is sent the same request
    /// again once it is back; with no time left to wait, the error says what happened.
    #[test]
    fn a_request_is_sent_again_when_the_agent_dies_before_answering() {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let agent = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in [false, true] {
                let (mut conn, _) = listener.accept().unwrap();
                let mut request = vec![0u8; 1024];
                let n = conn.read(&mut request).unwrap();
                seen.push(String::from_utf8_lossy(&request[..n]).into_owned());
                if answer {
                    conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                        .unwrap();
                }
                // Dropping the connection unanswered is what a SIGKILLed agent does.
            }
            seen
        });
        let answer = AgentClient::new(&socket)
            .request_blocking(&Method::POST, "/v1/ipam/ip", Some(b"{\"a\":1}"))
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        let seen = agent.join().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], seen[1], "the same request both times");

        let listener = std::os::unix::net::UnixListener::bind(dir.path().join("b.sock")).unwrap();
        let dies = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let _ = conn.read(&mut [0u8; 1024]).unwrap();
        });
        let e = AgentClient::new(dir.path().join("b.sock"))
            .with_reconnect(Duration::ZERO)
            .request_blocking(&Method::POST, "/v1/ipam/ip", Some(b"{}"))
            .unwrap_err()
            .to_string();
        dies.join().unwrap();
        assert!(e.contains("without an answer"), "{e}");
    }
}
