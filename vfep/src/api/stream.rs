//! The packet stream for subscribers: live TM/TC, playback, and TC submission. Served framed
//! over TCP (streamPort) and over WebSocket (`/api/v1/stream` on the HTTP port).
//!
//! Every frame is a 4-octet big-endian length of what follows, then a kind octet:
//!
//! | kind | direction | body |
//! |---|---|---|
//! | 1 SUBSCRIBE | client | JSON `{"channels":[..], "from":.., "to":.., "pace":"fast"\|"original"}` |
//! | 2 PACKET | both | 8-octet receive time (ns since epoch), 1-octet direction (0 TM, 1 TC), the packet |
//! | 3 END | server | playback complete; the server closes |
//! | 4 LOST | server | 8-octet count of packets of its channels published while this subscriber lagged |
//! | 5 ERROR | server | UTF-8 text: a bad request |
//! | 6 REFUSED | server | the refused TC's 6-octet primary header, then the reason as UTF-8 |
//!
//! A connection receives nothing until it subscribes; it may send TCs (PACKET frames, direction
//! and time ignored) at any time. `from`/`to` (RFC 3339 or ns) make the subscription a playback
//! of the recording instead of live data. Over WebSocket the subscription is the query string
//! (`channels=a,b&from=..&to=..&pace=..`), each client message is one frame, and a server
//! message may hold several.

use std::io;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;

use super::negotiate::{Format, MediaType};
use axum::response::Response;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{SinkExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio_util::codec::{Decoder, FramedRead, LengthDelimitedCodec};

use crate::bus::{ChannelSet, LiveEvent};
use crate::codec::{MAX_PACKET_LEN, PRIMARY_HEADER_LEN, PacketType};
use crate::metrics::{DropReason, GaugeGuard};
use crate::recorder::playback::{self, Pacer, Selection};
use crate::roles::frontend::Frontend;
use crate::time::parse_time;

pub mod kind {
    pub const SUBSCRIBE: u8 = 1;
    pub const PACKET: u8 = 2;
    pub const END: u8 = 3;
    pub const LOST: u8 = 4;
    pub const ERROR: u8 = 5;
    pub const REFUSED: u8 = 6;
}

/// Kind, time and direction octets before a packet.
const PACKET_PREFIX: usize = 1 + 8 + 1;
const MAX_FRAME: usize = PACKET_PREFIX + MAX_PACKET_LEN;
/// Playback hands over this much at a time.
const PLAYBACK_CHUNK: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pace {
    /// As fast as the subscriber reads.
    #[default]
    Fast,
    /// With the spacing the packets were received with.
    Original,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    /// Channel names; empty means all.
    #[serde(default)]
    pub channels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default)]
    pub pace: Pace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Subscribe(SubscribeRequest),
    Packet {
        received_ns: u64,
        packet_type: PacketType,
        packet: Bytes,
    },
    End,
    Lost(u64),
    Error(String),
    /// A TC the frontend did not accept, identified by its primary header.
    Refused {
        header: [u8; PRIMARY_HEADER_LEN],
        reason: String,
    },
}

pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// Appends a PACKET frame; the hot path, so no `Frame` is built.
pub fn put_packet(out: &mut BytesMut, received_ns: u64, packet_type: PacketType, packet: &[u8]) {
    out.reserve(4 + PACKET_PREFIX + packet.len());
    out.put_u32((PACKET_PREFIX + packet.len()) as u32);
    out.put_u8(kind::PACKET);
    out.put_u64(received_ns);
    out.put_u8(u8::from(packet_type == PacketType::Telecommand));
    out.put_slice(packet);
}

impl Frame {
    pub fn encode(&self, out: &mut BytesMut) {
        let mut body = |kind: u8, payload: &[u8]| {
            out.put_u32(1 + payload.len() as u32);
            out.put_u8(kind);
            out.put_slice(payload);
        };
        match self {
            Frame::Subscribe(request) => body(
                kind::SUBSCRIBE,
                &serde_json::to_vec(request).expect("a request serialises"),
            ),
            Frame::Packet {
                received_ns,
                packet_type,
                packet,
            } => put_packet(out, *received_ns, *packet_type, packet),
            Frame::End => body(kind::END, &[]),
            Frame::Lost(count) => body(kind::LOST, &count.to_be_bytes()),
            Frame::Error(text) => body(kind::ERROR, text.as_bytes()),
            Frame::Refused { header, reason } => {
                body(kind::REFUSED, &[&header[..], reason.as_bytes()].concat())
            }
        }
    }

