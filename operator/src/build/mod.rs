//! Pure builders: a GroundSystem (with its defaults resolved) -> the desired children.
//!
//! No I/O here, so everything the operator writes is covered by the golden tests in
//! `operator/tests/golden/`.

pub mod labels;
mod volumes;
mod workload_config;
mod workloads;

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, PersistentVolumeClaim, Service},
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{Resource, ResourceExt, api::ObjectMeta};

use crate::{
    Error,
    crd::{ComponentSpec, EnvVar, GroundSystem, GroundSystemSpec, Resources, RetentionPolicy},
};
pub use workload_config::{CONFIG_DIR, CONFIG_FILE, RECORDING_DIR};

/// Pod template annotation holding the SHA-256 of `vfep.yaml`.
pub const CONFIG_HASH_ANNOTATION: &str = "vgs.io/config-hash";

/// The three workload roles; each is a Deployment plus a Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Frontend,
    Ground,
    Simulator,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Frontend, Role::Ground, Role::Simulator];

    /// The `app.kubernetes.io/component` label and the container's first argument.
    pub fn component(self) -> &'static str {
        match self {
            Role::Frontend => "frontend",
            Role::Ground => "ground",
            Role::Simulator => "simulator",
        }
    }

    /// Suffix of the Deployment and Service names: `NAME-vfep`, `NAME-gs`, `NAME-sim`.
    pub fn name_suffix(self) -> &'static str {
        match self {
            Role::Frontend => "vfep",
            Role::Ground => "gs",
            Role::Simulator => "sim",
        }
    }
}

/// The two PersistentVolumeClaims.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Volume {
    Recording,
    Config,
}

impl Volume {
    pub const ALL: [Volume; 2] = [Volume::Recording, Volume::Config];

    /// Both the `app.kubernetes.io/component` label, the name suffix and the pod volume name.
    pub fn component(self) -> &'static str {
        match self {
            Volume::Recording => "recording",
            Volume::Config => "config",
        }
    }
}

/// Component label and name suffix of the ConfigMap holding `vfep.yaml`.
pub const CHANNELS_COMPONENT: &str = "channels";

/// A GroundSystem with everything the builders need resolved: identity, owner reference and
/// the image (spec or operator default).
pub struct Instance<'a> {
    pub name: String,
    pub namespace: String,
    pub owner: OwnerReference,
    pub image: String,
    pub spec: &'a GroundSystemSpec,
}

impl<'a> Instance<'a> {
    pub fn resolve(gs: &'a GroundSystem, default_image: &str) -> Result<Self, Error> {
        Ok(Self {
            name: gs.name_any(),
            namespace: gs.namespace().ok_or(Error::MissingMetadata("namespace"))?,
            owner: gs
                .controller_owner_ref(&())
                .ok_or(Error::MissingMetadata("uid"))?,
            image: gs
                .spec
                .image
                .clone()
                .unwrap_or_else(|| default_image.to_owned()),
            spec: &gs.spec,
        })
    }

    pub fn child_name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.name)
    }

    /// Metadata of the child `NAME-suffix`; `owned` children get the controller owner reference
    /// and are garbage-collected with the GroundSystem.
    fn child_metadata(&self, suffix: &str, component: &str, owned: bool) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.child_name(suffix)),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels::labels(&self.name, component, &self.image)),
            owner_references: owned.then(|| vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// A workload role's Deployment and the Service in front of it.
pub struct Workload {
    pub role: Role,
    pub deployment: Deployment,
    pub service: Service,
}

/// Everything the operator should make true for one GroundSystem.
pub struct Desired {
    pub config_map: ConfigMap,
    pub volumes: Vec<(Volume, PersistentVolumeClaim)>,
    pub workloads: Vec<Workload>,
    /// Roles whose Deployment and Service must not exist (a disabled simulator).
    pub disabled: Vec<Role>,
}

pub fn desired(instance: &Instance) -> Desired {
    let config = workload_config::render(instance);
    let config_map = ConfigMap {
        metadata: instance.child_metadata(CHANNELS_COMPONENT, CHANNELS_COMPONENT, true),
        data: Some([(CONFIG_FILE.to_owned(), config.yaml)].into()),
        ..ConfigMap::default()
    };
    let (enabled, disabled): (Vec<Role>, Vec<Role>) = Role::ALL
        .into_iter()
        .partition(|role| role_spec(instance.spec, *role).is_some());
    let workloads = enabled
        .into_iter()
        .map(|role| {
            let spec = role_spec(instance.spec, role).expect("role is enabled");
            Workload {
                role,
                deployment: workloads::deployment(instance, role, &spec, &config.sha256),
                service: workloads::service(instance, role, &spec),
            }
        })
        .collect();
    let recording_owned = instance.spec.recording.retention_policy == RetentionPolicy::Delete;
    let volumes = vec![
        (
            Volume::Recording,
            volumes::claim(
                instance,
                Volume::Recording,
                &instance.spec.recording.volume,
                recording_owned,
            ),
        ),
        (
            Volume::Config,
            volumes::claim(instance, Volume::Config, &instance.spec.config, true),
        ),
    ];
    Desired {
        config_map,
        volumes,
        workloads,
        disabled,
    }
}

/// The parts of a component spec the generic workload builder needs, with its ports as
/// `(name, number)` pairs.
pub struct RoleSpec<'a> {
    pub replicas: i32,
    pub resources: &'a Resources,
    pub env: &'a [EnvVar],
    pub ports: Vec<(&'static str, i32)>,
}

impl<'a> RoleSpec<'a> {
    fn new<P: Default + serde::Serialize>(
        component: &'a ComponentSpec<P>,
        ports: Vec<(&'static str, i32)>,
    ) -> Self {
        Self {
            replicas: component.replicas,
            resources: &component.resources,
            env: &component.env,
            ports,
        }
    }

    /// The port probes and `/metrics` use; every role has one named `http`.
    pub fn http_port(&self) -> i32 {
        self.ports
            .iter()
            .find(|(name, _)| *name == HTTP_PORT_NAME)
            .map(|(_, port)| *port)
            .expect("every role has an http port")
    }
}

pub const HTTP_PORT_NAME: &str = "http";

/// A role's spec, or `None` when the role is disabled.
pub fn role_spec(spec: &GroundSystemSpec, role: Role) -> Option<RoleSpec<'_>> {
    match role {
        Role::Frontend => {
            let ports = &spec.vfep.ports;
            Some(RoleSpec::new(
                &spec.vfep,
                vec![
                    (HTTP_PORT_NAME, ports.http),
                    ("gems", ports.gems),
                    ("stream", ports.stream),
                ],
            ))
        }
        Role::Ground => Some(RoleSpec::new(
            &spec.ground_system,
            vec![(HTTP_PORT_NAME, spec.ground_system.ports.http)],
        )),
        Role::Simulator => {
            let simulator = &spec.simulator;
            let ports = &simulator.component.ports;
            simulator.enabled.then(|| {
                RoleSpec::new(
                    &simulator.component,
                    vec![
                        (HTTP_PORT_NAME, ports.http),
                        ("tm", ports.tm),
                        ("tc", ports.tc),
                    ],
                )
            })
        }
    }
}

#[cfg(test)]
mod tests;
