pub mod bus;
pub mod codec;
pub mod config;
pub mod gaps;
pub mod recorder;
pub mod time;
