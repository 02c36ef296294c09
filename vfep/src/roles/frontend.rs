//! The vFEP: keeps the links to the vehicle, routes packets by APID over the bus, records every
//! packet, counts gaps and drops, and serves REST, the packet stream and GEMS.

mod downlink;
mod uplink;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use bytes::Bytes;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::bus::{Batch, Bus, ChannelId, ChannelTable, Interest, PacketRef, PublishError};
use crate::codec::{PacketFormat, PacketType, StreamDecoder};
use crate::config::Config;
use crate::links::LinkStatus;
use crate::metrics::{DropReason, FrontendMetrics};
use crate::recorder::{self, Recorder, RecorderHandle};
use crate::time::{ReceiveClock, now_ns};

/// Batches a live subscriber may fall behind by before it loses data. The ring keeps this many
/// batches alive, so with full reads it bounds memory at LIVE_CAPACITY x 128 KiB.
const LIVE_CAPACITY: usize = 256;

pub struct Frontend {
    pub config: Config,
    pub table: ChannelTable,
    pub format: PacketFormat,
    pub bus: Bus,
    pub metrics: FrontendMetrics,
    pub tm_link: LinkStatus,
    pub tc_link: LinkStatus,
    pub recorder: RecorderHandle,
    pub clock: ReceiveClock,
    /// Command inhibit: when false, every TC is refused.
    pub uplink_enabled: AtomicBool,
    pub started_ns: u64,
    pub shutdown: CancellationToken,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedTc {
    pub apid: u16,
    pub sequence_count: u16,
    pub channel: ChannelId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcReceipt {
    pub received_ns: u64,
    pub packets: Vec<AcceptedTc>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct RejectedTc {
    pub reason: DropReason,
    pub detail: String,
}

impl Frontend {
    pub fn recording_dir(&self) -> &Path {
        &self.config.recording.dir
    }

    pub fn uplink_enabled(&self) -> bool {
        self.uplink_enabled.load(Ordering::Relaxed)
    }

    pub fn set_uplink_enabled(&self, enabled: bool) {
        self.uplink_enabled.store(enabled, Ordering::Relaxed);
    }

    /// Validates one or more concatenated TC packets and, if every one is good, puts them on
    /// the bus for the uplink. All or nothing: a command stack is never sent in part.
    pub async fn submit_tcs(&self, data: Bytes) -> Result<TcReceipt, RejectedTc> {
        let reject = |reason: DropReason, channels: &[Option<ChannelId>], detail: String| {
            for channel in channels {
                self.metrics.dropped(reason, *channel, 1);
            }
            RejectedTc { reason, detail }
        };
        let decoded = StreamDecoder::decode_all(self.format, &data).map_err(|rejected| {
            let channel = rejected.header.and_then(|h| self.table.lookup(h.apid));
            let reason = rejected.reason;
            reject(
                DropReason::Malformed(reason),
                &[channel],
                reason.to_string(),
            )
        })?;
        let mut batch = Batch::new(PacketType::Telecommand, 0, data);
        let mut accepted = Vec::with_capacity(decoded.len());
        for (offset, header) in decoded {
            let known = self.table.lookup(header.apid);
            if header.packet_type != PacketType::Telecommand {
                let detail = format!("APID {}: a telemetry packet sent as a command", header.apid);
                return Err(reject(DropReason::WrongType, &[known], detail));
            }
            let channel = self
                .table
                .route(header.apid, header.packet_type)
                .map_err(|e| reject(e.into(), &[known], format!("APID {}: {e}", header.apid)))?;
            batch.packets.push(PacketRef {
                offset: offset as u32,
                len: header.packet_len() as u32,
                apid: header.apid,
                channel,
            });
            accepted.push(AcceptedTc {
                apid: header.apid,
                sequence_count: header.sequence_count,
                channel,
            });
        }
        let channels: Vec<_> = accepted.iter().map(|a| Some(a.channel)).collect();
        if !self.uplink_enabled() {
            let detail = "the uplink is disabled (GEMS SET UplinkEnabled)".to_string();
            return Err(reject(DropReason::UplinkInhibited, &channels, detail));
        }
        if !self.tc_link.is_connected() {
            let detail = format!("the TC link to {} is down", self.tc_link.address);
            return Err(reject(DropReason::UplinkDown, &channels, detail));
        }
        batch.received_ns = self.clock.stamp();
        let received_ns = batch.received_ns;
        self.bus.try_publish(batch).await.map_err(|error| match error {
            PublishError::Closed => {
                reject(DropReason::UplinkDown, &channels, "shutting down".into())
            }
            PublishError::Full => reject(
                DropReason::UplinkBusy,
                &channels,
                format!(
                    "the command queue is full: the vehicle at {} is not reading commands as fast as they come, or the recording is not keeping up; try again",
                    self.tc_link.address
                ),
            ),
        })?;
        for tc in &accepted {
            self.metrics.packets_in(tc.channel, 1);
        }
        Ok(TcReceipt {
            received_ns,
            packets: accepted,
        })
    }
}

pub async fn run(config: Config, bind: IpAddr, shutdown: CancellationToken) -> anyhow::Result<()> {
    let table = ChannelTable::new(&config.channels);
    let metrics = FrontendMetrics::new(&table);
    let recording = &config.recording;
    let (recorder, recovery) = Recorder::open(
        &recording.dir,
        recording.segment_size_bytes,
        metrics.recorder.clone(),
    )
    .with_context(|| {
        format!(
            "opening the recording directory {} (recording.dir, --recording-dir)",
            recording.dir.display()
        )
    })?;
    tracing::info!(
        dir = %recording.dir.display(),
        segments = recovery.segments,
        truncated_bytes = recovery.truncated_bytes,
        damaged_bytes = recovery.damaged_bytes,
        "recording recovered"
    );

    let http = super::bind(bind, config.frontend.http_port, "HTTP").await?;
    let gems = super::bind(bind, config.frontend.gems_port, "GEMS").await?;
    let stream = super::bind(bind, config.frontend.stream_port, "stream").await?;

    let mut bus = Bus::new(LIVE_CAPACITY);
    let to_record = bus.subscribe_lossless(Interest::Everything);
    let to_uplink = bus.subscribe_lossless(Interest::Only(PacketType::Telecommand));
    let (recorder, recorder_thread) = recorder::spawn(
        recorder,
        to_record,
        recording.fsync_interval(),
        tokio::runtime::Handle::current(),
    );
    let vehicle = &config.vehicle;
    let frontend = Arc::new(Frontend {
        tm_link: LinkStatus::new(
            "tm",
            format!("{}:{}", vehicle.host, vehicle.tm_port),
            metrics.link_gauge("tm"),
        ),
        tc_link: LinkStatus::new(
            "tc",
            format!("{}:{}", vehicle.host, vehicle.tc_port),
            metrics.link_gauge("tc"),
        ),
        format: PacketFormat {
            crc: vehicle.packet_error_control,
            max_packet_len: vehicle.max_packet_length,
        },
        table,
        bus,
        metrics,
        recorder,
        clock: ReceiveClock::default(),
        uplink_enabled: AtomicBool::new(true),
        started_ns: now_ns(),
        shutdown: shutdown.clone(),
        config,
    });

    let mut tasks = JoinSet::new();
    tasks.spawn(downlink::run(frontend.clone()));
    tasks.spawn(uplink::run(frontend.clone(), to_uplink));
    let router = api::rest::router(frontend.clone());
    tasks.spawn(async move { Ok(api::serve_http(http, router, shutdown.clone()).await?) });
    tasks.spawn(api::stream::serve_tcp(frontend.clone(), stream));
    tasks.spawn(api::gems_server::serve(frontend.clone(), gems));
    tracing::info!(addr = %bind, "frontend serving");

    let outcome = super::supervise(tasks, &frontend.shutdown).await;
    // Links are closed; let the recorder take what is queued, flush and fsync.
    frontend.bus.close().await;
    tokio::task::spawn_blocking(move || recorder_thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the recorder thread panicked"))?
        .context("flushing and syncing the recording at shutdown")?;
    let recorder = &frontend.metrics.recorder;
    match recorder.errors.get() {
        0 => tracing::info!("recording flushed and synced; frontend stopped"),
        errors => tracing::warn!(
            errors,
            records_lost = recorder.records_lost.get(),
            "frontend stopped; packets were lost to recording failures (logged above), and \
             what the recorder still held is flushed and synced"
        ),
    }
    outcome
}
