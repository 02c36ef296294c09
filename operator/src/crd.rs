//! The `GroundSystem` custom resource: types only.
//!
//! The CRD schema (`crds/groundsystem.yaml`) is generated from these types, so every doc comment
//! becomes a `kubectl explain` description and every `#[serde(default)]` a schema default that the
//! API server fills in. Validation lives in the schema wherever the API server can check it, so a
//! bad spec is rejected at `kubectl apply` time with a message naming the field.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Quantity syntax accepted for CPU: a non-negative decimal with an optional binary (Ki..Ei) or
/// decimal (m, k..E) suffix, e.g. `500m`, `1.5`, `2`.
const QUANTITY_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)([KMGTPE]i|[mkMGTPE])?$";
/// Quantity syntax accepted for byte sizes (memory, volumes): as [`QUANTITY_PATTERN`] but without
/// the milli suffix `m`, which would mean thousandths of a byte, e.g. `128Mi`, `10Gi`, `1G`.
const BYTES_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)([KMGTPE]i|[kMGTPE])?$";
/// RFC 1123 DNS label, as used for Kubernetes object names.
const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// RFC 1123 DNS subdomain, as used for StorageClass names.
const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A host name (RFC 1123, any case) or an IPv4 address, which the same pattern covers.
const HOST_PATTERN: &str =
    r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*$";
/// A container image reference, `[registry[:port]/]repository[:tag][@digest]`, following the
/// grammar of the distribution project (what container runtimes accept): a lowercase repository,
/// a tag of at most 128 word characters, dots and dashes, a digest of at least 32 hex digits.
pub const IMAGE_REFERENCE_PATTERN: &str = concat!(
    r"^(?:(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])",
    r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?/)?",
    r"[a-z0-9]+(?:(?:[_.]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[_.]|__|-+)[a-z0-9]+)*)*",
    r"(?::[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?",
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$",
);

/// `spec.<volume>.size` may not drop below what the claim already has: a PersistentVolumeClaim
/// can only grow. It may go back down to the capacity the status shows, so a growth the storage
/// class refused (no volume expansion) can be undone. A root rule, as only there both the spec
/// and the status are in view.
fn volume_size_rule(volume: &str) -> kube::core::Rule {
    let size = format!("self.spec.{volume}.size");
    let old_size = format!("oldSelf.spec.{volume}.size");
    let has_capacity = format!(
        "has(oldSelf.status) && has(oldSelf.status.{volume}) && has(oldSelf.status.{volume}.capacity)"
    );
    let capacity = format!("oldSelf.status.{volume}.capacity");
    kube::core::Rule::new(format!(
        "!has(self.spec.{volume}) || !has(oldSelf.spec.{volume}) \
         || quantity({size}).compareTo(quantity({old_size})) >= 0 \
         || ({has_capacity} && quantity({size}).compareTo(quantity({capacity})) >= 0)"
    ))
    .message(kube::core::Message::Expression(format!(
        "'size cannot be decreased from ' + {old_size} + ' to ' + {size} \
         + ': a PersistentVolumeClaim can only grow' \
         + ({has_capacity} ? ' (it may go back to the provisioned ' + {capacity} + ')' : '')"
    )))
    .field_path(format!(".spec.{volume}.size"))
}

/// Whether `image` is a valid container image reference (the CRD checks `spec.image` with the
/// same pattern; this checks the operator's own `--default-image`).
pub fn is_image_reference(image: &str) -> bool {
    static PATTERN: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(IMAGE_REFERENCE_PATTERN).expect("the image pattern compiles")
    });
    image.len() <= 512 && PATTERN.is_match(image)
}

/// Whether `name` is a DNS-1123 label, as namespace names are.
pub fn is_dns_label(name: &str) -> bool {
    static PATTERN: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(DNS_LABEL_PATTERN).expect("the label pattern compiles")
    });
    name.len() <= 63 && PATTERN.is_match(name)
}

/// Whether `name` is a DNS-1123 subdomain, as most object names are.
pub fn is_dns_subdomain(name: &str) -> bool {
    static PATTERN: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(DNS_SUBDOMAIN_PATTERN).expect("the subdomain pattern compiles")
    });
    name.len() <= 253 && PATTERN.is_match(name)
}

