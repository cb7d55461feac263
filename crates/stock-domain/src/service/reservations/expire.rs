//! The expiry sweep (`expire_due`): walks the due index, records lapsed reservations
//! as expired, finishes those abandoned mid-change, and deletes what has outlived its
//! retention.

use super::{ExpireError, ExpireReport, STALE_AFTER_MS};
use crate::indexes::{self, Cursor, Due, DueDay, DueMark, DueShard};
use crate::models::{
    EventKind, LineEffect, OpId, ProductId, ProductRecord, ReservationId, ReservationRecord,
    ReservationState,
};
use crate::ports::{Clock, IdGenerator, KeyValueStore};
use crate::service::{NewEvent, Step, StockService};
use crate::storage::{self, EngineError, Outcome, keys};

use std::collections::HashSet;

/// Store reads one sweep call makes at most (due shards, products, history entries,
/// reservations), so that a sweep after a long pause goes on in later calls.
const MAX_SWEEP_READS: usize = 512;

/// What one sweep call may still do.
struct Budget {
    limit: usize,
    handled: usize,
    reads: usize,
}

impl Budget {
    fn spent(&self) -> bool {
        self.handled >= self.limit || self.reads >= MAX_SWEEP_READS
    }
}

impl<K: KeyValueStore, C: Clock, I: IdGenerator> StockService<K, C, I> {
    /// One call of the sweep: reads the due work from the mark (or from `after`, the
    /// `next` of the previous call) on, dealing with at most `limit` reservations and
    /// records. Records each lapsed reservation as expired (with a `ReservationExpired`
    /// entry in each product's history), finishes those abandoned mid-change, files
    /// pending ones again at their expiry and settled ones at the end of their retention,
    /// and deletes what has outlived its retention (see [`crate::indexes`]). Walks the
    /// days' lists of buckets, so empty stretches cost one read a day; the mark moves
    /// past buckets found empty, and their shards and day lists are deleted.
    pub fn expire_due(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ExpireReport, ExpireError> {
        let mut report = ExpireReport::default();
        let Some(mark) = storage::read::<K, DueMark>(&self.kv, crate::indexes::keys::DUE_MARK)?
        else {
            report.done = true;
            return Ok(report);
        };
        let cursor = after
            .map(|raw| {
                Cursor::parse(raw, u64::MAX, |s| {
                    crate::service::index::digits(s).filter(|n| *n < indexes::DUE_SHARDS)
                })
            })
            .transpose()?;
        let now = self.now();
        let last = indexes::due_bucket(now);
        // Buckets before this one have ended long enough ago that nothing files into them.
        let first_open = now.saturating_sub(indexes::DUE_GRACE_MS) / indexes::DUE_BUCKET_MS;
        let ended = |bucket: u64| bucket < first_open;
        // A cursor names (bucket, shard): its `shard` field carries the bucket.
        let (mut bucket, mut shard) = match &cursor {
            Some(c) if c.shard >= mark.bucket => (c.shard, c.last),
            _ => (mark.bucket, 0),
        };
        // Only a call that starts at the mark knows that nothing lies before it.
        let from_mark = cursor.is_none();
        // The first bucket seen that still holds entries: the mark may move up to it.
        let mut blocked = None;
        let mut budget = Budget {
            limit,
            handled: 0,
            reads: 0,
        };
        // Shards and day lists that nothing will file into any more, found empty.
        let mut gone = Vec::new();
        let mut stop = None;
        'days: while bucket <= last {
            if budget.spent() {
                stop = Some((bucket, shard));
                break;
            }
            let day = bucket / indexes::DUE_BUCKETS_PER_DAY;
            let next_day = (day + 1) * indexes::DUE_BUCKETS_PER_DAY;
            budget.reads += 1;
            let day_key = indexes::keys::due_day(day);
            // Exact reads: what they find absent is taken as empty, and deleted.
            let listed = storage::read_exact::<K, DueDay>(&self.kv, &day_key)?;
            let buckets: Vec<u64> = listed
                .as_ref()
                .map(|d| d.buckets.range(bucket..next_day).copied().collect())
                .unwrap_or_default();
            let mut day_clear = true;
            for b in buckets {
                if b > last {
                    break;
                }
                if b != bucket {
                    (bucket, shard) = (b, 0);
                }
                while shard < indexes::DUE_SHARDS {
                    if budget.spent() {
                        stop = Some((bucket, shard));
                        break 'days;
                    }
                    budget.reads += 1;
                    let key = indexes::keys::due(bucket, shard);
                    if let Some(filed) = storage::read_exact::<K, DueShard>(&self.kv, &key)? {
                        let mut left = false;
                        let mut done = Vec::new();
                        for (entry, due) in &filed.entries {
                            if *due > now || budget.spent() {
                                left = true;
                                continue;
                            }
                            if self.sweep_entry(entry, bucket, now, &mut budget, &mut report)? {
                                done.push((entry.clone(), *due));
                            } else {
                                left = true;
                            }
                        }
                        if !done.is_empty() {
                            self.due_remove(&key, &done)?;
                        }
                        if left {
                            blocked.get_or_insert(bucket);
                            day_clear = false;
                            // Stopped inside this shard: the next call starts with it.
                            if budget.spent() {
                                stop = Some((bucket, shard));
                                break 'days;
                            }
                        } else if ended(bucket) {
                            gone.push(keys::birth(&key));
                            gone.push(key);
                        }
                    }
                    shard += 1;
                }
            }
            if listed.is_some() && day_clear && from_mark && ended(next_day - 1) {
                gone.push(keys::birth(&day_key));
                gone.push(day_key);
            }
            (bucket, shard) = (next_day, 0);
        }
        if !gone.is_empty() {
            self.kv.delete_many(&gone).map_err(EngineError::from)?;
        }
        let reached = stop.map_or(last + 1, |(b, _)| b);
        let to = blocked.unwrap_or(reached).min(reached).min(first_open);
        if from_mark && to > mark.bucket {
            self.advance_due_mark(mark.bucket, to)?;
            // The day list of the new mark keeps only what lies ahead, so that reading it
            // costs what is still to come, not the whole day so far.
            self.unlist_due_buckets_before(to)?;
        }
        report.done = stop.is_none();
        report.next = stop.map(|(bucket, shard)| {
            Cursor {
                shard: bucket,
                last: shard,
            }
            .to_string()
        });
        Ok(report)
    }

