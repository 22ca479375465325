//! Typed access to the raw settings, and the checks that span every setting. Every
//! error made here names the setting as the user spelled it and the value given.

use super::ConfigError;
use crate::cli::{Raw, Source};

/// Typed access to the raw settings, producing errors that name the source.
pub(super) struct Settings<'a>(pub(super) &'a Raw);

impl<'a> Settings<'a> {
    /// The value given for `id` (the last one, for a list) and where it came from.
    pub(super) fn get(&self, id: &str) -> Option<(&'a str, Source)> {
        self.0
            .get(id)
            .and_then(|v| v.values.last().map(|s| (s.as_str(), v.source.clone())))
    }

    /// Whether `id` was given at all.
    pub(super) fn is_set(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// `id` parsed by `f` (which sees the value trimmed), or `default` when unset.
    pub(super) fn parse<T>(
        &self,
        id: &str,
        default: T,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.get(id) {
            None => Ok(default),
            Some((v, src)) => f(v.trim()).map_err(|e| invalid(src, v, &e)),
        }
    }

    /// The error for a value of `id` that parsed but is refused by a check across
    /// settings. Such a check only fails for a value the user gave; should it ever
    /// fail for a default, the error still names the setting.
    pub(super) fn invalid(&self, id: &'static str, why: &str) -> ConfigError {
        match self.get(id) {
            Some((v, src)) => invalid(src, v, why),
            None => ConfigError(format!("invalid {id} (default): {why}")),
        }
    }
}

/// A setting that is present but blank (`port=" "`, `--secrets-dir ''`) is a mistake,
/// not a request for the default: for a security setting, "unset" can mean "off". An
/// environment variable that is empty (`port=`) still counts as unset.
pub(super) fn refuse_blank(raw: &Raw) -> Result<(), ConfigError> {
    for (id, value) in raw.iter() {
        if id == "api_key_secret" {
            continue; // checked by name, with its own message
        }
        if let Some(v) = value.values.iter().find(|v| v.trim().is_empty()) {
            return Err(invalid(
                value.source.clone(),
                v,
                "blank: give a value, or leave the setting unset",
            ));
        }
    }
    Ok(())
}

/// Each `api_key_secret` name is a file name; a value that names no file (`" "`, `","`,
/// `--api-key-secret ''`) is refused, never read as "protection off".
pub(super) fn check_secret_names(names: &[String], source: &Source) -> Result<(), ConfigError> {
    if names.is_empty() {
        return Err(invalid(source.clone(), "", NAMES_NO_SECRET));
    }
    for name in names {
        let trimmed = name.trim();
        if trimmed.is_empty()
            || trimmed
                .bytes()
                .all(|b| b == b',' || b.is_ascii_whitespace())
        {
            return Err(invalid(source.clone(), name, NAMES_NO_SECRET));
        }
        if name.contains('/') || name == ".." || name == "." {
            return Err(invalid(
                source.clone(),
                name,
                "a secret name is a file name, not a path",
            ));
        }
        if name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
        {
            return Err(invalid(
                source.clone(),
                name,
                "a secret name is a file name such as api-key (no spaces, commas or control characters)",
            ));
        }
    }
    Ok(())
}

const NAMES_NO_SECRET: &str = "names no secret: give the name of a mounted secret file, or unset the setting to run without API-key protection";

/// The error for `value` of the setting given as `src`: `invalid port="abc": why`.
pub(super) fn invalid(src: Source, value: &str, why: &str) -> ConfigError {
    ConfigError(format!("invalid {src}={value:?}: {why}"))
}
