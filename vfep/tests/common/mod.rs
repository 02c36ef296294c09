//! Harness for the process tests: real `vfep` processes on loopback, free ports, polling with
//! deadlines, and a scripted vehicle for tests that need exact control of the TM stream.
#![allow(dead_code)] // each test binary uses part of the harness

use std::future::Future;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use vfep::codec::{PacketId, PacketType, encode_packet};

pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `check` until it returns Some or the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ports for the processes under test, taken below the kernel's ephemeral range (32768 and up): a port
/// from that range, released before the process binds it, can meanwhile be taken by any outgoing
/// connection of the tests running beside it. A start derived from the pid and a counter keep the
/// tests of one binary, and test binaries, apart; a port something else holds is skipped.
pub fn free_ports<const N: usize>() -> [u16; N] {
    const FIRST: u32 = 10_000;
    const COUNT: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(97) % COUNT;
    std::array::from_fn(|_| {
        loop {
            let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % COUNT;
            let port = (FIRST + offset) as u16;
            if StdListener::bind(("127.0.0.1", port)).is_ok() {
                break port;
            }
        }
    })
}

/// Ports and directories of one system under test.
#[derive(Debug, Clone)]
pub struct Setup {
    pub dir: PathBuf,
    pub tm_port: u16,
    pub tc_port: u16,
    pub http_port: u16,
    pub gems_port: u16,
    pub stream_port: u16,
    pub ground_port: u16,
    pub simulator_port: u16,
    pub housekeeping_hz: f64,
    pub fsync_interval_ms: u64,
}

pub const HK_APIDS: [u16; 2] = [100, 101];
pub const COMMAND_APID: u16 = 200;

impl Setup {
    pub fn new(dir: &Path) -> Setup {
        let [
            tm_port,
            tc_port,
            http_port,
            gems_port,
            stream_port,
            ground_port,
            simulator_port,
        ] = free_ports::<7>();
        Setup {
            dir: dir.to_owned(),
            tm_port,
            tc_port,
            http_port,
            gems_port,
            stream_port,
            ground_port,
            simulator_port,
            housekeeping_hz: 10.0,
            fsync_interval_ms: 100,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("vfep.yaml")
    }

    pub fn recording_dir(&self) -> PathBuf {
        self.dir.join("recording")
    }

    pub fn write_config(&self) -> PathBuf {
        let yaml = format!(
            "channels:
  - name: housekeeping
    apids: [{}, {}]
    direction: telemetry
    rateHz: {}
  - name: commands
    apids: [{COMMAND_APID}]
    direction: command
vehicle:
  host: 127.0.0.1
  tmPort: {}
  tcPort: {}
  packetErrorControl: true
  maxPacketLength: 4096
frontend:
  host: 127.0.0.1
  httpPort: {}
  gemsPort: {}
  streamPort: {}
recording:
  dir: {}
  fsyncIntervalMs: {}
  segmentSizeBytes: 1048576
",
            HK_APIDS[0],
            HK_APIDS[1],
            self.housekeeping_hz,
            self.tm_port,
            self.tc_port,
            self.http_port,
            self.gems_port,
            self.stream_port,
            self.recording_dir().display(),
            self.fsync_interval_ms,
        );
        std::fs::write(self.config_path(), yaml).unwrap();
        self.config_path()
    }

    pub fn frontend_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn ground_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ground_port)
    }

    pub fn simulator_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.simulator_port)
    }

    pub fn start(&self, role: &str) -> Proc {
        let extra: Vec<String> = match role {
            "ground" => vec!["--http-port".into(), self.ground_port.to_string()],
            "simulator" => vec!["--http-port".into(), self.simulator_port.to_string()],
            _ => Vec::new(),
        };
        Proc::spawn(role, &self.config_path(), &extra, &self.dir)
    }
}

/// A `vfep` process, SIGKILLed when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(role: &str, config: &Path, extra: &[String], dir: &Path) -> Proc {
        let log = dir.join(format!("{role}-{}.log", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vfep"))
            .arg(role)
            .arg("--config")
            .arg(config)
            .args(["--bind", "127.0.0.1"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    pub fn signal(&self, signal: i32) {
        let pid = self.child.id() as i32;
        // SAFETY: sending a signal to a child process we own.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> ExitStatus {
        eventually("the process to exit", || {
            let status = self.child.try_wait().unwrap();
            async move { status }
        })
        .await
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub async fn get_json<T: DeserializeOwned>(url: &str) -> Option<T> {
    let response = http()
        .get(url)
        .header("Accept", "application/json")
        .send()
        .await
        .ok()?;
    response.error_for_status().ok()?.json().await.ok()
}

pub async fn get_xml<T: DeserializeOwned>(url: &str) -> T {
    let response = http()
        .get(url)
        .header("Accept", "application/xml")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/xml");
    let text = response.text().await.unwrap();
    quick_xml::de::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}\n{text}"))
}

pub async fn wait_ready(url: &str) {
    eventually(url, || async {
        let response = http().get(url).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
}

pub fn tm(apid: u16, sequence_count: u16, data: &[u8]) -> Vec<u8> {
    let id = PacketId {
        packet_type: PacketType::Telemetry,
        apid,
        sequence_count,
        secondary_header: false,
    };
    encode_packet(id, data, true)
}

pub fn tc(apid: u16, sequence_count: u16, data: &[u8]) -> Vec<u8> {
    let id = PacketId {
        packet_type: PacketType::Telecommand,
        apid,
        sequence_count,
        secondary_header: false,
    };
    encode_packet(id, data, true)
}

/// A scripted vehicle: the test writes the TM stream itself.
pub struct FakeVehicle {
    pub tm: TcpListener,
    pub tc: TcpListener,
}

impl FakeVehicle {
    /// Binds the vehicle's listeners on ports the kernel picks, held from the start so that no
    /// other process can take them, and writes those ports into the setup and its config file.
    pub async fn bind(setup: &mut Setup) -> FakeVehicle {
        let tm = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        setup.tm_port = tm.local_addr().unwrap().port();
        setup.tc_port = tc.local_addr().unwrap().port();
        setup.write_config();
        FakeVehicle { tm, tc }
    }

    pub async fn accept_tm(&self) -> TcpStream {
        accept(&self.tm).await
    }

    pub async fn accept_tc(&self) -> TcpStream {
        accept(&self.tc).await
    }
}

async fn accept(listener: &TcpListener) -> TcpStream {
    tokio::time::timeout(DEADLINE, listener.accept())
        .await
        .expect("the frontend connects")
        .unwrap()
        .0
}

/// A frontend whose two links a scripted vehicle holds: ready, and its TC link up.
pub struct Linked {
    pub setup: Setup,
    pub vehicle: FakeVehicle,
    pub frontend: Proc,
    pub tm: TcpStream,
    pub tc: TcpStream,
}

pub async fn linked_frontend(dir: &Path) -> Linked {
    let mut setup = Setup::new(dir);
    let vehicle = FakeVehicle::bind(&mut setup).await;
    let frontend = setup.start("frontend");
    let tm = vehicle.accept_tm().await;
    let tc = vehicle.accept_tc().await;
    wait_ready(&setup.frontend_url("/readyz")).await;
    eventually("the TC link", || async {
        let status: vfep::api::rest::Status =
            get_json(&setup.frontend_url("/api/v1/status")).await?;
        (status.link[1].state == vfep::links::LinkState::Connected).then_some(())
    })
    .await;
    Linked {
        setup,
        vehicle,
        frontend,
        tm,
        tc,
    }
}
