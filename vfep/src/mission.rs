//! The mission database: layouts of the packets the vehicle sends, and the commands it accepts.
//! The simulator encodes with it and the ground decodes with it, so both always agree.
//!
//! TM packets carry a 9-octet secondary header: time (4 octets seconds + 4 octets nanoseconds
//! since the Unix epoch, big-endian) and a kind octet. TCs carry no secondary header; their
//! user data is an opcode octet and its arguments.

use serde::{Deserialize, Serialize};

use crate::codec::{self, CRC_LEN, PRIMARY_HEADER_LEN, PacketBuf, PacketId, PacketType};

pub const TM_SECONDARY_HEADER_LEN: usize = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TmKind {
    Housekeeping = 1,
    Acknowledgement = 2,
    /// Filler emitted by the load (burst) mode; carries an index and padding.
    Load = 3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[repr(u8)]
pub enum Mode {
    Safe = 0,
    Nominal = 1,
    Science = 2,
}

impl Mode {
    pub fn from_octet(octet: u8) -> Option<Mode> {
        [Mode::Safe, Mode::Nominal, Mode::Science]
            .into_iter()
            .find(|m| *m as u8 == octet)
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Safe => "SAFE",
            Mode::Nominal => "NOMINAL",
            Mode::Science => "SCIENCE",
        }
    }
}

/// The vehicle's periodic status report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Housekeeping {
    pub mode: Mode,
    pub heater_setpoint_c: f32,
    pub temperature_c: f32,
    pub battery_v: f32,
    pub commands_accepted: u16,
    pub commands_rejected: u16,
    pub uptime_s: u32,
}

impl Housekeeping {
    pub const LEN: usize = 1 + 4 + 4 + 4 + 2 + 2 + 4;

    pub fn write(&self, out: &mut [u8]) {
        out[0] = self.mode as u8;
        out[1..5].copy_from_slice(&self.heater_setpoint_c.to_be_bytes());
        out[5..9].copy_from_slice(&self.temperature_c.to_be_bytes());
        out[9..13].copy_from_slice(&self.battery_v.to_be_bytes());
        out[13..15].copy_from_slice(&self.commands_accepted.to_be_bytes());
        out[15..17].copy_from_slice(&self.commands_rejected.to_be_bytes());
        out[17..21].copy_from_slice(&self.uptime_s.to_be_bytes());
    }

    pub fn read(data: &[u8]) -> Option<Housekeeping> {
        let f32_at = |i: usize| f32::from_be_bytes(data[i..i + 4].try_into().unwrap());
        let u16_at = |i: usize| u16::from_be_bytes(data[i..i + 2].try_into().unwrap());
        (data.len() >= Self::LEN).then_some(())?;
        Some(Housekeeping {
            mode: Mode::from_octet(data[0])?,
            heater_setpoint_c: f32_at(1),
            temperature_c: f32_at(5),
            battery_v: f32_at(9),
            commands_accepted: u16_at(13),
            commands_rejected: u16_at(15),
            uptime_s: u32::from_be_bytes(data[17..21].try_into().unwrap()),
        })
    }

