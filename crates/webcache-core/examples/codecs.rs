//! Size and get/set cost of each serializer x compressor on realistic values, in one run (the
//! table in BENCHMARKS.md):
//!
//! ```text
//! cargo run --release -p webcache-core --example codecs
//! ```
//!
//! Each value is written with `Cache::set` (or `set_bytes` for the page) and read back with
//! `get` (`get_bytes`) through a locmem cache, so the figures are what the cache API costs in
//! process: encoding, compression, the copy into the store, and back. Rounds alternate the
//! settings; the median round is printed. Values of at least 1 KiB are compressed here (the
//! default threshold is 32 KiB) so that every compressor has work to do.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use webcache_core::backends::{LocMemBackend, LocMemConfig};
use webcache_core::codec::{Compressor, Serializer};
use webcache_core::{Cache, CacheOptions};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ApiAnswer {
    count: u32,
    next: Option<String>,
    previous: Option<String>,
    results: Vec<Product>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Product {
    id: u64,
    slug: String,
    title: String,
    price: f64,
    currency: String,
    in_stock: bool,
    tags: Vec<String>,
    updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    id: u64,
    user_id: u32,
    score: f32,
    name: String,
    active: bool,
}

fn api_answer() -> ApiAnswer {
    let results = (0..50)
        .map(|i| Product {
            id: 10_000 + i,
            slug: format!("blue-widget-{i}"),
            title: format!("Blue widget, size {} ({} pack)", i % 7, 1 + i % 3),
            price: 9.99 + i as f64 * 0.5,
            currency: "EUR".into(),
            in_stock: i % 4 != 0,
            tags: vec!["widgets".into(), format!("size-{}", i % 7), "sale".into()],
            updated_at: format!("2026-11-{:02}T10:{:02}:00Z", 1 + i % 28, i % 60),
        })
        .collect();
    ApiAnswer {
        count: 1234,
        next: Some("https://shop.example/api/products?page=3".into()),
        previous: Some("https://shop.example/api/products?page=1".into()),
        results,
    }
}

fn html_page() -> Vec<u8> {
    let mut page = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Widgets</title>\
         <link rel=\"stylesheet\" href=\"/static/site.css\"></head><body><header><nav>\
         <a href=\"/\">Home</a> <a href=\"/widgets\">Widgets</a> <a href=\"/cart\">Cart</a></nav>\
         </header><main><h1>Widgets</h1><ul class=\"products\">",
    );
    for i in 0..80 {
        page.push_str(&format!(
            "<li class=\"product\"><a href=\"/widgets/blue-widget-{i}\"><img src=\"/media/w{i}.jpg\" \
             alt=\"Blue widget {i}\" width=\"160\" height=\"120\"></a><h2>Blue widget, size {}</h2>\
             <p class=\"price\">{}.{:02} EUR</p><button class=\"add\" data-id=\"{i}\">Add to cart\
             </button></li>",
            i % 7,
            9 + i / 2,
            (i * 37) % 100
        ));
    }
    page.push_str("</ul></main><footer>&copy; 2026 Widgets Ltd.</footer></body></html>");
    page.into_bytes()
}

fn rows() -> Vec<Row> {
    (0..1000)
        .map(|i| Row {
            id: i,
            user_id: (i * 7919 % 10_007) as u32,
            score: (i % 100) as f32 / 3.0,
            name: format!("user{i}"),
            active: i % 3 != 0,
        })
        .collect()
}

fn cache(serializer: Serializer, compressor: Compressor) -> Cache {
    Cache::new(
        Arc::new(LocMemBackend::private(LocMemConfig::default())),
        CacheOptions::builder()
            .serializer(serializer)
            .compressor(compressor)
            .compress_min_bytes(1024)
            .build(),
    )
}

/// Median of `rounds` timings of `iterations` calls, in microseconds per call.
fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

const ROUNDS: usize = 21;
const ITERATIONS: u32 = 300;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let answer = api_answer();
    let page = html_page();
    let list = rows();
    let serializers = [
        Serializer::Json,
        Serializer::MsgPack,
        Serializer::Postcard,
        Serializer::DjangoJson,
    ];
    let compressors = [Compressor::None, Compressor::Lz4, Compressor::Zstd];
    let mut settings = Vec::new();
    for s in serializers {
        for c in compressors {
            if s == Serializer::DjangoJson && c != Compressor::None {
                continue; // never compressed
            }
            settings.push((s, c));
        }
    }
    // value, serializer, compressor, stored size, set samples, get samples
    type Measured = (
        &'static str,
        Serializer,
        Compressor,
        usize,
        Vec<f64>,
        Vec<f64>,
    );
    let mut results: Vec<Measured> = Vec::new();
    for value in ["api answer", "list of 1000 structs", "html page"] {
        for &(s, c) in &settings {
            if value == "html page" && s != Serializer::Json {
                continue; // raw bytes: the serializer does not apply
            }
            results.push((value, s, c, 0, Vec::new(), Vec::new()));
        }
    }
    for _ in 0..ROUNDS {
        for (value, s, c, size, sets, gets) in results.iter_mut() {
            let cache = cache(*s, *c);
            let (set, get) = match *value {
                "api answer" => {
                    let t = Instant::now();
                    for _ in 0..ITERATIONS {
                        cache.set("k", &answer, 60).await.unwrap();
                    }
                    let set = t.elapsed();
                    let t = Instant::now();
                    for _ in 0..ITERATIONS {
                        black_box(cache.get::<ApiAnswer>("k").await.unwrap().unwrap());
                    }
                    (set, t.elapsed())
                }
                "list of 1000 structs" => {
                    let t = Instant::now();
                    for _ in 0..ITERATIONS {
                        cache.set("k", &list, 60).await.unwrap();
                    }
                    let set = t.elapsed();
                    let t = Instant::now();
                    for _ in 0..ITERATIONS {
                        black_box(cache.get::<Vec<Row>>("k").await.unwrap().unwrap());
                    }
                    (set, t.elapsed())
                }
                _ => {
                    let t = Instant::now();
                    for _ in 0..ITERATIONS {
                        cache.set_bytes("k", &page, 60).await.unwrap();
                    }
                    let set = t.elapsed();
                    let t = Instant::now();
                    for _ in 0..ITERATIONS {
                        black_box(cache.get_bytes("k").await.unwrap().unwrap());
                    }
                    (set, t.elapsed())
                }
            };
            *size = cache.get_raw("k").await.unwrap().unwrap().len();
            sets.push(set.as_secs_f64() * 1e6 / f64::from(ITERATIONS));
            gets.push(get.as_secs_f64() * 1e6 / f64::from(ITERATIONS));
        }
    }
    println!("| value | serializer | compressor | stored bytes | set µs | get µs |");
    println!("|---|---|---|---:|---:|---:|");
    for (value, s, c, size, sets, gets) in results {
        let serializer = if value == "html page" {
            "(bytes)".to_owned()
        } else {
            format!("{s:?}")
        };
        println!(
            "| {value} | {serializer} | {c:?} | {size} | {:.1} | {:.1} |",
            median(sets),
            median(gets)
        );
    }
}
