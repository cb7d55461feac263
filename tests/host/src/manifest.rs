//! The subset of the Spin application manifest (version 2, `spin.toml`) that
//! the test host understands.
//!
//! Unknown or unsupported fields are rejected with an error naming them rather
//! than silently ignored, so a manifest that relies on something this host does
//! not emulate (other trigger types, `files`, SQLite databases, component
//! dependencies, remote `source`s, …) fails loudly. Purely descriptive fields
//! and `build` (which `spin build` uses, not the runtime) are accepted and ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// A parsed `spin.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    spin_manifest_version: u32,
    application: Application,
    #[serde(default)]
    pub(crate) variables: BTreeMap<String, VariableDecl>,
    #[serde(default)]
    pub(crate) trigger: Triggers,
    #[serde(default)]
    pub(crate) component: BTreeMap<String, ComponentDecl>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Application {
    #[serde(rename = "name")]
    _name: String,
    #[serde(default, rename = "version")]
    _version: Option<String>,
    #[serde(default, rename = "description")]
    _description: Option<String>,
    #[serde(default, rename = "authors")]
    _authors: Vec<String>,
    #[serde(default)]
    trigger: Option<toml::Table>,
}

/// One entry of `[variables]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VariableDecl {
    #[serde(default)]
    pub(crate) default: Option<String>,
    #[serde(default)]
    pub(crate) required: bool,
    /// Only affects logging in Spin; this host never prints values anyway.
    #[serde(default, rename = "secret")]
    pub(crate) _secret: bool,
    #[serde(default, rename = "description")]
    pub(crate) _description: Option<String>,
}

/// `[[trigger.TYPE]]` tables: only `http` is supported.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Triggers {
    #[serde(default)]
    pub(crate) http: Vec<HttpTrigger>,
}

/// One `[[trigger.http]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpTrigger {
    #[serde(default, rename = "id")]
    _id: Option<String>,
    pub(crate) route: Route,
    /// The component id; inline component tables are not supported.
    pub(crate) component: String,
    #[serde(default)]
    executor: Option<Executor>,
}

/// `route = "/path"` or `route = { private = true }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Route {
    /// An exact (`/a/b`), named-segment (`/a/:id`) or wildcard (`/a/...`) route.
    Path(String),
    /// A private endpoint: not routed, reachable only through service chaining.
    Private(PrivateEndpoint),
}

/// `{ private = true }` (`false` is an error, as in Spin).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PrivateEndpoint {
    private: bool,
}

#[derive(Debug, Deserialize)]
struct Executor {
    #[serde(rename = "type")]
    kind: String,
}

/// One `[component.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ComponentDecl {
    /// A local path, relative to the manifest's directory.
    pub(crate) source: String,
    #[serde(default, rename = "description")]
    _description: Option<String>,
    #[serde(default)]
    pub(crate) allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    pub(crate) key_value_stores: Vec<String>,
    #[serde(default)]
    pub(crate) environment: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) variables: BTreeMap<String, String>,
    /// Used by `spin build`, not by the runtime.
    #[serde(default, rename = "build")]
    _build: Option<toml::Table>,
}

impl Manifest {
    /// Reads and checks a manifest.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading manifest {}", path.display()))?;
        let manifest: Manifest = toml::from_str(&text)
            .with_context(|| format!("parsing manifest {}", path.display()))?;
        manifest
            .check()
            .with_context(|| format!("manifest {}", path.display()))?;
        Ok(manifest)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.spin_manifest_version != 2 {
            bail!(
                "spin_manifest_version = {}: only version 2 is supported",
                self.spin_manifest_version
            );
        }
        if let Some(trigger) = &self.application.trigger {
            // Only the default HTTP base, "/", is emulated.
            let base = trigger
                .get("http")
                .and_then(|http| http.get("base"))
                .and_then(|base| base.as_str());
            if trigger.keys().any(|k| k != "http") || !matches!(base, None | Some("/")) {
                bail!("[application.trigger] settings are not supported by the test host");
            }
        }
        for trigger in &self.trigger.http {
            if !self.component.contains_key(&trigger.component) {
                bail!(
                    "[[trigger.http]] refers to component {:?}, which is not defined",
                    trigger.component
                );
            }
            if let Route::Private(PrivateEndpoint { private: false }) = trigger.route {
                // Spin's `Router::build` message.
                bail!(
                    "route must be a string pattern or '{{ private = true }}': component {:?} \
                     has {{ private = false }}",
                    trigger.component
                );
            }
            if let Some(executor) = &trigger.executor
                && executor.kind != "spin"
                && executor.kind != "http"
            {
                bail!(
                    "executor type {:?} (component {:?}) is not supported by the test host",
                    executor.kind,
                    trigger.component
                );
            }
        }
        Ok(())
    }
}

impl ComponentDecl {
    /// The `.wasm` file, resolved against the manifest's directory.
    pub(crate) fn source_path(&self, manifest_dir: &Path) -> PathBuf {
        manifest_dir.join(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Manifest> {
        let manifest: Manifest = toml::from_str(text)?;
        manifest.check()?;
        Ok(manifest)
    }

    const BASE: &str = r#"
        spin_manifest_version = 2
        [application]
        name = "app"
        [variables]
        admin_token = { required = true, secret = true }
        [[trigger.http]]
        route = "/v1/stock/..."
        component = "stock"
        [[trigger.http]]
        route = { private = true }
        component = "stock"
        [component.stock]
        source = "../target/wasm32-wasip2/release/stock.wasm"
        key_value_stores = ["default"]
        allowed_outbound_hosts = ["http://127.0.0.1:*"]
        [component.stock.variables]
        token = "{{ admin_token }}"
        [component.stock.build]
        command = "cargo build"
        watch = ["src/**/*.rs"]
    "#;

    #[test]
    fn parses_the_supported_subset() {
        let manifest = parse(BASE).unwrap();
        assert_eq!(manifest.trigger.http.len(), 2);
        assert!(matches!(
            manifest.trigger.http[1].route,
            Route::Private(PrivateEndpoint { private: true })
        ));
        let stock = &manifest.component["stock"];
        assert_eq!(stock.key_value_stores, ["default"]);
        assert_eq!(stock.variables["token"], "{{ admin_token }}");
        assert!(manifest.variables["admin_token"].required);
    }

    #[test]
    fn rejects_what_is_not_emulated() {
        let files = BASE.replace(
            "key_value_stores = [\"default\"]",
            "files = [\"static/**\"]",
        );
        assert!(parse(&files).is_err());
        let redis = format!("{BASE}\n[[trigger.redis]]\nchannel = \"c\"\ncomponent = \"stock\"\n");
        assert!(parse(&redis).is_err());
        let dangling = BASE.replace(
            "component = \"stock\"\n        [[",
            "component = \"nope\"\n        [[",
        );
        assert!(parse(&dangling).is_err());
        let not_private = BASE.replace("private = true", "private = false");
        let error = parse(&not_private).unwrap_err();
        assert!(error.to_string().contains("private = false"), "{error}");
        let extra = BASE.replace("private = true", "private = true, public = false");
        assert!(parse(&extra).is_err());
    }
}
