//! SPEC §7: a product with 10,000 pending reservations must not turn every write into a
//! megabyte rewrite. Holds aggregate by expiry second, history leaves the record through
//! its outbox, and in-flight entries are settled as writes go by.

mod common;

use common::*;
use stock_domain::indexes;
use stock_domain::storage::keys;

#[test]
fn ten_thousand_pending_reservations_keep_every_record_a_reserve_touches_small() {
    let mut w = World::new();
    w.svc().update_stock(update("hot", 20_000)).unwrap();
    let svc = w.svc();
    // Spread over most of the default 15-minute TTL (one every 85 ms, so none has
    // expired at the end): about 850 distinct expiry seconds.
    let mut last = None;
    for _ in 0..10_000 {
        last = Some(svc.reserve(reserve(&[("hot", 1)])).unwrap());
        w.clock.advance(85);
    }
    let last = last.unwrap();
    let stock = svc.get_stock(&pid("hot")).unwrap();
    assert_eq!(stock.reserved_quantity, 10_000);

    let snapshot = w.kv.snapshot();
    let size = |key: &str| snapshot.get(key).map_or(0, Vec::len);
    let product = size(&keys::product(&pid("hot")));
    let reservation = size(&keys::reservation(&last.reservation_id));
    let history = size(&keys::history(&pid("hot"), 100));
    // The largest shard of the due reservations (every reserve adds to one).
    let due = snapshot
        .iter()
        .filter(|(k, _)| k.starts_with("due/") && k.as_str() != indexes::keys::DUE_MARK)
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(0);
    eprintln!(
        "record sizes after 10,000 pending reservations: product {product} B, \
         reservation {reservation} B, history entry {history} B, due shard {due} B"
    );
    assert!(due < 8 * 1024, "due shard is {due} bytes");
    assert!(product < 32 * 1024, "product record is {product} bytes");
    assert!(
        reservation < 2 * 1024,
        "reservation record is {reservation} bytes"
    );
    assert!(history < 2 * 1024, "history entry is {history} bytes");
    w.check_settled();
}
