//! The in-process publish/subscribe bus: packets travel in batches (one allocation per batch,
//! none per packet), routed by APID to the configured channels.
//!
//! Two kinds of subscriber: *lossless* ones (recorder, TC uplink) apply back-pressure to the
//! publisher, so nothing is lost on the way to disk or to the vehicle; *live* ones (API clients)
//! can never slow the data path and are told how many packets they missed when they lag.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{Mutex, broadcast, mpsc};

use crate::codec::{IDLE_APID, PacketType};
use crate::config::{self, Direction};

pub type ChannelId = u16;

#[derive(Debug, Clone)]
pub struct ChannelInfo {
    pub name: String,
    pub direction: Direction,
    pub apids: Vec<u16>,
    pub rate_hz: f64,
}

/// The routing table: APID -> channel.
#[derive(Debug, Clone)]
pub struct ChannelTable {
    channels: Vec<ChannelInfo>,
    by_apid: Box<[Option<ChannelId>; 2048]>,
}

/// Why the bus refused a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("APID 2047 is the idle APID: idle packets carry no data and go nowhere")]
    Idle,
    #[error("APID is not configured on any channel")]
    UnknownApid,
    #[error("packet type does not match the channel direction")]
    WrongType,
}

impl ChannelTable {
    pub fn new(channels: &[config::Channel]) -> ChannelTable {
        let mut by_apid = Box::new([None; 2048]);
        for (id, channel) in channels.iter().enumerate() {
            for &apid in &channel.apids {
                by_apid[usize::from(apid)] = Some(id as ChannelId);
            }
        }
        ChannelTable {
            channels: channels
                .iter()
                .map(|c| ChannelInfo {
                    name: c.name.clone(),
                    direction: c.direction,
                    apids: c.apids.clone(),
                    rate_hz: c.rate_hz,
                })
                .collect(),
            by_apid,
        }
    }

    pub fn lookup(&self, apid: u16) -> Option<ChannelId> {
        self.by_apid.get(usize::from(apid)).copied().flatten()
    }

    /// The channel a packet belongs to. Telemetry channels carry TM only; command channels carry
    /// TCs up and, on the same APIDs, the vehicle's TM acknowledgements down (the PUS convention
    /// that verification reports come from the APID the command went to).
    pub fn route(&self, apid: u16, packet_type: PacketType) -> Result<ChannelId, RouteError> {
        if apid == IDLE_APID {
            return Err(RouteError::Idle);
        }
        let id = self.lookup(apid).ok_or(RouteError::UnknownApid)?;
        match (self.channels[usize::from(id)].direction, packet_type) {
            (Direction::Telemetry, PacketType::Telecommand) => Err(RouteError::WrongType),
            _ => Ok(id),
        }
    }

    pub fn get(&self, id: ChannelId) -> &ChannelInfo {
        &self.channels[usize::from(id)]
    }

    pub fn by_name(&self, name: &str) -> Option<ChannelId> {
        self.channels
            .iter()
            .position(|c| c.name == name)
            .map(|i| i as ChannelId)
    }

    pub fn iter(&self) -> impl Iterator<Item = (ChannelId, &ChannelInfo)> {
        self.channels
            .iter()
            .enumerate()
            .map(|(i, c)| (i as ChannelId, c))
    }

    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
}

/// A set of channels a subscriber wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSet(Vec<bool>);

impl ChannelSet {
    pub fn all(table: &ChannelTable) -> ChannelSet {
        ChannelSet(vec![true; table.len()])
    }

    /// Channels by name; an empty list means all of them.
    pub fn named(table: &ChannelTable, names: &[String]) -> Result<ChannelSet, String> {
        if names.is_empty() {
            return Ok(ChannelSet::all(table));
        }
        let mut set = vec![false; table.len()];
        for name in names {
            let id = table
                .by_name(name)
                .ok_or_else(|| format!("unknown channel {name:?}"))?;
            set[usize::from(id)] = true;
        }
        Ok(ChannelSet(set))
    }

    pub fn contains(&self, id: ChannelId) -> bool {
        self.0.get(usize::from(id)).copied().unwrap_or(false)
    }
}

/// Where a packet sits inside its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketRef {
    pub offset: u32,
    pub len: u32,
    pub apid: u16,
    pub channel: ChannelId,
}

