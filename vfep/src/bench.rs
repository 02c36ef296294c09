//! `vfep bench`: runs a simulator and a frontend as child processes on loopback (recording on,
//! default fsync interval), subscribes to the frontend's packet stream and measures packets/s
//! and MB/s for several packet sizes, then latency at a fixed rate. In the same run it measures
//! the limits the data path lives within: raw loopback TCP, the same through a two-hop relay
//! (the topology's floor), and sequential disk writes.
//! Every loop is bounded in packets and time.

use std::io::{Read, Write};
use std::net::{TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::api::stream::{self, Frame, FrameReader, FrameWriter, SubscribeRequest};
use crate::codec::{PacketType, PrimaryHeader};
use crate::gems::{self, Body, Framed, Header, Message, Timestamp};
use crate::mission::{self, Command, Telemetry};
use crate::time::now_ns;

const LOAD_APID: u16 = 100;
const COMMAND_APID: u16 = 200;
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Packets per throughput run. Make each run write at least as much as --disk-bytes, or a
    /// disk cache can absorb it and "% disk" goes past 100.
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub packets: u32,
    /// Packet sizes in octets, headers and CRC included: 21 (the smallest load packet) to 4096
    /// (the default maxPacketLength).
    #[arg(long, value_delimiter = ',', default_value = "64,256,1024", value_parser = packet_size)]
    pub sizes: Vec<u16>,
    /// Packets per second of the latency run (256-octet packets).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub latency_rate: u32,
    /// Duration of the latency run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=600))]
    pub latency_seconds: u32,
    /// Octets written by the disk limit test.
    #[arg(long, default_value_t = 1 << 30)]
    pub disk_bytes: u64,
    /// Work directory for the recording and the disk test; a temporary one by default.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

fn packet_size(text: &str) -> Result<u16, String> {
    let max = crate::config::Vehicle::default().max_packet_length;
    let min = mission::MIN_LOAD_PACKET_LEN;
    match text.parse::<usize>() {
        Ok(size) if (min..=max).contains(&size) => Ok(size as u16),
        _ => Err(format!("a packet size is {min} to {max} octets")),
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let temp = tempfile_dir(args.dir.as_deref())?;
    let work = temp.path().to_owned();
    let loopback = loopback_limit()?;
    let relay = relay_limit()?;
    let disk = disk_limit(&work, args.disk_bytes)?;
    println!(
        "limits: loopback TCP {:.0} MB/s, two-hop relay {:.0} MB/s, sequential disk write {:.0} MB/s",
        loopback / 1e6,
        relay / 1e6,
        disk / 1e6
    );

    let system = System::start(&work).await?;
    let (mut reader, mut writer) = system.subscribe().await?;
    let mut gems = Gems::connect(&system.gems_addr).await?;
    let mut sequence = 0u16;
    println!(
        "\n{:>6} {:>9} {:>12} {:>8} {:>11} {:>8} {:>12} {:>8} {:>6}",
        "size",
        "packets",
        "delivered/s",
        "MB/s",
        "% loopback",
        "% relay",
        "durable/s",
        "% disk",
        "lost"
    );
    let mut beat_the_disk = false;
    for &size in &args.sizes {
        let recorded_before = gems.get("BytesRecorded").await?;
        let record_len = u64::from(size) + crate::recorder::RECORD_HEADER_LEN as u64;
        let command = Command::StartLoad {
            count: args.packets,
            packet_len: size,
            rate_hz: 0,
        };
        let started = Instant::now();
        sequence = send(&mut writer, sequence, &command).await?;
        let run = receive(&mut reader, u64::from(args.packets), |_| {}).await?;
        let delivered = run.received as f64 / run.last.duration_since(started).as_secs_f64();
        // The recorder may trail the subscriber by its queue, and the page cache may hold what
        // it wrote: the sustained rate is when the last record is on the file and fsync'd. This
        // also starts each run (and the latency run) with no writeback left from the one before.
        let target = recorded_before + u64::from(args.packets) * record_len;
        while gems.get("BytesRecorded").await? < target {
            if started.elapsed() > RUN_TIMEOUT {
                bail!("the recording did not catch up in time");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        gems.sync_recording().await?;
        let durable = f64::from(args.packets) / started.elapsed().as_secs_f64();
        let megabytes = delivered * f64::from(size) / 1e6;
        let disk_percent = 100.0 * durable * record_len as f64 / disk;
        beat_the_disk |= disk_percent > 100.0;
        println!(
            "{size:>6} {:>9} {delivered:>12.0} {megabytes:>8.1} {:>10.1}% {:>7.1}% {durable:>12.0} {disk_percent:>7.1}% {:>6}",
            run.received,
            100.0 * megabytes * 1e6 / loopback,
            100.0 * megabytes * 1e6 / relay,
            run.lost
        );
    }
    if beat_the_disk {
        println!(
            "note: % disk over 100 means a run was short enough for a disk or host cache to \
             absorb; raise --packets so each run records at least the {} MB of the disk test",
            args.disk_bytes / 1_000_000
        );
    }
    let count = args.latency_rate * args.latency_seconds;
    let command = Command::StartLoad {
        count,
        packet_len: 256,
        rate_hz: args.latency_rate,
    };
    send(&mut writer, sequence, &command).await?;
    let mut latencies = Vec::with_capacity(count as usize);
    receive(&mut reader, u64::from(count), |packet| {
        if let Some((onboard_ns, _)) = mission::decode_tm(packet, true) {
            latencies.push(now_ns().saturating_sub(onboard_ns));
        }
    })
    .await?;
    latencies.sort_unstable();
    let percentile = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize] as f64 / 1e3;
    println!(
        "\nlatency at {} packets/s of 256 octets, {} packets: p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        args.latency_rate,
        latencies.len(),
        percentile(0.5),
        percentile(0.99),
        percentile(1.0)
    );
    drop(system);
    Ok(())
}

fn tempfile_dir(parent: Option<&Path>) -> anyhow::Result<tempfile::TempDir> {
    let builder = tempfile::Builder::new()
        .prefix("vfep-bench-")
        .tempdir_in(parent.unwrap_or(&std::env::temp_dir()));
    builder.context("creating the work directory")
}

const LIMIT_CHUNK: usize = 256 * 1024;

/// Bytes/s one TCP connection carries over loopback with large writes.
fn loopback_limit() -> anyhow::Result<f64> {
    const TOTAL: usize = 4 << 30;
    let listener = StdListener::bind("127.0.0.1:0")?;
    let source = spawn_source(listener.local_addr()?, TOTAL);
    let (socket, _) = listener.accept()?;
    let rate = drain(socket, TOTAL)?;
    join(source)?;
    Ok(rate)
}

/// Bytes/s through two loopback hops with a relay in between (one thread reading 256 KiB at a
/// time and writing it on, no work per packet): the floor of the vehicle -> frontend ->
/// subscriber topology, whose two hops share the same cores.
fn relay_limit() -> anyhow::Result<f64> {
    const TOTAL: usize = 2 << 30;
    let inbound = StdListener::bind("127.0.0.1:0")?;
    let outbound = StdListener::bind("127.0.0.1:0")?;
    let source = spawn_source(inbound.local_addr()?, TOTAL);
    let outbound_addr = outbound.local_addr()?;
    let relay = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut from, _) = inbound.accept()?;
        let mut to = StdStream::connect(outbound_addr)?;
        let mut buf = vec![0u8; LIMIT_CHUNK];
        loop {
            match from.read(&mut buf)? {
                0 => return Ok(()),
                n => to.write_all(&buf[..n])?,
            }
        }
    });
    let (socket, _) = outbound.accept()?;
    let rate = drain(socket, TOTAL)?;
    join(source)?;
    join(relay)?;
    Ok(rate)
}

