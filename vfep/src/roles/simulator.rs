//! The vehicle simulator. Listens on tmPort (TM out) and tcPort (TC in); the newest connection on
//! each wins, as a restarted frontend reconnects. Emits housekeeping on every telemetry APID at
//! its channel's rate, executes TCs (mode, heater) and acknowledges each on its APID, and on the
//! START_LOAD command emits load packets as fast as the link takes them or at a set rate.
//!
//! One task generates all TM, so each APID's sequence count is assigned and sent in order.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use bytes::{Bytes, BytesMut};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::negotiate::Format;
use crate::bus::ChannelTable;
use crate::codec::{
    Decoded, PacketFormat, PacketType, PrimaryHeader, SEQUENCE_COUNT_MODULO, StreamDecoder,
};
use crate::config::{Config, Direction};
use crate::mission::{self, AckStatus, Acknowledgement, Command, Housekeeping, Mode, TmId, TmKind};
use crate::time::now_ns;

/// TM is handed to the link in chunks of about this size.
const CHUNK: usize = 256 * 1024;
/// Heater time constant: the temperature approaches the setpoint with this e-folding time.
const THERMAL_TAU_S: f32 = 30.0;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkLabels {
    link: String,
}

struct SimMetrics {
    registry: Registry,
    tm_sent: Family<KindLabels, Counter>,
    /// Generated while no frontend was connected.
    tm_unsent: Counter,
    tc: Family<KindLabels, Counter>,
    links: Family<LinkLabels, Gauge>,
}

impl SimMetrics {
    fn new() -> SimMetrics {
        let mut registry = Registry::default();
        let metrics = SimMetrics {
            registry: Registry::default(),
            tm_sent: Family::default(),
            tm_unsent: Counter::default(),
            tc: Family::default(),
            links: Family::default(),
        };
        registry.register(
            "vfep_sim_tm_packets",
            "TM packets sent, by kind",
            metrics.tm_sent.clone(),
        );
        registry.register(
            "vfep_sim_tm_unsent_packets",
            "TM packets generated while no TM link was connected",
            metrics.tm_unsent.clone(),
        );
        registry.register(
            "vfep_sim_tc_packets",
            "TC packets received, by outcome",
            metrics.tc.clone(),
        );
        registry.register(
            "vfep_sim_link_connected",
            "1 while a frontend is connected",
            metrics.links.clone(),
        );
        SimMetrics {
            registry,
            ..metrics
        }
    }

    fn count_tc(&self, outcome: &str) {
        self.tc
            .get_or_create(&KindLabels {
                kind: outcome.into(),
            })
            .inc();
    }

    fn link(&self, link: &str, connected: bool) {
        self.links
            .get_or_create(&LinkLabels { link: link.into() })
            .set(i64::from(connected));
    }
}

/// The simulated vehicle.
#[derive(Debug, Clone)]
struct Vehicle {
    started: Instant,
    mode: Mode,
    setpoint_c: f32,
    /// Temperature when the setpoint last changed, and when.
    settled_from: (f32, Instant),
    commands_accepted: u16,
    commands_rejected: u16,
}

impl Vehicle {
    fn new() -> Vehicle {
        let now = Instant::now();
        Vehicle {
            started: now,
            mode: Mode::Nominal,
            setpoint_c: 20.0,
            settled_from: (10.0, now),
            commands_accepted: 0,
            commands_rejected: 0,
        }
    }

    fn temperature_c(&self, now: Instant) -> f32 {
        let (from, since) = self.settled_from;
        let elapsed = now.duration_since(since).as_secs_f32();
        self.setpoint_c + (from - self.setpoint_c) * (-elapsed / THERMAL_TAU_S).exp()
    }

    fn housekeeping(&self, now: Instant) -> Housekeeping {
        let uptime = now.duration_since(self.started).as_secs_f32();
        let science_load = if self.mode == Mode::Science { 0.8 } else { 0.0 };
        Housekeeping {
            mode: self.mode,
            heater_setpoint_c: self.setpoint_c,
            temperature_c: self.temperature_c(now) + 0.2 * (uptime / 10.0).sin(),
            battery_v: 28.0 + 0.4 * (uptime / 90.0).sin() - science_load,
            commands_accepted: self.commands_accepted,
            commands_rejected: self.commands_rejected,
            uptime_s: uptime as u32,
        }
    }

