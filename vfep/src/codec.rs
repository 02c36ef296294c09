//! CCSDS space packets (CCSDS 133.0-B-2): the primary header, the optional packet error control
//! field (CRC-16/CCITT-FALSE over the whole packet but the last two octets) and a strict stream
//! decoder.
//!
//! Whether packets carry the CRC is a mission-wide setting (`vehicle.packetErrorControl`), not
//! guessed per packet: a CRC cannot be told apart from user data.

use serde::{Deserialize, Serialize};

pub const PRIMARY_HEADER_LEN: usize = 6;
/// 6 header octets plus the largest data field the 16-bit length can describe.
pub const MAX_PACKET_LEN: usize = PRIMARY_HEADER_LEN + 65536;
pub const IDLE_APID: u16 = 0x7FF;
pub const SEQUENCE_COUNT_MODULO: u16 = 0x4000;
pub const CRC_LEN: usize = 2;

/// CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, no reflection, no final xor
/// (CRC-16/IBM-3740 in the catalogue). Carry-less multiplication where the CPU has it: the
/// simulator computes one and the frontend checks one per packet, the largest per-packet cost.
pub fn crc16(data: &[u8]) -> u16 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc16Ibm3740, data) as u16
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PacketType {
    Telemetry,
    Telecommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceFlags {
    Continuation = 0,
    First = 1,
    Last = 2,
    Unsegmented = 3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryHeader {
    pub version: u8,
    pub packet_type: PacketType,
    pub secondary_header: bool,
    pub apid: u16,
    pub sequence_flags: SequenceFlags,
    pub sequence_count: u16,
    /// The raw field: number of octets in the packet data field minus one.
    pub data_length: u16,
}

impl PrimaryHeader {
    pub fn parse(octets: &[u8; PRIMARY_HEADER_LEN]) -> PrimaryHeader {
        let word0 = u16::from_be_bytes([octets[0], octets[1]]);
        let word1 = u16::from_be_bytes([octets[2], octets[3]]);
        PrimaryHeader {
            version: (word0 >> 13) as u8,
            packet_type: if word0 & 0x1000 != 0 {
                PacketType::Telecommand
            } else {
                PacketType::Telemetry
            },
            secondary_header: word0 & 0x0800 != 0,
            apid: word0 & 0x07FF,
            sequence_flags: match word1 >> 14 {
                0 => SequenceFlags::Continuation,
                1 => SequenceFlags::First,
                2 => SequenceFlags::Last,
                _ => SequenceFlags::Unsegmented,
            },
            sequence_count: word1 & 0x3FFF,
            data_length: u16::from_be_bytes([octets[4], octets[5]]),
        }
    }

    /// Reads the header at the start of `packet`, which must hold at least 6 octets.
    pub fn of(packet: &[u8]) -> PrimaryHeader {
        let octets: &[u8; PRIMARY_HEADER_LEN] = packet[..PRIMARY_HEADER_LEN]
            .try_into()
            .expect("caller checked the header length");
        PrimaryHeader::parse(octets)
    }

    pub fn to_bytes(&self) -> [u8; PRIMARY_HEADER_LEN] {
        let word0 = (u16::from(self.version & 0x7) << 13)
            | (u16::from(self.packet_type == PacketType::Telecommand) << 12)
            | (u16::from(self.secondary_header) << 11)
            | (self.apid & 0x07FF);
        let word1 = ((self.sequence_flags as u16) << 14) | (self.sequence_count & 0x3FFF);
        let [a, b] = word0.to_be_bytes();
        let [c, d] = word1.to_be_bytes();
        let [e, f] = self.data_length.to_be_bytes();
        [a, b, c, d, e, f]
    }

    /// Length of the whole packet, header included.
    pub fn packet_len(&self) -> usize {
        PRIMARY_HEADER_LEN + usize::from(self.data_length) + 1
    }
}

/// What makes a packet acceptable on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketFormat {
    pub crc: bool,
    pub max_packet_len: usize,
}

impl PacketFormat {
    /// Octets a packet carries besides its user data.
    pub fn overhead(&self, secondary_header_len: usize) -> usize {
        PRIMARY_HEADER_LEN + secondary_header_len + if self.crc { CRC_LEN } else { 0 }
    }

    /// Checks a complete packet whose length already matches its header.
    fn check(&self, header: &PrimaryHeader, packet: &[u8]) -> Result<(), Malformed> {
        if header.version != 0 {
            return Err(Malformed::BadVersion);
        }
        if self.crc {
            // The data field must hold the CRC and at least one octet besides it.
            if packet.len() < PRIMARY_HEADER_LEN + 1 + CRC_LEN {
                return Err(Malformed::TooShort);
            }
            let (covered, field) = packet.split_at(packet.len() - CRC_LEN);
            if crc16(covered) != u16::from_be_bytes([field[0], field[1]]) {
                return Err(Malformed::BadCrc);
            }
        }
        Ok(())
    }
}

/// Why a packet was dropped by the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Malformed {
    #[error("packet version number is not 0")]
    BadVersion,
    #[error("data field too short to hold the packet error control and any data")]
    TooShort,
    #[error("packet longer than the maximum packet length")]
    Oversize,
    #[error("stream ended inside a packet")]
    Truncated,
    #[error("packet error control (CRC) mismatch")]
    BadCrc,
}

