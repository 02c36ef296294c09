//! The ground system application: subscribes to every channel of the frontend's packet stream,
//! keeps the latest value of each telemetry parameter, sends commands through the frontend and
//! follows each to the vehicle's acknowledgement. Serves REST (JSON or XML) and a web page.
//!
//! | method and path | what |
//! |---|---|
//! | GET / | live values and a command form |
//! | GET /api/v1/parameters | latest value of every parameter |
//! | GET /api/v1/commands | commands sent, newest last, with their state |
//! | POST /api/v1/commands | `{"command":"SET_MODE","argument":"SCIENCE","apid":200}` (JSON, XML or form) |

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::negotiate::{Format, parse_body};
use crate::api::stream::{self, Frame, FrameWriter, SubscribeRequest};
use crate::bus::ChannelTable;
use crate::codec::{PacketType, PrimaryHeader, SEQUENCE_COUNT_MODULO};
use crate::config::{Config, Direction};
use crate::links::{self, LinkStatus};
use crate::mission::{self, AckStatus, Command, Telemetry};
use crate::time::{format_rfc3339, now_ns};

/// Commands remembered for display.
const COMMAND_HISTORY: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParameterValue {
    pub apid: u16,
    pub channel: String,
    pub name: String,
    pub value: String,
    /// On-board time of the report.
    pub onboard_time: String,
    pub received: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parameters {
    #[serde(default)]
    pub parameter: Vec<ParameterValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandState {
    /// Written to the frontend.
    Sent,
    /// The frontend accepted it for the uplink (its echo came back on the stream).
    Accepted,
    /// The frontend refused it (link down, uplink disabled, ...).
    Refused,
    /// The vehicle executed it.
    Executed,
    /// The vehicle rejected it.
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandEntry {
    pub apid: u16,
    pub sequence_count: u16,
    pub command: String,
    pub state: CommandState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub sent: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commands {
    #[serde(default)]
    pub command: Vec<CommandEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRequest {
    pub command: String,
    #[serde(default)]
    pub argument: String,
    /// Defaults to the first APID of the first command channel.
    #[serde(default)]
    pub apid: Option<u16>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

struct Ground {
    table: ChannelTable,
    crc: bool,
    link: LinkStatus,
    parameters: Mutex<BTreeMap<(u16, &'static str), ParameterValue>>,
    commands: Mutex<CommandLog>,
    writer: tokio::sync::Mutex<Option<FrameWriter>>,
    registry: Registry,
    packets: Counter,
    command_states: Family<StateLabels, Counter>,
    shutdown: CancellationToken,
}

#[derive(Default)]
struct CommandLog {
    entries: VecDeque<CommandEntry>,
    next_count: HashMap<u16, u16>,
}

impl CommandLog {
    fn update(
        &mut self,
        apid: u16,
        sequence_count: u16,
        state: CommandState,
        detail: Option<String>,
    ) -> bool {
        let found = self
            .entries
            .iter_mut()
            .rev()
            .find(|e| e.apid == apid && e.sequence_count == sequence_count);
        match found {
            // An ack can overtake the echo; never step back from a final state.
            Some(entry)
                if !(state == CommandState::Accepted && entry.state != CommandState::Sent) =>
            {
                entry.state = state;
                entry.detail = detail;
                true
            }
            _ => false,
        }
    }
}

pub async fn run(
    config: Config,
    bind: IpAddr,
    http_port: u16,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let http = super::bind(bind, http_port, "HTTP").await?;
    let mut registry = Registry::default();
    let packets = Counter::default();
    let command_states = Family::<StateLabels, Counter>::default();
    let connected = prometheus_client::metrics::gauge::Gauge::default();
    registry.register(
        "vfep_ground_packets",
        "Packets received from the frontend",
        packets.clone(),
    );
    registry.register(
        "vfep_ground_commands",
        "Command state changes, by new state",
        command_states.clone(),
    );
    registry.register(
        "vfep_ground_frontend_connected",
        "1 while connected to the frontend stream",
        connected.clone(),
    );
    let frontend = &config.frontend;
    let ground = Arc::new(Ground {
        table: ChannelTable::new(&config.channels),
        crc: config.vehicle.packet_error_control,
        link: LinkStatus::new(
            "frontend",
            format!("{}:{}", frontend.host, frontend.stream_port),
            connected,
        ),
        parameters: Mutex::default(),
        commands: Mutex::default(),
        writer: tokio::sync::Mutex::default(),
        registry,
        packets,
        command_states,
        shutdown: shutdown.clone(),
    });

    let mut tasks = JoinSet::new();
    let mut subscriber = Subscriber(ground.clone());
    tasks.spawn(async move {
        let ground = subscriber.0.clone();
        links::maintain(&ground.link, &ground.shutdown, &mut subscriber).await;
        Ok(())
    });
    let router = router(ground.clone());
    tasks.spawn(async move { Ok(crate::api::serve_http(http, router, shutdown).await?) });
    tracing::info!(addr = %bind, "ground serving");
    super::supervise(tasks, &ground.shutdown).await
}

fn router(ground: Arc<Ground>) -> Router {
    let metrics = {
        let ground = ground.clone();
        move || crate::metrics::encode(&ground.registry)
    };
    let ready = {
        let ground = ground.clone();
        move || {
            if ground.link.is_connected() {
                Ok(())
            } else {
                Err(format!(
                    "not connected to the frontend at {}",
                    ground.link.address
                ))
            }
        }
    };
    Router::new()
        .route("/", get(|| async { Html(include_str!("ground.html")) }))
        .route("/api/v1/parameters", get(parameters))
        .route("/api/v1/commands", get(commands).post(send_command))
        .with_state(ground)
        .merge(crate::api::ops_routes(metrics, ready))
}

struct Subscriber(Arc<Ground>);

impl links::Session for Subscriber {
    async fn run(&mut self, socket: TcpStream) -> std::io::Result<()> {
        subscribe(&self.0, socket).await
    }
}

/// One connection to the frontend: subscribe to everything, then decode until it closes.
async fn subscribe(ground: &Ground, socket: TcpStream) -> std::io::Result<()> {
    let (mut reader, mut writer) = stream::split(socket);
    writer
        .send(&Frame::Subscribe(SubscribeRequest::default()))
        .await?;
    *ground.writer.lock().await = Some(writer);
    let outcome = async {
        while let Some(frame) = reader.next().await? {
            handle_frame(ground, frame);
        }
        Ok(())
    }
    .await;
    *ground.writer.lock().await = None;
    outcome
}

fn handle_frame(ground: &Ground, frame: Frame) {
    match frame {
        Frame::Packet {
            received_ns,
            packet_type,
            packet,
        } => {
            ground.packets.inc();
            let header = PrimaryHeader::of(&packet);
            if packet_type == PacketType::Telecommand {
                set_state(
                    ground,
                    header.apid,
                    header.sequence_count,
                    CommandState::Accepted,
                    None,
                );
            } else {
                decode(ground, header.apid, &packet, received_ns);
            }
        }
        Frame::Refused { header, reason } => {
            let header = PrimaryHeader::parse(&header);
            set_state(
                ground,
                header.apid,
                header.sequence_count,
                CommandState::Refused,
                Some(reason),
            );
        }
        Frame::Lost(count) => {
            tracing::warn!(count, "the frontend dropped packets for this subscriber")
        }
        Frame::Error(message) => tracing::warn!(%message, "frontend error"),
        Frame::Subscribe(_) | Frame::End => {}
    }
}

fn set_state(
    ground: &Ground,
    apid: u16,
    sequence_count: u16,
    state: CommandState,
    detail: Option<String>,
) {
    let changed = ground.commands.lock().expect("command log lock").update(
        apid,
        sequence_count,
        state,
        detail,
    );
    if changed {
        let label = StateLabels {
            state: format!("{state:?}").to_lowercase(),
        };
        ground.command_states.get_or_create(&label).inc();
    }
}

fn decode(ground: &Ground, apid: u16, packet: &[u8], received_ns: u64) {
    let Some((onboard_ns, telemetry)) = mission::decode_tm(packet, ground.crc) else {
        return;
    };
    match telemetry {
        Telemetry::Housekeeping(hk) => {
            let channel = ground
                .table
                .lookup(apid)
                .map(|id| ground.table.get(id).name.clone())
                .unwrap_or_default();
            let mut parameters = ground.parameters.lock().expect("parameters lock");
            for (name, value) in hk.parameters() {
                parameters.insert(
                    (apid, name),
                    ParameterValue {
                        apid,
                        channel: channel.clone(),
                        name: name.into(),
                        value,
                        onboard_time: format_rfc3339(onboard_ns),
                        received: format_rfc3339(received_ns),
                    },
                );
            }
        }
        Telemetry::Acknowledgement(ack) => {
            let (state, detail) = match ack.status {
                AckStatus::Executed => (CommandState::Executed, None),
                other => (CommandState::Rejected, Some(format!("{other:?}"))),
            };
            set_state(ground, apid, ack.tc_sequence_count, state, detail);
        }
        Telemetry::Load { .. } => {}
    }
}

async fn parameters(State(ground): State<Arc<Ground>>, format: Format) -> Response {
    let parameter = ground
        .parameters
        .lock()
        .expect("parameters lock")
        .values()
        .cloned()
        .collect();
    format.render("parameters", &Parameters { parameter })
}

async fn commands(State(ground): State<Arc<Ground>>, format: Format) -> Response {
    let command = ground
        .commands
        .lock()
        .expect("command log lock")
        .entries
        .iter()
        .cloned()
        .collect();
    format.render("commands", &Commands { command })
}

async fn send_command(
    State(ground): State<Arc<Ground>>,
    format: Format,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let is_form = headers.get(CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .starts_with(b"application/x-www-form-urlencoded")
    });
    let request: Result<CommandRequest, (StatusCode, String)> = match body {
        Ok(body) if is_form => serde_urlencoded::from_bytes(&body)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("form: {e}"))),
        body => parse_body(
            &headers,
            body,
            "application/json, application/xml or application/x-www-form-urlencoded",
        ),
    };
    let request = match request {
        Ok(request) => request,
        Err((status, message)) => return format.problem(status, message),
    };
    let command = match Command::parse(&request.command, &request.argument) {
        Ok(command) => command,
        Err(message) => return format.problem(StatusCode::BAD_REQUEST, message),
    };
    let apid = match request.apid.or_else(|| default_command_apid(&ground.table)) {
        Some(apid) if is_command_apid(&ground.table, apid) => apid,
        Some(apid) => {
            return format.problem(
                StatusCode::BAD_REQUEST,
                format!("APID {apid} is not on a command channel"),
            );
        }
        None => return format.problem(StatusCode::BAD_REQUEST, "no command channel is configured"),
    };
    let mut writer = ground.writer.lock().await;
    let Some(link) = writer.as_mut() else {
        return format.problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to the frontend",
        );
    };
    // Counted, logged and written under the writer lock so sequence counts go out in order.
    let entry = {
        let mut log = ground.commands.lock().expect("command log lock");
        let next = log.next_count.entry(apid).or_insert(0);
        let sequence_count = *next;
        *next = (sequence_count + 1) % SEQUENCE_COUNT_MODULO;
        let entry = CommandEntry {
            apid,
            sequence_count,
            command: format!(
                "{} {}",
                request.command.to_ascii_uppercase(),
                request.argument
            )
            .trim()
            .to_string(),
            state: CommandState::Sent,
            detail: None,
            sent: format_rfc3339(now_ns()),
        };
        if log.entries.len() == COMMAND_HISTORY {
            log.entries.pop_front();
        }
        log.entries.push_back(entry.clone());
        entry
    };
    let packet = mission::command_packet(apid, entry.sequence_count, &command, ground.crc);
    if let Err(e) = link.send_tc(&packet).await {
        set_state(
            &ground,
            apid,
            entry.sequence_count,
            CommandState::Refused,
            Some(e.to_string()),
        );
        return format.problem(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("sending to the frontend: {e}"),
        );
    }
    format.render_with(StatusCode::ACCEPTED, "command", &entry)
}

fn default_command_apid(table: &ChannelTable) -> Option<u16> {
    table
        .iter()
        .find(|(_, c)| c.direction == Direction::Command)
        .and_then(|(_, c)| c.apids.first().copied())
}

fn is_command_apid(table: &ChannelTable, apid: u16) -> bool {
    table
        .lookup(apid)
        .is_some_and(|id| table.get(id).direction == Direction::Command)
}
