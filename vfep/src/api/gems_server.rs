//! GEMS-ASCII over TCP (gemsPort): the frontend as the GEMS device `vfep`.
//!
//! - CON (CONTROL_AND_STATUS, STATUS_ONLY or CONTROL_ONLY) opens a session; PING works without.
//! - GET: `Version`, `TmLink`, `TcLink`, `PacketsIn`, `PacketsOut`, `PacketsDropped`,
//!   `BytesRecorded`, `RecordsDurable`, `Subscribers`, `PlaybackSessions`, `UplinkEnabled`,
//!   `Channels` (a set list); no names means all.
//! - SET: `UplinkEnabled:bool` (the command inhibit); needs control.
//! - DIR: `SyncRecording` (fsync now; returns `RecordsDurable`), `ReconnectLinks`; need control.
//! - DISC closes the connection. Garbage gets `UKN-R|MALFORMED_MESSAGE`.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::gems::{
    self, Body, Framed, Header, Message, Outcome, Parameter, ParseError, Timestamp, code,
};
use crate::roles::frontend::Frontend;
use crate::time::now_ns;

pub const TARGET: &str = "vfep";

pub async fn serve(fe: Arc<Frontend>, listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (socket, peer) = tokio::select! {
            accepted = crate::links::accept(&listener, "GEMS") => accepted,
            _ = fe.shutdown.cancelled() => return Ok(()),
        };
        let fe = fe.clone();
        tokio::spawn(async move {
            if let Err(error) = connection(&fe, socket).await {
                tracing::debug!(%peer, %error, "GEMS connection ended");
            }
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    ControlAndStatus,
    StatusOnly,
    ControlOnly,
}

impl Access {
    fn parse(text: &str) -> Option<Access> {
        match text {
            "CONTROL_AND_STATUS" => Some(Access::ControlAndStatus),
            "STATUS_ONLY" => Some(Access::StatusOnly),
            "CONTROL_ONLY" => Some(Access::ControlOnly),
            _ => None,
        }
    }
}

enum Reply {
    Send(Message),
    Close,
}

async fn connection(fe: &Frontend, mut socket: TcpStream) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(8192);
    let mut access = None;
    loop {
        loop {
            let reply = match gems::frame(&buf) {
                Framed::NeedMore => break,
                Framed::Blank(n) => {
                    buf.advance(n);
                    continue;
                }
                Framed::Garbage(n) => {
                    buf.advance(n);
                    Reply::Send(unknown(
                        Header::anonymous(now()),
                        code::MALFORMED_MESSAGE,
                        "not a GEMS message",
                    ))
                }
                Framed::Message(n) => {
                    let message = buf.split_to(n);
                    match std::str::from_utf8(&message) {
                        Ok(text) => handle(fe, &mut access, text).await,
                        Err(_) => Reply::Send(unknown(
                            Header::anonymous(now()),
                            code::MALFORMED_MESSAGE,
                            "not UTF-8",
                        )),
                    }
                }
            };
            match reply {
                Reply::Send(message) => socket.write_all(message.render().as_bytes()).await?,
                Reply::Close => return Ok(()),
            }
        }
        tokio::select! {
            read = socket.read_buf(&mut buf) => if read? == 0 { return Ok(()) },
            _ = fe.shutdown.cancelled() => return Ok(()),
        }
    }
}

fn now() -> Timestamp {
    Timestamp::from_ns(now_ns())
}

fn unknown(header: Header, result: &str, description: impl Into<String>) -> Message {
    Message {
        header,
        body: Body::Unknown(Outcome::new(result, description)),
    }
}

/// The response a request would get, carrying a failure.
fn refusal(request: &Body, outcome: Outcome) -> Body {
    match request {
        Body::Connect { .. } => Body::ConnectResponse(outcome),
        Body::Ping => Body::PingResponse(outcome),
        Body::Get { .. } => Body::GetResponse {
            outcome,
            parameters: Vec::new(),
        },
        Body::Set { .. } => Body::SetResponse {
            outcome,
            parameters_set: None,
        },
        Body::Directive { name, .. } => Body::DirectiveResponse {
            outcome,
            name: name.clone(),
            values: Vec::new(),
        },
        _ => Body::Unknown(outcome),
    }
}

async fn handle(fe: &Frontend, access: &mut Option<Access>, text: &str) -> Reply {
    let message = match Message::parse(text) {
        Ok(message) => message,
        Err(ParseError::Malformed { header, reason }) => {
            let header = header.map_or_else(|| Header::anonymous(now()), |h| h.reply(now()));
            return Reply::Send(unknown(header, code::MALFORMED_MESSAGE, reason));
        }
        Err(ParseError::Unsupported { header, type_name }) => {
            let reason = format!("{type_name} is not supported");
            return Reply::Send(unknown(
                header.reply(now()),
                code::UNSUPPORTED_MESSAGE,
                reason,
            ));
        }
    };
    let header = message.header.reply(now());
    let body = respond(fe, access, &message).await;
    match body {
        Some(body) => Reply::Send(Message { header, body }),
        None => Reply::Close,
    }
}

/// The response body, or None to close the connection.
async fn respond(fe: &Frontend, access: &mut Option<Access>, message: &Message) -> Option<Body> {
    let request = &message.body;
    let refuse = |result: &str, description: String| {
        Some(refusal(request, Outcome::new(result, description)))
    };
    if message.header.target != TARGET && !matches!(request, Body::Disconnect { .. }) {
        return refuse(
            code::INVALID_TARGET,
            format!("target {:?} is not {TARGET}", message.header.target),
        );
    }
    let can_control = matches!(access, Some(Access::ControlAndStatus | Access::ControlOnly));
    match request {
        Body::Connect { connection_type } => match Access::parse(connection_type) {
            Some(kind) => {
                *access = Some(kind);
                Some(Body::ConnectResponse(Outcome::success()))
            }
            None => refuse(
                code::INVALID_PARAMETER,
                format!("connection type {connection_type:?}"),
            ),
        },
        Body::Disconnect { .. } => None,
        Body::Ping => Some(Body::PingResponse(Outcome::success())),
        _ if access.is_none() => refuse(code::INVALID_STATE, "send CON first".into()),
        Body::Get { names } => {
            let all = device_parameters(fe);
            let mut found = Vec::with_capacity(names.len());
            for name in names {
                match all.iter().find(|p| &p.name == name) {
                    Some(p) => found.push(p.clone()),
                    None => return refuse(code::INVALID_PARAMETER, format!("no parameter {name}")),
                }
            }
            Some(Body::GetResponse {
                outcome: Outcome::success(),
                parameters: if names.is_empty() { all } else { found },
            })
        }
        Body::Set { .. } | Body::Directive { .. } if !can_control => {
            refuse(code::ACCESS_DENIED, "the connection is STATUS_ONLY".into())
        }
        Body::Set { parameters } => {
            // Validate every parameter before applying any.
            let mut uplink = None;
            for p in parameters {
                match (p.name.as_str(), p.type_name.as_str(), p.as_scalar()) {
                    ("UplinkEnabled", "bool", Some(value @ ("true" | "false"))) => {
                        uplink = Some(value == "true")
                    }
                    ("UplinkEnabled", ..) => {
                        return refuse(
                            code::INVALID_RANGE,
                            "UplinkEnabled takes bool true or false".into(),
                        );
                    }
                    (name, ..) if device_parameters(fe).iter().any(|known| known.name == name) => {
                        return refuse(code::INVALID_PARAMETER, format!("{name} is read-only"));
                    }
                    (name, ..) => {
                        return refuse(code::INVALID_PARAMETER, format!("no parameter {name}"));
                    }
                }
            }
            if let Some(enabled) = uplink {
                fe.set_uplink_enabled(enabled);
                tracing::info!(enabled, "uplink set over GEMS");
            }
            Some(Body::SetResponse {
                outcome: Outcome::success(),
                parameters_set: Some(parameters.len() as u32),
            })
        }
        Body::Directive { name, .. } => {
            let values = match name.as_str() {
                "SyncRecording" => match fe.recorder.sync().await {
                    Ok(durable) => vec![Parameter::scalar("RecordsDurable", "long", durable)],
                    Err(e) => return refuse(code::INTERNAL_ERROR, e.to_string()),
                },
                "ReconnectLinks" => {
                    fe.tm_link.request_reconnect();
                    fe.tc_link.request_reconnect();
                    Vec::new()
                }
                other => return refuse(code::INVALID_PARAMETER, format!("no directive {other}")),
            };
            Some(Body::DirectiveResponse {
                outcome: Outcome::success(),
                name: name.clone(),
                values,
            })
        }
        _ => refuse(
            code::UNSUPPORTED_MESSAGE,
            "a device does not take responses".into(),
        ),
    }
}

fn state_name(link: &crate::links::LinkStatus) -> &'static str {
    match link.snapshot().state {
        crate::links::LinkState::Connected => "CONNECTED",
        crate::links::LinkState::Connecting => "CONNECTING",
        crate::links::LinkState::Disconnected => "DISCONNECTED",
    }
}

