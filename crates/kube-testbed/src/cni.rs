//! What the kubelet stand-in calls for a pod: CNI plugins, one process per call, as a container
//! runtime calls them.
//!
//! A [`PodNetwork`] says which NICs ([`Attachment`]s) a pod gets on a node: the plugin to run,
//! the network configuration on its stdin, the interface name. [`NoIpam`] is the floor: one
//! attachment that runs `/bin/true`, so the pod gets no IP and the cost is the control plane's
//! alone. Later users plug in `berth-ipam` (and read the pod's Multus annotation) by implementing
//! the trait, or with a closure.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// One NIC of a pod: the CNI plugin to run for it and its configuration.
#[derive(Clone, Debug)]
pub struct Attachment {
    /// The network's name in the `k8s.v1.cni.cncf.io/network-status` annotation
    /// (`kube-system/macvlan-ens192`).
    pub network: String,
    /// `CNI_IFNAME`: `eth0` for the primary NIC, `net1`, ... for the others.
    pub interface: String,
    /// The plugin executable.
    pub plugin: PathBuf,
    /// The network configuration the plugin reads on stdin (with `cniVersion`, `name`, `type`).
    pub config: Value,
}

/// Decides the NICs of each pod. Implemented for closures
/// `Fn(&str /* node */, &Pod) -> Result<Vec<Attachment>, String>`.
#[async_trait]
pub trait PodNetwork: Send + Sync + 'static {
    /// The pod's NICs on `node`, the primary first. An error fails the pod's sandbox, as a
    /// runtime's CNI error would; the stand-in retries.
    async fn attachments(&self, node: &str, pod: &Pod) -> Result<Vec<Attachment>, String>;
}

#[async_trait]
impl<F> PodNetwork for F
where
    F: Fn(&str, &Pod) -> Result<Vec<Attachment>, String> + Send + Sync + 'static,
{
    async fn attachments(&self, node: &str, pod: &Pod) -> Result<Vec<Attachment>, String> {
        self(node, pod)
    }
}

/// The floor: each pod's one NIC is "set up" by `/bin/true`, and gets no IP.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoIpam;

#[async_trait]
impl PodNetwork for NoIpam {
    async fn attachments(&self, _node: &str, _pod: &Pod) -> Result<Vec<Attachment>, String> {
        Ok(vec![Attachment {
            network: "none".into(),
            interface: "eth0".into(),
            plugin: PathBuf::from("/bin/true"),
            config: serde_json::json!({"cniVersion": "1.0.0", "name": "none", "type": "true"}),
        }])
    }
}

/// What ADD gave one NIC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NicResult {
    /// The addresses, without prefix length (`10.6.168.172`).
    pub ips: Vec<String>,
    /// The MAC, when the result names the interface.
    pub mac: Option<String>,
    /// The result as the plugin printed it (for DEL's `prevResult`).
    pub raw: Option<Value>,
}

/// A plugin call that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniFailure {
    /// The CNI error code (0 when the plugin printed no CNI error).
    pub code: u64,
    /// The message: the CNI error's `msg` and `details`, or what the plugin printed.
    pub message: String,
}

impl std::fmt::Display for CniFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.message)
    }
}

/// The pod facts a CNI call carries in `CNI_ARGS`.
pub(crate) struct PodArgs<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

/// How long one plugin call may take before it is killed.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `command` (`ADD` or `DEL`) of one attachment, one process, as a runtime does.
pub(crate) async fn call(
    command: &str,
    attachment: &Attachment,
    container_id: &str,
    netns: &Path,
    pod: &PodArgs<'_>,
    prev_result: Option<&Value>,
    process_group: i32,
) -> Result<NicResult, CniFailure> {
    let mut config = attachment.config.clone();
    if let (Some(prev), Some(object)) = (prev_result, config.as_object_mut()) {
        let version = object
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !version.starts_with("0.") || version == "0.4.0" {
            object.insert("prevResult".into(), prev.clone());
        }
    }
    let stdin = serde_json::to_vec(&config).expect("a JSON value serializes");
    let cni_path = attachment
        .plugin
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let cni_args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={container_id};K8S_POD_UID={}",
        pod.namespace, pod.name, pod.uid
    );
    let mut child = tokio::process::Command::new(&attachment.plugin)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", &attachment.interface)
        .env("CNI_ARGS", cni_args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(process_group)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CniFailure {
            code: 0,
            message: format!("cannot run {}: {e}", attachment.plugin.display()),
        })?;
    let mut pipe = child.stdin.take().expect("stdin is piped");
    // A plugin that does not read its stdin (/bin/true) closes the pipe: that is no error.
    let _ = pipe.write_all(&stdin).await;
    drop(pipe);
    let output = match tokio::time::timeout(CALL_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => {
            return Err(CniFailure {
                code: 0,
                message: format!("waiting for {}: {e}", attachment.plugin.display()),
            });
        }
        Err(_) => {
            return Err(CniFailure {
                code: 0,
                message: format!(
                    "{} {command} did not finish within {CALL_TIMEOUT:?}",
                    attachment.plugin.display()
                ),
            });
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(failure(&stdout, &output.stderr, output.status));
    }
    if command != "ADD" || stdout.trim().is_empty() {
        return Ok(NicResult::default());
    }
    parse_result(&stdout, &attachment.interface).map_err(|message| CniFailure { code: 0, message })
}

