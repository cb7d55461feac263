//! `cas-bench`: the "bare single-CAS request" reference component.
//!
//! Every request, whatever its method or path, performs exactly one successful
//! compare-and-swap increment of the key `bench/counter` in the `default`
//! key-value store (`wasi:keyvalue/atomics`: `Cas::new` → `current()` → `swap`),
//! retrying on `cas-failed` up to [`MAX_ATTEMPTS`] times, and answers `200` with
//! the new value as text. The value is stored as decimal ASCII.
//!
//! The load tool measures this route's throughput as the ceiling that the stock
//! operations are compared against (spec §7), and the test host uses it as its
//! first fixture: N concurrent requests must leave the counter at exactly N.
//!
//! Note: on Spin's SQLite store a `swap` is a real compare only when `current()`
//! returned a value; the very first increment (absent key) is an unconditional
//! upsert. Concurrent first requests can therefore both "win" — the counter is
//! exact only once the key exists (the tests seed it first).

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::wit::wasi::keyvalue::{atomics, store};

/// The key incremented by every request.
const KEY: &str = "bench/counter";
/// Bound on CAS attempts before giving up with a 503.
const MAX_ATTEMPTS: u32 = 100;

// The export only exists for wasm, so the workspace also builds and links natively.
#[cfg_attr(target_arch = "wasm32", spin_sdk::http_component)]
pub fn handle(_req: Request) -> anyhow::Result<impl IntoResponse> {
    let bucket = store::open("default").map_err(|e| anyhow::anyhow!("open: {e:?}"))?;
    let mut cas = atomics::Cas::new(&bucket, KEY).map_err(|e| anyhow::anyhow!("cas new: {e:?}"))?;
    for _ in 0..MAX_ATTEMPTS {
        let current = cas
            .current()
            .map_err(|e| anyhow::anyhow!("cas current: {e:?}"))?;
        let next = parse(current.as_deref())? + 1;
        match atomics::swap(cas, next.to_string().as_bytes()) {
            Ok(()) => {
                return Ok(Response::builder()
                    .status(200)
                    .header("content-type", "text/plain")
                    .body(next.to_string())
                    .build());
            }
            Err(atomics::CasError::CasFailed(retry)) => cas = retry,
            Err(atomics::CasError::StoreError(e)) => anyhow::bail!("cas swap: {e:?}"),
        }
    }
    Ok(Response::builder()
        .status(503)
        .header("retry-after", "1")
        .body("cas attempts exhausted")
        .build())
}

/// Decodes the stored decimal counter; an absent key counts as 0.
fn parse(value: Option<&[u8]>) -> anyhow::Result<u64> {
    match value {
        None => Ok(0),
        Some(bytes) => Ok(std::str::from_utf8(bytes)?.trim().parse()?),
    }
}
