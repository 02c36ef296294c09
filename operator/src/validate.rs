//! Checks the CRD schema cannot express.
//!
//! Everything else is validated by the API server. An APID shared between channels would need a
//! CEL rule comparing every APID of every channel pair (64 channels x 256 APIDs each), far over
//! the API server's CEL cost budget, so the operator checks it and reports it on the Degraded
//! condition instead of rolling out a configuration the vFEP would refuse to start with.

use std::collections::HashMap;

use crate::crd::GroundSystemSpec;

/// A spec the operator refuses to roll out; the message names the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

pub fn validate(spec: &GroundSystemSpec) -> Result<(), InvalidSpec> {
    // The vFEP routes packets by APID alone, so each APID belongs to exactly one channel.
    let mut owners: HashMap<i32, (usize, &str)> = HashMap::new();
    for (index, channel) in spec.channels.iter().enumerate() {
        for (apid_index, &apid) in channel.apids.iter().enumerate() {
            if let Some((owner_index, owner)) = owners.insert(apid, (index, &channel.name)) {
                return Err(InvalidSpec(format!(
                    "spec.channels[{index}].apids[{apid_index}]: APID {apid} already belongs to \
                     spec.channels[{owner_index}] ({owner:?}); an APID may belong to only one \
                     channel, remove it from {:?} or {owner:?}",
                    channel.name
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Channel, Direction};

    fn channel(name: &str, direction: Direction, apids: &[i32]) -> Channel {
        Channel {
            name: name.into(),
            apids: apids.to_vec(),
            direction,
            rate_hz: None,
        }
    }

    #[test]
    fn default_spec_is_valid() {
        assert_eq!(validate(&GroundSystemSpec::default()), Ok(()));
    }

    #[test]
    fn an_apid_in_two_channels_names_field_and_fix() {
        let spec = GroundSystemSpec {
            channels: vec![
                channel("housekeeping", Direction::Telemetry, &[100, 101]),
                channel("commands", Direction::Command, &[200]),
                channel("science", Direction::Telemetry, &[300, 101]),
            ],
            ..GroundSystemSpec::default()
        };
        let message = validate(&spec).unwrap_err().0;
        assert_eq!(
            message,
            "spec.channels[2].apids[1]: APID 101 already belongs to spec.channels[0] \
             (\"housekeeping\"); an APID may belong to only one channel, remove it from \
             \"science\" or \"housekeeping\""
        );

        // Routing is by APID alone, so the direction does not matter.
        let spec = GroundSystemSpec {
            channels: vec![
                channel("tm", Direction::Telemetry, &[5]),
                channel("tc", Direction::Command, &[5]),
            ],
            ..GroundSystemSpec::default()
        };
        assert!(validate(&spec).is_err());
    }
}
