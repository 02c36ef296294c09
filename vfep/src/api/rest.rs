//! The frontend's REST API. Every resource is served as JSON or XML by the Accept header, from
//! the same structure, so both carry the same data; playback can also be downloaded as the raw
//! packets (`Accept: application/octet-stream`).
//!
//! | method and path | what |
//! |---|---|
//! | GET /api/v1/status | version, start time, uplink enable, links, recording |
//! | GET /api/v1/channels | channels with their packet counts |
//! | GET /api/v1/links | TM and TC link state |
//! | GET /api/v1/counters | packets in/out, drops by reason and channel, gaps per APID |
//! | GET /api/v1/recordings | recording segments |
//! | GET /api/v1/playback?channel=&from=&to=&limit= | recorded packets of a time range |
//! | POST /api/v1/commands | send TCs: JSON `{"packet":"<hex>"}`, XML `<command><packet>`, or raw octets |
//! | GET /api/v1/stream | WebSocket packet stream (see `api::stream`) |

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::negotiate::{Format, MediaType, parse_body};
use crate::bus::ChannelSet;
use crate::codec::{PacketType, PrimaryHeader};
use crate::config::Direction;
use crate::links::{LinkInfo, LinkState, LinkStatus};
use crate::metrics::{DropReason, GaugeGuard, NO_CHANNEL};
use crate::recorder::list_segments;
use crate::recorder::playback::{Selection, spawn_scan};
use crate::roles::frontend::Frontend;
use crate::time::{format_rfc3339, parse_time};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const DEFAULT_PLAYBACK_LIMIT: usize = 1000;
const MAX_PLAYBACK_LIMIT: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub version: String,
    pub started_at: String,
    pub uplink_enabled: bool,
    pub subscribers: i64,
    pub playback_sessions: i64,
    #[serde(default)]
    pub link: Vec<Link>,
    pub recording: Recording,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    pub name: String,
    pub address: String,
    pub state: LinkState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    pub since: String,
    pub connections: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recording {
    pub dir: String,
    pub records: u64,
    pub bytes: u64,
    /// Records covered by the last fsync: these survive a crash.
    pub records_durable: i64,
    pub errors: u64,
    /// Packets not recorded because the recording failed.
    pub records_lost: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    #[serde(default)]
    pub link: Vec<Link>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channels {
    #[serde(default)]
    pub channel: Vec<Channel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    pub name: String,
    pub direction: Direction,
    #[serde(default)]
    pub apid: Vec<u16>,
    pub rate_hz: f64,
    pub packets_in: u64,
    pub packets_out: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    pub packets_in: u64,
    pub packets_out: u64,
    pub packets_dropped: u64,
    /// Non-zero drop counts.
    #[serde(default)]
    pub dropped: Vec<Dropped>,
    /// Every configured APID.
    #[serde(default)]
    pub gaps: Vec<Gaps>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    pub reason: String,
    pub channel: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gaps {
    pub apid: u16,
    pub channel: String,
    pub gaps: u64,
    pub missing_packets: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recordings {
    pub dir: String,
    #[serde(default)]
    pub segment: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    pub name: String,
    pub index: u64,
    pub first_received: String,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packets {
    /// More packets matched than the limit allowed.
    pub truncated: bool,
    #[serde(default)]
    pub packet: Vec<Packet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Packet {
    pub received: String,
    pub direction: PacketType,
    pub apid: u16,
    pub sequence_count: u16,
    pub channel: String,
    /// The whole packet, hex.
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRequest {
    /// One or more concatenated TC packets, hex.
    pub packet: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandReceipt {
    pub received: String,
    #[serde(default)]
    pub accepted: Vec<AcceptedCommand>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcceptedCommand {
    pub apid: u16,
    pub sequence_count: u16,
    pub channel: String,
}

pub fn router(fe: Arc<Frontend>) -> Router {
    let metrics = {
        let fe = fe.clone();
        move || crate::metrics::encode(fe.metrics.registry())
    };
    let ready = {
        let fe = fe.clone();
        move || {
            if fe.shutdown.is_cancelled() {
                Err("shutting down".to_string())
            } else {
                Ok(())
            }
        }
    };
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/channels", get(channels))
        .route("/api/v1/links", get(links))
        .route("/api/v1/counters", get(counters))
        .route("/api/v1/recordings", get(recordings))
        .route("/api/v1/playback", get(playback))
        .route("/api/v1/commands", post(commands))
        .route("/api/v1/stream", get(super::stream::websocket))
        .with_state(fe)
        .merge(super::ops_routes(metrics, ready))
}

fn link_view(status: &LinkStatus) -> Link {
    let LinkInfo {
        state,
        peer,
        since_ns,
        connections,
        last_error,
    } = status.snapshot();
    Link {
        name: status.name.into(),
        address: status.address.clone(),
        state,
        peer: peer.map(|p| p.to_string()),
        since: format_rfc3339(since_ns),
        connections,
        last_error,
    }
}

fn channel_name(fe: &Frontend, channel: Option<u16>) -> String {
    channel.map_or(NO_CHANNEL.into(), |id| fe.table.get(id).name.clone())
}

async fn status(State(fe): State<Arc<Frontend>>, format: Format) -> Response {
    let recorder = &fe.metrics.recorder;
    let status = Status {
        version: VERSION.into(),
        started_at: format_rfc3339(fe.started_ns),
        uplink_enabled: fe.uplink_enabled(),
        subscribers: fe.metrics.subscribers.get(),
        playback_sessions: fe.metrics.playback_sessions.get(),
        link: vec![link_view(&fe.tm_link), link_view(&fe.tc_link)],
        recording: Recording {
            dir: fe.recording_dir().display().to_string(),
            records: recorder.records.get(),
            bytes: recorder.bytes.get(),
            records_durable: recorder.records_durable.get(),
            errors: recorder.errors.get(),
            records_lost: recorder.records_lost.get(),
        },
    };
    format.render("status", &status)
}

async fn channels(State(fe): State<Arc<Frontend>>, format: Format) -> Response {
    let channel = fe
        .table
        .iter()
        .map(|(id, c)| {
            let (packets_in, packets_out) = fe.metrics.channel_totals(id);
            Channel {
                name: c.name.clone(),
                direction: c.direction,
                apid: c.apids.clone(),
                rate_hz: c.rate_hz,
                packets_in,
                packets_out,
            }
        })
        .collect();
    format.render("channels", &Channels { channel })
}

async fn links(State(fe): State<Arc<Frontend>>, format: Format) -> Response {
    let link = vec![link_view(&fe.tm_link), link_view(&fe.tc_link)];
    format.render("links", &Links { link })
}

async fn counters(State(fe): State<Arc<Frontend>>, format: Format) -> Response {
    let metrics = &fe.metrics;
    let counters = Counters {
        packets_in: metrics.total_in(),
        packets_out: metrics.total_out(),
        packets_dropped: metrics.total_dropped(),
        dropped: metrics
            .drops()
            .map(|(reason, channel, count)| Dropped {
                reason: reason.as_str().into(),
                channel: channel_name(&fe, channel),
                count,
            })
            .collect(),
        gaps: metrics
            .gaps()
            .map(|(apid, gaps, missing_packets)| Gaps {
                apid,
                channel: channel_name(&fe, fe.table.lookup(apid)),
                gaps,
                missing_packets,
            })
            .collect(),
    };
    format.render("counters", &counters)
}

async fn recordings(State(fe): State<Arc<Frontend>>, format: Format) -> Response {
    let dir = fe.recording_dir().to_owned();
    let listed = tokio::task::spawn_blocking(move || list_segments(&dir)).await;
    match listed {
        Ok(Ok(segments)) => {
            let segment = segments
                .iter()
                .map(|s| Segment {
                    name: s.file_name(),
                    index: s.index,
                    first_received: format_rfc3339(s.first_ns),
                    size_bytes: s.size,
                })
                .collect();
            let dir = fe.recording_dir().display().to_string();
            format.render("recordings", &Recordings { dir, segment })
        }
        Ok(Err(e)) => format.problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => format.problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct PlaybackQuery {
    pub channel: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<usize>,
}

/// Recorded packets of a channel (all channels when unset) received in `[from, to)`.
async fn playback(
    State(fe): State<Arc<Frontend>>,
    headers: HeaderMap,
    query: Result<Query<PlaybackQuery>, QueryRejection>,
) -> Response {
    let offered = [MediaType::Json, MediaType::Xml, MediaType::OctetStream];
    let media = match Format::from_headers(&headers, &offered) {
        Ok(media) => media,
        Err(rejection) => return rejection.into_response(),
    };
    let format = Format(if media == MediaType::OctetStream {
        MediaType::Json
    } else {
        media
    });
    // A bad query gets the same error body as every other bad request.
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return format.problem(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let names: Vec<String> = query.channel.iter().cloned().collect();
    let selection = ChannelSet::named(&fe.table, &names).and_then(|channels| {
        let apids: Vec<u16> = fe
            .table
            .iter()
            .filter(|(id, _)| channels.contains(*id))
            .flat_map(|(_, c)| c.apids.iter().copied())
            .collect();
        let from = query.from.as_deref().map_or(Ok(0), parse_time)?;
        let to = query.to.as_deref().map_or(Ok(u64::MAX), parse_time)?;
        Selection::new(&apids, from, to)
    });
    let selection = match selection {
        Ok(selection) => selection,
        Err(message) => return format.problem(StatusCode::BAD_REQUEST, message),
    };
    let dir = fe.recording_dir().to_owned();
    if media == MediaType::OctetStream {
        let session = GaugeGuard::hold(&fe.metrics.playback_sessions);
        let chunks = spawn_scan(dir, selection, 256 * 1024, usize::MAX);
        // The stream owns the guard: the session lasts as long as the download.
        let body = futures::stream::unfold((chunks, session), |(mut chunks, session)| async move {
            let chunk = chunks.recv().await?;
            Some((chunk.map(|c| Bytes::from(c.data)), (chunks, session)))
        });
        let file = format!(
            "attachment; filename=\"{}.ccsds\"",
            query.channel.as_deref().unwrap_or("all")
        );
        return (
            [
                (CONTENT_TYPE, MediaType::OctetStream.mime().to_string()),
                (CONTENT_DISPOSITION, file),
            ],
            Body::from_stream(body),
        )
            .into_response();
    }
    let limit = query
        .limit
        .unwrap_or(DEFAULT_PLAYBACK_LIMIT)
        .min(MAX_PLAYBACK_LIMIT);
    // One more than the limit tells whether the result was cut.
    let mut chunks = spawn_scan(dir, selection, 256 * 1024, limit + 1);
    let mut packet = Vec::new();
    while let Some(chunk) = chunks.recv().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => return format.problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        for (record, bytes) in chunk.iter() {
            let header = PrimaryHeader::of(bytes);
            packet.push(Packet {
                received: format_rfc3339(record.received_ns),
                direction: record.packet_type,
                apid: header.apid,
                sequence_count: header.sequence_count,
                channel: channel_name(&fe, fe.table.lookup(header.apid)),
                data: hex::encode(bytes),
            });
        }
    }
    let truncated = packet.len() > limit;
    packet.truncate(limit);
    format.render("packets", &Packets { truncated, packet })
}

/// Sends TCs; 202 when they are on their way to the vehicle.
async fn commands(
    State(fe): State<Arc<Frontend>>,
    format: Format,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let is_raw = headers.get(CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .starts_with(MediaType::OctetStream.mime().as_bytes())
    });
    let packets = if is_raw {
        match body {
            Ok(body) => body,
            Err(rejection) => return format.problem(rejection.status(), rejection.body_text()),
        }
    } else {
        let accepted =
            "application/json, application/xml or application/octet-stream (raw packets)";
        let request: CommandRequest = match parse_body(&headers, body, accepted) {
            Ok(request) => request,
            Err((status, message)) => return format.problem(status, message),
        };
        match hex::decode(request.packet.trim()) {
            Ok(bytes) => Bytes::from(bytes),
            Err(e) => return format.problem(StatusCode::BAD_REQUEST, format!("packet: {e}")),
        }
    };
    match fe.submit_tcs(packets).await {
        Ok(receipt) => {
            let receipt = CommandReceipt {
                received: format_rfc3339(receipt.received_ns),
                accepted: receipt
                    .packets
                    .iter()
                    .map(|tc| AcceptedCommand {
                        apid: tc.apid,
                        sequence_count: tc.sequence_count,
                        channel: fe.table.get(tc.channel).name.clone(),
                    })
                    .collect(),
            };
            format.render_with(StatusCode::ACCEPTED, "receipt", &receipt)
        }
        Err(rejected) => {
            let status = match rejected.reason {
                DropReason::UplinkDown | DropReason::UplinkBusy => StatusCode::SERVICE_UNAVAILABLE,
                DropReason::UplinkInhibited => StatusCode::CONFLICT,
                _ => StatusCode::BAD_REQUEST,
            };
            format.problem(status, rejected.to_string())
        }
    }
}
