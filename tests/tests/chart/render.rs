//! The chart as files and rendered objects: CRD copy, lint, schema, and what `helm template` produces,
//! validated by the real API server in server-side dry runs.

use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use vgs_e2e::{TestNamespace, command_output, repo_root};

use crate::*;

/// What the operator calls (operator/src), and nothing else.
const OPERATOR_RULES: &[&str] = &[
    "/configmaps get,list,watch,create,patch",
    "/persistentvolumeclaims get,list,watch,create,patch",
    "/services get,list,watch,create,patch,delete",
    "apps/deployments get,list,watch,create,patch,delete",
    "events.k8s.io/events create,patch",
    "vgs.io/groundsystems get,list,watch,patch",
    "vgs.io/groundsystems/finalizers update",
    "vgs.io/groundsystems/status patch",
];

/// Values that change every switch of the chart from its default.
const NON_DEFAULT: &[&str] = &[
    "--set",
    "replicaCount=2",
    "--set",
    "serviceMonitor.enabled=true",
    "--set",
    "serviceMonitor.labels.release=prometheus",
    "--set",
    "networkPolicy.enabled=true",
    "--set",
    "networkPolicy.restrictEgress=true",
    "--set-json",
    r#"networkPolicy.apiServerCIDRs=["10.96.0.1/32","172.18.0.0/16"]"#,
    "--set-json",
    r#"networkPolicy.metricsFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]"#,
    "--set",
    "logFormat=text",
    "--set",
    "resyncIntervalSeconds=60",
    "--set",
    "image.tag=1.2.3",
    "--set",
    "vfepImage.repository=registry.example/vfep",
    "--set",
    "vfepImage.tag=9.9.9",
];

#[test]
fn chart_crd_is_a_copy_of_the_generated_crd() -> Result<()> {
    let generated = repo_root().join("crds/groundsystem.yaml");
    let copy = chart().join("crds/groundsystem.yaml");
    let generated_bytes =
        std::fs::read(&generated).with_context(|| format!("reading {}", generated.display()))?;
    let copy_bytes = std::fs::read(&copy).with_context(|| format!("reading {}", copy.display()))?;
    assert!(
        generated_bytes == copy_bytes,
        "charts/vgs-operator/crds/groundsystem.yaml is not a copy of crds/groundsystem.yaml; resync it with:\n  \
         cp crds/groundsystem.yaml charts/vgs-operator/crds/groundsystem.yaml"
    );
    Ok(())
}

#[test]
fn helm_lint_accepts_the_chart_with_default_and_non_default_values() -> Result<()> {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    helm(&["lint", "--strict", chart])?;
    let mut args = vec!["lint", "--strict", chart, "--set", "watchNamespace=watched"];
    args.extend_from_slice(NON_DEFAULT);
    helm(&args)?;
    Ok(())
}

#[test]
fn the_schema_rejects_bad_values_naming_them() -> Result<()> {
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "replicaCount=two"], "replicaCount"),
        (&["--set", "replicaCount=-1"], "replicaCount"),
        (&["--set", "replicaCont=2"], "replicaCont"),
        (
            &["--set", "watchNamespace=Not_A_Namespace"],
            "watchNamespace",
        ),
        (&["--set", "logFormat=xml"], "logFormat"),
        (&["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
        (&["--set", "image.digest=sha256:abc"], "digest"),
        (&["--set", "image.tag=has space"], "tag"),
        (
            &["--set", "resyncIntervalSeconds=0"],
            "resyncIntervalSeconds",
        ),
        (&["--set", "service.port=70000"], "port"),
        (&["--set", "serviceMonitor.interval=soon"], "interval"),
        (
            &[
                "--set",
                "networkPolicy.enabled=true",
                "--set",
                "networkPolicy.restrictEgress=true",
            ],
            "apiServerCIDRs",
        ),
        (&["--set", "leaderElection.enabled=yes"], "enabled"),
        (
            &["--set", "leaderElection.leaseDurationSeconds=1"],
            "leaseDurationSeconds",
        ),
    ];
    let chart = chart();
    let mut wrong = Vec::new();
    for (values, name) in cases {
        let mut command = Command::new("helm");
        command
            .args(["template", RELEASE, chart.to_str().unwrap()])
            .args(*values);
        let output = command_output(&mut command, None)?;
        let shown = values.join(" ");
        if output.success {
            wrong.push(format!("  {shown}: accepted"));
        } else if !output
            .stderr
            .contains("values don't meet the specifications of the schema")
        {
            wrong.push(format!(
                "  {shown}: rejected, but not by the schema: {}",
                output.stderr.trim()
            ));
        } else if !output.stderr.contains(name) {
            wrong.push(format!(
                "  {shown}: the message does not name {name}: {}",
                output.stderr.trim()
            ));
        }
    }
    if !wrong.is_empty() {
        bail!(
            "bad values not rejected by values.schema.json with a message naming them:\n{}",
            wrong.join("\n")
        );
    }
    Ok(())
}

