//! `/metrics` (Prometheus text format), `/healthz` and `/readyz` of the agent and the
//! controller, on a TCP address of their own.
//!
//! | metric | kind | what |
//! |---|---|---|
//! | `berth_allocations_total`, `berth_allocation_failures_total` | counter | allocations (CNI ADDs) answered with addresses, and failed |
//! | `berth_allocated_ips_total`, `berth_releases_total`, `berth_released_ips_total` | counter | IPs handed out; releases (CNI DELs) and the IPs they freed |
//! | `berth_conflicts_total` | counter | writes that met a newer version (409) and were tried again |
//! | `berth_gc_released_ips_total` | counter | IPs GC freed |
//! | `berth_allocation_duration_seconds` | histogram | how long allocations took |
//! | `berth_leader` | gauge | the controller: 1 while this replica leads |
//! | `berth_pool_total_ips`, `berth_pool_allocated_ips`, `berth_pool_free_ips` | gauge, per `pool` | each SpiderIPPool's counts, as `kubectl get sp` shows them |
//!
//! `/healthz` answers 200 while the process serves; `/readyz` 200 when the store answers (a
//! list of pools), else 503 with the reason.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use ipam_core::SpiderIPPool;
use ipam_core::engine::{Engine, LATENCY_BUCKETS};
use ipam_core::store::{Store, TypedStore};
use tokio::net::TcpListener;

use crate::Error;

/// What the endpoints report on.
pub struct Metrics<S: Store> {
    engine: Arc<Engine<S>>,
    leader: Option<Arc<AtomicBool>>,
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl<S: Store + 'static> Metrics<S> {
    /// Metrics of `engine`; with `leader`, also `berth_leader` (the controller's).
    pub fn new(engine: Arc<Engine<S>>, leader: Option<Arc<AtomicBool>>) -> Self {
        Metrics { engine, leader }
    }

    /// The `/metrics` page.
    pub async fn render(&self) -> Result<String, ipam_core::Error> {
        let stats = self.engine.stats();
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "berth_allocations_total",
            "Allocations (CNI ADDs) answered with addresses.",
            stats.allocations,
        );
        counter(
            "berth_allocation_failures_total",
            "Allocations that failed.",
            stats.allocation_failures,
        );
        counter(
            "berth_allocated_ips_total",
            "IPs handed out.",
            stats.ips_allocated,
        );
        counter(
            "berth_releases_total",
            "Releases (CNI DELs) answered.",
            stats.releases,
        );
        counter(
            "berth_released_ips_total",
            "IPs freed by releases.",
            stats.ips_released,
        );
        counter(
            "berth_conflicts_total",
            "Writes that met a newer version and were tried again.",
            stats.conflicts,
        );
        counter(
            "berth_gc_released_ips_total",
            "IPs freed by GC.",
            stats.gc_released,
        );
        let name = "berth_allocation_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} How long allocations took.\n# TYPE {name} histogram"
        );
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&stats.latency_buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let all = stats.latency_buckets.last().copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {all}");
        let _ = writeln!(out, "{name}_sum {}", stats.latency_sum.as_secs_f64());
        let _ = writeln!(out, "{name}_count {all}");
        if let Some(leader) = &self.leader {
            let _ = writeln!(
                out,
                "# HELP berth_leader 1 while this controller replica leads.\n\
                 # TYPE berth_leader gauge\nberth_leader {}",
                u8::from(leader.load(Ordering::Relaxed))
            );
        }
        let pools: Vec<SpiderIPPool> = self.engine.store().list_as(None).await?;
        for (metric, help) in [
            ("berth_pool_total_ips", "IPs of the pool (TOTAL-IP-COUNT)."),
            (
                "berth_pool_allocated_ips",
                "IPs of the pool held (ALLOCATED-IP-COUNT).",
            ),
            ("berth_pool_free_ips", "IPs of the pool free."),
        ] {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
            for p in &pools {
                let status = p.status.as_ref();
                let total = status
                    .and_then(|s| s.total_ip_count)
                    .unwrap_or_else(|| i64::try_from(p.usable_ips().len()).unwrap_or(i64::MAX));
                let allocated = status
                    .and_then(|s| s.allocated_ip_count)
                    .unwrap_or(p.allocated_count() as i64);
                let value = match metric {
                    "berth_pool_total_ips" => total,
                    "berth_pool_allocated_ips" => allocated,
                    _ => (total - allocated).max(0),
                };
                let _ = writeln!(
                    out,
                    "{metric}{{pool=\"{}\"}} {value}",
                    escape(&p.metadata.name)
                );
            }
        }
        Ok(out)
    }

    async fn answer(&self, request: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let reply = |status: StatusCode, body: String| {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r
        };
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/healthz") => reply(StatusCode::OK, "ok\n".into()),
            (&Method::GET, "/readyz") => {
                match self.engine.store().list_as::<SpiderIPPool>(None).await {
                    Ok(_) => reply(StatusCode::OK, "ok\n".into()),
                    Err(e) => reply(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
                }
            }
            (&Method::GET, "/metrics") => match self.render().await {
                Ok(page) => {
                    let mut r = reply(StatusCode::OK, page);
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    r
                }
                Err(e) => reply(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
            },
            _ => reply(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }

    /// Listens on `listen` (plain HTTP) and serves the endpoints until `stop`.
    pub async fn serve(
        self,
        listen: SocketAddr,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), Error> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| Error::Webhook(format!("metrics: cannot listen on {listen}: {e}")))?;
        let this = Arc::new(self);
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return Ok(()),
                accepted = listener.accept() => {
                    let Ok((tcp, _)) = accepted else { continue };
                    let this = Arc::clone(&this);
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let this = Arc::clone(&this);
                            async move { Ok::<_, std::convert::Infallible>(this.answer(&request).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                            .await;
                    });
                }
            }
        }
    }
}