    /// Decodes a frame body (the length already stripped).
    pub fn decode(mut body: BytesMut) -> Result<Frame, String> {
        if body.is_empty() {
            return Err("empty frame".into());
        }
        let kind = body.get_u8();
        match kind {
            kind::SUBSCRIBE => serde_json::from_slice(&body)
                .map(Frame::Subscribe)
                .map_err(|e| format!("SUBSCRIBE: {e}")),
            kind::PACKET if body.len() > 9 => Ok(Frame::Packet {
                received_ns: body.get_u64(),
                packet_type: if body.get_u8() == 0 {
                    PacketType::Telemetry
                } else {
                    PacketType::Telecommand
                },
                packet: body.freeze(),
            }),
            kind::END => Ok(Frame::End),
            kind::LOST if body.len() == 8 => Ok(Frame::Lost(body.get_u64())),
            kind::ERROR => Ok(Frame::Error(String::from_utf8_lossy(&body).into_owned())),
            kind::REFUSED if body.len() >= PRIMARY_HEADER_LEN => {
                let header = body.split_to(PRIMARY_HEADER_LEN);
                Ok(Frame::Refused {
                    header: header[..].try_into().expect("split to the header length"),
                    reason: String::from_utf8_lossy(&body).into_owned(),
                })
            }
            _ => Err(format!(
                "bad frame of kind {kind} and {} octets",
                body.len() + 1
            )),
        }
    }
}

/// What a session writes to: a TCP socket or a WebSocket.
trait FrameSink: Send {
    fn send(&mut self, frames: Bytes) -> impl Future<Output = io::Result<()>> + Send;
}

impl FrameSink for OwnedWriteHalf {
    async fn send(&mut self, frames: Bytes) -> io::Result<()> {
        self.write_all(&frames).await
    }
}

struct WsSink(futures::stream::SplitSink<WebSocket, Message>);

impl FrameSink for WsSink {
    async fn send(&mut self, frames: Bytes) -> io::Result<()> {
        self.0
            .send(Message::Binary(frames))
            .await
            .map_err(io::Error::other)
    }
}

/// Why an incoming message gave no frame.
enum BadInput {
    /// A whole frame (or WebSocket message) that does not decode: answered, and the session
    /// goes on.
    Frame(String),
    /// The byte stream's framing is lost: answered, and the session closes.
    Framing(String),
}

/// A session from connect to close: TCs in at any time, then live packets or a playback once
/// subscribed.
async fn run_session(
    fe: &Frontend,
    mut sink: impl FrameSink,
    mut incoming: impl Stream<Item = Result<Frame, BadInput>> + Unpin,
    mut subscribe: Option<SubscribeRequest>,
) -> io::Result<()> {
    let mut live = None;
    let mut out = BytesMut::new();
    let mut per_channel = vec![0u64; fe.table.len()];
    loop {
        if let Some(request) = subscribe.take() {
            match Subscription::parse(fe, &request) {
                Err(message) => send_frame(&mut sink, &Frame::Error(message)).await?,
                Ok(Subscription::Live(channels)) => {
                    let guard = GaugeGuard::hold(&fe.metrics.subscribers);
                    live = Some((fe.bus.subscribe_live(channels), guard));
                }
                Ok(Subscription::Playback(selection, pace)) => {
                    return play(fe, &mut sink, selection, pace).await;
                }
            }
        }
        tokio::select! {
            event = next_live(&mut live) => match event {
                LiveEvent::Batch(batch) => {
                    let (subscription, _) = live.as_ref().expect("events come from a subscription");
                    for packet in &batch.packets {
                        if subscription.wants(packet.channel) {
                            put_packet(&mut out, batch.received_ns, batch.packet_type, batch.bytes(packet));
                            per_channel[usize::from(packet.channel)] += 1;
                        }
                    }
                    sink.send(out.split().freeze()).await?;
                    for (channel, count) in per_channel.iter_mut().enumerate() {
                        if *count > 0 {
                            fe.metrics.packets_out(channel as u16, std::mem::take(count));
                        }
                    }
                }
                LiveEvent::Lost(by_channel) => {
                    for &(channel, count) in &by_channel {
                        fe.metrics.dropped(DropReason::SubscriberLag, Some(channel), count);
                    }
                    let total = by_channel.iter().map(|(_, count)| count).sum();
                    send_frame(&mut sink, &Frame::Lost(total)).await?;
                }
                LiveEvent::Closed => return Ok(()),
            },
            frame = incoming.next() => match frame {
                None => return Ok(()),
                Some(Err(BadInput::Frame(message))) => {
                    send_frame(&mut sink, &Frame::Error(message)).await?;
                }
                Some(Err(BadInput::Framing(message))) => {
                    return send_frame(&mut sink, &Frame::Error(message)).await;
                }
                Some(Ok(Frame::Packet { packet, .. })) => {
                    let header = packet.get(..PRIMARY_HEADER_LEN).map(|h| <[u8; PRIMARY_HEADER_LEN]>::try_from(h).expect("6 octets"));
                    if let Err(rejected) = fe.submit_tcs(packet).await {
                        let reason = rejected.to_string();
                        let frame = match header {
                            Some(header) => Frame::Refused { header, reason },
                            None => Frame::Error(reason),
                        };
                        send_frame(&mut sink, &frame).await?;
                    }
                }
                Some(Ok(Frame::Subscribe(request))) if live.is_none() => subscribe = Some(request),
                Some(Ok(other)) => {
                    let message = format!("unexpected {other:?}");
                    send_frame(&mut sink, &Frame::Error(message)).await?;
                }
            },
            _ = fe.shutdown.cancelled() => return Ok(()),
        }
    }
}