/// Environment variable names the frontend, ground and simulator processes can read.
const ENV_NAME_PATTERN: &str = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$";

/// Desired state of a ground system for one vehicle: the virtual front-end processor (vFEP) that
/// terminates the vehicle's telemetry and command links and records every packet, the ground
/// system that subscribes to it, and optionally a vehicle simulator feeding it. Every field has a
/// default, so `spec: {}` is a complete GroundSystem.
///
/// The links of the vFEP go to the simulator, or to `spec.vehicle` when the simulator is off.
// Each printcolumn repeats `type_ = "string"`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "vgs.io",
    version = "v1alpha1",
    kind = "GroundSystem",
    plural = "groundsystems",
    shortname = "vgs",
    namespaced,
    status = "GroundSystemStatus",
    derive = "PartialEq",
    // The operator names the Services `<name>-vfep`, `<name>-gs` and `<name>-sim` (DNS-1035 labels
    // of at most 63 characters) and labels everything `vgs.io/groundsystem=<name>` (at most 63):
    // a name the API server would otherwise accept could never be reconciled.
    validation = Rule::new(
        "self.metadata.name.size() <= 58 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
    )
    .message(
        "metadata.name must be a DNS-1035 label of at most 58 characters (lower case letters, digits and '-', starting with a letter): the GroundSystem's Services are named <name>-vfep, <name>-gs and <name>-sim"
    ),
    validation = volume_size_rule("recording"),
    validation = volume_size_rule("config"),
    doc = "A ground system for one vehicle: vFEP, ground system and (optional) simulator, with their channel configuration and packet recording.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether every component is rolled out and ready"
    ),
    printcolumn(
        name = "vFEP",
        type_ = "string",
        json_path = ".status.vfep.replicas",
        description = "Ready/desired replicas of the vFEP"
    ),
    printcolumn(
        name = "GS",
        type_ = "string",
        json_path = ".status.groundSystem.replicas",
        description = "Ready/desired replicas of the ground system"
    ),
    printcolumn(
        name = "Simulator",
        type_ = "string",
        json_path = ".status.simulator.replicas",
        description = "Ready/desired replicas of the simulator"
    ),
    printcolumn(
        name = "Recording",
        type_ = "string",
        json_path = ".spec.recording.size",
        description = "Size of the recording volume"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.vehicle) || (has(self.simulator) && has(self.simulator.enabled) && !self.simulator.enabled)",
    "message": "must be false when spec.vehicle is set: the vFEP's links go to the vehicle, so the simulator would run unconnected; set simulator.enabled: false, or remove spec.vehicle to use the simulator",
    "fieldPath": ".simulator.enabled"
}]))]
pub struct GroundSystemSpec {
    /// Container image for all three roles (vFEP, ground system, simulator), e.g.
    /// `ghcr.io/vgs-io/vfep:0.1.0`. Defaults to the operator's `--default-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": format!("self.matches('{}')", IMAGE_REFERENCE_PATTERN.replace('\\', "\\\\")),
        "message": "must be a container image reference such as ghcr.io/vgs-io/vfep:0.1.0: [registry[:port]/]repository[:tag][@digest], the repository in lower case, a non-empty tag"
    }]))]
    pub image: Option<String>,

    /// Image pull policy for all containers. Defaults to the Kubernetes default (`Always` for
    /// `:latest` images, `IfNotPresent` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "ImagePullPolicy::schema")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// The virtual front-end processor: terminates the vehicle links, records every packet and
    /// serves it to subscribers. It is the single writer of the recording volume, so it runs at
    /// most one replica (0 stops it).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.replicas <= 1",
        "message": "must be 0 or 1: the vFEP is the single writer of the recording volume",
        "fieldPath": ".replicas"
    }]))]
    pub vfep: ComponentSpec<VfepPorts>,

    /// The ground system: subscribes to the vFEP's packet stream and publishes commands.
    #[serde(default)]
    pub ground_system: ComponentSpec<GroundSystemPorts>,

    /// The vehicle simulator: listens for the vFEP's telemetry and command links and emits
    /// telemetry for every telemetry channel. One vehicle: at most one replica (0 stops it).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.replicas <= 1",
        "message": "must be 0 or 1: the simulator is one vehicle; the vFEP's telemetry and command links could reach two different replicas through its Service, and the acknowledgements of commands would be lost",
        "fieldPath": ".replicas"
    }]))]
    pub simulator: SimulatorSpec,

    /// The vehicle the vFEP's links connect to when it is not the simulator: a real vehicle, or a
    /// ground station's TM/TC service. Requires `simulator.enabled: false`. Omitted, the links go
    /// to the simulator's Service (and with the simulator off, the vFEP serves its recordings with
    /// its links down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vehicle: Option<VehicleSpec>,

    /// Packet channels: which APIDs the vFEP routes, in which direction. Channel names are
    /// unique. Defaults to one `housekeeping` telemetry channel (APIDs 100 and 101, 1 Hz) and one
    /// `commands` command channel (APID 200).
    #[serde(default = "default_channels")]
    #[schemars(length(min = 1, max = 64))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["name"]
    ))]
    pub channels: Vec<Channel>,

    /// The volume the vFEP records packets to, mounted at `/data`.
    #[serde(default)]
    pub recording: RecordingSpec,

    /// The vFEP's configuration volume, mounted at `/config`. Owned by the GroundSystem and
    /// deleted with it: only the recording has a retention policy.
    #[serde(default)]
    pub config: VolumeSpec,
}

