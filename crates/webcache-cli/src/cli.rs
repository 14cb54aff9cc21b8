//! Command-line syntax: the same inspection commands on the command line, in `webcache shell`
//! and through a running app's admin endpoint.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The exit codes, shown at the end of `--help`.
const EXIT_CODES: &str = "\
Exit codes:
  0  success (also when the output is a closed pipe, as in `webcache keys | head`)
  1  the cache, its backend or the app failed, or the output could not be written
  2  a usage mistake: bad arguments or JSON value, an invalid key, a configuration error,
     `clear` without --yes, or a request the app refused (e.g. a wrong --token)
`shell` exits with the highest code of its lines.";

/// webcache: Django's cache framework for Rust web services.
#[derive(Debug, Parser)]
#[command(
    name = "webcache",
    about,
    long_about = None,
    disable_version_flag = true,
    after_help = EXIT_CODES
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// Print one JSON object per command: {"ok": true, "result": ...} or {"ok": false, "error": "..."}.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Which cache a command talks to.
#[derive(Debug, Clone, Args, Default)]
pub(crate) struct TargetArgs {
    /// Cache URL, e.g. `redis://127.0.0.1:6379/2` (default: WEBCACHE_URL, else `locmem://`).
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) cache: Option<String>,
    /// A webcache.toml file with `[caches.NAME]` aliases.
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "cache")]
    pub(crate) config: Option<PathBuf>,
    /// The alias to use from the configuration.
    #[arg(long, global = true, value_name = "NAME", default_value = "default")]
    pub(crate) alias: String,
    /// Inspect a running `webcache serve` through its admin endpoint instead.
    #[arg(long, global = true, value_name = "URL", conflicts_with_all = ["cache", "config"])]
    pub(crate) app: Option<String>,
    /// The admin token `webcache serve` printed (default: the one it left for this user, when
    /// the app runs on this machine).
    #[arg(long, global = true, env = "WEBCACHE_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the demo app: a slow upstream cached three ways, and a session cart.
    ///
    /// Its admin endpoint (what `--app URL` talks to) always needs the token printed at start,
    /// answers only requests for its own address (localhost, loopback or the bound IP, with its
    /// port) and never through a proxy. The CLI on the same machine finds the token by itself:
    /// `serve` leaves it in $XDG_RUNTIME_DIR/webcache/ (else ~/.local/state/webcache/), readable
    /// by this user only, and removes it on exit.
    Serve(ServeArgs),
    /// Run a caching reverse proxy in front of any HTTP origin.
    Proxy(ProxyArgs),
    /// Serve the dashboard of a cache (hit ratio, backend health, a key browser) on a local
    /// address; `serve` and `proxy` serve their own at /_webcache/dashboard.
    Dashboard(DashboardArgs),
    /// Read commands from standard input, one per line, as `redis-cli` does.
    Shell,
    #[command(flatten)]
    Op(Op),
}

/// Options of `webcache serve`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub(crate) listen: String,
    /// Base URL of the slow upstream (it must answer `GET /delay/N`); default: the built-in one.
    #[arg(long, value_name = "URL")]
    pub(crate) upstream: Option<String>,
    /// The catalogue's SQLite file (`/products`), created with sample rows when new; default:
    /// catalogue.db in the runtime directory. Two `serve` processes given the same file and the
    /// same shared cache see each other's writes at once.
    #[arg(long, value_name = "PATH")]
    pub(crate) db: Option<PathBuf>,
}

/// Options of `webcache dashboard`.
#[derive(Debug, Clone, Args)]
pub(crate) struct DashboardArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8050")]
    pub(crate) listen: String,
}

/// Options of `webcache proxy`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ProxyArgs {
    /// The origin to forward to, e.g. http://127.0.0.1:8000.
    #[arg(long, value_name = "URL")]
    pub(crate) upstream: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: String,
    /// Keep cacheable 200 responses without freshness information this many seconds (Django's
    /// site-wide middleware); without it the proxy follows RFC 9111 strictly.
    #[arg(long, value_name = "SECONDS")]
    pub(crate) default_ttl: Option<f64>,
    /// The hosts the proxy answers for (Django's ALLOWED_HOSTS): example.com, .example.com (the
    /// domain and its subdomains), * (any, the default). Requests for others get 400 and are
    /// neither stored nor forwarded.
    #[arg(long, value_name = "HOST,...", value_delimiter = ',')]
    pub(crate) allowed_hosts: Vec<String>,
    /// Seconds to wait for a connection to the upstream before answering 504.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub(crate) connect_timeout: f64,
    /// Seconds to wait for the upstream's response head before answering 504 (nginx's
    /// proxy_read_timeout); requests waiting for the same page wait as long and share the answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub(crate) first_byte_timeout: f64,
    /// Seconds a whole exchange with the upstream may take, body included.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600.0)]
    pub(crate) total_timeout: f64,
    /// Serve a page up to this many seconds past its freshness (Varnish's grace): at once while
    /// one refresh runs in the background, and when the upstream fails (5xx, refused, timed
    /// out). Never for pages with must-revalidate, proxy-revalidate or no-cache (nor, without
    /// --default-ttl, s-maxage). Pages' own stale-while-revalidate / stale-if-error always apply.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub(crate) grace: f64,
    /// Allow `PURGE` requests that send `Authorization: Bearer TOKEN` (purge a URL with all its
    /// variants; with `Webcache-Invalidate-Tags: a, b`, invalidate tags). PURGE is refused by
    /// everyone unless this or --purge-from is given.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "WEBCACHE_PURGE_TOKEN",
        hide_env_values = true
    )]
    pub(crate) purge_token: Option<String>,
    /// Allow `PURGE` requests from these client addresses or networks (127.0.0.1, ::1,
    /// 10.0.0.0/8), read from the connection.
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',')]
    pub(crate) purge_from: Vec<String>,
    /// Keep the client's X-Forwarded-For / Forwarded fields (only behind a proxy of yours);
    /// by default they are replaced by what the proxy saw.
    #[arg(long)]
    pub(crate) trust_forwarded: bool,
    /// Answer this proxy's own admin side: the command endpoint (`webcache ... --app`),
    /// /_webcache/metrics (Prometheus) and /_webcache/dashboard, with `serve`'s token rules.
    /// Without it every /_webcache/ path answers 404.
    #[arg(long)]
    pub(crate) admin: bool,
}

