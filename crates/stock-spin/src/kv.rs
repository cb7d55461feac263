//! [`KeyValueStore`] over Spin's key-value store (`wasi:keyvalue/{store,atomics}`), the
//! only state components share (SPEC §1).
//!
//! Answers are passed through as the store gives them: the domain's CAS loop is written
//! to distrust both `CasFailed` and success (SPEC §5), so nothing is retried or second-
//! guessed here.

use anyhow::anyhow;
use spin_sdk::wit::wasi::keyvalue::{atomics, batch, store};
use stock_domain::ports::{CasHandle, KeyValueStore, KvError, SwapError};

/// One open bucket of the store.
pub struct SpinKvStore {
    bucket: store::Bucket,
}

impl SpinKvStore {
    /// Opens the store labelled `label` (the component must list it in
    /// `key_value_stores`).
    pub fn open(label: &str) -> anyhow::Result<Self> {
        let bucket = store::open(label)
            .map_err(|e| anyhow!("{e:?}").context(format!("opening key-value store {label:?}")))?;
        Ok(Self { bucket })
    }
}

fn store_error(error: store::Error, call: &str, key: &str) -> KvError {
    KvError::Store(anyhow!("{error:?}").context(format!("key-value {call} of {key:?}")))
}

impl KeyValueStore for SpinKvStore {
    type Cas = SpinCas;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.bucket.get(key).map_err(|e| store_error(e, "get", key))
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.bucket
            .set(key, value)
            .map_err(|e| store_error(e, "set", key))
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        let first = entries.first().map_or("", |(key, _)| key.as_str());
        batch::set_many(&self.bucket, entries).map_err(|e| store_error(e, "set-many", first))
    }

    fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        let first = keys.first().map_or("", String::as_str);
        batch::delete_many(&self.bucket, keys).map_err(|e| store_error(e, "delete-many", first))
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        atomics::increment(&self.bucket, key, delta).map_err(|e| store_error(e, "increment", key))
    }

    fn cas(&self, key: &str) -> Result<SpinCas, KvError> {
        let cas = atomics::Cas::new(&self.bucket, key).map_err(|e| store_error(e, "cas", key))?;
        Ok(SpinCas {
            cas,
            key: key.to_owned(),
        })
    }
}

/// One `wasi:keyvalue/atomics` compare-and-swap.
pub struct SpinCas {
    cas: atomics::Cas,
    key: String,
}

impl CasHandle for SpinCas {
    fn current(&self) -> Result<Option<Vec<u8>>, KvError> {
        self.cas
            .current()
            .map_err(|e| store_error(e, "cas current", &self.key))
    }

    fn swap(self, value: Vec<u8>) -> Result<(), SwapError> {
        match atomics::swap(self.cas, &value) {
            Ok(()) => Ok(()),
            // The fresh handle the store offers for a retry is dropped: the domain
            // re-reads through a new `cas()` to learn whether the write landed.
            Err(atomics::CasError::CasFailed(_)) => Err(SwapError::CasFailed),
            Err(atomics::CasError::StoreError(e)) => {
                Err(store_error(e, "cas swap", &self.key).into())
            }
        }
    }
}
