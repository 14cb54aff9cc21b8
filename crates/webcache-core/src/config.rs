//! Cache configuration: aliases from a TOML file, cache URLs and the environment.
//!
//! This module only *parses*, and knows no scheme: building backends from a [`BackendSpec`] is
//! the job of the [`BackendFactory`](crate::backend::BackendFactory) that answers for its
//! scheme, found by the `webcache` crate's registry (which lists the factories compiled in and
//! any the application registers).
//!
//! ```toml
//! # webcache.toml
//! [caches.default]
//! url = "redis://127.0.0.1:6379/2"
//! timeout = 60            # seconds, fractions allowed, or "forever"
//! key_prefix = "shop"
//!
//! [caches]
//! sessions = "locmem://sessions?max_entries=5000"   # a bare URL is fine too
//! ```
//!
//! Options common to every backend may be given as TOML fields or as URL query parameters:
//! `timeout`, `key_prefix`, `version`, `invalid_keys` (`reject`|`hash`), `compress_min_bytes`
//! (bytes, or `off`), `max_entry_size` (bytes: the largest value written or read, 64 MiB by
//! default; a larger stored entry is a miss, refused before it is decompressed), `on_error` (`raise`|`degrade`), `operation_timeout` (seconds), `near_ttl`
//! (seconds of process-local copies in front of a shared backend) and `near_max_entries`. Every other
//! field is handed to the backend, which refuses the ones it does not know.
//!
//! How values are stored ([`codec`](crate::codec)): `serializer` (`json`, the default,
//! `msgpack`, `postcard`, or `django_json` to share keys with a Django site using
//! django-redis's `JSONSerializer`), `compressor` (`lz4`, the default, `zstd`, or `none`),
//! `zstd_level` (zstd's levels, 3 by default) and `compress_min_bytes` (the threshold, 32 KiB
//! by default). Changing them keeps old entries readable: each entry names its own codec.
//!
//! ```toml
//! [caches.default]
//! url = "redis://127.0.0.1:6379/2?serializer=msgpack"
//! compressor = "zstd"
//! zstd_level = 6
//! compress_min_bytes = 1024
//! ```
//!
//! Common options apply in layers, each overriding exactly the options it gives (even with the
//! default value): the defaults, then the file (an alias's fields and its `url`'s query, which
//! may not both give one option), then the query of `WEBCACHE_URL`
//! ([`CachesConfig::with_env`]), which replaces the `default` alias's URL.
//!
//! The circuit breaker of server backends ([`breaker`](crate::breaker)): `breaker_failures`
//! (connection failures in a row before calls fail at once; default 3, `0` turns it off) and
//! `breaker_max_delay` (seconds; the longest wait between trial calls while the backend is
//! down, so also how late the cache may notice its return; default 1).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::cache::{CacheOptions, OnError};
use crate::key::InvalidKeyPolicy;
use crate::timeout::Timeout;

/// The environment variable that overrides the URL of the `default` alias.
pub const URL_ENV: &str = "WEBCACHE_URL";

const COMMON_OPTIONS: &[&str] = &[
    "timeout",
    "key_prefix",
    "version",
    "invalid_keys",
    "compress_min_bytes",
    "serializer",
    "compressor",
    "zstd_level",
    "max_entry_size",
    "on_error",
    "operation_timeout",
    "near_ttl",
    "near_max_entries",
    "breaker_failures",
    "breaker_max_delay",
];

/// A configuration mistake, in words that say what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field of one alias is wrong.
    #[error("cache `{alias}`: `{field}`: {message}")]
    Invalid {
        /// The alias (`default`, `sessions`, ...).
        alias: String,
        /// The field or URL part (`url`, `timeout`, `max_entries`, ...).
        field: String,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// The configuration file cannot be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The backend could not be reached while building the cache. The reason is the error's
    /// `source()` (printed by `anyhow`'s `{:#}` and other error reporters).
    #[error("cache `{alias}` ({url}) is not usable")]
    Connect {
        /// The alias.
        alias: String,
        /// The URL, with any password hidden.
        url: String,
        /// What failed.
        #[source]
        source: crate::Error,
    },
    /// No alias of that name is configured.
    #[error("no cache alias `{alias}`; configured aliases: {known}")]
    UnknownAlias {
        /// The alias asked for.
        alias: String,
        /// The aliases that exist.
        known: String,
    },
}