/// Packets received together: one buffer, one receive time, one direction.
#[derive(Debug, Clone)]
pub struct Batch {
    pub packet_type: PacketType,
    pub received_ns: u64,
    pub data: Bytes,
    pub packets: Vec<PacketRef>,
    /// Bus-wide index of the first packet, set on publish; lets live subscribers notice a loss.
    pub first_index: u64,
    /// Per channel, how many packets of it the bus published before this batch; set on
    /// publish, so a lagging subscriber can count what it lost of its own channels.
    pub first_by_channel: Vec<u64>,
}

impl Batch {
    pub fn new(packet_type: PacketType, received_ns: u64, data: Bytes) -> Batch {
        Batch {
            packet_type,
            received_ns,
            data,
            packets: Vec::new(),
            first_index: 0,
            first_by_channel: Vec::new(),
        }
    }

    pub fn bytes(&self, packet: &PacketRef) -> &[u8] {
        let start = packet.offset as usize;
        &self.data[start..start + packet.len as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    Everything,
    Only(PacketType),
}

impl Interest {
    fn wants(self, packet_type: PacketType) -> bool {
        match self {
            Interest::Everything => true,
            Interest::Only(t) => t == packet_type,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the bus is closed")]
pub struct BusClosed;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("the bus is closed")]
    Closed,
    #[error("a lossless subscriber is full")]
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    ForRoom,
    Never,
}

pub struct Bus {
    /// Held for a whole publish, so every subscriber sees the same order and indices.
    publishing: Mutex<Publishing>,
    live: broadcast::Sender<Arc<Batch>>,
}

struct Publishing {
    next_index: u64,
    next_by_channel: Vec<u64>,
    lossless: Vec<(Interest, mpsc::Sender<Arc<Batch>>)>,
    closed: bool,
}

/// Batches a lossless subscriber may have queued before the publisher waits.
const LOSSLESS_DEPTH: usize = 64;

impl Bus {
    pub fn new(live_capacity: usize) -> Bus {
        Bus {
            publishing: Mutex::new(Publishing {
                next_index: 0,
                next_by_channel: Vec::new(),
                lossless: Vec::new(),
                closed: false,
            }),
            live: broadcast::channel(live_capacity).0,
        }
    }

    /// Adds a subscriber that receives every matching batch; only before the bus is shared.
    pub fn subscribe_lossless(&mut self, interest: Interest) -> mpsc::Receiver<Arc<Batch>> {
        let (tx, rx) = mpsc::channel(LOSSLESS_DEPTH);
        self.publishing.get_mut().lossless.push((interest, tx));
        rx
    }

    pub fn subscribe_live(&self, channels: ChannelSet) -> LiveSubscription {
        LiveSubscription {
            rx: self.live.subscribe(),
            channels,
            next: None,
            pending: None,
        }
    }

    /// Publishes a batch; waits while a lossless subscriber is full.
    pub async fn publish(&self, batch: Batch) -> Result<(), BusClosed> {
        self.publish_with(batch, Wait::ForRoom)
            .await
            .map_err(|_| BusClosed)
    }

    /// Publishes a batch only if every lossless subscriber it goes to has room now. A publisher
    /// that could wait on a stalled consumer (the vehicle no longer reading commands) must not:
    /// it would hold the bus, and every other publisher (telemetry) with it.
    pub async fn try_publish(&self, batch: Batch) -> Result<(), PublishError> {
        self.publish_with(batch, Wait::Never).await
    }

    async fn publish_with(&self, mut batch: Batch, wait: Wait) -> Result<(), PublishError> {
        if batch.packets.is_empty() {
            return Ok(());
        }
        let mut publishing = self.publishing.lock().await;
        if publishing.closed {
            return Err(PublishError::Closed);
        }
        // Only this publisher sends while it holds the lock: room seen now stays.
        if wait == Wait::Never
            && publishing
                .lossless
                .iter()
                .any(|(interest, tx)| interest.wants(batch.packet_type) && tx.capacity() == 0)
        {
            return Err(PublishError::Full);
        }
        batch.first_index = publishing.next_index;
        publishing.next_index += batch.packets.len() as u64;
        batch.first_by_channel = publishing.next_by_channel.clone();
        count_by_channel(&mut publishing.next_by_channel, &batch.packets);
        let batch = Arc::new(batch);
        for (interest, tx) in &publishing.lossless {
            if interest.wants(batch.packet_type) {
                tx.send(batch.clone())
                    .await
                    .map_err(|_| PublishError::Closed)?;
            }
        }
        // No live subscriber is not an error.
        let _ = self.live.send(batch);
        Ok(())
    }

    /// Lets the lossless subscribers drain and stop; later publishes fail (shutdown).
    pub async fn close(&self) {
        let mut publishing = self.publishing.lock().await;
        publishing.closed = true;
        publishing.lossless.clear();
    }
}

/// Adds `packets` to per-channel counts.
fn count_by_channel(counts: &mut Vec<u64>, packets: &[PacketRef]) {
    for packet in packets {
        let channel = usize::from(packet.channel);
        if channel >= counts.len() {
            counts.resize(channel + 1, 0);
        }
        counts[channel] += 1;
    }
}

pub struct LiveSubscription {
    rx: broadcast::Receiver<Arc<Batch>>,
    channels: ChannelSet,
    /// What the next batch should start with, bus-wide and per channel.
    next: Option<(u64, Vec<u64>)>,
    /// A batch received right after a loss, delivered on the next call.
    pending: Option<Arc<Batch>>,
}

#[derive(Debug)]
pub enum LiveEvent {
    Batch(Arc<Batch>),
    /// Packets of subscribed channels published while the subscriber lagged, by channel.
    Lost(Vec<(ChannelId, u64)>),
    Closed,
}

impl LiveSubscription {
    /// The next batch holding a packet of a subscribed channel, or news of a loss.
    pub async fn recv(&mut self) -> LiveEvent {
        loop {
            let batch = match self.pending.take() {
                Some(batch) => batch,
                None => match self.rx.recv().await {
                    Ok(batch) => batch,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return LiveEvent::Closed,
                },
            };
            if let Some((expected, expected_by_channel)) = self.next.take()
                && batch.first_index > expected
            {
                let lost: Vec<(ChannelId, u64)> = (0..batch.first_by_channel.len())
                    .map(|c| c as ChannelId)
                    .filter(|&c| self.channels.contains(c))
                    .map(|c| {
                        let published = batch.first_by_channel[usize::from(c)];
                        let seen = expected_by_channel.get(usize::from(c)).copied();
                        (c, published - seen.unwrap_or(0))
                    })
                    .filter(|&(_, count)| count > 0)
                    .collect();
                if !lost.is_empty() {
                    self.pending = Some(batch);
                    return LiveEvent::Lost(lost);
                }
            }
            let mut next_by_channel = batch.first_by_channel.clone();
            count_by_channel(&mut next_by_channel, &batch.packets);
            self.next = Some((
                batch.first_index + batch.packets.len() as u64,
                next_by_channel,
            ));
            if batch
                .packets
                .iter()
                .any(|p| self.channels.contains(p.channel))
            {
                return LiveEvent::Batch(batch);
            }
        }
    }

    pub fn wants(&self, channel: ChannelId) -> bool {
        self.channels.contains(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn table() -> ChannelTable {
        let config = Config::parse(
            "channels:\n  - {name: hk, apids: [100, 101], direction: telemetry}\n  - {name: cmd, apids: [200], direction: command}\n",
        )
        .unwrap();
        ChannelTable::new(&config.channels)
    }

    fn batch(packet_type: PacketType, channels: &[ChannelId]) -> Batch {
        let mut batch = Batch::new(packet_type, 1, Bytes::from(vec![0u8; channels.len()]));
        for (i, &channel) in channels.iter().enumerate() {
            batch.packets.push(PacketRef {
                offset: i as u32,
                len: 1,
                apid: 0,
                channel,
            });
        }
        batch
    }

    #[test]
    fn routes_by_apid_and_direction() {
        let table = table();
        assert_eq!(table.route(101, PacketType::Telemetry), Ok(0));
        assert_eq!(table.route(200, PacketType::Telecommand), Ok(1));
        assert_eq!(
            table.route(200, PacketType::Telemetry),
            Ok(1),
            "acks ride the command channel"
        );
        assert_eq!(
            table.route(100, PacketType::Telecommand),
            Err(RouteError::WrongType)
        );
        assert_eq!(
            table.route(300, PacketType::Telemetry),
            Err(RouteError::UnknownApid)
        );
        // Found by a user: a TC on the idle APID was counted as unknown_apid.
        for packet_type in [PacketType::Telemetry, PacketType::Telecommand] {
            assert_eq!(table.route(IDLE_APID, packet_type), Err(RouteError::Idle));
        }
        assert!(ChannelSet::named(&table, &["nope".into()]).is_err());
    }

    #[tokio::test]
    async fn lossless_subscribers_get_their_interest_and_live_ones_their_channels() {
        let table = table();
        let mut bus = Bus::new(16);
        let mut recorder = bus.subscribe_lossless(Interest::Everything);
        let mut uplink = bus.subscribe_lossless(Interest::Only(PacketType::Telecommand));
        let bus = Arc::new(bus);
        let mut commands_only =
            bus.subscribe_live(ChannelSet::named(&table, &["cmd".into()]).unwrap());

        bus.publish(batch(PacketType::Telemetry, &[0, 0]))
            .await
            .unwrap();
        bus.publish(batch(PacketType::Telecommand, &[1]))
            .await
            .unwrap();

        assert_eq!(recorder.recv().await.unwrap().first_index, 0);
        assert_eq!(recorder.recv().await.unwrap().first_index, 2);
        assert_eq!(
            uplink.recv().await.unwrap().packet_type,
            PacketType::Telecommand
        );
        assert!(uplink.try_recv().is_err());
        match commands_only.recv().await {
            LiveEvent::Batch(b) => assert_eq!(b.first_index, 2),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_lagging_live_subscriber_learns_how_many_packets_it_lost() {
        let table = table();
        let bus = Bus::new(2);
        let mut slow = bus.subscribe_live(ChannelSet::all(&table));
        bus.publish(batch(PacketType::Telemetry, &[0]))
            .await
            .unwrap();
        assert!(matches!(slow.recv().await, LiveEvent::Batch(_)));
        for _ in 0..5 {
            bus.publish(batch(PacketType::Telemetry, &[0, 0, 0]))
                .await
                .unwrap();
        }
        // Capacity 2: the first three of the five batches (9 packets) are gone.
        match slow.recv().await {
            LiveEvent::Lost(lost) => assert_eq!(lost, [(0, 9)]),
            other => panic!("{other:?}"),
        }
        match slow.recv().await {
            LiveEvent::Batch(b) => assert_eq!(b.first_index, 10),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_lagging_subscriber_counts_only_what_it_lost_of_its_own_channels() {
        let table = table();
        let bus = Bus::new(2);
        let mut commands_only =
            bus.subscribe_live(ChannelSet::named(&table, &["cmd".into()]).unwrap());
        bus.publish(batch(PacketType::Telecommand, &[1]))
            .await
            .unwrap();
        assert!(matches!(commands_only.recv().await, LiveEvent::Batch(_)));
        // Lost while lagging: 2 command packets among 8 housekeeping ones.
        for channels in [&[0, 0, 1, 0][..], &[0, 0, 0], &[1, 0]] {
            let packet_type = if channels.contains(&1) {
                PacketType::Telecommand
            } else {
                PacketType::Telemetry
            };
            bus.publish(batch(packet_type, channels)).await.unwrap();
        }
        bus.publish(batch(PacketType::Telemetry, &[0]))
            .await
            .unwrap();
        bus.publish(batch(PacketType::Telecommand, &[1, 1]))
            .await
            .unwrap();
        match commands_only.recv().await {
            LiveEvent::Lost(lost) => assert_eq!(lost, [(1, 2)]),
            other => panic!("{other:?}"),
        }
        match commands_only.recv().await {
            LiveEvent::Batch(b) => assert_eq!(b.packets.len(), 2),
            other => panic!("{other:?}"),
        }

        // A loss of other channels only is no loss to this subscriber.
        for _ in 0..3 {
            bus.publish(batch(PacketType::Telemetry, &[0]))
                .await
                .unwrap();
        }
        bus.publish(batch(PacketType::Telecommand, &[1]))
            .await
            .unwrap();
        match commands_only.recv().await {
            LiveEvent::Batch(b) => assert_eq!(b.first_index, 16),
            other => panic!("{other:?}"),
        }
    }
}
