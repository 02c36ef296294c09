//! The chart installed into the local control plane: install, the ServiceAccount's rights, the operator
//! running under them, upgrade, uninstall.
//!
//! With kwok the operator Deployment's pods become Running and Ready without running the image, so the
//! in-cluster install is checked by its objects and readiness; the operator itself runs outside the
//! cluster with the chart's ServiceAccount token, which is what proves the RBAC.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kube::api::DeleteParams;
use serde_json::Value;
use vgs_e2e::{
    LeaderElectionOptions, Operator, TestNamespace, eventually, repo_root, wait_for_leader,
    wait_ready,
};

use crate::*;

/// A Helm release, uninstalled when dropped (a failing test must not leave cluster-scoped RBAC behind).
/// Declare it after its namespace, so that it is dropped first.
struct Release {
    namespace: String,
}

impl Release {
    fn install(namespace: &str, extra: &[&str]) -> Result<Self> {
        let chart = chart();
        let timeout = format!("{}s", WAIT.as_secs());
        let mut args = vec![
            "install",
            RELEASE,
            chart.to_str().unwrap(),
            "--namespace",
            namespace,
            "--wait",
            "--timeout",
            &timeout,
        ];
        args.extend_from_slice(extra);
        let release = Self {
            namespace: namespace.to_owned(),
        };
        helm(&args).context("helm install")?;
        Ok(release)
    }

    fn upgrade(&self, extra: &[&str]) -> Result<()> {
        let chart = chart();
        let timeout = format!("{}s", WAIT.as_secs());
        let mut args = vec![
            "upgrade",
            RELEASE,
            chart.to_str().unwrap(),
            "--namespace",
            &self.namespace,
            "--reuse-values",
            "--wait",
            "--timeout",
            &timeout,
        ];
        args.extend_from_slice(extra);
        helm(&args).context("helm upgrade")?;
        Ok(())
    }

    fn status(&self) -> Result<Value> {
        Ok(serde_json::from_str(&helm(&[
            "status",
            RELEASE,
            "--namespace",
            &self.namespace,
            "-o",
            "json",
        ])?)?)
    }

    fn uninstall(&self) -> Result<()> {
        let timeout = format!("{}s", WAIT.as_secs());
        helm(&[
            "uninstall",
            RELEASE,
            "--namespace",
            &self.namespace,
            "--wait",
            "--timeout",
            &timeout,
        ])
        .context("helm uninstall")?;
        Ok(())
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm(&[
            "uninstall",
            RELEASE,
            "--namespace",
            &self.namespace,
            "--ignore-not-found",
        ]);
    }
}

fn service_account(namespace: &str) -> String {
    format!("system:serviceaccount:{namespace}:{RELEASE}")
}

/// A kubeconfig for the local control plane that authenticates as the chart's ServiceAccount, with a
/// token from the TokenRequest API (`kubectl create token`), as a pod of the Deployment would.
fn service_account_kubeconfig(namespace: &str) -> Result<PathBuf> {
    let token = kubectl(
        &[
            "create",
            "token",
            RELEASE,
            "--namespace",
            namespace,
            "--duration",
            "1h",
        ],
        None,
    )?;
    let admin: Value = serde_json::from_str(&kubectl(
        &[
            "config",
            "view",
            "--raw",
            "--minify",
            "--flatten",
            "-o",
            "json",
        ],
        None,
    )?)?;
    let cluster = &admin["clusters"][0]["cluster"];
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "local", "cluster": {
            "server": cluster["server"],
            "certificate-authority-data": cluster["certificate-authority-data"],
        }}],
        "users": [{ "name": RELEASE, "user": { "token": token.trim() } }],
        "contexts": [{ "name": "sa", "context": { "cluster": "local", "user": RELEASE, "namespace": namespace } }],
        "current-context": "sa",
    });
    let dir = repo_root().join("target/e2e-logs");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{namespace}-serviceaccount.kubeconfig"));
    std::fs::write(&path, serde_json::to_string_pretty(&kubeconfig)?)?;
    Ok(path)
}