/// The backend part of one alias's configuration: scheme, location and backend options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// The alias, for errors.
    pub alias: String,
    /// The URL scheme (`locmem`, `redis`, ...), lower case.
    pub scheme: String,
    /// The URL without its query, as given.
    pub url: String,
    /// What follows `scheme:` and an optional `//`, without the query (`host:port/2`,
    /// `/var/tmp/webcache`, `h1:11211,h2:11211`, `:memory:`).
    pub location: String,
    options: BTreeMap<String, String>,
}

impl BackendSpec {
    /// Removes and parses the option `name`, if given.
    pub fn take<T: FromStr>(
        &mut self,
        name: &str,
        expected: &str,
    ) -> Result<Option<T>, ConfigError> {
        match self.options.remove(name) {
            None => Ok(None),
            Some(raw) => raw.trim().parse().map(Some).map_err(|_| {
                self.error(name, format!("`{raw}` is not valid; expected {expected}"))
            }),
        }
    }

    /// Removes the option `name` as text, if given.
    pub fn take_str(&mut self, name: &str) -> Option<String> {
        self.options.remove(name)
    }

    /// Removes and parses a duration in seconds (fractions allowed), if given.
    pub fn take_seconds(&mut self, name: &str) -> Result<Option<Duration>, ConfigError> {
        match self.take::<f64>(name, "a number of seconds such as 2 or 0.5")? {
            None => Ok(None),
            Some(secs) => Duration::try_from_secs_f64(secs)
                .map(Some)
                .map_err(|_| self.error(name, format!("{secs} is not a usable number of seconds"))),
        }
    }

    /// Fails if options remain that the backend did not take, listing the accepted ones.
    pub fn finish(&self, accepted: &[&str]) -> Result<(), ConfigError> {
        match self.options.keys().next() {
            None => Ok(()),
            Some(unknown) => {
                let mut all: Vec<&str> = accepted.to_vec();
                all.extend_from_slice(COMMON_OPTIONS);
                Err(self.error(
                    unknown,
                    format!(
                        "unknown option for the `{}` backend; accepted options: {}",
                        self.scheme,
                        all.join(", ")
                    ),
                ))
            }
        }
    }

    /// An error about `field` of this alias.
    pub fn error(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            alias: self.alias.clone(),
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// The URL with any password replaced by `***`, for messages.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }
}

/// `"a", "b" or "c"`, for messages listing accepted names.
fn quoted<T>(names: &[(&str, T)]) -> String {
    let names: Vec<String> = names.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Replaces the password of a URL (`user:pass@`) by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        _ => url.to_owned(),
    }
}

/// One alias: its common options and its backend.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CacheConfig {
    /// The options every backend shares (prefix, version, timeouts, ...).
    pub options: CacheOptions,
    /// The backend to build.
    pub backend: BackendSpec,
}

impl CacheConfig {
    /// Parses a cache URL for `alias`; common options may be query parameters.
    ///
    /// ```
    /// use webcache::config::CacheConfig;
    /// let c = CacheConfig::from_url("default", "locmem://pages?max_entries=500&timeout=60").unwrap();
    /// assert_eq!(c.backend.scheme, "locmem");
    /// assert_eq!(c.backend.location, "pages");
    /// assert_eq!(c.options.default_timeout, 60.into());
    ///
    /// // Parsing does not know which schemes exist; building the backend does (the registry
    /// // of the `webcache` crate).
    /// assert_eq!(CacheConfig::from_url("default", "redus://localhost").unwrap().backend.scheme, "redus");
    /// assert!(CacheConfig::from_url("default", "1redis://localhost").is_err());
    /// ```
    pub fn from_url(alias: &str, url: &str) -> Result<Self, ConfigError> {
        Self::from_parts(alias, url, BTreeMap::new())
    }

