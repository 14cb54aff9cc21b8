//! Where inspection commands go: a cache opened from the configuration, or a running app.

use anyhow::Context;
use webcache::config::CachesConfig;
use webcache::{Cache, Caches};

use crate::cli::TargetArgs;
use crate::commands::{self, OpError, Reply, Request};
use crate::token_file;
use crate::wire::{AdminAnswer, AdminRequest, PATH};

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
    /// The address of the running app this target talks to, if it is one.
    pub(crate) fn app_url(&self) -> Option<&str> {
        match self {
            Target::Local(_) => None,
            Target::App { url, .. } => Some(url),
        }
    }

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

    /// Runs `keys` in human mode: printed as the backend finds them when the cache is local;
    /// the list, once it arrives, from an app. Returns the exit code.
    pub(crate) async fn print_keys(&self, request: Request, printed: &(dyn Fn(u64) + Sync)) -> i32 {
        match (self, request) {
            (
                Target::Local(cache),
                Request::Keys {
                    pattern,
                    limit,
                    address,
                },
            ) => commands::stream_keys(cache, &pattern, limit, address, printed).await,
            (_, request) => crate::output::print(&self.run(request).await, false),
        }
    }

    /// Runs one command.
    pub(crate) async fn run(&self, request: Request) -> Result<Reply, OpError> {
        self.run_with_progress(request, &|_| {}).await
    }

    /// Runs one command; `progress` hears how many keys a long `clear` or `del --pattern`
    /// has handled so far (when the cache is local: an app does not tell).
    pub(crate) async fn run_with_progress(
        &self,
        request: Request,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Reply, OpError> {
        match self {
            Target::Local(cache) => commands::run(cache, request, progress).await,
            Target::App {
                url,
                alias,
                token,
                http,
            } => {
                let mut post = http.post(format!("{url}{PATH}")).json(&AdminRequest {
                    alias: alias.clone(),
                    request,
                });
                if let Some(token) = token {
                    // Hop-by-hop, so that no proxy forwards it (the endpoint insists).
                    post = post
                        .bearer_auth(token)
                        .header(reqwest::header::CONNECTION, "authorization");
                }
                let response = post.send().await.map_err(|e| {
                    OpError::Failed(format!(
                        "cannot reach the app at {url}: {e}; is `webcache serve` running there?"
                    ))
                })?;
                let status = response.status();
                let answer: AdminAnswer = response.json().await.map_err(|e| {
                    OpError::Failed(format!(
                        "{url} did not answer like a webcache app ({status}): {e}"
                    ))
                })?;
                Result::from(answer).map_err(|e| match e {
                    OpError::Usage(m) if token.is_none() && status == 401 => {
                        let dir = token_file::dir().map_or_else(
                            || "(no runtime directory)".into(),
                            |d| d.display().to_string(),
                        );
                        OpError::Usage(format!("{m} (no token file for {url} in {dir})"))
                    }
                    other => other,
                })
            }
        }
    }
}
