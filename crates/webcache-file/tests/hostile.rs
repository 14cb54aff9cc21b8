//! A cache directory is shared with every local user who can reach it: what another user (or a
//! careless one) may leave in or around it must never be trusted, followed, or hang a read.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use webcache_core::backend::Backend;
use webcache_core::bytes::Bytes;
use webcache_core::Expiry;
use webcache_file::{FileBackend, FileConfig};

mod common;
use common::Scratch;

const MINUTE: Expiry = Expiry::After(Duration::from_secs(60));
/// Generous: only a hang (the bug) takes longer.
const PATIENCE: Duration = Duration::from_secs(30);

fn config(dir: &Path) -> FileConfig {
    FileConfig::new(dir).max_entries(None).cull_frequency(3)
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// The error and every cause under it, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

fn refusal(dir: &Path) -> String {
    FileBackend::open(&config(dir)).unwrap_err().to_string()
}

#[test]
fn a_directory_others_can_write_to_is_refused_with_the_fix() {
    let scratch = Scratch::new("mode");
    let dir = scratch.cache_dir();
    fs::create_dir(&dir).unwrap();
    for mode in [0o777, 0o770, 0o702, 0o720] {
        chmod(&dir, mode);
        let err = refusal(&dir);
        assert!(
            err.contains(&format!("chmod 700 {}", dir.display())) && err.contains("forge"),
            "{mode:o}: {err}"
        );
    }
    chmod(&dir, 0o700);
    FileBackend::open(&config(&dir)).unwrap();
    // Readable by others is a leak, not a forgery: allowed (the directory is the user's choice).
    chmod(&dir, 0o755);
    FileBackend::open(&config(&dir)).unwrap();
}

#[test]
fn a_directory_of_another_user_is_refused() {
    if !running_as_root() {
        eprintln!("skipped: chown to another user needs root, and this test runs as non-root");
        return;
    }
    let scratch = Scratch::new("owner");
    let dir = scratch.cache_dir();
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o700);
    let (uid, gid) = nobody();
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    let err = refusal(&dir);
    assert!(
        err.contains("use a directory you own") && err.contains(&format!("uid {uid}")),
        "{err}"
    );
    // The same through a URL, as a configuration error naming the directory.
    let mut spec = webcache_core::config::CacheConfig::from_url(
        "default",
        &format!("file://{}", dir.display()),
    )
    .unwrap()
    .backend;
    let err = FileBackend::from_spec(&mut spec).unwrap_err().to_string();
    assert!(
        err.contains(&dir.display().to_string()) && err.contains("use a directory you own"),
        "{err}"
    );
}

#[test]
fn a_world_writable_parent_without_the_sticky_bit_is_refused() {
    let scratch = Scratch::new("parent");
    let parent = scratch.root().join("open");
    fs::create_dir(&parent).unwrap();
    chmod(&parent, 0o777);
    let dir = parent.join("cache");
    let err = refusal(&dir);
    assert!(
        err.contains(&format!("chmod o-w {}", parent.display())),
        "{err}"
    );
    // Like /tmp: others may create but not rename away what they do not own.
    chmod(&parent, 0o1777);
    FileBackend::open(&config(&dir)).unwrap();
}

#[tokio::test]
async fn a_directory_recreated_by_someone_else_is_refused() {
    let scratch = Scratch::new("recreated");
    let dir = scratch.cache_dir();
    let backend = FileBackend::open(&config(&dir)).unwrap();
    backend
        .set("k", Bytes::from_static(b"v"), MINUTE)
        .await
        .unwrap();
    // Removed (a /tmp cleaner), then created again, open to all, before the cache's next write.
    fs::remove_dir_all(&dir).unwrap();
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o777);
    let err = backend
        .set("k", Bytes::from_static(b"w"), MINUTE)
        .await
        .unwrap_err();
    assert!(chain(&err).contains("chmod 700"), "{}", chain(&err));
}

#[tokio::test]
async fn planted_lock_file_links_are_never_followed() {
    let scratch = Scratch::new("lock-link");
    let dir = scratch.cache_dir();
    let backend = FileBackend::open(&config(&dir)).unwrap();
    // Every stripe's lock file is a link: one to a file that exists, the others dangling.
    let victim = scratch.root().join("victim");
    fs::write(&victim, b"precious").unwrap();
    for stripe in 0..64 {
        let target = if stripe == 0 {
            victim.clone()
        } else {
            scratch.root().join(format!("created-{stripe:02x}"))
        };
        symlink(&target, dir.join(format!(".lock-{stripe:02x}"))).unwrap();
    }
    for key in ["a", "b", "c", "d"] {
        let err = backend
            .set(key, Bytes::from_static(b"v"), MINUTE)
            .await
            .unwrap_err();
        let text = chain(&err);
        assert!(
            text.contains("symbolic link") && text.contains("remove"),
            "{text}"
        );
    }
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    let created: Vec<_> = fs::read_dir(scratch.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("created-"))
        .collect();
    assert!(
        created.is_empty(),
        "the links made the cache create {created:?}"
    );
}