/// Runs the operator under the chart's ServiceAccount, watching `watch`, applies the sample
/// GroundSystem there and waits until it is Ready: every call the operator makes on the way is allowed
/// by the chart's RBAC, or the reconcile fails. Returns the operator (still running) and the sample's name.
async fn run_operator_as_service_account(
    release_ns: &str,
    watch: &TestNamespace,
) -> Result<(Operator, String)> {
    let kubeconfig = service_account_kubeconfig(release_ns)?;
    let operator = Operator::start_with_kubeconfig(&watch.name, 300, Some(&kubeconfig)).await?;
    let (sample, name) = sample()?;
    kubectl(
        &[
            "apply",
            "--server-side",
            "--field-manager",
            FIELD_MANAGER,
            "--namespace",
            &watch.name,
            "-f",
            sample.to_str().unwrap(),
        ],
        None,
    )?;
    wait_ready(watch, &name, WAIT)
        .await
        .with_context(|| operator.log_tail())?;

    // Events are best effort in the operator (a forbidden one is only logged), so check them here.
    watch
        .wait_for_event("an Event from vgs-operator", |e| {
            e.reporting_controller.as_deref() == Some("vgs-operator")
        })
        .await
        .with_context(|| operator.log_tail())?;
    let log = std::fs::read_to_string(&operator.log)?;
    if log.contains("forbidden") {
        bail!(
            "the operator was refused something under the chart's ServiceAccount:\n{}",
            operator.log_tail()
        );
    }
    Ok((operator, name))
}

fn assert_gone(args: &[&str]) -> Result<()> {
    let out = kubectl(
        &[args, &["--ignore-not-found", "-o", "name"]].concat(),
        None,
    )?;
    if !out.trim().is_empty() {
        bail!("still there after helm uninstall: {}", out.trim());
    }
    Ok(())
}

fn deployment_ready(namespace: &str, replicas: u32) -> Result<()> {
    let out = kubectl(
        &[
            "get",
            "deployment",
            RELEASE,
            "--namespace",
            namespace,
            "-o",
            "jsonpath={.spec.replicas}/{.status.readyReplicas}",
        ],
        None,
    )?;
    if out != format!("{replicas}/{replicas}") {
        bail!("deployment {RELEASE} replicas/ready: {out}, expected {replicas}/{replicas}");
    }
    Ok(())
}

