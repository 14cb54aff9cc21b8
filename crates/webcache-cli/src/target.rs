//! Where inspection commands go: a cache opened from the configuration, or a running app.

use anyhow::Context;
use serde_json::{json, Value};
use webcache::{Cache, Caches};

use crate::cli::{Op, TargetArgs};
use crate::ops::{self, OpError};

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
    let caches = if let Some(path) = &args.config {
        Caches::from_toml_file(path).await?
    } else if let Some(url) = &args.cache {
        Caches::from_urls([(args.alias.as_str(), url.as_str())]).await?
    } else {
        Caches::from_env_or("locmem://").await?
    };
    Ok(caches)
}

impl Target {
    pub(crate) async fn open(args: &TargetArgs) -> anyhow::Result<Target> {
        if let Some(url) = &args.app {
            return Ok(Target::App {
                url: url.trim_end_matches('/').to_owned(),
                alias: args.alias.clone(),
                token: args.token.clone(),
                http: reqwest::Client::new(),
            });
        }
        let caches = open_caches(args).await?;
        let cache = caches.get(&args.alias).context("choose an alias with --alias")?;
        Ok(Target::Local(cache.clone()))
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
            Target::App { url, alias, token, http } => {
                let mut request = http
                    .post(format!("{url}{}", crate::serve::admin::PATH))
                    .json(&json!({ "alias": alias, "op": op }));
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let response = request.send().await.map_err(|e| {
                    OpError::Failed(format!("cannot reach the app at {url}: {e}; is `webcache serve` running there?"))
                })?;
                let status = response.status();
                let body: Value = response.json().await.map_err(|e| {
                    OpError::Failed(format!("{url} did not answer like a webcache app ({status}): {e}"))
                })?;
                crate::serve::admin::outcome_from_json(&body)
            }
        }
    }
}