/// A thread that connects to `addr` and writes `total` octets in large chunks.
fn spawn_source(
    addr: std::net::SocketAddr,
    total: usize,
) -> std::thread::JoinHandle<std::io::Result<()>> {
    std::thread::spawn(move || {
        let mut socket = StdStream::connect(addr)?;
        let chunk = vec![0x5Au8; LIMIT_CHUNK];
        let mut sent = 0;
        while sent < total {
            socket.write_all(&chunk)?;
            sent += chunk.len();
        }
        Ok(())
    })
}

/// Reads `total` octets (or to end of stream) and returns the rate in bytes/s.
fn drain(mut socket: StdStream, total: usize) -> anyhow::Result<f64> {
    let mut buf = vec![0u8; LIMIT_CHUNK];
    let started = Instant::now();
    let mut received = 0;
    while received < total {
        match socket.read(&mut buf)? {
            0 => break,
            n => received += n,
        }
    }
    Ok(received as f64 / started.elapsed().as_secs_f64())
}

fn join(thread: std::thread::JoinHandle<std::io::Result<()>>) -> anyhow::Result<()> {
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("a limit-test thread panicked"))??;
    Ok(())
}

/// Bytes/s of 1 MiB sequential writes with writeback started per write and an fsync every
/// second and at the end: the pattern the recorder uses.
fn disk_limit(dir: &Path, total: u64) -> anyhow::Result<f64> {
    let path = dir.join("disk-limit.bin");
    let mut file = std::fs::File::create(&path)?;
    let chunk = vec![0xA5u8; 1 << 20];
    let started = Instant::now();
    let mut last_sync = started;
    let mut written = 0;
    while written < total {
        file.write_all(&chunk)?;
        crate::recorder::start_writeback(&file, written, chunk.len() as u64);
        written += chunk.len() as u64;
        if last_sync.elapsed() >= Duration::from_secs(1) {
            file.sync_data()?;
            last_sync = Instant::now();
        }
    }
    file.sync_data()?;
    let seconds = started.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(written as f64 / seconds)
}

