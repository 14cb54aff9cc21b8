//! File-backend specifics: races between independent clients and processes on one directory,
//! corrupt files, permissions, path safety, culling and what `clear` touches.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use webcache_core::backend::BackendFactory as _;

use futures::StreamExt;
use webcache_core::backend::Backend;
use webcache_core::bytes::Bytes;
use webcache_core::config::CacheConfig;
use webcache_core::{Cache, CacheOptions, Error, Expiry, Ttl};
use webcache_file::{FileBackend, FileConfig};

mod common;
use common::Scratch;

const MINUTE: Expiry = Expiry::After(Duration::from_secs(60));

fn open(dir: &Path, max_entries: Option<u64>, cull_frequency: u64) -> FileBackend {
    FileBackend::open(
        &FileConfig::new(dir)
            .max_entries(max_entries)
            .cull_frequency(cull_frequency),
    )
    .unwrap()
}

/// Stores `v` under `key`.
async fn put(backend: &FileBackend, key: &str, expiry: Expiry) {
    backend
        .set(key, Bytes::from_static(b"v"), expiry)
        .await
        .unwrap();
}

fn entry_files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wcache"))
        .collect()
}

/// Two instances over one directory: two processes, as far as the files can tell.
fn two_clients(dir: &Path) -> (Arc<dyn Backend>, Arc<dyn Backend>) {
    (Arc::new(open(dir, None, 3)), Arc::new(open(dir, None, 3)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_race_on_add_and_exactly_one_wins() {
    let scratch = Scratch::new("add-race");
    let (a, b) = two_clients(&scratch.cache_dir());
    webcache_testkit::races::add_race(a, b, "race:", 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_race_on_incr_and_lose_no_update() {
    let scratch = Scratch::new("incr-race");
    let (a, b) = two_clients(&scratch.cache_dir());
    webcache_testkit::races::incr_race(a, b, "n", 100).await;
}

/// Set by the parent test to make `child_process_incrs` do work in a child process.
const CHILD_DIR_ENV: &str = "WEBCACHE_FILE_TEST_CHILD_DIR";
const CHILD_INCRS: i64 = 150;

/// In a child process only: increments a shared counter many times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process_incrs() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return; // Run as a normal test: nothing to do, the parent test drives it.
    };
    let backend = open(Path::new(&dir), None, 3);
    for _ in 0..CHILD_INCRS {
        backend.incr("shared", 1).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_share_one_directory_atomically() {
    let scratch = Scratch::new("processes");
    let dir = scratch.cache_dir();
    let backend = open(&dir, None, 3);
    backend
        .set("shared", Bytes::from_static(b"0"), MINUTE)
        .await
        .unwrap();
    // Two more processes: this test binary, running only `child_process_incrs`.
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "child_process_incrs",
                    "--test-threads=1",
                    "--quiet",
                ])
                .env(CHILD_DIR_ENV, &dir)
                .spawn()
                .unwrap()
        })
        .collect();
    for _ in 0..CHILD_INCRS {
        backend.incr("shared", 1).await.unwrap();
    }
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a child process failed");
    }
    assert_eq!(
        backend.get("shared").await.unwrap(),
        Some(Bytes::from((3 * CHILD_INCRS).to_string())),
        "increments were lost between processes"
    );
}

