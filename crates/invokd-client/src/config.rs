//! The CLI's config file: named contexts of API URL and access key, and the current one.
//!
//! It lives at `$INVOKD_CONFIG`, else `$XDG_CONFIG_HOME/invokd/config.toml`, else
//! `~/.config/invokd/config.toml`. `invokd serve` writes a `local` context on its first start.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// A config file problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid config file: {reason}")]
    Invalid { path: String, reason: String },
    #[error("no config path: set INVOKD_CONFIG or HOME")]
    NoPath,
}

/// One server and key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Context {
    pub api_url: String,
    pub access_token: String,
    /// For `invokd keys`; only on the server's own machine by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ClientConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// Where the config file is by default.
pub fn default_path() -> Result<PathBuf, ConfigError> {
    if let Some(p) = std::env::var_os("INVOKD_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or(ConfigError::NoPath)?;
    Ok(base.join("invokd").join("config.toml"))
}

impl ClientConfig {
    /// Reads the file; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(ConfigError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Writes the file, readable only by its owner (it holds keys).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        };
        let text = toml::to_string_pretty(self).map_err(|e| ConfigError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut opts = std::fs::File::options();
        opts.create(true).truncate(true).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)
    }

    /// Sets a context, and makes it current if none is.
    pub fn upsert(&mut self, name: &str, ctx: Context) {
        self.contexts.insert(name.to_owned(), ctx);
        if self.current_context.is_none() {
            self.current_context = Some(name.to_owned());
        }
    }

    /// The named context, or the current one.
    pub fn context(&self, name: Option<&str>) -> Option<&Context> {
        let name = name.or(self.current_context.as_deref())?;
        self.contexts.get(name)
    }

    /// Makes `name` the current context; false if there is no such context.
    pub fn switch(&mut self, name: &str) -> bool {
        if !self.contexts.contains_key(name) {
            return false;
        }
        self.current_context = Some(name.to_owned());
        true
    }

    /// Removes a context (and makes none current if it was); the removed one, if any.
    pub fn remove(&mut self, name: &str) -> Option<Context> {
        let removed = self.contexts.remove(name);
        if self.current_context.as_deref() == Some(name) {
            self.current_context = None;
        }
        removed
    }

    /// The contexts' names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.contexts.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_upsert_keeps_the_current_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        assert_eq!(ClientConfig::load(&path).unwrap(), ClientConfig::default());
        let mut c = ClientConfig::default();
        c.upsert(
            "local",
            Context {
                admin_token: None,
                api_url: "http://a".into(),
                access_token: "k1".into(),
            },
        );
        c.upsert(
            "prod",
            Context {
                admin_token: None,
                api_url: "http://b".into(),
                access_token: "k2".into(),
            },
        );
        c.save(&path).unwrap();
        let back = ClientConfig::load(&path).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.context(None).unwrap().api_url, "http://a");
        assert_eq!(back.context(Some("prod")).unwrap().access_token, "k2");
        assert!(back.context(Some("nope")).is_none());

        let mut c = back;
        assert!(!c.switch("nope"));
        assert!(c.switch("prod"));
        assert_eq!(c.context(None).unwrap().api_url, "http://b");
        assert_eq!(c.names(), ["local", "prod"]);
        assert!(c.remove("prod").is_some());
        assert_eq!(c.current_context, None);
        assert!(c.context(None).is_none());
    }
}