    /// Deals with one due entry of `bucket`; returns whether it can go.
    fn sweep_entry(
        &self,
        entry: &str,
        bucket: u64,
        now: u64,
        budget: &mut Budget,
        report: &mut ExpireReport,
    ) -> Result<bool, ExpireError> {
        // An entry no version of the service wrote: nothing to do.
        let Some(due) = Due::parse(entry) else {
            return Ok(true);
        };
        match due {
            // Span after span: a product filed late (by a sweep that was behind) has
            // several lapsed; its entry here can go once none is left up to `bucket`.
            Due::Product(id) => loop {
                let swept = self.sweep_span(&id, bucket, now, budget, report)?;
                if !swept.go_on || budget.spent() {
                    break Ok(swept.settled);
                }
            },
            Due::Reservation(id) => {
                budget.handled += 1;
                budget.reads += 1;
                self.sweep_reservation(&id, now, report)
            }
            Due::Cart(id) => {
                budget.handled += 1;
                budget.reads += 1;
                self.sweep_cart(&id, now, report)?;
                Ok(true)
            }
            Due::Record(key) => {
                budget.handled += 1;
                self.delete_record(&key)?;
                report.deleted += 1;
                Ok(true)
            }
        }
    }

    /// Deletes a record and the counter that elected its creator, if it had one.
    fn delete_record(&self, key: &str) -> Result<(), EngineError> {
        self.kv
            .delete_many(&[key.to_owned(), keys::birth(key)])
            .map_err(EngineError::from)
    }

    /// How long a reservation settled in `state` is kept: a rejection is only an answer
    /// kept for retries under its idempotency key.
    fn retention_of(&self, state: ReservationState) -> u64 {
        match state {
            ReservationState::Rejected => self.config.idempotency_retention_ms,
            _ => self.config.settled_retention_ms,
        }
    }

    /// When a settled record's retention ends: `settled_at` plus `retention`, and never in
    /// the past, where the mark may already be.
    fn retained_until(settled_at: u64, retention: u64, now: u64) -> u64 {
        (settled_at + retention).max(now + 1)
    }

