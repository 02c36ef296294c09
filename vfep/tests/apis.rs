//! The frontend's APIs over real sockets: REST in JSON and XML, GEMS-ASCII over TCP, and the
//! WebSocket packet stream.

mod common;

use std::fmt::Debug;

use bytes::BytesMut;
use common::{
    COMMAND_APID, FakeVehicle, HK_APIDS, Setup, eventually, get_json, get_xml, http, tc, tm,
    wait_ready,
};
use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::codec::Decoder;
use vfep::api::rest::{Channels, CommandReceipt, Counters, Links, Packets, Recordings, Status};
use vfep::api::stream::{Frame, codec};
use vfep::gems::{self, Body, Framed, Message};

/// A frontend with both links held open by a scripted vehicle that sent `packets` TM packets.
async fn quiet_frontend(dir: &std::path::Path, packets: u16) -> common::Linked {
    let mut quiet = common::linked_frontend(dir).await;
    let setup = &quiet.setup;
    for n in 0..packets {
        quiet
            .tm
            .write_all(&tm(HK_APIDS[usize::from(n % 2)], n / 2, b"status"))
            .await
            .unwrap();
    }
    eventually("the packets durable and both links up", || async {
        let status: Status = get_json(&setup.frontend_url("/api/v1/status")).await?;
        let links_up = status
            .link
            .iter()
            .all(|l| l.state == vfep::links::LinkState::Connected);
        (links_up && status.recording.records_durable == i64::from(packets)).then_some(())
    })
    .await;
    quiet
}

async fn same_in_both<T: DeserializeOwned + PartialEq + Debug>(setup: &Setup, path: &str) -> T {
    let url = setup.frontend_url(path);
    let json: T = get_json(&url).await.expect(path);
    let xml: T = get_xml(&url).await;
    assert_eq!(json, xml, "{path}");
    json
}

