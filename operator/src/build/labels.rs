//! Names and labels of the children, as fixed in docs/architecture.md.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Label keys and fixed values shared with the e2e tests and the Helm chart.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";
/// Names the owning GroundSystem on every child, including the retained recording volume that
/// has no owner reference: the operator maps PVC events back to their GroundSystem through it.
pub const GROUNDSYSTEM_LABEL: &str = "vgs.io/groundsystem";
pub const IMAGE_LABEL: &str = "vgs.io/image";

pub const APP_NAME: &str = "vfep";
pub const PART_OF: &str = "vgs";
pub const MANAGER: &str = "vgs-operator";

/// Selects every child any GroundSystem can have, for the operator's watches.
pub fn managed_children_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGER},{NAME_LABEL}={APP_NAME}")
}

/// The labels that identify one component's pods. Deployment selectors are immutable, so these
/// leave out everything that changes with the image.
pub fn selector_labels(instance: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), APP_NAME.to_owned()),
        (INSTANCE_LABEL.to_owned(), instance.to_owned()),
        (COMPONENT_LABEL.to_owned(), component.to_owned()),
    ])
}

/// All labels of a child (and of the pods it runs).
pub fn labels(instance: &str, component: &str, image: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(instance, component);
    labels.extend([
        (PART_OF_LABEL.to_owned(), PART_OF.to_owned()),
        (MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned()),
        (VERSION_LABEL.to_owned(), label_value(image_version(image))),
        (GROUNDSYSTEM_LABEL.to_owned(), instance.to_owned()),
        (IMAGE_LABEL.to_owned(), label_value(image)),
    ]);
    labels
}

/// The version an image reference names: its tag, else its digest, else `latest` (what the
/// registry resolves an untagged reference to).
fn image_version(image: &str) -> &str {
    let (reference, digest) = match image.split_once('@') {
        Some((reference, digest)) => (reference, Some(digest)),
        None => (image, None),
    };
    // A ':' before the last '/' belongs to a registry port, not a tag.
    let last_segment = reference.rsplit('/').next().unwrap_or(reference);
    match (last_segment.split_once(':'), digest) {
        (Some((_, tag)), _) => tag,
        (None, Some(digest)) => digest.split_once(':').map_or(digest, |(_, hex)| hex),
        (None, None) => "latest",
    }
}

/// Turns any string into a valid label value: at most 63 characters of `[A-Za-z0-9._-]`,
/// starting and ending alphanumeric. Characters outside the set become `_`; a value too long is
/// cut and suffixed with a hash of the original, so different long values stay different.
pub fn label_value(raw: &str) -> String {
    const MAX_LEN: usize = 63;
    const HASH_LEN: usize = 8;
    let mut value: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if value.len() > MAX_LEN {
        let hash = hex(&Sha256::digest(raw.as_bytes()));
        value.truncate(MAX_LEN - HASH_LEN - 1);
        value = format!("{value}-{}", &hash[..HASH_LEN]);
    }
    value
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_the_tag_even_with_a_registry_port() {
        assert_eq!(image_version("ghcr.io/vgs-io/vfep:0.1.0"), "0.1.0");
        assert_eq!(image_version("localhost:5000/vfep:dev"), "dev");
        assert_eq!(image_version("localhost:5000/vfep"), "latest");
        assert_eq!(image_version("vfep"), "latest");
        assert_eq!(image_version("vfep:1.2@sha256:abcd"), "1.2");
        assert_eq!(image_version("vfep@sha256:abcd"), "abcd");
    }

    #[test]
    fn label_values_are_valid() {
        assert_eq!(
            label_value("ghcr.io/vgs-io/vfep:0.1.0"),
            "ghcr.io_vgs-io_vfep_0.1.0"
        );
        let digest = format!("registry.example.com/team/vfep@sha256:{}", "a".repeat(64));
        let value = label_value(&digest);
        assert!(value.len() <= 63, "{value}");
        assert!(value.chars().last().unwrap().is_ascii_alphanumeric());
        assert_ne!(value, label_value(&digest.replace('a', "b")));
        assert_eq!(label_value("/weird:"), "weird");
    }

    #[test]
    fn selector_is_a_stable_subset_of_the_labels() {
        let all = labels("demo", "frontend", "vfep:1");
        let selector = selector_labels("demo", "frontend");
        assert!(selector.iter().all(|(k, v)| all.get(k) == Some(v)));
        assert!(!selector.contains_key(VERSION_LABEL));
        assert!(!selector.contains_key(IMAGE_LABEL));
    }
}
