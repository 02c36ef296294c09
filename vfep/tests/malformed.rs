//! Every kind of bad input is counted with its reason and dropped, while good packets keep
//! flowing to subscribers; sequence gaps are counted per APID.

mod common;

use common::{
    COMMAND_APID, FakeVehicle, HK_APIDS, Setup, eventually, get_json, http, tc, tm, wait_ready,
};
use tokio::io::AsyncWriteExt;
use vfep::api::rest::Counters;
use vfep::api::stream::{self, Frame, SubscribeRequest};

fn dropped(counters: &Counters, reason: &str) -> u64 {
    counters
        .dropped
        .iter()
        .filter(|d| d.reason == reason)
        .map(|d| d.count)
        .sum()
}

#[tokio::test]
async fn malformed_input_is_counted_and_dropped_while_good_packets_flow() {
    let dir = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(dir.path());
    let vehicle = FakeVehicle::bind(&mut setup).await;
    let _frontend = setup.start("frontend");
    let mut link = vehicle.accept_tm().await;
    let _tc_link = vehicle.accept_tc().await;
    wait_ready(&setup.frontend_url("/readyz")).await;
    let (mut reader, mut writer) = stream::connect(("127.0.0.1", setup.stream_port))
        .await
        .unwrap();
    writer
        .send(&Frame::Subscribe(SubscribeRequest::default()))
        .await
        .unwrap();
    eventually("the subscription", || async {
        let status: vfep::api::rest::Status =
            get_json(&setup.frontend_url("/api/v1/status")).await?;
        (status.subscribers == 1).then_some(())
    })
    .await;
    let mut next_count = 0u16;
    let probe = good(&mut next_count);
    link.write_all(&probe).await.unwrap();
    assert_eq!(next_packet(&mut reader).await, probe);

    let mut bad_crc = tm(HK_APIDS[0], 999, b"corrupted");
    bad_crc[8] ^= 0x40;
    let mut bad_version = tm(HK_APIDS[1], 999, b"version 2");
    bad_version[0] |= 0x40;
    // Data length 1: two octets, no room for data besides the CRC.
    let too_short = [0x08, HK_APIDS[0] as u8, 0xC0, 0x00, 0x00, 0x01, 0xAB, 0xCD];
    // Declares 5000 octets (over maxPacketLength 4096); all of them follow.
    let oversize = tm(HK_APIDS[1], 999, &[0x55; 4993]);
    let unknown_apid = tm(300, 0, b"nobody's");
    let idle = tm(0x7FF, 0, b"idle");
    let telecommand = tc(COMMAND_APID, 0, b"not on the TM link");
    let mut expected = Vec::new();
    let mut stream_bytes = Vec::new();
    for bad in [
        &bad_crc[..],
        &bad_version,
        &too_short,
        &oversize,
        &unknown_apid,
        &idle,
        &telecommand,
    ] {
        stream_bytes.extend_from_slice(bad);
        let packet = good(&mut next_count);
        stream_bytes.extend_from_slice(&packet);
        expected.push(packet);
    }
    // Write in odd-sized pieces so packets straddle reads.
    for piece in stream_bytes.chunks(777) {
        link.write_all(piece).await.unwrap();
    }
    for packet in &expected {
        assert_eq!(&next_packet(&mut reader).await, packet);
    }

    // A packet cut off by the vehicle closing the link: truncated; the link reconnects.
    let cut = good(&mut next_count);
    link.write_all(&cut[..cut.len() - 3]).await.unwrap();
    link.shutdown().await.unwrap();
    drop(link);
    let mut link = vehicle.accept_tm().await;
    let after = good(&mut next_count);
    link.write_all(&after).await.unwrap();
    assert_eq!(next_packet(&mut reader).await, after);

    let counters: Counters = eventually("the drop counters", || async {
        let c: Counters = get_json(&setup.frontend_url("/api/v1/counters")).await?;
        (dropped(&c, "truncated") == 1).then_some(c)
    })
    .await;
    for reason in [
        "bad_crc",
        "bad_version",
        "too_short",
        "oversize",
        "truncated",
        "unknown_apid",
        "idle",
        "wrong_type",
    ] {
        assert_eq!(dropped(&counters, reason), 1, "{reason}: {counters:?}");
    }
    assert_eq!(counters.packets_in, 1 + expected.len() as u64 + 1);
    let apid_gaps = counters
        .gaps
        .iter()
        .find(|g| g.apid == HK_APIDS[0])
        .unwrap();
    assert_eq!(
        (apid_gaps.gaps, apid_gaps.missing_packets),
        (1, 1),
        "the cut packet's count is missing"
    );

    // A sequence jump on the other APID: one gap of five packets.
    link.write_all(&[tm(HK_APIDS[1], 10, b"a"), tm(HK_APIDS[1], 16, b"b")].concat())
        .await
        .unwrap();
    eventually("the gap counter", || async {
        let c: Counters = get_json(&setup.frontend_url("/api/v1/counters")).await?;
        let g = c.gaps.into_iter().find(|g| g.apid == HK_APIDS[1])?;
        (g.gaps == 1 && g.missing_packets == 5).then_some(())
    })
    .await;
    let metrics = http()
        .get(setup.frontend_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains("vfep_packets_dropped_total{reason=\"bad_crc\",channel=\"housekeeping\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("vfep_sequence_gaps_total{apid=\"101\",channel=\"housekeeping\"} 1"));
}

/// The next good packet on APID 100, in sequence.
fn good(next_count: &mut u16) -> Vec<u8> {
    let packet = tm(HK_APIDS[0], *next_count, b"good data");
    *next_count += 1;
    packet
}

async fn next_packet(reader: &mut stream::FrameReader) -> Vec<u8> {
    loop {
        let frame = tokio::time::timeout(common::DEADLINE, reader.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Frame::Packet { packet, .. } = frame {
            return packet.to_vec();
        }
    }
}

#[tokio::test]
async fn bad_commands_are_refused_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let common::Linked {
        setup,
        vehicle,
        frontend: _frontend,
        tm: _tm,
        tc: mut tc_link,
    } = common::linked_frontend(dir.path()).await;

    let post = |packet: Vec<u8>| {
        let url = setup.frontend_url("/api/v1/commands");
        async move {
            let body = serde_json::json!({ "packet": hex::encode(packet) });
            let response = http().post(url).json(&body).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let mut bad_crc = tc(COMMAND_APID, 1, &[1]);
    bad_crc[6] ^= 1;
    for (packet, status, reason) in [
        (bad_crc, 400, "bad_crc"),
        (tc(COMMAND_APID, 1, &[1])[..5].to_vec(), 400, "truncated"),
        (tc(999, 1, &[1]), 400, "unknown_apid"),
        (tc(HK_APIDS[0], 1, &[1]), 400, "wrong_type"),
        (tm(COMMAND_APID, 1, &[1]), 400, "wrong_type"),
    ] {
        let (code, body) = post(packet).await;
        assert_eq!(code, status, "{body}");
        assert!(body.contains(reason), "{body}");
    }

    // A good stack of two TCs goes out whole, in order, byte for byte.
    let stack = [tc(COMMAND_APID, 7, &[1]), tc(COMMAND_APID, 8, &[2, 21])].concat();
    let (code, body) = post(stack.clone()).await;
    assert_eq!(code, 202, "{body}");
    let mut received = vec![0u8; stack.len()];
    tokio::time::timeout(
        common::DEADLINE,
        tokio::io::AsyncReadExt::read_exact(&mut tc_link, &mut received),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(received, stack);

    // With the TC link gone (and the vehicle no longer listening), commands are refused
    // rather than queued.
    drop(tc_link);
    drop(vehicle.tc);
    eventually("the TC link to drop", || async {
        let status: vfep::api::rest::Status =
            get_json(&setup.frontend_url("/api/v1/status")).await?;
        (status.link[1].state != vfep::links::LinkState::Connected).then_some(())
    })
    .await;
    let (code, body) = post(tc(COMMAND_APID, 9, &[1])).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("uplink_down"));
}

/// Found by a user: a vehicle that stops reading its command link filled the uplink queue, and
/// the next TC waited for room while holding the bus, so telemetry stopped too, for good.
/// Commands are refused instead (503, `uplink_busy`), and telemetry keeps flowing.
#[tokio::test]
async fn a_vehicle_that_stops_reading_commands_does_not_stop_telemetry() {
    let dir = tempfile::tempdir().unwrap();
    // The TC link is held and never read.
    let common::Linked {
        setup,
        tm: mut tm_link,
        tc: _tc_link,
        vehicle: _vehicle,
        frontend: _frontend,
    } = common::linked_frontend(dir.path()).await;

    let url = setup.frontend_url("/api/v1/commands");
    let big = |n: u16| tc(COMMAND_APID, n, &vec![1; 3000]);
    let mut refused = None;
    for n in 0..20_000u16 {
        let response = http()
            .post(&url)
            .header("Content-Type", "application/octet-stream")
            .body(big(n))
            .send()
            .await
            .expect("a command is answered, not left waiting");
        if response.status() != 202 {
            refused = Some((response.status().as_u16(), response.text().await.unwrap()));
            break;
        }
    }
    let (code, body) = refused.expect("the queue fills: the vehicle reads nothing");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("uplink_busy"), "{body}");

    let counters = || async {
        let counters: Counters = get_json(&setup.frontend_url("/api/v1/counters")).await?;
        Some(counters)
    };
    let before = counters().await.unwrap().packets_in;
    let mut next_count = 0;
    for _ in 0..10 {
        tm_link.write_all(&good(&mut next_count)).await.unwrap();
    }
    eventually("telemetry to keep flowing", || async {
        (counters().await?.packets_in >= before + 10).then_some(())
    })
    .await;
    assert!(dropped(&counters().await.unwrap(), "uplink_busy") >= 1);
}