impl Malformed {
    pub const ALL: [Malformed; 5] = [
        Malformed::BadVersion,
        Malformed::TooShort,
        Malformed::Oversize,
        Malformed::Truncated,
        Malformed::BadCrc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::BadVersion => "bad_version",
            Malformed::TooShort => "too_short",
            Malformed::Oversize => "oversize",
            Malformed::Truncated => "truncated",
            Malformed::BadCrc => "bad_crc",
        }
    }
}

/// One decoder verdict: a good packet at `offset..offset + len`, or a dropped one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    Packet {
        offset: usize,
        header: PrimaryHeader,
    },
    Dropped {
        reason: Malformed,
        header: PrimaryHeader,
    },
}

/// Splits a byte stream into packets. Every bad packet is skipped by its declared length, so the
/// stream resynchronises right after it; oversize packets are discarded as they arrive, never
/// buffered. Every call consumes input or waits for more, so it cannot spin.
#[derive(Debug)]
pub struct StreamDecoder {
    format: PacketFormat,
    /// Octets of an oversize packet still to throw away.
    discard: usize,
}

impl StreamDecoder {
    pub fn new(format: PacketFormat) -> StreamDecoder {
        StreamDecoder { format, discard: 0 }
    }

    /// Decodes every complete packet at the front of `buf` and returns how many octets it
    /// consumed; an incomplete packet at the end stays for the next call.
    pub fn decode(&mut self, buf: &[u8], mut on: impl FnMut(Decoded)) -> usize {
        let mut pos = self.discard.min(buf.len());
        self.discard -= pos;
        while buf.len() - pos >= PRIMARY_HEADER_LEN {
            let header = PrimaryHeader::of(&buf[pos..]);
            let len = header.packet_len();
            if len > self.format.max_packet_len {
                on(Decoded::Dropped {
                    reason: Malformed::Oversize,
                    header,
                });
                let available = len.min(buf.len() - pos);
                self.discard = len - available;
                pos += available;
                continue;
            }
            if buf.len() - pos < len {
                break;
            }
            let packet = &buf[pos..pos + len];
            on(match self.format.check(&header, packet) {
                Ok(()) => Decoded::Packet {
                    offset: pos,
                    header,
                },
                Err(reason) => Decoded::Dropped { reason, header },
            });
            pos += len;
        }
        pos
    }

    /// Call at end of stream with the octets `decode` left unconsumed.
    pub fn finish(&mut self, leftover: usize) -> Option<Malformed> {
        let truncated = leftover > 0 && self.discard == 0;
        self.discard = 0;
        truncated.then_some(Malformed::Truncated)
    }

    /// Decodes a buffer that must hold whole, valid packets only (TCs submitted over an API):
    /// the first problem rejects the lot.
    pub fn decode_all(
        format: PacketFormat,
        buf: &[u8],
    ) -> Result<Vec<(usize, PrimaryHeader)>, Rejected> {
        let mut decoder = StreamDecoder::new(format);
        let mut packets = Vec::new();
        let mut first_error = None;
        let consumed = decoder.decode(buf, |d| match d {
            Decoded::Packet { offset, header } => packets.push((offset, header)),
            Decoded::Dropped { reason, header } => {
                first_error.get_or_insert(Rejected {
                    reason,
                    header: Some(header),
                });
            }
        });
        if let Some(error) = first_error {
            return Err(error);
        }
        if consumed < buf.len() || packets.is_empty() {
            let header = (buf.len() - consumed >= PRIMARY_HEADER_LEN)
                .then(|| PrimaryHeader::of(&buf[consumed..]));
            return Err(Rejected {
                reason: Malformed::Truncated,
                header,
            });
        }
        Ok(packets)
    }
}

/// Why a buffer of packets was refused, and the header of the packet at fault when readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub reason: Malformed,
    pub header: Option<PrimaryHeader>,
}

/// The header fields a packet's producer chooses; the length is derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketId {
    pub packet_type: PacketType,
    pub apid: u16,
    pub sequence_count: u16,
    pub secondary_header: bool,
}

