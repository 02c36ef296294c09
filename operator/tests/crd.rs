//! The generated CRD: up to date on disk, defaults consistent with the Rust types, and CEL rules
//! that reject what they should (evaluated client-side with kube's CEL implementation; the
//! OpenAPI checks such as minimum, pattern and enum are the API server's own).

use kube::{CustomResourceExt, core::cel::Validator};
use serde_json::{Value, json};
use vgs_operator::crd::{GroundSystem, GroundSystemSpec};

#[test]
fn crd_file_is_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/groundsystem.yaml");
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == vgs_operator::crd_yaml(),
        "crds/groundsystem.yaml is out of date; run `cargo run -p vgs-operator -- crd > crds/groundsystem.yaml`"
    );
}

fn schema() -> Value {
    let crd = GroundSystem::crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

fn groundsystem(spec: Value) -> Value {
    json!({
        "apiVersion": "vgs.io/v1alpha1",
        "kind": "GroundSystem",
        "metadata": {"name": "demo", "namespace": "mission"},
        "spec": spec,
    })
}

/// The messages of the CEL rules `spec` breaks (`old` for transition rules).
fn violations(spec: Value, old: Option<Value>) -> Vec<String> {
    let old = old.map(groundsystem);
    match Validator::new().validate(&schema(), &groundsystem(spec), old.as_ref()) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn assert_rejected(spec: Value, message: &str) {
    let found = violations(spec.clone(), None);
    assert!(
        found.iter().any(|m| m.contains(message)),
        "expected {message:?} for {spec}, got {found:?}"
    );
}

#[test]
fn every_spec_field_is_documented() {
    // `kubectl explain` shows these descriptions; they come from the doc comments.
    fn undocumented(schema: &Value, path: String, out: &mut Vec<String>) {
        if schema.get("description").is_none() {
            out.push(path.clone());
        }
        for (name, child) in schema["properties"].as_object().into_iter().flatten() {
            undocumented(child, format!("{path}.{name}"), out);
        }
        if schema["items"].is_object() {
            undocumented(&schema["items"], format!("{path}[]"), out);
        }
    }
    let mut missing = Vec::new();
    undocumented(&schema()["properties"]["spec"], "spec".into(), &mut missing);
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}

#[test]
fn empty_spec_is_the_documented_defaults() {
    let spec: GroundSystemSpec = serde_json::from_value(json!({})).unwrap();
    assert_eq!(spec, GroundSystemSpec::default());
    assert_eq!(spec.vfep.replicas, 1);
    assert_eq!(spec.simulator.component.ports.tm, 7001);
    assert_eq!(spec.recording.volume.size, "1Gi");
    assert!(spec.simulator.enabled);
    assert!(violations(json!({}), None).is_empty());
}

#[test]
fn schema_defaults_match_the_rust_defaults() {
    // The API server fills in the schema defaults, the operator deserializes with the Rust ones;
    // both come from the same functions, and this keeps it so.
    let schema = schema();
    let properties = &schema["properties"]["spec"]["properties"];
    let defaults = serde_json::to_value(GroundSystemSpec::default()).unwrap();
    for field in [
        "vfep",
        "groundSystem",
        "simulator",
        "channels",
        "recording",
        "config",
    ] {
        assert_eq!(
            properties[field]["default"], defaults[field],
            "spec.{field}"
        );
    }
}

#[test]
fn limits_below_requests_are_rejected() {
    assert_rejected(
        json!({"vfep": {"resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "500m"}}}}),
        "limits.cpu (500m) must be greater than or equal to requests.cpu (1)",
    );
    assert_rejected(
        json!({"groundSystem": {"resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}}}}),
        "limits.memory (512Mi) must be greater than or equal to requests.memory (1Gi)",
    );
    assert!(
        violations(
            json!({"simulator": {"resources": {"requests": {"cpu": "0.5"}, "limits": {"cpu": "500m"}}}}),
            None
        )
        .is_empty()
    );
}

#[test]
fn rate_is_only_for_telemetry() {
    assert_rejected(
        json!({"channels": [{"name": "commands", "apids": [200], "direction": "command", "rateHz": 1.0}]}),
        "rateHz is only allowed for telemetry channels",
    );
}

#[test]
fn vfep_runs_at_most_one_replica() {
    assert_rejected(
        json!({"vfep": {"replicas": 2}}),
        "spec.vfep.replicas: must be 0 or 1",
    );
    assert!(violations(json!({"vfep": {"replicas": 0}}), None).is_empty());
}

#[test]
fn component_ports_must_be_distinct() {
    assert_rejected(
        json!({"vfep": {"ports": {"gems": 8080}}}),
        "vfep ports http, gems and stream must be distinct",
    );
    assert_rejected(
        json!({"simulator": {"ports": {"tm": 7002}}}),
        "simulator ports http, tm and tc must be distinct",
    );
}

#[test]
fn storage_size_must_be_at_least_a_mebibyte() {
    for size in ["0", "0.1", "1", "1023Ki"] {
        assert_rejected(
            json!({"recording": {"size": size}}),
            "size must be at least 1Mi",
        );
    }
    assert!(violations(json!({"recording": {"size": "1Mi"}}), None).is_empty());
}

#[test]
fn volumes_cannot_shrink_or_change_class() {
    let old = json!({"recording": {"size": "10Gi", "storageClassName": "fast"}});
    assert!(
        violations(
            json!({"recording": {"size": "20Gi", "storageClassName": "fast"}}),
            Some(old.clone())
        )
        .is_empty()
    );
    let shrunk = violations(
        json!({"recording": {"size": "5Gi", "storageClassName": "fast"}}),
        Some(old.clone()),
    );
    assert!(
        shrunk
            .iter()
            .any(|m| m.contains("size cannot be decreased")),
        "{shrunk:?}"
    );
    let reclassed = violations(json!({"recording": {"size": "10Gi"}}), Some(old));
    assert!(
        reclassed
            .iter()
            .any(|m| m.contains("storageClassName is immutable")),
        "{reclassed:?}"
    );
    let old = json!({"config": {"accessModes": ["ReadWriteOnce"]}});
    let remoded = violations(
        json!({"config": {"accessModes": ["ReadWriteMany"]}}),
        Some(old),
    );
    assert!(
        remoded
            .iter()
            .any(|m| m.contains("accessModes is immutable")),
        "{remoded:?}"
    );
}

#[test]
fn a_refused_growth_can_be_undone_down_to_the_provisioned_capacity() {
    // The spec asked for 20Gi; the claim still has the 10Gi it was provisioned with.
    let mut old = groundsystem(json!({"recording": {"size": "20Gi"}}));
    old["status"] = json!({"recording": {"phase": "Bound", "capacity": "10Gi"}});
    let messages = |size: &str| -> Vec<String> {
        let new = groundsystem(json!({"recording": {"size": size}}));
        match Validator::new().validate(&schema(), &new, Some(&old)) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    };
    assert_eq!(messages("10Gi"), Vec::<String>::new());
    assert_eq!(messages("15Gi"), Vec::<String>::new());
    let refused = messages("5Gi");
    assert!(
        refused.len() == 1
            && refused[0].contains("spec.recording.size")
            && refused[0].contains(
                "size cannot be decreased from 20Gi to 5Gi: a PersistentVolumeClaim can only \
                 grow (it may go back to the provisioned 10Gi)"
            ),
        "{refused:?}"
    );
}

#[test]
fn example_manifests_are_valid() {
    for file in ["groundsystem-minimal.yaml", "groundsystem-full.yaml"] {
        let path = format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let gs: GroundSystem =
            serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        vgs_operator::validate::validate(&gs.spec).unwrap_or_else(|e| panic!("{file}: {e}"));
        let found = violations(serde_json::to_value(&gs.spec).unwrap(), None);
        assert!(found.is_empty(), "{file}: {found:?}");
    }
}

/// The messages of the CEL rules a GroundSystem named `name` (with `spec: {}`) breaks.
fn name_violations(name: &str) -> Vec<String> {
    let mut object = groundsystem(json!({}));
    object["metadata"]["name"] = json!(name);
    match Validator::new().validate(&schema(), &object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn names_must_leave_room_for_the_service_names() {
    // `<name>-vfep` must be a DNS-1035 label of at most 63 characters.
    let message = "metadata.name must be a DNS-1035 label of at most 58 characters";
    assert!(name_violations(&"a".repeat(58)).is_empty());
    assert!(name_violations("sat-1").is_empty());
    for bad in [
        "a".repeat(59),
        "sat.one".into(),
        "1sat".into(),
        "sat-".into(),
    ] {
        let found = name_violations(&bad);
        assert!(
            found.iter().any(|m| m.contains(message)),
            "expected {message:?} for name {bad:?}, got {found:?}"
        );
    }
}

/// Whether `value` matches the schema `pattern` of the spec field at `pointer` (e.g.
/// `/recording/size`). The API server checks patterns itself; CEL's `matches` uses the same RE2
/// syntax, so it stands in for it here.
fn matches_pattern(pointer: &str, value: &str) -> bool {
    let path: String = pointer
        .trim_start_matches('/')
        .split('/')
        .map(|part| format!("/properties/{part}"))
        .collect();
    let schema = schema();
    let field = schema["properties"]["spec"]
        .pointer(&path)
        .unwrap_or_else(|| panic!("no field {pointer}"));
    let pattern = field["pattern"]
        .as_str()
        .unwrap_or_else(|| panic!("{pointer} has no pattern"));
    let rule = format!("self.matches({})", serde_json::to_string(pattern).unwrap());
    let schema = json!({"type": "string", "x-kubernetes-validations": [{"rule": rule}]});
    Validator::new()
        .validate(&schema, &json!(value), None)
        .is_ok()
}

#[test]
fn byte_quantities_have_no_milli_suffix() {
    let bytes = [
        "/recording/size",
        "/config/size",
        "/vfep/resources/requests/memory",
        "/groundSystem/resources/limits/memory",
        "/simulator/resources/requests/memory",
    ];
    for field in bytes {
        for good in ["128Mi", "10Gi", "1G", "500k", "1073741824", "1.5Gi"] {
            assert!(matches_pattern(field, good), "{field}: {good} rejected");
        }
        for bad in ["100m", "128m", "1Mi ", "ten gigs", "1e3"] {
            assert!(!matches_pattern(field, bad), "{field}: {bad} accepted");
        }
    }
    for field in [
        "/vfep/resources/requests/cpu",
        "/simulator/resources/limits/cpu",
    ] {
        for good in ["500m", "0.5", "2"] {
            assert!(matches_pattern(field, good), "{field}: {good} rejected");
        }
    }
}

#[test]
fn milli_bytes_are_explained() {
    assert_rejected(
        json!({"recording": {"size": "100m"}}),
        "size is in bytes: use a suffix such as Mi or Gi",
    );
    assert_rejected(
        json!({"vfep": {"resources": {"requests": {"memory": "128m"}}}}),
        "memory is in bytes: use a suffix such as Mi or Gi",
    );
    assert_rejected(
        json!({"simulator": {"resources": {"limits": {"memory": "256m"}}}}),
        "memory is in bytes: use a suffix such as Mi or Gi",
    );
    assert!(
        violations(
            json!({"vfep": {"resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "500m"}}}}),
            None
        )
        .is_empty()
    );
}

#[test]
fn a_real_vehicle_replaces_the_simulator() {
    let vehicle = json!({"host": "tmtc.station-1.example.org", "tmPort": 5001, "tcPort": 5002});
    assert!(
        violations(
            json!({"vehicle": vehicle, "simulator": {"enabled": false}}),
            None
        )
        .is_empty()
    );
    assert_rejected(
        json!({"vehicle": vehicle, "simulator": {"enabled": true}}),
        "spec.simulator.enabled: must be false when spec.vehicle is set",
    );
    // The API server fills in `enabled: true`; a spec that leaves it out is refused as well.
    assert_rejected(
        json!({"vehicle": vehicle}),
        "set simulator.enabled: false, or remove spec.vehicle",
    );
    let off = |vehicle: Value| json!({"vehicle": vehicle, "simulator": {"enabled": false}});
    assert_rejected(
        off(json!({"host": "10.0.0.7", "tmPort": 5001, "tcPort": 5001})),
        "spec.vehicle.tcPort: tmPort and tcPort must differ",
    );
    for host in [
        "tmtc station",
        "fd00::7",
        "-vehicle.example.org",
        "vehicle.example.org.",
    ] {
        assert_rejected(
            off(json!({"host": host, "tmPort": 5001, "tcPort": 5002})),
            &format!("spec.vehicle.host: host ({host}) must be a DNS name"),
        );
    }
    for host in ["10.0.0.7", "TMTC.Station-1.example.org", "vehicle"] {
        let found = violations(
            off(json!({"host": host, "tmPort": 5001, "tcPort": 5002})),
            None,
        );
        assert!(found.is_empty(), "{host}: {found:?}");
    }
}

#[test]
fn vehicle_defaults_are_the_simulators_link_ports() {
    let spec: GroundSystemSpec =
        serde_json::from_value(json!({"vehicle": {"host": "vehicle"}})).unwrap();
    let vehicle = spec.vehicle.unwrap();
    let simulator = spec.simulator.component.ports;
    assert_eq!(
        (vehicle.tm_port, vehicle.tc_port),
        (simulator.tm, simulator.tc)
    );
    assert!(vehicle.packet_error_control);
    assert_eq!(vehicle.max_packet_length, 4096);
}