/// When the kubelet pulls the image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    /// The enum alone: the generic optional-enum schema would list `null` as a supported value.
    fn schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "enum": ["Always", "IfNotPresent", "Never"],
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// One workload component (a Deployment and its Service).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec<P: Default + Serialize> {
    /// Number of pods. 0 stops the component without deleting it.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,

    /// CPU and memory requests and limits of the component's container. Both are always set so
    /// the pods get a predictable QoS class and fit namespace quotas.
    #[serde(default)]
    pub resources: Resources,

    /// Container ports; the Service exposes each under the same name.
    #[serde(default)]
    pub ports: P,

    /// Extra environment variables for the container (e.g. `RUST_LOG`). Names are unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["name"]
    ))]
    pub env: Vec<EnvVar>,
}

impl<P: Default + Serialize> Default for ComponentSpec<P> {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            resources: Resources::default(),
            ports: P::default(),
            env: Vec::new(),
        }
    }
}

fn default_replicas() -> i32 {
    1
}

/// The simulator component, which can be switched off when a real vehicle is connected.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimulatorSpec {
    /// Whether to run the simulator. When false its Deployment and Service are deleted.
    #[serde(default = "default_true")]
    pub enabled: bool,

    #[serde(flatten)]
    pub component: ComponentSpec<SimulatorPorts>,
}

impl Default for SimulatorSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            component: ComponentSpec::default(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// A vehicle's link endpoint and the packet format on its links.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": format!("self.host.matches('{}')", HOST_PATTERN.replace('\\', "\\\\")),
        "messageExpression": "'host (' + self.host + ') must be a DNS name such as tmtc.station.example.org or an IPv4 address'",
        "message": "host must be a DNS name or an IPv4 address",
        "fieldPath": ".host"
    },
    {
        "rule": "self.tmPort != self.tcPort",
        // A static message: the API server prices string(int) in a messageExpression far over
        // the CRD's CEL budget and refuses the whole CRD.
        "message": "tmPort and tcPort must differ: the telemetry and command links need their own ports",
        "fieldPath": ".tcPort"
    }
]))]
pub struct VehicleSpec {
    /// DNS name or IPv4 address of the vehicle's link endpoint, e.g. `tmtc.station.example.org`.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// TCP port the vehicle serves its telemetry on; the vFEP connects to it.
    #[serde(default = "default_tm_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub tm_port: i32,
    /// TCP port the vehicle takes commands on; the vFEP connects to it.
    #[serde(default = "default_tc_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub tc_port: i32,
    /// Whether every packet on the links ends with the CRC-16/CCITT-FALSE packet error control
    /// field. A property of the mission's packet format: packets that disagree are dropped.
    #[serde(default = "default_true")]
    pub packet_error_control: bool,
    /// Longest packet accepted, in octets with the primary header (and CRC); longer ones are
    /// dropped as oversize.
    #[serde(default = "default_max_packet_length")]
    #[schemars(range(min = 9, max = 65542))]
    pub max_packet_length: i32,
}