/// Appends one packet with `data_len` octets of data (secondary header and user data, not the
/// CRC), letting `fill` write them in place so no intermediate buffer is needed.
pub fn write_packet(
    out: &mut impl PacketBuf,
    id: PacketId,
    data_len: usize,
    crc: bool,
    fill: impl FnOnce(&mut [u8]),
) {
    let field_len = data_len + if crc { CRC_LEN } else { 0 };
    assert!(
        (1..=65536).contains(&field_len),
        "packet data field of {field_len} octets"
    );
    let header = PrimaryHeader {
        version: 0,
        packet_type: id.packet_type,
        secondary_header: id.secondary_header,
        apid: id.apid,
        sequence_flags: SequenceFlags::Unsegmented,
        sequence_count: id.sequence_count % SEQUENCE_COUNT_MODULO,
        data_length: (field_len - 1) as u16,
    };
    let packet = out.grow(PRIMARY_HEADER_LEN + field_len);
    packet[..PRIMARY_HEADER_LEN].copy_from_slice(&header.to_bytes());
    fill(&mut packet[PRIMARY_HEADER_LEN..PRIMARY_HEADER_LEN + data_len]);
    if crc {
        let end = PRIMARY_HEADER_LEN + data_len;
        let sum = crc16(&packet[..end]);
        packet[end..].copy_from_slice(&sum.to_be_bytes());
    }
}

/// Convenience for small packets built from a slice.
pub fn encode_packet(id: PacketId, data: &[u8], crc: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(PRIMARY_HEADER_LEN + data.len() + CRC_LEN);
    write_packet(&mut out, id, data.len(), crc, |d| d.copy_from_slice(data));
    out
}

/// Buffers that can hand out a zero-filled tail to write a packet into.
pub trait PacketBuf {
    fn grow(&mut self, len: usize) -> &mut [u8];
}

impl PacketBuf for Vec<u8> {
    fn grow(&mut self, len: usize) -> &mut [u8] {
        let start = self.len();
        self.resize(start + len, 0);
        &mut self[start..]
    }
}

