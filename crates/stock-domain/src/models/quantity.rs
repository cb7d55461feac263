//! Validated quantities. Units are whole numbers; the bounds keep every sum of a product's
//! figures far from `u64`/`i64` overflow, so arithmetic elsewhere may use plain operators.

use serde::{Deserialize, Serialize};

/// The largest quantity the service accepts in one request or holds in one warehouse.
pub const MAX_UNITS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantity must be greater than zero")]
    Zero,
    #[error("quantity must not be negative")]
    Negative,
    #[error("quantity must not exceed {MAX_UNITS}")]
    TooLarge,
    #[error("adjustment must not be zero")]
    ZeroAdjustment,
}

/// A strictly positive number of units (reserve, commit lines, availability checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Quantity(u64);

impl Quantity {
    pub fn new(units: i128) -> Result<Self, QuantityError> {
        match units {
            ..0 => Err(QuantityError::Negative),
            0 => Err(QuantityError::Zero),
            n if n > MAX_UNITS as i128 => Err(QuantityError::TooLarge),
            n => Ok(Self(n as u64)),
        }
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for Quantity {
    type Error = QuantityError;
    fn try_from(n: u64) -> Result<Self, QuantityError> {
        Self::new(n as i128)
    }
}

impl From<Quantity> for u64 {
    fn from(q: Quantity) -> u64 {
        q.0
    }
}

/// A non-negative stock level (on-hand counts, thresholds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StockLevel(u64);

impl StockLevel {
    pub fn new(units: i128) -> Result<Self, QuantityError> {
        match units {
            ..0 => Err(QuantityError::Negative),
            n if n > MAX_UNITS as i128 => Err(QuantityError::TooLarge),
            n => Ok(Self(n as u64)),
        }
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

/// A signed, non-zero change of on-hand units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adjustment(i64);

impl Adjustment {
    pub fn new(delta: i128) -> Result<Self, QuantityError> {
        match delta {
            0 => Err(QuantityError::ZeroAdjustment),
            n if n.unsigned_abs() > MAX_UNITS as u128 => Err(QuantityError::TooLarge),
            n => Ok(Self(n as i64)),
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_positive_quantity_is_accepted() {
        assert_eq!(Quantity::new(1).unwrap().get(), 1);
        assert_eq!(Quantity::new(MAX_UNITS as i128).unwrap().get(), MAX_UNITS);
    }

    #[test]
    fn a_zero_negative_or_huge_quantity_is_rejected() {
        assert_eq!(Quantity::new(0), Err(QuantityError::Zero));
        assert_eq!(Quantity::new(-3), Err(QuantityError::Negative));
        assert_eq!(
            Quantity::new(MAX_UNITS as i128 + 1),
            Err(QuantityError::TooLarge)
        );
    }

    #[test]
    fn a_stock_level_may_be_zero_but_not_negative() {
        assert_eq!(StockLevel::new(0).unwrap().get(), 0);
        assert_eq!(StockLevel::new(-1), Err(QuantityError::Negative));
        assert_eq!(
            StockLevel::new(i64::MAX as i128),
            Err(QuantityError::TooLarge)
        );
    }

    #[test]
    fn an_adjustment_is_signed_non_zero_and_bounded() {
        assert_eq!(Adjustment::new(-5).unwrap().get(), -5);
        assert_eq!(Adjustment::new(0), Err(QuantityError::ZeroAdjustment));
        assert_eq!(
            Adjustment::new(-(MAX_UNITS as i128) - 1),
            Err(QuantityError::TooLarge)
        );
    }
}