#[tokio::test]
async fn single_namespace_install_operator_upgrade_uninstall() -> Result<()> {
    ensure_crd().await?;
    let ns = TestNamespace::create("chart-install").await?;
    // The operator pod must be admitted under the restricted Pod Security Standard.
    ns.enforce_restricted_pod_security().await?;
    let watch = format!("watchNamespace={}", ns.name);
    let release = Release::install(&ns.name, &["--set", &watch])?;

    // Installed: the CRD is Established, the operator Deployment rolled out (kwok runs its pod).
    kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "crd/groundsystems.vgs.io",
            "--timeout=60s",
        ],
        None,
    )?;
    deployment_ready(&ns.name, 1)?;
    let pod_user = kubectl(
        &[
            "get",
            "pods",
            "--namespace",
            &ns.name,
            "-l",
            &format!("app.kubernetes.io/instance={RELEASE}"),
            "-o",
            "jsonpath={.items[*].spec.securityContext.runAsUser}",
        ],
        None,
    )?;
    assert_eq!(
        pod_user, "65532",
        "one operator pod, admitted in a restricted namespace, running as 65532"
    );
    let status = release.status()?;
    assert_eq!(status["info"]["status"], "deployed");
    // NOTES.txt gives the next step: the sample GroundSystem, in the watched namespace.
    let notes = status["info"]["notes"].as_str().unwrap_or_default();
    assert!(
        notes.contains(&format!("kubectl apply -n {} -f", ns.name))
            && notes.contains("examples/groundsystem-minimal.yaml"),
        "NOTES.txt does not say how to apply the sample GroundSystem:\n{notes}"
    );

    // Exactly the rights the operator needs, in its namespace only.
    let sa = service_account(&ns.name);
    let n = ns.name.as_str();
    let yes: &[&[&str]] = &[
        &["get", "groundsystems.vgs.io", "-n", n],
        // The recording-retention finalizer.
        &["patch", "groundsystems.vgs.io", "-n", n],
        &[
            "update",
            "groundsystems.vgs.io",
            "--subresource=finalizers",
            "-n",
            n,
        ],
        &["list", "groundsystems.vgs.io", "-n", n],
        &["watch", "groundsystems.vgs.io", "-n", n],
        &[
            "patch",
            "groundsystems.vgs.io",
            "--subresource=status",
            "-n",
            n,
        ],
        &["create", "deployments.apps", "-n", n],
        &["patch", "deployments.apps", "-n", n],
        &["delete", "deployments.apps", "-n", n],
        &["watch", "deployments.apps", "-n", n],
        &["create", "services", "-n", n],
        &["delete", "services", "-n", n],
        &["patch", "configmaps", "-n", n],
        &["list", "configmaps", "-n", n],
        &["create", "persistentvolumeclaims", "-n", n],
        &["watch", "persistentvolumeclaims", "-n", n],
        &["create", "events.events.k8s.io", "-n", n],
        &["patch", "events.events.k8s.io", "-n", n],
    ];
    let no: &[&[&str]] = &[
        &["get", "secrets", "-n", n],
        &["list", "secrets", "-n", n],
        &["delete", "groundsystems.vgs.io", "-n", n],
        &["update", "groundsystems.vgs.io", "-n", n],
        &["create", "groundsystems.vgs.io", "-n", n],
        &[
            "update",
            "groundsystems.vgs.io",
            "--subresource=status",
            "-n",
            n,
        ],
        &["delete", "configmaps", "-n", n],
        &["delete", "persistentvolumeclaims", "-n", n],
        &["update", "deployments.apps", "-n", n],
        &["create", "pods", "-n", n],
        &["create", "events", "-n", n],
        &["create", "leases.coordination.k8s.io", "-n", n],
        &["create", "rolebindings.rbac.authorization.k8s.io", "-n", n],
        &["list", "groundsystems.vgs.io", "--all-namespaces"],
        &["list", "groundsystems.vgs.io", "-n", "default"],
        &["list", "nodes"],
        &["*", "*", "-n", n],
    ];
    let checks: Vec<(bool, &[&str])> = yes
        .iter()
        .map(|c| (true, *c))
        .chain(no.iter().map(|c| (false, *c)))
        .collect();
    check_rights(&sa, &checks)?;

    // The operator, under that identity, brings the sample GroundSystem to Ready.
    let (operator, sample) = run_operator_as_service_account(&ns.name, &ns).await?;
    drop(operator);

    // Upgrade to two replicas: leader election on, with rights on its own Lease only.
    release.upgrade(&["--set", "replicaCount=2"])?;
    deployment_ready(&ns.name, 2)?;
    let status = release.status()?;
    assert_eq!(
        (
            status["version"].as_i64(),
            status["info"]["status"].as_str()
        ),
        (Some(2), Some("deployed"))
    );
    let env = kubectl(
        &[
            "get",
            "deployment",
            RELEASE,
            "-n",
            n,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"VGS_LEADER_ELECTION\")].value}",
        ],
        None,
    )?;
    assert_eq!(env, "true");
    let lease = format!("leases.coordination.k8s.io/{RELEASE}");
    check_rights(
        &sa,
        &[
            (true, &["create", "leases.coordination.k8s.io", "-n", n]),
            (true, &["get", &lease, "-n", n]),
            (true, &["update", &lease, "-n", n]),
            (false, &["delete", &lease, "-n", n]),
            (
                false,
                &["get", "leases.coordination.k8s.io/someone-else", "-n", n],
            ),
            (false, &["list", "leases.coordination.k8s.io", "-n", n]),
            (
                false,
                &["create", "leases.coordination.k8s.io", "-n", "default"],
            ),
        ],
    )?;

    // Found by a user: back to one replica (Recreate) was refused, as the Deployment kept the
    // rolling-update parameters the API server had defaulted.
    release.upgrade(&["--set", "replicaCount=1"])?;
    deployment_ready(&ns.name, 1)?;
    assert_eq!(
        release.status()?["info"]["status"].as_str(),
        Some("deployed")
    );
    let strategy = kubectl(
        &[
            "get",
            "deployment",
            RELEASE,
            "-n",
            n,
            "-o",
            "jsonpath={.spec.strategy}",
        ],
        None,
    )?;
    assert_eq!(strategy, r#"{"type":"Recreate"}"#);

    // Uninstall: the operator's objects go; the CRD, the GroundSystem and its recording stay.
    release.uninstall()?;
    for kind in [
        "deployment",
        "serviceaccount",
        "service",
        "role",
        "rolebinding",
    ] {
        assert_gone(&[
            "get",
            kind,
            "-n",
            n,
            "-l",
            &format!("app.kubernetes.io/instance={RELEASE}"),
        ])?;
    }
    kubectl(&["get", "crd", "groundsystems.vgs.io"], None)
        .context("helm uninstall must keep the CRD")?;
    kubectl(&["get", "groundsystem", &sample, "-n", n], None)
        .context("helm uninstall must keep GroundSystems")?;
    let recording = format!("{sample}-recording");
    kubectl(&["get", "persistentvolumeclaim", &recording, "-n", n], None)
        .context("helm uninstall must keep the recording volume")?;
    // And with the operator gone, deleting the GroundSystem still keeps the retained recording.
    ns.groundsystems()
        .delete(&sample, &DeleteParams::background())
        .await?;
    eventually("the GroundSystem to be deleted", WAIT, || async {
        Ok(ns
            .groundsystems()
            .get_opt(&sample)
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    let owners = kubectl(
        &[
            "get",
            "persistentvolumeclaim",
            &recording,
            "-n",
            n,
            "-o",
            "jsonpath={.metadata.ownerReferences}",
        ],
        None,
    )
    .context("the retained recording volume must outlive its GroundSystem")?;
    assert_eq!(
        owners, "",
        "a retained recording has no owner to be collected with"
    );
    Ok(())
}

#[tokio::test]
async fn cluster_wide_install_grants_the_same_rights_in_every_namespace() -> Result<()> {
    ensure_crd().await?;
    let ns = TestNamespace::create("chart-cluster").await?;
    let other = TestNamespace::create("chart-other").await?;
    let release = Release::install(&ns.name, &[])?;
    deployment_ready(&ns.name, 1)?;
    let cluster_name = format!("{}-{RELEASE}", ns.name);
    kubectl(&["get", "clusterrole", &cluster_name], None)?;

    let sa = service_account(&ns.name);
    let o = other.name.as_str();
    check_rights(
        &sa,
        &[
            (true, &["list", "groundsystems.vgs.io", "--all-namespaces"]),
            (true, &["watch", "deployments.apps", "--all-namespaces"]),
            (
                true,
                &[
                    "patch",
                    "groundsystems.vgs.io",
                    "--subresource=status",
                    "-n",
                    o,
                ],
            ),
            (true, &["create", "deployments.apps", "-n", o]),
            (true, &["create", "persistentvolumeclaims", "-n", o]),
            (true, &["create", "events.events.k8s.io", "-n", o]),
            (false, &["list", "secrets", "--all-namespaces"]),
            (false, &["get", "secrets", "-n", o]),
            (false, &["delete", "groundsystems.vgs.io", "-n", o]),
            (false, &["delete", "persistentvolumeclaims", "-n", o]),
            (false, &["list", "nodes"]),
            (false, &["list", "namespaces"]),
            (
                false,
                &["create", "leases.coordination.k8s.io", "-n", &ns.name],
            ),
            (
                false,
                &["create", "clusterrolebindings.rbac.authorization.k8s.io"],
            ),
        ],
    )?;

    // The ClusterRole suffices for the operator in a namespace other than its own.
    let (operator, _) = run_operator_as_service_account(&ns.name, &other).await?;
    drop(operator);

    release.uninstall()?;
    assert_gone(&["get", "clusterrole", &cluster_name])?;
    assert_gone(&["get", "clusterrolebinding", &cluster_name])?;
    assert_gone(&["get", "deployment", RELEASE, "-n", &ns.name])?;
    Ok(())
}

#[tokio::test]
async fn two_replicas_elect_a_leader_with_the_chart_rights_only() -> Result<()> {
    const LEASE_SECONDS: u64 = 3;
    ensure_crd().await?;
    let ns = TestNamespace::create("chart-leader").await?;
    let watched = TestNamespace::create("chart-leader-watched").await?;
    let watch = format!("watchNamespace={}", watched.name);
    let _release = Release::install(&ns.name, &["--set", &watch, "--set", "replicaCount=2"])?;
    deployment_ready(&ns.name, 2)?;

    // Two operators as the two replicas of the Deployment would run them: the chart's ServiceAccount,
    // the chart's Lease (release namespace, release name), watching the other namespace.
    let kubeconfig = service_account_kubeconfig(&ns.name)?;
    let replica = |id: &str| {
        Operator::options(&watched.name)
            .kubeconfig(&kubeconfig)
            .leader_election(LeaderElectionOptions {
                lease_name: RELEASE.to_owned(),
                lease_namespace: Some(ns.name.clone()),
                leader_id: id.to_owned(),
                lease_duration_seconds: LEASE_SECONDS,
            })
            .start()
    };
    let a = replica("replica-a").await?;
    let b = replica("replica-b").await?;
    let lease = (ns.name.as_str(), RELEASE);
    let index = wait_for_leader(&ns.client, lease, &[&a, &b], Duration::from_secs(30)).await?;
    let (mut leader, standby) = if index == 0 { (a, b) } else { (b, a) };

    let (sample, name) = sample()?;
    kubectl(
        &[
            "apply",
            "--server-side",
            "--field-manager",
            FIELD_MANAGER,
            "--namespace",
            &watched.name,
            "-f",
            sample.to_str().unwrap(),
        ],
        None,
    )?;
    wait_ready(&watched, &name, WAIT)
        .await
        .with_context(|| leader.log_tail())?;
    let standby_writes = standby.metric_sum("vgs_operator_writes_total").await?;
    assert_eq!(
        standby_writes,
        0.0,
        "the standby wrote\n{}",
        standby.log_tail()
    );

    // The leader dies; the standby takes the Lease over (get + update of that one Lease) and
    // reconciles a change made meanwhile.
    leader.kill()?;
    let changed = watched
        .apply_groundsystem(
            &name,
            serde_json::json!({ "groundSystem": { "replicas": 2 } }),
        )
        .await?;
    wait_for_leader(
        &ns.client,
        lease,
        &[&standby],
        Duration::from_secs(LEASE_SECONDS + 10),
    )
    .await
    .with_context(|| standby.log_tail())?;
    let gs = wait_ready(&watched, &name, WAIT)
        .await
        .with_context(|| standby.log_tail())?;
    assert_eq!(gs.metadata.generation, changed.metadata.generation);
    for operator in [&leader, &standby] {
        if std::fs::read_to_string(&operator.log)?.contains("forbidden") {
            bail!(
                "an operator was refused something under the chart's ServiceAccount:\n{}",
                operator.log_tail()
            );
        }
    }
    Ok(())
}