fn default_max_packet_length() -> i32 {
    4096
}

/// Ports of the vFEP container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.http != self.gems && self.http != self.stream && self.gems != self.stream",
    "message": "vfep ports http, gems and stream must be distinct"
}]))]
pub struct VfepPorts {
    /// REST (JSON/XML), WebSocket stream, playback, `/metrics`, `/healthz`, `/readyz`.
    #[serde(default = "default_vfep_http_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub http: i32,
    /// GEMS-ASCII over TCP.
    #[serde(default = "default_gems_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub gems: i32,
    /// Framed TCP packet stream (subscribe to telemetry, publish commands).
    #[serde(default = "default_stream_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub stream: i32,
}

impl Default for VfepPorts {
    fn default() -> Self {
        Self {
            http: default_vfep_http_port(),
            gems: default_gems_port(),
            stream: default_stream_port(),
        }
    }
}

fn default_vfep_http_port() -> i32 {
    8080
}
fn default_gems_port() -> i32 {
    9000
}
fn default_stream_port() -> i32 {
    9100
}

/// Ports of the ground system container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroundSystemPorts {
    /// `/metrics`, `/healthz`, `/readyz`.
    #[serde(default = "default_ground_http_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub http: i32,
}

impl Default for GroundSystemPorts {
    fn default() -> Self {
        Self {
            http: default_ground_http_port(),
        }
    }
}

fn default_ground_http_port() -> i32 {
    8081
}

/// Ports of the simulator container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.http != self.tm && self.http != self.tc && self.tm != self.tc",
    "message": "simulator ports http, tm and tc must be distinct"
}]))]
pub struct SimulatorPorts {
    /// `/metrics`, `/healthz`, `/readyz`.
    #[serde(default = "default_sim_http_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub http: i32,
    /// Telemetry link listener (vehicle -> vFEP).
    #[serde(default = "default_tm_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub tm: i32,
    /// Command link listener (vFEP -> vehicle).
    #[serde(default = "default_tc_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub tc: i32,
}

impl Default for SimulatorPorts {
    fn default() -> Self {
        Self {
            http: default_sim_http_port(),
            tm: default_tm_port(),
            tc: default_tc_port(),
        }
    }
}

fn default_sim_http_port() -> i32 {
    8082
}
fn default_tm_port() -> i32 {
    7001
}
fn default_tc_port() -> i32 {
    7002
}

/// CPU and memory of one container. Each limit must be at least its request.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.requests) || !has(self.limits) || !has(self.requests.cpu) || !has(self.limits.cpu) || quantity(self.limits.cpu).compareTo(quantity(self.requests.cpu)) >= 0",
        "message": "limits.cpu must be greater than or equal to requests.cpu",
        "messageExpression": "'limits.cpu (' + self.limits.cpu + ') must be greater than or equal to requests.cpu (' + self.requests.cpu + '): raise the limit or lower the request'",
        "fieldPath": ".limits.cpu"
    },
    {
        "rule": "!has(self.requests) || !has(self.limits) || !has(self.requests.memory) || !has(self.limits.memory) || quantity(self.limits.memory).compareTo(quantity(self.requests.memory)) >= 0",
        "message": "limits.memory must be greater than or equal to requests.memory",
        "messageExpression": "'limits.memory (' + self.limits.memory + ') must be greater than or equal to requests.memory (' + self.requests.memory + '): raise the limit or lower the request'",
        "fieldPath": ".limits.memory"
    }
]))]
pub struct Resources {
    /// What the scheduler reserves for the container.
    #[serde(default)]
    pub requests: ResourceRequests,
    /// What the container may use at most.
    #[serde(default)]
    pub limits: ResourceLimits,
}