    fn from_parts(
        alias: &str,
        url: &str,
        fields: BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let (given, backend) = parse_layer(alias, url, fields)?;
        let mut options = CacheOptions::builder().alias(alias).build();
        given.apply_to(&mut options);
        Ok(CacheConfig { options, backend })
    }
}

/// Parses one layer of configuration (a URL, plus the fields of a file's alias table): the
/// common options it gives and the backend it describes.
fn parse_layer(
    alias: &str,
    url: &str,
    mut fields: BTreeMap<String, String>,
) -> Result<(GivenOptions, BackendSpec), ConfigError> {
    let invalid = |field: &str, message: String| ConfigError::Invalid {
        alias: alias.to_owned(),
        field: field.to_owned(),
        message,
    };
    let url = url.trim();
    let example = "for example `locmem://` or `redis://127.0.0.1:6379/0`";
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(invalid(
            "url",
            format!("`{url}` is not a cache URL (it has no `scheme:`); {example}"),
        ));
    };
    let scheme = scheme.to_ascii_lowercase();
    // Which schemes exist is the registry's business (the factories compiled in or
    // registered); here a scheme only has to look like one (RFC 3986: a letter, then letters,
    // digits, `+`, `-`, `.`).
    let well_formed = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !well_formed {
        return Err(invalid(
            "url",
            format!(
                "`{}` is not a cache URL (`{scheme}` is not a URL scheme); {example}",
                redact(url)
            ),
        ));
    }
    let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
    let location = base.strip_prefix("//").unwrap_or(base).to_owned();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| {
                    invalid(
                        "url",
                        format!(
                            "query parameter `{pair}` is not valid UTF-8 after percent-decoding"
                        ),
                    )
                })
        };
        let (name, value) = (decode(name)?, decode(value)?);
        if fields.contains_key(&name) {
            return Err(invalid(
                &name,
                "given twice (in the URL and in the configuration, or twice in the URL); keep one"
                    .into(),
            ));
        }
        fields.insert(name, value);
    }
    let mut backend = BackendSpec {
        alias: alias.to_owned(),
        scheme,
        url: format!("{}:{}", url.split_once(':').map_or("", |(s, _)| s), base),
        location,
        options: fields,
    };
    let given = GivenOptions::take(&mut backend)?;
    Ok((given, backend))
}

/// The common options one layer of configuration gave: `None` where it said nothing.
///
/// Layers apply in order (defaults, then the file, then `WEBCACHE_URL`), each overriding the
/// options it gives, so a value given explicitly wins over a lower layer even when it equals
/// the default. Comparing with the defaults instead would read "given as the default" as
/// "not given" and let the file's value win.
#[derive(Debug, Default)]
struct GivenOptions {
    default_timeout: Option<Timeout>,
    key_prefix: Option<String>,
    version: Option<i64>,
    invalid_keys: Option<InvalidKeyPolicy>,
    compress_min_bytes: Option<Option<usize>>,
    serializer: Option<crate::codec::Serializer>,
    compressor: Option<crate::codec::Compressor>,
    zstd_level: Option<i32>,
    max_entry_size: Option<usize>,
    on_error: Option<OnError>,
    operation_timeout: Option<Duration>,
    near_ttl: Option<Duration>,
    near_max_entries: Option<u64>,
    breaker_failures: Option<u32>,
    breaker_max_delay: Option<Duration>,
}

