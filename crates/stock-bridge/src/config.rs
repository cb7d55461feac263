//! The bridge's settings: command-line flags, each with an environment variable and a
//! default, parsed by `clap`. The binary parses them from the process; tests build them
//! with [`Config::try_parse_from`](clap::Parser::try_parse_from).

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use rdkafka::ClientConfig;
use reqwest::Url;

/// Which directions the process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Both `out` and `in`.
    Both,
    /// Only the feed → Kafka direction.
    Out,
    /// Only the Kafka → `POST /v1/events` direction.
    In,
}

impl Mode {
    /// Whether the feed → `stock.events` direction runs.
    pub fn runs_out(self) -> bool {
        matches!(self, Mode::Both | Mode::Out)
    }

    /// Whether the cart/order topics → service direction runs.
    pub fn runs_in(self) -> bool {
        matches!(self, Mode::Both | Mode::In)
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line (for a log collector).
    Json,
}

/// One extra librdkafka setting, `key=value` (e.g. `security.protocol=SASL_SSL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSetting {
    /// librdkafka property name.
    pub key: String,
    /// Its value, as librdkafka reads it.
    pub value: String,
}

impl FromStr for KafkaSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok(KafkaSetting {
                key: key.trim().to_owned(),
                value: value.to_owned(),
            }),
            _ => Err(format!("expected key=value, got {s:?}")),
        }
    }
}

/// Every setting of the bridge.
///
/// Durations are given in milliseconds or seconds as their flag names say.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "stock-bridge",
    version,
    about = "Publishes the stock service's event feed to Kafka (out) and feeds the cart and \
             order services' Kafka topics into POST /v1/events (in).",
    long_about = None,
    args_override_self = true
)]
pub struct Config {
    /// Kafka bootstrap servers (librdkafka `bootstrap.servers`).
    #[arg(long, env = "KAFKA_BROKERS", default_value = "localhost:9092")]
    pub brokers: String,