#[tokio::test]
async fn default_values_render_least_privilege_objects_the_api_server_accepts() -> Result<()> {
    ensure_crd().await?;
    let ns = TestNamespace::create("chart-default").await?;
    let yaml = template(&ns.name, &["--include-crds"])?;
    let objects = parse_objects(&yaml)?;
    let cluster_name = format!("{}-{RELEASE}", ns.name);
    assert_eq!(
        kinds(&objects),
        vec![
            format!("ClusterRole/{cluster_name}"),
            format!("ClusterRoleBinding/{cluster_name}"),
            "CustomResourceDefinition/groundsystems.vgs.io".to_owned(),
            format!("Deployment/{RELEASE}"),
            format!("Service/{RELEASE}-metrics"),
            format!("ServiceAccount/{RELEASE}"),
        ],
        "default values: all namespaces (ClusterRole), one replica (no Lease rights), no ServiceMonitor or NetworkPolicy"
    );
    assert_eq!(
        rules(object(&objects, "ClusterRole", &cluster_name)?),
        OPERATOR_RULES
    );
    let binding = object(&objects, "ClusterRoleBinding", &cluster_name)?;
    assert_eq!(binding["roleRef"]["name"], cluster_name.as_str());
    assert_eq!(
        binding["subjects"],
        json!([{ "kind": "ServiceAccount", "name": RELEASE, "namespace": ns.name }])
    );

    let deployment = object(&objects, "Deployment", RELEASE)?;
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["spec"]["strategy"]["type"], "Recreate",
        "without leader election two operators must not overlap"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], RELEASE);
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"], "ghcr.io/vgs-io/vgs-operator:0.1.0",
        "default tag: appVersion"
    );
    assert_eq!(container["args"], json!(["run"]));
    assert_eq!(
        container["ports"],
        json!([{ "name": "http", "containerPort": 8080, "protocol": "TCP" }])
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"],
        json!({ "path": "/healthz", "port": "http" })
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({ "path": "/readyz", "port": "http" })
    );
    assert!(
        container["resources"]["requests"]["memory"].is_string()
            && container["resources"]["limits"]["memory"].is_string()
    );
    let env = operator_env(deployment)?;
    let expected: Vec<(&str, &str)> = vec![
        ("RUST_LOG", "info"),
        ("VGS_DEFAULT_IMAGE", "ghcr.io/vgs-io/vfep:0.1.0"),
        ("VGS_HTTP_ADDR", "0.0.0.0:8080"),
        ("VGS_LEADER_ELECTION", "false"),
        ("VGS_LOG_FORMAT", "json"),
        ("VGS_RESYNC_INTERVAL", "300"),
    ];
    assert_eq!(
        env.iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
        expected,
        "no VGS_NAMESPACE: all namespaces"
    );

    let service = object(&objects, "Service", &format!("{RELEASE}-metrics"))?;
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        service["spec"]["ports"],
        json!([{ "name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP" }])
    );

    dry_run_apply(&yaml)
        .context("the API server rejected an object rendered with the default values")?;
    Ok(())
}