impl GivenOptions {
    /// Removes and parses the common options from `spec`, leaving the backend's own.
    fn take(spec: &mut BackendSpec) -> Result<Self, ConfigError> {
        let mut given = GivenOptions::default();
        if let Some(raw) = spec.take_str("timeout") {
            given.default_timeout = Some(Timeout::parse(&raw).ok_or_else(|| {
                spec.error(
                    "timeout",
                    format!("`{raw}` is not a timeout; expected seconds (300, 0.5) or \"forever\""),
                )
            })?);
        }
        given.key_prefix = spec.take_str("key_prefix");
        given.version = spec.take("version", "an integer such as 1")?;
        if let Some(raw) = spec.take_str("invalid_keys") {
            given.invalid_keys = Some(match raw.as_str() {
                "reject" => InvalidKeyPolicy::Reject,
                "hash" => InvalidKeyPolicy::Hash,
                _ => {
                    return Err(spec.error(
                        "invalid_keys",
                        format!("`{raw}` is not accepted; use \"reject\" or \"hash\""),
                    ))
                }
            });
        }
        if let Some(raw) = spec.take_str("compress_min_bytes") {
            given.compress_min_bytes = Some(match raw.as_str() {
                "off" | "none" | "false" => None,
                n => Some(n.parse().map_err(|_| {
                    spec.error(
                        "compress_min_bytes",
                        format!("`{raw}` is not accepted; use a number of bytes or \"off\""),
                    )
                })?),
            });
        }
        if let Some(raw) = spec.take_str("serializer") {
            given.serializer = Some(crate::codec::Serializer::from_name(raw.trim()).ok_or_else(
                || {
                    spec.error(
                        "serializer",
                        format!(
                            "`{raw}` is not accepted; use {}",
                            quoted(crate::codec::Serializer::NAMES)
                        ),
                    )
                },
            )?);
        }
        if let Some(raw) = spec.take_str("compressor") {
            given.compressor = Some(crate::codec::Compressor::from_name(raw.trim()).ok_or_else(
                || {
                    spec.error(
                        "compressor",
                        format!(
                            "`{raw}` is not accepted; use {}",
                            quoted(crate::codec::Compressor::NAMES)
                        ),
                    )
                },
            )?);
        }
        let levels = crate::codec::zstd_levels();
        let expected = format!("a zstd level from {} to {}", levels.start(), levels.end());
        given.zstd_level = spec.take::<i32>("zstd_level", &expected)?;
        if let Some(level) = given.zstd_level.filter(|l| !levels.contains(l)) {
            return Err(spec.error(
                "zstd_level",
                format!("{level} is out of range; use {expected}"),
            ));
        }
        given.max_entry_size = spec.take("max_entry_size", "a number of bytes such as 67108864")?;
        if let Some(raw) = spec.take_str("on_error") {
            given.on_error = Some(match raw.as_str() {
                "raise" => OnError::Raise,
                "degrade" => OnError::Degrade,
                _ => {
                    return Err(spec.error(
                        "on_error",
                        format!("`{raw}` is not accepted; use \"raise\" or \"degrade\""),
                    ))
                }
            });
        }
        given.operation_timeout = spec.take_seconds("operation_timeout")?;
        given.near_ttl = spec.take_seconds("near_ttl")?;
        given.near_max_entries = spec.take("near_max_entries", "a whole number of entries")?;
        given.breaker_failures =
            spec.take("breaker_failures", "a whole number of failures (0: off)")?;
        given.breaker_max_delay = spec.take_seconds("breaker_max_delay")?;
        Ok(given)
    }

    /// Overrides the options of `options` that this layer gave; keeps the others.
    fn apply_to(self, options: &mut CacheOptions) {
        fn set<T>(target: &mut T, given: Option<T>) {
            if let Some(value) = given {
                *target = value;
            }
        }
        set(&mut options.default_timeout, self.default_timeout);
        set(&mut options.key_prefix, self.key_prefix);
        set(&mut options.version, self.version);
        set(&mut options.invalid_keys, self.invalid_keys);
        set(&mut options.compress_min_bytes, self.compress_min_bytes);
        set(&mut options.serializer, self.serializer);
        set(&mut options.compressor, self.compressor);
        set(&mut options.zstd_level, self.zstd_level);
        set(&mut options.max_entry_size, self.max_entry_size);
        set(&mut options.on_error, self.on_error);
        set(
            &mut options.operation_timeout,
            self.operation_timeout.map(Some),
        );
        set(&mut options.near_ttl, self.near_ttl.map(Some));
        set(&mut options.near_max_entries, self.near_max_entries);
        set(&mut options.breaker_failures, self.breaker_failures);
        set(&mut options.breaker_max_delay, self.breaker_max_delay);
    }
}