#[tokio::test]
async fn truncated_and_garbage_files_are_misses() {
    let scratch = Scratch::new("garbage");
    let dir = scratch.cache_dir();
    let backend = open(&dir, None, 3);
    let cache = Cache::new(Arc::new(backend.clone()), CacheOptions::default());
    for (name, damage) in [
        ("truncated", Damage::Truncate),
        ("garbage", Damage::Garbage),
        ("empty", Damage::Empty),
        ("other-key", Damage::OtherKey),
        ("longer", Damage::Append),
    ] {
        cache.set(name, &12, 60).await.unwrap();
        let path = backend.path_for(&cache.make_key(name).unwrap());
        let original = fs::read(&path).unwrap();
        let damaged = match damage {
            Damage::Truncate => original[..original.len() - 1].to_vec(),
            Damage::Garbage => (0..200u32).map(|i| (i * 37 % 251) as u8).collect(),
            Damage::Empty => Vec::new(),
            Damage::OtherKey => {
                cache.set("elsewhere", &99, 60).await.unwrap();
                fs::read(backend.path_for(&cache.make_key("elsewhere").unwrap())).unwrap()
            }
            Damage::Append => [original.as_slice(), b"xx"].concat(),
        };
        fs::write(&path, damaged).unwrap();
        assert_eq!(cache.get::<i64>(name).await.unwrap(), None, "{name}");
        assert!(!cache.has_key(name).await.unwrap(), "{name}");
        assert_eq!(cache.ttl(name).await.unwrap(), Ttl::Missing, "{name}");
        assert!(
            matches!(cache.incr(name, 1).await, Err(Error::KeyNotFound { .. })),
            "{name}"
        );
        // Listing skips the damaged file instead of failing.
        let keys: Vec<_> = cache.keys("*").collect().await;
        assert!(keys.iter().all(Result::is_ok), "{name}: {keys:?}");
        assert!(backend.stats().await.is_ok());
        // A new value replaces the damaged file.
        assert!(cache.add(name, &5, 60).await.unwrap(), "{name}");
        assert_eq!(cache.get::<i64>(name).await.unwrap(), Some(5), "{name}");
    }
}

enum Damage {
    Truncate,
    Garbage,
    Empty,
    OtherKey,
    Append,
}

#[tokio::test]
async fn directory_is_private_and_files_are_owner_only() {
    let scratch = Scratch::new("perms");
    let root = scratch.root().to_owned();
    let dir = root.join("nested").join("cache");
    let backend = open(&dir, None, 3);
    for path in [&root.join("nested"), &dir] {
        let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} has mode {mode:o}", path.display());
    }
    put(&backend, "k", MINUTE).await;
    let file = backend.path_for("k");
    let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "entry file mode {mode:o}");
}

#[tokio::test]
async fn keys_never_become_paths() {
    let scratch = Scratch::new("traversal");
    let root = scratch.root().to_owned();
    let dir = root.join("cache");
    let backend = open(&dir, None, 3);
    let nasty = [
        "../../etc/passwd",
        "/etc/passwd",
        "a/../../b",
        "..",
        "nul\0byte",
        "C:\\windows\\system32",
    ];
    for key in nasty {
        backend.set(key, Bytes::from(key), MINUTE).await.unwrap();
        let path = backend.path_for(key);
        assert_eq!(
            path.parent(),
            Some(dir.as_path()),
            "{key:?} -> {}",
            path.display()
        );
        assert_eq!(
            backend.get(key).await.unwrap(),
            Some(Bytes::from(key)),
            "{key:?}"
        );
    }
    // Nothing was written beside the cache directory.
    let beside: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, [std::ffi::OsString::from("cache")]);
    let listed: BTreeSet<String> = backend.scan("*").map(|k| k.unwrap()).collect().await;
    assert_eq!(listed, nasty.iter().map(|k| (*k).to_owned()).collect());
}