/// Reads a CNI result: the addresses (any version from 0.3.0 on), and the MAC of the named
/// interface when the result has one.
pub(crate) fn parse_result(stdout: &str, interface: &str) -> Result<NicResult, String> {
    let value: Value = serde_json::from_str(stdout)
        .map_err(|e| format!("the plugin printed no CNI result ({e}): {stdout}"))?;
    let ips = value
        .get("ips")
        .and_then(Value::as_array)
        .map(|ips| {
            ips.iter()
                .filter_map(|ip| ip.get("address").and_then(Value::as_str))
                .map(|address| address.split('/').next().unwrap_or(address).to_owned())
                .collect()
        })
        .unwrap_or_default();
    let mac = value
        .get("interfaces")
        .and_then(Value::as_array)
        .and_then(|interfaces| {
            interfaces
                .iter()
                .find(|i| i.get("name").and_then(Value::as_str) == Some(interface))
        })
        .and_then(|i| i.get("mac").and_then(Value::as_str))
        .map(str::to_owned);
    Ok(NicResult {
        ips,
        mac,
        raw: Some(value),
    })
}

fn failure(stdout: &str, stderr: &[u8], status: std::process::ExitStatus) -> CniFailure {
    if let Ok(error) = serde_json::from_str::<Value>(stdout)
        && let Some(code) = error.get("code").and_then(Value::as_u64)
    {
        let msg = error.get("msg").and_then(Value::as_str).unwrap_or("");
        let details = error.get("details").and_then(Value::as_str).unwrap_or("");
        let message = if details.is_empty() {
            msg.to_owned()
        } else {
            format!("{msg}: {details}")
        };
        return CniFailure { code, message };
    }
    let stderr = String::from_utf8_lossy(stderr);
    CniFailure {
        code: 0,
        message: format!("exited with {status}; stdout: {stdout:?}; stderr: {stderr:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_of_every_version_give_their_addresses() {
        let v1 = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"net1","mac":"0a:58:0a:07:a8:ad"}],
            "ips":[{"address":"10.7.168.173/16","gateway":"10.7.0.1","interface":0},
                   {"address":"fd00::5/64"}]}"#;
        assert_eq!(
            parse_result(v1, "net1").unwrap().ips,
            vec!["10.7.168.173".to_owned(), "fd00::5".to_owned()]
        );
        assert_eq!(
            parse_result(v1, "net1").unwrap().mac.as_deref(),
            Some("0a:58:0a:07:a8:ad")
        );
        assert_eq!(parse_result(v1, "eth0").unwrap().mac, None);
        let ipam_only =
            r#"{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.6.168.172/16"}]}"#;
        assert_eq!(
            parse_result(ipam_only, "eth0").unwrap().ips,
            vec!["10.6.168.172".to_owned()]
        );
        assert!(parse_result("not json", "eth0").is_err());
    }

    #[test]
    fn a_cni_error_is_read_from_stdout() {
        let status = std::process::Command::new("/bin/false").status().unwrap();
        let failure = failure(
            r#"{"cniVersion":"1.0.0","code":11,"msg":"try again later","details":"agent busy"}"#,
            b"",
            status,
        );
        assert_eq!(failure.code, 11);
        assert_eq!(failure.message, "try again later: agent busy");
        let plain = super::failure("", b"boom", status);
        assert_eq!(plain.code, 0);
        assert!(plain.message.contains("boom"), "{}", plain.message);
    }
}
