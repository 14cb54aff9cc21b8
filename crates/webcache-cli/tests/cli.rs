//! End-to-end tests of the built `webcache` binary: the demo app over real HTTP and every
//! inspection command, through `shell`, the command line and `--app`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{command, runtime_dir, webcache, Demo, Proxy};
use serde_json::{json, Value};

mod common;

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

async fn get_json(client: &reqwest::Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn post_json(client: &reqwest::Client, url: String) -> Value {
    client.post(url).send().await.unwrap().json().await.unwrap()
}

async fn get(client: &reqwest::Client, url: &str) -> (Duration, reqwest::Response) {
    let started = Instant::now();
    let response = client.get(url).send().await.unwrap();
    (started.elapsed(), response)
}

#[tokio::test]
async fn hello_is_slow_once_then_a_hit() {
    let demo = Demo::start(&[]);
    let http = reqwest::Client::new();
    let (first_took, first) = get(&http, &format!("{}/hello?delay=1", demo.base)).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-cache"], "MISS");
    let body = first.text().await.unwrap();
    assert!(
        first_took >= Duration::from_secs(1),
        "the miss waits for the upstream: {first_took:?}"
    );
    assert!(
        body.len() > 4000 && body.contains("Hello 127.0.0.1"),
        "{} bytes",
        body.len()
    );
    let (_, second) = get(&http, &format!("{}/hello?delay=1", demo.base)).await;
    assert_eq!(second.headers()["x-cache"], "HIT");
    let count: Value = get_json(&http, format!("{}/count", demo.base)).await;
    assert_eq!(count["served"], 1, "the upstream was called once");

    // The key and its TTL are visible from outside through the admin endpoint.
    let out = webcache(&["--json", "ttl", "httpbin", "--app", &demo.base], None);
    let lifetime = &json_lines(&out)[0]["result"];
    let fresh = lifetime["fresh"].as_f64().unwrap();
    assert!(fresh > 50.0 && fresh <= 60.0, "{lifetime}");
    let stale = lifetime["stale"].as_f64().unwrap();
    assert!((299.0..=301.0).contains(&stale), "{lifetime}");
    let out = webcache(&["get", "httpbin", "--app", &demo.base], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"delay\": 1.0"));
}

#[tokio::test]
async fn the_upstream_rejects_bad_delays_with_words() {
    let demo = Demo::start(&[]);
    let response = reqwest::get(format!("{}/delay/soon", demo.base))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("use seconds from 0 to"));
    let http = reqwest::Client::new();
    let (_, response) = get(&http, &format!("{}/hello?delay=100", demo.base)).await;
    assert_eq!(
        response.status(),
        502,
        "an upstream failure is a 502 that says why"
    );
    assert!(response.text().await.unwrap().contains("answered 400"));
}

