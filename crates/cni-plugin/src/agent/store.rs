//! [`AgentStore`]: the `Store` of a data dir that an agent serves, over its socket.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use http::Method;
use ipam_core::store::{Deleted, Store, WatchStream};
use ipam_core::{Error, Kind, LabelSelector, ObjectKey};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::agent::client::AgentClient;
use crate::agent::protocol::{
    self, DeleteArgs, DeleteResponse, GetArgs, ListArgs, ListResponse, ObjectResponse, StoreError,
    WriteArgs,
};

/// The [`Store`] of the agent at a socket: each of the six operations is one request to the
/// agent's `/v1/store/*` endpoints, which run it on the agent's own store (sled, flushed
/// before the answer). Errors come back as the same `ipam_core::Error` variants
/// (`NotFound`, `AlreadyExists`, `Conflict`, `RetriesExhausted`, `Malformed`); everything
/// else, transport failures included, is `Error::Backend`.
///
/// [`Store::watch`] returns a stream that never yields: the agent does not forward its
/// store's notifications. Callers that need them (caches) must run inside the agent.
#[derive(Debug, Clone)]
pub struct AgentStore {
    client: AgentClient,
}

impl AgentStore {
    /// The store of the agent listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        AgentStore {
            client: AgentClient::new(socket),
        }
    }

    /// The agent's socket.
    pub fn socket(&self) -> &Path {
        self.client.socket()
    }

    /// The client it calls the agent with.
    pub fn client(&self) -> &AgentClient {
        &self.client
    }

    async fn call<A: Serialize + Sync, R: DeserializeOwned>(
        &self,
        path: &str,
        args: &A,
    ) -> Result<R, Error> {
        let context = format!(
            "call the berth agent at {} ({path})",
            self.socket().display()
        );
        let body = serde_json::to_vec(args).map_err(|e| Error::backend(context.clone(), e))?;
        let answer = self
            .client
            .request(Method::POST, path, Some(body))
            .await
            .map_err(|e| Error::Backend {
                context: context.clone(),
                source: e,
            })?;
        if answer.status.is_success() {
            return serde_json::from_slice(&answer.body).map_err(|e| Error::backend(context, e));
        }
        match serde_json::from_slice::<StoreError>(&answer.body) {
            Ok(err) => Err(err.into_error(&context)),
            Err(_) => Err(Error::backend(
                context,
                protocol::RemoteError(format!(
                    "{}: {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                )),
            )),
        }
    }

    async fn write(&self, path: &str, kind: Kind, object: Value) -> Result<Value, Error> {
        let args = WriteArgs { kind, object };
        let r: ObjectResponse = self.call(path, &args).await?;
        r.object.ok_or_else(|| {
            Error::backend(
                format!("call the berth agent at {}", self.socket().display()),
                protocol::RemoteError(format!("{path} answered no object")),
            )
        })
    }
}

/// `list_current` is the trait's default, the agent's `list`: current for a data dir's agent
/// (sled's listings never lag); a cluster agent may answer from its pool watch. Nothing
/// admits pools through a cluster agent (`berth` reaches a cluster with `--kubeconfig`).
#[async_trait]
impl Store for AgentStore {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Value>, Error> {
        let r: ObjectResponse = self
            .call(protocol::PATH_STORE_GET, &GetArgs { key: key.clone() })
            .await?;
        Ok(r.object)
    }

    async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, Error> {
        let args = ListArgs {
            kind,
            namespace: namespace.map(str::to_owned),
            selector: selector.cloned(),
        };
        let r: ListResponse = self.call(protocol::PATH_STORE_LIST, &args).await?;
        Ok(r.items)
    }

    async fn create(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        self.write(protocol::PATH_STORE_CREATE, kind, object).await
    }

    async fn update(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        self.write(protocol::PATH_STORE_UPDATE, kind, object).await
    }

    async fn update_status(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        self.write(protocol::PATH_STORE_UPDATE_STATUS, kind, object)
            .await
    }

    async fn delete(&self, key: &ObjectKey, precondition: Option<&str>) -> Result<Deleted, Error> {
        let args = DeleteArgs {
            key: key.clone(),
            precondition: precondition.map(str::to_owned),
        };
        let r: DeleteResponse = self.call(protocol::PATH_STORE_DELETE, &args).await?;
        Ok(match r {
            DeleteResponse::Gone => Deleted::Gone,
            DeleteResponse::Terminating { object } => Deleted::Terminating(object),
        })
    }

    /// A stream that never yields (see the type's documentation).
    fn watch(&self, _kind: Kind) -> WatchStream {
        Box::pin(futures::stream::pending())
    }
}