#[tokio::test]
async fn non_default_values_render_objects_the_api_server_accepts() -> Result<()> {
    ensure_crd().await?;
    install_servicemonitor_crd().await?;
    let release_ns = TestNamespace::create("chart-values").await?;
    let watched = TestNamespace::create("chart-watched").await?;
    let mut args = vec![
        "--set".to_owned(),
        format!("watchNamespace={}", watched.name),
    ];
    args.extend(NON_DEFAULT.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let yaml = template(&release_ns.name, &args)?;
    let objects = parse_objects(&yaml)?;
    let lease_role = format!("{RELEASE}-leader-election");
    assert_eq!(
        kinds(&objects),
        {
            let mut expected = vec![
                format!("Deployment/{RELEASE}"),
                format!("NetworkPolicy/{RELEASE}"),
                format!("Role/{RELEASE}"),
                format!("Role/{lease_role}"),
                format!("RoleBinding/{RELEASE}"),
                format!("RoleBinding/{lease_role}"),
                format!("Service/{RELEASE}-metrics"),
                format!("ServiceAccount/{RELEASE}"),
                format!("ServiceMonitor/{RELEASE}"),
            ];
            expected.sort();
            expected
        },
        "one watched namespace: a Role there, no ClusterRole; two replicas: Lease rights"
    );
    let role = object(&objects, "Role", RELEASE)?;
    assert_eq!(
        role["metadata"]["namespace"],
        watched.name.as_str(),
        "the Role is in the watched namespace"
    );
    assert_eq!(rules(role), OPERATOR_RULES);
    let binding = object(&objects, "RoleBinding", RELEASE)?;
    assert_eq!(binding["metadata"]["namespace"], watched.name.as_str());
    assert_eq!(
        binding["subjects"],
        json!([{ "kind": "ServiceAccount", "name": RELEASE, "namespace": release_ns.name }])
    );
    let leases = object(&objects, "Role", &lease_role)?;
    assert_eq!(
        leases["metadata"]["namespace"],
        release_ns.name.as_str(),
        "the Lease is in the release namespace"
    );
    assert_eq!(
        rules(leases),
        vec![
            "coordination.k8s.io/leases create".to_owned(),
            format!("coordination.k8s.io/leases[\"{RELEASE}\"] get,update"),
        ]
    );

    let deployment = object(&objects, "Deployment", RELEASE)?;
    assert_eq!(deployment["spec"]["replicas"], 2);
    // With leader election a rolling update is safe; its parameters are the chart's own, so
    // going back to one replica (Recreate) removes them.
    assert_eq!(
        deployment["spec"]["strategy"],
        json!({
            "type": "RollingUpdate",
            "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 0 }
        })
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/vgs-io/vgs-operator:1.2.3"
    );
    let env = operator_env(deployment)?;
    let get = |key: &str| env.get(key).map(String::as_str);
    assert_eq!(get("VGS_NAMESPACE"), Some(watched.name.as_str()));
    assert_eq!(
        get("VGS_DEFAULT_IMAGE"),
        Some("registry.example/vfep:9.9.9")
    );
    assert_eq!(get("VGS_LOG_FORMAT"), Some("text"));
    assert_eq!(get("VGS_RESYNC_INTERVAL"), Some("60"));
    assert_eq!(
        get("VGS_LEADER_ELECTION"),
        Some("true"),
        "two replicas need leader election"
    );
    assert_eq!(get("VGS_LEASE_NAME"), Some(RELEASE));
    assert_eq!(get("VGS_LEASE_DURATION_SECONDS"), Some("15"));
    assert_eq!(
        get("VGS_LEASE_NAMESPACE"),
        Some("fieldRef:metadata.namespace")
    );
    assert_eq!(get("VGS_LEADER_ID"), Some("fieldRef:metadata.name"));

    let service = object(&objects, "Service", &format!("{RELEASE}-metrics"))?;
    let monitor = object(&objects, "ServiceMonitor", RELEASE)?;
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .context("no ServiceMonitor selector")?
    {
        assert_eq!(
            &service["metadata"]["labels"][key], value,
            "the ServiceMonitor does not select the metrics Service ({key})"
        );
    }
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        json!([release_ns.name])
    );

    let policy = object(&objects, "NetworkPolicy", RELEASE)?;
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        policy["spec"]["ingress"][0]["ports"],
        json!([{ "port": "http", "protocol": "TCP" }])
    );
    assert_eq!(
        policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    let egress = policy["spec"]["egress"].to_string();
    assert!(
        egress.contains("10.96.0.1/32") && egress.contains("172.18.0.0/16"),
        "egress to the API server: {egress}"
    );

    dry_run_apply(&yaml)
        .context("the API server rejected an object rendered with non-default values")?;
    Ok(())
}

/// The pod template of the Deployment, as a Pod named `name` in `namespace`.
fn pod_of(deployment: &Value, namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": namespace },
        "spec": deployment["spec"]["template"]["spec"],
    })
}

#[tokio::test]
async fn the_operator_pod_meets_the_restricted_pod_security_standard() -> Result<()> {
    ensure_crd().await?;
    let ns = TestNamespace::create("chart-pss").await?;
    ns.enforce_restricted_pod_security().await?;
    // Pods are admitted only with their ServiceAccount present.
    kubectl(
        &["create", "serviceaccount", RELEASE, "--namespace", &ns.name],
        None,
    )?;
    for values in [
        &[][..],
        &[
            "--set",
            "replicaCount=2",
            "--set",
            "watchNamespace=elsewhere",
        ][..],
    ] {
        let objects = parse_objects(&template(&ns.name, values)?)?;
        let deployment = object(&objects, "Deployment", RELEASE)?;
        let pod = pod_of(deployment, &ns.name, "pss-check");
        kubectl(
            &["create", "--dry-run=server", "-f", "-"],
            Some(&pod.to_string()),
        )
        .with_context(|| {
            format!("the operator pod ({values:?}) violates the restricted Pod Security Standard")
        })?;
    }
    // The check has teeth: the same pod without its security contexts is refused.
    let objects = parse_objects(&template(&ns.name, &[])?)?;
    let mut pod = pod_of(
        object(&objects, "Deployment", RELEASE)?,
        &ns.name,
        "pss-negative",
    );
    pod["spec"]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    pod["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    let mut command = Command::new("kubectl");
    command.args(["create", "--dry-run=server", "-f", "-"]);
    let output = command_output(&mut command, Some(&pod.to_string()))?;
    assert!(
        !output.success && output.stderr.contains("violates PodSecurity \"restricted"),
        "a pod without security contexts was not refused by the restricted namespace: {}{}",
        output.stdout,
        output.stderr
    );
    Ok(())
}