#[tokio::test]
async fn post_on_the_class_route_is_never_cached() {
    let demo = Demo::start(&[]);
    let http = reqwest::Client::new();
    for _ in 0..2 {
        let r = http
            .post(format!("{}/hello-class?delay=0", demo.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let count: Value = get_json(&http, format!("{}/count", demo.base)).await;
    assert_eq!(count["served"], 2);
}

#[tokio::test]
async fn the_cart_lives_in_a_session_and_is_inspectable() {
    let demo = Demo::start(&[]);
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let mut cookie = String::new();
    for item in ["apple", "pear"] {
        let r = http
            .get(format!("{}/cart?add={item}", demo.base))
            .send()
            .await
            .unwrap();
        if let Some(c) = r.headers().get("set-cookie") {
            cookie = c.to_str().unwrap().to_owned();
        }
    }
    let body: Value = get_json(&http, format!("{}/cart", demo.base)).await;
    assert_eq!(body, json!({"items": ["apple", "pear"]}));
    let id = cookie
        .trim_start_matches("sessionid=")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(!cookie.contains("apple"), "the cookie carries only the id");
    let out = webcache(
        &["--json", "keys", "webcache.sessions.*", "--app", &demo.base],
        None,
    );
    assert_eq!(
        json_lines(&out)[0]["result"],
        json!([format!("webcache.sessions.{id}")])
    );
    let out = webcache(
        &[
            "--json",
            "get",
            &format!("webcache.sessions.{id}"),
            "--app",
            &demo.base,
        ],
        None,
    );
    let record = &json_lines(&out)[0]["result"];
    assert_eq!(record["data"]["items"], json!(["apple", "pear"]));
    // The id as the cookie carries it and the expiry as a date, not their serialized forms
    // (a 128-bit number shown as `-5.28e+37` and a tuple of date parts).
    assert_eq!(record["session_id"], json!(id), "{record}");
    let expires = record["expires"].as_str().expect("a date");
    assert!(
        expires.len() == 20 && expires.ends_with('Z') && expires.as_bytes()[10] == b'T',
        "an RFC 3339 UTC date: {expires}"
    );
    let left = record["expires_in_seconds"].as_i64().unwrap();
    assert!((13 * 86_400..=14 * 86_400).contains(&left), "{record}");
    assert_eq!(record["expired"], json!(false));
    let cleared: Value = post_json(&http, format!("{}/cart/clear", demo.base)).await;
    assert_eq!(cleared, json!({"items": []}));
    let body: Value = get_json(&http, format!("{}/cart", demo.base)).await;
    assert_eq!(body, json!({"items": []}));
}

const SCRIPT: &str = r#"
# every inspection command, one process
set greeting '"hello"' --ttl 30
get greeting
ttl greeting
set forever '{"a": [1, 2]}' --forever
ttl forever
get forever
ttl missing
get missing
add greeting '"other"'
add fresh 1
incr fresh 41
decr fresh 2
incr greeting
touch greeting 100
touch missing 5
keys
keys gr*
set v2 '"two"' --version 2
get v2
get v2 --version 2
get :1:greeting --raw
del greeting
del greeting
del fresh forever nothing
stats
clear
clear --yes
keys
set bad not-json
nonsense
"#;

#[test]
fn every_inspection_command_through_the_shell() {
    check_script_results(&webcache(
        &["--json", "--cache", "locmem://", "shell"],
        Some(SCRIPT),
    ));
}

#[test]
fn every_inspection_command_against_redis() {
    let redis = webcache_testkit::servers::redis::RedisServer::shared();
    let url = redis.url(3);
    check_script_results(&webcache(
        &["--json", "--cache", &url, "shell"],
        Some(SCRIPT),
    ));
    // The same data is what redis-cli sees: readable keys, real TTLs.
    let out = webcache(
        &["--cache", &url, "set", "tutorial", "\"hi\"", "--ttl", "60"],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let ttl: i64 = redis
        .cli(&["-n", "3", "ttl", ":1:tutorial"])
        .trim()
        .parse()
        .unwrap();
    assert!((55..=60).contains(&ttl), "{ttl}");
    let out = webcache(&["--cache", &url, "keys", "tut*"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tutorial");
    // An unreachable Redis says which URL and what failed.
    let out = webcache(&["--cache", "redis://127.0.0.1:1/0", "get", "k"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("redis://127.0.0.1:1/0"), "{err}");
}

fn check_script_results(out: &Output) {
    let r = json_lines(out);
    let results: Vec<&Value> = r.iter().map(|l| &l["result"]).collect();
    assert_eq!(results[0], &json!(true));
    assert_eq!(results[1], &json!("hello"));
    let ttl = results[2].as_f64().unwrap();
    assert!(ttl > 25.0 && ttl <= 30.0, "{ttl}");
    assert_eq!(results[3], &json!(true));
    assert_eq!(results[4], &json!("forever"));
    assert_eq!(results[5], &json!({"a": [1, 2]}));
    assert_eq!(results[6], &Value::Null, "ttl of a missing key is null");
    assert_eq!(
        results[7],
        &Value::Null,
        "get of a missing key is null, not an error"
    );
    assert_eq!(r[7]["ok"], true);
    assert_eq!(results[8], &json!(false));
    assert_eq!(results[9], &json!(true));
    assert_eq!(results[10], &json!(42));
    assert_eq!(results[11], &json!(40));
    assert_eq!(r[12]["ok"], false);
    assert!(r[12]["error"].as_str().unwrap().contains("not an integer"));
    assert_eq!(results[13], &json!(true));
    assert_eq!(results[14], &json!(false));
    let mut keys: Vec<String> = serde_json::from_value(results[15].clone()).unwrap();
    keys.sort();
    assert_eq!(keys, ["forever", "fresh", "greeting"]);
    assert_eq!(results[16], &json!(["greeting"]));
    assert_eq!(results[17], &json!(true));
    assert_eq!(
        results[18],
        &Value::Null,
        "version 1 does not see version 2"
    );
    assert_eq!(results[19], &json!("two"));
    assert_eq!(
        results[20],
        &json!("hello"),
        "--raw addresses the stored key"
    );
    assert_eq!(results[21], &json!(true));
    assert_eq!(results[22], &json!(false));
    assert_eq!(results[23], &json!(2));
    assert_eq!(results[24]["entries"], json!(1), "stats: {}", results[24]);
    assert_eq!(r[25]["ok"], false, "clear without --yes refuses");
    assert!(r[25]["error"].as_str().unwrap().contains("--yes"));
    assert_eq!(
        results[26],
        &json!(1),
        "clear removed the one key left (v2)"
    );
    assert_eq!(results[27], &json!([]));
    assert_eq!(r[28]["ok"], false);
    assert!(r[28]["error"]
        .as_str()
        .unwrap()
        .contains("VALUE must be JSON"));
    assert_eq!(r[29]["ok"], false);
    assert_eq!(r.len(), 30);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a usage error in a line makes the shell exit 2"
    );
}

#[test]
fn human_output_and_exit_codes() {
    let out = webcache(&["--cache", "locmem://", "get", "nothing"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "(nil)");
    assert_eq!(out.status.code(), Some(0));
    let out = webcache(&["--cache", "locmem://", "ttl", "nothing"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "missing");
    let out = webcache(&["--cache", "locmem://", "clear"], None);
    assert_eq!(
        out.status.code(),
        Some(2),
        "clear needs --yes without a terminal"
    );
    let out = webcache(&["--cache", "locmem://", "incr", "nothing"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`set` it first"));
    let out = webcache(&["--cache", "locmem://", "frobnicate"], None);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn configuration_mistakes_are_explained() {
    let out = webcache(&["--cache", "locmen://", "keys"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown scheme `locmen`") && err.contains("accepted schemes: locmem"),
        "{err}"
    );
    let out = webcache(
        &["--json", "--cache", "locmem://?max_entries=many", "keys"],
        None,
    );
    let line = &json_lines(&out)[0];
    assert_eq!(line["ok"], false);
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("`max_entries`: `many` is not valid"),
        "{line}"
    );
    let out = webcache(&["--config", "/nonexistent/webcache.toml", "keys"], None);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/webcache.toml: cannot read it")
    );
    let out = webcache(&["keys", "--app", "http://127.0.0.1:1"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach the app at http://127.0.0.1:1")
    );
}

#[tokio::test]
async fn the_shell_works_against_a_running_app() {
    let demo = Demo::start(&[]);
    let out = webcache(
        &["--json", "shell", "--app", &demo.base],
        Some("set k 5\nincr k\nkeys\nttl k\nstats\n"),
    );
    let r = json_lines(&out);
    assert_eq!(r[1]["result"], json!(6));
    assert_eq!(r[2]["result"], json!(["k"]));
    assert!(
        r[3]["result"].as_f64().unwrap() > 200.0,
        "the app's default timeout applies"
    );
    assert_eq!(r[4]["result"]["backend"], "locmem");
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test]
async fn hello_page_and_the_get_of_hello_class_are_cached_by_the_layer() {
    let demo = Demo::start(&[]);
    let http = reqwest::Client::new();
    for route in ["hello-page", "hello-class"] {
        let url = format!("{}/{route}?delay=0.5", demo.base);
        let (took, first) = get(&http, &url).await;
        assert_eq!(first.headers()["x-cache"], "MISS", "{route}");
        assert!(took >= Duration::from_millis(500));
        let (_, second) = get(&http, &url).await;
        assert_eq!(second.headers()["x-cache"], "HIT", "{route}");
        assert!(
            second.headers().contains_key("age"),
            "{route}: a hit carries Age"
        );
        let head = http.head(&url).send().await.unwrap();
        assert_eq!(
            head.headers()["x-cache"],
            "HIT",
            "{route}: HEAD is answered from the GET entry"
        );
    }
    let count: Value = get_json(&http, format!("{}/count", demo.base)).await;
    assert_eq!(count["served"], 2, "one upstream call per cached route");
    // POST on the class route never meets the layer.
    let post = http
        .post(format!("{}/hello-class?delay=0", demo.base))
        .send()
        .await
        .unwrap();
    assert!(!post.headers().contains_key("x-cache"));
    // The cached pages are visible, with a recognisable prefix.
    let out = webcache(
        &["--json", "keys", "views.cache_page*", "--app", &demo.base],
        None,
    );
    let keys: Vec<String> = serde_json::from_value(json_lines(&out)[0]["result"].clone()).unwrap();
    assert!(keys.len() >= 2, "{keys:?}");
    // `get` shows a cached page as status, headers and size, not as bytes.
    let out = webcache(&["--json", "get", &keys[0], "--app", &demo.base], None);
    let page = &json_lines(&out)[0]["result"]["page"];
    assert_eq!(page["status"], 200, "{page}");
    assert!(page["body_bytes"].as_u64().unwrap() > 4000, "{page}");
    // Purged through the app: the next request asks the upstream again.
    let url = format!("{}/hello-page?delay=0.5", demo.base);
    let before: Value = get_json(&http, format!("{}/count", demo.base)).await;
    let out = webcache(&["purge", &url, "--app", &demo.base], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "purged");
    let (_, page) = get(&http, &url).await;
    assert_eq!(page.headers()["x-cache"], "MISS");
    // The page is rendered again, but its upstream part is a cached template fragment.
    let count: Value = get_json(&http, format!("{}/count", demo.base)).await;
    assert_eq!(
        count["served"], before["served"],
        "the fragment did not answer: the upstream was called"
    );
    let out = webcache(&["invalidate", "--tag", "t", "--app", &demo.base], None);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "invalidated 1 tag"
    );
}

#[tokio::test]
async fn the_proxy_caches_an_origin_with_either_policy() {
    let origin = Demo::start(&[]);
    let http = reqwest::Client::new();
    let served = || async {
        get_json(&reqwest::Client::new(), format!("{}/count", origin.base)).await["served"]
            .as_u64()
            .unwrap()
    };
    // Django-style: cacheable 200s without freshness information are kept --default-ttl.
    let proxy = Proxy::start(&origin.base, &["--default-ttl", "60"]);
    let url = format!("{}/delay/0.3", proxy.base);
    let (_, first) = get(&http, &url).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-cache"], "MISS");
    let (_, second) = get(&http, &url).await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-cache"], "HIT");
    assert_eq!(served().await, 1, "the hit did not reach the origin");
    // Other methods are forwarded, never stored.
    let posted = http
        .post(format!("{}/hello-class?delay=0", proxy.base))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    // RFC 9111 strict: the demo's /delay answers carry no freshness information: not stored,
    // so every request is a MISS that reaches the origin.
    let strict = Proxy::start(&origin.base, &[]);
    let before = served().await;
    for _ in 0..2 {
        let r = http
            .get(format!("{}/delay/0", strict.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-cache"], "MISS");
    }
    assert_eq!(
        served().await,
        before + 2,
        "both requests reached the origin"
    );
    let out = webcache(&["proxy", "--upstream", "not a url"], None);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--upstream not a url"));
}

#[test]
fn createcachetable_for_sqlite_with_dry_run() {
    let dir = webcache_testkit::servers::temp_dir("cli-sqlite");
    let url = format!("sqlite://{}/cache.db", dir.display());
    let out = webcache(&["--cache", &url, "get", "k"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("createcachetable"),
        "the error names the fix"
    );
    let out = webcache(&["--cache", &url, "createcachetable", "--dry-run"], None);
    let sql = String::from_utf8_lossy(&out.stdout);
    assert!(sql.contains("CREATE TABLE IF NOT EXISTS"), "{sql}");
    assert!(
        !dir.join("cache.db").exists()
            || webcache(&["--cache", &url, "get", "k"], None).status.code() == Some(1),
        "dry run creates nothing"
    );
    for _ in 0..2 {
        let out = webcache(&["--cache", &url, "createcachetable"], None);
        assert_eq!(
            out.status.code(),
            Some(0),
            "idempotent: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = webcache(
        &["--json", "--cache", &url, "shell"],
        Some("set k '\"v\"'\nget k\n"),
    );
    assert_eq!(json_lines(&out)[1]["result"], json!("v"));
    let out = webcache(&["--cache", "locmem://", "createcachetable"], None);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_demo_keeps_answering_when_its_cache_is_down() {
    // Nothing listens on port 1: every cache call fails.
    let demo = Demo::start(&["--cache", "redis://127.0.0.1:1/0?connect_timeout=0.2"]);
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    for route in ["hello", "hello-page", "hello-class"] {
        let (took, response) = get(&http, &format!("{}/{route}?delay=0", demo.base)).await;
        assert_eq!(response.status(), 200, "{route}");
        assert!(took < Duration::from_secs(3), "{route}: {took:?}");
    }
    let cart = get_json(&http, format!("{}/cart?add=apple", demo.base)).await;
    assert_eq!(
        cart,
        json!({"items": ["apple"]}),
        "the request is served, the session is not kept"
    );
}

#[test]
fn raw_keys_are_addressed_as_stored() {
    let out = webcache(
        &["--json", "--cache", "locmem://", "shell"],
        Some("set raw:n 5 --raw --ttl 30\nincr raw:n 2 --raw\nget n\nget raw:n --raw\nadd raw:n 1 --raw\ntouch raw:n 0 --raw\nget raw:n --raw\nset k '\"v\"'\nget :1:k --raw\nkeys ':1:*' --raw\n"),
    );
    let r: Vec<Value> = json_lines(&out)
        .into_iter()
        .map(|l| l["result"].clone())
        .collect();
    assert_eq!(r[1], json!(7), "incr on the stored key");
    assert_eq!(r[2], Value::Null, "the user key `n` is `:1:n`, not `raw:n`");
    assert_eq!(r[3], json!(7));
    assert_eq!(r[4], json!(false), "add on an existing stored key");
    assert_eq!(r[5], json!(true));
    assert_eq!(r[6], Value::Null, "touch 0 expired it");
    assert_eq!(r[8], json!("v"));
    assert_eq!(r[9], json!([":1:k"]));
}

/// The token file `serve` left for the app at `listen`, and the token in it.
fn token_file(listen: &str) -> (std::path::PathBuf, String) {
    let path = runtime_dir()
        .join("webcache")
        .join(format!("serve-{listen}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let contents: Value = serde_json::from_str(&text).unwrap();
    (path, contents["token"].as_str().unwrap().to_owned())
}

/// One admin request sent by hand: `host` overrides `Host`, `token` is sent as the CLI sends it.
async fn admin_request(
    base: &str,
    host: Option<&str>,
    token: Option<&str>,
    extra: &[(&str, &str)],
    op: Value,
) -> (reqwest::StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/_webcache/command"))
        .json(&json!({"alias": "default", "request": op}));
    if let Some(host) = host {
        request = request.header("host", host);
    }
    if let Some(token) = token {
        request = request
            .bearer_auth(token)
            .header("connection", "authorization");
    }
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

fn set_op(value: i64) -> Value {
    json!({"command": "set", "key": "k", "write": {"value": value.to_string()}})
}

/// The value of `k` in the app, read through the CLI (which finds the token by itself).
fn app_value(base: &str) -> Value {
    let out = webcache(&["--json", "get", "k", "--app", base], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&out)[0]["result"].clone()
}

#[tokio::test]
async fn the_admin_endpoint_always_needs_the_token_which_the_local_cli_finds() {
    let demo = Demo::start(&[]);
    // From loopback, without the token: refused, nothing written.
    let (status, body) = admin_request(&demo.base, None, None, &[], set_op(1)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["outcome"], "usage");
    assert_eq!(app_value(&demo.base), Value::Null, "the set did not run");
    // A wrong token, or the right one not declared hop-by-hop: refused.
    let (status, _) = admin_request(&demo.base, None, Some("0123"), &[], set_op(1)).await;
    assert_eq!(status, 401);
    let (_, token) = token_file(&demo.listen);
    let (status, body) = reqwest::Client::new()
        .post(format!("{}/_webcache/command", demo.base))
        .bearer_auth(&token)
        .json(&json!({"alias": "default", "request": set_op(1)}))
        .send()
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    assert_eq!(status, 401, "{:?}", body.text().await);
    assert_eq!(app_value(&demo.base), Value::Null);
    // The CLI on the same machine needs no --token: it reads the file `serve` left.
    let out = webcache(&["set", "k", "2", "--app", &demo.base], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(app_value(&demo.base), json!(2));
    let localhost = demo.base.replace("127.0.0.1", "localhost");
    assert_eq!(app_value(&localhost), json!(2), "localhost finds it too");
    // With the token, by hand: works.
    let (status, body) = admin_request(&demo.base, None, Some(&token), &[], set_op(3)).await;
    assert_eq!(
        (status.as_u16(), &body["outcome"]),
        (200, &json!("ok")),
        "{body}"
    );
    assert_eq!(app_value(&demo.base), json!(3));
    // The token given explicitly wins over the file; a wrong one is a usage error.
    let out = webcache(&["get", "k", "--app", &demo.base, "--token", "bad"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong admin token"));
}

#[tokio::test]
async fn the_token_file_is_private_and_removed_on_exit() {
    use std::os::unix::fs::PermissionsExt;
    let mut demo = Demo::start(&[]);
    let (path, token) = token_file(&demo.listen);
    assert_eq!(token.len(), 32);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    let killed = Command::new("kill")
        .args(["-TERM", &demo.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = demo.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean shutdown");
    assert!(!path.exists(), "the token file is removed on exit");
}

#[tokio::test]
async fn a_foreign_host_is_refused_even_with_the_token() {
    let demo = Demo::start(&[]);
    let (_, token) = token_file(&demo.listen);
    let port = demo.listen.rsplit(':').next().unwrap();
    for host in [
        format!("evil.example:{port}"),
        "127.0.0.1:1".to_owned(),
        "localhost".to_owned(),
    ] {
        let (status, body) =
            admin_request(&demo.base, Some(&host), Some(&token), &[], set_op(1)).await;
        assert_eq!(status, 403, "{host}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("own address"),
            "{body}"
        );
    }
    assert_eq!(app_value(&demo.base), Value::Null, "no refused set ran");
    for host in [format!("localhost:{port}"), format!("[::1]:{port}")] {
        let (status, body) =
            admin_request(&demo.base, Some(&host), Some(&token), &[], set_op(1)).await;
        assert_eq!(status, 200, "{host}: {body}");
    }
}

#[tokio::test]
async fn the_admin_endpoint_cannot_be_used_through_a_proxy() {
    let demo = Demo::start(&[]);
    let proxy = Proxy::start(&demo.base, &[]);
    let (_, token) = token_file(&demo.listen);
    // Through `webcache proxy`, with the token (declared hop-by-hop or not) and even with `Host`
    // set to the app's own address: the proxy never forwards the admin paths.
    for host in [None, Some(demo.listen.as_str())] {
        for declared in [true, false] {
            let mut request = reqwest::Client::new()
                .post(format!("{}/_webcache/command", proxy.base))
                .bearer_auth(&token)
                .json(&json!({"alias": "default", "request": set_op(1)}));
            if let Some(host) = host {
                request = request.header("host", host);
            }
            if declared {
                request = request.header("connection", "authorization");
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 404, "{host:?} {declared}");
            assert!(response.text().await.unwrap().contains("never forwards"));
        }
    }
    // Without the proxy's rule, the app itself refuses a token that crossed a proxy: a token
    // not declared hop-by-hop is refused, and so is any request a proxy announced.
    let response = reqwest::Client::new()
        .post(format!("{}/_webcache/command", demo.base))
        .bearer_auth(&token)
        .json(&json!({"alias": "default", "request": set_op(1)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // The CLI pointed at the proxy, with or without the token, reaches nothing but the proxy's
    // refusal.
    for token_args in [vec![], vec!["--token", token.as_str()]] {
        let mut args = vec!["set", "k", "1", "--app", &proxy.base];
        args.extend(token_args);
        let out = webcache(&args, None);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("404"),
            "{out:?}"
        );
    }
    assert_eq!(app_value(&demo.base), Value::Null, "nothing ran");
    // A proxy that forwards the token anyway announces itself: refused.
    for field in ["x-forwarded-for", "forwarded", "via"] {
        let (status, body) = admin_request(
            &demo.base,
            None,
            Some(&token),
            &[(field, "127.0.0.1")],
            set_op(1),
        )
        .await;
        assert_eq!(status, 403, "{field}: {body}");
    }
    assert_eq!(app_value(&demo.base), Value::Null, "nothing ran");
}

/// Runs the binary with `stdin` as raw bytes and `stderr` where given (else captured).
fn webcache_with(args: &[&str], stdin: &[u8], stderr: Option<Stdio>) -> Output {
    let mut child = command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr.unwrap_or_else(Stdio::piped))
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

#[test]
fn a_full_or_closed_standard_error_is_no_panic() {
    let full = || {
        Stdio::from(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        )
    };
    let closed_pipe = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        Stdio::from(writer)
    };
    for (name, stderr) in [
        ("/dev/full", &full as &dyn Fn() -> Stdio),
        ("closed pipe", &closed_pipe),
    ] {
        // Each of these writes on standard error, then exits with its own code.
        for (args, code) in [
            (&["--cache", "locmem://", "incr", "nothing"][..], 1),
            (&["--cache", "locmem://", "clear"][..], 2),
            (&["--cache", "locmen://", "keys"][..], 2),
            (&["frobnicate"][..], 2),
            (&["keys", "--app", "http://127.0.0.1:1"][..], 1),
            (&["serve", "--listen", "256.0.0.1:1"][..], 1),
        ] {
            let out = webcache_with(args, b"", Some(stderr()));
            assert_eq!(out.status.code(), Some(code), "{name}: {args:?}");
        }
    }
}

#[test]
fn an_unwritable_output_is_a_failure_and_a_closed_one_is_not() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let status = command()
        .args(["--cache", "locmem://", "get", "k"])
        .stdout(full)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1), "the result could not be written");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = command()
        .args(["--cache", "locmem://", "get", "k"])
        .stdout(writer)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "the reader chose to stop (`| head`)"
    );
}

#[test]
fn the_shell_goes_on_after_a_line_that_is_not_utf8() {
    let out = webcache_with(
        &["--json", "--cache", "locmem://", "shell"],
        b"set a 1\n\xff\xfe bad\nset b 2\nget b\n",
        None,
    );
    let r = json_lines(&out);
    assert_eq!(r.len(), 4, "{r:?}");
    assert_eq!(r[1]["ok"], false);
    assert!(r[1]["error"]
        .as_str()
        .unwrap()
        .contains("line 2 is not UTF-8"));
    assert_eq!(r[3]["result"], json!(2), "the lines after it ran");
    assert_eq!(out.status.code(), Some(2));
    // In words, on standard error.
    let out = webcache_with(&["--cache", "locmem://", "shell"], b"\xff\nset b 2\n", None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1 is not UTF-8"));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
}

#[tokio::test]
async fn keys_are_shown_escaped_on_one_line_each() {
    let dir = webcache_testkit::servers::temp_dir("cli-keys");
    let url = format!("file://{}", dir.display());
    let nasty = "two\nlines\u{1b}[2J\u{7}";
    for key in [nasty, "plain"] {
        let out = webcache(&["--cache", &url, "set", key, "1"], None);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    // Printed as found (a local cache) and as a list (from an app).
    let out = webcache(&["--cache", &url, "keys"], None);
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(lines, ["plain", "two\\nlines\\u{1b}[2J\\u{7}"]);
    assert!(
        !text.contains('\u{1b}'),
        "no escape sequence reaches the terminal"
    );
    let demo = Demo::start(&[]);
    let out = webcache(&["set", nasty, "1", "--app", &demo.base], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = webcache(&["keys", "--app", &demo.base], None);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim_end(), "two\\nlines\\u{1b}[2J\\u{7}");
    // --json gives the exact key.
    let out = webcache(&["--json", "--cache", &url, "keys", "two*"], None);
    assert_eq!(json_lines(&out)[0]["result"], json!([nasty]));
    // Values too: JSON escapes C0 controls, not DEL, C1 (CSI) or bidirectional overrides.
    let value = r#"{"a": "x\u009b2J\u007f\u202ey"}"#;
    let out = webcache(&["--cache", &url, "set", "plain", value], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = webcache(&["--cache", &url, "get", "plain"], None);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(r#""a": "x\u{9b}2J\u{7f}\u{202e}y""#),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn usage_errors_are_json_under_json() {
    for args in [
        &["--json", "frobnicate"][..],
        &["--json", "get"][..],
        &["--json"][..],
        &["get", "--json", "k", "--ttl"][..],
        &["--json", "set", "k"][..],
    ] {
        let out = webcache(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let lines = json_lines(&out);
        assert_eq!(lines.len(), 1, "{args:?}");
        assert_eq!(lines[0]["ok"], false);
        let error = lines[0]["error"].as_str().unwrap();
        assert!(
            !error.is_empty() && !error.ends_with(':'),
            "{args:?}: {error}"
        );
    }
    let out = webcache(&["--json", "get"], None);
    assert!(json_lines(&out)[0]["error"]
        .as_str()
        .unwrap()
        .contains("<KEY>"));
    // --help is still help.
    let out = webcache(&["--json", "--help"], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage:"));
}

#[test]
fn negative_numbers_need_no_double_dash() {
    let out = webcache(
        &["--json", "--cache", "locmem://", "shell"],
        Some("set k -5\nget k\nincr k -2\nset j -1.5 --ttl 60\nget j\nadd n -3\nget n\ntouch j -1\nget j\n"),
    );
    let r: Vec<Value> = json_lines(&out)
        .into_iter()
        .map(|l| l["result"].clone())
        .collect();
    assert_eq!(
        r,
        [
            json!(true),
            json!(-5),
            json!(-7),
            json!(true),
            json!(-1.5),
            json!(true),
            json!(-3),
            json!(true),
            Value::Null
        ]
    );
    let out = webcache(&["--cache", "locmem://", "set", "k", "-5"], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn help_documents_the_exit_codes() {
    let out = webcache(&["--help"], None);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Exit codes:"), "{help}");
    for line in ["  0  success", "  1  the cache", "  2  a usage mistake"] {
        assert!(help.contains(line), "{line}: {help}");
    }
}

/// The process's peak resident memory so far, in bytes (Linux).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[test]
fn a_large_value_is_not_copied_many_times() {
    // An array of numbers: as a serde_json::Value it took 16 times its text.
    const SIZE: usize = 30_000_000;
    let mut line = String::with_capacity(SIZE + 16);
    line.push_str("set big '[1");
    while line.len() < SIZE {
        line.push_str(",1");
    }
    line.push_str("]'\n");
    let mut child = command()
        .args(["--json", "--cache", "locmem://", "shell"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut input = child.stdin.take().unwrap();
    let mut output = BufReader::new(child.stdout.take().unwrap());
    let mut answer = String::new();
    input.write_all(b"get nothing\n").unwrap();
    output.read_line(&mut answer).unwrap();
    let before = peak_rss(pid);
    input.write_all(line.as_bytes()).unwrap();
    drop(line);
    answer.clear();
    output.read_line(&mut answer).unwrap();
    assert_eq!(answer.trim(), r#"{"ok":true,"result":true}"#);
    let grown = peak_rss(pid).saturating_sub(before);
    drop(input);
    child.wait().unwrap();
    // Held at most as the text, its serialized copy and the stored entry, plus slack.
    assert!(
        grown < (SIZE as u64) * 4,
        "setting a {SIZE}-byte value grew the peak by {grown} bytes"
    );
}

#[tokio::test]
async fn a_runtime_directory_others_could_use_is_made_private_or_left_alone() {
    use std::os::unix::fs::PermissionsExt;
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-runtime-dirs-{}", std::process::id()));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // Our own directory, open to others: made private before the token goes in.
    let open = root.join("open");
    std::fs::create_dir_all(open.join("webcache")).unwrap();
    std::fs::set_permissions(
        open.join("webcache"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let demo = Demo::start_in(&open);
    let file = open
        .join("webcache")
        .join(format!("serve-{}.json", demo.listen));
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&open.join("webcache")), 0o700);
    // A symlink in its place (someone else's directory, say): never written to or read.
    let elsewhere = root.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let linked = root.join("linked");
    std::fs::create_dir_all(&linked).unwrap();
    std::os::unix::fs::symlink(&elsewhere, linked.join("webcache")).unwrap();
    let demo = Demo::start_in(&linked);
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "nothing written through the symlink"
    );
    let out = command()
        .env("XDG_RUNTIME_DIR", &linked)
        .args(["get", "k", "--app", &demo.base])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no token file"));
    drop(demo);
    let _ = std::fs::remove_dir_all(root);
}

/// Issue 13: a page purged from the command line or with `PURGE` (from allowed clients only),
/// and tags invalidated from the command line, in every process sharing the cache.
#[tokio::test]
async fn purge_and_invalidate_from_the_cli_and_with_purge_requests() {
    let redis = webcache_testkit::servers::redis::RedisServer::shared();
    let cache_url = redis.url(4);
    let origin = Demo::start(&[]);
    let proxy = Proxy::start(
        &origin.base,
        &[
            "--cache",
            &cache_url,
            "--default-ttl",
            "60",
            "--purge-token",
            "s3cret",
        ],
    );
    let http = reqwest::Client::new();
    let url = format!("{}/delay/0", proxy.base);
    let x_cache = |r: &reqwest::Response| r.headers()["x-cache"].to_str().unwrap().to_owned();
    // Pages are written after answering: a fresh CLI process sees one once it is in Redis.
    let stored = || async {
        for _ in 0..400 {
            if x_cache(&get(&http, &url).await.1) == "HIT" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the page never became a hit");
    };
    stored().await;

    let out = webcache(&["--cache", &cache_url, "purge", &url], None);
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        (Some(0), "purged"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        x_cache(&get(&http, &url).await.1),
        "MISS",
        "purged from the CLI"
    );
    let out = webcache(&["--cache", &cache_url, "purge", "/delay/0"], None);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a relative URL is the user's mistake"
    );

    stored().await;
    let purge = |token: Option<&'static str>| {
        let mut request = http.request(reqwest::Method::from_bytes(b"PURGE").unwrap(), &url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(purge(None).await.unwrap().status(), 403);
    assert_eq!(purge(Some("wrong")).await.unwrap().status(), 403);
    assert_eq!(
        x_cache(&get(&http, &url).await.1),
        "HIT",
        "a refused PURGE purged"
    );
    assert_eq!(purge(Some("s3cret")).await.unwrap().status(), 200);
    assert_eq!(
        x_cache(&get(&http, &url).await.1),
        "MISS",
        "purged with PURGE"
    );

    // Tags: a value tagged by a library user, invalidated from the command line.
    let backend = webcache::redis::RedisBackend::from_url(&cache_url).unwrap();
    let cache = webcache::Cache::new(std::sync::Arc::new(backend), Default::default());
    cache
        .tagged(["products"])
        .set("catalogue", &"teapot", 60)
        .await
        .unwrap();
    let out = webcache(
        &["--cache", &cache_url, "invalidate", "--tag", "products"],
        None,
    );
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        (Some(0), "invalidated 1 tag")
    );
    assert_eq!(cache.get::<String>("catalogue").await.unwrap(), None);
    let out = webcache(&["--cache", &cache_url, "invalidate"], None);
    assert_eq!(out.status.code(), Some(2), "--tag is required");
}

/// `clear` over Redis shards with one shard down: the other shards are emptied all the same
/// (the walk does not stop at the dead one), and the command fails naming the dead shard,
/// since its keys come back with it.
#[test]
fn clear_with_a_shard_down_empties_the_others_and_names_it() {
    use webcache_testkit::servers::redis::RedisServer;
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port()))
        .collect();
    let url = format!("redis://{}/0", list.join(","));
    let script: String = (0..30).map(|i| format!("set k{i} 1\n")).collect();
    let out = webcache(&["--cache", &url, "shell"], Some(&script));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = |s: &RedisServer| s.cli(&["dbsize"]).trim().parse::<u64>().unwrap();
    for server in &servers {
        assert!(stored(server) > 0, "30 keys reach every shard");
    }
    servers[0].kill();
    let out = webcache(&["--cache", &url, "clear", "--yes"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&list[0]), "the dead shard is named: {err}");
    for server in &servers[1..] {
        assert_eq!(stored(server), 0, "a live shard is emptied: {err}");
    }
}
