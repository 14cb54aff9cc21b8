//! The dashboard and the metrics of the admin side, end to end: a real `webcache serve` with
//! traffic, its page loaded in a headless Chromium (Debian's `chromium`, which `scripts/test`
//! installs), and the checks of the admin side on the new routes.
//!
//! `WEBCACHE_DASHBOARD_PNG=docs/dashboard.png` (relative to the workspace) also saves the
//! screenshot the README shows.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{webcache, Running};
use serde_json::{json, Value};

mod common;

/// A `webcache` server process (serve, proxy, dashboard) and what its banner says.
struct Server {
    running: Running,
    /// The token and the dashboard's address, from the banner (if it printed them).
    token: Option<String>,
    dashboard: Option<String>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        // The banner: read until the dashboard's line, or its end (a blank line or EOF).
        let running = Running::start_with(args, None, |line| {
            line.contains("#token=")
                || line.is_empty()
                || line.starts_with("policy:") && !args.contains(&"--admin")
        });
        let mut token = None;
        let mut dashboard = None;
        for line in running.banner.lines() {
            if let Some(t) = line.strip_prefix("admin token: ") {
                token = Some(t.trim().to_owned());
            }
            if let Some(url) = line.split_whitespace().find(|w| w.contains("#token=")) {
                dashboard = Some(url.to_owned());
            }
        }
        let token = token.or_else(|| {
            dashboard
                .as_deref()
                .and_then(|d| d.split_once("#token=").map(|(_, t)| t.to_owned()))
        });
        Server {
            running,
            token,
            dashboard,
        }
    }

    fn token(&self) -> &str {
        self.token.as_deref().expect("the banner prints the token")
    }
}

impl std::ops::Deref for Server {
    type Target = Running;

    fn deref(&self) -> &Running {
        &self.running
    }
}

/// Debian's `chromium`, or another Chromium on the PATH.
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Some(path) = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
        {
            return path;
        }
    }
    panic!(
        "no Chromium on the PATH: install Debian's `chromium` package (scripts/test does) to run \
         the dashboard's browser test"
    );
}

