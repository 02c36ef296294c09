//! The GroundSystem operator.
//!
//! A reconcile runs the pipeline top to bottom: [`crd`] (types) -> [`validate`] (what the schema
//! cannot check) -> [`build`] (pure: the desired children) -> [`apply`] (server-side apply) ->
//! [`status`] (derived from the observed children). [`controller`] wires it to the watches; with
//! several replicas, [`leader`] lets only the holder of a Lease run it.

pub mod apply;
pub mod build;
pub mod controller;
pub mod crd;
mod error;
pub mod leader;
pub mod metrics;
pub mod retention;
pub mod status;
pub mod validate;

pub use error::Error;
use kube::CustomResourceExt;
use serde_json::Value;

/// The CRD manifest as YAML, as printed by `vgs-operator crd` and stored in `crds/groundsystem.yaml`.
pub fn crd_yaml() -> String {
    let mut crd = serde_json::to_value(crd::GroundSystem::crd()).expect("the CRD serializes");
    unwrap_descriptions(&mut crd);
    serde_yaml_ng::to_string(&crd).expect("the CRD serializes to YAML")
}

/// Joins the hard-wrapped lines of doc comments, so `kubectl explain` can wrap them to the
/// terminal; blank lines still separate paragraphs.
fn unwrap_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                match child {
                    Value::String(text) if key == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|paragraph| paragraph.split('\n').collect::<Vec<_>>().join(" "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    _ => unwrap_descriptions(child),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}
