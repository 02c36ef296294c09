//! A GroundSystem becomes Ready: three Deployments Available, Services with the right ports, the PVCs,
//! the ConfigMap holding the channels, and status for the current generation.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use serde_json::{Value, json};
use vgs_e2e::{Operator, TestNamespace, repo_root, wait_ready};

const READY_TIMEOUT: Duration = Duration::from_secs(120);

fn service_ports(service: &Service) -> BTreeSet<(String, i32)> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.name.unwrap_or_default(), p.port))
        .collect()
}

fn ports(list: &[(&str, i32)]) -> BTreeSet<(String, i32)> {
    list.iter().map(|(n, p)| (n.to_string(), *p)).collect()
}

/// Checks every child of a Ready GroundSystem `name` and returns its rendered vfep.yaml.
async fn assert_children(ns: &TestNamespace, name: &str, channels: &[&str]) -> Result<String> {
    let deployments = ns.api::<Deployment>();
    for component in ["vfep", "gs", "sim"] {
        let deployment = deployments.get(&format!("{name}-{component}")).await?;
        let status = deployment.status.context("deployment has no status")?;
        let available = status.conditions.unwrap_or_default().iter().any(|c| {
            c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
        });
        assert!(available, "{name}-{component} is not Available");
        assert_eq!(status.ready_replicas, deployment.spec.replicas);
    }
    let services = ns.api::<Service>();
    let expected = [
        (
            "vfep",
            ports(&[("http", 8080), ("gems", 9000), ("stream", 9100)]),
        ),
        ("gs", ports(&[("http", 8081)])),
        ("sim", ports(&[("http", 8082), ("tm", 7001), ("tc", 7002)])),
    ];
    for (component, want) in expected {
        let service = services.get(&format!("{name}-{component}")).await?;
        assert_eq!(
            service_ports(&service),
            want,
            "ports of service {name}-{component}"
        );
    }
    let claims = ns.api::<PersistentVolumeClaim>();
    for claim in ["recording", "config"] {
        claims.get(&format!("{name}-{claim}")).await?;
    }
    let config = ns
        .api::<ConfigMap>()
        .get(&format!("{name}-channels"))
        .await?;
    let rendered = config
        .data
        .unwrap_or_default()
        .remove("vfep.yaml")
        .context("ConfigMap has no vfep.yaml")?;
    let parsed: Value = serde_yaml_ng::from_str(&rendered)?;
    let names: Vec<&str> = parsed["channels"]
        .as_array()
        .context("vfep.yaml has no channels")?
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, channels, "channels in vfep.yaml");
    assert_eq!(parsed["vehicle"]["host"], format!("{name}-sim"));
    Ok(rendered)
}

#[tokio::test]
async fn groundsystem_with_only_required_fields_becomes_ready() -> Result<()> {
    let ns = TestNamespace::create("minimal").await?;
    let operator = Operator::start(&ns.name, 300).await?;
    ns.apply_groundsystem("mission", json!({})).await?;
    let gs = wait_ready(&ns, "mission", READY_TIMEOUT)
        .await
        .with_context(|| operator.log_tail())?;

    let default_channels: Vec<String> = gs.data["spec"]["channels"]
        .as_array()
        .context("the API server should default spec.channels")?
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    let default_channels: Vec<&str> = default_channels.iter().map(String::as_str).collect();
    assert_children(&ns, "mission", &default_channels).await?;

    let status = &gs.data["status"];
    for component in ["vfep", "groundSystem", "simulator"] {
        assert_eq!(
            status[component]["replicas"], "1/1",
            "status.{component}: {status}"
        );
    }
    assert_eq!(
        gs.data["spec"]["recording"]["retentionPolicy"], "Retain",
        "recordings are mission data: Retain is the default"
    );

    // The operator reported what it created.
    ns.wait_for_event("a creation Event for the GroundSystem", |e| {
        e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("mission")
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn full_sample_groundsystem_becomes_ready() -> Result<()> {
    let ns = TestNamespace::create("full").await?;
    let operator = Operator::start(&ns.name, 300).await?;
    let text = std::fs::read_to_string(repo_root().join("examples/groundsystem-full.yaml"))?;
    let sample: Value = serde_yaml_ng::from_str(&text)?;
    let name = sample["metadata"]["name"]
        .as_str()
        .context("sample has no name")?;
    ns.apply_groundsystem(name, sample["spec"].clone()).await?;
    wait_ready(&ns, name, READY_TIMEOUT)
        .await
        .with_context(|| operator.log_tail())?;

    let channels: Vec<&str> = sample["spec"]["channels"]
        .as_array()
        .context("the full sample names its channels")?
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_children(&ns, name, &channels).await?;
    Ok(())
}

#[tokio::test]
async fn a_recording_claim_that_cannot_bind_is_named_in_the_status() -> Result<()> {
    let ns = TestNamespace::create("unbound").await?;
    let operator = Operator::start(&ns.name, 300).await?;
    let spec = json!({"recording": {"storageClassName": "no-such-class"}});
    ns.apply_groundsystem("mission", spec).await?;
    let api = ns.groundsystems();
    let message = vgs_e2e::eventually(
        "Ready=False naming the Pending recording claim",
        READY_TIMEOUT,
        || async {
            let gs = api.get("mission").await?;
            let ready = gs.data["status"]["conditions"]
                .as_array()
                .and_then(|conditions| conditions.iter().find(|c| c["type"] == "Ready"))
                .cloned();
            Ok(ready
                .filter(|c| c["status"] == "False")
                .and_then(|c| c["message"].as_str().map(str::to_owned))
                .filter(|m| m.contains("mission-recording is Pending")))
        },
    )
    .await
    .with_context(|| operator.log_tail())?;
    assert!(
        message.contains("storage class \"no-such-class\"")
            && message.contains("kubectl describe pvc mission-recording"),
        "{message}"
    );
    Ok(())
}
