//! `HUB__<SECTION>__<KEY>` environment variables, the last settings layer.
//!
//! `config` collects them (prefix, separators, lower case); each value is
//! then read as the type its key has in the built-in defaults (a key they
//! lack, such as a token, is text), so that a number-like token stays text,
//! a bad number is refused rather than guessed at, and a file that gave the
//! key a wrong type is not blamed on the variable.

use std::collections::HashMap;

use config::{Environment, Source};
use toml::{Table, Value};

use super::SettingsError;

/// Sets every `HUB__*` variable of `vars` in `tree`. Returns the keys set,
/// each with the variable that set it, for error messages.
pub(super) fn apply(
    tree: &mut Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<HashMap<String, String>, SettingsError> {
    let environment = Environment::with_prefix("HUB")
        .prefix_separator("__")
        .separator("__")
        .source(Some(vars.into_iter().filter(|(k, _)| k.starts_with("HUB__")).collect()));
    let collected = environment.collect().map_err(super::config_error)?;
    let mut collected: Vec<_> = collected.into_iter().collect();
    collected.sort_by(|a, b| a.0.cmp(&b.0));
    let types: Table = super::DEFAULT_TOML.parse().unwrap_or_default();
    let mut set = HashMap::new();
    for (key, value) in collected {
        let text = value.into_string().map_err(super::config_error)?;
        set_one(tree, &types, &key, text)?;
        set.insert(key.clone(), var_name(&key));
    }
    Ok(set)
}

/// The name of the environment variable that sets `key` (`server.port`).
fn var_name(key: &str) -> String {
    format!("HUB__{}", key.replace('.', "__").to_uppercase())
}

/// True for a key whose value must never be shown in a message.
pub(super) fn is_secret(key: &str) -> bool {
    key.rsplit('.').next().is_some_and(|name| name.contains("token"))
}

/// The value at `key` (`section.name`) in `tree`, if any.
fn lookup<'a>(tree: &'a Table, key: &str) -> Option<&'a Value> {
    let mut parts = key.split('.');
    let mut value = tree.get(parts.next()?)?;
    for part in parts {
        value = value.as_table()?.get(part)?;
    }
    Some(value)
}

/// Sets `key` (`section.name`) from a variable's text, read as the type the
/// key has in `types` (the built-in defaults): an integer, a number, a
/// boolean, a list (comma-separated) or a string. A key they lack is a
/// string; unknown keys are refused when the tree is read.
fn set_one(tree: &mut Table, types: &Table, key: &str, text: String) -> Result<(), SettingsError> {
    let var = var_name(key);
    if key == "services" || key.starts_with("services.") {
        return Err(SettingsError::new(
            key,
            format!("{var}: services are defined in a settings file; a token can come from token_env or token_file"),
        ));
    }
    let (path, name) = match key.rsplit_once('.') {
        Some((path, name)) => (Some(path), name),
        None => (None, key),
    };
    let mut table = tree;
    for section in path.into_iter().flat_map(|p| p.split('.')) {
        let entry = table
            .entry(section.to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        table = match entry {
            Value::Table(t) => t,
            _ => return Err(SettingsError::new(key, format!("{var}: {section} is not a section"))),
        };
    }
    let wrong = |what: &str| {
        let got = if is_secret(key) {
            String::new()
        } else {
            format!(", got {text:?}")
        };
        SettingsError::new(key, format!("{var}: expected {what}{got}"))
    };
    // A key without a built-in default is text (the tokens, the node id),
    // whatever type a file gave it.
    let value = match lookup(types, key) {
        Some(Value::Integer(_)) => Value::Integer(text.trim().parse().map_err(|_| wrong("an integer"))?),
        Some(Value::Float(_)) => Value::Float(text.trim().parse().map_err(|_| wrong("a number"))?),
        Some(Value::Boolean(_)) => Value::Boolean(match text.trim() {
            "true" => true,
            "false" => false,
            _ => return Err(wrong("true or false")),
        }),
        Some(Value::Array(_)) => Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| Value::String(item.to_owned()))
                .collect(),
        ),
        Some(Value::Table(_)) => return Err(SettingsError::new(key, format!("{var}: {name} is a section"))),
        _ => Value::String(text),
    };
    table.insert(name.to_owned(), value);
    Ok(())
}