#[tokio::test]
async fn an_entry_that_is_a_link_is_a_miss_and_is_never_followed() {
    let scratch = Scratch::new("entry-link");
    let dir = scratch.cache_dir();
    let backend = FileBackend::open(&config(&dir)).unwrap();
    backend
        .set("k", Bytes::from_static(b"real"), MINUTE)
        .await
        .unwrap();
    // A valid entry for `k`, kept outside the directory and linked in: still not trusted.
    let path = backend.path_for("k");
    let outside = scratch.root().join("forged");
    fs::rename(&path, &outside).unwrap();
    symlink(&outside, &path).unwrap();
    assert_eq!(backend.get("k").await.unwrap(), None);
    assert!(!backend.has_key("k").await.unwrap());
    // A write replaces the link itself, and leaves its target alone.
    let forged = fs::read(&outside).unwrap();
    backend
        .set("k", Bytes::from_static(b"new"), MINUTE)
        .await
        .unwrap();
    assert_eq!(fs::read(&outside).unwrap(), forged);
    assert!(!fs::symlink_metadata(&path).unwrap().is_symlink());
    assert_eq!(
        backend.get("k").await.unwrap(),
        Some(Bytes::from_static(b"new"))
    );
}

#[tokio::test]
async fn an_entry_linked_to_dev_zero_is_a_miss_without_reading_it() {
    let scratch = Scratch::new("dev-zero");
    let dir = scratch.cache_dir();
    let backend = FileBackend::open(&config(&dir)).unwrap();
    symlink("/dev/zero", backend.path_for("k")).unwrap();
    let read = tokio::time::timeout(PATIENCE, backend.get("k")).await;
    assert_eq!(read.expect("get read /dev/zero").unwrap(), None);
    let listed = tokio::time::timeout(PATIENCE, backend.has_key("k")).await;
    assert!(!listed.unwrap().unwrap());
}

#[tokio::test]
async fn a_fifo_at_an_entry_path_is_a_miss_and_never_hangs() {
    let scratch = Scratch::new("fifo");
    let dir = scratch.cache_dir();
    let backend = FileBackend::open(&config(&dir)).unwrap();
    let path = backend.path_for("k");
    let made = Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(made.success());
    let read = tokio::time::timeout(PATIENCE, backend.get("k")).await;
    assert_eq!(read.expect("get hung on a FIFO").unwrap(), None);
    let ttl = tokio::time::timeout(PATIENCE, backend.ttl("k")).await;
    assert_eq!(ttl.unwrap().unwrap(), webcache_core::Ttl::Missing);
    // `add` sees no live entry and replaces the FIFO.
    let added = tokio::time::timeout(PATIENCE, backend.add("k", Bytes::from_static(b"v"), MINUTE));
    assert!(added.await.unwrap().unwrap());
    assert!(fs::symlink_metadata(&path).unwrap().is_file());
}

#[tokio::test]
async fn a_directory_at_an_entry_path_is_a_miss_and_writes_say_why_they_fail() {
    let scratch = Scratch::new("entry-dir");
    let dir = scratch.cache_dir();
    let backend = FileBackend::open(&config(&dir)).unwrap();
    let path = backend.path_for("k");
    fs::create_dir(&path).unwrap();
    assert_eq!(backend.get("k").await.unwrap(), None);
    let err = backend
        .set("k", Bytes::from_static(b"v"), MINUTE)
        .await
        .unwrap_err();
    let text = chain(&err);
    assert!(text.contains(&path.display().to_string()), "{text}");
}

fn running_as_root() -> bool {
    // The owner of a file this process just created is its effective user.
    let probe = std::env::temp_dir().join(format!("webcache-uid-probe-{}", std::process::id()));
    fs::write(&probe, b"").unwrap();
    let uid = std::os::unix::fs::MetadataExt::uid(&fs::metadata(&probe).unwrap());
    let _ = fs::remove_file(&probe);
    uid == 0
}

/// The uid and gid of `nobody`, from /etc/passwd (65534 where it is missing).
fn nobody() -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"nobody"))
                .then(|| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
                .flatten()
        })
        .unwrap_or((65534, 65534))
}