fn device_parameters(fe: &Frontend) -> Vec<Parameter> {
    let m = &fe.metrics;
    let channels = fe
        .table
        .iter()
        .map(|(_, c)| {
            vec![
                Parameter::scalar("Name", "string", &c.name),
                Parameter::scalar("Direction", "string", c.direction.as_str()),
                Parameter::list("Apids", "int", c.apids.iter().map(u16::to_string).collect()),
            ]
        })
        .collect();
    vec![
        Parameter::scalar("Version", "string", super::rest::VERSION),
        Parameter::scalar("TmLink", "string", state_name(&fe.tm_link)),
        Parameter::scalar("TcLink", "string", state_name(&fe.tc_link)),
        Parameter::scalar("PacketsIn", "long", m.total_in()),
        Parameter::scalar("PacketsOut", "long", m.total_out()),
        Parameter::scalar("PacketsDropped", "long", m.total_dropped()),
        Parameter::scalar("BytesRecorded", "long", m.recorder.bytes.get()),
        Parameter::scalar("RecordsDurable", "long", m.recorder.records_durable.get()),
        Parameter::scalar("Subscribers", "int", m.subscribers.get()),
        Parameter::scalar("PlaybackSessions", "int", m.playback_sessions.get()),
        Parameter::scalar("UplinkEnabled", "bool", fe.uplink_enabled()),
        Parameter::set_list("Channels", channels),
    ]
}
