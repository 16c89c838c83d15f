//! The `berth` command line on temporary data dirs, with the seed's YAML verbatim.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn seed(file: &str) -> String {
    format!("{}/examples/seed/{file}", env!("CARGO_MANIFEST_DIR"))
}

struct Dir {
    _temp: tempfile::TempDir,
    data: PathBuf,
}

fn data_dir() -> Dir {
    let temp = tempfile::Builder::new()
        .prefix("berth-cli-")
        .tempdir()
        .unwrap();
    let data = temp.path().join("data");
    Dir { _temp: temp, data }
}

fn berth(dir: &Path, args: &[&str]) -> Output {
    Command::new(BERTH)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run berth")
}

fn berth_stdin(dir: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(BERTH)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `berth agent` serving `data` on `socket`, once it says its socket listens.
fn start_agent(data: &Path, socket: &Path) -> std::process::Child {
    let mut agent = Command::new(BERTH)
        .arg("--data-dir")
        .arg(data)
        .args(["agent", "--socket"])
        .arg(socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut said = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(agent.stdout.take().unwrap()),
        &mut said,
    )
    .unwrap();
    assert!(said.starts_with("berth agent: serving "), "{said:?}");
    agent
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "berth failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "berth succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// The pool table with the uid suffix of auto pool names replaced by `xxxxx`.
fn pools(dir: &Path) -> String {
    let t = ok(berth(dir, &["get", "spiderippool"]));
    t.lines()
        .map(|l| {
            let mut cells: Vec<String> = l.split_whitespace().map(str::to_string).collect();
            if cells[0].starts_with("auto") {
                let (head, _) = cells[0].rsplit_once('-').unwrap();
                cells[0] = format!("{head}-xxxxx");
            }
            cells.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn subnets(dir: &Path) -> String {
    ok(berth(dir, &["get", "ss"]))
}

#[test]
fn the_seed_yaml_gives_the_seed_tables_and_scaling_resizes_the_pools() {
    let d = data_dir();
    let out = ok(berth(
        &d.data,
        &[
            "apply",
            "-f",
            &seed("subnets.yaml"),
            "-f",
            &seed("deployment.yaml"),
        ],
    ));
    assert_eq!(
        out,
        "spidersubnet.spiderpool.spidernet.io/subnet-test-ens192 created\n\
         spidersubnet.spiderpool.spidernet.io/subnet-test-ens224 created\n\
         deployment.apps/test-app created\n"
    );
    assert_eq!(
        subnets(&d.data),
        "NAME                 VERSION   SUBNET        ALLOCATED-IP-COUNT   TOTAL-IP-COUNT\n\
         subnet-test-ens192   4         10.6.0.1/16   3                    10\n\
         subnet-test-ens224   4         10.7.0.1/16   3                    10\n"
    );
    assert_eq!(
        pools(&d.data),
        "NAME VERSION SUBNET ALLOCATED-IP-COUNT TOTAL-IP-COUNT DEFAULT DISABLE\n\
         auto4-test-app-eth0-xxxxx 4 10.6.0.1/16 0 3 false false\n\
         auto4-test-app-net1-xxxxx 4 10.7.0.1/16 0 3 false false"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(berth(&d.data, &["get", "sp", "-o", "json"]))).unwrap();
    assert_eq!(json["kind"], "List");
    assert_eq!(
        json["items"][0]["spec"]["ips"],
        serde_json::json!(["10.6.168.171-10.6.168.173"])
    );
    assert_eq!(
        json["items"][1]["spec"]["ips"],
        serde_json::json!(["10.7.168.171-10.7.168.173"])
    );

    // Re-applying the same objects changes nothing.
    let again = ok(berth(
        &d.data,
        &[
            "apply",
            "-f",
            &seed("subnets.yaml"),
            "-f",
            &seed("deployment.yaml"),
        ],
    ));
    assert!(again.lines().all(|l| l.ends_with(" unchanged")), "{again}");

    ok(berth(
        &d.data,
        &["scale", "deployment", "test-app", "--replicas", "3"],
    ));
    assert!(pools(&d.data).contains("auto4-test-app-eth0-xxxxx 4 10.6.0.1/16 0 4 false false"));
    assert!(
        subnets(&d.data)
            .contains("subnet-test-ens192   4         10.6.0.1/16   4                    10")
    );
    ok(berth(
        &d.data,
        &["scale", "deploy", "test-app", "--replicas", "1"],
    ));
    assert!(pools(&d.data).contains("auto4-test-app-net1-xxxxx 4 10.7.0.1/16 0 2 false false"));
    assert!(
        subnets(&d.data)
            .contains("subnet-test-ens224   4         10.7.0.1/16   2                    10")
    );

    // More than the subnet has: refused with the numbers, nothing changes.
    let before = (pools(&d.data), subnets(&d.data));
    let err = fails(berth(
        &d.data,
        &["scale", "deploy", "test-app", "--replicas", "10"],
    ));
    assert!(
        err.contains("has 8 free IPs but") && err.contains("needs 9 more"),
        "{err}"
    );
    assert_eq!((pools(&d.data), subnets(&d.data)), before);
    assert!(ok(berth(&d.data, &["get", "deploy", "test-app"])).contains("test-app   1 "));

    // Deleting the application reclaims its pools and returns every IP.
    let out = ok(berth(&d.data, &["delete", "deployment", "test-app"]));
    assert_eq!(out, "deployment.apps \"test-app\" deleted\n");
    let out = berth(&d.data, &["get", "sp"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No resources found"));
    assert!(
        subnets(&d.data)
            .contains("subnet-test-ens192   4         10.6.0.1/16   0                    10")
    );
    assert!(
        subnets(&d.data)
            .contains("subnet-test-ens224   4         10.7.0.1/16   0                    10")
    );
}

#[test]
fn a_subnet_deleted_while_pools_hold_its_ips_is_terminating_and_lends_no_more() {
    let d = data_dir();
    ok(berth(
        &d.data,
        &[
            "apply",
            "-f",
            &seed("subnets.yaml"),
            "-f",
            &seed("deployment.yaml"),
        ],
    ));
    let out = ok(berth(&d.data, &["delete", "ss", "subnet-test-ens192"]));
    assert!(out.contains("terminating"), "{out}");
    assert_eq!(
        subnets(&d.data),
        "NAME                 VERSION   SUBNET        ALLOCATED-IP-COUNT   TOTAL-IP-COUNT   STATUS\n\
         subnet-test-ens192   4         10.6.0.1/16   3                    10               Terminating\n\
         subnet-test-ens224   4         10.7.0.1/16   3                    10\n"
    );

    // Growing the eth0 pool out of it is refused, and nothing changes.
    let before = (pools(&d.data), subnets(&d.data));
    let err = fails(berth(
        &d.data,
        &["scale", "deployment", "test-app", "--replicas", "5"],
    ));
    assert!(
        err.contains("SpiderSubnet \"subnet-test-ens192\" is terminating and takes no new claims"),
        "{err}"
    );
    assert_eq!((pools(&d.data), subnets(&d.data)), before);

    // Releases still work: shrinking returns IPs to it, and deleting the application lets it go.
    ok(berth(
        &d.data,
        &["scale", "deploy", "test-app", "--replicas", "1"],
    ));
    assert!(subnets(&d.data).contains("subnet-test-ens192   4         10.6.0.1/16   2"));
    ok(berth(&d.data, &["delete", "deployment", "test-app"]));
    assert_eq!(
        subnets(&d.data),
        "NAME                 VERSION   SUBNET        ALLOCATED-IP-COUNT   TOTAL-IP-COUNT\n\
         subnet-test-ens224   4         10.7.0.1/16   0                    10\n"
    );
}

#[test]
fn invalid_objects_are_refused_by_name_and_nothing_is_stored() {
    let d = data_dir();
    ok(berth(&d.data, &["apply", "-f", &seed("subnets.yaml")]));
    let pool = |name: &str, ips: &str, extra: &str| {
        format!(
            "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata:\n  name: {name}\nspec:\n  subnet: 10.6.0.0/16\n  ips: [{ips}]\n{extra}"
        )
    };
    let cases = [
        (pool("outside", "10.6.1.1", ""), "SpiderIPPool \"outside\" is invalid: IPs 10.6.1.1 are not in spec.ips of SpiderSubnet \"subnet-test-ens192\""),
        (
            pool("gw-inside", "10.6.168.171-10.6.168.172", "  gateway: 10.6.168.172\n"),
            "SpiderIPPool \"gw-inside\" is invalid: spec.gateway 10.6.168.172 is inside spec.ips",
        ),
        (pool("far", "10.7.0.5", ""), "SpiderIPPool \"far\" is invalid: spec.ips 10.7.0.5 lie outside the subnet 10.6.0.0/16"),
        ("apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata: {name: [x\n".to_string(), "not YAML or JSON"),
        ("{\"kind\": \"SpiderIPPool\", \"apiVersion\": \"spiderpool.spidernet.io/v2beta1\", \"metadata\": {\"name\": \"typo\"}, \"spec\": {\"subnet\": \"10.6.0.0/16\", \"ipz\": []}}".to_string(), "unknown field `ipz`"),
        (
            "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderSubnet\nmetadata: {name: x}\nspec: {subnet: 10.6.0.0/33}\n".to_string(),
            "SpiderSubnet \"x\" cannot be read: spec.subnet: invalid CIDR \"10.6.0.0/33\": prefix length \"33\" is not a number from 0 to 32",
        ),
        (
            "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata: {name: y}\nspec: {subnet: 10.6.0.0/banana}\n".to_string(),
            "SpiderIPPool \"y\" cannot be read: spec.subnet: invalid CIDR \"10.6.0.0/banana\": prefix length \"banana\"",
        ),
        // What Spiderpool's webhook refuses and `berth apply` once took.
        (
            pool("empty-affinity", "10.6.168.171", "  podAffinity: {}\n"),
            "SpiderIPPool \"empty-affinity\" is invalid: spec.podAffinity: is empty",
        ),
        (
            pool("bad-affinity", "10.6.168.171", "  podAffinity: {matchLabels: {app: \"a b\"}}\n"),
            "SpiderIPPool \"bad-affinity\" is invalid: spec.podAffinity: matchLabels \"app\": \"a b\": must be at most 63 letters",
        ),
        (
            pool("auto4-web-eth0-1", "10.6.168.171", "  podAffinity: {matchLabels: {app: web}}\n")
                .replace("metadata:\n", "metadata:\n  labels:\n    ipam.spidernet.io/owner-application-uid: u1\n    ipam.spidernet.io/owner-application-gv: apps_v1\n    ipam.spidernet.io/owner-application-kind: Deployment\n    ipam.spidernet.io/owner-application-namespace: default\n    ipam.spidernet.io/owner-application-name: web\n"),
            "spec.podAffinity of an auto-created pool must select its application's pods",
        ),
        (
            pool("orphan", "10.6.168.171", "")
                .replace("metadata:\n", "metadata:\n  ownerReferences: [{apiVersion: spiderpool.spidernet.io/v2beta1, kind: SpiderSubnet, name: nope, uid: u, controller: true}]\n"),
            "SpiderIPPool \"orphan\" is invalid: metadata.ownerReferences names SpiderSubnet \"nope\", which does not exist",
        ),
    ];
    for (doc, want) in &cases {
        let err = fails(berth_stdin(&d.data, &["apply", "-f", "-"], doc));
        assert!(err.contains(want), "want {want:?} in {err}");
    }
    ok(berth_stdin(
        &d.data,
        &["apply", "-f", "-"],
        &pool("first", "10.6.168.171-10.6.168.173", ""),
    ));
    let err = fails(berth_stdin(
        &d.data,
        &["apply", "-f", "-"],
        &pool("second", "10.6.168.173-10.6.168.175", ""),
    ));
    assert!(
        err.contains("SpiderIPPool \"second\" is invalid: IPs 10.6.168.173 overlap with SpiderIPPool \"first\""),
        "{err}"
    );
    // Only "first" was stored.
    let names: Vec<String> = ok(berth(&d.data, &["get", "sp"]))
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(names, ["first"]);
    assert!(
        subnets(&d.data)
            .contains("subnet-test-ens192   4         10.6.0.1/16   3                    10")
    );
    // Unknown kinds and missing objects are errors with what to do.
    assert!(fails(berth(&d.data, &["get", "pods"])).contains("unknown kind \"pods\""));
    assert!(
        fails(berth(&d.data, &["get", "sp", "nope"])).contains("SpiderIPPool \"nope\" not found")
    );
    assert!(fails(berth(&d.data, &["delete", "ss", "nope"])).contains("not found"));
}

#[test]
fn eight_processes_at_once_all_succeed() {
    let d = data_dir();
    ok(berth(&d.data, &["apply", "-f", &seed("subnets.yaml")]));
    let children: Vec<_> = (0..8)
        .map(|i| {
            let doc = format!(
                "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata:\n  name: p{i}\nspec:\n  subnet: 10.6.0.0/16\n  ips: [10.6.168.{}]\n",
                171 + i
            );
            let mut child = Command::new(BERTH)
                .arg("--data-dir")
                .arg(&d.data)
                .args(["apply", "-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(doc.as_bytes()).unwrap();
            child
        })
        .collect();
    for c in children {
        ok(c.wait_with_output().unwrap());
    }
    let table = ok(berth(&d.data, &["get", "sp"]));
    assert_eq!(table.lines().count(), 9, "{table}");
    assert!(
        subnets(&d.data)
            .contains("subnet-test-ens192   4         10.6.0.1/16   8                    10")
    );
}

#[test]
fn the_data_dir_is_private_and_namespaces_separate_workloads() {
    let d = data_dir();
    ok(berth(&d.data, &["apply", "-f", &seed("subnets.yaml")]));
    let mode = std::fs::metadata(&d.data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    ok(berth(
        &d.data,
        &["-n", "team-a", "apply", "-f", &seed("deployment.yaml")],
    ));
    assert!(ok(berth(&d.data, &["get", "deploy", "-n", "team-a"])).contains("test-app"));
    let other = berth(&d.data, &["get", "deploy"]);
    assert!(String::from_utf8_lossy(&other.stderr).contains("No resources found"));
    let yaml = ok(berth(
        &d.data,
        &["get", "deploy", "test-app", "-n", "team-a", "-o", "yaml"],
    ));
    assert!(
        yaml.contains("namespace: team-a") && yaml.contains("kind: Deployment"),
        "{yaml}"
    );
    // An environment variable names the data dir too.
    let out = Command::new(BERTH)
        .env("BERTH_DATA_DIR", &d.data)
        .args(["get", "ss"])
        .output()
        .unwrap();
    assert!(ok(out).contains("subnet-test-ens224"));
}

#[test]
fn commands_go_through_the_agent_that_serves_the_data_dir() {
    let d = data_dir();
    let socket = d.data.parent().unwrap().join("run/agent.sock");
    let mut agent = start_agent(&d.data, &socket);
    // The agent holds the store's lock; without going through it these would wait for it,
    // and give up after a second.
    ok(berth(
        &d.data,
        &[
            "--lock-timeout",
            "1",
            "apply",
            "-f",
            &seed("subnets.yaml"),
            "-f",
            &seed("deployment.yaml"),
        ],
    ));
    assert!(
        subnets(&d.data)
            .contains("subnet-test-ens192   4         10.6.0.1/16   3                    10")
    );
    ok(berth(
        &d.data,
        &[
            "--lock-timeout",
            "1",
            "scale",
            "deploy",
            "test-app",
            "--replicas",
            "3",
        ],
    ));
    assert!(pools(&d.data).contains("auto4-test-app-eth0-xxxxx 4 10.6.0.1/16 0 4 false false"));
    assert!(ok(berth(&d.data, &["--lock-timeout", "1", "gc"])).contains("nothing to collect"));
    // SIGTERM: the agent stops cleanly, and the store is the CLI's again, with everything in it.
    unsafe_free_kill(agent.id(), "TERM");
    assert!(agent.wait().unwrap().success());
    assert!(!socket.exists(), "the socket outlived the agent");
    assert!(pools(&d.data).contains("auto4-test-app-net1-xxxxx 4 10.7.0.1/16 0 4 false false"));
}

/// Sends a signal with kill(1), keeping the tests free of unsafe code.
fn unsafe_free_kill(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_data_dir_that_cannot_be_opened_is_named_with_the_os_error() {
    let d = data_dir();
    let file = d.data.parent().unwrap().join("a-file");
    std::fs::write(&file, "").unwrap();
    let err = fails(berth(&file, &["get", "ss"]));
    assert!(
        err.contains(&format!("{}: not a directory", file.display())),
        "{err}"
    );
    let below = file.join("data");
    let err = fails(berth(&below, &["get", "ss"]));
    assert!(
        err.contains(&below.display().to_string()) && err.contains("(os error 20)"),
        "{err}"
    );

    // A dir this user may not enter. Root may enter anything, so as root the command runs
    // as nobody.
    let locked = d.data.parent().unwrap().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        d.data.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    // nobody may not reach the built binary (a checkout under /root, or in a `mktemp -d`
    // dir), so it runs a copy beside the locked dir.
    let program = if is_root() {
        let copy = d.data.parent().unwrap().join("berth");
        std::fs::copy(BERTH, &copy).unwrap();
        copy
    } else {
        BERTH.into()
    };
    let mut cmd = Command::new(program);
    cmd.arg("--data-dir")
        .arg(locked.join("data"))
        .args(["get", "ss"]);
    if is_root() {
        std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
    }
    let err = fails(cmd.output().unwrap());
    assert!(
        err.contains(&locked.join("data").display().to_string())
            && err.contains("Permission denied (os error 13)"),
        "{err}"
    );
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[test]
fn an_empty_manifest_is_refused_like_kubectl_does() {
    let d = data_dir();
    for input in ["", "---\n", "# nothing\n"] {
        let err = fails(berth_stdin(&d.data, &["apply", "-f", "-"], input));
        assert!(
            err.contains("no objects passed to apply"),
            "{input:?}: {err}"
        );
    }
}

#[test]
fn apply_through_an_agent_that_died_stops_at_the_first_store_error_and_names_its_cause() {
    use std::io::Write;
    let d = data_dir();
    std::fs::create_dir(&d.data).unwrap();
    // An agent that answers the CLI's liveness probe, then dies: its socket file stays and
    // refuses every connection, as a killed agent's does.
    let socket = d.data.parent().unwrap().join("agent.sock");
    std::fs::write(d.data.join("agent"), format!("{}\n", socket.display())).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let mut child = Command::new(BERTH)
        .arg("--data-dir")
        .arg(&d.data)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The probe; then the "agent" dies. The CLI reads its input only after opening the store.
    drop(listener.accept().unwrap());
    drop(listener);
    let mut input = std::fs::read_to_string(seed("subnets.yaml")).unwrap();
    input.push_str("---\n");
    input.push_str(&std::fs::read_to_string(seed("deployment.yaml")).unwrap());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let err = fails(child.wait_with_output().unwrap());
    assert_eq!(
        err.lines().count(),
        1,
        "one line, not one per object: {err}"
    );
    assert!(
        err.contains(&socket.display().to_string()) && err.contains("Connection refused"),
        "{err}"
    );
}

#[test]
fn a_stale_agent_record_is_ignored() {
    let d = data_dir();
    let socket = d.data.parent().unwrap().join("agent.sock");
    let mut agent = start_agent(&d.data, &socket);
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(socket.exists(), "SIGKILL leaves the socket file");
    ok(berth(
        &d.data,
        &[
            "apply",
            "-f",
            &seed("subnets.yaml"),
            "-f",
            &seed("deployment.yaml"),
        ],
    ));
    assert!(subnets(&d.data).contains("subnet-test-ens192"));
}

#[test]
fn a_command_waiting_for_the_lock_says_who_holds_it_and_gives_up_after_lock_timeout() {
    use std::io::Write;
    let d = data_dir();
    ok(berth(&d.data, &["apply", "-f", &seed("subnets.yaml")]));
    // `apply -f -` opens the store, then reads its input: it holds the lock until stdin ends.
    let mut holder = Command::new(BERTH)
        .arg("--data-dir")
        .arg(&d.data)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = holder.id();
    let lock = d.data.join("lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(&lock).unwrap_or_default().trim() != pid.to_string() {
        assert!(
            std::time::Instant::now() < deadline,
            "the holder wrote no pid"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    let started = std::time::Instant::now();
    let err = fails(berth(&d.data, &["--lock-timeout", "2", "get", "ss"]));
    let waited = started.elapsed();
    // It waited the timeout it was given (not the default 30 s: the message says which).
    assert!(waited >= std::time::Duration::from_secs(2), "{waited:?}");
    assert!(err.contains("for the lock: 2 s now"), "{err}");
    let first = err.lines().next().unwrap();
    assert!(
        first.contains(&format!("pid {pid} holds the lock of the data dir"))
            && first.contains("waiting"),
        "{err}"
    );
    assert!(
        err.contains(&format!("in use by another process (pid {pid})"))
            && err.contains("--lock-timeout SECS"),
        "{err}"
    );
    // The environment variable works too, and a command that gets the lock in time succeeds.
    let mut waiter = Command::new(BERTH)
        .arg("--data-dir")
        .arg(&d.data)
        .env("BERTH_LOCK_TIMEOUT", "20")
        .args(["get", "ss"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It says so after about a second of waiting; then the holder lets go.
    let mut said = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(waiter.stderr.take().unwrap()),
        &mut said,
    )
    .unwrap();
    assert!(
        said.contains(&format!("pid {pid} holds the lock")),
        "{said}"
    );
    assert!(said.contains("up to 20 s"), "{said}");
    let mut stdin = holder.stdin.take().unwrap();
    stdin
        .write_all(
            std::fs::read_to_string(seed("deployment.yaml"))
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
    drop(stdin);
    ok(holder.wait_with_output().unwrap());
    assert!(ok(waiter.wait_with_output().unwrap()).contains("subnet-test-ens192"));
}

#[test]
fn the_version_names_the_git_commit() {
    let out = ok(Command::new(BERTH).arg("--version").output().unwrap());
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(
        out,
        format!("berth {} (commit {commit})\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn describe_shows_free_ips_holders_and_terminating_state_and_get_selects_by_label() {
    let d = data_dir();
    ok(berth(&d.data, &["apply", "-f", &seed("subnets.yaml")]));
    let pools = "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\n\
        metadata: {name: manual-a, labels: {team: a}}\n\
        spec: {subnet: 10.6.0.0/16, ips: [10.6.168.171-10.6.168.175]}\n---\n\
        apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\n\
        metadata: {name: manual-b, labels: {team: b, legacy: 'yes'}}\n\
        spec: {subnet: 10.6.0.0/16, ips: [10.6.168.176]}\n---\n\
        apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderReservedIP\n\
        metadata: {name: keep}\nspec: {ips: [10.6.168.175]}\n";
    ok(berth_stdin(&d.data, &["apply", "-f", "-"], pools));
    // A pod takes an IP of manual-a, as berth-ipam would.
    {
        use berth::core::engine::{AllocateRequest, Engine};
        use berth::core::{NicRequest, PodContext};
        let store =
            ipam_store_sled::SledStore::open(&d.data, ipam_store_sled::OpenOptions::new()).unwrap();
        let engine = Engine::new(store);
        let request = AllocateRequest {
            pod: PodContext {
                namespace: "default".into(),
                name: "web-0".into(),
                ..Default::default()
            },
            container_id: "c1".into(),
            nics: vec![NicRequest {
                interface: "eth0".into(),
                default_ipv4_pools: vec!["manual-a".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(engine.allocate(&request))
            .unwrap();
    }
    let pool = ok(berth(&d.data, &["describe", "sp", "manual-a"]));
    let has = |text: &str, line: &str| {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == line),
            "no line {line:?} in\n{text}"
        );
    };
    has(&pool, "Name: manual-a");
    has(&pool, "Labels: ipam.spidernet.io/ippool-cidr=10-6-0-0-16");
    has(&pool, "team=a");
    has(&pool, "IPs: 10.6.168.171-10.6.168.175 (5)");
    has(&pool, "Reserved IPs: 10.6.168.175 (1)");
    has(&pool, "Allocated: 1 of 5");
    has(&pool, "Free: 10.6.168.172-10.6.168.174 (3)");
    has(&pool, "Status: Active");
    has(&pool, "IP POD CONTAINER NIC");
    has(&pool, "10.6.168.171 default/web-0 c1 eth0");
    let subnet = ok(berth(&d.data, &["describe", "ss", "subnet-test-ens192"]));
    has(&subnet, "Claimed: 6 of 10");
    has(&subnet, "Free: 10.6.168.177-10.6.168.180 (4)");
    has(&subnet, "manual-a 10.6.168.171-10.6.168.175 5 1 <none>");
    has(&subnet, "manual-b 10.6.168.176 1 0 <none>");

    // Deleted while a pod holds an IP: terminating, and describe says what it waits for.
    ok(berth(&d.data, &["delete", "sp", "manual-a"]));
    let pool = ok(berth(&d.data, &["describe", "spiderippool", "manual-a"]));
    let status = pool.lines().find(|l| l.starts_with("Status:")).unwrap();
    assert!(
        status.contains("Terminating since ")
            && status.ends_with("it goes when its 1 held IPs are released"),
        "{pool}"
    );
    assert!(fails(berth(&d.data, &["describe", "sp", "nope"])).contains("not found"));
    assert!(fails(berth(&d.data, &["describe", "deploy", "x"])).contains("describe shows"));

    // get -l, in kubectl's syntax.
    let names = |selector: &str| -> Vec<String> {
        let out = berth(&d.data, &["get", "sp", "-l", selector]);
        let table = ok(out);
        table
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("team=a"), ["manual-a"]);
    assert_eq!(names("team!=a"), ["manual-b"]);
    assert_eq!(names("team in (a,b)"), ["manual-a", "manual-b"]);
    assert_eq!(names("team notin (b),!legacy"), ["manual-a"]);
    assert_eq!(names("legacy"), ["manual-b"]);
    assert!(names("team=c").is_empty());
    let err = fails(berth(&d.data, &["get", "sp", "-l", "team in a"]));
    assert!(
        err.contains("invalid label selector \"team in a\""),
        "{err}"
    );
    let err = fails(berth(&d.data, &["get", "sp", "manual-b", "-l", "team=b"]));
    assert!(err.contains("selector"), "{err}");
}

#[test]
fn crds_prints_the_committed_files_and_needs_no_data_dir() {
    let dir = data_dir();
    let committed = format!("{}/deploy/crds", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&committed)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let cat: String = files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    // `cat deploy/crds/*.yaml`, and the data dir was never made.
    assert_eq!(ok(berth(&dir.data, &["crds"])), cat);
    assert!(!dir.data.exists());

    let out = dir.data.with_file_name("crds");
    let written = ok(berth(&dir.data, &["crds", "--dir", out.to_str().unwrap()]));
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "spiderpool.spidernet.io_spiderendpoints.yaml",
            "spiderpool.spidernet.io_spiderippools.yaml",
            "spiderpool.spidernet.io_spiderreservedips.yaml",
            "spiderpool.spidernet.io_spidersubnets.yaml",
        ]
    );
    let expected: String = names
        .iter()
        .map(|n| format!("{}\n", out.join(n).display()))
        .collect();
    assert_eq!(written, expected);
    for (name, path) in names.iter().zip(&files) {
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(path).unwrap()
        );
    }
}
