//! The in direction: the cart and order topics consumed in a consumer group, each record
//! turned into a CloudEvent and posted to the service, one record at a time so that a
//! partition's order is the order of the posts.
//!
//! A record's offset is committed only after the service answered it: 2xx → commit;
//! 4xx → the record goes to the dead-letter topic (value, key and headers kept, the
//! problem attached) and is committed once the broker acknowledged that copy; 5xx or no
//! answer → retried with backoff, never committed meanwhile. A record that is no readable
//! CloudEvent is dead-lettered the same way. Redelivery after a crash re-posts the same
//! event (same `source` + `id`), which the service recognises as a duplicate.

use std::sync::Arc;

use cloudevents::binding::rdkafka::MessageExt;
use cloudevents::{AttributesReader, Event};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use reqwest::StatusCode;

use crate::Bridge;
use crate::health::Counter;
use crate::retry::{pause, until_ok};
use crate::service::Ingest;

/// Dead-letter header: the problem+json document saying why.
pub const PROBLEM_HEADER: &str = "stock_problem";
/// Dead-letter header: the service's HTTP status (absent when the record was unreadable).
pub const STATUS_HEADER: &str = "stock_dlq_status";
/// Dead-letter header: `refused` (the service said 4xx) or `unreadable` (not a CloudEvent).
pub const REASON_HEADER: &str = "stock_dlq_reason";
/// Dead-letter header: the record's topic.
pub const SOURCE_TOPIC_HEADER: &str = "stock_dlq_source_topic";
/// Dead-letter header: the record's partition (decimal).
pub const SOURCE_PARTITION_HEADER: &str = "stock_dlq_source_partition";
/// Dead-letter header: the record's offset (decimal).
pub const SOURCE_OFFSET_HEADER: &str = "stock_dlq_source_offset";

const STRUCTURED: &str = "application/cloudevents+json";

/// How handling one record ended.
enum Handled {
    /// Answered (accepted or dead-lettered): commit it.
    Done,
    /// Shutdown came before an answer: leave it uncommitted.
    Abandoned,
}

/// Runs the in direction until shutdown.
pub(crate) async fn run(bridge: Arc<Bridge>) -> anyhow::Result<()> {
    let config = &bridge.config;
    let consumer: Arc<StreamConsumer> = Arc::new(
        config
            .kafka(&[
                ("group.id", config.group_id.as_str()),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
            ])
            .create()?,
    );
    consumer.subscribe(&[config.cart_topic.as_str(), config.order_topic.as_str()])?;
    tracing::info!(
        topics = ?[&config.cart_topic, &config.order_topic],
        group = %config.group_id,
        "in: posting records to the service"
    );
    let health = &bridge.health.inbound;
    health.set_running(true);
    loop {
        let received = tokio::select! {
            () = bridge.shutdown.cancelled() => break,
            received = consumer.recv() => received,
        };
        let message = match received {
            Ok(message) => message,
            Err(error) => {
                // librdkafka reconnects by itself; a missing topic or a broker hiccup is
                // worth a log line, not a failure of the direction.
                tracing::warn!(%error, "in: consumer error");
                if !pause(&bridge.shutdown, bridge.config.poll_interval()).await {
                    break;
                }
                continue;
            }
        };
        match handle(&bridge, &message).await {
            Handled::Done => commit(&consumer, &message).await,
            Handled::Abandoned => break,
        }
    }
    health.set_running(false);
    Ok(())
}

/// Commits the offset after `message` for the group and waits for the coordinator. A
/// failed commit (e.g. the partition moved to another member) only means the record will
/// be posted again, which the service treats as a duplicate.
async fn commit(consumer: &Arc<StreamConsumer>, message: &BorrowedMessage<'_>) {
    let mut offsets = TopicPartitionList::new();
    if let Err(error) = offsets.add_partition_offset(
        message.topic(),
        message.partition(),
        Offset::Offset(message.offset() + 1),
    ) {
        tracing::warn!(%error, "in: offset not committed");
        return;
    }
    let consumer = Arc::clone(consumer);
    // A synchronous commit blocks on the coordinator's answer: keep it off the runtime.
    let committed =
        tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync)).await;
    match committed {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "in: offset not committed"),
        Err(error) => tracing::warn!(%error, "in: offset not committed"),
    }
}

