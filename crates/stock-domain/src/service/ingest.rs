//! Inbound cart and order events (`POST /v1/events`, CloudEvents from the cart and order
//! services): cart-time reservations kept in step with each cart, and committed to the
//! order when the cart is ordered.
//!
//! # Protocol
//! The cart record (`cart/{cart_id}`) says which reservations hold each line. An event
//! is applied in three steps, each safe to repeat after a crash between any two store
//! calls:
//!
//! 1. **Reserve** (items added or updated): an ordinary reservation, under an
//!    idempotency key derived from the event, of a quantity the event alone determines
//!    (the units added, or the line's new total — never a sum with what the line holds).
//!    A redelivered event therefore resumes the very same reservation whatever happened
//!    to the cart meanwhile (an update takes its warehouse from the line: if the line was
//!    dropped and re-added elsewhere in between, the redelivery is refused as a reused
//!    event id). A refusal ends the event before the cart changes, so an update that
//!    cannot be served keeps the line's old holds.
//! 2. **Decide** with one compare-and-swap on the cart record, under an operation id
//!    derived from the event: a hold joins its line, a line's holds are replaced or
//!    dropped (moving to `superseded`), or the cart is closed with its order. A
//!    redelivered event finds its operation id in the record and decides nothing again.
//! 3. **Finish** from the record's state: release every superseded reservation and prune
//!    those known settled; for a closed cart, commit every line's holds to the order.
//!    Release and commit are idempotent, so whichever delivery finds work left does it.
//!
//! A marker under `idem/ingest/…` is written once all three are done, so that a
//! redelivery long after, when the record's ring has forgotten the event, is still
//! recognised (in one read). A delivery that dies before deciding leaves at most a
//! reservation that its redelivery resumes; if none ever comes, the hold lapses at its TTL.
//!
//! Events are applied in the order they arrive: the redelivery of an event whose first
//! delivery died before deciding is applied after whatever arrived in between. An update
//! replaces the line's holds by one reservation of the new total, taken before the old
//! holds are released, so raising a line needs the new total available besides what
//! the line already holds.

use serde::{Deserialize, Serialize};

use super::{
    CommitError, GetReservationError, ReleaseError, Reserve, ReserveError, ReserveLine,
    StockService, stock::engine_errors,
};
use crate::indexes::Due;
use crate::models::{
    CartHold, CartId, CartLine, CartRecord, IdempotencyKey, OpId, OrderId, ProductId, Quantity,
    QuantityError, ReservationId, ReservationView, WarehouseId,
};
use crate::ports::{Clock, IdGenerator, KeyValueStore};
use crate::storage::{self, Decision, EngineError, Outcome, keys, versioned_record};

use std::collections::BTreeMap;

/// One CloudEvent from the cart or order service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundEvent {
    /// The CloudEvents `id`: unique per `source`, the same on every redelivery.
    pub id: String,
    /// The CloudEvents `source`: the producing service.
    pub source: String,
    pub kind: InboundKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundKind {
    /// A product put in a cart, or more of it: `quantity` more units are held for the line.
    CartItemAdded {
        cart_id: CartId,
        product_id: ProductId,
        quantity: Quantity,
        warehouse_id: Option<WarehouseId>,
    },
    /// The line's new total; zero removes the line.
    CartItemUpdated {
        cart_id: CartId,
        product_id: ProductId,
        quantity: u64,
    },
    CartItemRemoved {
        cart_id: CartId,
        product_id: ProductId,
    },
    CartAbandoned {
        cart_id: CartId,
    },
    /// The cart became an order: every line's holds are committed to it.
    OrderConfirmed {
        cart_id: CartId,
        order_id: OrderId,
    },
}

impl InboundKind {
    pub fn cart_id(&self) -> &CartId {
        match self {
            Self::CartItemAdded { cart_id, .. }
            | Self::CartItemUpdated { cart_id, .. }
            | Self::CartItemRemoved { cart_id, .. }
            | Self::CartAbandoned { cart_id }
            | Self::OrderConfirmed { cart_id, .. } => cart_id,
        }
    }
}

