//! The bridge against librdkafka's mock cluster and a fake stock service: the out
//! direction (every entry, in order, as binary-mode CloudEvents, positions stored), a
//! crash and restart, the in direction (posts, dead letters, retries, commits after the
//! answer), and shutdown.

#![cfg(not(target_arch = "wasm32"))]

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use support::*;

const EVENTS: &str = "stock.events";
const POSITIONS: &str = "stock.events.positions";
const SECOND: Duration = Duration::from_secs(1);

fn mock() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(EVENTS, 3, 1).unwrap();
    mock.create_topic(POSITIONS, 1, 1).unwrap();
    mock
}

/// Per product, the `seq` of each record, in topic order.
fn sequences(messages: &[rdkafka::message::OwnedMessage]) -> HashMap<String, Vec<u64>> {
    let mut by_product: HashMap<String, Vec<u64>> = HashMap::new();
    for message in messages {
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        let data: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        by_product
            .entry(key)
            .or_default()
            .push(data["seq"].as_u64().unwrap());
    }
    by_product
}

/// The last cursor stored for each feed partition.
fn stored_positions(brokers: &str, expected_at_least: usize) -> HashMap<String, String> {
    read_topic(
        brokers,
        POSITIONS,
        expected_at_least,
        SECOND / 2,
        10 * SECOND,
    )
    .iter()
    .map(|m| {
        (
            String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
            String::from_utf8(m.payload().unwrap().to_vec()).unwrap(),
        )
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_publishes_every_entry_in_order_as_binary_cloudevents() {
    let mock = mock();
    let brokers = mock.bootstrap_servers();
    let service = FakeService::start(4).await;
    let products = fill_feed(&service, 4, 10, 12); // 120 entries over 4 feed partitions
    let total = 120;
    let health = free_address();
    let config = config(&brokers, &service, health, &["--mode=out", "--page-size=7"]);
    let shutdown = CancellationToken::new();
    let bridge = tokio::spawn(stock_bridge::run(config, shutdown.clone()));

    let messages = read_topic(&brokers, EVENTS, total, 2 * SECOND, 60 * SECOND);
    assert_eq!(messages.len(), total, "every entry exactly once");
    for message in &messages {
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        let id = header(message, "ce_id").unwrap();
        let (product, seq) = id.split_once(':').unwrap();
        let seq: usize = seq.parse().unwrap();
        let expected = feed_entry(product, seq);
        assert_eq!(key, product, "keyed by product");
        assert_eq!(header(message, "ce_specversion").as_deref(), Some("1.0"));
        assert_eq!(header(message, "ce_type").unwrap(), expected["type"]);
        assert_eq!(header(message, "ce_source").unwrap(), expected["source"]);
        assert_eq!(header(message, "ce_subject").as_deref(), Some(product));
        assert_eq!(header(message, "ce_partitionkey").as_deref(), Some(product));
        assert_eq!(
            header(message, "content-type").as_deref(),
            Some("application/json")
        );
        assert!(
            header(message, "ce_time")
                .unwrap()
                .starts_with("2026-12-01T04:12:42.081")
        );
        let data: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        assert_eq!(data, expected["data"], "value is the entry's data");
    }
    let by_product = sequences(&messages);
    for product in &products {
        assert_eq!(
            by_product[product],
            (0..12).collect::<Vec<u64>>(),
            "{product} in order"
        );
    }

    // The positions topic ends with each partition's last cursor.
    let expected: HashMap<String, String> = (0..4)
        .map(|p| (p.to_string(), service.last_cursor(p)))
        .collect();
    eventually("final positions", 20 * SECOND, || {
        stored_positions(&brokers, 4) == expected
    })
    .await;

    let (status, body) = healthz(health).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["out"]["counts"]["produced"], json!(total));
    assert_eq!(body["out"]["running"], json!(true));
    assert_eq!(body["in"]["enabled"], json!(false));

    stop(&shutdown, bridge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_follows_an_empty_page_whose_cursor_moved_past_slots_that_serve_nothing() {
    let mock = mock();
    let brokers = mock.bootstrap_servers();
    let service = FakeService::start(2).await;
    // Three pages' worth of dead slots before the entries: a bridge that kept its cursor
    // on an empty page would ask for the first page for ever.
    service.set_dead_slots(20);
    fill_feed(&service, 2, 4, 5);
    let total = 20;
    let health = free_address();
    let config = config(&brokers, &service, health, &["--mode=out", "--page-size=7"]);
    let shutdown = CancellationToken::new();
    let bridge = tokio::spawn(stock_bridge::run(config, shutdown.clone()));

    let messages = read_topic(&brokers, EVENTS, total, 2 * SECOND, 60 * SECOND);
    assert_eq!(messages.len(), total, "every entry exactly once");
    let expected: HashMap<String, String> = (0..2)
        .map(|p| (p.to_string(), service.last_cursor(p)))
        .collect();
    eventually("final positions", 20 * SECOND, || {
        stored_positions(&brokers, 2) == expected
    })
    .await;

    stop(&shutdown, bridge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_resumes_from_stored_positions_after_a_crash() {
    let mock = mock();
    let brokers = mock.bootstrap_servers();
    let partitions = 3;
    let page = 5;
    let per_product = 20;
    let service = FakeService::start(partitions).await;
    let products = fill_feed(&service, partitions, 9, per_product); // 180 entries
    let total = 9 * per_product;
    // Slow acknowledgements in the first run, so that it dies with records appended but
    // not yet acknowledged, nor their page's position written.
    mock.broker_round_trip_time(1, Duration::from_millis(150))
        .unwrap();
    let page_flag = format!("--page-size={page}");
    let args = ["--mode=out", page_flag.as_str()];

    // First run, killed mid-stream (the task aborted, as a crash would).
    let first = tokio::spawn(stock_bridge::run(
        config(&brokers, &service, free_address(), &args),
        CancellationToken::new(),
    ));
    eventually("part of the feed produced", 60 * SECOND, || {
        count_records(&brokers, EVENTS) >= 40
    })
    .await;
    first.abort();
    let _ = first.await;
    // Let what the dead process had on the wire land, then read what it left.
    mock.broker_round_trip_time(1, Duration::ZERO).unwrap();
    tokio::time::sleep(SECOND).await;
    let after_first = count_records(&brokers, EVENTS);
    assert!(
        after_first < total as i64,
        "stopped mid-stream ({after_first})"
    );
    let stored = stored_positions(&brokers, count_records(&brokers, POSITIONS) as usize);
    assert!(!stored.is_empty(), "positions stored during the first run");

    // Second run: resumes from the positions.
    service.clear_feed_requests();
    let shutdown = CancellationToken::new();
    let second = tokio::spawn(stock_bridge::run(
        config(&brokers, &service, free_address(), &args),
        shutdown.clone(),
    ));
    let messages = read_topic(&brokers, EVENTS, total, 2 * SECOND, 60 * SECOND);
    let ids: HashSet<String> = messages
        .iter()
        .map(|m| header(m, "ce_id").unwrap())
        .collect();
    assert_eq!(ids.len(), total, "every entry produced");
    let by_product = sequences(&messages);
    for product in &products {
        // Each record is the next new entry or a repeat of one already seen (same id):
        // first occurrences are in order.
        let mut seen = Vec::new();
        for seq in &by_product[product] {
            if !seen.contains(seq) {
                seen.push(*seq);
            }
        }
        assert_eq!(
            seen,
            (0..per_product as u64).collect::<Vec<_>>(),
            "{product} in order"
        );
    }
    for message in &messages {
        let id = header(message, "ce_id").unwrap();
        let (product, seq) = id.split_once(':').unwrap();
        let data: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        assert_eq!(
            data["seq"].as_u64().unwrap().to_string(),
            seq,
            "a duplicate has its entry's id"
        );
        assert_eq!(data["product"], product);
    }
    let duplicates = messages.len() - total;
    eprintln!("first run produced {after_first}, duplicates {duplicates}, stored {stored:?}");
    assert!(
        duplicates <= page * partitions,
        "at most one page per partition produced again, got {duplicates}"
    );

    // The second run's first page of each partition asked after its stored cursor.
    let requests = service.feed_requests();
    for (partition, cursor) in &stored {
        let partition: u32 = partition.parse().unwrap();
        let first = requests
            .iter()
            .find(|r| r.partition == partition && (r.after.is_some() || partition != 0))
            .unwrap();
        assert_eq!(
            first.after.as_ref(),
            Some(cursor),
            "partition {partition} resumed"
        );
    }

    stop(&shutdown, second).await;
}

/// A CloudEvent for the cart topic, as a record in binary mode.
fn binary_record(id: &str, ty: &str, cart: &str) -> (OwnedHeaders, Vec<u8>) {
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "ce_specversion",
            value: Some("1.0"),
        })
        .insert(Header {
            key: "ce_id",
            value: Some(id),
        })
        .insert(Header {
            key: "ce_source",
            value: Some("/cart-service"),
        })
        .insert(Header {
            key: "ce_type",
            value: Some(ty),
        })
        .insert(Header {
            key: "ce_subject",
            value: Some(cart),
        })
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        });
    let data = json!({"cartId": cart, "productId": "SKU-1", "quantity": 2});
    (headers, serde_json::to_vec(&data).unwrap())
}

/// A CloudEvent for the cart topic, as a record in structured mode.
fn structured_record(id: &str, ty: &str, cart: &str) -> (OwnedHeaders, Vec<u8>) {
    let headers = OwnedHeaders::new().insert(Header {
        key: "content-type",
        value: Some("application/cloudevents+json; charset=utf-8"),
    });
    let event = json!({
        "specversion": "1.0", "id": id, "source": "/cart-service", "type": ty, "subject": cart,
        "datacontenttype": "application/json",
        "data": {"cartId": cart, "productId": "SKU-1", "quantity": 3},
    });
    (headers, serde_json::to_vec(&event).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_posts_dead_letters_retries_and_commits_after_the_answer() {
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    for topic in ["cart.events", "order.events", "stock.events.dlq"] {
        mock.create_topic(topic, 1, 1).unwrap();
    }
    let service = FakeService::start(1).await;
    service.script("bad-1", &[400]);
    service.script("flaky-1", &[503, 503]);

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let records = vec![
        binary_record("add-1", "com.example.cart.CartItemAdded", "cart-1"),
        structured_record("update-1", "com.example.cart.CartItemUpdated", "cart-1"),
        binary_record("bad-1", "com.example.cart.CartItemAdded", "cart-2"),
        (
            OwnedHeaders::new().insert(Header {
                key: "origin",
                value: Some("test"),
            }),
            b"not a cloudevent".to_vec(),
        ),
        binary_record("flaky-1", "com.example.cart.CartItemRemoved", "cart-1"),
        structured_record("abandon-1", "com.example.cart.CartAbandoned", "cart-1"),
    ];
    for (headers, value) in &records {
        producer
            .send(
                FutureRecord::to("cart.events")
                    .key("cart-1")
                    .payload(value)
                    .headers(headers.clone()),
                SECOND,
            )
            .await
            .unwrap();
    }
    let flaky_offset = 4;

    let health = free_address();
    let shutdown = CancellationToken::new();
    let config = config(
        &brokers,
        &service,
        health,
        &[
            "--mode=in",
            "--retry-min-ms=400",
            "--retry-max-ms=400",
            "--group-id=bridge-test",
        ],
    );
    let bridge = tokio::spawn(stock_bridge::run(config, shutdown.clone()));

    // While the service answers 503, the record is not committed.
    eventually("the first 503", 30 * SECOND, || {
        service.posts().iter().any(|p| p.id == "flaky-1")
    })
    .await;
    let during = committed(&brokers, "bridge-test", "cart.events", 0);
    assert!(
        during.is_none_or(|o| o <= flaky_offset),
        "committed {during:?} before the 200"
    );
    eventually("everything committed", 30 * SECOND, || {
        committed(&brokers, "bridge-test", "cart.events", 0) == Some(records.len() as i64)
    })
    .await;

    let posts = service.posts();
    let answered: Vec<(&str, u16)> = posts.iter().map(|p| (p.id.as_str(), p.status)).collect();
    assert_eq!(
        answered,
        [
            ("add-1", 200),
            ("update-1", 200),
            ("bad-1", 400),
            ("flaky-1", 503),
            ("flaky-1", 503),
            ("flaky-1", 200),
            ("abandon-1", 200),
        ],
        "posted in order, 503 retried, 400 not"
    );
    for post in &posts {
        assert_eq!(post.authorization.as_deref(), Some("Bearer secret-token"));
        assert_eq!(post.specversion, "1.0");
        assert_eq!(post.source, "/cart-service");
        assert!(post.ty.starts_with("com.example.cart."));
        assert_eq!(
            post.content_type.as_deref(),
            Some("application/json"),
            "binary mode"
        );
        assert_eq!(
            post.body["cartId"],
            "cart-1".replace('1', if post.id == "bad-1" { "2" } else { "1" })
        );
    }
    assert_eq!(
        posts[1].body["quantity"], 3,
        "structured record's data posted"
    );

    let dead = read_topic(&brokers, "stock.events.dlq", 2, SECOND, 20 * SECOND);
    assert_eq!(dead.len(), 2);
    let refused = &dead[0];
    assert_eq!(
        refused.payload().unwrap(),
        records[2].1.as_slice(),
        "value kept"
    );
    assert_eq!(refused.key(), Some(b"cart-1".as_slice()), "key kept");
    assert_eq!(
        header(refused, "ce_id").as_deref(),
        Some("bad-1"),
        "headers kept"
    );
    assert_eq!(header(refused, "stock_dlq_status").as_deref(), Some("400"));
    assert_eq!(
        header(refused, "stock_dlq_reason").as_deref(),
        Some("refused")
    );
    assert_eq!(
        header(refused, "stock_dlq_source_topic").as_deref(),
        Some("cart.events")
    );
    assert_eq!(
        header(refused, "stock_dlq_source_partition").as_deref(),
        Some("0")
    );
    assert_eq!(
        header(refused, "stock_dlq_source_offset").as_deref(),
        Some("2")
    );
    let problem: Value = serde_json::from_str(&header(refused, "stock_problem").unwrap()).unwrap();
    assert_eq!(problem["code"], "insufficient_stock");
    assert_eq!(problem["status"], 400);
    let unreadable = &dead[1];
    assert_eq!(unreadable.payload().unwrap(), b"not a cloudevent");
    assert_eq!(header(unreadable, "origin").as_deref(), Some("test"));
    assert_eq!(
        header(unreadable, "stock_dlq_reason").as_deref(),
        Some("unreadable")
    );
    assert_eq!(
        header(unreadable, "stock_dlq_source_offset").as_deref(),
        Some("3")
    );
    assert_eq!(header(unreadable, "stock_dlq_status"), None);
    let problem: Value =
        serde_json::from_str(&header(unreadable, "stock_problem").unwrap()).unwrap();
    assert_eq!(problem["code"], "not_a_cloudevent");

    let (status, body) = healthz(health).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["in"]["counts"]["posted"], json!(4));
    assert_eq!(body["in"]["counts"]["dead_lettered"], json!(2));
    assert_eq!(body["in"]["counts"]["retries"], json!(2));

    stop(&shutdown, bridge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_promptly_and_commits_nothing_unanswered() {
    let mock = mock();
    let brokers = mock.bootstrap_servers();
    mock.create_topic("cart.events", 1, 1).unwrap();
    mock.create_topic("order.events", 1, 1).unwrap();
    let service = FakeService::start(2).await;
    fill_feed(&service, 2, 4, 3);
    // The service is down for this event for a long time: the bridge keeps retrying.
    service.script("stuck-1", &[503; 1000]);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let (headers, value) = binary_record("stuck-1", "com.example.order.OrderConfirmed", "order-1");
    producer
        .send(
            FutureRecord::<(), _>::to("order.events")
                .payload(&value)
                .headers(headers),
            SECOND,
        )
        .await
        .unwrap();

    let health = free_address();
    let shutdown = CancellationToken::new();
    let config = config(&brokers, &service, health, &["--group-id=shutdown-test"]);
    let bridge = tokio::spawn(stock_bridge::run(config, shutdown.clone()));
    eventually("both directions at work", 30 * SECOND, || {
        count_records(&brokers, EVENTS) == 12 && service.posts().len() >= 2
    })
    .await;

    let started = Instant::now();
    shutdown.cancel();
    tokio::time::timeout(5 * SECOND, bridge)
        .await
        .expect("run returns promptly")
        .unwrap()
        .expect("run returns Ok");
    assert!(started.elapsed() < 5 * SECOND);
    assert_eq!(
        committed(&brokers, "shutdown-test", "order.events", 0),
        None,
        "unanswered record not committed"
    );
    assert!(healthz(health).await.is_none(), "health endpoint stopped");
}
