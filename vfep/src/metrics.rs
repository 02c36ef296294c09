//! The frontend's counters: one set of atomics serves Prometheus, REST and GEMS alike.
//! Every series is created up front, so the hot path only increments.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::bus::{ChannelId, ChannelTable, RouteError};
use crate::codec::Malformed;
use crate::recorder::RecorderStats;

/// Channel label of drops that belong to no channel.
pub const NO_CHANNEL: &str = "none";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Malformed(Malformed),
    /// CCSDS idle packets (APID 2047) carry nothing and are discarded by design.
    Idle,
    UnknownApid,
    WrongType,
    /// A TC arrived while the TC link to the vehicle was down.
    UplinkDown,
    /// A TC arrived while the uplink is disabled (GEMS `UplinkEnabled`).
    UplinkInhibited,
    /// A TC arrived while the uplink queue was full: the vehicle is not reading commands as fast
    /// as they come (or the recording is not keeping up).
    UplinkBusy,
    /// A live subscriber fell behind and missed packets.
    SubscriberLag,
}

impl DropReason {
    pub const ALL: [DropReason; 12] = [
        DropReason::Malformed(Malformed::BadVersion),
        DropReason::Malformed(Malformed::TooShort),
        DropReason::Malformed(Malformed::Oversize),
        DropReason::Malformed(Malformed::Truncated),
        DropReason::Malformed(Malformed::BadCrc),
        DropReason::Idle,
        DropReason::UnknownApid,
        DropReason::WrongType,
        DropReason::UplinkDown,
        DropReason::UplinkInhibited,
        DropReason::UplinkBusy,
        DropReason::SubscriberLag,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed(m) => m.as_str(),
            DropReason::Idle => "idle",
            DropReason::UnknownApid => "unknown_apid",
            DropReason::WrongType => "wrong_type",
            DropReason::UplinkDown => "uplink_down",
            DropReason::UplinkInhibited => "uplink_inhibited",
            DropReason::UplinkBusy => "uplink_busy",
            DropReason::SubscriberLag => "subscriber_lag",
        }
    }

    fn index(self) -> usize {
        DropReason::ALL
            .iter()
            .position(|r| *r == self)
            .expect("ALL lists every reason")
    }
}