/// Requested CPU and memory.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequests {
    /// CPU request as a quantity string, e.g. `100m` or `0.5`.
    #[serde(default = "default_cpu_request")]
    #[schemars(length(min = 1, max = 32), pattern(QUANTITY_PATTERN))]
    pub cpu: String,
    /// Memory request in bytes as a quantity string with a suffix such as Mi or Gi, e.g. `128Mi`
    /// (no `m`: that would be thousandths of a byte).
    #[serde(default = "default_memory_request")]
    #[schemars(length(min = 1, max = 32), pattern(BYTES_PATTERN))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "!self.endsWith('m')",
        "message": "memory is in bytes: use a suffix such as Mi or Gi (m would mean thousandths of a byte)"
    }]))]
    pub memory: String,
}

impl Default for ResourceRequests {
    fn default() -> Self {
        Self {
            cpu: default_cpu_request(),
            memory: default_memory_request(),
        }
    }
}

fn default_cpu_request() -> String {
    "100m".into()
}
fn default_memory_request() -> String {
    "128Mi".into()
}

/// CPU and memory limits.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceLimits {
    /// CPU limit as a quantity string, e.g. `500m` or `2`; more than 0.
    #[serde(default = "default_cpu_limit")]
    #[schemars(length(min = 1, max = 32), pattern(QUANTITY_PATTERN))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))",
        "message": "a CPU limit must be more than 0 (e.g. 500m): a zero limit caps nothing, and one workload could starve the others"
    }]))]
    pub cpu: String,
    /// Memory limit in bytes as a quantity string with a suffix such as Mi or Gi, e.g. `256Mi`
    /// (no `m`: that would be thousandths of a byte); more than 0. The container is OOM-killed
    /// above it.
    #[serde(default = "default_memory_limit")]
    #[schemars(length(min = 1, max = 32), pattern(BYTES_PATTERN))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "!self.endsWith('m')",
            "message": "memory is in bytes: use a suffix such as Mi or Gi (m would mean thousandths of a byte)"
        },
        {
            "rule": "isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))",
            "message": "a memory limit must be more than 0 (e.g. 256Mi): a zero limit caps nothing, and one workload could starve the others"
        }
    ]))]
    pub memory: String,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        Self {
            cpu: default_cpu_limit(),
            memory: default_memory_limit(),
        }
    }
}

fn default_cpu_limit() -> String {
    "500m".into()
}
fn default_memory_limit() -> String {
    "256Mi".into()
}

/// An extra environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name, e.g. `RUST_LOG`.
    #[schemars(length(min = 1, max = 128), pattern(ENV_NAME_PATTERN))]
    pub name: String,
    /// Variable value.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// A packet channel: a named set of APIDs flowing in one direction.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.direction == 'telemetry' || !has(self.rateHz)",
        "message": "rateHz is only allowed for telemetry channels",
        "fieldPath": ".rateHz"
    }
]))]
pub struct Channel {
    /// Channel name, unique within the GroundSystem: a DNS label (lowercase letters, digits and
    /// `-`, at most 63 characters), e.g. `housekeeping`.
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub name: String,

    /// CCSDS application process identifiers routed on this channel, 0..2046 (2047 is the idle
    /// APID). The vFEP routes packets by APID, so an APID may belong to only one channel.
    #[schemars(schema_with = "apids_schema")]
    pub apids: Vec<i32>,

    /// `telemetry` (vehicle -> ground) or `command` (ground -> vehicle).
    pub direction: Direction,

    /// Telemetry only: the simulator's emission rate per APID, in Hz (0..1000; 0 keeps the
    /// channel silent). 1 Hz when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub rate_hz: Option<f64>,
}

/// A set of 1..256 APIDs; spelled out to document the items too.
fn apids_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 256,
        "x-kubernetes-list-type": "set",
        "items": {
            "description": "An APID, 0..2046.",
            "type": "integer",
            "format": "int32",
            "minimum": 0,
            "maximum": 2046,
        },
    })
}

