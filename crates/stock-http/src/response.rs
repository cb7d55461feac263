//! Successful responses: JSON bodies with the status the operation calls for.

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use serde::Serialize;

use crate::problem::Problem;

pub fn json(status: StatusCode, body: &impl Serialize) -> Response<Vec<u8>> {
    let mut response =
        Response::new(serde_json::to_vec(body).expect("wire types always serialize"));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Runs an operation written with `?` and turns its problem, if any, into the response.
pub fn respond(
    operation: impl FnOnce() -> Result<Response<Vec<u8>>, Problem>,
) -> Response<Vec<u8>> {
    operation().unwrap_or_else(Problem::into_response)
}
