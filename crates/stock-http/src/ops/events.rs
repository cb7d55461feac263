//! Events (SPEC §4): the global feed of every product's history as CloudEvents, and the
//! cart and order events the service consumes.

use http::{Request, Response, StatusCode};
use stock_domain::StockApi;
use stock_domain::service::FeedCursor;

use crate::auth::{Token, authorize};
use crate::inbound::{Received, cloud_event};
use crate::problem::{Code, Problem};
use crate::request::{page_limit, query, query_units};
use crate::response::{json, respond};
use crate::wire::{CloudEvent, FeedBody, IngestBody};

/// Feed page sizes.
pub const DEFAULT_FEED_LIMIT: usize = 100;
pub const MAX_FEED_LIMIT: usize = 500;

/// `GET /v1/events?partition=<p>&after=<cursor>&limit=<1..500>` → 200 with
/// `{"partitions", "partition"?, "events": [CloudEvent…], "next_after": cursor}`: one
/// partition in its order, or (without `partition`) all of them, slot by slot. Entries
/// are served once final (`FEED_DELAY_MS` after they were written), so paging with
/// `next_after` while writes go on never skips nor repeats one.
pub fn events_feed<S: StockApi>(svc: &S, req: &Request<Vec<u8>>) -> Response<Vec<u8>> {
    respond(|| {
        let params = query(req, &["partition", "after", "limit"])?;
        let partition = params
            .get("partition")
            .map(|raw| {
                query_units(raw)
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| {
                        Problem::new(
                            Code::InvalidPartition,
                            "partition must be a whole number below the feed's partition count",
                        )
                    })
            })
            .transpose()?;
        let after = params
            .get("after")
            .map(|raw| {
                FeedCursor::parse(raw).map_err(|_| {
                    Problem::new(
                        Code::InvalidCursor,
                        "after must be a next_after value returned by this feed",
                    )
                })
            })
            .transpose()?;
        let limit = page_limit(params.get("limit"), DEFAULT_FEED_LIMIT, MAX_FEED_LIMIT)?;
        let page = svc.feed(partition, after.as_ref(), limit)?;
        let body = FeedBody {
            partitions: page.partitions,
            partition,
            events: page.entries.into_iter().map(CloudEvent::new).collect(),
            next_after: page.next,
        };
        Ok(json(StatusCode::OK, &body))
    })
}

/// `POST /v1/events` (service token) with one CloudEvent from the cart or order service
/// (see [`crate::inbound`]) → 200 with what applying it did. A redelivery (same `source`
/// and `id`) changes nothing and answers `"duplicate": true`.
pub fn ingest_event<S: StockApi>(
    svc: &S,
    req: &Request<Vec<u8>>,
    service: &Token,
) -> Response<Vec<u8>> {
    respond(|| {
        authorize(req, service)?;
        query(req, &[])?;
        let Received { event, raw_type } = cloud_event(req)?;
        let (id, source) = (event.id.clone(), event.source.clone());
        let outcome = svc.ingest(event)?;
        Ok(json(
            StatusCode::OK,
            &IngestBody::new(id, source, raw_type, outcome),
        ))
    })
}
