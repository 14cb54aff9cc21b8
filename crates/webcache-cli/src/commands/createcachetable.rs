//! `createcachetable [--dry-run]`: create (or print) the table of an `sqlite://` or
//! `postgres://` cache.

use webcache::config::BackendSpec;
use webcache::Cache;

use super::{OpError, Reply};
use crate::cli::TargetArgs;

/// Creates the table, or with `dry_run` returns its SQL. It reads the configuration without
/// opening the cache, which would fail for want of the table.
pub(crate) async fn create_cache_table(args: &TargetArgs, dry_run: bool) -> Result<Reply, OpError> {
    let config =
        crate::target::caches_config(args).map_err(|e| OpError::Usage(format!("{e:#}")))?;
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
        webcache::config::ConfigError::Connect { .. } => {
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
        Reply::Sql(sql)
    } else {
        Reply::TableCreated {
            alias: spec.alias,
            sql,
        }
    })
}

/// Reached only through the admin endpoint: creating tables needs the cache's configuration,
/// which the command line has.
pub(super) fn refuse(cache: &Cache) -> Result<Reply, OpError> {
    Err(OpError::Usage(format!(
        "run createcachetable with --cache URL or --config FILE, not through a running app (cache `{}`)",
        cache.alias()
    )))
}
