//! The one home of the backend's distrust of the file system: a cache directory is shared with
//! every local user who can reach it, so it must be private, and nothing in it is opened through
//! a symbolic link, read when it is not a regular file, or read past the entry size limit.

use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

/// The largest entry file the backend writes or reads (as Redis's largest string): a bigger
/// file in the directory is not ours, and is never read into memory.
pub(crate) const MAX_ENTRY_BYTES: u64 = 512 * 1024 * 1024;

/// Creates `dir` (mode `0700`) if it is missing, then checks that no other user can write to it:
/// anyone who can write to the directory can forge entries (pages, sessions) or plant links.
///
/// Refused: a directory owned by another user, one writable by its group or by others, and one
/// below an ancestor that others may write to without the sticky bit (they could swap the
/// directory for theirs). Each error says what to change.
/// Returns the directory's identity, for [`verify_dir`].
pub(crate) fn prepare_dir(dir: &Path) -> io::Result<DirIdentity> {
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("{e}; choose a directory this process may create and write"),
                )
            })?;
    }
    check_dir(dir)
}

/// Which directory was checked, and its owner and mode then: a directory removed and created
/// again (perhaps by someone else, perhaps with the same inode number) or changed since is
/// checked again before it is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirIdentity {
    dev: u64,
    ino: u64,
    uid: u32,
    mode: u32,
}

impl DirIdentity {
    fn of(meta: &fs::Metadata) -> Self {
        DirIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            uid: meta.uid(),
            mode: meta.mode(),
        }
    }
}

/// Checks `dir` again unless it is still the directory `known` names; returns the identity of
/// the directory now there, or `None` when there is none (the next write creates it through
/// [`prepare_dir`]). One `stat` when nothing changed.
pub(crate) fn verify_dir(
    dir: &Path,
    known: Option<DirIdentity>,
) -> io::Result<Option<DirIdentity>> {
    match fs::metadata(dir) {
        Ok(meta) if known == Some(DirIdentity::of(&meta)) => Ok(known),
        Ok(_) => check_dir(dir).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn check_dir(dir: &Path) -> io::Result<DirIdentity> {
    let shown = dir.display();
    // Following a symbolic link: the directory it names is the one that must be private.
    let meta = fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(refused(
            "it exists and is not a directory; remove it or choose another path".to_owned(),
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(refused(format!(
            "it belongs to uid {} but this process runs as uid {me}, and its owner could forge \
             cache entries; use a directory you own (or a path that does not exist yet: it is \
             then created with mode 700)",
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refused(format!(
            "its mode is {mode:o}, so other users can write to it and forge cache entries; run \
             `chmod 700 {shown}` or use a directory only you can write to"
        )));
    }
    let canonical = fs::canonicalize(dir)?;
    for ancestor in canonical.ancestors().skip(1) {
        let mode = fs::metadata(ancestor)?.permissions().mode();
        // World-writable without the sticky bit (unlike /tmp): anyone may rename the cache
        // directory away and put theirs in its place.
        if mode & 0o002 != 0 && mode & 0o1000 == 0 {
            return Err(refused(format!(
                "its parent `{}` has mode {:o}: any user may replace the cache directory inside \
                 it; run `chmod o-w {}` (or `chmod +t` to make it like /tmp), or use a directory \
                 elsewhere",
                ancestor.display(),
                mode & 0o7777,
                ancestor.display()
            )));
        }
    }
    Ok(DirIdentity::of(&meta))
}

fn refused(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, message)
}

/// What opening a file for reading found.
pub(crate) enum Opened {
    /// Nothing at the path.
    Missing,
    /// Something that is not an entry: a symbolic link, a FIFO, a device, a directory, or a file
    /// larger than [`MAX_ENTRY_BYTES`]. Why, in words.
    Refused(String),
    /// A regular file, and its length.
    File(File, u64),
}

/// Opens an entry file for reading without following a symbolic link and without blocking on a
/// FIFO, and keeps it only if the opened file is a regular file of at most [`MAX_ENTRY_BYTES`].
pub(crate) fn open_entry(path: &Path) -> io::Result<Opened> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(Errno::NOENT) => return Ok(Opened::Missing),
        Err(e) if is_symlink_refusal(e) => {
            return Ok(Opened::Refused("it is a symbolic link".into()))
        }
        Err(e) => return Err(e.into()),
    };
    // The type of what was opened, not of what was at the path a moment earlier.
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Opened::Refused(format!(
            "it is {}, not a regular file",
            kind(&meta.file_type())
        )));
    }
    if meta.len() > MAX_ENTRY_BYTES {
        return Ok(Opened::Refused(format!(
            "it is {} bytes long, more than the largest entry ({MAX_ENTRY_BYTES} bytes)",
            meta.len()
        )));
    }
    Ok(Opened::File(file, meta.len()))
}

/// Opens (creating it `0600` if missing) a lock file, never through a symbolic link (a planted
/// link would make this process create or lock a file of the planter's choosing), and only if
/// it is a regular file.
pub(crate) fn open_lock(path: &Path) -> io::Result<File> {
    let flags =
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = match rustix::fs::open(path, flags, Mode::RUSR | Mode::WUSR) {
        Ok(fd) => File::from(fd),
        Err(e) if is_symlink_refusal(e) => {
            return Err(refused(format!(
                "it is a symbolic link, which this cache never follows; remove `{}` (and check \
                 who could write to the cache directory)",
                path.display()
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(refused(format!(
            "it is {}, not a regular file; remove `{}`",
            kind(&meta.file_type()),
            path.display()
        )));
    }
    Ok(file)
}

/// `O_NOFOLLOW` on a symbolic link fails with `ELOOP` (Linux, macOS) or `EMLINK` (FreeBSD).
fn is_symlink_refusal(e: Errno) -> bool {
    e == Errno::LOOP || e == Errno::MLINK
}

fn kind(t: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "a special file"
    }
}
