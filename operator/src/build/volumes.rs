//! The recording and config PersistentVolumeClaims.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements},
    apimachinery::pkg::api::resource::Quantity,
};

use super::{Instance, Volume};
use crate::crd::VolumeSpec;

/// `owned` claims get the controller owner reference and are deleted with the GroundSystem; a
/// retained recording claim has none, so it outlives it.
pub fn claim(
    instance: &Instance,
    volume: Volume,
    spec: &VolumeSpec,
    owned: bool,
) -> PersistentVolumeClaim {
    let component = volume.component();
    PersistentVolumeClaim {
        metadata: instance.child_metadata(component, component, owned),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(
                spec.access_modes
                    .iter()
                    .map(|mode| mode.as_str().to_owned())
                    .collect(),
            ),
            storage_class_name: spec.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(spec.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}