    fn execute(&mut self, command: &Command) {
        match *command {
            Command::Noop | Command::StartLoad { .. } => {}
            Command::SetMode(mode) => self.mode = mode,
            Command::SetHeater { setpoint_c } => {
                let now = Instant::now();
                self.settled_from = (self.temperature_c(now), now);
                self.setpoint_c = setpoint_c;
            }
        }
    }
}

/// What the TC side asks of the TM generator.
enum TmRequest {
    Ack { apid: u16, ack: Acknowledgement },
    Load(Load),
}

#[derive(Debug, Clone)]
struct Load {
    remaining: u32,
    packet_len: usize,
    rate_hz: u32,
    started: Instant,
    sent: u64,
    next_index: u32,
}

impl Load {
    /// Packets due now, at most `cap`.
    fn due(&self, now: Instant, cap: usize) -> usize {
        let cap = cap.min(self.remaining as usize);
        if self.rate_hz == 0 {
            return cap;
        }
        let owed =
            (now.duration_since(self.started).as_secs_f64() * f64::from(self.rate_hz)) as u64;
        (owed.saturating_sub(self.sent) as usize).min(cap)
    }

    fn next_due(&self) -> Instant {
        if self.rate_hz == 0 {
            return Instant::now();
        }
        self.started + Duration::from_secs_f64((self.sent + 1) as f64 / f64::from(self.rate_hz))
    }
}

struct Simulator {
    table: ChannelTable,
    format: PacketFormat,
    vehicle: Mutex<Vehicle>,
    metrics: SimMetrics,
    shutdown: CancellationToken,
}

pub async fn run(
    config: Config,
    bind: IpAddr,
    http_port: u16,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tm_listener = super::bind(bind, config.vehicle.tm_port, "TM").await?;
    let tc_listener = super::bind(bind, config.vehicle.tc_port, "TC").await?;
    let http = super::bind(bind, http_port, "HTTP").await?;
    let sim = Arc::new(Simulator {
        table: ChannelTable::new(&config.channels),
        format: PacketFormat {
            crc: config.vehicle.packet_error_control,
            max_packet_len: config.vehicle.max_packet_length,
        },
        vehicle: Mutex::new(Vehicle::new()),
        metrics: SimMetrics::new(),
        shutdown: shutdown.clone(),
    });
    let (chunks_tx, chunks_rx) = mpsc::channel(8);
    let (connections_tx, connections_rx) = mpsc::channel(1);
    let (requests_tx, requests_rx) = mpsc::channel(64);

    let mut tasks = JoinSet::new();
    tasks.spawn(accept_tm(sim.clone(), tm_listener, connections_tx));
    tasks.spawn(send_tm(sim.clone(), chunks_rx, connections_rx));
    tasks.spawn(generate_tm(sim.clone(), requests_rx, chunks_tx));
    tasks.spawn(accept_tc(sim.clone(), tc_listener, requests_tx));
    let router = Router::new()
        .route("/api/v1/vehicle", get(vehicle_state))
        .with_state(sim.clone())
        .merge(crate::api::ops_routes(
            {
                let sim = sim.clone();
                move || crate::metrics::encode(&sim.metrics.registry)
            },
            || Ok(()),
        ));
    tasks.spawn(async move { Ok(crate::api::serve_http(http, router, shutdown).await?) });
    tracing::info!(addr = %bind, "simulator serving");
    super::supervise(tasks, &sim.shutdown).await
}

/// The newest TM connection replaces the previous one.
async fn accept_tm(
    sim: Arc<Simulator>,
    listener: TcpListener,
    connections: mpsc::Sender<TcpStream>,
) -> anyhow::Result<()> {
    loop {
        let (socket, peer) = tokio::select! {
            accepted = crate::links::accept(&listener, "TM") => accepted,
            _ = sim.shutdown.cancelled() => return Ok(()),
        };
        crate::links::configure(&socket);
        tracing::info!(%peer, "TM link connected");
        if connections.send(socket).await.is_err() {
            return Ok(());
        }
    }
}