/// The aliases of an application, in the order they were configured.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CachesConfig {
    /// One entry per alias.
    pub caches: Vec<CacheConfig>,
}

impl CachesConfig {
    /// Aliases from `(alias, url)` pairs.
    pub fn from_urls<'a>(
        urls: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ConfigError> {
        let caches = urls
            .into_iter()
            .map(|(alias, url)| CacheConfig::from_url(alias, url))
            .collect::<Result<_, _>>()?;
        Ok(CachesConfig { caches })
    }

    /// Parses a `webcache.toml` document (see the module docs).
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let file_error = |message: String| ConfigError::File {
            path: origin.to_owned(),
            message,
        };
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| file_error(format!("not valid TOML: {e}")))?;
        let mut caches = Vec::new();
        for (top, value) in &doc {
            if top != "caches" {
                return Err(file_error(format!(
                    "unknown section `{top}`; cache aliases go under `[caches.NAME]`"
                )));
            }
            let toml::Value::Table(aliases) = value else {
                return Err(file_error("`caches` must be a table of aliases".into()));
            };
            for (alias, value) in aliases {
                caches.push(alias_from_toml(alias, value)?);
            }
        }
        Ok(CachesConfig { caches })
    }

    /// Reads and parses a `webcache.toml` file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            message: format!("cannot read it: {e}"),
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Applies `WEBCACHE_URL`, if set: it replaces the `default` alias's URL or adds a
    /// `default` (see [`with_default_url`](Self::with_default_url)).
    pub fn with_env(self) -> Result<Self, ConfigError> {
        match std::env::var(URL_ENV) {
            Ok(url) if !url.trim().is_empty() => self.with_default_url(&url),
            _ => Ok(self),
        }
    }

    /// Replaces (or adds) the `default` alias's URL.
    ///
    /// The common options of the alias apply in layers: the defaults, then the file (the
    /// alias's fields and its `url`'s query, which may not both give one option), then this
    /// URL's query. Each layer overrides exactly the options it gives, even with the default
    /// value (`?version=1` over a file's `version = 2` is version 1); options the URL does not
    /// give keep the file's values. The old backend's own options (`max_entries`, `table`, ...)
    /// are dropped with the old URL.
    pub fn with_default_url(mut self, url: &str) -> Result<Self, ConfigError> {
        let (given, backend) = parse_layer("default", url, BTreeMap::new())?;
        if let Some(existing) = self
            .caches
            .iter_mut()
            .find(|c| c.options.alias == "default")
        {
            given.apply_to(&mut existing.options);
            existing.backend = backend;
        } else {
            let mut options = CacheOptions::default();
            given.apply_to(&mut options);
            self.caches.insert(0, CacheConfig { options, backend });
        }
        Ok(self)
    }

    /// The configuration of `alias`.
    pub fn get(&self, alias: &str) -> Option<&CacheConfig> {
        self.caches.iter().find(|c| c.options.alias == alias)
    }
}

