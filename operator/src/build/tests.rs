use k8s_openapi::{
    api::core::v1::{Container, PodSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::*;
use crate::crd::{Channel, Direction, GroundSystem};

const DEFAULT_IMAGE: &str = "ghcr.io/vgs-io/vfep:0.1.0";

fn groundsystem(spec: GroundSystemSpec) -> GroundSystem {
    let mut gs = GroundSystem::new("demo", spec);
    gs.metadata.namespace = Some("mission".into());
    gs.metadata.uid = Some("0b6e3f4e-6a4c-4c1e-9d55-3f1f0c8e2a10".into());
    gs
}

fn desired_for(spec: GroundSystemSpec) -> Desired {
    let gs = groundsystem(spec);
    desired(&Instance::resolve(&gs, DEFAULT_IMAGE).unwrap())
}

fn workload(desired: &Desired, role: Role) -> &Workload {
    desired
        .workloads
        .iter()
        .find(|w| w.role == role)
        .unwrap_or_else(|| panic!("no {role:?} workload"))
}

fn pod_spec(desired: &Desired, role: Role) -> &PodSpec {
    workload(desired, role)
        .deployment
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
}

fn container(desired: &Desired, role: Role) -> &Container {
    &pod_spec(desired, role).containers[0]
}

fn config_hash(desired: &Desired, role: Role) -> String {
    workload(desired, role)
        .deployment
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[CONFIG_HASH_ANNOTATION]
        .clone()
}

fn claim(desired: &Desired, volume: Volume) -> &PersistentVolumeClaim {
    &desired
        .volumes
        .iter()
        .find(|(v, _)| *v == volume)
        .unwrap()
        .1
}

#[test]
fn config_hash_follows_the_channels() {
    let before = desired_for(GroundSystemSpec::default());
    let unchanged = desired_for(GroundSystemSpec::default());
    assert_eq!(
        config_hash(&before, Role::Frontend),
        config_hash(&unchanged, Role::Frontend)
    );

    let mut spec = GroundSystemSpec::default();
    spec.channels.push(Channel {
        name: "science".into(),
        apids: vec![300],
        direction: Direction::Telemetry,
        rate_hz: Some(0.5),
    });
    let after = desired_for(spec);
    for role in Role::ALL {
        assert_ne!(
            config_hash(&before, role),
            config_hash(&after, role),
            "{role:?}"
        );
        assert_eq!(
            config_hash(&after, role),
            config_hash(&after, Role::Frontend)
        );
    }

    // Replicas are not part of vfep.yaml: scaling must not restart the pods.
    let mut spec = GroundSystemSpec::default();
    spec.ground_system.replicas = 3;
    assert_eq!(
        config_hash(&before, Role::Ground),
        config_hash(&desired_for(spec), Role::Ground)
    );
}

#[test]
fn retained_recording_claim_has_no_owner_reference() {
    let retained = desired_for(GroundSystemSpec::default());
    assert_eq!(
        claim(&retained, Volume::Recording)
            .metadata
            .owner_references,
        None
    );
    // The label is how the operator still finds it.
    assert_eq!(
        claim(&retained, Volume::Recording)
            .metadata
            .labels
            .as_ref()
            .unwrap()[labels::GROUNDSYSTEM_LABEL],
        "demo"
    );
    assert!(
        claim(&retained, Volume::Config)
            .metadata
            .owner_references
            .is_some()
    );

    let mut spec = GroundSystemSpec::default();
    spec.recording.retention_policy = RetentionPolicy::Delete;
    let deleted = desired_for(spec);
    let owners = claim(&deleted, Volume::Recording)
        .metadata
        .owner_references
        .clone()
        .unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].kind, "GroundSystem");
    assert_eq!(owners[0].name, "demo");
    assert_eq!(owners[0].controller, Some(true));
}

#[test]
fn every_other_child_is_controlled_by_the_groundsystem() {
    let desired = desired_for(GroundSystemSpec::default());
    let metadata = std::iter::once(&desired.config_map.metadata).chain(
        desired
            .workloads
            .iter()
            .flat_map(|w| [&w.deployment.metadata, &w.service.metadata]),
    );
    for meta in metadata {
        let owners = meta.owner_references.as_ref().unwrap();
        assert_eq!(owners[0].uid, "0b6e3f4e-6a4c-4c1e-9d55-3f1f0c8e2a10");
        assert_eq!(owners[0].controller, Some(true));
    }
}

#[test]
fn disabled_simulator_is_listed_for_deletion() {
    let mut spec = GroundSystemSpec::default();
    spec.simulator.enabled = false;
    let desired = desired_for(spec);
    assert_eq!(desired.disabled, [Role::Simulator]);
    assert!(desired.workloads.iter().all(|w| w.role != Role::Simulator));
    assert_eq!(desired_for(GroundSystemSpec::default()).disabled, []);
}

#[test]
fn spec_image_overrides_the_default_and_sets_the_version_label() {
    let desired = desired_for(GroundSystemSpec::default());
    assert_eq!(
        container(&desired, Role::Ground).image.as_deref(),
        Some(DEFAULT_IMAGE)
    );

    let spec = GroundSystemSpec {
        image: Some("registry.example.com/vgs/vfep:1.4.2".into()),
        ..GroundSystemSpec::default()
    };
    let desired = desired_for(spec);
    let deployment = &workload(&desired, Role::Ground).deployment;
    assert_eq!(
        container(&desired, Role::Ground).image.as_deref(),
        Some("registry.example.com/vgs/vfep:1.4.2")
    );
    let labels = deployment.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[labels::VERSION_LABEL], "1.4.2");
    assert_eq!(
        labels[labels::IMAGE_LABEL],
        "registry.example.com_vgs_vfep_1.4.2"
    );
    // The selector must not change with the image: Deployment selectors are immutable.
    let selector = deployment.spec.selector.match_labels.as_ref().unwrap();
    assert!(!selector.contains_key(labels::VERSION_LABEL));
}

