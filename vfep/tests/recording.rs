//! Recording and playback against a real frontend process fed by a scripted vehicle.

mod common;

use std::time::{Duration, Instant};

use common::{FakeVehicle, HK_APIDS, Setup, eventually, get_json, http, tm, wait_ready};
use tokio::io::AsyncWriteExt;
use vfep::api::rest::{Packets, Status};
use vfep::api::stream::{self, Frame, Pace, SubscribeRequest};
use vfep::time::parse_time;

/// Housekeeping packets `from..to` of varied sizes, alternating APIDs, counts per APID in order.
fn packets(from: usize, to: usize) -> Vec<Vec<u8>> {
    (from..to)
        .map(|n| {
            let data: Vec<u8> = (0..(n % 50 + 1)).map(|i| (n + i) as u8).collect();
            tm(HK_APIDS[n % 2], (n / 2) as u16, &data)
        })
        .collect()
}

async fn status(setup: &Setup) -> Option<Status> {
    get_json(&setup.frontend_url("/api/v1/status")).await
}

async fn download(setup: &Setup, query: &str) -> Vec<u8> {
    let response = http()
        .get(setup.frontend_url(&format!("/api/v1/playback?{query}")))
        .header("Accept", "application/octet-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    response.bytes().await.unwrap().to_vec()
}

/// Plays back over the stream port; returns the packets and how long it took.
async fn stream_playback(setup: &Setup, request: SubscribeRequest) -> (Vec<u8>, Duration) {
    let (mut reader, mut writer) = stream::connect(("127.0.0.1", setup.stream_port))
        .await
        .unwrap();
    let started = Instant::now();
    writer.send(&Frame::Subscribe(request)).await.unwrap();
    let mut bytes = Vec::new();
    loop {
        let frame = tokio::time::timeout(common::DEADLINE, reader.next())
            .await
            .unwrap()
            .unwrap()
            .expect("END before the stream closes");
        match frame {
            Frame::Packet { packet, .. } => bytes.extend_from_slice(&packet),
            Frame::End => return (bytes, started.elapsed()),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn fsynced_records_survive_sigkill_and_play_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(dir.path());
    let vehicle = FakeVehicle::bind(&mut setup).await;
    let mut frontend = setup.start("frontend");
    let mut link = vehicle.accept_tm().await;
    let _tc = vehicle.accept_tc().await;
    wait_ready(&setup.frontend_url("/readyz")).await;

    // Four parts, each on the bus before the next is sent, so they get distinct receive times.
    let durable = packets(0, 2000);
    for (part, chunk) in durable.chunks(500).enumerate() {
        link.write_all(&chunk.concat()).await.unwrap();
        eventually("the part on the bus", || async {
            (status(&setup).await?.recording.records >= 500 * (part as u64 + 1)).then_some(())
        })
        .await;
    }
    eventually("every packet fsync'd", || async {
        (status(&setup).await?.recording.records_durable >= durable.len() as i64).then_some(())
    })
    .await;
    // These may or may not reach the disk before the kill.
    let in_flight = packets(2000, 2500);
    link.write_all(&in_flight.concat()).await.unwrap();
    frontend.child.kill().unwrap();
    frontend.wait().await;

    let _frontend = setup.start("frontend");
    wait_ready(&setup.frontend_url("/readyz")).await;
    let recovered = download(&setup, "channel=housekeeping").await;
    let all_sent = [durable.concat(), in_flight.concat()].concat();
    assert!(
        recovered.starts_with(&durable.concat()),
        "a fsync'd record is missing or changed"
    );
    assert!(
        all_sent.starts_with(&recovered),
        "playback returned packets that were never sent"
    );

    // The same packets as a subscriber playback, and as a JSON list.
    let (streamed, _) = stream_playback(
        &setup,
        SubscribeRequest {
            channels: vec!["housekeeping".into()],
            from: Some("0".into()),
            ..SubscribeRequest::default()
        },
    )
    .await;
    assert_eq!(streamed, recovered);
    let listed: Packets =
        get_json(&setup.frontend_url("/api/v1/playback?channel=housekeeping&limit=100000"))
            .await
            .unwrap();
    assert!(!listed.truncated);
    let listed_bytes: Vec<u8> = listed
        .packet
        .iter()
        .flat_map(|p| hex::decode(&p.data).unwrap())
        .collect();
    assert_eq!(listed_bytes, recovered);

    // A time range [from, to) returns exactly the records received in it: parts two and three.
    let times: Vec<u64> = listed
        .packet
        .iter()
        .map(|p| parse_time(&p.received).unwrap())
        .collect();
    let (from, to) = (times[500], times[1500]);
    assert!(times[499] < from && times[1499] < to);
    let ranged = download(&setup, &format!("channel=housekeeping&from={from}&to={to}")).await;
    assert_eq!(ranged, durable[500..1500].concat());
}

#[tokio::test]
async fn sigterm_flushes_the_recording_and_original_pace_keeps_the_spacing() {
    let dir = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(dir.path());
    setup.fsync_interval_ms = 60_000; // only the shutdown can make these durable
    let vehicle = FakeVehicle::bind(&mut setup).await;
    let mut frontend = setup.start("frontend");
    let mut link = vehicle.accept_tm().await;
    let _tc = vehicle.accept_tc().await;
    wait_ready(&setup.frontend_url("/readyz")).await;

    let first = packets(0, 10);
    let second = packets(10, 20);
    link.write_all(&first.concat()).await.unwrap();
    // Spacing in the input that original-pace playback must reproduce.
    tokio::time::sleep(Duration::from_millis(400)).await;
    link.write_all(&second.concat()).await.unwrap();
    eventually("all packets on the bus", || async {
        let counters: vfep::api::rest::Counters =
            get_json(&setup.frontend_url("/api/v1/counters")).await?;
        (counters.packets_in == 20).then_some(())
    })
    .await;
    assert_eq!(status(&setup).await.unwrap().recording.records_durable, 0);
    // Found by a user: half a request held the shutdown up until the 10 s cap on every task.
    let mut half_request = tokio::net::TcpStream::connect(("127.0.0.1", setup.http_port))
        .await
        .unwrap();
    half_request
        .write_all(b"GET /api/v1/status HTTP/1.1\r\n")
        .await
        .unwrap();
    // Connections are accepted in order: once a later request is answered, the half one is in
    // the server's hands, not still in the listen queue.
    status(&setup).await.unwrap();

    frontend.signal(libc::SIGTERM);
    let exit = frontend.wait().await;
    let log = frontend.log_text();
    assert!(exit.success(), "{exit:?}\n{log}");
    assert!(log.contains("recording flushed and synced"), "{log}");
    assert!(
        log.contains("HTTP requests still open after the drain time"),
        "{log}"
    );
    assert!(!log.contains("abandoning"), "{log}");
    drop(half_request);

    let _frontend = setup.start("frontend");
    wait_ready(&setup.frontend_url("/readyz")).await;
    let all = [first.concat(), second.concat()].concat();
    assert_eq!(download(&setup, "").await, all);

    let request = |pace| SubscribeRequest {
        from: Some("0".into()),
        pace,
        ..SubscribeRequest::default()
    };
    let (original, took) = stream_playback(&setup, request(Pace::Original)).await;
    assert_eq!(original, all);
    assert!(
        took >= Duration::from_millis(350),
        "original pace took {took:?}"
    );
    let (fast, _) = stream_playback(&setup, request(Pace::Fast)).await;
    assert_eq!(fast, all);
}
