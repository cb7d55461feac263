//! Creating the bridge's own topics when they are missing: the events topic (its
//! partition count from `--events-partitions`), the compacted positions topic, and the
//! dead-letter topic. The cart and order topics belong to their services and are left alone.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use crate::config::Config;

/// Creates the topics the enabled directions write to. "Already exists" is success; any
/// other refusal (no rights, a broker without the CreateTopics API) is logged and the
/// bridge goes on, since the topics may have been made by an operator.
pub(crate) async fn ensure(config: &Config) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = config.kafka(&[]).create()?;
    let replication = || TopicReplication::Fixed(config.replication_factor);
    let mut topics = Vec::new();
    if config.mode.runs_out() {
        topics.push(NewTopic::new(
            &config.events_topic,
            config.events_partitions,
            replication(),
        ));
        // One partition: the cursors are few and tiny; compaction keeps the last per key,
        // as Kafka Connect's offset storage topic does.
        topics.push(
            NewTopic::new(&config.positions_topic, 1, replication())
                .set("cleanup.policy", "compact"),
        );
    }
    if config.mode.runs_in() {
        topics.push(NewTopic::new(&config.dlq_topic, 1, replication()));
    }
    if topics.is_empty() {
        return Ok(());
    }
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    match admin.create_topics(&topics, &options).await {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(name) => tracing::info!(topic = %name, "created topic"),
                    Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                        tracing::debug!(topic = %name, "topic exists")
                    }
                    Err((name, code)) => {
                        tracing::warn!(topic = %name, error = %code, "could not create topic")
                    }
                }
            }
        }
        Err(error) => tracing::warn!(%error, "could not create topics"),
    }
    Ok(())
}
