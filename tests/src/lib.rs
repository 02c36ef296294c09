//! Harness for the end-to-end tests: a client for the local control plane (`KUBECONFIG`, started by
//! `hack/cluster.sh up`), a namespace per test, and an operator process per test, scoped to that namespace,
//! so that tests run in parallel without seeing each other's objects or metrics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use tokio::time::{Instant, sleep};

pub const FIELD_MANAGER: &str = "vgs-e2e";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn groundsystem_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("vgs.io", "v1alpha1", "GroundSystem"),
        "groundsystems",
    )
}

/// Polls `check` until it yields `Some`, or fails after `timeout` with the last reason it gave.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "condition not met yet".to_string(),
            Err(err) => format!("{err:#}"),
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        sleep(Duration::from_millis(250)).await;
    }
}

/// A client of its own for the calling test. A kube `Client` runs its connection worker on the tokio
/// runtime that created it, and every `#[tokio::test]` has a runtime of its own: a client shared between
/// tests stops working (or hangs) once the runtime that created it is blocked or gone.
async fn client() -> Result<Client> {
    Client::try_default().await.context(
        "no Kubernetes client: run the tests through hack/test.sh, which starts the local control plane",
    )
}

/// Installs crds/groundsystem.yaml (once per test binary) and waits until it is Established.
pub async fn install_crd() -> Result<Client> {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    let client = client().await?;
    INSTALLED
        .get_or_try_init(|| async {
            let text = std::fs::read_to_string(repo_root().join("crds/groundsystem.yaml"))?;
            let crd: CustomResourceDefinition = serde_yaml_ng::from_str(&text)?;
            let api: Api<CustomResourceDefinition> = Api::all(client.clone());
            api.patch(
                &crd.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await?;
            eventually(
                "the CRD to be Established",
                Duration::from_secs(30),
                || async {
                    let crd = api.get(&crd.name_any()).await?;
                    let established = crd
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    Ok(established.then_some(()))
                },
            )
            .await
        })
        .await?;
    Ok(client)
}

/// A namespace of its own for one test, deleted when the test ends (whether it passed or not).
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    pub async fn create(prefix: &str) -> Result<Self> {
        let client = install_crd().await?;
        let api: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": { "generateName": format!("e2e-{prefix}-"), "labels": { "vgs.io/e2e": "true" } }
        }))?;
        let ns = api.create(&PostParams::default(), &ns).await?;
        let name = ns.name_any();
        // Pods need the namespace's default ServiceAccount, which the controller manager creates.
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        eventually(
            "the default ServiceAccount",
            Duration::from_secs(30),
            || async { Ok(sa.get_opt("default").await?.map(|_| ())) },
        )
        .await?;
        Ok(Self { name, client })
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Labels the namespace so that the API server admits only pods meeting the "restricted" Pod
    /// Security Standard.
    pub async fn enforce_restricted_pod_security(&self) -> Result<()> {
        let label = json!({ "metadata": { "labels": {
            "pod-security.kubernetes.io/enforce": "restricted"
        } } });
        Api::<Namespace>::all(self.client.clone())
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&label))
            .await?;
        Ok(())
    }

    /// Waits until an Event (events.k8s.io) in the namespace matches `matches`.
    pub async fn wait_for_event(
        &self,
        what: &str,
        matches: impl Fn(&k8s_openapi::api::events::v1::Event) -> bool,
    ) -> Result<()> {
        let events = self.api::<k8s_openapi::api::events::v1::Event>();
        eventually(what, Duration::from_secs(30), || async {
            let list = events.list(&Default::default()).await?;
            Ok(list.items.iter().any(&matches).then_some(()))
        })
        .await
    }

    pub fn groundsystems(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.name, &groundsystem_resource())
    }

    /// Applies a GroundSystem (server-side, as a user would with `kubectl apply --server-side`).
    pub async fn apply_groundsystem(&self, name: &str, spec: Value) -> Result<DynamicObject> {
        let object = json!({
            "apiVersion": "vgs.io/v1alpha1",
            "kind": "GroundSystem",
            "metadata": { "name": name },
            "spec": spec,
        });
        Ok(self
            .groundsystems()
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await?)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await; delete on a thread of its own, so that a failing test still cleans up.
        // With a client of that thread's runtime: the test's own client needs the test's runtime,
        // which is blocked here until the thread is joined.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let client = client().await.map_err(std::io::Error::other)?;
                Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await
                    .map(|_| ())
                    .map_err(std::io::Error::other)
            })
        })
        .join();
    }
}

