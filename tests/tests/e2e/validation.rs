//! The CRD is installed from crds/ and the API server itself rejects bad specs, naming the field.

use anyhow::Result;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use vgs_e2e::{TestNamespace, install_crd};

#[tokio::test]
async fn crd_is_established_with_short_name_printer_columns_and_field_docs() -> Result<()> {
    let client = install_crd().await?;
    let crd = Api::<CustomResourceDefinition>::all(client)
        .get("groundsystems.vgs.io")
        .await?;
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["vgs".to_string()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(
        version
            .subresources
            .as_ref()
            .is_some_and(|s| s.status.is_some())
    );
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    for column in ["Ready", "vFEP", "GS", "Simulator", "Recording", "Age"] {
        assert!(
            columns.contains(&column),
            "printer column {column} missing: {columns:?}"
        );
    }
    // Every property documents itself, so that `kubectl explain groundsystem.spec...` is useful.
    let schema = serde_json::to_value(&version.schema.as_ref().unwrap().open_api_v3_schema)?;
    let mut undocumented = Vec::new();
    find_undocumented(&schema["properties"]["spec"], "spec", &mut undocumented);
    assert!(
        undocumented.is_empty(),
        "fields without a description: {undocumented:?}"
    );
    Ok(())
}

fn find_undocumented(schema: &Value, path: &str, out: &mut Vec<String>) {
    if schema.get("description").is_none() {
        out.push(path.to_string());
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, child) in properties {
            find_undocumented(child, &format!("{path}.{name}"), out);
        }
    }
    if schema["items"].is_object() {
        find_undocumented(&schema["items"], &format!("{path}[]"), out);
    }
}

/// Creates (server-side dry run) a GroundSystem named `name` with `spec` and returns the API
/// server's rejection message.
async fn rejection(ns: &TestNamespace, name: &str, spec: Value) -> Result<String> {
    let object = serde_json::from_value(json!({
        "apiVersion": "vgs.io/v1alpha1",
        "kind": "GroundSystem",
        "metadata": { "name": name },
        "spec": spec,
    }))?;
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match ns.groundsystems().create(&params, &object).await {
        Ok(_) => anyhow::bail!("the API server accepted a bad GroundSystem {name}: {spec}"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "expected 422 Invalid, got {status:?}");
            Ok(status.message)
        }
        Err(other) => Err(other.into()),
    }
}