/// A simulator and a frontend, killed when dropped.
struct System {
    children: Vec<Child>,
    stream_addr: String,
    gems_addr: String,
}

impl System {
    async fn start(work: &Path) -> anyhow::Result<System> {
        let [tm, tc, http, gems, stream_port, sim_http] = free_ports::<6>()?;
        let config = format!(
            "channels:\n  - {{name: load, apids: [{LOAD_APID}], direction: telemetry, rateHz: 0}}\n  - {{name: commands, apids: [{COMMAND_APID}], direction: command}}\n\
             vehicle: {{host: 127.0.0.1, tmPort: {tm}, tcPort: {tc}}}\n\
             frontend: {{host: 127.0.0.1, httpPort: {http}, gemsPort: {gems}, streamPort: {stream_port}}}\n\
             recording: {{dir: {}}}\n",
            work.join("recording").display()
        );
        let config_path = work.join("vfep.yaml");
        std::fs::write(&config_path, config)?;
        let exe = std::env::current_exe()?;
        let spawn = |role: &str, extra: &[String]| -> anyhow::Result<Child> {
            let log = std::fs::File::create(work.join(format!("{role}.log")))?;
            Process::new(&exe)
                .arg(role)
                .arg("--config")
                .arg(&config_path)
                .args(["--bind", "127.0.0.1"])
                .args(extra)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting the {role}"))
        };
        let mut system = System {
            children: Vec::new(),
            stream_addr: format!("127.0.0.1:{stream_port}"),
            gems_addr: format!("127.0.0.1:{gems}"),
        };
        system.children.push(spawn(
            "simulator",
            &["--http-port".into(), sim_http.to_string()],
        )?);
        system.children.push(spawn("frontend", &[])?);
        Ok(system)
    }