async fn next_live(live: &mut Option<(crate::bus::LiveSubscription, GaugeGuard)>) -> LiveEvent {
    match live {
        Some((subscription, _)) => subscription.recv().await,
        None => std::future::pending().await,
    }
}

async fn send_frame(sink: &mut impl FrameSink, frame: &Frame) -> io::Result<()> {
    let mut out = BytesMut::new();
    frame.encode(&mut out);
    sink.send(out.freeze()).await
}

enum Subscription {
    Live(ChannelSet),
    Playback(Selection, Pace),
}

impl Subscription {
    fn parse(fe: &Frontend, request: &SubscribeRequest) -> Result<Subscription, String> {
        let channels = ChannelSet::named(&fe.table, &request.channels)?;
        if request.from.is_none() && request.to.is_none() {
            return Ok(Subscription::Live(channels));
        }
        let time = |t: &Option<String>, default| t.as_deref().map_or(Ok(default), parse_time);
        let apids: Vec<u16> = fe
            .table
            .iter()
            .filter(|(id, _)| channels.contains(*id))
            .flat_map(|(_, c)| c.apids.iter().copied())
            .collect();
        let selection = Selection::new(
            &apids,
            time(&request.from, 0)?,
            time(&request.to, u64::MAX)?,
        )?;
        Ok(Subscription::Playback(selection, request.pace))
    }
}

async fn play(
    fe: &Frontend,
    sink: &mut impl FrameSink,
    selection: Selection,
    pace: Pace,
) -> io::Result<()> {
    let _session = GaugeGuard::hold(&fe.metrics.playback_sessions);
    let mut chunks = playback::spawn_scan(
        fe.recording_dir().to_owned(),
        selection,
        PLAYBACK_CHUNK,
        usize::MAX,
    );
    let mut pacer = Pacer::default();
    let mut out = BytesMut::new();
    while let Some(chunk) = chunks.recv().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => return send_frame(sink, &Frame::Error(format!("playback: {e}"))).await,
        };
        for (record, packet) in chunk.iter() {
            if pace == Pace::Original {
                if !out.is_empty() {
                    sink.send(out.split().freeze()).await?;
                }
                pacer.wait(record.received_ns).await;
            }
            put_packet(&mut out, record.received_ns, record.packet_type, packet);
        }
        if !out.is_empty() {
            sink.send(out.split().freeze()).await?;
        }
    }
    send_frame(sink, &Frame::End).await
}

/// Accepts stream connections until shutdown.
pub async fn serve_tcp(fe: Arc<Frontend>, listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (socket, peer) = tokio::select! {
            accepted = crate::links::accept(&listener, "stream") => accepted,
            _ = fe.shutdown.cancelled() => return Ok(()),
        };
        crate::links::configure(&socket);
        let fe = fe.clone();
        tokio::spawn(async move {
            let (reader, writer) = socket.into_split();
            let incoming = FramedRead::new(reader, codec()).map(|body| {
                let body = body.map_err(|e| BadInput::Framing(e.to_string()))?;
                Frame::decode(body).map_err(BadInput::Frame)
            });
            if let Err(error) = run_session(&fe, writer, incoming, None).await {
                tracing::debug!(%peer, %error, "stream session ended");
            }
        });
    }
}