#[test]
fn containers_meet_the_restricted_pod_security_standard() {
    let desired = desired_for(GroundSystemSpec::default());
    for role in Role::ALL {
        let pod = pod_spec(&desired, role).security_context.as_ref().unwrap();
        assert_eq!(pod.run_as_non_root, Some(true));
        assert_eq!(
            pod.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        let container = container(&desired, role).security_context.as_ref().unwrap();
        assert_eq!(container.allow_privilege_escalation, Some(false));
        assert_eq!(container.read_only_root_filesystem, Some(true));
        assert_eq!(
            container.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
    }
}

#[test]
fn every_container_has_requests_limits_probes_and_the_config() {
    let desired = desired_for(GroundSystemSpec::default());
    for role in Role::ALL {
        let container = container(&desired, role);
        let resources = container.resources.as_ref().unwrap();
        for amounts in [&resources.requests, &resources.limits] {
            let amounts = amounts.as_ref().unwrap();
            assert!(amounts.contains_key("cpu") && amounts.contains_key("memory"));
        }
        assert_eq!(
            container.args.as_deref().unwrap()[..3],
            [role.component(), "--config", "/etc/vgs/vfep.yaml"]
        );
        for (probe, path) in [
            (&container.liveness_probe, "/healthz"),
            (&container.readiness_probe, "/readyz"),
        ] {
            let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
            assert_eq!(get.path.as_deref(), Some(path));
            assert_eq!(get.port, IntOrString::String("http".into()));
        }
        let mounts = container.volume_mounts.as_ref().unwrap();
        assert!(mounts.iter().any(|m| m.mount_path == CONFIG_DIR));
    }
}

#[test]
fn only_the_vfep_mounts_the_claims_and_is_recreated() {
    let desired = desired_for(GroundSystemSpec::default());
    let mounts = |role| -> Vec<String> {
        container(&desired, role)
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.clone())
            .collect()
    };
    assert_eq!(mounts(Role::Frontend), ["/etc/vgs", "/data", "/config"]);
    assert_eq!(mounts(Role::Ground), ["/etc/vgs"]);
    let strategy = |role| {
        workload(&desired, role)
            .deployment
            .spec
            .strategy
            .as_ref()
            .and_then(|s| s.type_.clone())
    };
    assert_eq!(strategy(Role::Frontend).as_deref(), Some("Recreate"));
    assert_eq!(strategy(Role::Ground), None);
}

#[test]
fn services_expose_named_ports() {
    let desired = desired_for(GroundSystemSpec::default());
    let ports = |role| -> Vec<(String, i32)> {
        workload(&desired, role)
            .service
            .spec
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap(), p.port))
            .collect()
    };
    let named = |pairs: &[(&str, i32)]| -> Vec<(String, i32)> {
        pairs.iter().map(|(n, p)| ((*n).to_owned(), *p)).collect()
    };
    assert_eq!(
        ports(Role::Frontend),
        named(&[("http", 8080), ("gems", 9000), ("stream", 9100)])
    );
    assert_eq!(ports(Role::Ground), named(&[("http", 8081)]));
    assert_eq!(
        ports(Role::Simulator),
        named(&[("http", 8082), ("tm", 7001), ("tc", 7002)])
    );
}

#[test]
fn workload_config_points_at_the_sibling_services() {
    let desired = desired_for(GroundSystemSpec::default());
    let yaml = &desired.config_map.data.as_ref().unwrap()[CONFIG_FILE];
    let config: serde_json::Value = serde_yaml_ng::from_str(yaml).unwrap();
    assert_eq!(config["vehicle"]["host"], "demo-sim");
    assert_eq!(config["vehicle"]["tmPort"], 7001);
    assert_eq!(config["vehicle"]["tcPort"], 7002);
    assert_eq!(config["frontend"]["host"], "demo-vfep");
    assert_eq!(config["frontend"]["streamPort"], 9100);
    assert_eq!(config["recording"]["dir"], "/data");
    assert_eq!(config["channels"][0]["name"], "housekeeping");
    assert_eq!(config["channels"][1].get("rateHz"), None);
}

#[test]
fn each_role_is_told_the_http_port_its_probes_and_service_use() {
    let mut spec = GroundSystemSpec::default();
    spec.vfep.ports.http = 18080;
    spec.ground_system.ports.http = 18081;
    spec.simulator.component.ports.http = 18082;
    let desired = desired_for(spec);
    for (role, port) in [
        (Role::Frontend, 18080),
        (Role::Ground, 18081),
        (Role::Simulator, 18082),
    ] {
        let container = container(&desired, role);
        let args = container.args.as_ref().unwrap();
        let flag = args.iter().position(|arg| arg == "--http-port").unwrap();
        assert_eq!(args[flag + 1], port.to_string(), "{role:?}");
        let http = container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("http"));
        assert_eq!(http.unwrap().container_port, port, "{role:?}");
    }
}
