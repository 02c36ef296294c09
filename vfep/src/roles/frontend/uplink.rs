//! The TC link: forwards the TCs accepted on the bus to the vehicle, in order.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::Frontend;
use crate::bus::Batch;
use crate::links;
use crate::metrics::DropReason;

pub async fn run(
    frontend: Arc<Frontend>,
    commands: mpsc::Receiver<Arc<Batch>>,
) -> anyhow::Result<()> {
    let mut uplink = Uplink {
        frontend: frontend.clone(),
        commands,
    };
    links::maintain(&frontend.tc_link, &frontend.shutdown, &mut uplink).await;
    Ok(())
}

struct Uplink {
    frontend: Arc<Frontend>,
    commands: mpsc::Receiver<Arc<Batch>>,
}

impl links::Session for Uplink {
    async fn run(&mut self, stream: TcpStream) -> io::Result<()> {
        send(&self.frontend, &mut self.commands, stream).await
    }
}

async fn send(
    fe: &Frontend,
    commands: &mut mpsc::Receiver<Arc<Batch>>,
    stream: TcpStream,
) -> io::Result<()> {
    let connected_ns = fe.clock.stamp();
    let (mut reader, mut writer) = stream.into_split();
    let mut discard = [0u8; 1024];
    loop {
        tokio::select! {
            batch = commands.recv() => {
                let Some(batch) = batch else { return Ok(()) };
                for packet in &batch.packets {
                    // Accepted while the link was failing: too stale to send on a new connection.
                    if batch.received_ns < connected_ns {
                        fe.metrics.dropped(DropReason::UplinkDown, Some(packet.channel), 1);
                        continue;
                    }
                    if let Err(e) = writer.write_all(batch.bytes(packet)).await {
                        fe.metrics.dropped(DropReason::UplinkDown, Some(packet.channel), 1);
                        return Err(e);
                    }
                    fe.metrics.packets_out(packet.channel, 1);
                }
            }
            // The vehicle sends nothing on this link; reading only notices it closing.
            read = reader.read(&mut discard) => if read? == 0 { return Ok(()) },
        }
    }
}