async fn send_tm(
    sim: Arc<Simulator>,
    mut chunks: mpsc::Receiver<(Bytes, u64, TmKind)>,
    mut connections: mpsc::Receiver<TcpStream>,
) -> anyhow::Result<()> {
    let mut link: Option<TcpStream> = None;
    loop {
        tokio::select! {
            Some(socket) = connections.recv() => {
                link = Some(socket);
                sim.metrics.link("tm", true);
            }
            chunk = chunks.recv() => {
                let Some((data, packets, kind)) = chunk else { return Ok(()) };
                let Some(socket) = link.as_mut() else {
                    sim.metrics.tm_unsent.inc_by(packets);
                    continue;
                };
                if let Err(error) = socket.write_all(&data).await {
                    tracing::warn!(%error, "TM link lost");
                    link = None;
                    sim.metrics.link("tm", false);
                    sim.metrics.tm_unsent.inc_by(packets);
                    continue;
                }
                let label = KindLabels { kind: kind_name(kind).into() };
                sim.metrics.tm_sent.get_or_create(&label).inc_by(packets);
            }
            _ = sim.shutdown.cancelled() => return Ok(()),
        }
    }
}

fn kind_name(kind: TmKind) -> &'static str {
    match kind {
        TmKind::Housekeeping => "housekeeping",
        TmKind::Acknowledgement => "acknowledgement",
        TmKind::Load => "load",
    }
}

/// A schedule entry: housekeeping of one APID every `period`.
struct Periodic {
    apid: u16,
    period: Duration,
    next_due: Instant,
}

/// Builds every TM packet, so each APID's sequence counter has one owner.
async fn generate_tm(
    sim: Arc<Simulator>,
    mut requests: mpsc::Receiver<TmRequest>,
    chunks: mpsc::Sender<(Bytes, u64, TmKind)>,
) -> anyhow::Result<()> {
    let mut sequence = vec![0u16; 2048];
    let mut next_count = |apid: u16| {
        let slot = &mut sequence[usize::from(apid)];
        let count = *slot;
        *slot = (count + 1) % SEQUENCE_COUNT_MODULO;
        count
    };
    let telemetry: Vec<(u16, f64)> = sim
        .table
        .iter()
        .filter(|(_, c)| c.direction == Direction::Telemetry)
        .flat_map(|(_, c)| c.apids.iter().map(move |&apid| (apid, c.rate_hz)))
        .collect();
    let load_apids: Vec<u16> = telemetry.iter().map(|(apid, _)| *apid).collect();
    let start = Instant::now();
    let mut schedule: Vec<Periodic> = telemetry
        .iter()
        .filter(|(_, rate)| *rate > 0.0)
        .map(|&(apid, rate)| Periodic {
            apid,
            period: Duration::from_secs_f64(1.0 / rate),
            next_due: start,
        })
        .collect();
    let mut load: Option<Load> = None;
    let crc = sim.format.crc;
    loop {
        let next_hk = schedule.iter().map(|p| p.next_due).min();
        let next_load = load.as_ref().map(Load::next_due);
        // With nothing scheduled, only a request (a TC) wakes the generator.
        let wake = next_hk
            .into_iter()
            .chain(next_load)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            _ = sim.shutdown.cancelled() => return Ok(()),
            request = requests.recv() => match request {
                None => return Ok(()),
                Some(TmRequest::Ack { apid, ack }) => {
                    let id = TmId {
                        apid,
                        sequence_count: next_count(apid),
                        kind: TmKind::Acknowledgement,
                        time_ns: now_ns(),
                    };
                    let mut out = BytesMut::new();
                    mission::write_tm(&mut out, id, Acknowledgement::LEN, crc, |body| ack.write(body));
                    send(&chunks, out, 1, TmKind::Acknowledgement).await?;
                }
                Some(TmRequest::Load(new_load)) if !load_apids.is_empty() => load = Some(new_load),
                Some(TmRequest::Load(_)) => tracing::warn!("no telemetry APID to emit load on"),
            },
            // Work already due skips the timer: it fires on millisecond ticks, which would cap
            // an as-fast-as-possible load at one chunk per tick.
            _ = std::future::ready(()), if wake <= Instant::now() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        let mut out = BytesMut::new();
        let mut count = 0;
        let hk = sim.vehicle.lock().expect("vehicle lock").housekeeping(now);
        for periodic in &mut schedule {
            if periodic.next_due > now {
                continue;
            }
            let id = TmId {
                apid: periodic.apid,
                sequence_count: next_count(periodic.apid),
                kind: TmKind::Housekeeping,
                time_ns: now_ns(),
            };
            mission::write_tm(&mut out, id, Housekeeping::LEN, crc, |body| hk.write(body));
            count += 1;
            // After a stall, resume the cadence rather than emit a burst of stale reports.
            periodic.next_due = (periodic.next_due + periodic.period).max(now);
        }
        if count > 0 {
            send(&chunks, out, count, TmKind::Housekeeping).await?;
        }
        if let Some(active) = load.as_mut() {
            let body_len =
                active.packet_len - sim.format.overhead(mission::TM_SECONDARY_HEADER_LEN);
            let due = active.due(now, CHUNK / active.packet_len + 1);
            if due > 0 {
                let mut out = BytesMut::with_capacity(due * active.packet_len);
                let time_ns = now_ns();
                for _ in 0..due {
                    let apid = load_apids[active.next_index as usize % load_apids.len()];
                    let id = TmId {
                        apid,
                        sequence_count: next_count(apid),
                        kind: TmKind::Load,
                        time_ns,
                    };
                    let index = active.next_index;
                    mission::write_tm(&mut out, id, body_len, crc, |body| {
                        body[..4].copy_from_slice(&index.to_be_bytes())
                    });
                    active.next_index = active.next_index.wrapping_add(1);
                }
                active.sent += due as u64;
                active.remaining -= due as u32;
                send(&chunks, out, due as u64, TmKind::Load).await?;
            }
            if active.remaining == 0 {
                load = None;
            }
        }
    }
}

