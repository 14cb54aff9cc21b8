//! What the end-to-end tests of the `webcache` binary share: starting `serve`, `proxy` and
//! `dashboard` processes on free ports, waiting until they are ready, and running the CLI, all
//! in a runtime directory of the tests' own.
// Each test file uses a part of this module; the rest is dead code in its build.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_webcache");

/// How long a started process may take to listen: generous, for a busy machine.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The runtime directory of this test file's processes (`serve` leaves its admin token there;
/// the CLI finds it there), inside the target directory rather than the user's own, and one
/// per test file, so that files running at once do not see each other's servers.
pub(crate) fn runtime_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "{}-runtime",
            env!("CARGO_CRATE_NAME").replace('_', "-")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    })
}

/// A command of the binary in the tests' environment: no `WEBCACHE_URL`/`WEBCACHE_TOKEN` from
/// the caller's shell, and the tests' runtime directory.
pub(crate) fn command() -> Command {
    let mut command = Command::new(BIN);
    command
        .env_remove("WEBCACHE_URL")
        .env_remove("WEBCACHE_TOKEN")
        .env("XDG_RUNTIME_DIR", runtime_dir());
    command
}

/// Runs the binary with `args` and `stdin` (none: an empty, closed standard input), capturing
/// its output.
pub(crate) fn webcache(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// A `webcache` server process (`serve`, `proxy`, `dashboard`) on a free port, killed when
/// dropped.
pub(crate) struct Running {
    /// The process, for tests that signal it or wait for its exit.
    pub(crate) child: Child,
    /// `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    /// `127.0.0.1:PORT`.
    pub(crate) listen: String,
    /// The banner's lines read before the process was taken as ready.
    pub(crate) banner: String,
    runtime: PathBuf,
}

impl Running {
    /// `webcache ARGS --listen 127.0.0.1:PORT`, once its banner's first line says where it
    /// listens and its port answers.
    pub(crate) fn start(args: &[&str]) -> Running {
        Running::start_with(args, None, |_| true)
    }

    /// [`start`](Running::start) with `runtime` as its XDG_RUNTIME_DIR (default: the tests'
    /// own), reading the banner up to the line for which `banner_ends` is true (or its end).
    /// The rest of its standard output is read and dropped, so it never writes into a closed
    /// pipe.
    pub(crate) fn start_with(
        args: &[&str],
        runtime: Option<&Path>,
        mut banner_ends: impl FnMut(&str) -> bool,
    ) -> Running {
        let runtime = runtime.unwrap_or_else(|| runtime_dir()).to_owned();
        // Port 0: the server binds a port the kernel chooses and says which in its banner. (A
        // port found free here and passed on can be taken by another process, such as a test
        // binary running alongside, before the server binds it.)
        let mut child = command()
            .env("XDG_RUNTIME_DIR", &runtime)
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut banner = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            banner.push_str(&line);
            banner.push('\n');
            if banner_ends(&line) {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        // The first line says where it listens.
        let first = banner.lines().next().unwrap_or_default();
        let port: u16 = first
            .split("127.0.0.1:")
            .nth(1)
            .map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|digits| digits.parse().ok())
            .unwrap_or_else(|| panic!("unexpected banner: {banner}"));
        let listen = format!("127.0.0.1:{port}");
        assert!(webcache_testkit::servers::wait_for_port(port, READY_WITHIN));
        Running {
            child,
            base: format!("http://{listen}"),
            listen,
            banner,
            runtime,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A killed `serve` cannot remove its token file itself.
        let _ = std::fs::remove_file(
            self.runtime
                .join("webcache")
                .join(format!("serve-{}.json", self.listen)),
        );
    }
}

/// `webcache serve` on a free port.
pub(crate) struct Demo;

impl Demo {
    /// With `extra` arguments.
    pub(crate) fn start(extra: &[&str]) -> Running {
        Running::start(&[&["serve"][..], extra].concat())
    }

    /// With `runtime` as its XDG_RUNTIME_DIR instead of the tests' shared one.
    pub(crate) fn start_in(runtime: &Path) -> Running {
        Running::start_with(&["serve"], Some(runtime), |_| true)
    }
}

/// `webcache proxy --upstream UPSTREAM` on a free port.
pub(crate) struct Proxy;

impl Proxy {
    /// With `extra` arguments.
    pub(crate) fn start(upstream: &str, extra: &[&str]) -> Running {
        Running::start(&[&["proxy", "--upstream", upstream][..], extra].concat())
    }
}
