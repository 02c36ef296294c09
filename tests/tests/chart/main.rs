//! Tests of the Helm chart `charts/vgs-operator` against the real local control plane: lint, rendering
//! with default and non-default values (every object accepted by the API server in a server-side dry
//! run), the values schema, and install -> operator under the chart's ServiceAccount -> upgrade ->
//! uninstall. `helm` and `kubectl` come from PATH (hack/test.sh puts the local control plane's there).
//!
//! Leader election under the chart's rights (two operators with the ServiceAccount's token on the
//! chart's Lease, killing the leader hands over) is in `install`; the protocol itself (SIGTERM release,
//! lost Lease) is tested in tests/tests/e2e/leader.rs.

mod install;
mod render;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::OnceCell;
use vgs_e2e::{command_output, install_crd, repo_root, run_command};

/// The release name of every test: object names are then `vgs-operator`, and cluster-scoped ones
/// `NAMESPACE-vgs-operator`.
const RELEASE: &str = "vgs-operator";
const FIELD_MANAGER: &str = "vgs-e2e-chart";
const WAIT: Duration = Duration::from_secs(120);

fn chart() -> PathBuf {
    repo_root().join("charts/vgs-operator")
}

fn helm(args: &[&str]) -> Result<String> {
    run_command(Command::new("helm").args(args), None)
}

fn kubectl(args: &[&str], input: Option<&str>) -> Result<String> {
    run_command(Command::new("kubectl").args(args), input)
}

/// `helm template` of the chart into `namespace`, with `extra` arguments (e.g. `--set`), as YAML.
fn template(namespace: &str, extra: &[&str]) -> Result<String> {
    let chart = chart();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
    ];
    args.extend_from_slice(extra);
    helm(&args)
}

/// The objects of a multi-document YAML stream (empty documents skipped).
fn parse_objects(yaml: &str) -> Result<Vec<Value>> {
    let mut objects = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value = Value::deserialize(document).context("rendered YAML does not parse")?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    kinds.sort();
    kinds
}

/// The one object of `kind` named `name`.
fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        _ => bail!(
            "expected one {kind} {name}, found {}; rendered: {:?}",
            found.len(),
            kinds(objects)
        ),
    }
}

/// Applies YAML with server-side apply as a dry run: the API server validates every object (schema,
/// strict field validation, admission) and stores nothing.
fn dry_run_apply(yaml: &str) -> Result<String> {
    kubectl(
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--force-conflicts",
            "--field-manager",
            FIELD_MANAGER,
            "-f",
            "-",
        ],
        Some(yaml),
    )
}

/// A test fixture: the ServiceMonitor CRD (a minimal copy), so that the API server can validate the
/// chart's ServiceMonitor. Installed once per test binary.
async fn install_servicemonitor_crd() -> Result<()> {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_try_init(|| async {
            let file = repo_root().join("tests/tests/chart/servicemonitor-crd.yaml");
            kubectl(
                &[
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "--field-manager",
                    FIELD_MANAGER,
                    "-f",
                    file.to_str().unwrap(),
                ],
                None,
            )?;
            kubectl(
                &[
                    "wait",
                    "--for=condition=Established",
                    "crd/servicemonitors.monitoring.coreos.com",
                    "--timeout=60s",
                ],
                None,
            )?;
            Ok::<_, anyhow::Error>(())
        })
        .await?;
    Ok(())
}

/// `kubectl auth can-i` as a ServiceAccount: each check is (expected answer, arguments). Every check
/// runs; the failure lists all wrong answers.
fn check_rights(service_account: &str, checks: &[(bool, &[&str])]) -> Result<()> {
    let mut wrong = Vec::new();
    for (expected, args) in checks {
        let mut command = Command::new("kubectl");
        command
            .args(["auth", "can-i", "--as", service_account])
            .args(*args);
        let output = command_output(&mut command, None)?;
        let answer = match output.stdout.trim() {
            "yes" => true,
            "no" => false,
            _ => bail!(
                "`kubectl auth can-i {}` answered neither yes nor no: {}{}",
                args.join(" "),
                output.stdout,
                output.stderr
            ),
        };
        if answer != *expected {
            wrong.push(format!(
                "  can-i {} -> {} (expected {})",
                args.join(" "),
                if answer { "yes" } else { "no" },
                if *expected { "yes" } else { "no" }
            ));
        }
    }
    if !wrong.is_empty() {
        bail!(
            "the RBAC of {service_account} is not what the operator needs:\n{}",
            wrong.join("\n")
        );
    }
    Ok(())
}

/// The sample GroundSystem users are told to apply (NOTES.txt), and its name.
fn sample() -> Result<(PathBuf, String)> {
    let path = repo_root().join("examples/groundsystem-minimal.yaml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the sample {}", path.display()))?;
    let object: Value = serde_yaml_ng::from_str(&text)?;
    let name = object["metadata"]["name"]
        .as_str()
        .ok_or_else(|| anyhow!("{} has no metadata.name", path.display()))?
        .to_owned();
    Ok((path, name))
}

/// The CRD, as the e2e harness installs it (idempotent; the chart's copy is byte-identical).
async fn ensure_crd() -> Result<()> {
    install_crd().await.map(|_| ())
}

/// The env of the operator container, name -> value (or the fieldRef path for downward API values).
fn operator_env(deployment: &Value) -> Result<std::collections::BTreeMap<String, String>> {
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let env = container["env"]
        .as_array()
        .context("the operator container has no env")?;
    Ok(env
        .iter()
        .map(|e| {
            let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
                (Value::String(v), _) => v.clone(),
                (_, Value::String(path)) => format!("fieldRef:{path}"),
                _ => e.to_string(),
            };
            (e["name"].as_str().unwrap_or_default().to_owned(), value)
        })
        .collect())
}

/// Rules of a Role or ClusterRole as comparable strings: "group/resource[names] verb,verb".
fn rules(role: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        let list = |key: &str| -> Vec<String> {
            rule[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        let names = list("resourceNames");
        for group in list("apiGroups") {
            for resource in list("resources") {
                let names = if names.is_empty() {
                    String::new()
                } else {
                    format!("{names:?}")
                };
                out.push(format!(
                    "{group}/{resource}{names} {}",
                    list("verbs").join(",")
                ));
            }
        }
    }
    out.sort();
    out
}
