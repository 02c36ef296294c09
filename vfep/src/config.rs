//! The workload config file (`vfep.yaml`), schema fixed in docs/architecture.md.
//!
//! Every error names the file and the field, e.g.
//! `/etc/vgs/vfep.yaml: channels[1].direction: unknown variant "sideways", expected "telemetry" or "command"`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::{IDLE_APID, MAX_PACKET_LEN, PRIMARY_HEADER_LEN};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub vehicle: Vehicle,
    #[serde(default)]
    pub frontend: Frontend,
    #[serde(default)]
    pub recording: Recording,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Channel {
    pub name: String,
    pub apids: Vec<u16>,
    pub direction: Direction,
    /// Simulator emission rate per APID; ignored on command channels. 0 means silent.
    #[serde(default = "default_rate_hz")]
    pub rate_hz: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Telemetry,
    Command,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Telemetry => "telemetry",
            Direction::Command => "command",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Vehicle {
    pub host: String,
    pub tm_port: u16,
    pub tc_port: u16,
    /// Whether every packet ends with the CRC-16/CCITT-FALSE packet error control field.
    /// A mission-wide property of the link, so both ends read it from the same file.
    pub packet_error_control: bool,
    /// Packets longer than this (all octets, header included) are dropped as oversize.
    pub max_packet_length: usize,
}

impl Default for Vehicle {
    fn default() -> Self {
        Vehicle {
            host: "localhost".into(),
            tm_port: 7001,
            tc_port: 7002,
            packet_error_control: true,
            max_packet_length: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Frontend {
    pub host: String,
    pub http_port: u16,
    pub gems_port: u16,
    pub stream_port: u16,
}

impl Default for Frontend {
    fn default() -> Self {
        Frontend {
            host: "localhost".into(),
            http_port: 8080,
            gems_port: 9000,
            stream_port: 9100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Recording {
    pub dir: PathBuf,
    /// 0 syncs after every write.
    pub fsync_interval_ms: u64,
    pub segment_size_bytes: u64,
}

impl Default for Recording {
    fn default() -> Self {
        Recording {
            dir: PathBuf::from("/data"),
            fsync_interval_ms: 1000,
            segment_size_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Recording {
    pub fn fsync_interval(&self) -> Duration {
        Duration::from_millis(self.fsync_interval_ms)
    }
}

fn default_rate_hz() -> f64 {
    1.0
}

/// Smallest segment worth rotating to; smaller values would make a file per few records.
pub const MIN_SEGMENT_SIZE: u64 = 64 * 1024;
/// Upper bound on the simulator's periodic rate, as in the GroundSystem schema; the burst mode
/// is the tool for load.
pub const MAX_RATE_HZ: f64 = 1000.0;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // Not a `source`: the message already carries it, and error chains would print it twice.
    #[error("{}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses and validates; the error is `field.path: problem`.
    pub fn parse(text: &str) -> Result<Config, String> {
        // serde quotes with backticks; the rest of our messages use double quotes.
        // Editors on some systems save a byte order mark, which YAML parsers misread.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let config: Config =
            serde_yaml_ng::from_str(text).map_err(|e| e.to_string().replace('`', "\""))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let required = [
            (
                "vehicle.host",
                self.vehicle.host.is_empty(),
                "the vehicle's (or simulator's) host name or address",
            ),
            (
                "frontend.host",
                self.frontend.host.is_empty(),
                "the frontend's host name or address",
            ),
            (
                "recording.dir",
                self.recording.dir.as_os_str().is_empty(),
                "the recording volume's mount path",
            ),
        ];
        if let Some((field, _, what)) = required.iter().find(|(_, empty, _)| *empty) {
            return Err(format!("{field}: must not be empty; give {what}"));
        }
        if self.channels.is_empty() {
            return Err("channels: at least one channel is required".into());
        }
        let mut names = HashSet::new();
        let mut apid_owner = std::collections::HashMap::new();
        for (i, channel) in self.channels.iter().enumerate() {
            let at = format!("channels[{i}]");
            if !is_dns_label(&channel.name) {
                return Err(format!(
                    "{at}.name: {:?} is not a DNS label (lowercase letters, digits and '-', at most 63)",
                    channel.name
                ));
            }
            if !names.insert(channel.name.as_str()) {
                return Err(format!(
                    "{at}.name: duplicate channel name {:?}",
                    channel.name
                ));
            }
            if channel.apids.is_empty() {
                return Err(format!("{at}.apids: at least one APID is required"));
            }
            for (j, &apid) in channel.apids.iter().enumerate() {
                if apid == IDLE_APID {
                    return Err(format!(
                        "{at}.apids[{j}]: {apid} is the idle APID and not allowed"
                    ));
                }
                if apid > IDLE_APID {
                    return Err(format!("{at}.apids[{j}]: {apid} is out of range 0..2046"));
                }
                // Routing is by APID, so one APID can feed only one channel.
                if let Some(owner) = apid_owner.insert(apid, i) {
                    return Err(format!(
                        "{at}.apids[{j}]: APID {apid} already belongs to channels[{owner}]"
                    ));
                }
            }
            if !channel.rate_hz.is_finite() || !(0.0..=MAX_RATE_HZ).contains(&channel.rate_hz) {
                return Err(format!(
                    "{at}.rateHz: {} is out of range 0..{MAX_RATE_HZ}",
                    channel.rate_hz
                ));
            }
        }
        let ports = [
            ("vehicle.tmPort", self.vehicle.tm_port),
            ("vehicle.tcPort", self.vehicle.tc_port),
            ("frontend.httpPort", self.frontend.http_port),
            ("frontend.gemsPort", self.frontend.gems_port),
            ("frontend.streamPort", self.frontend.stream_port),
        ];
        if let Some((field, _)) = ports.iter().find(|(_, port)| *port == 0) {
            return Err(format!("{field}: port 0 is not allowed"));
        }
        // Each process listens on its group's ports on one host: the vehicle's two, the
        // frontend's three.
        for group in [&ports[..2], &ports[2..]] {
            for (i, (field, port)) in group.iter().enumerate() {
                if let Some((other, _)) = group[..i].iter().find(|(_, p)| p == port) {
                    return Err(format!(
                        "{field}: port {port} is already {other}; give each its own port"
                    ));
                }
            }
        }
        let min_len = PRIMARY_HEADER_LEN
            + 1
            + if self.vehicle.packet_error_control {
                2
            } else {
                0
            };
        if !(min_len..=MAX_PACKET_LEN).contains(&self.vehicle.max_packet_length) {
            return Err(format!(
                "vehicle.maxPacketLength: {} is out of range {min_len}..{MAX_PACKET_LEN}",
                self.vehicle.max_packet_length
            ));
        }
        if self.recording.segment_size_bytes < MIN_SEGMENT_SIZE {
            return Err(format!(
                "recording.segmentSizeBytes: {} is below the minimum {MIN_SEGMENT_SIZE}",
                self.recording.segment_size_bytes
            ));
        }
        Ok(())
    }
}

fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let inner_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(inner_ok)
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
channels:
  - name: housekeeping
    apids: [100, 101]
    direction: telemetry
    rateHz: 2.5
  - name: commands
    apids: [200]
    direction: command
vehicle:
  host: sim
  tmPort: 7001
  tcPort: 7002
frontend:
  host: vfep
  httpPort: 8080
  gemsPort: 9000
  streamPort: 9100
recording:
  dir: /data
  fsyncIntervalMs: 1000
  segmentSizeBytes: 67108864
";

    #[test]
    fn parses_the_documented_schema() {
        let config = Config::parse(GOOD).unwrap();
        assert_eq!(config.channels.len(), 2);
        assert_eq!(config.channels[0].rate_hz, 2.5);
        assert_eq!(config.channels[1].direction, Direction::Command);
        assert_eq!(config.vehicle.host, "sim");
        assert!(config.vehicle.packet_error_control);
        assert_eq!(config.recording.fsync_interval(), Duration::from_secs(1));
    }

    fn error_of(text: &str) -> String {
        Config::parse(text).unwrap_err()
    }

    #[test]
    fn errors_name_the_field() {
        let bad_direction = GOOD.replace("direction: command", "direction: sideways");
        assert!(
            error_of(&bad_direction).starts_with(
                "channels[1].direction: unknown variant \"sideways\", expected \"telemetry\" or \"command\""
            ),
            "{}",
            error_of(&bad_direction)
        );
        let unknown_key = GOOD.replace("  tmPort: 7001", "  tmport: 7001");
        assert!(error_of(&unknown_key).contains("unknown field \"tmport\""));
        let idle = GOOD.replace("[200]", "[2047]");
        assert_eq!(
            error_of(&idle),
            "channels[1].apids[0]: 2047 is the idle APID and not allowed"
        );
        let shared = GOOD.replace("[200]", "[201, 101]");
        assert_eq!(
            error_of(&shared),
            "channels[1].apids[1]: APID 101 already belongs to channels[0]"
        );
        let name = GOOD.replace("name: commands", "name: Commands");
        assert!(error_of(&name).starts_with("channels[1].name:"));
        let segment = GOOD.replace("67108864", "100");
        assert!(error_of(&segment).starts_with("recording.segmentSizeBytes:"));
        let clash = GOOD.replace("httpPort: 8080", "httpPort: 9000");
        assert_eq!(
            error_of(&clash),
            "frontend.gemsPort: port 9000 is already frontend.httpPort; give each its own port"
        );
    }

    /// Found by a user: these were accepted, then failed later with a message that named
    /// neither the field nor the file (or, for a BOM, a misleading one).
    #[test]
    fn empty_hosts_and_directory_and_a_byte_order_mark() {
        let host = GOOD.replace("host: sim", "host: \"\"");
        assert_eq!(
            error_of(&host),
            "vehicle.host: must not be empty; give the vehicle's (or simulator's) host name or address"
        );
        let host = GOOD.replace("host: vfep", "host: \"\"");
        assert_eq!(
            error_of(&host),
            "frontend.host: must not be empty; give the frontend's host name or address"
        );
        let dir = GOOD.replace("dir: /data", "dir: \"\"");
        assert_eq!(
            error_of(&dir),
            "recording.dir: must not be empty; give the recording volume's mount path"
        );
        let bom = format!("\u{feff}{GOOD}");
        assert_eq!(Config::parse(&bom).unwrap(), Config::parse(GOOD).unwrap());
    }

    #[test]
    fn load_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vfep.yaml");
        std::fs::write(&path, GOOD.replace("rateHz: 2.5", "rateHz: -1")).unwrap();
        let message = Config::load(&path).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "{}: channels[0].rateHz: -1 is out of range 0..1000",
                path.display()
            )
        );
    }
}
