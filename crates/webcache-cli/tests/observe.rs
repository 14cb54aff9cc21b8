//! Seeing the cache from the command line, end to end with real processes: `stats` per read
//! operation and `--hot` after skewed traffic, `stats --watch` under traffic, and long work
//! (`del --pattern`, `clear`) piped (no progress) and interrupted with Ctrl-C on a big Redis.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use webcache_testkit::servers::redis::RedisServer;

mod common;

use common::{command, Running};

/// `webcache ARGS` with `stdin`, its output piped.
fn webcache(args: &[&str], stdin: &str) -> Output {
    common::webcache(args, Some(stdin))
}

/// A `webcache serve` on a free port, with the admin token its banner names.
struct Serve {
    /// The process, stopped when this is dropped.
    _running: Running,
    base: String,
    /// The admin token, from the banner's dashboard address.
    token: String,
}

impl Serve {
    fn start() -> Serve {
        let running = Running::start_with(&["serve"], None, |line| line.contains("#token="));
        let token = running
            .banner
            .lines()
            .find_map(|l| l.split_once("#token=").map(|(_, t)| t.trim().to_owned()))
            .expect("the banner names the dashboard with its token");
        Serve {
            base: running.base.clone(),
            _running: running,
            token,
        }
    }
}

fn json_result(out: &Output) -> Value {
    assert!(out.status.success(), "{out:?}");
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    reply["result"].clone()
}

