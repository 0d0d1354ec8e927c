//! The outbound side: a bounded queue of envelopes and one task that publishes them to Redis
//! in pipelines over the node's multiplexed command connection.
//!
//! A session never waits for Redis: `enqueue` either puts the envelope in the queue or, when
//! the queue is full (Redis slow or down), counts it as `outbound_dropped` and returns. The
//! task takes whatever is queued (up to a batch) and sends it as one pipeline, so under load
//! many PUBLISHes share one write and one round trip, and while a pipeline is in flight the
//! next batch gathers. One task and one connection keep the order of one node's publishes,
//! which is what keeps the order from one publisher to one subscriber.

use std::sync::Arc;

use bytes::Bytes;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use super::stats::{ClusterStats, bump};

/// PUBLISHes per pipeline at most.
const BATCH: usize = 512;

/// One envelope for one channel.
#[derive(Debug)]
pub struct Outgoing {
    /// The full channel name.
    pub channel: String,
    /// The encoded envelope.
    pub payload: Bytes,
}

/// The task's state.
pub struct Publisher {
    /// What to publish.
    pub queue: mpsc::Receiver<Outgoing>,
    /// The command connection (reconnects by itself).
    pub redis: ConnectionManager,
    /// Counters.
    pub stats: Arc<ClusterStats>,
    /// This node, for logs.
    pub node: String,
}

impl Publisher {
    /// Publish until every sender is dropped.
    pub async fn run(mut self) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut failing = false;
        while self.queue.recv_many(&mut batch, BATCH).await > 0 {
            let mut pipe = redis::pipe();
            for out in &batch {
                pipe.cmd("PUBLISH")
                    .arg(&out.channel)
                    .arg(&out.payload[..])
                    .ignore();
            }
            match pipe.query_async::<()>(&mut self.redis).await {
                Ok(()) => {
                    self.stats
                        .published
                        .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    if failing {
                        tracing::info!(node = %self.node, "publishing to Redis again");
                        failing = false;
                    }
                }
                Err(e) => {
                    for _ in &batch {
                        bump(&self.stats.publish_failed);
                    }
                    if !failing {
                        tracing::warn!(
                            node = %self.node,
                            error = %e,
                            "publishing to Redis failed; cross-node messages are dropped (counted) until it answers"
                        );
                        failing = true;
                    }
                }
            }
            batch.clear();
        }
    }
}
