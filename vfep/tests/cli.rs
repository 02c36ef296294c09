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

/// Found by a user: port 0 and empty hosts were taken from the command line, which the config
/// file refuses; the process then listened on a random port or dialled ":7001" forever.
#[test]
fn flags_are_held_to_the_rules_of_the_config_file() {
    for (args, flag) in [
        (&["frontend", "--http-port", "0"][..], "--http-port"),
        (&["ground", "--http-port", "0"], "--http-port"),
        (&["simulator", "--http-port", "0"], "--http-port"),
        (&["frontend", "--vehicle-host", ""], "--vehicle-host"),
        (&["ground", "--frontend-host", ""], "--frontend-host"),
        (&["frontend", "--recording-dir", ""], "--recording-dir"),
    ] {
        let output = vfep(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let refused = [
            format!("invalid value '0' for '{flag}"),
            format!("a value is required for '{flag}"),
        ];
        assert!(
            refused.iter().any(|message| stderr.contains(message)),
            "{args:?}: {stderr}"
        );
    }
}

/// Found by a user: a recording directory the process cannot write was accepted, every packet
/// then failed to record, and shutdown still reported the recording synced.
#[test]
fn a_recording_directory_that_cannot_be_written_stops_the_frontend_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vfep.yaml");
    std::fs::write(
        &config,
        "channels:\n  - name: hk\n    apids: [100]\n    direction: telemetry\n",
    )
    .unwrap();
    // A regular file where the directory should be: not writable as a directory, even by root.
    let not_a_dir = dir.path().join("recordings");
    std::fs::write(&not_a_dir, "").unwrap();
    let output = vfep(&[
        "frontend",
        "--config",
        config.to_str().unwrap(),
        "--recording-dir",
        not_a_dir.join("sub").to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "opening the recording directory {} (recording.dir, --recording-dir)",
            not_a_dir.join("sub").display()
        )),
        "{stderr}"
    );
}