/// Posts one record (or dead-letters it) and reports whether it was answered.
async fn handle(bridge: &Bridge, message: &BorrowedMessage<'_>) -> Handled {
    let event = match to_event(message) {
        Ok(event) => event,
        Err(why) => {
            tracing::warn!(topic = message.topic(), partition = message.partition(), offset = message.offset(), %why, "in: record is not a CloudEvent");
            let problem = serde_json::json!({
                "type": "about:blank",
                "title": "Not a CloudEvent",
                "status": 400,
                "detail": why,
                "code": "not_a_cloudevent",
            })
            .to_string();
            return dead_letter(bridge, message, None, &problem).await;
        }
    };
    let health = &bridge.health.inbound;
    let answer = until_ok(
        &bridge.shutdown,
        &bridge.backoff,
        health,
        "posting an event",
        || bridge.service.ingest(event.clone()),
    )
    .await;
    match answer {
        None => Handled::Abandoned,
        Some(Ingest::Accepted) => {
            health.add(Counter::Posted, 1);
            health.success();
            Handled::Done
        }
        Some(Ingest::Refused { status, problem }) => {
            tracing::warn!(id = %event.id(), %status, %problem, "in: event refused, dead-lettered");
            dead_letter(bridge, message, Some(status), &problem).await
        }
    }
}

/// The CloudEvent a record carries, in binary or structured mode; the reason when none.
fn to_event(message: &BorrowedMessage<'_>) -> Result<Event, String> {
    // The SDK's reader unwraps header values and structured payloads: check them first
    // so that a malformed record is dead-lettered instead of stopping the process.
    let mut structured = false;
    if let Some(headers) = message.headers() {
        for header in headers.iter() {
            let Some(value) = header.value else {
                return Err(format!("header {:?} has no value", header.key));
            };
            if header.key == "content-type" && value.starts_with(STRUCTURED.as_bytes()) {
                structured = true;
            }
        }
    }
    if structured && message.payload().is_none() {
        return Err("structured-mode record without a value".to_owned());
    }
    match message.to_event() {
        Ok(event) => Ok(event),
        Err(cloudevents::message::Error::WrongEncoding {}) => {
            // No `ce_specversion` nor CloudEvents content type: accept a value that is a
            // structured CloudEvent anyway (some producers set no headers at all).
            message
                .payload()
                .and_then(|value| serde_json::from_slice::<Event>(value).ok())
                .ok_or_else(|| {
                    "neither binary mode (ce_specversion header) nor structured mode \
                     (content-type application/cloudevents+json)"
                        .to_owned()
                })
        }
        Err(error) => Err(error.to_string()),
    }
}

/// Copies `message` (value, key, headers) to the dead-letter topic with the problem
/// headers added, and waits for the broker's acknowledgement.
async fn dead_letter(
    bridge: &Bridge,
    message: &BorrowedMessage<'_>,
    status: Option<StatusCode>,
    problem: &str,
) -> Handled {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = message.headers() {
        for header in original.iter() {
            headers = headers.insert(header);
        }
    }
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    let status_text = status.map(|s| s.as_u16().to_string());
    let mut added = vec![
        (PROBLEM_HEADER, problem),
        (
            REASON_HEADER,
            if status.is_some() {
                "refused"
            } else {
                "unreadable"
            },
        ),
        (SOURCE_TOPIC_HEADER, message.topic()),
        (SOURCE_PARTITION_HEADER, partition.as_str()),
        (SOURCE_OFFSET_HEADER, offset.as_str()),
    ];
    if let Some(status) = &status_text {
        added.push((STATUS_HEADER, status.as_str()));
    }
    for (key, value) in added {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let health = &bridge.health.inbound;
    let sent = until_ok(
        &bridge.shutdown,
        &bridge.backoff,
        health,
        "dead-lettering a record",
        || async {
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&bridge.config.dlq_topic).headers(headers.clone());
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            if let Some(value) = message.payload() {
                record = record.payload(value);
            }
            bridge
                .producer
                .send(record, Timeout::Never)
                .await
                .map_err(|(error, _): (KafkaError, _)| error)
        },
    )
    .await;
    match sent {
        None => Handled::Abandoned,
        Some(_) => {
            health.add(Counter::DeadLettered, 1);
            health.success();
            Handled::Done
        }
    }
}