    /// The one-line reservations of `product` in its earliest span that may have lapsed,
    /// read from the part of its history that the product record names, up to the first
    /// whose hold has not lapsed yet. Says whether the product has no span left up to
    /// `bucket`, where it is filed (dropping a span files the product at the next, in
    /// `write_product`, so its later spans need no entry here), and whether the next span
    /// may be looked at.
    fn sweep_span(
        &self,
        id: &ProductId,
        bucket: u64,
        now: u64,
        budget: &mut Budget,
        report: &mut ExpireReport,
    ) -> Result<Swept, ExpireError> {
        let gone = Swept {
            settled: true,
            go_on: false,
        };
        budget.reads += 1;
        let Some(product) = self.read_product(id)? else {
            return Ok(gone);
        };
        // Every span that may have lapsed by now, not only up to `bucket`: a product filed
        // late (by a sweep that was behind) is filed after the spans it has to catch up.
        let Some((&span, &(first, last))) = product.due.range(..=indexes::due_bucket(now)).next()
        else {
            return Ok(gone);
        };
        let retention = self.config.settled_retention_ms;
        let mut seq = first;
        let mut seen = HashSet::new();
        let mut retained = Vec::new();
        while seq <= last && !budget.spent() {
            budget.reads += 1;
            let entry = self.history_entry(id, &product, seq)?;
            seq += 1;
            let rid = match (entry.kind, entry.reservation_id) {
                (EventKind::StockReserved, Some(rid)) if seen.insert(rid.clone()) => rid,
                _ => continue,
            };
            budget.handled += 1;
            budget.reads += 1;
            // Absent: its request died before recording it, and its hold has lapsed.
            let Some(record) =
                storage::read_exact::<K, ReservationRecord>(&self.kv, &keys::reservation(&rid))?
            else {
                continue;
            };
            // Reservations of several lines, and holds of another bucket, are filed on
            // their own.
            if record.lines.len() > 1 || indexes::due_bucket(record.expires_at) != span {
                continue;
            }
            let settled_at = if record.state.is_final() {
                record.updated_at
            } else if now >= record.expires_at {
                if self.record_expiry(record)? {
                    report.expired.push(rid.clone());
                } else {
                    report.repaired.push(rid.clone());
                }
                now
            } else {
                // Holds lapse in about the order they were placed: the rest of the span
                // is for a later call (by the bucket's end, all of it has lapsed).
                seq -= 1;
                break;
            };
            retained.push((
                Due::Reservation(rid).encode(),
                Self::retained_until(settled_at, retention, now),
            ));
        }
        self.due_add_many(retained)?;
        // Progress is kept in the product record, so the next call starts where this one
        // stopped; the bucket goes once its span is done (a reserve that extended the
        // span meanwhile keeps it).
        let op = OpId::new(format!(
            "s{:016x}",
            storage::digest(&["sweep", id.as_str(), &span.to_string(), &seq.to_string()])
        ));
        let outcome = self.write_product(id, &op, |current, _| {
            let Some(current) = current else {
                return Ok::<_, ExpireError>(Step::Keep(gone));
            };
            let Some(&(from, to)) = current.due.get(&span) else {
                return Ok(Step::Keep(Swept::after(current, bucket, now)));
            };
            if from >= seq {
                return Ok(Step::Keep(Swept {
                    settled: false,
                    go_on: false,
                }));
            }
            let mut record = current.clone();
            if to < seq {
                record.due.remove(&span);
            } else {
                record.due.insert(span, (seq, to));
            }
            let result = if to < seq {
                Swept::after(&record, bucket, now)
            } else {
                Swept {
                    settled: false,
                    go_on: false,
                }
            };
            Ok(Step::Write {
                record: Box::new(record),
                events: Vec::new(),
                result,
            })
        })?;
        Ok(match outcome {
            Outcome::Written { result, .. } | Outcome::Kept(result) => result,
            Outcome::AlreadyApplied(record) if !record.due.contains_key(&span) => {
                Swept::after(&record, bucket, now)
            }
            Outcome::AlreadyApplied(_) => Swept {
                settled: false,
                go_on: false,
            },
        })
    }