/// An operator process watching one namespace, stopped (SIGTERM) when dropped. Its log goes to
/// target/e2e-logs/<namespace>.log (<namespace>-<leader id>.log with leader election).
pub struct Operator {
    child: Child,
    pub http: String,
    pub log: PathBuf,
    /// Its identity in the Lease, with leader election.
    pub leader_id: Option<String>,
}

/// How to start an operator: `Operator::options(namespace)`, its setters, then
/// [`start`](OperatorOptions::start). [`Operator::start`] and [`Operator::start_with_kubeconfig`]
/// are shorthands.
#[derive(Clone, Debug)]
pub struct OperatorOptions {
    namespace: String,
    resync_seconds: u64,
    kubeconfig: Option<PathBuf>,
    leader_election: Option<LeaderElectionOptions>,
}

/// `--leader-election`, with the Lease in the watched namespace unless `lease_namespace` is set.
#[derive(Clone, Debug)]
pub struct LeaderElectionOptions {
    pub lease_name: String,
    pub lease_namespace: Option<String>,
    pub leader_id: String,
    pub lease_duration_seconds: u64,
}

impl OperatorOptions {
    /// Seconds after which every GroundSystem is reconciled again (default 300).
    pub fn resync_seconds(mut self, seconds: u64) -> Self {
        self.resync_seconds = seconds;
        self
    }

    /// The identity of `kubeconfig` (`--kubeconfig`) instead of the tests' own (`KUBECONFIG`), e.g. a
    /// ServiceAccount token, to run the operator with its RBAC.
    pub fn kubeconfig(mut self, kubeconfig: &Path) -> Self {
        self.kubeconfig = Some(kubeconfig.to_owned());
        self
    }

    pub fn leader_election(mut self, options: LeaderElectionOptions) -> Self {
        self.leader_election = Some(options);
        self
    }

