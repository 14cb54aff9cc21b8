//! `keys PATTERN [--limit N]`: the keys matching a glob pattern.

use std::io::Write;

use futures::StreamExt;
use webcache::Cache;

use super::{addressed, Address, OpError, Reply};
use crate::output;

/// The whole list, for `--json` and the admin endpoint, telling `listed_so_far` how many keys
/// it holds (so that Ctrl-C can say it).
pub(super) async fn run(
    cache: &Cache,
    pattern: &str,
    limit: Option<usize>,
    address: Address,
    listed_so_far: &(dyn Fn(u64) + Sync),
) -> Result<Reply, OpError> {
    let mut keys = list(cache, pattern, address);
    let mut out = Vec::new();
    while let Some(k) = keys.next().await {
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        out.push(k?);
        listed_so_far(out.len() as u64);
    }
    Ok(Reply::Keys(out))
}

/// Prints keys as the backend finds them (a large Redis may hold millions), escaped for the
/// terminal, telling `printed` how many so far; returns the exit code.
pub(crate) async fn stream(
    cache: &Cache,
    pattern: &str,
    limit: Option<usize>,
    address: Address,
    printed_so_far: &(dyn Fn(u64) + Sync),
) -> i32 {
    let mut keys = list(cache, pattern, address);
    let mut out = std::io::stdout().lock();
    let mut printed = 0usize;
    while let Some(next) = keys.next().await {
        if limit.is_some_and(|l| printed >= l) {
            break;
        }
        let key = match next {
            Ok(key) => key,
            Err(e) => {
                drop(out);
                return output::print(&Err(e.into()), false);
            }
        };
        if let Err(e) = writeln!(out, "{}", output::printable(&key)) {
            return output::write_failed(&e, 0);
        }
        printed += 1;
        printed_so_far(printed as u64);
    }
    if printed == 0 {
        if let Err(e) = writeln!(out, "(empty)") {
            return output::write_failed(&e, 0);
        }
    }
    match out.flush() {
        Ok(()) => 0,
        Err(e) => output::write_failed(&e, 0),
    }
}

/// The keys matching `pattern`, as the address names them (stored keys with `--raw`).
pub(super) fn list(cache: &Cache, pattern: &str, address: Address) -> webcache::backend::KeyStream {
    if address.raw {
        cache.scan(pattern)
    } else {
        addressed(cache, address).keys(pattern)
    }
}