    /// Deals with one due reservation; returns whether its entry can go.
    fn sweep_reservation(
        &self,
        id: &ReservationId,
        now: u64,
        report: &mut ExpireReport,
    ) -> Result<bool, ExpireError> {
        // Filed before its record was written, by a request that then died or was refused.
        // (The sweep reads exactly what it acts on, deletions included.)
        let Some(record) =
            storage::read_exact::<K, ReservationRecord>(&self.kv, &keys::reservation(id))?
        else {
            return Ok(true);
        };
        let lapsed = matches!(
            record.state,
            ReservationState::Reserving | ReservationState::Pending
        ) && now >= record.expires_at;
        let stale = record.updated_at + STALE_AFTER_MS <= now;
        if lapsed {
            if self.record_expiry(record)? {
                report.expired.push(id.clone());
            } else {
                report.repaired.push(id.clone());
            }
            self.due_add(
                &Due::Reservation(id.clone()),
                Self::retained_until(now, self.config.settled_retention_ms, now),
            )?;
            return Ok(true);
        }
        let record = if record.is_one_line_pending() && stale {
            let seen = self.adopt_finished(record)?;
            if seen.state != ReservationState::Pending {
                report.repaired.push(id.clone());
            }
            seen
        } else if !record.state.is_settled() && stale {
            report.repaired.push(id.clone());
            self.drive(record)?
        } else {
            record
        };
        match record.state {
            // Still to be recorded as expired: filed again at its expiry.
            ReservationState::Pending if now < record.expires_at => {
                self.due_add(&Due::Reservation(id.clone()), record.expires_at)?;
                Ok(true)
            }
            ReservationState::Released
            | ReservationState::Committed
            | ReservationState::Rejected
            | ReservationState::Expired => {
                let retention = self.retention_of(record.state);
                if record.updated_at + retention <= now {
                    self.delete_record(&keys::reservation(id))?;
                    report.deleted += 1;
                } else {
                    self.due_add(
                        &Due::Reservation(id.clone()),
                        Self::retained_until(record.updated_at, retention, now),
                    )?;
                }
                Ok(true)
            }
            // Mid-change and not yet abandoned, or lapsed just now: next time.
            _ => Ok(false),
        }
    }

    /// Returns false when the reservation turns out to have been committed or released
    /// before its expiry (a one-line step whose request died before recording it): its
    /// record is then finished instead.
    fn record_expiry(&self, record: ReservationRecord) -> Result<bool, ExpireError> {
        if record.is_one_line_pending()
            && self.adopt_finished(record.clone())?.state != ReservationState::Pending
        {
            return Ok(false);
        }
        // History first, keyed by an operation id derived from the reservation, so a
        // sweep that dies half-way and runs again does not record an expiry twice.
        let op = OpId::new(format!(
            "x{:016x}",
            storage::digest(&["expire", record.id.as_str()])
        ));
        for line in &record.lines {
            self.write_product(&line.product_id, &op, |current, _| {
                let Some(current) = current else {
                    return Ok::<_, ExpireError>(Step::Keep(()));
                };
                // A one-line step finished meanwhile: not an expiry (the record is
                // finished by the next read of it).
                if current
                    .inflight
                    .get(&record.id)
                    .is_some_and(|e| e.effect != LineEffect::Held)
                {
                    return Ok(Step::Keep(()));
                }
                let mut e = NewEvent::new(EventKind::ReservationExpired, line.quantity as i64);
                e.reservation_id = Some(record.id.clone());
                Ok(Step::Write {
                    record: Box::new(current.clone()),
                    events: vec![e],
                    result: (),
                })
            })?;
        }
        let missing = || ExpireError::Unknown(anyhow::anyhow!("reservation vanished"));
        self.transition(&record.id, missing, |r, _| {
            Ok(matches!(
                r.state,
                ReservationState::Reserving | ReservationState::Pending
            )
            .then(|| {
                let mut next = r.clone();
                next.state = ReservationState::Expired;
                next
            }))
        })?;
        Ok(true)
    }
}

/// What one step of the sweep over a product's spans left.
#[derive(Debug, Clone, Copy)]
struct Swept {
    /// No span is left up to the bucket where the product is filed, so its entry there
    /// can go (a later span was filed when it became the earliest).
    settled: bool,
    /// The span looked at is done and another may have lapsed: the next step looks.
    go_on: bool,
}

impl Swept {
    /// After the span looked at is done, as `product` now stands.
    fn after(product: &ProductRecord, bucket: u64, now: u64) -> Self {
        Self {
            settled: product.due.range(..=bucket).next().is_none(),
            go_on: product
                .due
                .range(..=indexes::due_bucket(now))
                .next()
                .is_some(),
        }
    }
}