#[tokio::test]
async fn api_server_rejects_bad_specs_naming_the_field() -> Result<()> {
    let ns = TestNamespace::create("validation").await?;
    let channel = |name: &str, direction: &str| json!({ "name": name, "apids": [100], "direction": direction });
    let long_name = "a".repeat(59);
    let cases = [
        (json!({ "vfep": { "replicas": -1 } }), "spec.vfep.replicas"),
        (
            json!({ "groundSystem": { "resources": {
                "requests": { "cpu": "500m", "memory": "128Mi" },
                "limits": { "cpu": "100m", "memory": "256Mi" } } } }),
            "spec.groundSystem.resources.limits.cpu: Invalid value: limits.cpu (100m) must be greater than or equal to requests.cpu (500m)",
        ),
        (
            json!({ "simulator": { "resources": {
                "requests": { "cpu": "100m", "memory": "512Mi" },
                "limits": { "cpu": "200m", "memory": "256Mi" } } } }),
            "limits.memory (256Mi) must be greater than or equal to requests.memory (512Mi)",
        ),
        (
            json!({ "vfep": { "ports": { "http": 8080, "gems": 8080 } } }),
            "vfep ports http, gems and stream must be distinct",
        ),
        (
            json!({ "channels": [channel("hk", "sideways")] }),
            "spec.channels[0].direction",
        ),
        (
            json!({ "channels": [channel("", "telemetry")] }),
            "spec.channels[0].name",
        ),
        (
            json!({ "channels": [channel("Bad_Name", "telemetry")] }),
            "spec.channels[0].name",
        ),
        (
            json!({ "channels": [{ "name": "hk", "apids": [4096], "direction": "telemetry" }] }),
            "spec.channels[0].apids[0]",
        ),
        (
            json!({ "channels": [channel("hk", "telemetry"), channel("hk", "command")] }),
            "spec.channels",
        ),
        (
            json!({ "recording": { "size": "ten gigs" } }),
            "spec.recording.size",
        ),
        (
            json!({ "image": "ghcr.io/VGS/vfep:1" }),
            "spec.image: Invalid value: \"ghcr.io/VGS/vfep:1\": must be a container image reference",
        ),
        (json!({ "image": "vfep:" }), "the repository in lower case, a non-empty tag"),
        (
            json!({ "recording": { "size": "0.1" } }),
            "spec.recording.size: Invalid value: \"0.1\": size must be at least 1Mi",
        ),
        (
            json!({ "recording": { "retentionPolicy": "Forget" } }),
            "spec.recording.retentionPolicy",
        ),
        (
            json!({ "vehicle": { "host": "tmtc.station-1.example.org" } }),
            "spec.simulator.enabled: Invalid value: must be false when spec.vehicle is set",
        ),
        (
            json!({ "simulator": { "enabled": false },
                    "vehicle": { "host": "tmtc", "tmPort": 5001, "tcPort": 5001 } }),
            "spec.vehicle.tcPort: Invalid value: tmPort and tcPort must differ",
        ),
        (
            json!({ "simulator": { "enabled": false }, "vehicle": { "host": "fd00::7" } }),
            "spec.vehicle.host: Invalid value: host (fd00::7) must be a DNS name",
        ),
        // Found by a user: these were accepted.
        (
            json!({ "recording": { "accessModes": ["ReadOnlyMany"] } }),
            "spec.recording.accessModes: Invalid value: the vFEP mounts this volume read-write",
        ),
        (
            json!({ "simulator": { "replicas": 2 } }),
            "spec.simulator.replicas: Invalid value: must be 0 or 1",
        ),
        (
            json!({ "groundSystem": { "resources": { "limits": { "cpu": "0" } } } }),
            "spec.groundSystem.resources.limits.cpu: Invalid value: \"0\": a CPU limit must be more than 0",
        ),
        (
            json!({ "vfep": { "resources": { "limits": { "memory": "0Gi" } } } }),
            "spec.vfep.resources.limits.memory: Invalid value: \"0Gi\": a memory limit must be more than 0",
        ),
        // 0.1 byte: byte quantities take no milli suffix.
        (
            json!({ "recording": { "size": "100m" } }),
            "spec.recording.size",
        ),
    ]
    .map(|(spec, field)| ("bad", spec, field))
    .into_iter()
    .chain([
        // The Services `<name>-vfep`, ... must be DNS-1035 labels of at most 63 characters.
        ("sat.one", json!({}), "metadata.name"),
        (long_name.as_str(), json!({}), "metadata.name"),
    ]);
    let digest = format!("sha256:{}", "0".repeat(64));
    let accepted = json!({ "image": format!("localhost:5000/vgs/vfep:dev@{digest}") });
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let object = serde_json::from_value(json!({
        "apiVersion": "vgs.io/v1alpha1",
        "kind": "GroundSystem",
        "metadata": { "name": "good-image" },
        "spec": accepted,
    }))?;
    ns.groundsystems().create(&params, &object).await?;
    for (name, spec, field) in cases {
        let message = rejection(&ns, name, spec.clone()).await?;
        assert!(
            message.contains(field),
            "rejection of {name} {spec} should name {field}, but says: {message}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn api_server_rejects_shrinking_a_volume_or_changing_its_class_quoting_the_values()
-> Result<()> {
    let ns = TestNamespace::create("volume-rules").await?;
    ns.apply_groundsystem("mission", json!({ "recording": { "size": "2Gi" } }))
        .await?;
    let cases = [
        (
            json!({ "recording": { "size": "1Gi" } }),
            "size cannot be decreased from 2Gi to 1Gi: a PersistentVolumeClaim can only grow",
        ),
        (
            json!({ "recording": { "size": "2Gi", "storageClassName": "fast" } }),
            "storageClassName is immutable: it stays unset (the default class). A claim cannot change class: for another, delete the GroundSystem, then its claim",
        ),
        // Found by a user: this one said only "accessModes is immutable".
        (
            json!({ "recording": { "size": "2Gi", "accessModes": ["ReadWriteMany"] } }),
            "accessModes is immutable: a claim cannot change its access modes. For others, delete the GroundSystem, then its claim",
        ),
    ];
    for (spec, expected) in cases {
        match ns.apply_groundsystem("mission", spec.clone()).await {
            Ok(_) => anyhow::bail!("the API server accepted the update {spec}"),
            Err(error) => {
                let message = format!("{error:#}");
                assert!(
                    message.contains(expected),
                    "update {spec} should say {expected:?}, but says: {message}"
                );
            }
        }
    }
    Ok(())
}