/// Direction of a channel's packets.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// Vehicle -> ground.
    Telemetry,
    /// Ground -> vehicle.
    Command,
}

fn default_channels() -> Vec<Channel> {
    vec![
        Channel {
            name: "housekeeping".into(),
            apids: vec![100, 101],
            direction: Direction::Telemetry,
            rate_hz: Some(1.0),
        },
        Channel {
            name: "commands".into(),
            apids: vec![200],
            direction: Direction::Command,
            rate_hz: None,
        },
    ]
}

impl Default for GroundSystemSpec {
    fn default() -> Self {
        Self {
            image: None,
            image_pull_policy: None,
            vfep: ComponentSpec::default(),
            ground_system: ComponentSpec::default(),
            simulator: SimulatorSpec::default(),
            vehicle: None,
            channels: default_channels(),
            recording: RecordingSpec::default(),
            config: VolumeSpec::default(),
        }
    }
}

/// A PersistentVolumeClaim. Its storage class and access modes are fixed once created, and its
/// size can only grow (and only if the storage class allows volume expansion; a growth the class
/// refused can be undone, back to the provisioned capacity shown in the status).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
        "message": "storageClassName is immutable",
        "messageExpression": "'storageClassName is immutable: it stays ' + (has(oldSelf.storageClassName) ? oldSelf.storageClassName : 'unset (the default class)') + '. A claim cannot change class: for another, delete the GroundSystem, then its claim (kubectl delete pvc <name>-recording or <name>-config; a Pending claim holds nothing), and create the GroundSystem again'",
        "fieldPath": ".storageClassName"
    },
    {
        "rule": "self.accessModes == oldSelf.accessModes",
        "message": "accessModes is immutable: a claim cannot change its access modes. For others, delete the GroundSystem, then its claim (kubectl delete pvc <name>-recording or <name>-config; a Pending claim holds nothing), and create the GroundSystem again",
        "fieldPath": ".accessModes"
    },
    {
        "rule": "!has(self.accessModes) || self.accessModes.exists(m, m != 'ReadOnlyMany')",
        "message": "the vFEP mounts this volume read-write, and ReadOnlyMany alone cannot be written: use ReadWriteOnce (the default), ReadWriteOncePod or ReadWriteMany",
        "fieldPath": ".accessModes"
    }
]))]
pub struct VolumeSpec {
    /// Requested size in bytes as a quantity string with a suffix such as Mi or Gi, e.g. `1Gi` or
    /// `500Mi` (no `m`: that would be thousandths of a byte); at least `1Mi`.
    #[serde(default = "default_volume_size")]
    #[schemars(length(min = 1, max = 32), pattern(BYTES_PATTERN))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "isQuantity(self) && quantity(self).compareTo(quantity('1Mi')) >= 0",
            "message": "size must be at least 1Mi, with a suffix such as Mi or Gi (e.g. 1Gi)"
        },
        {
            "rule": "!self.endsWith('m')",
            "message": "size is in bytes: use a suffix such as Mi or Gi (m would mean thousandths of a byte)"
        }
    ]))]
    pub size: String,

    /// StorageClass of the claim. The cluster's default StorageClass when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub storage_class_name: Option<String>,

    /// Access modes of the claim.
    #[serde(default = "default_access_modes")]
    #[schemars(length(min = 1, max = 4))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub access_modes: Vec<AccessMode>,
}

impl Default for VolumeSpec {
    fn default() -> Self {
        Self {
            size: default_volume_size(),
            storage_class_name: None,
            access_modes: default_access_modes(),
        }
    }
}

fn default_volume_size() -> String {
    "1Gi".into()
}

fn default_access_modes() -> Vec<AccessMode> {
    vec![AccessMode::ReadWriteOnce]
}

/// How a volume can be mounted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AccessMode {
    ReadWriteOnce,
    ReadOnlyMany,
    ReadWriteMany,
    ReadWriteOncePod,
}

impl AccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadWriteOnce => "ReadWriteOnce",
            Self::ReadOnlyMany => "ReadOnlyMany",
            Self::ReadWriteMany => "ReadWriteMany",
            Self::ReadWriteOncePod => "ReadWriteOncePod",
        }
    }
}