fn alias_from_toml(alias: &str, value: &toml::Value) -> Result<CacheConfig, ConfigError> {
    let invalid = |field: &str, message: String| ConfigError::Invalid {
        alias: alias.to_owned(),
        field: field.to_owned(),
        message,
    };
    let table = match value {
        toml::Value::String(url) => return CacheConfig::from_url(alias, url),
        toml::Value::Table(t) => t,
        other => {
            return Err(invalid(
                "",
                format!(
                    "expected a table with a `url` or a URL string, found a {}",
                    other.type_str()
                ),
            ))
        }
    };
    let mut url = None;
    let mut fields = BTreeMap::new();
    for (name, value) in table {
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(invalid(
                    name,
                    format!(
                        "expected a string, number or boolean, found a {}",
                        other.type_str()
                    ),
                ))
            }
        };
        if name == "url" {
            url = Some(text);
        } else {
            fields.insert(name.clone(), text);
        }
    }
    let url = url.ok_or_else(|| {
        invalid(
            "url",
            "missing; every alias needs a `url`, for example `url = \"locmem://\"`".into(),
        )
    })?;
    CacheConfig::from_parts(alias, &url, fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_aliases_with_fields_and_bare_urls() {
        let cfg = CachesConfig::from_toml_str(
            r#"
            [caches.default]
            url = "locmem://main"
            timeout = 0.5
            key_prefix = "shop"
            max_entries = 100
            [caches]
            sessions = "dummy://"
            "#,
            Path::new("webcache.toml"),
        )
        .unwrap();
        let d = cfg.get("default").unwrap();
        assert_eq!(
            d.options.default_timeout,
            Timeout::After(Duration::from_millis(500))
        );
        assert_eq!(d.options.key_prefix, "shop");
        let mut spec = d.backend.clone();
        assert_eq!(spec.take::<u64>("max_entries", "n").unwrap(), Some(100));
        spec.finish(&[]).unwrap();
        assert_eq!(cfg.get("sessions").unwrap().backend.scheme, "dummy");
    }

    #[test]
    fn errors_name_alias_field_and_what_is_accepted() {
        let err = CacheConfig::from_url("sessions", "locmem://?timeout=soon").unwrap_err();
        assert_eq!(
            err.to_string(),
            "cache `sessions`: `timeout`: `soon` is not a timeout; expected seconds (300, 0.5) or \"forever\""
        );
        let err = CacheConfig::from_url("default", "nothing-here").unwrap_err();
        assert!(err.to_string().contains("has no `scheme:`"), "{err}");
        let err = CachesConfig::from_toml_str("[caches.default]\ntimeout = 3", Path::new("w.toml"))
            .unwrap_err();
        assert!(err.to_string().contains("`url`: missing"), "{err}");
        let err =
            CachesConfig::from_toml_str("[caches.default\n", Path::new("w.toml")).unwrap_err();
        assert!(
            err.to_string().starts_with("w.toml: not valid TOML"),
            "{err}"
        );
        let spec = CacheConfig::from_url("default", "locmem://?max_entires=3")
            .unwrap()
            .backend;
        let err = spec.finish(&["max_entries", "max_bytes"]).unwrap_err();
        assert!(err.to_string().contains("`max_entires`: unknown option for the `locmem` backend; accepted options: max_entries, max_bytes"), "{err}");
    }

    #[test]
    fn default_url_override_keeps_common_options() {
        let cfg = CachesConfig::from_toml_str(
            "[caches.default]\nurl = \"locmem://\"\nkey_prefix = \"app\"\nmax_entries = 5\n",
            Path::new("w.toml"),
        )
        .unwrap()
        .with_default_url("dummy://?timeout=forever")
        .unwrap();
        let d = cfg.get("default").unwrap();
        assert_eq!(d.backend.scheme, "dummy");
        assert_eq!(d.options.key_prefix, "app");
        assert_eq!(d.options.default_timeout, Timeout::Forever);
        d.backend.finish(&[]).unwrap();
    }

    #[test]
    fn max_entry_size_is_a_number_of_bytes() {
        let c = CacheConfig::from_url("default", "locmem://?max_entry_size=1024").unwrap();
        assert_eq!(c.options.max_entry_size, 1024);
        let d = CacheConfig::from_url("default", "locmem://").unwrap();
        assert_eq!(d.options.max_entry_size, crate::DEFAULT_MAX_ENTRY_SIZE);
        let err = CacheConfig::from_url("default", "locmem://?max_entry_size=64M").unwrap_err();
        assert!(
            err.to_string()
                .contains("`max_entry_size`: `64M` is not valid; expected a number of bytes"),
            "{err}"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://u:secret@h:6379/2"),
            "redis://u:***@h:6379/2"
        );
        assert_eq!(redact("redis://h:6379/2"), "redis://h:6379/2");
    }
}