impl PacketBuf for bytes::BytesMut {
    fn grow(&mut self, len: usize) -> &mut [u8] {
        let start = self.len();
        self.resize(start + len, 0);
        &mut self[start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT: PacketFormat = PacketFormat {
        crc: true,
        max_packet_len: 1024,
    };

    fn tm(apid: u16, count: u16, data: &[u8]) -> Vec<u8> {
        let id = PacketId {
            packet_type: PacketType::Telemetry,
            apid,
            sequence_count: count,
            secondary_header: false,
        };
        encode_packet(id, data, true)
    }

    fn decode_all(decoder: &mut StreamDecoder, buf: &[u8]) -> (Vec<Decoded>, usize) {
        let mut out = Vec::new();
        let used = decoder.decode(buf, |d| out.push(d));
        (out, used)
    }

    #[test]
    fn crc_check_value() {
        assert_eq!(crc16(b"123456789"), 0x29B1);
    }

    /// The accelerated CRC takes different paths by length and alignment; each must agree with
    /// the definition, computed bit by bit.
    #[test]
    fn crc_matches_the_bitwise_definition_at_every_length_and_offset() {
        fn bitwise(data: &[u8]) -> u16 {
            let mut crc = 0xFFFFu16;
            for &octet in data {
                crc ^= u16::from(octet) << 8;
                for _ in 0..8 {
                    crc = if crc & 0x8000 != 0 {
                        (crc << 1) ^ 0x1021
                    } else {
                        crc << 1
                    };
                }
            }
            crc
        }
        let data: Vec<u8> = (0..1100u32).map(|i| (i * 131 + 7) as u8).collect();
        for offset in 0..8 {
            for len in (0..300).chain([511, 512, 513, 1024]) {
                let slice = &data[offset..offset + len];
                assert_eq!(
                    crc16(slice),
                    bitwise(slice),
                    "offset {offset}, length {len}"
                );
            }
        }
    }

    #[test]
    fn known_telecommand_header() {
        let header = PrimaryHeader::parse(&[0x17, 0xFF, 0xFF, 0xFF, 0x00, 0x00]);
        assert_eq!(header.version, 0);
        assert_eq!(header.packet_type, PacketType::Telecommand);
        assert!(!header.secondary_header);
        assert_eq!(header.apid, 0x7FF);
        assert_eq!(header.sequence_flags, SequenceFlags::Unsegmented);
        assert_eq!(header.sequence_count, 0x3FFF);
        assert_eq!(header.data_length, 0);
        assert_eq!(header.packet_len(), 7);
        assert_eq!(header.to_bytes(), [0x17, 0xFF, 0xFF, 0xFF, 0x00, 0x00]);
    }

    #[test]
    fn known_telemetry_header() {
        let header = PrimaryHeader::parse(&[0x0C, 0xD2, 0xC0, 0x00, 0x00, 0x1A]);
        assert_eq!(header.version, 0);
        assert_eq!(header.packet_type, PacketType::Telemetry);
        assert!(header.secondary_header);
        assert_eq!(header.apid, 1234);
        assert_eq!(header.sequence_flags, SequenceFlags::Unsegmented);
        assert_eq!(header.sequence_count, 0);
        assert_eq!(header.packet_len(), 33);
        assert_eq!(header.to_bytes(), [0x0C, 0xD2, 0xC0, 0x00, 0x00, 0x1A]);
    }

    #[test]
    fn encoded_packet_round_trips() {
        let packet = tm(100, 16385, b"hello");
        assert_eq!(packet.len(), 6 + 5 + 2);
        let packets = StreamDecoder::decode_all(FORMAT, &packet).unwrap();
        let (_, header) = packets[0];
        assert_eq!(header.apid, 100);
        assert_eq!(header.sequence_count, 1, "count wraps modulo 16384");
    }

    #[test]
    fn each_malformation_is_dropped_and_the_stream_resynchronises() {
        let good = tm(1, 0, b"abc");
        let mut bad_crc = tm(2, 0, b"abc");
        bad_crc[7] ^= 0xFF;
        let mut bad_version = tm(3, 0, b"abc");
        bad_version[0] |= 0x20;
        // Data length field 1: two octets, only room for the CRC.
        let too_short = [0x00, 0x04, 0xC0, 0x00, 0x00, 0x01, 0xAA, 0xBB];
        let mut oversize = tm(5, 0, &[0u8; 1100]);
        oversize.truncate(600); // the decoder must not wait for the rest
        let mut stream = Vec::new();
        for part in [&good[..], &bad_crc, &good, &bad_version, &too_short, &good] {
            stream.extend_from_slice(part);
        }
        let mut decoder = StreamDecoder::new(FORMAT);
        let (verdicts, used) = decode_all(&mut decoder, &stream);
        assert_eq!(used, stream.len());
        let reasons: Vec<_> = verdicts
            .iter()
            .map(|d| match d {
                Decoded::Packet { .. } => None,
                Decoded::Dropped { reason, .. } => Some(*reason),
            })
            .collect();
        assert_eq!(
            reasons,
            [
                None,
                Some(Malformed::BadCrc),
                None,
                Some(Malformed::BadVersion),
                Some(Malformed::TooShort),
                None
            ]
        );

        // Oversize: counted at once, discarded across reads, then the next packet decodes.
        let (verdicts, used) = decode_all(&mut decoder, &oversize);
        assert_eq!(used, oversize.len());
        assert!(matches!(
            verdicts[..],
            [Decoded::Dropped {
                reason: Malformed::Oversize,
                ..
            }]
        ));
        let mut rest = vec![0u8; 6 + 1100 + 2 - 600];
        rest.extend_from_slice(&good);
        let (verdicts, used) = decode_all(&mut decoder, &rest);
        assert_eq!(used, rest.len());
        assert!(
            matches!(verdicts[..], [Decoded::Packet { offset, .. }] if offset == rest.len() - good.len())
        );
    }

    #[test]
    fn partial_packets_wait_and_truncation_is_reported_at_end_of_stream() {
        let good = tm(1, 0, b"abcdef");
        let mut decoder = StreamDecoder::new(FORMAT);
        for cut in 0..good.len() {
            let (verdicts, used) = decode_all(&mut decoder, &good[..cut]);
            assert!(verdicts.is_empty());
            assert_eq!(used, 0);
        }
        assert_eq!(decoder.finish(5), Some(Malformed::Truncated));
        assert_eq!(decoder.finish(0), None);
        assert!(matches!(
            StreamDecoder::decode_all(FORMAT, &good[..good.len() - 1]),
            Err(Rejected {
                reason: Malformed::Truncated,
                header: Some(_)
            })
        ));
        assert!(matches!(
            StreamDecoder::decode_all(FORMAT, &[]),
            Err(Rejected {
                reason: Malformed::Truncated,
                header: None
            })
        ));
        let two = [good.clone(), good.clone()].concat();
        assert_eq!(StreamDecoder::decode_all(FORMAT, &two).unwrap().len(), 2);
    }

    #[test]
    fn garbage_is_consumed_without_buffering_more_than_one_packet() {
        let mut state = 0x1234_5678u32;
        let mut garbage = Vec::new();
        for _ in 0..100_000 {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            garbage.push((state >> 24) as u8);
        }
        let mut decoder = StreamDecoder::new(FORMAT);
        let mut pending = Vec::new();
        let mut dropped = 0;
        for chunk in garbage.chunks(97) {
            pending.extend_from_slice(chunk);
            let used = decoder.decode(&pending, |d| {
                dropped += matches!(d, Decoded::Dropped { .. }) as usize
            });
            pending.drain(..used);
            assert!(pending.len() < FORMAT.max_packet_len);
        }
        assert!(dropped > 0);
    }
}
