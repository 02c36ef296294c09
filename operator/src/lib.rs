//! The GroundSystem operator.
//!
//! A reconcile runs the pipeline top to bottom: [`crd`] (types) -> [`validate`] (what the schema
//! cannot check) -> [`build`] (pure: the desired children) -> [`apply`] (server-side apply) ->
//! [`status`] (derived from the observed children). [`controller`] wires it to the watches.

pub mod apply;
pub mod build;
pub mod controller;
pub mod crd;
mod error;
pub mod metrics;
pub mod status;
pub mod validate;

pub use error::Error;
use kube::CustomResourceExt;

/// The CRD manifest as YAML, as printed by `vgs-operator crd` and stored in `crds/groundsystem.yaml`.
pub fn crd_yaml() -> String {
    serde_yaml_ng::to_string(&crd::GroundSystem::crd()).expect("the CRD serializes to YAML")
}
