//! Golden tests of the pure builders: `golden/NAME.input.yaml` (a GroundSystem as stored, with
//! the uid the owner references need) -> `golden/NAME.expected.yaml` (every desired child, in
//! apply order). Regenerate with `UPDATE_GOLDEN=1 cargo test -p vgs-operator --test golden`.

use std::{fs, path::Path};

use vgs_operator::{
    build::{self, Instance},
    crd::GroundSystem,
};

/// A fixed image, so golden files do not change with the crate version.
const DEFAULT_IMAGE: &str = "ghcr.io/vgs-io/vfep:0.1.0";

fn render_desired(input: &str) -> String {
    let gs: GroundSystem = serde_yaml_ng::from_str(input).expect("fixture is a GroundSystem");
    let instance = Instance::resolve(&gs, DEFAULT_IMAGE).expect("fixture has name, namespace, uid");
    let desired = build::desired(&instance);
    let mut documents = vec![serde_yaml_ng::to_string(&desired.config_map).unwrap()];
    for (_, claim) in &desired.volumes {
        documents.push(serde_yaml_ng::to_string(claim).unwrap());
    }
    for workload in &desired.workloads {
        documents.push(serde_yaml_ng::to_string(&workload.service).unwrap());
        documents.push(serde_yaml_ng::to_string(&workload.deployment).unwrap());
    }
    let disabled: Vec<&str> = desired
        .disabled
        .iter()
        .map(|role| role.component())
        .collect();
    format!(
        "# disabled roles (Deployment and Service deleted): {disabled:?}\n---\n{}",
        documents.join("---\n")
    )
}

#[test]
fn desired_children_match_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut fixtures: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".input.yaml"))
        .collect();
    fixtures.sort();
    assert!(
        fixtures.len() >= 2,
        "expected golden fixtures in {}",
        dir.display()
    );

    let mut stale = Vec::new();
    for input_path in fixtures {
        let actual = render_desired(&fs::read_to_string(&input_path).unwrap());
        let expected_path = Path::new(
            &input_path
                .to_string_lossy()
                .replace(".input.yaml", ".expected.yaml"),
        )
        .to_path_buf();
        if update {
            fs::write(&expected_path, &actual).unwrap();
        } else if fs::read_to_string(&expected_path).ok().as_deref() != Some(actual.as_str()) {
            stale.push(expected_path.display().to_string());
            eprintln!(
                "--- {} differs; actual output:\n{actual}",
                expected_path.display()
            );
        }
    }
    assert!(
        stale.is_empty(),
        "golden files out of date: {stale:?}; review the diff and regenerate with \
         UPDATE_GOLDEN=1 cargo test -p vgs-operator --test golden"
    );
}