async fn get(url: &str) {
    let response = reqwest::get(url).await.unwrap();
    assert!(response.status().is_success(), "{url}");
    response.bytes().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_counts_per_operation_and_names_the_hot_keys_after_skewed_traffic() {
    let app = Serve::start();
    // Skewed traffic: `/hello` (`get_or_set_with_stale` of the key `httpbin`) 600 times, one
    // page 100 times, and 40 pages once each. The hot keys are estimated from a random sample
    // of one read in 16: 600 against 100 reads puts `httpbin` first by about five standard
    // deviations of the sampled counts (at 300 against 200 the page came first about one run
    // in eight).
    for i in 0..600 {
        get(&format!("{}/hello?delay=0", app.base)).await;
        if i % 6 == 1 {
            get(&format!("{}/hello-page?delay=0", app.base)).await;
        }
        if i % 6 == 0 && i < 240 {
            get(&format!("{}/hello-page?delay=0&n={i}", app.base)).await;
        }
    }
    let base = app.base.clone();
    let (stats, human, hot, hot_human) = tokio::task::spawn_blocking(move || {
        (
            json_result(&webcache(&["stats", "--json", "--app", &base], "")),
            webcache(&["stats", "--app", &base], ""),
            json_result(&webcache(&["stats", "--hot", "--json", "--app", &base], "")),
            webcache(&["stats", "--hot", "--app", &base], ""),
        )
    })
    .await
    .unwrap();

    let reads = |operation: &str| {
        let r = stats["reads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["operation"] == operation)
            .unwrap_or_else(|| panic!("no `{operation}` reads: {stats}"));
        (r["hits"].as_u64().unwrap(), r["misses"].as_u64().unwrap())
    };
    assert_eq!(reads("get_or_set_with_stale"), (599, 1), "{stats}");
    // Page lookups: the repeated page 1 miss and 99 hits, the others a miss each.
    let (page_hits, page_misses) = reads("get_bytes");
    assert!(page_hits >= 99 && page_misses >= 41, "{stats}");
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("get_or_set_with_stale hits/misses: 599/1"),
        "{human:?}"
    );

    let keys: Vec<&str> = hot
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.first(), Some(&"httpbin"), "{hot}");
    assert!(
        keys.iter().any(|k| k.starts_with("views.cache_page.GET.")),
        "{hot}"
    );
    let first = String::from_utf8_lossy(&hot_human.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(first.ends_with("  httpbin"), "{hot_human:?}");

    // The dashboard's data lists them too, next to the biggest keys.
    let data: Value = reqwest::Client::new()
        .get(format!("{}/_webcache/dashboard/data", app.base))
        .bearer_auth(&app.token)
        .header("connection", "authorization")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let default = data["caches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["alias"] == "default")
        .unwrap();
    assert_eq!(default["hottest"][0]["key"], "httpbin", "{data}");
    assert!(
        default["reads"].as_array().is_some_and(|r| !r.is_empty()),
        "{data}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_watch_prints_a_line_a_second_when_piped_and_the_counts_move() {
    let app = Serve::start();
    let mut watch = command()
        .args(["stats", "--watch", "--app", &app.base])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let header = lines.next().unwrap().unwrap();
    assert!(header.contains("hits/s"), "{header}");
    let mut rows = Vec::new();
    for _ in 0..4 {
        // Traffic between the lines.
        for _ in 0..5 {
            get(&format!("{}/hello?delay=0", app.base)).await;
        }
        let (row, rest) = tokio::task::spawn_blocking(move || {
            let row = lines.next().unwrap().unwrap();
            (row, lines)
        })
        .await
        .unwrap();
        lines = rest;
        // One plain line each: nothing drawn in place when piped.
        assert!(!row.contains('\r') && !row.contains('\x1b'), "{row:?}");
        rows.push(row);
    }
    let _ = watch.kill();
    let _ = watch.wait();
    // Columns: entries, bytes, hits, misses, errors, hits/s, misses/s.
    let hits: Vec<u64> = rows
        .iter()
        .map(|r| r.split_whitespace().nth(2).unwrap().parse().unwrap())
        .collect();
    assert!(hits.windows(2).all(|w| w[0] <= w[1]), "{rows:?}");
    assert!(hits.last() > hits.first(), "{rows:?}");
}

/// A Redis holding `n` raw keys `k1`..`kn` (written by a server-side script: seconds, not
/// minutes).
fn redis_with_keys(n: u32) -> RedisServer {
    let redis = RedisServer::start();
    let script = format!("for i=1,{n} do redis.call('set','k'..i,'x') end");
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "eval", &script, "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(dbsize(&redis), u64::from(n));
    redis
}

fn dbsize(redis: &RedisServer) -> u64 {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "dbsize"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn piped_long_work_prints_its_result_and_no_progress() {
    let redis = redis_with_keys(5000);
    let url = redis.url(0);
    let out = webcache(&["--cache", &url, "del", "--pattern", "--raw", "k1*"], "");
    assert!(out.status.success(), "{out:?}");
    // k1, k10-k19, k100-k199, k1000-k1999: 1111 keys.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "deleted 1111\n");
    assert!(out.stderr.is_empty(), "{out:?}");
    let out = webcache(
        &[
            "--cache",
            &url,
            "--json",
            "del",
            "--pattern",
            "--raw",
            "k2*",
        ],
        "",
    );
    assert_eq!(json_result(&out), 1111);
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_eq!(dbsize(&redis), 5000 - 2 * 1111);
    // One match is still a count.
    let out = webcache(
        &["--cache", &url, "--json", "del", "--pattern", "--raw", "k3"],
        "",
    );
    assert_eq!(json_result(&out), 1);

    // `clear` of 15,000 keys of the cache (`:1:` is the default prefix and version).
    let script = "for i=1,15000 do redis.call('set',':1:c'..i,'x') end";
    let port = redis.port().to_string();
    let filled = Command::new("redis-cli")
        .args(["-p", &port, "-n", "1", "eval", script, "0"])
        .output()
        .unwrap();
    assert!(filled.status.success(), "{filled:?}");
    let out = webcache(&["--cache", &redis.url(1), "clear", "--yes"], "");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "cleared 15000 keys\n");
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn del_with_a_pattern_on_a_big_redis_stops_on_sigint_and_says_how_many_it_deleted() {
    const KEYS: u64 = 400_000;
    let redis = redis_with_keys(KEYS as u32);
    let mut del = command()
        .args(["--cache", &redis.url(0), "del", "--pattern", "--raw", "k*"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once it has deleted some.
    let deadline = Instant::now() + Duration::from_secs(120);
    while dbsize(&redis) == KEYS {
        assert!(Instant::now() < deadline, "nothing deleted within 120 s");
        assert!(del.try_wait().unwrap().is_none(), "del ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = rustix::process::Pid::from_raw(del.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let out = del.wait_with_output().unwrap();
    let left = dbsize(&redis);
    assert!(left > 0, "del finished before the interrupt: {out:?}");
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reported: u64 = stderr
        .trim()
        .strip_prefix("interrupted: deleted ")
        .and_then(|rest| rest.strip_suffix(" keys"))
        .unwrap_or_else(|| panic!("{stderr:?}"))
        .parse()
        .unwrap();
    // What it reports is what it saw confirmed: at most one batch (1000) behind the server.
    let gone = KEYS - left;
    assert!(
        reported > 0 && reported <= gone && gone - reported <= 1000,
        "{reported} of {gone}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
}

/// Whether some process holds an established TCP connection to `port` on the loopback
/// (IPv4), from /proc/net/tcp: the CLI has dialled the server.
fn connected_to(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st ...; 01 is ESTABLISHED.
        fields.len() > 3 && fields[2].ends_with(&remote) && fields[3] == "01"
    })
}

#[test]
fn keys_json_interrupted_answers_with_an_error_object_saying_how_many_were_listed() {
    let redis = RedisServer::start();
    // A frozen server: the listing waits on it for ever, so the interrupt always comes first.
    let frozen = webcache_testkit::servers::Frozen::stop(redis.pid());
    let mut keys = command()
        .args(["--cache", &redis.url(0), "--json", "keys", "--raw", "k*"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once it has dialled the server (it then waits for the listing, Ctrl-C armed).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !connected_to(redis.port()) {
        assert!(
            Instant::now() < deadline,
            "the CLI did not dial within 60 s"
        );
        assert!(keys.try_wait().unwrap().is_none(), "keys ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = rustix::process::Pid::from_raw(keys.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let out = keys.wait_with_output().unwrap();
    drop(frozen);
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    let reply: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["error"], "interrupted: listed 0 keys", "{reply}");
    assert_eq!(reply["done"], 0, "{reply}");
}

#[test]
fn an_interrupted_del_through_an_app_says_the_app_goes_on_rather_than_a_count() {
    let redis = RedisServer::start();
    let app = Running::start_with(&["serve", "--cache", &redis.url(0)], None, |_| true);
    let app_port: u16 = app.listen.rsplit(':').next().unwrap().parse().unwrap();
    // The app's cache hangs on its frozen server: the deletion cannot end before the interrupt.
    let frozen = webcache_testkit::servers::Frozen::stop(redis.pid());
    let mut del = command()
        .args(["--app", &app.base, "--json", "del", "--pattern", "k*"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !connected_to(app_port) {
        assert!(
            Instant::now() < deadline,
            "the CLI did not reach the app within 60 s"
        );
        assert!(del.try_wait().unwrap().is_none(), "del ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = rustix::process::Pid::from_raw(del.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let out = del.wait_with_output().unwrap();
    drop(frozen);
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    let reply: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(reply["ok"], false, "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(
        error.starts_with("interrupted: stopped waiting; the app at ") && error.contains("goes on"),
        "{reply}"
    );
    // No count: this process cannot know how far the app got.
    assert!(reply.get("done").is_none(), "{reply}");
}