async fn send(
    chunks: &mpsc::Sender<(Bytes, u64, TmKind)>,
    out: BytesMut,
    packets: u64,
    kind: TmKind,
) -> anyhow::Result<()> {
    chunks
        .send((out.freeze(), packets, kind))
        .await
        .map_err(|_| anyhow::anyhow!("TM sender stopped"))
}

/// The newest TC connection replaces the previous one.
async fn accept_tc(
    sim: Arc<Simulator>,
    listener: TcpListener,
    requests: mpsc::Sender<TmRequest>,
) -> anyhow::Result<()> {
    let mut current: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let (socket, peer) = tokio::select! {
            accepted = crate::links::accept(&listener, "TC") => accepted,
            _ = sim.shutdown.cancelled() => return Ok(()),
        };
        if let Some(previous) = current.take() {
            previous.abort();
        }
        crate::links::configure(&socket);
        tracing::info!(%peer, "TC link connected");
        sim.metrics.link("tc", true);
        let sim = sim.clone();
        let requests = requests.clone();
        current = Some(tokio::spawn(async move {
            if let Err(error) = receive_tc(&sim, socket, &requests).await {
                tracing::warn!(%error, "TC link lost");
            }
            sim.metrics.link("tc", false);
        }));
    }
}

async fn receive_tc(
    sim: &Simulator,
    mut socket: TcpStream,
    requests: &mpsc::Sender<TmRequest>,
) -> anyhow::Result<()> {
    let mut decoder = StreamDecoder::new(sim.format);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        tokio::select! {
            read = socket.read_buf(&mut buf) => if read? == 0 {
                if decoder.finish(buf.len()).is_some() {
                    sim.metrics.count_tc("truncated");
                }
                return Ok(());
            },
            _ = sim.shutdown.cancelled() => return Ok(()),
        }
        let mut packets = Vec::new();
        let consumed = decoder.decode(&buf, |verdict| match verdict {
            Decoded::Packet { offset, header } => packets.push((offset, header)),
            Decoded::Dropped { reason, .. } => sim.metrics.count_tc(reason.as_str()),
        });
        for (offset, header) in packets {
            let packet = &buf[offset..offset + header.packet_len()];
            for request in execute(sim, &header, packet) {
                requests.send(request).await?;
            }
        }
        let _ = buf.split_to(consumed);
    }
}

