//! The out direction: every feed partition read in order and each entry produced to the
//! events topic as a binary-mode CloudEvent keyed by its product, one task per partition.
//!
//! A page is the unit of progress: its entries are produced (librdkafka's idempotent
//! producer keeps them in order per Kafka partition), all acknowledgements are awaited,
//! and only then is the page's `next_after` stored in the positions topic. A failure
//! anywhere re-reads the same page, whose entries keep their ids, so a product's entries
//! may repeat (same id) but are never lost nor reordered at their last occurrence.

use std::sync::Arc;
use std::time::Duration;

use cloudevents::binding::rdkafka::{FutureRecordExt, MessageRecord};
use cloudevents::{AttributesReader, Event};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use tokio::task::JoinSet;

use crate::Bridge;
use crate::health::Counter;
use crate::positions;
use crate::retry::{pause, until_ok};
use crate::service::ServiceError;

/// Why one page could not be published; the page is then read and produced again.
#[derive(Debug, thiserror::Error)]
enum PageError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("entry {id} not encodable as a Kafka record: {source}")]
    Encode {
        id: String,
        source: cloudevents::message::Error,
    },
    #[error("producing to Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("producer dropped a delivery report")]
    DeliveryLost,
    #[error("the feed returned entries without a next_after cursor")]
    NoCursor,
}

/// A published page: how many entries, and the cursor that follows them.
struct Published {
    entries: u64,
    next_after: String,
}

/// Runs the out direction until shutdown: discovers the partition count, recovers the
/// stored positions, then pumps every partition.
pub(crate) async fn run(bridge: Arc<Bridge>) -> anyhow::Result<()> {
    let health = &bridge.health.out;
    let shutdown = &bridge.shutdown;
    // Any page says how many partitions there are: ask for the smallest one.
    let Some(first) = until_ok(
        shutdown,
        &bridge.backoff,
        health,
        "reading the feed",
        || bridge.service.page(0, None, 1),
    )
    .await
    else {
        return Ok(());
    };
    let partitions = first.partitions;
    let Some(mut positions) = until_ok(
        shutdown,
        &bridge.backoff,
        health,
        "reading the positions topic",
        || positions::load(&bridge.config),
    )
    .await
    else {
        return Ok(());
    };
    tracing::info!(
        partitions,
        resumed = positions.len(),
        "out: publishing the feed to {}",
        bridge.config.events_topic
    );
    health.set_running(true);
    health.success();
    let mut pumps = JoinSet::new();
    for partition in 0..partitions {
        let cursor = positions.remove(&partition);
        pumps.spawn(pump(Arc::clone(&bridge), partition, cursor));
    }
    let mut result = Ok(());
    while let Some(joined) = pumps.join_next().await {
        if let Err(error) = joined {
            result = Err(anyhow::Error::new(error).context("out: a partition task died"));
            bridge.shutdown.cancel();
        }
    }
    health.set_running(false);
    result
}

/// Publishes one feed partition from `cursor` (the start when `None`) until shutdown.
async fn pump(bridge: Arc<Bridge>, partition: u32, mut cursor: Option<String>) {
    let health = &bridge.health.out;
    let shutdown = &bridge.shutdown;
    let poll_interval = bridge.config.poll_interval();
    loop {
        let Some(published) = until_ok(
            shutdown,
            &bridge.backoff,
            health,
            "publishing a feed page",
            || publish_page(&bridge, partition, cursor.as_deref()),
        )
        .await
        else {
            return;
        };
        let Some(published) = published else {
            // Caught up: nothing new in this partition yet.
            health.success();
            if !pause(shutdown, poll_interval).await {
                return;
            }
            continue;
        };
        let stored = until_ok(
            shutdown,
            &bridge.backoff,
            health,
            "storing a feed position",
            || {
                positions::store(
                    &bridge.producer,
                    &bridge.config.positions_topic,
                    partition,
                    &published.next_after,
                )
            },
        )
        .await;
        if stored.is_none() {
            return;
        }
        health.add(Counter::Produced, published.entries);
        health.add(Counter::PositionsWritten, 1);
        health.success();
        tracing::debug!(partition, entries = published.entries, cursor = %published.next_after, "page published");
        cursor = Some(published.next_after);
    }
}

/// The Kafka key of an entry: its product (`subject`, else the `partitionkey` extension),
/// so that a product's entries share a Kafka partition and keep their order.
fn product_key(event: &Event) -> String {
    event
        .subject()
        .map(str::to_owned)
        .or_else(|| event.extension("partitionkey").map(|k| k.to_string()))
        .unwrap_or_else(|| event.id().to_owned())
}

/// Reads the page after `cursor` and produces its entries, returning once the broker has
/// acknowledged all of them; `None` when the partition has nothing new and the cursor
/// stays where it was.
async fn publish_page(
    bridge: &Bridge,
    partition: u32,
    cursor: Option<&str>,
) -> Result<Option<Published>, PageError> {
    let page = bridge
        .service
        .page(partition, cursor, bridge.config.page_size)
        .await?;
    if page.events.is_empty() {
        // Caught up. The cursor may still have moved past slots that serve nothing (their
        // product write died): keep it, or every poll would read them again, and more of
        // them than a page visits would stall the partition.
        return Ok(page
            .next_after
            .filter(|next| cursor != Some(next.as_str()))
            .map(|next_after| Published {
                entries: 0,
                next_after,
            }));
    }
    let next_after = page.next_after.ok_or(PageError::NoCursor)?;
    let entries = page.events.len() as u64;
    let topic = bridge.config.events_topic.as_str();
    let mut deliveries = Vec::with_capacity(page.events.len());
    for event in page.events {
        let key = product_key(&event);
        let id = event.id().to_owned();
        let message =
            MessageRecord::from_event(event).map_err(|source| PageError::Encode { id, source })?;
        let mut record = FutureRecord::to(topic).key(&key).message_record(&message);
        // Enqueue in order; when librdkafka's queue is full, wait for it to drain rather
        // than skip ahead.
        let delivery = loop {
            match bridge.producer.send_result(record) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), again)) => {
                    record = again;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err((error, _)) => return Err(error.into()),
            }
        };
        deliveries.push(delivery);
    }
    for delivery in deliveries {
        delivery
            .await
            .map_err(|_| PageError::DeliveryLost)?
            .map_err(|(error, _)| PageError::Kafka(error))?;
    }
    Ok(Some(Published {
        entries,
        next_after,
    }))
}