#[tokio::test]
async fn culling_keeps_the_bound_and_removes_expired_entries_first() {
    let scratch = Scratch::new("cull");
    let dir = scratch.cache_dir();
    let backend = open(&dir, Some(10), 2);
    put(&backend, "keeper", Expiry::Never).await;
    for i in 0..9 {
        let short = Expiry::After(Duration::from_millis(200));
        put(&backend, &format!("short{i}"), short).await;
    }
    assert_eq!(entry_files(&dir).len(), 10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The directory is full, but of expired entries: culling removes them and nothing else.
    put(&backend, "new", MINUTE).await;
    assert_eq!(entry_files(&dir).len(), 2);
    assert!(backend.has_key("keeper").await.unwrap());

    for i in 0..8 {
        put(&backend, &format!("live{i}"), MINUTE).await;
    }
    assert_eq!(entry_files(&dir).len(), 10);
    // Full of live entries: 1/cull_frequency (half) of them go.
    put(&backend, "one-more", MINUTE).await;
    assert_eq!(entry_files(&dir).len(), 6);
    assert!(backend.has_key("one-more").await.unwrap());
    // Replacing an entry never culls.
    for _ in 0..20 {
        backend
            .set("one-more", Bytes::from_static(b"w"), MINUTE)
            .await
            .unwrap();
    }
    assert_eq!(entry_files(&dir).len(), 6);
    assert_eq!(backend.stats().await.unwrap().entries, Some(6));
}

#[tokio::test]
async fn cull_frequency_zero_empties_the_directory() {
    let scratch = Scratch::new("cull-all");
    let dir = scratch.cache_dir();
    let backend = open(&dir, Some(5), 0);
    for i in 0..5 {
        put(&backend, &format!("k{i}"), MINUTE).await;
    }
    put(&backend, "last", MINUTE).await;
    assert_eq!(entry_files(&dir).len(), 1);
    assert!(backend.has_key("last").await.unwrap());
}

#[tokio::test]
async fn expired_entries_are_deleted_when_read() {
    let scratch = Scratch::new("lazy");
    let dir = scratch.cache_dir();
    let backend = open(&dir, None, 3);
    put(&backend, "k", Expiry::After(Duration::from_millis(100))).await;
    assert!(backend.path_for("k").exists());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(backend.get("k").await.unwrap(), None);
    assert!(
        !backend.path_for("k").exists(),
        "the expired file is still there"
    );
}

#[tokio::test]
async fn clear_removes_only_cache_files() {
    let scratch = Scratch::new("clear");
    let dir = scratch.cache_dir();
    let backend = open(&dir, None, 3);
    fs::write(dir.join("notes.txt"), b"not ours").unwrap();
    fs::write(dir.join("looks-like.wcache.bak"), b"not ours either").unwrap();
    for key in ["app:1:a", "app:2:b", "other:1:a"] {
        put(&backend, key, MINUTE).await;
    }
    backend.clear(Some("app:")).await.unwrap();
    assert!(!backend.has_key("app:1:a").await.unwrap());
    assert!(!backend.has_key("app:2:b").await.unwrap());
    assert!(backend.has_key("other:1:a").await.unwrap());
    backend.clear(None).await.unwrap();
    assert!(entry_files(&dir).is_empty());
    assert_eq!(fs::read(dir.join("notes.txt")).unwrap(), b"not ours");
    assert!(dir.join("looks-like.wcache.bak").exists());
}

/// Builds a backend from `url`.
async fn from_url(url: &str) -> Result<Arc<dyn Backend>, webcache_core::config::ConfigError> {
    let mut spec = CacheConfig::from_url("default", url).unwrap().backend;
    webcache_file::FileFactory.build(&mut spec).await
}

#[tokio::test]
async fn urls_are_checked() {
    let scratch = Scratch::new("url");
    let dir = scratch.cache_dir();
    let url = format!("file://{}?max_entries=3&cull_frequency=2", dir.display());
    assert_eq!(from_url(&url).await.unwrap().name(), "file");
    assert!(dir.is_dir());

    let err = from_url("file://var/tmp/x").await.unwrap_err().to_string();
    assert!(err.contains("file:///absolute/path"), "{err}");

    let not_a_dir = scratch.root().join("plain-file");
    fs::write(&not_a_dir, b"x").unwrap();
    let err = from_url(&format!("file://{}", not_a_dir.display()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot use"), "{err}");

    let err = from_url(&format!("file://{}?max_entires=3", dir.display()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("accepted options: max_entries, cull_frequency"),
        "{err}"
    );
}

#[tokio::test]
async fn a_removed_directory_is_created_again() {
    let scratch = Scratch::new("recreate");
    let dir = scratch.cache_dir();
    let backend = open(&dir, Some(100), 3);
    put(&backend, "k", MINUTE).await;
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(backend.get("k").await.unwrap(), None);
    backend
        .set("k", Bytes::from_static(b"w"), MINUTE)
        .await
        .unwrap();
    assert_eq!(
        backend.get("k").await.unwrap(),
        Some(Bytes::from_static(b"w"))
    );
    let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}