/// Runs headless Chromium on `url` with `what` (`--dump-dom`, `--screenshot=FILE`), giving the
/// page's script 10 s of virtual time (timers run fast, requests at their own pace).
fn headless(url: &str, what: &str) -> String {
    let profile = tempdir("chromium-profile");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            // Root in CI: Chromium's sandbox refuses to start as root.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            "--window-size=1280,1100",
            "--virtual-time-budget=10000",
            &format!("--user-data-dir={}", profile.display()),
            what,
            url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    // Generous: seven builds may share two cores.
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

fn tempdir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        webcache_testkit::servers::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The text inside the element with `id` in serialized HTML (its first text node).
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let rest = &dom[start..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest[open..].find('<').unwrap();
    &rest[open..open + close]
}

async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = reqwest::Client::new().get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_the_cache_holds_in_a_real_browser() {
    let demo = Server::start(&["serve"]);
    // Traffic: one miss then hits of a cached page, and two values set through the CLI.
    for _ in 0..5 {
        let (status, _) = get(&format!("{}/hello-page?delay=0", demo.base), &[]).await;
        assert_eq!(status, 200);
    }
    for args in [
        [
            "set",
            "greeting",
            "\"hello from the dashboard test\"",
            "--ttl",
            "600",
        ],
        ["set", "visits", "41", "--ttl", "600"],
    ] {
        let mut args = args.to_vec();
        args.extend(["--app", &demo.base]);
        let out = webcache(&args, None);
        assert!(out.status.success(), "{out:?}");
    }
    // Two samples of the counters (one a second) around the traffic, so the chart has a point.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let url = format!("{}&key=greeting", demo.dashboard.as_deref().unwrap());
    let dom = tokio::task::spawn_blocking(move || headless(&url, "--dump-dom"))
        .await
        .unwrap();
    // The script ran without an error, with the token from the fragment.
    assert!(
        dom.contains("id=\"error\" style=\"display: none;\""),
        "{dom}"
    );
    // The key table lists what the cache holds: the page, its cached template fragment and
    // both values.
    for key in ["greeting", "visits"] {
        assert!(dom.contains(&format!("data-key=\"{key}\"")), "{key}: {dom}");
    }
    assert!(dom.contains("data-key=\"views.cache_page.GET."), "{dom}");
    assert!(
        dom.contains("data-key=\"template.cache.hello-upstream."),
        "{dom}"
    );
    assert_eq!(text_of(&dom, "found"), "4 keys");
    // The entry opened from the fragment: its decoded value and its TTL.
    assert_eq!(text_of(&dom, "dvalue"), "\"hello from the dashboard test\"");
    let ttl: f64 = text_of(&dom, "dttl")
        .trim_end_matches(" s")
        .parse()
        .unwrap();
    assert!(ttl > 0.0 && ttl <= 600.0, "{ttl}");
    // The chart: a hit-ratio line through at least one point, and the last minute's ratio of
    // the cache's reads: 4 hits and 1 miss of the page, and 1 miss of its template fragment
    // (rendered once, on the page's miss).
    let line = dom.find("id=\"ratioline\" d=\"M").map(|i| &dom[i..i + 40]);
    assert!(
        line.is_some_and(|l| !l.contains("d=\"M0 0\"")),
        "no hit-ratio line: {dom}"
    );
    assert_eq!(text_of(&dom, "ratio"), "66.7%");
    // The hottest keys: the sampled keys (one read in 16), or words saying none was sampled
    // yet (this traffic is a few reads), never an empty table.
    let hottest = dom
        .split("id=\"hottest\">")
        .nth(1)
        .and_then(|rest| rest.split("</tbody>").next())
        .unwrap_or_default();
    assert!(
        hottest.contains("no read sampled yet") || hottest.contains("<td class=\"n\">~"),
        "hottest keys: {hottest}"
    );
    // Per-route outcomes of the page layer, and the backend's health.
    assert!(dom.contains("<td>/hello-page</td>"), "{dom}");
    assert!(dom.contains("<span class=\"badge\">up</span>"), "{dom}");

    let shot = tempdir("screenshot").join("dashboard.png");
    let url = format!("{}&key=greeting", demo.dashboard.as_deref().unwrap());
    let arg = format!("--screenshot={}", shot.display());
    tokio::task::spawn_blocking(move || headless(&url, &arg))
        .await
        .unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    if let Some(target) = std::env::var_os("WEBCACHE_DASHBOARD_PNG") {
        let target = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(target);
        std::fs::write(&target, &png).unwrap();
    }
}

#[tokio::test]
async fn the_metrics_and_the_dashboard_keep_the_admin_endpoint_checks() {
    let demo = Server::start(&["serve"]);
    let token = demo.token().to_owned();
    let bearer = format!("Bearer {token}");
    get(&format!("{}/hello-page?delay=0", demo.base), &[]).await;
    for path in [
        "/metrics",
        "/_webcache/metrics",
        "/_webcache/dashboard/data",
    ] {
        let url = format!("{}{path}", demo.base);
        // No token; a token not declared hop-by-hop (what crossed a proxy); a wrong token.
        assert_eq!(get(&url, &[]).await.0, 401, "{path}");
        assert_eq!(
            get(&url, &[("authorization", &bearer)]).await.0,
            401,
            "{path}"
        );
        let declared = [
            ("authorization", bearer.as_str()),
            ("connection", "authorization"),
        ];
        let wrong = [
            ("authorization", "Bearer 0123"),
            ("connection", "authorization"),
        ];
        assert_eq!(get(&url, &wrong).await.0, 401, "{path}");
        // What a proxy announces, and another Host, are refused even with the token.
        let forwarded = [declared[0], declared[1], ("x-forwarded-for", "10.0.0.1")];
        assert_eq!(get(&url, &forwarded).await.0, 403, "{path}");
        let foreign = [declared[0], declared[1], ("host", "evil.example")];
        assert_eq!(get(&url, &foreign).await.0, 403, "{path}");
        // The CLI's way, and the dashboard's own script's way.
        let (status, body) = get(&url, &declared).await;
        assert_eq!(status, 200, "{path}: {body}");
        let page_script = [
            ("authorization", bearer.as_str()),
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "cors"),
        ];
        assert_eq!(get(&url, &page_script).await.0, 200, "{path}");
        let cross_site = [
            page_script[0],
            ("sec-fetch-site", "cross-site"),
            page_script[2],
        ];
        assert_eq!(get(&url, &cross_site).await.0, 401, "{path}");
    }
    let (_, text) = get(
        &format!("{}/metrics", demo.base),
        &[("authorization", &bearer), ("connection", "authorization")],
    )
    .await;
    assert!(
        text.contains("webcache_page_responses_total{route=\"/hello-page\",outcome=\"MISS\"} 1"),
        "{text}"
    );
    assert!(text.contains("webcache_cache_backend_up{alias=\"default\",backend=\"locmem\"} 1"));
    // The page itself holds no data: served without the token, but only directly and for this
    // app's own address.
    let page = format!("{}/_webcache/dashboard", demo.base);
    let (status, html) = get(&page, &[]).await;
    assert_eq!(status, 200);
    assert!(html.contains("<svg id=\"chart\""));
    assert!(!html.contains(&token));
    assert_eq!(get(&page, &[("host", "evil.example")]).await.0, 403);
    assert_eq!(get(&page, &[("via", "1.1 proxy")]).await.0, 403);
}

