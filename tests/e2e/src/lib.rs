//! The end-to-end suite of the stock service. It only speaks HTTP to a base URL, so the
//! same tests run against the Wasmtime test host (always) and against a real `spin up`
//! (when a `spin` binary is available); `targets` starts either.

#![cfg(not(target_arch = "wasm32"))]

pub mod client;
pub mod kafka;
pub mod receiver;
pub mod suite;
pub mod targets;