/// What applying an event did, as the reservations concerned look now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestOutcome {
    /// The event had been applied before (a redelivery). The lists then hold only what
    /// finishing it still did; they are empty when it had been finished too.
    pub duplicate: bool,
    pub reserved: Vec<ReservationView>,
    pub released: Vec<ReservationView>,
    pub committed: Vec<ReservationView>,
    /// Holds of an ordered cart that could not be committed because they had lapsed or
    /// been released first.
    pub uncommitted: Vec<ReservationView>,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("an event needs a non-empty id and source")]
    MissingEventId,
    #[error(transparent)]
    InvalidQuantity(#[from] QuantityError),
    #[error("product {0} does not exist")]
    ProductNotFound(ProductId),
    #[error("only {available} units of {product_id} are available, {requested} requested")]
    InsufficientStock {
        product_id: ProductId,
        requested: u64,
        available: u64,
    },
    #[error("cart {0} does not exist")]
    CartNotFound(CartId),
    #[error("cart {cart_id} was already ordered as {order_id}")]
    CartClosed { cart_id: CartId, order_id: OrderId },
    /// The event's source and id were seen before with a different content.
    #[error("event {0} was already received with a different content")]
    EventIdReused(String),
    #[error("the stock records are too contended right now")]
    Busy,
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

engine_errors!(IngestError);

// Carts see few writes, and rarely concurrent ones.
versioned_record!(CartRecord, 32);

/// Everything derived from an event's identity.
struct EventKeys {
    /// The cart record's operation id for the event's decision.
    op: OpId,
    /// Written once the event is fully applied.
    marker: String,
    /// The idempotency key of the event's reservation.
    reservation: IdempotencyKey,
}

impl EventKeys {
    fn of(event: &InboundEvent) -> Self {
        let (source, id) = (event.source.as_str(), event.id.as_str());
        let d = storage::digest(&["ingest", source, id]);
        // Readable in the audit trail; the source's length keeps `ce:a:b` + `c` apart
        // from `ce:a` + `b:c`. Too long or not visible ASCII: the digest stands in.
        let readable = format!("ce:{}:{source}:{id}", source.len());
        let reservation = IdempotencyKey::parse(&readable).unwrap_or_else(|_| {
            IdempotencyKey::parse(&format!("ce#{d:016x}")).expect("a digest is a valid key")
        });
        Self {
            op: OpId::new(format!("e{d:016x}")),
            marker: keys::idempotency("ingest", &format!("{d:016x}")),
            reservation,
        }
    }
}

fn refuse_if_closed(cart: Option<&CartRecord>) -> Result<(), IngestError> {
    match cart {
        Some(CartRecord {
            cart_id,
            order_id: Some(order_id),
            ..
        }) => Err(IngestError::CartClosed {
            cart_id: cart_id.clone(),
            order_id: order_id.clone(),
        }),
        _ => Ok(()),
    }
}

/// What deciding an event left: the cart as it now stands (if there is one), and
/// whether a new hold was refused because the cart was ordered meanwhile.
struct Decided {
    cart: Option<CartRecord>,
    refused_as_closed: bool,
}

impl<K: KeyValueStore, C: Clock, I: IdGenerator> StockService<K, C, I> {
    /// Applies one cart or order event; applying the same event (same source and id)
    /// again changes nothing.
    pub fn ingest(&self, event: InboundEvent) -> Result<IngestOutcome, IngestError> {
        self.then_sweep(self.ingest_now(event))
    }

    fn ingest_now(&self, event: InboundEvent) -> Result<IngestOutcome, IngestError> {
        if event.id.is_empty() || event.source.is_empty() {
            return Err(IngestError::MissingEventId);
        }
        let keys_of_event = EventKeys::of(&event);
        if self
            .kv
            .get(&keys_of_event.marker)
            .map_err(EngineError::from)?
            .is_some()
        {
            return Ok(IngestOutcome {
                duplicate: true,
                ..IngestOutcome::default()
            });
        }
        let current: Option<CartRecord> =
            storage::read(&self.kv, &keys::cart(event.kind.cart_id()))?;
        let mut outcome = IngestOutcome::default();
        let decided = match current {
            Some(cart) if storage::applied(&cart.ops, &keys_of_event.op) => {
                outcome.duplicate = true;
                Decided {
                    cart: Some(cart),
                    refused_as_closed: false,
                }
            }
            current => self.decide(&event.kind, &keys_of_event, current, &mut outcome)?,
        };
        if let Some(cart) = &decided.cart {
            self.finish_cart(cart, &mut outcome)?;
            if decided.refused_as_closed {
                refuse_if_closed(Some(cart))?;
            }
        }
        // Filed for deletion before it exists, so no marker outlives its retention.
        self.due_add(
            &Due::Record(keys_of_event.marker.clone()),
            self.now() + self.config.inbound_retention_ms,
        )?;
        self.kv
            .set(
                &keys_of_event.marker,
                &storage::encode(&keys_of_event.reservation.as_str()),
            )
            .map_err(EngineError::from)?;
        Ok(outcome)
    }

    /// Steps 1 and 2 of the protocol for an event not applied yet.
    fn decide(
        &self,
        kind: &InboundKind,
        event: &EventKeys,
        current: Option<CartRecord>,
        outcome: &mut IngestOutcome,
    ) -> Result<Decided, IngestError> {
        match kind {
            InboundKind::CartItemAdded {
                cart_id,
                product_id,
                quantity,
                warehouse_id,
            } => {
                refuse_if_closed(current.as_ref())?;
                let hold = self.hold_for(event, product_id, *quantity, warehouse_id, outcome)?;
                self.add_hold(cart_id, &event.op, &hold, |lines| {
                    lines
                        .entry(product_id.clone())
                        .or_insert_with(|| CartLine {
                            warehouse_id: warehouse_id.clone(),
                            holds: Vec::new(),
                        })
                        .holds
                        .push(hold.clone());
                    Vec::new()
                })
            }
            InboundKind::CartItemUpdated {
                cart_id,
                product_id,
                quantity: 0,
            }
            | InboundKind::CartItemRemoved {
                cart_id,
                product_id,
            } => self.drop_lines(cart_id, &event.op, current.as_ref(), Some(product_id)),
            InboundKind::CartItemUpdated {
                cart_id,
                product_id,
                quantity,
            } => {
                let quantity = Quantity::new(i128::from(*quantity))?;
                refuse_if_closed(current.as_ref())?;
                // The replacement comes from the warehouse the line was added from.
                let warehouse_id = current
                    .as_ref()
                    .and_then(|c| c.lines.get(product_id))
                    .and_then(|l| l.warehouse_id.clone());
                let hold = self.hold_for(event, product_id, quantity, &warehouse_id, outcome)?;
                self.add_hold(cart_id, &event.op, &hold, |lines| {
                    let line = lines.entry(product_id.clone()).or_insert_with(|| CartLine {
                        warehouse_id: warehouse_id.clone(),
                        holds: Vec::new(),
                    });
                    std::mem::replace(&mut line.holds, vec![hold.clone()])
                        .into_iter()
                        .map(|h| h.reservation_id)
                        .collect()
                })
            }
            InboundKind::CartAbandoned { cart_id } => {
                self.drop_lines(cart_id, &event.op, current.as_ref(), None)
            }
            InboundKind::OrderConfirmed { cart_id, order_id } => {
                if current.is_none() {
                    return Err(IngestError::CartNotFound(cart_id.clone()));
                }
                let mut filed = false;
                let (cart, _) = self.change_cart(cart_id, &event.op, |cart| {
                    let Some(cart) = cart else {
                        return Err(IngestError::CartNotFound(cart_id.clone()));
                    };
                    match &cart.order_id {
                        Some(o) if o == order_id => Ok(None),
                        Some(_) => refuse_if_closed(Some(cart)).map(|()| None),
                        None => {
                            let mut next = cart.clone();
                            next.order_id = Some(order_id.clone());
                            self.file_closed_cart(cart_id, &mut filed)?;
                            Ok(Some((next, ())))
                        }
                    }
                })?;
                Ok(Decided {
                    cart,
                    refused_as_closed: false,
                })
            }
        }
    }

    /// Reserves for a cart line under the event's idempotency key.
    fn hold_for(
        &self,
        event: &EventKeys,
        product_id: &ProductId,
        quantity: Quantity,
        warehouse_id: &Option<WarehouseId>,
        outcome: &mut IngestOutcome,
    ) -> Result<CartHold, IngestError> {
        let view = self
            .reserve(Reserve {
                lines: vec![ReserveLine {
                    product_id: product_id.clone(),
                    quantity,
                    warehouse_id: warehouse_id.clone(),
                }],
                ttl_ms: None,
                idempotency_key: Some(event.reservation.clone()),
            })
            .map_err(|e| match e {
                ReserveError::ProductNotFound(p) => IngestError::ProductNotFound(p),
                ReserveError::InsufficientStock {
                    product_id,
                    requested,
                    available,
                } => IngestError::InsufficientStock {
                    product_id,
                    requested,
                    available,
                },
                ReserveError::IdempotencyMismatch => {
                    IngestError::EventIdReused(event.reservation.as_str().to_owned())
                }
                ReserveError::Busy => IngestError::Busy,
                ReserveError::Unknown(e) => IngestError::Unknown(e),
                other => IngestError::Unknown(other.into()),
            })?;
        let hold = CartHold {
            reservation_id: view.reservation_id.clone(),
            quantity: quantity.get(),
        };
        outcome.reserved.push(view);
        Ok(hold)
    }

    /// Records a new hold on the cart (creating the cart if need be): `place` puts it on
    /// its line and returns the reservations it replaces. If the cart was ordered since
    /// it was read, the hold is superseded at once instead.
    fn add_hold(
        &self,
        cart_id: &CartId,
        op: &OpId,
        hold: &CartHold,
        mut place: impl FnMut(&mut BTreeMap<ProductId, CartLine>) -> Vec<ReservationId>,
    ) -> Result<Decided, IngestError> {
        let (cart, closed) = self.change_cart(cart_id, op, |cart| {
            let mut next = cart
                .cloned()
                .unwrap_or_else(|| CartRecord::new(cart_id.clone()));
            let closed = next.order_id.is_some();
            let replaced = if closed {
                vec![hold.reservation_id.clone()]
            } else {
                place(&mut next.lines)
            };
            next.superseded.extend(replaced);
            Ok(Some((next, closed)))
        })?;
        Ok(Decided {
            cart,
            refused_as_closed: closed == Some(true),
        })
    }

    /// Drops one line (or all of them), superseding their holds. Abandoning an ordered
    /// cart is routine clean-up and changes nothing; removing an item from it is refused.
    fn drop_lines(
        &self,
        cart_id: &CartId,
        op: &OpId,
        current: Option<&CartRecord>,
        only: Option<&ProductId>,
    ) -> Result<Decided, IngestError> {
        let cart = match current {
            // Nothing is held for a cart never seen: there is nothing to record either.
            None => None,
            Some(_) => {
                let mut filed = false;
                self.change_cart(cart_id, op, |cart| {
                    let Some(cart) = cart else {
                        return Ok(None);
                    };
                    if cart.order_id.is_some() {
                        return match only {
                            Some(_) => refuse_if_closed(Some(cart)).map(|()| None),
                            None => Ok(None),
                        };
                    }
                    let mut next = cart.clone();
                    let mut dropped = Vec::new();
                    next.lines.retain(|product_id, line| {
                        let keep = only.is_some_and(|o| o != product_id);
                        if !keep {
                            dropped.extend(line.holds.drain(..).map(|h| h.reservation_id));
                        }
                        keep
                    });
                    if next.lines.len() == cart.lines.len() {
                        return Ok(None);
                    }
                    next.superseded.extend(dropped);
                    if next.lines.is_empty() {
                        self.file_closed_cart(cart_id, &mut filed)?;
                    }
                    Ok(Some((next, ())))
                })?
                .0
            }
        };
        Ok(Decided {
            cart,
            refused_as_closed: false,
        })
    }

    /// One compare-and-swap on a cart record: `change` returns the next record and a
    /// result, or `None` to leave the record as it is. Returns the record as it ends up
    /// and the result of this call's write, if it was this call that wrote.
    fn change_cart<R>(
        &self,
        cart_id: &CartId,
        op: &OpId,
        mut change: impl FnMut(Option<&CartRecord>) -> Result<Option<(CartRecord, R)>, IngestError>,
    ) -> Result<(Option<CartRecord>, Option<R>), IngestError> {
        let outcome = self
            .engine()
            .update(&keys::cart(cart_id), op, |current, _| {
                Ok::<_, IngestError>(match change(current)? {
                    Some((next, result)) => Decision::Write(next, (None, Some(result))),
                    None => Decision::Keep((current.cloned(), None)),
                })
            })?;
        Ok(match outcome {
            Outcome::Written {
                record,
                result: (_, result),
            } => (Some(record), result),
            Outcome::AlreadyApplied(record) => (Some(record), None),
            Outcome::Kept((record, _)) => (record, None),
        })
    }

    /// Files a cart that is being ordered or emptied (before the write that does it) for
    /// deletion once its retention ends; the sweep looks again then, and keeps a cart that
    /// has lines again. Once per call: `filed` remembers it across attempts.
    fn file_closed_cart(&self, cart_id: &CartId, filed: &mut bool) -> Result<(), EngineError> {
        if !*filed {
            self.due_add(
                &Due::Cart(cart_id.clone()),
                self.now() + self.config.settled_retention_ms,
            )?;
            *filed = true;
        }
        Ok(())
    }

    /// Deletes a cart that has been ordered or empty for its whole retention. One that
    /// changed meanwhile is filed again at the end of its retention; one that has lines
    /// again and no order is filed again when it is next ordered or emptied.
    pub(crate) fn sweep_cart(
        &self,
        cart_id: &CartId,
        now: u64,
        report: &mut super::ExpireReport,
    ) -> Result<(), EngineError> {
        let key = keys::cart(cart_id);
        let Some(cart) = storage::read_exact::<K, CartRecord>(&self.kv, &key)? else {
            return Ok(());
        };
        if cart.order_id.is_none() && !cart.lines.is_empty() {
            return Ok(());
        }
        let until = cart.updated_at + self.config.settled_retention_ms;
        if until > now {
            return self.due_add(&Due::Cart(cart_id.clone()), until);
        }
        self.kv
            .delete_many(&[keys::birth(&key), key])
            .map_err(EngineError::from)?;
        report.deleted += 1;
        Ok(())
    }

    /// Step 3 of the protocol: releases what the cart superseded and, once it is
    /// ordered, commits its holds to the order.
    fn finish_cart(
        &self,
        cart: &CartRecord,
        outcome: &mut IngestOutcome,
    ) -> Result<(), IngestError> {
        let mut settled = Vec::new();
        for id in &cart.superseded {
            match self.release(id) {
                Ok(view) => outcome.released.push(view),
                // Final states: there is nothing left to release.
                Err(
                    ReleaseError::NotFound(_)
                    | ReleaseError::AlreadyCommitted
                    | ReleaseError::Rejected,
                ) => {}
                Err(ReleaseError::Busy) => return Err(IngestError::Busy),
                Err(ReleaseError::Unknown(e)) => return Err(e.into()),
            }
            settled.push(id.clone());
        }
        if !settled.is_empty() {
            self.change_cart(&cart.cart_id, &self.fresh_op(), |current| {
                let Some(current) = current else {
                    return Ok(None);
                };
                let mut next = current.clone();
                next.superseded.retain(|id| !settled.contains(id));
                Ok((next.superseded.len() < current.superseded.len()).then_some((next, ())))
            })?;
        }
        let Some(order_id) = &cart.order_id else {
            return Ok(());
        };
        for hold in cart.lines.values().flat_map(|l| &l.holds) {
            let id = &hold.reservation_id;
            match self.commit(id, order_id) {
                Ok(view) => outcome.committed.push(view),
                Err(
                    CommitError::Expired { .. }
                    | CommitError::AlreadyReleased
                    | CommitError::Rejected
                    | CommitError::OrderMismatch { .. },
                ) => outcome
                    .uncommitted
                    .push(self.get_reservation(id).map_err(|e| match e {
                        GetReservationError::Busy => IngestError::Busy,
                        other => IngestError::Unknown(other.into()),
                    })?),
                // Deleted once settled for its whole retention: it holds nothing.
                Err(CommitError::NotFound(_)) => {}
                Err(CommitError::Busy) => return Err(IngestError::Busy),
                Err(CommitError::Unknown(e)) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