    /// Engineering values by parameter name, as the ground shows them.
    pub fn parameters(&self) -> [(&'static str, String); 7] {
        [
            ("mode", self.mode.name().to_string()),
            ("heaterSetpointC", format!("{:.2}", self.heater_setpoint_c)),
            ("temperatureC", format!("{:.2}", self.temperature_c)),
            ("batteryV", format!("{:.3}", self.battery_v)),
            ("commandsAccepted", self.commands_accepted.to_string()),
            ("commandsRejected", self.commands_rejected.to_string()),
            ("uptimeS", self.uptime_s.to_string()),
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[repr(u8)]
pub enum AckStatus {
    Executed = 0,
    UnknownOpcode = 1,
    BadArgument = 2,
}

impl AckStatus {
    fn from_octet(octet: u8) -> Option<AckStatus> {
        [
            AckStatus::Executed,
            AckStatus::UnknownOpcode,
            AckStatus::BadArgument,
        ]
        .into_iter()
        .find(|s| *s as u8 == octet)
    }
}

/// The vehicle's report on one TC, sent on the TC's APID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acknowledgement {
    pub tc_sequence_count: u16,
    pub opcode: u8,
    pub status: AckStatus,
}

impl Acknowledgement {
    pub const LEN: usize = 4;

    pub fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.tc_sequence_count.to_be_bytes());
        out[2] = self.opcode;
        out[3] = self.status as u8;
    }

    pub fn read(data: &[u8]) -> Option<Acknowledgement> {
        (data.len() >= Self::LEN).then_some(())?;
        Some(Acknowledgement {
            tc_sequence_count: u16::from_be_bytes([data[0], data[1]]),
            opcode: data[2],
            status: AckStatus::from_octet(data[3])?,
        })
    }
}

/// The commands the vehicle executes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Command {
    Noop,
    SetMode(Mode),
    SetHeater {
        setpoint_c: f32,
    },
    /// Emit `count` load packets of `packet_len` octets at `rate_hz` (0: as fast as the link
    /// takes them), round-robin over the telemetry APIDs.
    StartLoad {
        count: u32,
        packet_len: u16,
        rate_hz: u32,
    },
}

