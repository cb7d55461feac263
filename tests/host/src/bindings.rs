//! Host side of the Spin-specific imports: `wasi:keyvalue/{store,atomics,batch}
//! @0.2.0-draft2` over [`HostStore`](crate::store::HostStore), and
//! `fermyon:spin/variables@2.0.0`.
//!
//! Generated with `wasmtime::component::bindgen!` from the WIT in `wit/`
//! (copied from spin-sdk 5.2.0). The dispatch mirrors Spin's
//! `crates/factor-key-value/src/host.rs`: `open` checks the component's
//! `key_value_stores`, `list-keys` rejects a cursor, empty batches are no-ops,
//! a `swap` that fails its compare returns a fresh CAS handle on which
//! `current()` has already been called, and a swapped handle is kept (not
//! dropped) until the instance ends. `open` calls [`HostStore::on_open`]
//! (Spin's `after_open`).

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::store::{HostCas, HostStore, StoreAccess, StoreError, SwapError};
use crate::variables::{ComponentVariables, GetError};

mod generated {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "stock:test-host/spin-host",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
            "wasi:keyvalue/atomics.cas": super::Cas,
        },
    });
}

use generated::fermyon::spin::variables;
use generated::wasi::keyvalue::{atomics, batch, store};

/// An open `bucket`.
pub struct Bucket {
    store: Arc<dyn HostStore>,
}

/// A `cas` handle.
pub struct Cas {
    store: Arc<dyn HostStore>,
    key: String,
    handle: Box<dyn HostCas>,
}

/// Per-instance state behind these imports.
pub(crate) struct SpinImports {
    pub(crate) stores: StoreAccess,
    pub(crate) variables: Arc<ComponentVariables>,
}

/// What the generated `Host` traits are implemented on.
pub(crate) struct SpinView<'a> {
    pub(crate) imports: &'a SpinImports,
    pub(crate) table: &'a mut ResourceTable,
}

struct SpinData;

impl HasData for SpinData {
    type Data<'a> = SpinView<'a>;
}

/// Adds the key-value and variables imports to `linker`.
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> SpinView<'_>,
) -> wasmtime::Result<()> {
    generated::SpinHost::add_to_linker::<T, SpinData>(linker, view)
}

type KvResult<T> = wasmtime::Result<Result<T, store::Error>>;

/// Maps a backend error to the WIT error; host faults trap.
fn wit_error(error: StoreError) -> wasmtime::Result<store::Error> {
    match error {
        StoreError::NoSuchStore => Ok(store::Error::NoSuchStore),
        StoreError::AccessDenied => Ok(store::Error::AccessDenied),
        StoreError::Other(message) => Ok(store::Error::Other(message)),
        StoreError::HostFault(message) => Err(wasmtime::Error::msg(message)),
    }
}

/// Maps a backend result to the WIT result; host faults trap.
fn kv<T>(result: Result<T, StoreError>) -> KvResult<T> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(error) => Ok(Err(wit_error(error)?)),
    }
}

impl SpinView<'_> {
    fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<Arc<dyn HostStore>> {
        Ok(self.table.get(bucket)?.store.clone())
    }

    /// `cas.new` (also used to hand out a fresh handle after `cas-failed`).
    async fn new_cas(&mut self, store: Arc<dyn HostStore>, key: String) -> KvResult<Resource<Cas>> {
        let handle = match kv(store.new_cas(&key).await)? {
            Ok(handle) => handle,
            Err(error) => return Ok(Err(error)),
        };
        Ok(Ok(self.table.push(Cas { store, key, handle })?))
    }
}

impl store::Host for SpinView<'_> {
    async fn open(&mut self, identifier: String) -> KvResult<Resource<Bucket>> {
        match kv(self.imports.stores.open(&identifier))? {
            Ok(store) => {
                // Spin: `StoreManager::get` + `Store::after_open` (Redis: connect, PING).
                if let Err(error) = kv(store.on_open().await)? {
                    return Ok(Err(error));
                }
                Ok(Ok(self.table.push(Bucket { store })?))
            }
            Err(error) => Ok(Err(error)),
        }
    }
}

impl store::HostBucket for SpinView<'_> {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<Option<Vec<u8>>> {
        kv(self.bucket(&bucket)?.get(&key).await)
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> KvResult<()> {
        kv(self.bucket(&bucket)?.set(&key, &value).await)
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<()> {
        kv(self.bucket(&bucket)?.delete(&key).await)
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<bool> {
        kv(self.bucket(&bucket)?.exists(&key).await)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> KvResult<store::KeyResponse> {
        if cursor.is_some() {
            return Ok(Err(store::Error::Other(
                "list_keys: cursor not supported".to_owned(),
            )));
        }
        let keys = self.bucket(&bucket)?.list_keys().await;
        kv(keys.map(|keys| store::KeyResponse { keys, cursor: None }))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl batch::Host for SpinView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        let store = self.bucket(&bucket)?;
        if keys.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        kv(store.get_many(keys).await)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> KvResult<()> {
        let store = self.bucket(&bucket)?;
        if key_values.is_empty() {
            return Ok(Ok(()));
        }
        kv(store.set_many(key_values).await)
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> KvResult<()> {
        let store = self.bucket(&bucket)?;
        if keys.is_empty() {
            return Ok(Ok(()));
        }
        kv(store.delete_many(keys).await)
    }
}

impl atomics::HostCas for SpinView<'_> {
    async fn new(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<Resource<Cas>> {
        let store = self.bucket(&bucket)?;
        self.new_cas(store, key).await
    }

    async fn current(&mut self, cas: Resource<Cas>) -> KvResult<Option<Vec<u8>>> {
        kv(self.table.get_mut(&cas)?.handle.current().await)
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl atomics::Host for SpinView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> KvResult<i64> {
        kv(self.bucket(&bucket)?.increment(&key, delta).await)
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let Cas {
            store,
            key,
            mut handle,
        } = self.table.delete(cas)?;
        let swapped = handle.swap(value).await;
        // Spin never removes a swapped CAS from its table: the handle (with a
        // Redis store, its connection) lives until the instance ends. Same here:
        // an entry no guest handle points to, dropped with the table.
        self.table.push(Cas {
            store: store.clone(),
            key: key.clone(),
            handle,
        })?;
        match swapped {
            Ok(()) => Ok(Ok(())),
            Err(SwapError::Store(error)) => {
                Ok(Err(atomics::CasError::StoreError(wit_error(error)?)))
            }
            Err(SwapError::CasFailed) => {
                // Spin: a new CAS on the same key, `current()` called on it.
                let retry = match self.new_cas(store, key).await? {
                    Ok(retry) => retry,
                    Err(error) => return Ok(Err(atomics::CasError::StoreError(error))),
                };
                if let Err(error) = self.table.get_mut(&retry)?.handle.current().await {
                    return Ok(Err(atomics::CasError::StoreError(wit_error(error)?)));
                }
                Ok(Err(atomics::CasError::CasFailed(retry)))
            }
        }
    }
}

impl variables::Host for SpinView<'_> {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, variables::Error>> {
        Ok(self
            .imports
            .variables
            .get(&name)
            .map_err(|error| match error {
                GetError::InvalidName(message) => variables::Error::InvalidName(message),
                GetError::Undefined(message) => variables::Error::Undefined(message),
            }))
    }
}
