//! Where the out direction keeps its place: the feed cursor of each feed partition, as
//! records of a compacted Kafka topic (key = the partition number in decimal, value = the
//! cursor), like Kafka Connect's offset storage topic. A cursor is written only once every
//! entry of the page it ends has been acknowledged by the broker, so a restart resumes at
//! most one page back per partition, and re-produces those entries with their same ids.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;

/// The last cursor stored for each feed partition.
pub(crate) type Positions = HashMap<u32, String>;

/// Why the positions could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PositionsError {
    /// A Kafka call failed (broker unreachable, metadata, fetch).
    #[error("reading the positions topic: {0}")]
    Kafka(#[from] KafkaError),
    /// The end of the topic was not reached in time.
    #[error("reading the positions topic: end not reached within {0:?}")]
    Timeout(Duration),
    /// The blocking reader task died.
    #[error("reading the positions topic: {0}")]
    Task(#[from] tokio::task::JoinError),
}

const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);
const READ_DEADLINE: Duration = Duration::from_secs(120);

/// Reads the positions topic from its start to its high watermark, as it is now, and
/// keeps the last value of each key (a record without value forgets the key). A topic
/// that does not exist yet holds no positions.
pub(crate) async fn load(config: &Config) -> Result<Positions, PositionsError> {
    // A group id only to satisfy librdkafka's consumer: partitions are assigned by hand,
    // so the group is never joined and nothing is committed.
    let group = format!("{}.positions-reader", config.group_id);
    let consumer: BaseConsumer = config
        .kafka(&[
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "true"),
            ("allow.auto.create.topics", "false"),
        ])
        .create()?;
    let topic = config.positions_topic.clone();
    // librdkafka's metadata, watermark and poll calls block: keep them off the runtime.
    tokio::task::spawn_blocking(move || read_to_end(&consumer, &topic)).await?
}

fn read_to_end(consumer: &BaseConsumer, topic: &str) -> Result<Positions, PositionsError> {
    let mut positions = Positions::new();
    let metadata = match consumer.fetch_metadata(Some(topic), KAFKA_TIMEOUT) {
        Ok(metadata) => metadata,
        // No positions topic yet: nothing stored. Any other failure (a timeout from a busy
        // broker, say) is retried by the caller: starting over from the feed's beginning
        // would publish every entry again.
        Err(KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
        )) => return Ok(positions),
        Err(error) => return Err(error.into()),
    };
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(positions);
    };
    if found.error().is_some() {
        // Unknown topic: nothing stored yet.
        return Ok(positions);
    }
    // The end to reach in each partition, measured before reading.
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in found.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, partition.id(), KAFKA_TIMEOUT)?;
        if high > low {
            ends.insert(partition.id(), high);
            assignment.add_partition_offset(topic, partition.id(), Offset::Offset(low))?;
        }
    }
    if ends.is_empty() {
        return Ok(positions);
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + READ_DEADLINE;
    while !ends.is_empty() {
        if Instant::now() > deadline {
            return Err(PositionsError::Timeout(READ_DEADLINE));
        }
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                ends.remove(&partition);
            }
            Some(Err(error)) => return Err(error.into()),
            Some(Ok(message)) => {
                if ends
                    .get(&message.partition())
                    .is_some_and(|end| message.offset() + 1 >= *end)
                {
                    ends.remove(&message.partition());
                }
                let key = message
                    .key()
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .and_then(|k| k.parse::<u32>().ok());
                let Some(key) = key else {
                    tracing::warn!(
                        offset = message.offset(),
                        "positions record without a partition-number key, ignored"
                    );
                    continue;
                };
                match message.payload().map(std::str::from_utf8) {
                    Some(Ok(cursor)) => {
                        positions.insert(key, cursor.to_owned());
                    }
                    None => {
                        positions.remove(&key);
                    }
                    Some(Err(_)) => {
                        tracing::warn!(
                            partition = key,
                            "positions record with a non-UTF-8 cursor, ignored"
                        )
                    }
                }
            }
        }
    }
    Ok(positions)
}

/// Stores `cursor` as the position of feed `partition` and waits for the broker's
/// acknowledgement.
pub(crate) async fn store(
    producer: &FutureProducer,
    topic: &str,
    partition: u32,
    cursor: &str,
) -> Result<(), KafkaError> {
    let key = partition.to_string();
    let record = FutureRecord::to(topic).key(&key).payload(cursor);
    producer
        .send(record, Timeout::Never)
        .await
        .map(|_| ())
        .map_err(|(error, _)| error)
}