#[tokio::test]
async fn xml_and_json_responses_carry_the_same_data() {
    let dir = tempfile::tempdir().unwrap();
    let quiet = quiet_frontend(dir.path(), 6).await;
    let setup = &quiet.setup;

    let status: Status = same_in_both(setup, "/api/v1/status").await;
    assert_eq!(status.recording.records, 6);
    let channels: Channels = same_in_both(setup, "/api/v1/channels").await;
    assert_eq!(channels.channel[0].apid, HK_APIDS);
    assert_eq!(channels.channel[0].packets_in, 6);
    let links: Links = same_in_both(setup, "/api/v1/links").await;
    assert_eq!(links.link.len(), 2);
    let counters: Counters = same_in_both(setup, "/api/v1/counters").await;
    assert_eq!(counters.gaps.len(), 3);
    let recordings: Recordings = same_in_both(setup, "/api/v1/recordings").await;
    assert_eq!(recordings.segment.len(), 1);
    let packets: Packets = same_in_both(setup, "/api/v1/playback?channel=housekeeping").await;
    assert_eq!(packets.packet.len(), 6);
    assert_eq!(packets.packet[5].sequence_count, 2);

    // Errors are negotiated too, and unknown types are refused.
    let problem: vfep::api::negotiate::Problem =
        get_xml(&setup.frontend_url("/api/v1/playback?channel=nope")).await;
    assert_eq!(problem.status, 400);
    // A query that does not parse at all, too.
    let problem: vfep::api::negotiate::Problem =
        get_xml(&setup.frontend_url("/api/v1/playback?limit=-1")).await;
    assert_eq!(problem.status, 400);
    assert!(problem.message.contains("limit"), "{problem:?}");
    let html = http()
        .get(setup.frontend_url("/api/v1/status"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(html.status(), 406);

    // A command in XML gets an XML receipt.
    let body = format!(
        "<command><packet>{}</packet></command>",
        hex::encode(tc(COMMAND_APID, 3, &[1]))
    );
    let response = http()
        .post(setup.frontend_url("/api/v1/commands"))
        .header("Content-Type", "application/xml")
        .header("Accept", "application/xml")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let receipt: CommandReceipt = quick_xml::de::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(
        (receipt.accepted[0].apid, receipt.accepted[0].sequence_count),
        (COMMAND_APID, 3)
    );
}

/// Found by a user: 404 and 405 had empty bodies, 413 a plain-text one, and a body of an
/// unsupported type was a 400 "JSON body" error. Every error is a problem document now.
#[tokio::test]
async fn every_error_is_a_problem_document_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let quiet = quiet_frontend(dir.path(), 0).await;
    let url = |path: &str| quiet.setup.frontend_url(path);
    async fn problem_of(response: reqwest::Response) -> vfep::api::negotiate::Problem {
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"].clone();
        assert_eq!(content_type, "application/json", "{status}");
        let problem: vfep::api::negotiate::Problem = response.json().await.unwrap();
        assert_eq!(problem.status, status);
        problem
    }

    let missing = problem_of(http().get(url("/api/v1/nope")).send().await.unwrap()).await;
    assert_eq!(missing.status, 404);
    assert!(missing.message.contains("/api/v1/nope"), "{missing:?}");
    // Accept text/plain: still a 404, not a 406.
    let missing = http()
        .get(url("/api/v2/status"))
        .header("Accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(problem_of(missing).await.status, 404);
    // Found by a user: an inverted range was an empty 200, like an empty recording.
    let inverted = http()
        .get(url(
            "/api/v1/playback?from=2026-12-04T10:00:00Z&to=2026-12-04T09:00:00Z",
        ))
        .send()
        .await
        .unwrap();
    let inverted = problem_of(inverted).await;
    assert_eq!(inverted.status, 400);
    assert!(
        inverted
            .message
            .starts_with("from (2026-12-04T10:00:00.000000000Z) is after to"),
        "{inverted:?}"
    );
    let bad_pace = http()
        .get(url("/api/v1/stream?pace=bogus"))
        .send()
        .await
        .unwrap();
    let bad_pace = problem_of(bad_pace).await;
    assert_eq!(bad_pace.status, 400);
    assert!(bad_pace.message.contains("pace"), "{bad_pace:?}");
    let not_upgraded = http().get(url("/api/v1/stream")).send().await.unwrap();
    assert_eq!(problem_of(not_upgraded).await.status, 400);

    let wrong_method = http().delete(url("/api/v1/status")).send().await.unwrap();
    assert_eq!(wrong_method.headers()["allow"], "GET,HEAD");
    let wrong_method = problem_of(wrong_method).await;
    assert_eq!(wrong_method.status, 405);
    assert!(wrong_method.message.contains("DELETE"), "{wrong_method:?}");

    let commands = url("/api/v1/commands");
    let too_large = http()
        .post(&commands)
        .header("Content-Type", "application/json")
        .body(vec![b' '; 3 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(problem_of(too_large).await.status, 413);
    let plain = http()
        .post(&commands)
        .header("Content-Type", "text/plain")
        .body("packet=00")
        .send()
        .await
        .unwrap();
    let plain = problem_of(plain).await;
    assert_eq!(plain.status, 415);
    assert!(
        plain.message.contains("application/octet-stream"),
        "{plain:?}"
    );
    // Parameters of a media type do not matter.
    let json = http()
        .post(&commands)
        .header("Content-Type", "application/json; charset=utf-8")
        .body(format!(
            "{{\"packet\":\"{}\"}}",
            hex::encode(tc(COMMAND_APID, 4, &[1]))
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 202);
}

/// Found by a user: `SUBSCRIBE {"from":5}` closed the connection, although a bad SUBSCRIBE is
/// answered and the session goes on. Only lost framing (a frame over the length limit) closes.
#[tokio::test]
async fn a_frame_that_does_not_decode_is_answered_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let quiet = quiet_frontend(dir.path(), 0).await;
    let mut socket = TcpStream::connect(("127.0.0.1", quiet.setup.stream_port))
        .await
        .unwrap();
    let frame = |kind: u8, body: &[u8]| {
        let mut out = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        out.push(kind);
        out.extend_from_slice(body);
        out
    };
    let mut buf = BytesMut::new();
    async fn next_frame(socket: &mut TcpStream, buf: &mut BytesMut) -> Option<Frame> {
        // One decoder per frame: the bytes of the previous one are all consumed.
        let mut decoder = codec();
        loop {
            if let Some(body) = decoder.decode(buf).unwrap() {
                return Some(Frame::decode(body).unwrap());
            }
            if socket.read_buf(buf).await.unwrap() == 0 {
                return None;
            }
        }
    }
    for bad in [
        frame(1, br#"{"from":5}"#),
        frame(1, br#"{"from":"2","to":"1"}"#),
        frame(1, b"not json"),
        frame(9, b"unknown kind"),
        frame(2, b"short"),
    ] {
        socket.write_all(&bad).await.unwrap();
        let answer = next_frame(&mut socket, &mut buf).await;
        assert!(matches!(answer, Some(Frame::Error(_))), "{answer:?}");
    }
    // Still open: a good SUBSCRIBE of a playback of nothing ends with END.
    socket
        .write_all(&frame(1, br#"{"from":"0","to":"1"}"#))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut socket, &mut buf).await, Some(Frame::End));

    // Lost framing closes, with the reason.
    let mut socket = TcpStream::connect(("127.0.0.1", quiet.setup.stream_port))
        .await
        .unwrap();
    socket.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let answer = next_frame(&mut socket, &mut buf).await;
    assert!(matches!(answer, Some(Frame::Error(_))), "{answer:?}");
    assert_eq!(next_frame(&mut socket, &mut buf).await, None);
}

/// Found by a user: with its file descriptors used up, a failed accept on the stream or GEMS
/// port ended the frontend (exit 1). It is logged and retried, and service resumes.
#[tokio::test]
async fn running_out_of_file_descriptors_does_not_end_the_frontend() {
    let dir = tempfile::tempdir().unwrap();
    let common::Linked {
        setup,
        mut frontend,
        vehicle: _vehicle,
        tm: _tm,
        tc: _tc,
    } = common::linked_frontend(dir.path()).await;
    let limit = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", frontend.child.id()))
        .arg("--nofile=64:64")
        .status()
        .expect("run prlimit (util-linux)");
    assert!(limit.success());

    let mut held = Vec::new();
    for _ in 0..100 {
        for port in [setup.stream_port, setup.gems_port] {
            if let Ok(socket) = TcpStream::connect(("127.0.0.1", port)).await {
                held.push(socket);
            }
        }
    }
    eventually("an accept to fail for want of descriptors", || {
        let log = frontend.log_text();
        async move { log.contains("accepting a connection failed").then_some(()) }
    })
    .await;
    assert!(
        frontend.child.try_wait().unwrap().is_none(),
        "{}",
        frontend.log_text()
    );

    drop(held);
    wait_ready(&setup.frontend_url("/readyz")).await;
    let mut socket = TcpStream::connect(("127.0.0.1", setup.gems_port))
        .await
        .unwrap();
    socket.write_all(&request(1, "PING")).await.unwrap();
    let reply = read_message(&mut socket, &mut BytesMut::new()).await;
    assert!(
        matches!(&reply.body, Body::PingResponse(o) if o.code == "SUCCESS"),
        "{reply:?}"
    );
}

/// Reads one GEMS message and checks that it renders back to exactly its bytes.
async fn read_message(socket: &mut TcpStream, buf: &mut BytesMut) -> Message {
    loop {
        if let Framed::Message(len) = gems::frame(buf) {
            let text = String::from_utf8(buf.split_to(len).to_vec()).unwrap();
            let message = Message::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(message.render(), text, "byte-exact");
            assert_eq!(text[9..19].parse::<usize>().unwrap(), text.len());
            return message;
        }
        let read = tokio::time::timeout(common::DEADLINE, socket.read_buf(buf))
            .await
            .unwrap()
            .unwrap();
        assert!(read > 0, "connection closed");
    }
}

fn request(transaction: u32, body: &str) -> Vec<u8> {
    let content = format!("{transaction}||1700000000.000000000|vfep|{body}|END");
    format!("|GEMS|14|{:010}|{content}", 20 + content.len()).into_bytes()
}

#[tokio::test]
async fn gems_messages_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let quiet = quiet_frontend(dir.path(), 2).await;
    let setup = &quiet.setup;
    let mut socket = TcpStream::connect(("127.0.0.1", setup.gems_port))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    let mut exchange = async |bytes: &[u8]| {
        socket.write_all(bytes).await.unwrap();
        read_message(&mut socket, &mut buf).await
    };

    let reply = exchange(b"GET everything please\n").await;
    assert_eq!(reply.header.transaction_id, "0");
    assert!(
        matches!(&reply.body, Body::Unknown(o) if o.code == "MALFORMED_MESSAGE"),
        "{reply:?}"
    );
    let reply = exchange(&request(1, "PING")).await;
    assert!(matches!(&reply.body, Body::PingResponse(o) if o.code == "SUCCESS"));
    assert_eq!(reply.header.transaction_id, "1");
    let reply = exchange(&request(2, "GET|")).await;
    assert!(
        matches!(&reply.body, Body::GetResponse { outcome, .. } if outcome.code == "INVALID_STATE")
    );
    let reply = exchange(&request(3, "CON|CONTROL_AND_STATUS")).await;
    assert!(matches!(&reply.body, Body::ConnectResponse(o) if o.code == "SUCCESS"));
    let reply = exchange(&request(4, "GET|2|PacketsIn|TmLink")).await;
    let Body::GetResponse {
        outcome,
        parameters,
    } = &reply.body
    else {
        panic!("{reply:?}")
    };
    assert_eq!(outcome.code, "SUCCESS");
    assert_eq!(parameters[0].as_scalar(), Some("2"));
    assert_eq!(parameters[1].as_scalar(), Some("CONNECTED"));
    // A malformed message with a readable header: the reply keeps its transaction id.
    let reply = exchange(&request(5, "GET|3|OnlyOne")).await;
    assert!(matches!(&reply.body, Body::Unknown(o) if o.code == "MALFORMED_MESSAGE"));
    assert_eq!(reply.header.transaction_id, "5");

    // SET the command inhibit; REST sees it and refuses commands.
    let reply = exchange(&request(6, "SET|1|UplinkEnabled:bool=false")).await;
    assert!(
        matches!(&reply.body, Body::SetResponse { outcome, parameters_set: Some(1) } if outcome.code == "SUCCESS")
    );
    let status: Status = get_json(&setup.frontend_url("/api/v1/status"))
        .await
        .unwrap();
    assert!(!status.uplink_enabled);
    let refused = http()
        .post(setup.frontend_url("/api/v1/commands"))
        .header("Content-Type", "application/octet-stream")
        .body(tc(COMMAND_APID, 1, &[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    let reply = exchange(&request(7, "SET|1|PacketsIn:long=0")).await;
    assert!(
        matches!(&reply.body, Body::SetResponse { outcome, .. } if outcome.code == "INVALID_PARAMETER")
    );

    let reply = exchange(&request(8, "DIR|SyncRecording|0")).await;
    let Body::DirectiveResponse {
        outcome, values, ..
    } = &reply.body
    else {
        panic!("{reply:?}")
    };
    assert_eq!(outcome.code, "SUCCESS");
    assert_eq!(values[0].as_scalar(), Some("2"));
    let reply = exchange(&request(9, "DIR|SelfDestruct|0")).await;
    assert!(
        matches!(&reply.body, Body::DirectiveResponse { outcome, .. } if outcome.code == "INVALID_PARAMETER")
    );

    // DISC closes the connection.
    socket
        .write_all(&request(10, "DISC|NORMAL_TERMINATION"))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(common::DEADLINE, socket.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed, 0);
}

#[tokio::test]
async fn websocket_stream_delivers_live_packets_and_takes_commands() {
    let dir = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(dir.path());
    let vehicle = FakeVehicle::bind(&mut setup).await;
    let _frontend = setup.start("frontend");
    let mut tm_link = vehicle.accept_tm().await;
    let mut tc_link = vehicle.accept_tc().await;
    wait_ready(&setup.frontend_url("/readyz")).await;
    eventually("the TC link", || async {
        let status: Status = get_json(&setup.frontend_url("/api/v1/status")).await?;
        (status.link[1].state == vfep::links::LinkState::Connected).then_some(())
    })
    .await;

    let url = format!(
        "ws://127.0.0.1:{}/api/v1/stream?channels=housekeeping",
        setup.http_port
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    eventually("the subscription", || async {
        let status: Status = get_json(&setup.frontend_url("/api/v1/status")).await?;
        (status.subscribers == 1).then_some(())
    })
    .await;
    // Found by a user: a ping was answered with an ERROR frame. It gets its pong, nothing else.
    ws.send(WsMessage::Ping(b"alive?"[..].into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(common::DEADLINE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, WsMessage::Pong(b"alive?"[..].into()));
    let sent = tm(HK_APIDS[1], 0, b"over websocket");
    tm_link.write_all(&sent).await.unwrap();
    let message = tokio::time::timeout(common::DEADLINE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let WsMessage::Binary(data) = message else {
        panic!("{message:?}")
    };
    let mut frames = BytesMut::from(&data[..]);
    let body = codec().decode(&mut frames).unwrap().unwrap();
    match Frame::decode(body).unwrap() {
        Frame::Packet { packet, .. } => assert_eq!(packet, sent),
        other => panic!("{other:?}"),
    }

    let command = tc(COMMAND_APID, 5, &[1]);
    let mut frame = BytesMut::new();
    vfep::api::stream::put_packet(
        &mut frame,
        0,
        vfep::codec::PacketType::Telecommand,
        &command,
    );
    ws.send(WsMessage::Binary(frame.freeze())).await.unwrap();
    let mut received = vec![0u8; command.len()];
    tokio::time::timeout(common::DEADLINE, tc_link.read_exact(&mut received))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, command);
}
