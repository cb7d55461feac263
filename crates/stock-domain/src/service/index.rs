//! Keeping the indexes of [`crate::indexes`] and reading through them: paging the product
//! directory and the alert set, and adding to and removing from the due work.
//! Every read here is bounded by its page size, never by what the store holds.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::{AlertView, InvalidCursor, StockService};
use crate::indexes::{
    self, AlertShard, AlertToken, Cursor, DIR_PAGE, DIR_SHARDS, DirPage, Due, DueDay, DueMark,
    DueShard,
};
use crate::models::{OpId, ProductId, StockStatus, StockView};
use crate::ports::{Clock, IdGenerator, KeyValueStore};
use crate::storage::{self, Decision, EngineError};

/// A page of the product directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductPage {
    pub items: Vec<StockView>,
    /// Pass as `after` for the next page; `None` once every product has been served.
    pub next: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ListProductsError {
    #[error(transparent)]
    InvalidCursor(#[from] InvalidCursor),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// A page of the alert set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertPage {
    pub alerts: Vec<AlertView>,
    /// Pass as `after` for the next page; `None` once the whole set has been read.
    pub next: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error(transparent)]
    InvalidCursor(#[from] InvalidCursor),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

super::stock::read_errors!(ListProductsError, AlertsError);

impl<K: KeyValueStore, C: Clock, I: IdGenerator> StockService<K, C, I> {
    /// Takes a directory slot for `id` and adds its entry, creating the page (after the
    /// one before it) if need be. Returns the slot, for the product record to keep.
    pub(crate) fn directory_add(&self, id: &ProductId) -> Result<u64, EngineError> {
        let shard = indexes::dir_shard(id);
        // Spin's DynamoDB store fails an increment that lost a race or whose answer was
        // lost although it landed: take another slot (a slot skipped is only a gap).
        let key = indexes::keys::dir_seq(shard);
        let mut attempt = 0;
        let n = loop {
            match self.kv.increment(&key, 1) {
                Ok(n) => break n,
                Err(e) if attempt + 1 >= self.config.retry.max_attempts => return Err(e.into()),
                Err(_) => {
                    attempt += 1;
                    self.engine().backoff(attempt);
                }
            }
        };
        let slot = u64::try_from(n - 1)
            .map_err(|_| anyhow::anyhow!("directory counter of shard {shard} reads {n}"))
            .map_err(crate::ports::KvError::from)?;
        let page = slot / DIR_PAGE;
        if page > 0 {
            self.ensure_dir_page(shard, page - 1)?;
        }
        self.engine().update(
            &indexes::keys::dir_page(shard, page),
            &self.fresh_op(),
            |current: Option<&DirPage>, _| {
                if current.is_some_and(|p| p.entries.iter().any(|(s, _)| *s == slot)) {
                    return Ok::<_, EngineError>(Decision::Keep(()));
                }
                let mut next = current.cloned().unwrap_or_default();
                next.entries.push((slot, id.clone()));
                next.entries.sort_by_key(|(s, _)| *s);
                Ok(Decision::Write(next, ()))
            },
        )?;
        Ok(slot)
    }

    /// Makes sure page `page` of a directory shard exists, creating it empty (and any
    /// missing page below it, lowest first) so that a shard's pages are always `0..n`.
    fn ensure_dir_page(&self, shard: u64, page: u64) -> Result<(), EngineError> {
        let mut missing = Vec::new();
        for p in (0..=page).rev() {
            if self.kv.get(&indexes::keys::dir_page(shard, p))?.is_some() {
                break;
            }
            missing.push(p);
        }
        for p in missing.into_iter().rev() {
            self.engine().update(
                &indexes::keys::dir_page(shard, p),
                &self.fresh_op(),
                |current: Option<&DirPage>, _| {
                    Ok::<_, EngineError>(match current {
                        Some(_) => Decision::Keep(()),
                        None => Decision::Write(DirPage::default(), ()),
                    })
                },
            )?;
        }
        Ok(())
    }

    /// Every product, `limit` directory entries at a time, in (shard, slot) order: a
    /// product created while paging may or may not appear, one that existed before is
    /// served exactly once.
    pub fn list_products(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ProductPage, ListProductsError> {
        let cursor = after
            .map(|raw| Cursor::parse(raw, DIR_SHARDS, digits))
            .transpose()?;
        let now = self.now();
        let (mut shard, mut after_slot) = match cursor {
            Some(c) => (c.shard, Some(c.last)),
            None => (0, None),
        };
        let mut items = Vec::new();
        let mut examined = 0;
        while shard < DIR_SHARDS {
            let mut page = after_slot.map_or(0, |s| (s + 1) / DIR_PAGE);
            while let Some(p) =
                storage::read::<K, DirPage>(&self.kv, &indexes::keys::dir_page(shard, page))?
            {
                for (slot, id) in p.entries {
                    if after_slot.is_some_and(|a| slot <= a) {
                        continue;
                    }
                    after_slot = Some(slot);
                    // Entries of creations that died or lost their race are not the
                    // product's own: the record names its slot.
                    if let Some(record) = self.read_product(&id)?
                        && record.dir == Some(slot)
                    {
                        items.push(record.view(&id, now));
                    }
                    examined += 1;
                    if examined == limit {
                        let next = Cursor { shard, last: slot };
                        return Ok(ProductPage {
                            items,
                            next: Some(next.to_string()),
                        });
                    }
                }
                page += 1;
            }
            shard += 1;
            after_slot = None;
        }
        Ok(ProductPage { items, next: None })
    }

    /// Adds `token` for `id` to the alert set, before the product write that stores it.
    /// Tokens of `id` that its record does not hold (`kept`) and that are old enough that
    /// their writer is gone are dropped on the way.
    pub(crate) fn alert_add(
        &self,
        id: &ProductId,
        token: &OpId,
        kept: Option<&OpId>,
    ) -> Result<(), EngineError> {
        self.engine().update(
            &indexes::keys::alert(indexes::alert_shard(id)),
            &self.fresh_op(),
            |current: Option<&AlertShard>, now| {
                let mut next = current.cloned().unwrap_or_default();
                let tokens = next.entries.entry(id.clone()).or_default();
                tokens.retain(|t| {
                    t.token != *token
                        && (Some(&t.token) == kept || t.since + indexes::ALERT_STALE_MS > now)
                });
                tokens.push(AlertToken {
                    token: token.clone(),
                    since: now,
                });
                Ok::<_, EngineError>(Decision::Write(next, ()))
            },
        )?;
        Ok(())
    }

    /// Removes the entry of `token`, once the product record no longer holds it.
    pub(crate) fn alert_remove(&self, id: &ProductId, token: &OpId) -> Result<(), EngineError> {
        self.engine().update(
            &indexes::keys::alert(indexes::alert_shard(id)),
            &self.fresh_op(),
            |current: Option<&AlertShard>, _| {
                let Some(current) = current else {
                    return Ok::<_, EngineError>(Decision::Keep(()));
                };
                let holds = |s: &AlertShard| {
                    s.entries
                        .get(id)
                        .is_some_and(|ts| ts.iter().any(|t| t.token == *token))
                };
                if !holds(current) {
                    return Ok(Decision::Keep(()));
                }
                let mut next = current.clone();
                if let Some(tokens) = next.entries.get_mut(id) {
                    tokens.retain(|t| t.token != *token);
                    if tokens.is_empty() {
                        next.entries.remove(id);
                    }
                }
                Ok(Decision::Write(next, ()))
            },
        )?;
        Ok(())
    }

    /// Products at or below their threshold at this instant, `limit` alert-set entries
    /// at a time, in (shard, product id) order.
    pub fn alerts(&self, after: Option<&str>, limit: usize) -> Result<AlertPage, AlertsError> {
        let cursor = after
            .map(|raw| Cursor::parse(raw, indexes::ALERT_SHARDS, |s| ProductId::parse(s).ok()))
            .transpose()?;
        let now = self.now();
        let (mut shard, mut after_id) = match cursor {
            Some(c) => (c.shard, Some(c.last)),
            None => (0, None),
        };
        let mut alerts = Vec::new();
        let mut examined = 0;
        while shard < indexes::ALERT_SHARDS {
            let set: Option<AlertShard> = storage::read(&self.kv, &indexes::keys::alert(shard))?;
            let entries = set.map(|s| s.entries).unwrap_or_default();
            let lower = after_id.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
            for id in entries.range((lower, Bound::Unbounded)).map(|(id, _)| id) {
                if let Some(record) = self.read_product(id)? {
                    let view = record.view(id, now);
                    if view.status != StockStatus::InStock {
                        alerts.push(AlertView::of(view));
                    }
                }
                examined += 1;
                if examined == limit {
                    let next = Cursor {
                        shard,
                        last: id.clone(),
                    };
                    return Ok(AlertPage {
                        alerts,
                        next: Some(next.to_string()),
                    });
                }
            }
            shard += 1;
            after_id = None;
        }
        Ok(AlertPage { alerts, next: None })
    }

    /// Files `entry` to be looked at by the sweep from `due` (ms since epoch) on. A bucket
    /// shard created here first makes sure the mark is not past its bucket.
    pub(crate) fn due_add(&self, entry: &Due, due: u64) -> Result<(), EngineError> {
        self.due_add_many(vec![(entry.encode(), due)])
    }

    /// Files several entries, with one write per bucket shard they fall in.
    pub(crate) fn due_add_many(&self, entries: Vec<(String, u64)>) -> Result<(), EngineError> {
        let mut by_key: BTreeMap<(u64, u64), Vec<(String, u64)>> = BTreeMap::new();
        for (entry, due) in entries {
            let at = (indexes::due_bucket(due), indexes::due_shard(&entry));
            by_key.entry(at).or_default().push((entry, due));
        }
        for ((bucket, shard), entries) in by_key {
            let key = indexes::keys::due(bucket, shard);
            self.engine()
                .update(&key, &self.fresh_op(), |current: Option<&DueShard>, _| {
                    let filed = |c: &DueShard| {
                        entries
                            .iter()
                            .all(|(e, due)| c.entries.get(e.as_str()) == Some(due))
                    };
                    if current.is_some_and(filed) {
                        return Ok::<_, EngineError>(Decision::Keep(()));
                    }
                    if current.is_none() {
                        self.lower_due_mark(bucket)?;
                        self.list_due_bucket(bucket)?;
                    }
                    let mut next = current.cloned().unwrap_or_default();
                    next.entries.extend(entries.iter().cloned());
                    Ok(Decision::Write(next, ()))
                })?;
        }
        Ok(())
    }

    /// Removes entries the sweep has dealt with from one bucket shard: `(id, due)` as read,
    /// so that an entry filed again meanwhile (at another time) stays.
    pub(crate) fn due_remove(&self, key: &str, done: &[(String, u64)]) -> Result<(), EngineError> {
        self.engine()
            .update(key, &self.fresh_op(), |current: Option<&DueShard>, _| {
                let Some(current) = current else {
                    return Ok::<_, EngineError>(Decision::Keep(()));
                };
                let mut next = current.clone();
                next.entries
                    .retain(|id, due| !done.iter().any(|(d, at)| d == id && at == due));
                Ok(if next.entries.len() == current.entries.len() {
                    Decision::Keep(())
                } else {
                    Decision::Write(next, ())
                })
            })?;
        Ok(())
    }

    /// Lists `bucket` in its day, before a shard of it is created.
    fn list_due_bucket(&self, bucket: u64) -> Result<(), EngineError> {
        let key = indexes::keys::due_day(bucket / indexes::DUE_BUCKETS_PER_DAY);
        self.engine()
            .update(&key, &self.fresh_op(), |current: Option<&DueDay>, _| {
                if current.is_some_and(|d| d.buckets.contains(&bucket)) {
                    return Ok::<_, EngineError>(Decision::Keep(()));
                }
                let mut next = current.cloned().unwrap_or_default();
                next.buckets.insert(bucket);
                Ok(Decision::Write(next, ()))
            })?;
        Ok(())
    }

    /// Drops the buckets before `bucket` from its day's list (the mark has passed them:
    /// their shards are deleted or about to be).
    pub(crate) fn unlist_due_buckets_before(&self, bucket: u64) -> Result<(), EngineError> {
        let key = indexes::keys::due_day(bucket / indexes::DUE_BUCKETS_PER_DAY);
        self.engine()
            .update(&key, &self.fresh_op(), |current: Option<&DueDay>, _| {
                let Some(current) = current.filter(|d| d.buckets.first() < Some(&bucket)) else {
                    return Ok::<_, EngineError>(Decision::Keep(()));
                };
                let mut next = current.clone();
                next.buckets = next.buckets.split_off(&bucket);
                Ok(Decision::Write(next, ()))
            })?;
        Ok(())
    }

    /// Makes the mark at most `bucket` (creating it there if there is none).
    fn lower_due_mark(&self, bucket: u64) -> Result<(), EngineError> {
        self.engine().update(
            indexes::keys::DUE_MARK,
            &self.fresh_op(),
            |current: Option<&DueMark>, _| {
                Ok::<_, EngineError>(match current {
                    Some(m) if m.bucket <= bucket => Decision::Keep(()),
                    _ => {
                        let mut next = current.cloned().unwrap_or_default();
                        next.bucket = bucket;
                        Decision::Write(next, ())
                    }
                })
            },
        )?;
        Ok(())
    }

    /// Moves the mark from `from` to `to`, unless someone moved it meanwhile.
    pub(crate) fn advance_due_mark(&self, from: u64, to: u64) -> Result<(), EngineError> {
        self.engine().update(
            indexes::keys::DUE_MARK,
            &self.fresh_op(),
            |current: Option<&DueMark>, _| {
                Ok::<_, EngineError>(match current {
                    Some(m) if m.bucket == from => {
                        let mut next = m.clone();
                        next.bucket = to;
                        Decision::Write(next, ())
                    }
                    _ => Decision::Keep(()),
                })
            },
        )?;
        Ok(())
    }
}

/// A number in its one decimal spelling (no sign, no leading zeros).
pub(crate) fn digits(raw: &str) -> Option<u64> {
    raw.parse::<u64>().ok().filter(|n| n.to_string() == raw)
}
