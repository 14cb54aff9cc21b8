//! Where inspection commands go: a cache opened from the configuration, or a running app.

use anyhow::Context;
use serde_json::{json, Value};
use webcache::config::{BackendSpec, CachesConfig};
use webcache::{Cache, Caches};

use crate::cli::{Op, TargetArgs};
use crate::ops::{self, OpError};
use crate::token_file;

/// The cache (or app) commands run against.
pub(crate) enum Target {
    /// A cache opened in this process.
    Local(Cache),
    /// The admin endpoint of a running `webcache serve`.
    App {
        url: String,
        alias: String,
        token: Option<String>,
        http: reqwest::Client,
    },
}

/// Opens the caches the arguments describe: `--config FILE`, else `--cache URL`, else
/// `WEBCACHE_URL`, else the embedded default `locmem://`.
pub(crate) async fn open_caches(args: &TargetArgs) -> anyhow::Result<Caches> {
    Ok(Caches::from_config(caches_config(args)?).await?)
}

pub(crate) fn caches_config(args: &TargetArgs) -> anyhow::Result<CachesConfig> {
    Ok(if let Some(path) = &args.config {
        CachesConfig::from_toml_file(path)?.with_env()?
    } else if let Some(url) = &args.cache {
        CachesConfig::from_urls([(args.alias.as_str(), url.as_str())])?
    } else {
        CachesConfig::from_urls([(args.alias.as_str(), "locmem://")])?.with_env()?
    })
}

impl Target {
    pub(crate) async fn open(args: &TargetArgs) -> anyhow::Result<Target> {
        if let Some(url) = &args.app {
            let url = url.trim_end_matches('/').to_owned();
            return Ok(Target::App {
                token: args.token.clone().or_else(|| token_file::find(&url)),
                url,
                alias: args.alias.clone(),
                http: reqwest::Client::new(),
            });
        }
        let caches = open_caches(args).await?;
        let cache = caches
            .get(&args.alias)
            .context("choose an alias with --alias")?;
        Ok(Target::Local(cache.clone()))
    }

    /// Runs `keys`, printing each key as it arrives (locally) or the list (from an app).
    pub(crate) async fn stream_keys(&self, op: &Op) -> Result<(), OpError> {
        use std::io::Write;
        let Target::Local(cache) = self else {
            let result = self.run(op).await?;
            crate::output::print(Some(op), &Ok(result), false);
            return Ok(());
        };
        let Op::Keys {
            pattern,
            limit,
            key,
        } = op
        else {
            return Err(OpError::Usage("not a keys command".into()));
        };
        let mut keys = ops::list_keys(cache, pattern, key);
        let mut out = std::io::stdout().lock();
        let mut printed = 0usize;
        while let Some(next) = futures::StreamExt::next(&mut keys).await {
            if limit.is_some_and(|l| printed >= l) {
                break;
            }
            // A closed pipe (`| head`) ends the listing quietly.
            if writeln!(out, "{}", next?).is_err() {
                return Ok(());
            }
            printed += 1;
        }
        if printed == 0 {
            let _ = writeln!(out, "(empty)");
        }
        Ok(())
    }

    /// Runs one command, printing `clear` progress on standard error.
    pub(crate) async fn run(&self, op: &Op) -> Result<Value, OpError> {
        match self {
            Target::Local(cache) => {
                ops::run(cache, op, &|removed| {
                    if removed >= 10_000 {
                        eprintln!("cleared {removed} keys so far...");
                    }
                })
                .await
            }
            Target::App {
                url,
                alias,
                token,
                http,
            } => {
                let mut request = http
                    .post(format!("{url}{}", crate::serve::admin::PATH))
                    .json(&json!({ "alias": alias, "op": op }));
                if let Some(token) = token {
                    // Hop-by-hop, so that no proxy forwards it (the endpoint insists).
                    request = request
                        .bearer_auth(token)
                        .header(reqwest::header::CONNECTION, "authorization");
                }
                let response = request.send().await.map_err(|e| {
                    OpError::Failed(format!(
                        "cannot reach the app at {url}: {e}; is `webcache serve` running there?"
                    ))
                })?;
                let status = response.status();
                let body: Value = response.json().await.map_err(|e| {
                    OpError::Failed(format!(
                        "{url} did not answer like a webcache app ({status}): {e}"
                    ))
                })?;
                crate::serve::admin::outcome_from_json(&body).map_err(|e| match e {
                    OpError::Usage(m) if token.is_none() && status == 401 => {
                        OpError::Usage(format!(
                            "{m} (no token file for {url} in {})",
                            token_file::dir().map_or_else(
                                || "(no runtime directory)".into(),
                                |d| d.display().to_string()
                            )
                        ))
                    }
                    other => other,
                })
            }
        }
    }
}

/// `createcachetable`: creates (or, with `--dry-run`, prints) the table of a SQL cache. It
/// reads the configuration without opening the cache, which would fail for want of the table.
pub(crate) async fn create_cache_table(args: &TargetArgs, dry_run: bool) -> Result<Value, OpError> {
    let config = caches_config(args).map_err(|e| OpError::Usage(format!("{e:#}")))?;
    let mut spec: BackendSpec = config
        .get(&args.alias)
        .map(|c| c.backend.clone())
        .ok_or_else(|| {
            OpError::Usage(format!(
                "no cache alias `{}` in the configuration; choose one with --alias",
                args.alias
            ))
        })?;
    if !matches!(spec.scheme.as_str(), "sqlite" | "postgres" | "postgresql") {
        return Err(OpError::Usage(format!(
            "createcachetable needs an `sqlite://` or `postgres://` cache; `{}` is a {} cache",
            spec.alias, spec.scheme
        )));
    }
    let statements = if dry_run {
        webcache::sql::create_cache_table_sql(&mut spec)
    } else {
        webcache::sql::create_cache_table(&mut spec).await
    }
    .map_err(|e| match e {
        webcache::ConfigError::Connect { .. } => {
            OpError::Failed(format!("{:#}", anyhow::Error::new(e)))
        }
        other => OpError::Usage(other.to_string()),
    })?;
    let sql = statements
        .iter()
        .map(|s| format!("{s};"))
        .collect::<Vec<_>>()
        .join("\n");
    Ok(if dry_run {
        json!(sql)
    } else {
        json!({ "created": spec.alias, "sql": sql })
    })
}
