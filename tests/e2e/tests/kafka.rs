//! The Kafka round trip (see `stock_e2e::kafka`): the service on the test host, and on a
//! real `spin up` when a `spin` binary is available (`SPIN_BIN` or `PATH`; required under
//! CI), with the `stock-bridge` binary and one broker — `tansu` when there is one
//! (`TANSU_BIN` or `PATH`; required under CI), else librdkafka's mock cluster.

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    use std::sync::Arc;

    use libtest_mimic::{Arguments, Failed, Trial};
    use stock_e2e::kafka::{self, Broker};

    use stock_e2e::targets;
    use stock_test_host::spin;

    let args = Arguments::from_args();
    let host_topics = kafka::Topics::new("host");
    let spin_topics = kafka::Topics::new("spin");
    let broker = Broker::start().and_then(|broker| {
        broker.prepare(&host_topics)?;
        broker.prepare(&spin_topics)?;
        Ok(broker)
    });
    let broker = match broker {
        Ok(broker) => broker,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::exit(101);
        }
    };
    let endpoint = Arc::new(broker.endpoint());
    let spin_bin = spin::binary();
    let skip_spin = spin_bin.is_none() && !spin::required();
    if skip_spin {
        eprintln!("note: no `spin` binary (SPIN_BIN or PATH): spin::kafka_round_trip is NOT RUN");
    }
    let report = |target: &str, broker: &kafka::Endpoint, r: kafka::RoundTrip| {
        eprintln!(
            "kafka round trip ({target}, {}): in: {} cart records → {} reservations, {} dead letter; \
             out: {} history entries of 4 products → {} records on stock.events ({} repeats, each \
             the same record under the same id), bridge killed (SIGKILL) {} times, every {} ms, \
             and restarted; every entry arrived, in product order",
            broker.name,
            r.cart_records,
            r.reservations,
            r.dead_letters,
            r.entries,
            r.records_out,
            r.repeats,
            kafka::KILLS,
            r.bridge_killed_every.as_millis(),
        );
    };

    let on_host = Arc::clone(&endpoint);
    let mut trials = vec![Trial::test("host::kafka_round_trip", move || {
        let host = targets::start_test_host().map_err(|e| Failed::from(format!("{e:#}")))?;
        let r = kafka::round_trip(host.base_url(), &on_host, &host_topics, "host")
            .map_err(|e| Failed::from(format!("{e:#}")))?;
        report("test host", &on_host, r);
        Ok(())
    })];
    let on_spin = Arc::clone(&endpoint);
    trials.push(
        Trial::test("spin::kafka_round_trip", move || {
            let bin = spin_bin
                .as_ref()
                .ok_or("no spin binary (set SPIN_BIN): required under CI")?;
            let running = targets::start_spin(bin).map_err(|e| Failed::from(format!("{e:#}")))?;
            let r = kafka::round_trip(running.base_url(), &on_spin, &spin_topics, "spin")
                .map_err(|e| Failed::from(format!("{e:#}")))?;
            report("spin up", &on_spin, r);
            Ok(())
        })
        .with_ignored_flag(skip_spin),
    );
    let conclusion = libtest_mimic::run(&args, trials);
    // `exit` skips destructors: stop the broker first.
    drop(broker);
    conclusion.exit();
}

#[cfg(target_arch = "wasm32")]
fn main() {}
