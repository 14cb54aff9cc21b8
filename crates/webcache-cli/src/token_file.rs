//! Where `webcache serve` leaves its admin token for the CLI on the same machine, as Jupyter
//! leaves its runtime files: `$XDG_RUNTIME_DIR/webcache/` (else `~/.local/state/webcache/`), a
//! directory only the user can enter (0700), one file per bound address readable only by the user
//! (0600), e.g. `serve-127.0.0.1:8000.json`, removed when `serve` exits.
//!
//! A directory that another user owns or can write, or a symlink, is never trusted: `serve`
//! then writes no file (the token is still printed) and the CLI finds none (pass `--token`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the file holds.
#[derive(Debug, Serialize, Deserialize)]
struct Contents {
    /// The app's base URL, for people reading the file.
    url: String,
    /// The admin token.
    token: String,
    /// The `serve` process, for people reading the file.
    pid: u32,
}

/// The directory of the runtime files, if the environment names one (it may not exist yet).
pub(crate) fn dir() -> Option<PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    // The XDG base directory spec: a relative path is ignored.
    if let Some(runtime) = absolute("XDG_RUNTIME_DIR") {
        return Some(runtime.join("webcache"));
    }
    absolute("HOME").map(|home| home.join(".local/state/webcache"))
}

fn file_name(addr: SocketAddr) -> String {
    format!("serve-{addr}.json")
}

/// The token file of a `serve` bound to `addr`, removed when dropped.
#[derive(Debug)]
pub(crate) struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    /// Writes `token` for the app at `addr`, replacing a file a killed `serve` left behind.
    pub(crate) fn write(addr: SocketAddr, token: &str) -> Result<TokenFile, String> {
        let dir = dir().ok_or("neither XDG_RUNTIME_DIR nor HOME is set to an absolute path")?;
        private_dir(&dir, true)?;
        let path = dir.join(file_name(addr));
        let contents = Contents {
            url: format!("http://{addr}"),
            token: token.to_owned(),
            pid: std::process::id(),
        };
        let text = serde_json::to_string(&contents).map_err(|e| e.to_string())?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("cannot replace {}: {e}", path.display()))
            }
            _ => {}
        }
        write_private(&path, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(TokenFile { path })
    }

    /// Where the file is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Creates `path` readable and writable by the user alone; never follows or replaces anything
/// (the directory is the user's own, so nobody else can race to create it).
#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(_path: &Path, _bytes: &[u8]) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "private runtime files are implemented for Unix only",
    ))
}

/// Makes sure `dir` is a directory of the user's own that nobody else can enter, creating it
/// (0700) when `create` is set. Says what is wrong otherwise.
#[cfg(unix)]
pub(crate) fn private_dir(dir: &Path, create: bool) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if create {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let me = rustix::process::getuid().as_raw();
    if !meta.is_dir() || meta.uid() != me {
        return Err(format!(
            "{} is not a directory owned by you (uid {me}); remove it",
            dir.display()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        if !create {
            return Err(format!(
                "{} can be entered by other users; `chmod 700` it",
                dir.display()
            ));
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make {} private (chmod 700): {e}", dir.display()))?;
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn private_dir(_dir: &Path, _create: bool) -> Result<(), String> {
    Err("private runtime files are implemented for Unix only".into())
}

/// The token a `serve` on this machine left for the app at `url`, if any: the file of the URL's
/// address, or for a loopback URL (or `localhost`) that of a `serve` bound to loopback or to
/// every interface on the same port.
pub(crate) fn find(url: &str) -> Option<String> {
    let dir = dir()?;
    let url = reqwest::Url::parse(url).ok()?;
    let port = url.port_or_known_default()?;
    let ip: Option<IpAddr> = match url.host()? {
        url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => None,
        url::Host::Domain(_) => return None,
        url::Host::Ipv4(ip) => Some(ip.into()),
        url::Host::Ipv6(ip) => Some(ip.into()),
    };
    let mut candidates: Vec<IpAddr> = ip.into_iter().collect();
    if ip.is_none_or(|ip| ip.is_loopback()) {
        candidates.extend([
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ]);
    }
    if private_dir(&dir, false).is_err() {
        return None;
    }
    candidates.into_iter().find_map(|ip| {
        let path = dir.join(file_name(SocketAddr::new(ip, port)));
        read_private(&path)
    })
}

/// The token in `path`, if it is a regular file of the user's own.
fn read_private(path: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.uid() != rustix::process::getuid().as_raw() {
            return None;
        }
    }
    if !meta.is_file() || meta.len() > 4096 {
        return None;
    }
    let contents: Contents = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(contents.token)
}