    /// Starts the operator and waits until it serves and answers /readyz (a standby does too).
    pub async fn start(self) -> Result<Operator> {
        let binary = std::env::var("VGS_OPERATOR_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo_root().join("target/debug/vgs-operator"));
        if !binary.exists() {
            bail!(
                "operator binary {} not found: build it with `cargo build -p vgs-operator` or run hack/test.sh",
                binary.display()
            );
        }
        let namespace = &self.namespace;
        let log_dir = repo_root().join("target/e2e-logs");
        std::fs::create_dir_all(&log_dir)?;
        let log = log_dir.join(match &self.leader_election {
            Some(election) => format!("{namespace}-{}.log", election.leader_id),
            None => format!("{namespace}.log"),
        });
        let log_file = std::fs::File::create(&log)?;
        let mut command = Command::new(&binary);
        command.arg("run");
        if let Some(kubeconfig) = &self.kubeconfig {
            command.arg("--kubeconfig").arg(kubeconfig);
        }
        if let Some(election) = &self.leader_election {
            command
                .args(["--leader-election", "--lease-name", &election.lease_name])
                .args([
                    "--lease-namespace",
                    election.lease_namespace.as_deref().unwrap_or(namespace),
                ])
                .args(["--leader-id", &election.leader_id])
                .args([
                    "--lease-duration-seconds",
                    &election.lease_duration_seconds.to_string(),
                ]);
        }
        let child = command
            // Port 0: the operator binds a free port and logs it, so parallel tests never collide.
            .args(["--namespace", namespace, "--http-addr", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .args(["--resync-interval", &self.resync_seconds.to_string()])
            .env("RUST_LOG", "info,vgs_operator=debug")
            .stdout(Stdio::from(log_file.try_clone()?))
            .stderr(Stdio::from(log_file))
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut operator = Operator {
            child,
            http: String::new(),
            log,
            leader_id: self.leader_election.map(|election| election.leader_id),
        };
        operator.http = eventually(
            "the operator's HTTP address",
            Duration::from_secs(30),
            || {
                let found = bound_http_addr(&operator.log);
                async move { Ok(found) }
            },
        )
        .await
        .with_context(|| operator.log_tail())?;
        eventually(
            "the operator's /readyz",
            Duration::from_secs(30),
            || async {
                let response = reqwest::get(format!("http://{}/readyz", operator.http)).await?;
                Ok(response.status().is_success().then_some(()))
            },
        )
        .await
        .with_context(|| operator.log_tail())?;
        Ok(operator)
    }
}

impl Operator {
    pub fn options(namespace: &str) -> OperatorOptions {
        OperatorOptions {
            namespace: namespace.to_owned(),
            resync_seconds: 300,
            kubeconfig: None,
            leader_election: None,
        }
    }

    pub async fn start(namespace: &str, resync_seconds: u64) -> Result<Self> {
        Self::options(namespace)
            .resync_seconds(resync_seconds)
            .start()
            .await
    }

    /// Like [`Operator::start`], with the identity of `kubeconfig` (see [`OperatorOptions::kubeconfig`]).
    pub async fn start_with_kubeconfig(
        namespace: &str,
        resync_seconds: u64,
        kubeconfig: Option<&Path>,
    ) -> Result<Self> {
        let options = Self::options(namespace).resync_seconds(resync_seconds);
        match kubeconfig {
            Some(kubeconfig) => options.kubeconfig(kubeconfig),
            None => options,
        }
        .start()
        .await
    }

    /// SIGKILL: no graceful shutdown, so a Lease it holds is not released.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then waits up to `timeout` for the process to exit, and returns how it exited.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.signal_term();
        eventually("the operator to exit after SIGTERM", timeout, || {
            let exited = self.try_exit_status();
            async move { exited }
        })
        .await
        .with_context(|| self.log_tail())
    }

    /// How the process exited, if it has.
    pub fn try_exit_status(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    fn signal_term(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    pub async fn metrics(&self) -> Result<String> {
        Ok(reqwest::get(format!("http://{}/metrics", self.http))
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// The sum of every sample of a metric family (all label sets), 0 when it has no samples yet.
    pub async fn metric_sum(&self, family: &str) -> Result<f64> {
        let text = self.metrics().await?;
        Ok(sum_samples(&text, family))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("operator log ({}):\n{tail}", self.log.display())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        // Never signal a process already reaped: its pid may belong to another one by now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM, so that the graceful shutdown path runs; kill if it does not stop in time.
        self.signal_term();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a finished command printed.
pub struct CommandOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to completion (with `input` on its stdin, if any) and returns what it printed, whether
/// it succeeded or not. A program missing from PATH is an error that says how to get it.
pub fn command_output(command: &mut Command, input: Option<&str>) -> Result<CommandOutput> {
    use std::io::Write;
    let line = command_line(command);
    let mut child = command
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => anyhow!(
                "`{line}`: {} is not on PATH; run the tests through hack/test.sh, which puts the local \
                 control plane's kubectl and helm on PATH (eval \"$(hack/cluster.sh env)\")",
                command.get_program().to_string_lossy()
            ),
            _ => anyhow!("`{line}` could not start: {err}"),
        })?;
    if let Some(input) = input {
        // Written from a thread, so that a child filling its stdout pipe cannot deadlock us.
        let mut stdin = child.stdin.take().context("no stdin")?;
        let input = input.to_owned();
        std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    }
    let output = child
        .wait_with_output()
        .with_context(|| format!("`{line}`"))?;
    Ok(CommandOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Runs `command` and returns its stdout; fails with the command line, its exit status and its
/// stderr unless it succeeds.
pub fn run_command(command: &mut Command, input: Option<&str>) -> Result<String> {
    let output = command_output(command, input)?;
    if !output.success {
        bail!(
            "`{}` failed:\n{}{}",
            command_line(command),
            output.stderr.trim_end(),
            if output.stderr.trim().is_empty() {
                output.stdout.trim_end()
            } else {
                ""
            }
        );
    }
    Ok(output.stdout)
}

/// The command as one would type it (for error messages).
pub fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The address the operator logged when it bound its HTTP server (JSON log lines).
fn bound_http_addr(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find_map(|entry| {
            let fields = &entry["fields"];
            let serving = fields["message"].as_str()?.starts_with("serving /metrics");
            serving.then(|| fields["addr"].as_str().map(str::to_owned))?
        })
}

/// Sums the samples of one family in the Prometheus text format (`name{labels} value` or `name value`).
pub fn sum_samples(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, rest) = line.split_at(line.find(['{', ' '])?);
            (name == family).then(|| rest.rsplit(' ').next()?.parse::<f64>().ok())?
        })
        .sum()
}

/// The status of a condition of an object's `status.conditions`, if present.
pub fn condition_status(object: &DynamicObject, kind: &str) -> Option<String> {
    object.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str().map(str::to_owned))
}

/// Waits until the GroundSystem is Ready for its current generation, and returns it.
pub async fn wait_ready(
    ns: &TestNamespace,
    name: &str,
    timeout: Duration,
) -> Result<DynamicObject> {
    let api = ns.groundsystems();
    eventually(&format!("GroundSystem {name} to be Ready"), timeout, || async {
        let gs = api.get(name).await?;
        let generation = gs.metadata.generation;
        let observed = gs.data["status"]["observedGeneration"].as_i64();
        let ready = condition_status(&gs, "Ready");
        if observed == generation && ready.as_deref() == Some("True") {
            Ok(Some(gs))
        } else {
            Err(anyhow!(
                "generation {generation:?}, observedGeneration {observed:?}, Ready {ready:?}; status: {}",
                gs.data["status"]
            ))
        }
    })
    .await
}

/// The holder of the Lease `namespace/name`, if the Lease exists and has one.
pub async fn lease_holder(client: &Client, namespace: &str, name: &str) -> Result<Option<String>> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), namespace);
    let lease = leases.get_opt(name).await?;
    Ok(lease.and_then(|lease| lease.spec?.holder_identity))
}

/// Waits until exactly one of `replicas` reports itself leader (`vgs_operator_leader` 1) and the
/// Lease `namespace/name` names it as holder; returns its index.
pub async fn wait_for_leader(
    client: &Client,
    (namespace, name): (&str, &str),
    replicas: &[&Operator],
    timeout: Duration,
) -> Result<usize> {
    eventually(
        "exactly one leader, named by the Lease",
        timeout,
        || async {
            let mut leaders = Vec::new();
            for (index, replica) in replicas.iter().enumerate() {
                if replica.metric_sum("vgs_operator_leader").await? == 1.0 {
                    leaders.push(index);
                }
            }
            let holder = lease_holder(client, namespace, name).await?;
            match leaders[..] {
                [index] if holder == replicas[index].leader_id => Ok(Some(index)),
                _ => bail!(
                    "replicas reporting vgs_operator_leader 1: {:?}; Lease holder: {holder:?}",
                    leaders
                        .iter()
                        .map(|&index| &replicas[index].leader_id)
                        .collect::<Vec<_>>()
                ),
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::sum_samples;

    #[test]
    fn sums_every_label_set_of_one_family_only() {
        let text = "# HELP x_total help\nx_total{kind=\"a\"} 2\nx_total{kind=\"b\"} 3\nx_total_created 9\ny 1\n";
        assert_eq!(sum_samples(text, "x_total"), 5.0);
        assert_eq!(sum_samples(text, "y"), 1.0);
        assert_eq!(sum_samples(text, "z"), 0.0);
    }
}