/// Executes one TC; returns what to emit: its acknowledgement and, for START_LOAD, the load.
/// Nothing when no application process owns the APID (then nobody could answer).
fn execute(sim: &Simulator, header: &PrimaryHeader, packet: &[u8]) -> Vec<TmRequest> {
    let is_command_apid = sim
        .table
        .lookup(header.apid)
        .is_some_and(|id| sim.table.get(id).direction == Direction::Command);
    if header.packet_type != PacketType::Telecommand || !is_command_apid {
        sim.metrics.count_tc("not_for_this_vehicle");
        return Vec::new();
    }
    let user_data = mission::tc_user_data(packet, sim.format.crc);
    let decoded = Command::decode(user_data).and_then(|command| match command {
        Command::StartLoad { packet_len, .. }
            if usize::from(packet_len) > sim.format.max_packet_len =>
        {
            Err(AckStatus::BadArgument)
        }
        command => Ok(command),
    });
    let mut vehicle = sim.vehicle.lock().expect("vehicle lock");
    let status = match &decoded {
        Ok(command) => {
            vehicle.execute(command);
            vehicle.commands_accepted = vehicle.commands_accepted.wrapping_add(1);
            sim.metrics.count_tc("executed");
            AckStatus::Executed
        }
        Err(status) => {
            vehicle.commands_rejected = vehicle.commands_rejected.wrapping_add(1);
            sim.metrics.count_tc("rejected");
            *status
        }
    };
    drop(vehicle);
    let ack = Acknowledgement {
        tc_sequence_count: header.sequence_count,
        opcode: user_data.first().copied().unwrap_or(0),
        status,
    };
    let mut emit = vec![TmRequest::Ack {
        apid: header.apid,
        ack,
    }];
    if let Ok(Command::StartLoad {
        count,
        packet_len,
        rate_hz,
    }) = decoded
    {
        emit.push(TmRequest::Load(Load {
            remaining: count,
            packet_len: usize::from(packet_len),
            rate_hz,
            started: Instant::now(),
            sent: 0,
            next_index: 0,
        }));
    }
    emit
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VehicleView {
    pub mode: Mode,
    pub heater_setpoint_c: f32,
    pub temperature_c: f32,
    pub commands_accepted: u16,
    pub commands_rejected: u16,
}

async fn vehicle_state(State(sim): State<Arc<Simulator>>, format: Format) -> Response {
    let vehicle = sim.vehicle.lock().expect("vehicle lock").clone();
    let view = VehicleView {
        mode: vehicle.mode,
        heater_setpoint_c: vehicle.setpoint_c,
        temperature_c: vehicle.temperature_c(Instant::now()),
        commands_accepted: vehicle.commands_accepted,
        commands_rejected: vehicle.commands_rejected,
    };
    format.render("vehicle", &view)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simulator() -> Arc<Simulator> {
        let config = Config::parse(
            "channels:\n  - {name: load, apids: [100], direction: telemetry, rateHz: 0}\n  - {name: cmd, apids: [200], direction: command}\n",
        )
        .unwrap();
        Arc::new(Simulator {
            table: ChannelTable::new(&config.channels),
            format: PacketFormat {
                crc: true,
                max_packet_len: config.vehicle.max_packet_length,
            },
            vehicle: Mutex::new(Vehicle::new()),
            metrics: SimMetrics::new(),
            shutdown: CancellationToken::new(),
        })
    }

    /// A load without a rate goes as fast as the link takes it: with the clock paused, all of
    /// it must come out without the clock moving. It once slept on the timer between chunks,
    /// which fires on millisecond ticks and so capped the load at one 256 KiB chunk per tick.
    #[tokio::test(start_paused = true)]
    async fn a_load_without_a_rate_never_waits_for_the_clock() {
        let sim = simulator();
        let (requests, requests_rx) = mpsc::channel(4);
        let (chunks_tx, mut chunks) = mpsc::channel(8);
        let generator = tokio::spawn(generate_tm(sim.clone(), requests_rx, chunks_tx));
        // Between two ticks, as a real clock nearly always is.
        tokio::time::advance(Duration::from_micros(500)).await;
        let started = Instant::now();
        let total = 50 * (CHUNK / 256) as u64;
        let load = Load {
            remaining: total as u32,
            packet_len: 256,
            rate_hz: 0,
            started,
            sent: 0,
            next_index: 0,
        };
        assert!(requests.send(TmRequest::Load(load)).await.is_ok());
        let mut received = 0;
        while received < total {
            let (data, packets, kind) = chunks.recv().await.expect("the generator runs");
            assert_eq!(kind, TmKind::Load);
            assert_eq!(data.len() as u64, packets * 256);
            received += packets;
        }
        assert_eq!(received, total);
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "the load waited on the clock"
        );
        sim.shutdown.cancel();
        generator.await.unwrap().unwrap();
    }
}
