//! A TCP proxy in front of a private broker that can refuse offset commits.
//!
//! It forwards Kafka protocol frames both ways and, while told to, closes the connection on every
//! `OffsetCommit` request (API key 8) instead of forwarding it: the client sees the commit fail
//! with a transport error, as it does when the group coordinator dies or moves. The broker must
//! advertise the proxy's address, so that every connection of the client goes through it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The API key of `OffsetCommit` in the Kafka protocol.
const OFFSET_COMMIT: i16 = 8;

/// A running proxy; it stops with the test's runtime.
#[derive(Clone)]
pub struct KafkaProxy {
    failing: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
}

impl KafkaProxy {
    /// Listens on `listener` and forwards to the broker on `upstream_port`.
    pub fn start(listener: TcpListener, upstream_port: u16) -> Self {
        let proxy = Self {
            failing: Arc::new(AtomicBool::new(false)),
            refused: Arc::new(AtomicU64::new(0)),
        };
        let accepting = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(broker) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                    continue;
                };
                tokio::spawn(accepting.clone().serve(client, broker));
            }
        });
        proxy
    }

    /// While `on`, every offset commit is refused by closing its connection.
    pub fn fail_commits(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }

    /// Offset commits refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    async fn serve(self, client: TcpStream, broker: TcpStream) {
        let (mut from_client, mut to_client) = client.into_split();
        let (mut from_broker, mut to_broker) = broker.into_split();
        let answers = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from_broker, &mut to_client).await;
        });
        loop {
            let mut size = [0u8; 4];
            if from_client.read_exact(&mut size).await.is_err() {
                break;
            }
            let mut frame = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
            if from_client.read_exact(&mut frame).await.is_err() {
                break;
            }
            let api_key = i16::from_be_bytes([frame[0], frame[1]]);
            if api_key == OFFSET_COMMIT && self.failing.load(Ordering::SeqCst) {
                self.refused.fetch_add(1, Ordering::SeqCst);
                break;
            }
            if to_broker.write_all(&size).await.is_err()
                || to_broker.write_all(&frame).await.is_err()
            {
                break;
            }
        }
        answers.abort();
    }
}
