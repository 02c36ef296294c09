//! `vfep.yaml`: the workload configuration file all three roles read (schema in
//! docs/architecture.md).

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Instance, Role, labels::hex};
use crate::crd::Channel;

/// Key of the file in the ConfigMap; also its file name under [`CONFIG_DIR`].
pub const CONFIG_FILE: &str = "vfep.yaml";
/// Where the ConfigMap is mounted in every container.
pub const CONFIG_DIR: &str = "/etc/vgs";
/// Where the recording volume is mounted in the vFEP.
pub const RECORDING_DIR: &str = "/data";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WorkloadConfig<'a> {
    channels: &'a [Channel],
    vehicle: Vehicle,
    frontend: Frontend,
    recording: Recording,
}

/// Where the vFEP connects its links: `spec.vehicle`, or else the simulator's listeners (whose
/// packet format is the workload's default).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Vehicle {
    host: String,
    tm_port: i32,
    tc_port: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    packet_error_control: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_packet_length: Option<i32>,
}

impl Vehicle {
    fn of(instance: &Instance) -> Vehicle {
        let spec = instance.spec;
        match &spec.vehicle {
            Some(vehicle) => Vehicle {
                host: vehicle.host.clone(),
                tm_port: vehicle.tm_port,
                tc_port: vehicle.tc_port,
                packet_error_control: Some(vehicle.packet_error_control),
                max_packet_length: Some(vehicle.max_packet_length),
            },
            None => Vehicle {
                host: instance.child_name(Role::Simulator.name_suffix()),
                tm_port: spec.simulator.component.ports.tm,
                tc_port: spec.simulator.component.ports.tc,
                packet_error_control: None,
                max_packet_length: None,
            },
        }
    }
}

/// Where subscribers reach the vFEP.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Frontend {
    host: String,
    http_port: i32,
    gems_port: i32,
    stream_port: i32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Recording {
    dir: &'static str,
    fsync_interval_ms: i32,
    segment_size_bytes: i64,
}

/// The rendered file and its SHA-256, which goes on the pod templates so a config change rolls
/// the pods.
pub struct RenderedConfig {
    pub yaml: String,
    pub sha256: String,
}

pub fn render(instance: &Instance) -> RenderedConfig {
    let spec = instance.spec;
    let vfep_ports = &spec.vfep.ports;
    let config = WorkloadConfig {
        channels: &spec.channels,
        vehicle: Vehicle::of(instance),
        frontend: Frontend {
            host: instance.child_name(Role::Frontend.name_suffix()),
            http_port: vfep_ports.http,
            gems_port: vfep_ports.gems,
            stream_port: vfep_ports.stream,
        },
        recording: Recording {
            dir: RECORDING_DIR,
            fsync_interval_ms: spec.recording.fsync_interval_ms,
            segment_size_bytes: spec.recording.segment_size_bytes,
        },
    };
    let yaml = serde_yaml_ng::to_string(&config).expect("the workload config serializes to YAML");
    let sha256 = hex(&Sha256::digest(yaml.as_bytes()));
    RenderedConfig { yaml, sha256 }
}
