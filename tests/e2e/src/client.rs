//! A small blocking HTTP client for the suite: every call returns status, headers and the
//! parsed JSON body, never an error for a non-2xx status.

use std::time::Duration;

use serde_json::Value;

pub const ADMIN_TOKEN: &str = "e2e-admin-token";
pub const SERVICE_TOKEN: &str = "e2e-service-token";

pub struct Client {
    base: String,
    agent: ureq::Agent,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: Value,
    pub raw: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The problem+json `code`, for error replies.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    pub fn u64(&self, field: &str) -> u64 {
        self.body[field]
            .as_u64()
            .unwrap_or_else(|| panic!("no integer {field} in {}", self.raw))
    }
}

/// Who calls: nobody, the admin, the order/cart services, or someone with a wrong token.
#[derive(Debug, Clone, Copy)]
pub enum As {
    Anonymous,
    Admin,
    Service,
    Token(&'static str),
}

impl Client {
    pub fn new(base: impl Into<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .max_idle_connections_per_host(128)
            .build()
            .into();
        Self {
            base: base.into(),
            agent,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        who: As,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        let token = match who {
            As::Anonymous => None,
            As::Admin => Some(ADMIN_TOKEN),
            As::Service => Some(SERVICE_TOKEN),
            As::Token(t) => Some(t),
        };
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let typed = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        if body.is_some() && !typed {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(body.unwrap_or("").to_owned())
            .expect("valid request");
        let mut resp = self
            .agent
            .run(req)
            .unwrap_or_else(|e| panic!("{method} {path}: transport error {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let raw = resp
            .body_mut()
            .with_config()
            .limit(16 * 1024 * 1024)
            .read_to_string()
            .unwrap_or_default();
        let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            raw,
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.call("GET", path, As::Anonymous, None, &[])
    }

    pub fn put_stock(&self, product: &str, body: Value) -> Reply {
        self.call(
            "PUT",
            &format!("/v1/stock/{product}"),
            As::Admin,
            Some(&body.to_string()),
            &[],
        )
    }

    pub fn post(&self, path: &str, who: As, body: Value) -> Reply {
        self.call("POST", path, who, Some(&body.to_string()), &[])
    }

    pub fn reserve(&self, body: Value) -> Reply {
        self.post("/v1/reservations", As::Service, body)
    }

    pub fn stock(&self, product: &str) -> Reply {
        self.get(&format!("/v1/stock/{product}"))
    }
}
