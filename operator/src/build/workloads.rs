//! One generic Deployment and Service builder for the three roles.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy},
        core::v1::{
            Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, HTTPGetAction,
            PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
            ResourceRequirements, SeccompProfile, SecurityContext, Service, ServicePort,
            ServiceSpec, Volume as PodVolume, VolumeMount,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity, apis::meta::v1::LabelSelector, util::intstr::IntOrString,
    },
};
use kube::api::ObjectMeta;

use super::{
    CHANNELS_COMPONENT, CONFIG_DIR, CONFIG_FILE, CONFIG_HASH_ANNOTATION, HTTP_PORT_NAME, Instance,
    Role, RoleSpec, Volume, labels,
};

/// The distroless `nonroot` user: any fixed non-zero UID satisfies the restricted Pod Security
/// Standard, and a fixed one lets `fsGroup` make the volumes writable.
const NON_ROOT_UID: i64 = 65532;
/// Where the config volume is mounted in the vFEP.
const CONFIG_VOLUME_DIR: &str = "/config";

pub fn deployment(
    instance: &Instance,
    role: Role,
    spec: &RoleSpec,
    config_hash: &str,
) -> Deployment {
    let component = role.component();
    // Only the vFEP mounts the PersistentVolumeClaims. They are ReadWriteOnce by default, so an
    // old and a new vFEP pod must never run at the same time.
    let mounts_claims = role == Role::Frontend;
    let template_metadata = ObjectMeta {
        labels: Some(labels::labels(&instance.name, component, &instance.image)),
        annotations: Some(BTreeMap::from([(
            CONFIG_HASH_ANNOTATION.to_owned(),
            config_hash.to_owned(),
        )])),
        ..ObjectMeta::default()
    };
    Deployment {
        metadata: instance.child_metadata(role.name_suffix(), component, true),
        spec: DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(labels::selector_labels(&instance.name, component)),
                ..LabelSelector::default()
            },
            strategy: mounts_claims.then(|| DeploymentStrategy {
                type_: Some("Recreate".to_owned()),
                ..DeploymentStrategy::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(template_metadata),
                spec: Some(pod_spec(instance, role, spec, mounts_claims)),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

fn pod_spec(instance: &Instance, role: Role, spec: &RoleSpec, mounts_claims: bool) -> PodSpec {
    let mut volumes = vec![PodVolume {
        name: CHANNELS_COMPONENT.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: instance.child_name(CHANNELS_COMPONENT),
            ..ConfigMapVolumeSource::default()
        }),
        ..PodVolume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: CHANNELS_COMPONENT.to_owned(),
        mount_path: CONFIG_DIR.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    if mounts_claims {
        for (volume, mount_path) in [
            (Volume::Recording, super::RECORDING_DIR),
            (Volume::Config, CONFIG_VOLUME_DIR),
        ] {
            volumes.push(PodVolume {
                name: volume.component().to_owned(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: instance.child_name(volume.component()),
                    ..PersistentVolumeClaimVolumeSource::default()
                }),
                ..PodVolume::default()
            });
            mounts.push(VolumeMount {
                name: volume.component().to_owned(),
                mount_path: mount_path.to_owned(),
                ..VolumeMount::default()
            });
        }
    }

    PodSpec {
        containers: vec![container(instance, role, spec, mounts)],
        volumes: Some(volumes),
        // The workloads never call the Kubernetes API.
        automount_service_account_token: Some(false),
        // Service links would inject one set of variables per Service in the namespace.
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(NON_ROOT_UID),
            run_as_group: Some(NON_ROOT_UID),
            fs_group: Some(NON_ROOT_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    }
}

fn container(
    instance: &Instance,
    role: Role,
    spec: &RoleSpec,
    volume_mounts: Vec<VolumeMount>,
) -> Container {
    let http_probe = |path: &str, period_seconds: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(HTTP_PORT_NAME.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        ..Probe::default()
    };
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    let resources = spec.resources;
    Container {
        name: role.component().to_owned(),
        image: Some(instance.image.clone()),
        image_pull_policy: instance
            .spec
            .image_pull_policy
            .map(|policy| policy.as_str().to_owned()),
        // The http port is the one port vfep.yaml does not carry for every role.
        args: Some(vec![
            role.component().to_owned(),
            "--config".to_owned(),
            format!("{CONFIG_DIR}/{CONFIG_FILE}"),
            "--http-port".to_owned(),
            spec.http_port().to_string(),
        ]),
        env: (!spec.env.is_empty()).then(|| {
            spec.env
                .iter()
                .map(|var| EnvVar {
                    name: var.name.clone(),
                    value: Some(var.value.clone()),
                    ..EnvVar::default()
                })
                .collect()
        }),
        ports: Some(
            spec.ports
                .iter()
                .map(|(name, port)| ContainerPort {
                    name: Some((*name).to_owned()),
                    container_port: *port,
                    protocol: Some("TCP".to_owned()),
                    ..ContainerPort::default()
                })
                .collect(),
        ),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(
                &resources.requests.cpu,
                &resources.requests.memory,
            )),
            limits: Some(quantities(&resources.limits.cpu, &resources.limits.memory)),
            ..ResourceRequirements::default()
        }),
        liveness_probe: Some(http_probe("/healthz", 10)),
        readiness_probe: Some(http_probe("/readyz", 5)),
        volume_mounts: Some(volume_mounts),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

pub fn service(instance: &Instance, role: Role, spec: &RoleSpec) -> Service {
    Service {
        metadata: instance.child_metadata(role.name_suffix(), role.component(), true),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(labels::selector_labels(&instance.name, role.component())),
            ports: Some(
                spec.ports
                    .iter()
                    .map(|(name, port)| ServicePort {
                        name: Some((*name).to_owned()),
                        port: *port,
                        target_port: Some(IntOrString::String((*name).to_owned())),
                        protocol: Some("TCP".to_owned()),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
