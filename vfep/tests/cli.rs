//! The binary's command line: help, version, and config errors that name the file and field.

use std::process::{Command, Output};

fn vfep(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vfep"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn version_and_help_for_every_subcommand() {
    let version = vfep(&["--version"]);
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        format!("vfep {}\n", env!("CARGO_PKG_VERSION"))
    );
    for role in ["frontend", "ground", "simulator", "bench"] {
        let help = vfep(&[role, "--help"]);
        assert!(help.status.success(), "{role}");
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(text.contains(&format!("Usage: vfep {role}")), "{text}");
        if role != "bench" {
            assert!(
                text.contains("--config <CONFIG>") && text.contains("VFEP_CONFIG"),
                "{text}"
            );
        }
    }
}

#[test]
fn a_bad_config_file_is_refused_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vfep.yaml");
    std::fs::write(
        &path,
        "channels:\n  - name: hk\n    apids: [100]\n    direction: telemetry\n  - name: cmd\n    apids: [200]\n    direction: sideways\n",
    )
    .unwrap();
    for role in ["frontend", "ground", "simulator"] {
        let output = vfep(&[role, "--config", path.to_str().unwrap()]);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        let expected = format!(
            "{}: channels[1].direction: unknown variant \"sideways\", expected \"telemetry\" or \"command\"",
            path.display()
        );
        assert!(stderr.contains(&expected), "{role}: {stderr}");
    }

    std::fs::write(&path, "channels: []\nrecording:\n  fsyncInterval: 5\n").unwrap();
    let output = vfep(&["frontend", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("recording: unknown field \"fsyncInterval\""),
        "{stderr}"
    );

    let missing = dir.path().join("absent.yaml");
    let output = vfep(&["simulator", "--config", missing.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert_eq!(
        stderr.matches("No such file").count(),
        1,
        "said once: {stderr}"
    );
}