/// How a command addresses keys.
#[derive(Debug, Clone, Copy, Args, Default)]
pub(crate) struct KeyArgs {
    /// Key version (default: the cache's).
    #[arg(long = "version", value_name = "N")]
    pub(crate) version: Option<i64>,
    /// Address the stored key as it is (no prefix or version applied).
    #[arg(long)]
    pub(crate) raw: bool,
}

/// What `set` and `add` store, and for how long.
#[derive(Debug, Clone, Args)]
pub(crate) struct WriteArgs {
    /// The value, as JSON: '"text"', 42, -5, '{"a": 1}'.
    #[arg(allow_negative_numbers = true)]
    pub(crate) value: String,
    /// Timeout in seconds (default: the cache's), 0 = do not keep.
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) ttl: Option<f64>,
    /// Never expire.
    #[arg(long, conflicts_with = "ttl")]
    pub(crate) forever: bool,
}

/// The inspection commands. They parse the same way everywhere and run in [`crate::commands`].
/// Their syntax only: what runs is a [`crate::commands::Request`] made from it.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum Op {
    /// List keys matching a glob pattern (`*`, `?`, `[abc]`).
    Keys {
        /// The pattern (default `*`).
        #[arg(default_value = "*")]
        pattern: String,
        /// Stop after this many keys.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Show a value, decoded.
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        keyargs: KeyArgs,
    },
    /// Seconds left, `forever`, or missing.
    Ttl {
        /// The key.
        key: String,
        #[command(flatten)]
        keyargs: KeyArgs,
    },
    /// Store a JSON value.
    Set {
        /// The key.
        key: String,
        #[command(flatten)]
        write: WriteArgs,
        #[command(flatten)]
        keyargs: KeyArgs,
    },
    /// Store a JSON value only if the key is absent.
    Add {
        /// The key.
        key: String,
        #[command(flatten)]
        write: WriteArgs,
        #[command(flatten)]
        keyargs: KeyArgs,
    },
    /// Add to an integer value.
    Incr {
        /// The key.
        key: String,
        /// How much (default 1).
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        by: i64,
        #[command(flatten)]
        keyargs: KeyArgs,
    },
    /// Subtract from an integer value.
    Decr {
        /// The key.
        key: String,
        /// How much (default 1).
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        by: i64,
        #[command(flatten)]
        keyargs: KeyArgs,
    },
    /// Give a key a new timeout in seconds (0 expires it now).
    Touch {
        /// The key.
        key: String,
        /// Seconds.
        #[arg(allow_negative_numbers = true)]
        seconds: f64,
        #[command(flatten)]
        keyargs: KeyArgs,
    },
    /// Delete keys (with --pattern, every key matching glob patterns).
    Del {
        /// The keys (with --pattern: glob patterns, as `keys` takes them).
        #[arg(required = true)]
        keys: Vec<String>,
        /// Take the arguments as glob patterns and delete every matching key, in batches,
        /// with progress on a terminal; Ctrl-C stops and says how many were deleted.
        #[arg(long)]
        pattern: bool,
        #[command(flatten)]
        keyargs: KeyArgs,
    },
    /// Delete every key of the cache (its prefix, every version).
    Clear {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Make every value and page carrying any of these tags a miss, in every process sharing
    /// the cache (one write, however many entries carry them).
    Invalidate {
        /// A tag (repeat the flag for several).
        #[arg(long = "tag", value_name = "TAG", required = true)]
        tags: Vec<String>,
    },
    /// Drop the cached page of a URL with all its variants, in every process sharing the cache.
    Purge {
        /// The page's absolute URL, e.g. http://127.0.0.1:8000/hello?lang=fr.
        url: String,
        /// The key prefix of the page layer that stored it.
        #[arg(long, value_name = "PREFIX", default_value = webcache::http::DEFAULT_KEY_PREFIX)]
        key_prefix: String,
    },
    /// Entries, size, hits and misses (per read operation too).
    Stats {
        /// Show the most read keys instead (estimated from a sample of reads).
        #[arg(long)]
        hot: bool,
        /// Print the figures every second until Ctrl-C, like `redis-cli --stat`.
        #[arg(long)]
        watch: bool,
    },
    /// Create the database table of an `sqlite://` or `postgres://` cache.
    Createcachetable {
        /// Print the SQL instead of running it.
        #[arg(long)]
        dry_run: bool,
    },
}

/// One line of `webcache shell` (or one admin request): an inspection command.
#[derive(Debug, Parser)]
#[command(
    name = "",
    no_binary_name = true,
    disable_help_flag = false,
    disable_version_flag = true
)]
pub(crate) struct Line {
    #[command(subcommand)]
    pub(crate) op: Op,
}