/// The recording volume and how the vFEP writes to it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingSpec {
    #[serde(flatten)]
    pub volume: VolumeSpec,

    /// What happens to the recording volume when the GroundSystem is deleted: `Retain` keeps the
    /// PersistentVolumeClaim (and the recorded packets) so a GroundSystem of the same name picks
    /// it up again; `Delete` removes it together with the GroundSystem.
    #[serde(default)]
    pub retention_policy: RetentionPolicy,

    /// How often the vFEP flushes recorded packets to disk, in milliseconds (0 flushes after
    /// every packet).
    #[serde(default = "default_fsync_interval_ms")]
    #[schemars(range(min = 0, max = 60000))]
    pub fsync_interval_ms: i32,

    /// Size at which the vFEP starts a new recording segment file, in bytes (64 KiB..4 GiB).
    #[serde(default = "default_segment_size_bytes")]
    #[schemars(range(min = 65536, max = 4294967296_i64))]
    pub segment_size_bytes: i64,
}

impl Default for RecordingSpec {
    fn default() -> Self {
        Self {
            volume: VolumeSpec::default(),
            retention_policy: RetentionPolicy::default(),
            fsync_interval_ms: default_fsync_interval_ms(),
            segment_size_bytes: default_segment_size_bytes(),
        }
    }
}

fn default_fsync_interval_ms() -> i32 {
    1000
}
fn default_segment_size_bytes() -> i64 {
    64 * 1024 * 1024
}

/// Fate of the recording volume when its GroundSystem is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RetentionPolicy {
    /// Keep the volume (it has no owner reference).
    #[default]
    Retain,
    /// Delete the volume with the GroundSystem (garbage-collected through its owner reference).
    Delete,
}

/// Observed state, derived by the operator from the child objects.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroundSystemStatus {
    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["type"]
    ))]
    pub conditions: Vec<Condition>,

    /// Replicas of the vFEP.
    #[serde(default)]
    pub vfep: ComponentStatus,

    /// Replicas of the ground system.
    #[serde(default)]
    pub ground_system: ComponentStatus,

    /// Replicas of the simulator (0/0 when disabled).
    #[serde(default)]
    pub simulator: ComponentStatus,

    /// The recording PersistentVolumeClaim.
    #[serde(default)]
    pub recording: VolumeStatus,

    /// The config PersistentVolumeClaim.
    #[serde(default)]
    pub config: VolumeStatus,
}

/// Replica counts of one component.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Replicas asked for in the spec (0 when the component is disabled).
    pub desired_replicas: i32,
    /// Pods passing their readiness probe.
    pub ready_replicas: i32,
    /// `ready/desired`, for `kubectl get`.
    pub replicas: String,
}

/// Observed state of a PersistentVolumeClaim.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatus {
    /// `Pending`, `Bound` or `Lost`; unset until the claim exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Provisioned capacity once bound, e.g. `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub capacity: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::is_image_reference;

    #[test]
    fn image_references_follow_the_distribution_grammar() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for good in [
            "vfep",
            "vfep:0.1.0",
            "ghcr.io/vgs-io/vfep:0.1.0",
            "localhost:5000/vgs/vfep:dev",
            "registry.example.com:443/a/b/c_d__e-f.g:v1_2-3.4",
            "[fd00::1]:5000/vfep:dev",
            &format!("ghcr.io/vgs-io/vfep@{digest}"),
            &format!("ghcr.io/vgs-io/vfep:0.1.0@{digest}"),
            "localhost/vfep:dev",
        ] {
            assert!(is_image_reference(good), "{good} should be accepted");
        }
        for bad in [
            "",
            "ghcr.io/VGS/vfep",
            "vfep:",
            "vfep: 0.1",
            "vfep:.tag",
            "ghcr.io//vfep",
            "-vfep",
            "vfep@sha256:short",
            "https://ghcr.io/vgs-io/vfep",
            &format!("vfep:{}", "t".repeat(129)),
        ] {
            assert!(!is_image_reference(bad), "{bad:?} should be refused");
        }
    }
}