impl Command {
    pub const NAMES: [&'static str; 4] = ["NOOP", "SET_MODE", "SET_HEATER", "START_LOAD"];

    pub fn opcode(&self) -> u8 {
        match self {
            Command::Noop => 1,
            Command::SetMode(_) => 2,
            Command::SetHeater { .. } => 3,
            Command::StartLoad { .. } => 4,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut data = vec![self.opcode()];
        match *self {
            Command::Noop => {}
            Command::SetMode(mode) => data.push(mode as u8),
            Command::SetHeater { setpoint_c } => data.extend_from_slice(&setpoint_c.to_be_bytes()),
            Command::StartLoad {
                count,
                packet_len,
                rate_hz,
            } => {
                data.extend_from_slice(&count.to_be_bytes());
                data.extend_from_slice(&packet_len.to_be_bytes());
                data.extend_from_slice(&rate_hz.to_be_bytes());
            }
        }
        data
    }

    pub fn decode(data: &[u8]) -> Result<Command, AckStatus> {
        let (&opcode, args) = data.split_first().ok_or(AckStatus::UnknownOpcode)?;
        let exact = |n: usize| {
            if args.len() == n {
                Ok(args)
            } else {
                Err(AckStatus::BadArgument)
            }
        };
        match opcode {
            1 => exact(0).map(|_| Command::Noop),
            2 => Mode::from_octet(exact(1)?[0])
                .map(Command::SetMode)
                .ok_or(AckStatus::BadArgument),
            3 => {
                let setpoint_c = f32::from_be_bytes(exact(4)?.try_into().unwrap());
                if !(-100.0..=100.0).contains(&setpoint_c) {
                    return Err(AckStatus::BadArgument);
                }
                Ok(Command::SetHeater { setpoint_c })
            }
            4 => {
                let args = exact(10)?;
                let packet_len = u16::from_be_bytes([args[4], args[5]]);
                if usize::from(packet_len) < MIN_LOAD_PACKET_LEN {
                    return Err(AckStatus::BadArgument);
                }
                Ok(Command::StartLoad {
                    count: u32::from_be_bytes(args[0..4].try_into().unwrap()),
                    packet_len,
                    rate_hz: u32::from_be_bytes(args[6..10].try_into().unwrap()),
                })
            }
            _ => Err(AckStatus::UnknownOpcode),
        }
    }

    /// Parses the operator's form: a name and an argument (`SET_MODE SCIENCE`,
    /// `SET_HEATER 21.5`, `START_LOAD 1000 256 0` for count, packet length, rate).
    pub fn parse(name: &str, argument: &str) -> Result<Command, String> {
        let argument = argument.trim();
        let number = |text: &str, what: &str| -> Result<f64, String> {
            text.parse::<f64>()
                .map_err(|_| format!("{name}: {what} {text:?} is not a number"))
        };
        match name.trim().to_ascii_uppercase().as_str() {
            "NOOP" => Ok(Command::Noop),
            "SET_MODE" => match argument.to_ascii_uppercase().as_str() {
                "SAFE" => Ok(Command::SetMode(Mode::Safe)),
                "NOMINAL" => Ok(Command::SetMode(Mode::Nominal)),
                "SCIENCE" => Ok(Command::SetMode(Mode::Science)),
                other => Err(format!(
                    "SET_MODE: mode {other:?} is not SAFE, NOMINAL or SCIENCE"
                )),
            },
            "SET_HEATER" => Ok(Command::SetHeater {
                setpoint_c: number(argument, "setpoint")? as f32,
            }),
            "START_LOAD" => {
                let parts: Vec<&str> = argument.split_whitespace().collect();
                let [count, packet_len, rate_hz] = parts[..] else {
                    return Err("START_LOAD: expected COUNT PACKET_LENGTH RATE_HZ".into());
                };
                let in_range = |text: &str, what: &str, max: f64| {
                    let value = number(text, what)?;
                    if value.fract() == 0.0 && (0.0..=max).contains(&value) {
                        Ok(value)
                    } else {
                        Err(format!(
                            "START_LOAD: {what} {text} is out of range 0..{max}"
                        ))
                    }
                };
                Ok(Command::StartLoad {
                    count: in_range(count, "count", f64::from(u32::MAX))? as u32,
                    packet_len: in_range(packet_len, "packet length", 65535.0)? as u16,
                    rate_hz: in_range(rate_hz, "rate", f64::from(u32::MAX))? as u32,
                })
            }
            other => Err(format!(
                "unknown command {other:?}, expected one of {:?}",
                Command::NAMES
            )),
        }
    }
}

/// A load packet needs its headers, the load index and the CRC.
pub const MIN_LOAD_PACKET_LEN: usize = PRIMARY_HEADER_LEN + TM_SECONDARY_HEADER_LEN + 4 + CRC_LEN;

/// What identifies a TM packet of this mission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TmId {
    pub apid: u16,
    pub sequence_count: u16,
    pub kind: TmKind,
    /// On-board time of the report, ns since the Unix epoch.
    pub time_ns: u64,
}

/// Appends a TM packet with the mission secondary header and `body_len` octets of body written
/// by `fill`.
pub fn write_tm(
    out: &mut impl PacketBuf,
    tm: TmId,
    body_len: usize,
    crc: bool,
    fill: impl FnOnce(&mut [u8]),
) {
    let id = PacketId {
        packet_type: PacketType::Telemetry,
        apid: tm.apid,
        sequence_count: tm.sequence_count,
        secondary_header: true,
    };
    codec::write_packet(out, id, TM_SECONDARY_HEADER_LEN + body_len, crc, |data| {
        data[0..4].copy_from_slice(&((tm.time_ns / 1_000_000_000) as u32).to_be_bytes());
        data[4..8].copy_from_slice(&((tm.time_ns % 1_000_000_000) as u32).to_be_bytes());
        data[8] = tm.kind as u8;
        fill(&mut data[TM_SECONDARY_HEADER_LEN..]);
    });
}

/// Builds a TC packet for a command.
pub fn command_packet(apid: u16, sequence_count: u16, command: &Command, crc: bool) -> Vec<u8> {
    let id = PacketId {
        packet_type: PacketType::Telecommand,
        apid,
        sequence_count,
        secondary_header: false,
    };
    codec::encode_packet(id, &command.encode(), crc)
}

/// Mission content of a TM packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Telemetry {
    Housekeeping(Housekeeping),
    Acknowledgement(Acknowledgement),
    Load { index: u32 },
}