    /// Connects to the stream and waits until a NOOP makes the round trip to the vehicle.
    async fn subscribe(&self) -> anyhow::Result<(FrameReader, FrameWriter)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if Instant::now() > deadline {
                bail!("the frontend and simulator did not come up within 30 s");
            }
            let Ok((mut reader, mut writer)) = stream::connect(&self.stream_addr).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            writer
                .send(&Frame::Subscribe(SubscribeRequest::default()))
                .await?;
            send(&mut writer, 0x3000, &Command::Noop).await?;
            let acked = tokio::time::timeout(Duration::from_secs(1), async {
                while let Some(frame) = reader.next().await? {
                    if let Frame::Packet { packet, .. } = frame
                        && matches!(
                            mission::decode_tm(&packet, true),
                            Some((_, Telemetry::Acknowledgement(_)))
                        )
                    {
                        return Ok::<_, std::io::Error>(true);
                    }
                }
                Ok(false)
            })
            .await;
            if let Ok(Ok(true)) = acked {
                return Ok((reader, writer));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners: Vec<StdListener> = (0..N)
        .map(|_| StdListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    Ok(ports.try_into().expect("N ports"))
}

async fn send(writer: &mut FrameWriter, sequence: u16, command: &Command) -> anyhow::Result<u16> {
    writer
        .send_tc(&mission::command_packet(
            COMMAND_APID,
            sequence,
            command,
            true,
        ))
        .await?;
    Ok(sequence.wrapping_add(1))
}

/// Reads the frontend's counters over GEMS.
struct Gems {
    socket: TcpStream,
    buf: BytesMut,
    transaction: u64,
}

impl Gems {
    async fn connect(addr: &str) -> anyhow::Result<Gems> {
        let mut gems = Gems {
            socket: TcpStream::connect(addr).await?,
            buf: BytesMut::new(),
            transaction: 0,
        };
        gems.request(Body::Connect {
            connection_type: "CONTROL_AND_STATUS".into(),
        })
        .await?;
        Ok(gems)
    }

    async fn request(&mut self, body: Body) -> anyhow::Result<Body> {
        self.transaction += 1;
        let header = Header {
            transaction_id: self.transaction.to_string(),
            token: String::new(),
            timestamp: Timestamp::from_ns(now_ns()),
            target: crate::api::gems_server::TARGET.into(),
        };
        self.socket
            .write_all(Message { header, body }.render().as_bytes())
            .await?;
        loop {
            if let Framed::Message(len) = gems::frame(&self.buf) {
                let text = String::from_utf8(self.buf.split_to(len).to_vec())?;
                return Ok(Message::parse(&text)?.body);
            }
            if self.socket.read_buf(&mut self.buf).await? == 0 {
                bail!("the GEMS connection closed");
            }
        }
    }

    /// Flushes and fsyncs the recording; returns when it is durable.
    async fn sync_recording(&mut self) -> anyhow::Result<()> {
        let body = Body::Directive {
            name: "SyncRecording".into(),
            arguments: Vec::new(),
        };
        match self.request(body).await? {
            Body::DirectiveResponse { outcome, .. } if outcome.code == gems::code::SUCCESS => {
                Ok(())
            }
            reply => bail!("GEMS DIR SyncRecording: {reply:?}"),
        }
    }

    /// A numeric parameter.
    async fn get(&mut self, name: &str) -> anyhow::Result<u64> {
        let reply = self
            .request(Body::Get {
                names: vec![name.into()],
            })
            .await?;
        let value = match &reply {
            Body::GetResponse { parameters, .. } => parameters.first().and_then(|p| p.as_scalar()),
            _ => None,
        };
        value
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("GEMS GET {name}: {reply:?}"))
    }
}

struct Received {
    received: u64,
    lost: u64,
    last: Instant,
}

/// Reads until `expected` load packets arrived or were reported lost. One deadline for the
/// whole run and no clock read per packet: the subscriber is measured, not the measuring.
async fn receive(
    reader: &mut FrameReader,
    expected: u64,
    mut on_packet: impl FnMut(&[u8]),
) -> anyhow::Result<Received> {
    let mut run = Received {
        received: 0,
        lost: 0,
        last: Instant::now(),
    };
    let frames = async {
        while run.received + run.lost < expected {
            let frame = reader
                .next()
                .await?
                .context("the frontend closed the stream")?;
            match frame {
                Frame::Packet {
                    packet_type: PacketType::Telemetry,
                    packet,
                    ..
                } if PrimaryHeader::of(&packet).apid == LOAD_APID => {
                    run.received += 1;
                    on_packet(&packet);
                }
                Frame::Lost(count) => run.lost += count,
                _ => {}
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(RUN_TIMEOUT, frames)
        .await
        .context("the run did not finish in time")??;
    run.last = Instant::now();
    Ok(run)
}
