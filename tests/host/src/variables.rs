//! Spin variables: application `[variables]`, `[component.NAME.variables]`
//! templates (`"{{ admin_token }}"`, `"https://{{ host }}/v1"`), and the lookup
//! rules of `fermyon:spin/variables@2.0.0` `get`.
//!
//! Mirrors Spin's `spin-expressions` crate: names are validated with Spin's key
//! rules, templates are parsed the same way (`{{ … }}` with trimmed names, an
//! unmatched `{{` is an error, a template may only name declared application
//! variables), an application variable takes the value given by the caller,
//! else its `default`, and a variable with neither makes the host refuse to
//! start. Unlike Spin, which resolves lazily per `get`, values are resolved once
//! at start-up: the result is the same because the caller's values are static.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, bail};

use crate::manifest::VariableDecl;

/// Spin's variable-name rule (`spin_expressions::Key::validate`): lower-case
/// ASCII letters, digits and single underscores, starting with a letter and
/// not ending with an underscore. The error text is Spin's.
pub(crate) fn validate_name(name: &str) -> Result<(), String> {
    let reason = if name.is_empty() {
        "must not be empty".to_owned()
    } else if let Some(invalid) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        format!(
            "invalid character {invalid:?}. Variable names may contain only lower-case \
             letters, numbers, and underscores."
        )
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        "must start with a lowercase ASCII letter".to_owned()
    } else if !name.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        "must end with a lowercase ASCII letter or digit".to_owned()
    } else if name.contains("__") {
        "must not contain multiple consecutive underscores".to_owned()
    } else {
        return Ok(());
    };
    Err(format!("{name:?}: {reason}"))
}

/// Resolves every application variable: the caller's value (the last one given
/// wins), else the declared `default`; a variable with neither is an error.
/// Values for undeclared names are ignored with a warning, as Spin ignores them.
pub(crate) fn resolve_application(
    declared: &BTreeMap<String, VariableDecl>,
    provided: &[(String, String)],
) -> anyhow::Result<HashMap<String, String>> {
    let provided: HashMap<&str, &str> = provided
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    for name in provided.keys() {
        if !declared.contains_key(*name) {
            eprintln!(
                "stock-test-host: warning: variable {name:?} is not declared in [variables]; ignored"
            );
        }
    }
    let mut values = HashMap::new();
    for (name, decl) in declared {
        validate_name(name).map_err(|e| anyhow::anyhow!("invalid variable name {e}"))?;
        // spin-loader: `ensure!(required ^ default.is_some(), …)`
        if decl.required == decl.default.is_some() {
            bail!("variable {name:?}: must be `required` OR have a `default`");
        }
        let value = match (provided.get(name.as_str()), &decl.default) {
            (Some(value), _) => (*value).to_owned(),
            (None, Some(default)) => default.clone(),
            (None, None) => bail!(
                "required variable {name:?} has no value: pass it (real Spin: \
                 `--variable {name}=…` or `SPIN_VARIABLE_{}`)",
                name.to_ascii_uppercase()
            ),
        };
        values.insert(name.clone(), value);
    }
    Ok(values)
}

/// Renders a Spin template against resolved application variables.
pub(crate) fn render(template: &str, values: &HashMap<String, String>) -> anyhow::Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some((expr, after)) = rest[start + 2..].split_once("}}") else {
            bail!("invalid template {template:?}: unmatched '{{{{'");
        };
        let name = expr.trim();
        let value = values
            .get(name)
            .with_context(|| format!("invalid template {template:?}: unknown variable {name:?}"))?;
        out.push_str(value);
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

/// Why a component's `variables.get` failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum GetError {
    /// `invalid-name(string)`.
    InvalidName(String),
    /// `undefined(string)`.
    Undefined(String),
}

/// One component's variables, resolved.
pub(crate) struct ComponentVariables {
    component: String,
    values: HashMap<String, String>,
}

impl ComponentVariables {
    /// Resolves `[component.NAME.variables]` against the application variables.
    pub(crate) fn resolve(
        component: &str,
        templates: &BTreeMap<String, String>,
        application: &HashMap<String, String>,
    ) -> anyhow::Result<Self> {
        let mut values = HashMap::new();
        for (name, template) in templates {
            validate_name(name).map_err(|e| {
                anyhow::anyhow!("component {component:?}: invalid variable name {e}")
            })?;
            let value = render(template, application)
                .with_context(|| format!("component {component:?}, variable {name:?}"))?;
            values.insert(name.clone(), value);
        }
        Ok(Self {
            component: component.to_owned(),
            values,
        })
    }

    /// `fermyon:spin/variables@2.0.0` `get`, with Spin's error messages.
    pub(crate) fn get(&self, name: &str) -> Result<String, GetError> {
        validate_name(name).map_err(GetError::InvalidName)?;
        self.values.get(name).cloned().ok_or_else(|| {
            GetError::Undefined(format!("no variable for {:?}.{name:?}", self.component))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(default: Option<&str>, required: bool) -> VariableDecl {
        VariableDecl {
            default: default.map(str::to_owned),
            required,
            ..VariableDecl::default()
        }
    }

    #[test]
    fn names_follow_spin_rules() {
        for good in ["a", "abc", "a1b2c3", "a_1", "admin_token"] {
            validate_name(good).unwrap();
        }
        for bad in ["", "aX", "1bc", "_x", "x.y", "x_", "a__b", "x-y"] {
            validate_name(bad).unwrap_err();
        }
    }

    #[test]
    fn templates_render_and_reject_unknown_or_unmatched() {
        let values = HashMap::from([("host".to_owned(), "example.com".to_owned())]);
        assert_eq!(render("plain", &values).unwrap(), "plain");
        assert_eq!(
            render("https://{{ host }}/v1{{host}}", &values).unwrap(),
            "https://example.com/v1example.com"
        );
        assert!(render("{{ nope }}", &values).is_err());
        assert!(render("{{ host", &values).is_err());
    }

    #[test]
    fn application_values_come_from_caller_then_default() {
        let declared = BTreeMap::from([
            ("admin_token".to_owned(), decl(None, true)),
            ("region".to_owned(), decl(Some("eu"), false)),
        ]);
        let provided = vec![
            ("admin_token".to_owned(), "first".to_owned()),
            ("admin_token".to_owned(), "s3cret".to_owned()),
        ];
        let values = resolve_application(&declared, &provided).unwrap();
        assert_eq!(values["admin_token"], "s3cret");
        assert_eq!(values["region"], "eu");

        let error = resolve_application(&declared, &[]).unwrap_err();
        assert!(error.to_string().contains("admin_token"), "{error}");
    }

    #[test]
    fn component_get_errors_match_spin() {
        let application = HashMap::from([("admin_token".to_owned(), "t".to_owned())]);
        let templates = BTreeMap::from([("token".to_owned(), "{{ admin_token }}".to_owned())]);
        let vars = ComponentVariables::resolve("c", &templates, &application).unwrap();
        assert_eq!(vars.get("token"), Ok("t".to_owned()));
        assert!(matches!(vars.get("other"), Err(GetError::Undefined(_))));
        assert!(matches!(vars.get("Token"), Err(GetError::InvalidName(_))));
    }
}
