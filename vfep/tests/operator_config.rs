//! The contract between the two crates: every `vfep.yaml` the operator renders (its golden files)
//! is a config the workload loads, and means what the GroundSystem said.

use std::{fs, path::Path};

use serde::Deserialize;
use vfep::config::{Config, Direction};

/// `(fixture, vfep.yaml)` of each golden ConfigMap the operator renders.
fn rendered_configs() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../operator/tests/golden");
    let mut configs = Vec::new();
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(fixture) = name.strip_suffix(".expected.yaml") else {
            continue;
        };
        let text = fs::read_to_string(&path).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let object = serde_yaml_ng::Value::deserialize(document).unwrap();
            if object["kind"] == "ConfigMap" {
                let file = object["data"]["vfep.yaml"].as_str().unwrap().to_owned();
                configs.push((fixture.to_owned(), file));
            }
        }
    }
    configs.sort();
    configs
}

#[test]
fn the_workload_loads_every_config_the_operator_renders() {
    let configs = rendered_configs();
    let fixtures: Vec<&str> = configs.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(fixtures, ["full", "minimal", "no-simulator"]);
    for (fixture, file) in &configs {
        let config = Config::parse(file).unwrap_or_else(|e| panic!("{fixture}: {e}\n{file}"));
        assert!(
            config
                .channels
                .iter()
                .any(|c| c.direction == Direction::Command),
            "{fixture}: a command channel"
        );
    }
    let (_, minimal) = &configs[1];
    let vehicle = Config::parse(minimal).unwrap().vehicle;
    assert_eq!(
        vehicle.host, "demo-sim",
        "links go to the simulator's Service"
    );
    assert!(vehicle.packet_error_control);

    let (_, real_vehicle) = &configs[2];
    let vehicle = Config::parse(real_vehicle).unwrap().vehicle;
    assert_eq!(
        (vehicle.host.as_str(), vehicle.tm_port, vehicle.tc_port),
        ("tmtc.station-1.example.org", 5001, 5002)
    );
    assert!(
        !vehicle.packet_error_control,
        "spec.vehicle.packetErrorControl"
    );
    assert_eq!(vehicle.max_packet_length, 4096);
}
