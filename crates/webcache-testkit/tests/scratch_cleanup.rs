//! Issue 19 #10: test servers must not leave `webcache-test-*` folders behind. Fixtures kept in
//! statics are never dropped, so the folders can only go after the test process has ended:
//! this test runs a child test process that starts such fixtures and ends without dropping
//! them, then checks that every folder they made is gone.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use webcache_testkit::servers::redis::{RedisCluster, RedisReplicaPair, RedisServer};
use webcache_testkit::servers::scratch_dir;

/// What the child prints before each folder it made, for the parent to read.
const MARK: &str = "SCRATCH-FOLDER ";

#[test]
fn scratch_folders_are_removed_when_the_test_process_ends() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_process_leaves_fixtures_in_statics",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the child test failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let folders: Vec<PathBuf> = stdout
        .lines()
        // The harness's "test ... " may start the first line.
        .filter_map(|l| l.split_once(MARK))
        .map(|(_, folder)| PathBuf::from(folder))
        .collect();
    // A server, a primary + replica, a TLS server, a 3-node cluster, a bare scratch folder.
    assert_eq!(
        folders.len(),
        8,
        "the child reported {folders:?}:\n{stdout}"
    );
    // The removal happens after the child has ended, beside its servers' shutdown: wait for it
    // (generously, for a busy machine).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: Vec<&PathBuf> = folders.iter().filter(|f| f.exists()).collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "scratch folders left behind 60 s after the test process ended: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The child half of the test above, which runs it in a process of its own: fixtures in
/// statics (never dropped), a leaked one, and a bare scratch folder, each reported on stdout.
#[test]
#[ignore = "the child process of scratch_folders_are_removed_when_the_test_process_ends"]
fn child_process_leaves_fixtures_in_statics() {
    let mut folders: Vec<PathBuf> = vec![RedisServer::shared().dir().to_owned()];
    let pair = RedisReplicaPair::shared();
    folders.extend([pair.primary.dir().to_owned(), pair.replica.dir().to_owned()]);
    let tls = Box::leak(Box::new(RedisServer::start_tls()));
    folders.push(tls.dir().to_owned());
    folders.extend(
        RedisCluster::shared()
            .nodes()
            .iter()
            .map(|n| n.dir().to_owned()),
    );
    let bare = scratch_dir("cleanup-check");
    std::fs::write(bare.join("file"), b"x").unwrap();
    folders.push(bare);
    for folder in &folders {
        assert!(folder.is_dir(), "{} does not exist", folder.display());
        println!("{MARK}{}", folder.display());
    }
}