/// Decodes a TM packet that the frontend already checked (length, version, CRC). Returns the
/// on-board time and content, or None for packets of no known kind.
pub fn decode_tm(packet: &[u8], crc: bool) -> Option<(u64, Telemetry)> {
    let end = packet.len() - if crc { CRC_LEN } else { 0 };
    let data = packet.get(PRIMARY_HEADER_LEN..end)?;
    let header = data.get(..TM_SECONDARY_HEADER_LEN)?;
    let body = &data[TM_SECONDARY_HEADER_LEN..];
    let seconds = u32::from_be_bytes(header[0..4].try_into().unwrap());
    let nanos = u32::from_be_bytes(header[4..8].try_into().unwrap());
    let time_ns = u64::from(seconds) * 1_000_000_000 + u64::from(nanos);
    let telemetry = match header[8] {
        k if k == TmKind::Housekeeping as u8 => Telemetry::Housekeeping(Housekeeping::read(body)?),
        k if k == TmKind::Acknowledgement as u8 => {
            Telemetry::Acknowledgement(Acknowledgement::read(body)?)
        }
        k if k == TmKind::Load as u8 => Telemetry::Load {
            index: u32::from_be_bytes(body.get(..4)?.try_into().unwrap()),
        },
        _ => return None,
    };
    Some((time_ns, telemetry))
}

/// User data of a TC packet (after the primary header, before the CRC).
pub fn tc_user_data(packet: &[u8], crc: bool) -> &[u8] {
    let end = packet.len() - if crc { CRC_LEN } else { 0 };
    &packet[PRIMARY_HEADER_LEN..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{PacketFormat, StreamDecoder};

    #[test]
    fn housekeeping_round_trips_through_a_packet() {
        let hk = Housekeeping {
            mode: Mode::Science,
            heater_setpoint_c: 21.5,
            temperature_c: 19.25,
            battery_v: 28.1,
            commands_accepted: 3,
            commands_rejected: 1,
            uptime_s: 99,
        };
        let mut packet = Vec::new();
        let id = TmId {
            apid: 100,
            sequence_count: 5,
            kind: TmKind::Housekeeping,
            time_ns: 1_700_000_000_123_456_789,
        };
        write_tm(&mut packet, id, Housekeeping::LEN, true, |b| hk.write(b));
        let format = PacketFormat {
            crc: true,
            max_packet_len: 4096,
        };
        let packets = StreamDecoder::decode_all(format, &packet).unwrap();
        assert!(packets[0].1.secondary_header);
        assert_eq!(
            decode_tm(&packet, true),
            Some((1_700_000_000_123_456_789, Telemetry::Housekeeping(hk)))
        );
    }

    #[test]
    fn commands_round_trip_and_reject_bad_arguments() {
        for command in [
            Command::Noop,
            Command::SetMode(Mode::Safe),
            Command::SetHeater { setpoint_c: -5.5 },
            Command::StartLoad {
                count: 10,
                packet_len: 256,
                rate_hz: 0,
            },
        ] {
            assert_eq!(Command::decode(&command.encode()), Ok(command));
        }
        assert_eq!(Command::decode(&[2, 9]), Err(AckStatus::BadArgument));
        assert_eq!(Command::decode(&[1, 0]), Err(AckStatus::BadArgument));
        assert_eq!(Command::decode(&[77]), Err(AckStatus::UnknownOpcode));
        assert_eq!(
            Command::parse("set_mode", "science"),
            Ok(Command::SetMode(Mode::Science))
        );
        assert_eq!(
            Command::parse("START_LOAD", "5 64 100"),
            Ok(Command::StartLoad {
                count: 5,
                packet_len: 64,
                rate_hz: 100
            })
        );
        assert!(Command::parse("SET_HEATER", "warm").is_err());
        assert!(Command::parse("LAUNCH", "").is_err());
    }
}