    /// Base URL of the stock service (the feed is `{url}/v1/events`).
    #[arg(
        long,
        env = "STOCK_SERVICE_URL",
        default_value = "http://127.0.0.1:9003"
    )]
    pub service_url: Url,

    /// Bearer token for `POST /v1/events` (the service's `service_token`); required by `in`.
    #[arg(long, env = "STOCK_SERVICE_TOKEN", hide_env_values = true)]
    pub service_token: Option<String>,

    /// Directions to run.
    #[arg(long, env = "STOCK_BRIDGE_MODE", value_enum, default_value_t = Mode::Both)]
    pub mode: Mode,

    /// out: topic the feed's entries are produced to (binary-mode CloudEvents, key = product id).
    #[arg(
        long,
        env = "STOCK_BRIDGE_EVENTS_TOPIC",
        default_value = "stock.events"
    )]
    pub events_topic: String,

    /// out: partitions of the events topic when the bridge creates it.
    #[arg(long, env = "STOCK_BRIDGE_EVENTS_PARTITIONS", default_value_t = 3)]
    pub events_partitions: i32,

    /// out: compacted topic holding the feed cursor of each feed partition (key = partition number).
    #[arg(
        long,
        env = "STOCK_BRIDGE_POSITIONS_TOPIC",
        default_value = "stock.events.positions"
    )]
    pub positions_topic: String,

    /// in: the cart service's topic.
    #[arg(long, env = "STOCK_BRIDGE_CART_TOPIC", default_value = "cart.events")]
    pub cart_topic: String,

    /// in: the order service's topic.
    #[arg(long, env = "STOCK_BRIDGE_ORDER_TOPIC", default_value = "order.events")]
    pub order_topic: String,

    /// in: dead-letter topic for records the service refused (4xx) or that are not CloudEvents.
    #[arg(
        long,
        env = "STOCK_BRIDGE_DLQ_TOPIC",
        default_value = "stock.events.dlq"
    )]
    pub dlq_topic: String,

    /// in: Kafka consumer group id.
    #[arg(long, env = "STOCK_BRIDGE_GROUP_ID", default_value = "stock-bridge")]
    pub group_id: String,

    /// Create the bridge's own topics (events, positions, DLQ) when missing.
    #[arg(long, env = "STOCK_BRIDGE_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub create_topics: bool,

    /// Replication factor of the topics the bridge creates (-1: the broker's default).
    #[arg(long, env = "STOCK_BRIDGE_REPLICATION_FACTOR", default_value_t = -1, allow_negative_numbers = true)]
    pub replication_factor: i32,

    /// Address of the health endpoint (`GET /healthz`).
    #[arg(
        long,
        env = "STOCK_BRIDGE_HEALTH_LISTEN",
        default_value = "127.0.0.1:9100"
    )]
    pub health_listen: SocketAddr,

    /// out: wait between two polls of a caught-up feed partition, in milliseconds.
    #[arg(long, env = "STOCK_BRIDGE_POLL_INTERVAL_MS", default_value_t = 500)]
    pub poll_interval_ms: u64,

    /// out: entries asked for per feed page (1..=500).
    #[arg(long, env = "STOCK_BRIDGE_PAGE_SIZE", default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub page_size: u16,

    /// First retry delay after a transient failure, in milliseconds (doubles up to the maximum).
    #[arg(long, env = "STOCK_BRIDGE_RETRY_MIN_MS", default_value_t = 200)]
    pub retry_min_ms: u64,

    /// Longest retry delay, in milliseconds.
    #[arg(long, env = "STOCK_BRIDGE_RETRY_MAX_MS", default_value_t = 30_000)]
    pub retry_max_ms: u64,

    /// `/healthz` answers 503 once a direction has been failing for this many seconds.
    #[arg(long, env = "STOCK_BRIDGE_UNHEALTHY_AFTER_SECS", default_value_t = 60)]
    pub unhealthy_after_secs: u64,

    /// Extra librdkafka setting `key=value`, repeatable (env: `;`-separated); applied to
    /// every Kafka client after the bridge's own settings, so it can override them.
    #[arg(
        long = "kafka-config",
        env = "STOCK_BRIDGE_KAFKA_CONFIG",
        value_delimiter = ';'
    )]
    pub kafka_config: Vec<KafkaSetting>,

    /// Log format (level from `RUST_LOG`, default `info`).
    #[arg(long, env = "STOCK_BRIDGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Config {
    /// librdkafka settings shared by every client: the brokers, then `--kafka-config`.
    pub(crate) fn kafka(&self, overrides: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in overrides {
            config.set(*key, *value);
        }
        for setting in &self.kafka_config {
            config.set(&setting.key, &setting.value);
        }
        config
    }

    /// `--poll-interval-ms` as a duration.
    pub(crate) fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_kafka_settings_split_at_the_first_equals_sign() {
        let config = Config::try_parse_from([
            "stock-bridge",
            "--kafka-config",
            "security.protocol=SASL_SSL",
            "--kafka-config=sasl.password=a=b",
        ])
        .unwrap();
        let settings: Vec<(&str, &str)> = config
            .kafka_config
            .iter()
            .map(|s| (s.key.as_str(), s.value.as_str()))
            .collect();
        assert_eq!(
            settings,
            [("security.protocol", "SASL_SSL"), ("sasl.password", "a=b")]
        );
        let kafka = config.kafka(&[("security.protocol", "PLAINTEXT")]);
        assert_eq!(
            kafka.get("security.protocol"),
            Some("SASL_SSL"),
            "flags win"
        );
        assert!(Config::try_parse_from(["stock-bridge", "--kafka-config", "novalue"]).is_err());
    }

    #[test]
    fn page_size_stays_in_the_feed_limit_and_a_repeated_flag_keeps_the_last() {
        assert!(Config::try_parse_from(["stock-bridge", "--page-size", "0"]).is_err());
        assert!(Config::try_parse_from(["stock-bridge", "--page-size", "501"]).is_err());
        let config =
            Config::try_parse_from(["stock-bridge", "--mode", "in", "--mode", "out"]).unwrap();
        assert_eq!(config.mode, Mode::Out);
        assert!(config.mode.runs_out() && !config.mode.runs_in());
    }
}