#[tokio::test]
async fn the_proxy_answers_its_admin_side_only_with_admin() {
    let origin = Server::start(&["serve"]);
    let plain = Server::start(&["proxy", "--upstream", &origin.base]);
    for path in ["/_webcache/metrics", "/_webcache/dashboard"] {
        assert_eq!(get(&format!("{}{path}", plain.base), &[]).await.0, 404);
    }
    let proxy = Server::start(&["proxy", "--upstream", &origin.base, "--admin"]);
    let bearer = format!("Bearer {}", proxy.token());
    let declared = [
        ("authorization", bearer.as_str()),
        ("connection", "authorization"),
    ];
    get(&format!("{}/hello-page?delay=0", proxy.base), &[]).await;
    let (status, text) = get(&format!("{}/_webcache/metrics", proxy.base), &declared).await;
    assert_eq!(status, 200);
    // The proxy matches no route pattern: one fixed label, never the URL.
    assert!(
        text.contains("webcache_page_responses_total{route=\"unmatched\""),
        "{text}"
    );
    assert!(!text.contains("hello-page"), "{text}");
    assert_eq!(
        get(&format!("{}/_webcache/metrics", proxy.base), &[])
            .await
            .0,
        401
    );
    // Its own command endpoint, as the CLI uses it.
    let out = webcache(
        &[
            "set",
            "k",
            "1",
            "--app",
            &proxy.base,
            "--token",
            proxy.token(),
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test]
async fn webcache_dashboard_serves_any_cache() {
    let dashboard = Server::start(&["dashboard", "--cache", "locmem://"]);
    let url = dashboard
        .dashboard
        .as_deref()
        .expect("the banner gives the address");
    assert!(url.starts_with(&format!("{}/_webcache/dashboard#token=", dashboard.base)));
    let bearer = format!("Bearer {}", dashboard.token());
    let declared = [
        ("authorization", bearer.as_str()),
        ("connection", "authorization"),
    ];
    let (status, body) = get(
        &format!("{}/_webcache/dashboard/data?sizes=true", dashboard.base),
        &declared,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let data: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(data["caches"][0]["alias"], json!("default"));
    assert_eq!(data["caches"][0]["up"], json!(true));
    assert_eq!(data["caches"][0]["biggest"], json!([]));
    // --app has its own dashboard: said in words.
    let out = webcache(&["dashboard", "--app", "http://127.0.0.1:9"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("serves its own dashboard"));
}
