//! vFEP: a virtual front-end processor for CCSDS space packets, the ground system application
//! that uses it, and a vehicle simulator to exercise both.
//!
//! Data path: vehicle --TM link--> frontend (decode, route, record, gap count) --bus--> subscribers;
//! subscribers --TC--> frontend --TC link--> vehicle.

pub mod api;
pub mod bench;
pub mod bus;
pub mod codec;
pub mod config;
pub mod gaps;
pub mod gems;
pub mod links;
pub mod metrics;
pub mod mission;
pub mod recorder;
pub mod roles;
pub mod time;
