//! The operator's command line refuses bad values at start, naming the flag.

use std::process::Command;

/// Found by a user: these were accepted, then retried forever (names) or panicked (duration).
#[test]
fn bad_flag_values_are_refused_naming_the_flag() {
    for (flag, value) in [
        ("--lease-duration-seconds", "18446744073709551615"),
        ("--lease-duration-seconds", "3601"),
        ("--lease-name", "Bad Name"),
        ("--lease-namespace", "Bad_NS"),
        ("--namespace", "Bad_NS"),
        ("--default-image", "vfep:"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_vgs-operator"))
            .args(["run", flag, value])
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("invalid value '{value}' for '{flag}")),
            "{flag} {value}: {stderr}"
        );
    }
}
