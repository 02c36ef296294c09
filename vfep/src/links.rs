//! Links over TCP that stay up: connect, hand the connection to a session, and when the peer
//! goes away (closed, reset, or silent past the keepalive) reconnect with exponential backoff.

use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::time::now_ns;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that lasted this long resets the backoff; shorter ones (a peer that accepts and
/// closes at once) keep it growing, so a crash-looping peer is not hammered.
const STABLE_AFTER: Duration = Duration::from_secs(2);

/// Doubling delays between `min` and `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BACKOFF_MIN, BACKOFF_MAX)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Disconnected,
    Connecting,
    Connected,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub state: LinkState,
    pub peer: Option<SocketAddr>,
    /// When the link entered its current state.
    pub since_ns: u64,
    pub connections: u64,
    pub last_error: Option<String>,
}

/// A link's state, shared with the APIs and metrics.
pub struct LinkStatus {
    pub name: &'static str,
    pub address: String,
    info: Mutex<LinkInfo>,
    connected: Gauge,
    reconnect: Notify,
}

impl LinkStatus {
    pub fn new(name: &'static str, address: String, connected: Gauge) -> LinkStatus {
        LinkStatus {
            name,
            address,
            info: Mutex::new(LinkInfo {
                state: LinkState::Disconnected,
                peer: None,
                since_ns: now_ns(),
                connections: 0,
                last_error: None,
            }),
            connected,
            reconnect: Notify::new(),
        }
    }

    pub fn snapshot(&self) -> LinkInfo {
        self.info.lock().expect("link status lock").clone()
    }

    pub fn is_connected(&self) -> bool {
        self.snapshot().state == LinkState::Connected
    }

    /// Drops the current connection, if any; the link then reconnects.
    pub fn request_reconnect(&self) {
        self.reconnect.notify_waiters();
    }

    fn set(&self, state: LinkState, peer: Option<SocketAddr>, error: Option<String>) {
        let mut info = self.info.lock().expect("link status lock");
        if state == LinkState::Connected {
            info.connections += 1;
        }
        if error.is_some() {
            info.last_error = error;
        }
        info.state = state;
        info.peer = peer;
        info.since_ns = now_ns();
        self.connected.set(i64::from(state == LinkState::Connected));
    }
}

/// What a link does with each connection, until the peer closes (Ok) or fails (Err).
pub trait Session: Send {
    fn run(&mut self, stream: TcpStream) -> impl Future<Output = io::Result<()>> + Send;
}

/// Keeps a connection to `status.address` until `shutdown`. Each connection goes to `session`;
/// when that returns (peer closed or error) or a reconnect is requested, the link reconnects.
pub async fn maintain(
    status: &LinkStatus,
    shutdown: &CancellationToken,
    session: &mut impl Session,
) {
    let mut backoff = Backoff::default();
    while !shutdown.is_cancelled() {
        status.set(LinkState::Connecting, None, None);
        let attempt = tokio::select! {
            attempt = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&status.address)) => attempt,
            _ = shutdown.cancelled() => break,
        };
        let ended = match attempt {
            Ok(Ok(stream)) => {
                configure(&stream);
                let peer = stream.peer_addr().ok();
                status.set(LinkState::Connected, peer, None);
                tracing::info!(link = status.name, address = %status.address, "link connected");
                let started = Instant::now();
                let ended = tokio::select! {
                    result = session.run(stream) => match result {
                        Ok(()) => "closed by peer".to_string(),
                        Err(e) => e.to_string(),
                    },
                    _ = status.reconnect.notified() => "reconnect requested".to_string(),
                    _ = shutdown.cancelled() => break,
                };
                if started.elapsed() >= STABLE_AFTER {
                    backoff.reset();
                }
                ended
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "connect timed out".to_string(),
        };
        let delay = backoff.next_delay();
        tracing::warn!(link = status.name, address = %status.address, reason = %ended, ?delay, "link down, reconnecting");
        status.set(LinkState::Disconnected, None, Some(ended));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    status.set(LinkState::Disconnected, None, None);
}

/// The next connection on `listener`. A failed accept (out of file descriptors, most often) is
/// logged and retried after a pause: it must end neither the listener nor the process, and the
/// pause keeps a listener that cannot accept from spinning.
pub async fn accept(listener: &TcpListener, what: &str) -> (TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(error) => {
                tracing::warn!(%error, port = what, "accepting a connection failed; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Low latency, and keepalive so a peer that vanished without a FIN is noticed in ~25 s.
pub fn configure(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn reconnects_after_the_peer_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let status = LinkStatus::new("tm", address, Gauge::default());
        let shutdown = CancellationToken::new();
        let server = async {
            for _ in 0..3 {
                let (mut socket, _) = listener.accept().await.unwrap();
                socket.shutdown().await.unwrap();
            }
            shutdown.cancel();
        };
        struct Counting(u32);
        impl Session for Counting {
            async fn run(&mut self, mut stream: TcpStream) -> io::Result<()> {
                self.0 += 1;
                let mut buf = [0u8; 1];
                tokio::io::AsyncReadExt::read(&mut stream, &mut buf)
                    .await
                    .map(drop)
            }
        }
        let mut sessions = Counting(0);
        let link = maintain(&status, &shutdown, &mut sessions);
        tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(server, link)
        })
        .await
        .unwrap();
        assert_eq!(sessions.0, 3);
        assert_eq!(status.snapshot().connections, 3);
        assert_eq!(status.snapshot().state, LinkState::Disconnected);
    }
}