impl From<RouteError> for DropReason {
    fn from(error: RouteError) -> Self {
        match error {
            RouteError::Idle => DropReason::Idle,
            RouteError::UnknownApid => DropReason::UnknownApid,
            RouteError::WrongType => DropReason::WrongType,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
    direction: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: String,
    channel: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApidLabels {
    apid: String,
    channel: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkLabels {
    link: String,
}

#[derive(Debug, Clone, Default)]
struct GapCounters {
    gaps: Counter,
    missing: Counter,
}

pub struct FrontendMetrics {
    registry: Registry,
    packets_in: Vec<Counter>,
    packets_out: Vec<Counter>,
    /// Indexed by reason, then channel slot; the last slot is `NO_CHANNEL`.
    drops: Vec<Counter>,
    channel_slots: usize,
    gaps: Vec<Option<GapCounters>>,
    links: Family<LinkLabels, Gauge>,
    pub subscribers: Gauge,
    pub playback_sessions: Gauge,
    pub recorder: RecorderStats,
}

impl FrontendMetrics {
    pub fn new(table: &ChannelTable) -> FrontendMetrics {
        let mut registry = Registry::default();
        let packets_in = Family::<ChannelLabels, Counter>::default();
        let packets_out = Family::<ChannelLabels, Counter>::default();
        let drops = Family::<DropLabels, Counter>::default();
        let gap_events = Family::<ApidLabels, Counter>::default();
        let missing = Family::<ApidLabels, Counter>::default();
        let mut metrics = FrontendMetrics {
            registry: Registry::default(),
            packets_in: Vec::new(),
            packets_out: Vec::new(),
            drops: Vec::new(),
            channel_slots: table.len() + 1,
            gaps: vec![None; 2048],
            links: Family::default(),
            subscribers: Gauge::default(),
            playback_sessions: Gauge::default(),
            recorder: RecorderStats::default(),
        };
        for (_, channel) in table.iter() {
            let labels = ChannelLabels {
                channel: channel.name.clone(),
                direction: channel.direction.as_str().into(),
            };
            metrics
                .packets_in
                .push(packets_in.get_or_create(&labels).clone());
            metrics
                .packets_out
                .push(packets_out.get_or_create(&labels).clone());
            // Command channels too: the vehicle's acknowledgements are TM on their APIDs.
            for &apid in &channel.apids {
                let labels = ApidLabels {
                    apid: apid.to_string(),
                    channel: channel.name.clone(),
                };
                metrics.gaps[usize::from(apid)] = Some(GapCounters {
                    gaps: gap_events.get_or_create(&labels).clone(),
                    missing: missing.get_or_create(&labels).clone(),
                });
            }
        }
        let slot_names: Vec<String> = table
            .iter()
            .map(|(_, c)| c.name.clone())
            .chain([NO_CHANNEL.to_string()])
            .collect();
        for reason in DropReason::ALL {
            for channel in &slot_names {
                let labels = DropLabels {
                    reason: reason.as_str().into(),
                    channel: channel.clone(),
                };
                metrics.drops.push(drops.get_or_create(&labels).clone());
            }
        }

        registry.register(
            "vfep_packets_in",
            "Packets accepted onto the bus: TM from the vehicle, TCs from subscribers",
            packets_in,
        );
        registry.register(
            "vfep_packets_out",
            "Packets delivered: TM and TC to subscribers, TCs to the vehicle",
            packets_out,
        );
        registry.register(
            "vfep_packets_dropped",
            "Packets dropped, by reason and channel",
            drops,
        );
        registry.register(
            "vfep_sequence_gaps",
            "Sequence count discontinuities per APID",
            gap_events,
        );
        registry.register(
            "vfep_missing_packets",
            "Packets missing according to the sequence counts, per APID",
            missing,
        );
        registry.register(
            "vfep_link_connected",
            "1 while the link to the vehicle is connected",
            metrics.links.clone(),
        );
        registry.register(
            "vfep_subscribers",
            "Live subscribers (stream and WebSocket)",
            metrics.subscribers.clone(),
        );
        registry.register(
            "vfep_playback_sessions",
            "Playback sessions in progress",
            metrics.playback_sessions.clone(),
        );
        let recorder = &metrics.recorder;
        registry.register(
            "vfep_recorded_records",
            "Records written to the recording",
            recorder.records.clone(),
        );
        registry.register(
            "vfep_recorded_bytes",
            "Bytes written to the recording, framing included",
            recorder.bytes.clone(),
        );
        registry.register(
            "vfep_recorded_records_durable",
            "Records covered by the last fsync",
            recorder.records_durable.clone(),
        );
        registry.register(
            "vfep_recording_errors",
            "Recording write or fsync failures",
            recorder.errors.clone(),
        );
        registry.register(
            "vfep_recording_records_lost",
            "Packets not recorded because the recording failed",
            recorder.records_lost.clone(),
        );
        metrics.registry = registry;
        metrics
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn packets_in(&self, channel: ChannelId, count: u64) {
        self.packets_in[usize::from(channel)].inc_by(count);
    }

    pub fn packets_out(&self, channel: ChannelId, count: u64) {
        self.packets_out[usize::from(channel)].inc_by(count);
    }

    pub fn dropped(&self, reason: DropReason, channel: Option<ChannelId>, count: u64) {
        let slot = channel.map_or(self.channel_slots - 1, usize::from);
        self.drops[reason.index() * self.channel_slots + slot].inc_by(count);
    }

    pub fn gap(&self, apid: u16, missing: u16) {
        if let Some(Some(counters)) = self.gaps.get(usize::from(apid)) {
            counters.gaps.inc();
            counters.missing.inc_by(u64::from(missing));
        }
    }

    pub fn link_gauge(&self, link: &str) -> Gauge {
        self.links
            .get_or_create(&LinkLabels { link: link.into() })
            .clone()
    }

    pub fn channel_totals(&self, channel: ChannelId) -> (u64, u64) {
        let i = usize::from(channel);
        (self.packets_in[i].get(), self.packets_out[i].get())
    }

    /// Every (reason, channel or None, count) with a non-zero count.
    pub fn drops(&self) -> impl Iterator<Item = (DropReason, Option<ChannelId>, u64)> + '_ {
        DropReason::ALL.into_iter().flat_map(move |reason| {
            (0..self.channel_slots).filter_map(move |slot| {
                let count = self.drops[reason.index() * self.channel_slots + slot].get();
                let channel = (slot + 1 < self.channel_slots).then_some(slot as ChannelId);
                (count > 0).then_some((reason, channel, count))
            })
        })
    }

    /// (APID, gap events, missing packets) for every configured APID.
    pub fn gaps(&self) -> impl Iterator<Item = (u16, u64, u64)> + '_ {
        self.gaps.iter().enumerate().filter_map(|(apid, counters)| {
            counters
                .as_ref()
                .map(|c| (apid as u16, c.gaps.get(), c.missing.get()))
        })
    }

    pub fn total_in(&self) -> u64 {
        self.packets_in.iter().map(Counter::get).sum()
    }

    pub fn total_out(&self) -> u64 {
        self.packets_out.iter().map(Counter::get).sum()
    }

    pub fn total_dropped(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }
}

/// Holds a gauge up by one while alive: sessions count themselves however they end.
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn hold(gauge: &Gauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Renders a registry in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)
        .expect("writing to a String cannot fail");
    text
}
