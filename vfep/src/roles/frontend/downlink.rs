//! The TM link: reads the vehicle's packet stream, drops what is malformed or unroutable,
//! counts sequence gaps, and publishes the rest in batches, one batch per read.

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::Frontend;
use crate::bus::{Batch, PacketRef};
use crate::codec::{
    Decoded, IDLE_APID, PRIMARY_HEADER_LEN, PacketType, PrimaryHeader, StreamDecoder,
};
use crate::gaps::SequenceTracker;
use crate::links;
use crate::metrics::DropReason;

/// Read buffer size: large reads mean few syscalls and big batches under load, while a
/// quiet link still delivers each packet as soon as it arrives.
const READ_SIZE: usize = 128 * 1024;

pub async fn run(frontend: Arc<Frontend>) -> anyhow::Result<()> {
    let mut downlink = Downlink {
        frontend: frontend.clone(),
        tracker: SequenceTracker::default(),
    };
    links::maintain(&frontend.tm_link, &frontend.shutdown, &mut downlink).await;
    Ok(())
}

struct Downlink {
    frontend: Arc<Frontend>,
    /// Survives reconnects: packets lost while the link was down are gaps.
    tracker: SequenceTracker,
}

impl links::Session for Downlink {
    async fn run(&mut self, stream: TcpStream) -> io::Result<()> {
        receive(&self.frontend, &mut self.tracker, stream).await
    }
}

async fn receive(
    fe: &Frontend,
    tracker: &mut SequenceTracker,
    mut stream: TcpStream,
) -> io::Result<()> {
    let mut decoder = StreamDecoder::new(fe.format);
    let mut buf = BytesMut::new();
    let mut per_channel = vec![0u64; fe.table.len()];
    loop {
        if buf.capacity() - buf.len() < READ_SIZE / 4 {
            buf.reserve(READ_SIZE);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            if let Some(reason) = decoder.finish(buf.len()) {
                let channel = (buf.len() >= PRIMARY_HEADER_LEN)
                    .then(|| fe.table.lookup(PrimaryHeader::of(&buf).apid))
                    .flatten();
                fe.metrics
                    .dropped(DropReason::Malformed(reason), channel, 1);
            }
            return Ok(());
        }
        let received_ns = fe.clock.stamp();
        let mut packets = Vec::new();
        let consumed = decoder.decode(&buf, |verdict| match verdict {
            Decoded::Packet { offset, header } => match route(fe, &header) {
                Ok(channel) => {
                    if let Some(missing) = tracker.observe(header.apid, header.sequence_count) {
                        fe.metrics.gap(header.apid, missing);
                    }
                    per_channel[usize::from(channel)] += 1;
                    packets.push(PacketRef {
                        offset: offset as u32,
                        len: header.packet_len() as u32,
                        apid: header.apid,
                        channel,
                    });
                }
                Err(reason) => fe.metrics.dropped(reason, fe.table.lookup(header.apid), 1),
            },
            Decoded::Dropped { reason, header } => fe.metrics.dropped(
                DropReason::Malformed(reason),
                fe.table.lookup(header.apid),
                1,
            ),
        });
        let data = buf.split_to(consumed).freeze();
        if packets.is_empty() {
            continue;
        }
        let mut batch = Batch::new(PacketType::Telemetry, received_ns, data);
        batch.packets = packets;
        fe.bus.publish(batch).await.map_err(io::Error::other)?;
        // Counted once on the bus, so "in" means queued for the recorder and subscribers.
        for (channel, count) in per_channel.iter_mut().enumerate() {
            if *count > 0 {
                fe.metrics.packets_in(channel as u16, std::mem::take(count));
            }
        }
    }
}

/// Which channel a good downlink packet goes to, or why it is dropped.
fn route(fe: &Frontend, header: &PrimaryHeader) -> Result<u16, DropReason> {
    if header.apid == IDLE_APID {
        return Err(DropReason::Idle);
    }
    if header.packet_type != PacketType::Telemetry {
        return Err(DropReason::WrongType);
    }
    fe.table
        .route(header.apid, header.packet_type)
        .map_err(DropReason::from)
}