/// The WebSocket form of a subscription.
#[derive(Debug, Default, Deserialize)]
pub struct StreamQuery {
    /// Comma-separated channel names.
    pub channels: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    #[serde(default)]
    pub pace: Pace,
}

/// `GET /api/v1/stream` upgrades to a WebSocket session; without query parameters it is a
/// live subscription to every channel.
pub async fn websocket(
    State(fe): State<Arc<Frontend>>,
    query: Result<Query<StreamQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let problem = |status, message| Format(MediaType::Json).problem(status, message);
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return problem(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return problem(rejection.status(), rejection.body_text()),
    };
    let request = SubscribeRequest {
        channels: query
            .channels
            .map(|c| {
                c.split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        from: query.from,
        to: query.to,
        pace: query.pace,
    };
    upgrade.on_upgrade(move |socket| async move {
        let (sink, messages) = socket.split();
        let incoming = messages.filter_map(|message| async move {
            // WebSocket messages keep their boundaries: a bad one never loses the framing.
            match message {
                Ok(Message::Binary(data)) => Some(decode_one(data).map_err(BadInput::Frame)),
                Ok(Message::Close(_)) | Err(_) => None,
                // Control frames; the WebSocket layer answers pings itself.
                Ok(Message::Ping(_) | Message::Pong(_)) => None,
                Ok(_) => Some(Err(BadInput::Frame("send binary frames".into()))),
            }
        });
        if let Err(error) = run_session(&fe, WsSink(sink), Box::pin(incoming), Some(request)).await
        {
            tracing::debug!(%error, "websocket session ended");
        }
    })
}

/// One whole frame, length prefix included.
pub fn decode_one(data: Bytes) -> Result<Frame, String> {
    let mut buf = BytesMut::from(&data[..]);
    match codec().decode(&mut buf) {
        Ok(Some(body)) if buf.is_empty() => Frame::decode(body),
        _ => Err("a message must hold exactly one frame".into()),
    }
}

/// The client side, used by the ground role and the benchmark.
pub struct FrameReader(FramedRead<OwnedReadHalf, LengthDelimitedCodec>);

impl FrameReader {
    pub async fn next(&mut self) -> io::Result<Option<Frame>> {
        match self.0.next().await {
            None => Ok(None),
            Some(body) => Frame::decode(body?)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }
}

pub struct FrameWriter {
    writer: OwnedWriteHalf,
    out: BytesMut,
}

impl FrameWriter {
    pub async fn send(&mut self, frame: &Frame) -> io::Result<()> {
        frame.encode(&mut self.out);
        let frames = self.out.split().freeze();
        self.writer.write_all(&frames).await
    }

    pub async fn send_tc(&mut self, packet: &[u8]) -> io::Result<()> {
        put_packet(&mut self.out, 0, PacketType::Telecommand, packet);
        let frames = self.out.split().freeze();
        self.writer.write_all(&frames).await
    }
}

pub async fn connect(addr: impl ToSocketAddrs) -> io::Result<(FrameReader, FrameWriter)> {
    let socket = TcpStream::connect(addr).await?;
    Ok(split(socket))
}

pub fn split(socket: TcpStream) -> (FrameReader, FrameWriter) {
    crate::links::configure(&socket);
    let (reader, writer) = socket.into_split();
    (
        FrameReader(FramedRead::with_capacity(reader, codec(), 256 * 1024)),
        FrameWriter {
            writer,
            out: BytesMut::new(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Subscribe(SubscribeRequest {
                channels: vec!["hk".into()],
                from: Some("0".into()),
                to: None,
                pace: Pace::Original,
            }),
            Frame::Packet {
                received_ns: 7,
                packet_type: PacketType::Telecommand,
                packet: Bytes::from_static(&[0x18, 0, 0xC0, 0, 0, 0, 1]),
            },
            Frame::End,
            Frame::Lost(12),
            Frame::Error("no".into()),
            Frame::Refused {
                header: [0x18, 0, 0xC0, 0, 0, 0],
                reason: "uplink_down: TC link down".into(),
            },
        ];
        for frame in frames {
            let mut out = BytesMut::new();
            frame.encode(&mut out);
            assert_eq!(decode_one(out.freeze()), Ok(frame));
        }
        assert!(decode_one(Bytes::from_static(&[0, 0, 0, 1, 9])).is_err());
    }
}
