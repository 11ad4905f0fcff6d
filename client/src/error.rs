//! The cache manager's error type and its errno mapping for the FUSE boundary.

/// Errors of the cache manager. Each maps to one errno at the FUSE boundary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("not a symbolic link")]
    NotSymlink,
    #[error("permission denied")]
    Access,
    #[error("read-only file system")]
    ReadOnly,
    #[error("{0}: no answer within the dead time")]
    TimedOut(String),
    #[error("volume {0}: not found in the VLDB")]
    NoSuchVolume(String),
    #[error("cell {0} is not configured (see CellServDB)")]
    UnknownCell(String),
    #[error("{what}: server returned {code} ({name})")]
    Server {
        what: String,
        code: i32,
        name: &'static str,
    },
    #[error("{0}: network unreachable")]
    Unreachable(String),
    /// The volume is disconnected and what was asked is not in the cache
    /// (or cannot be done without the fileserver).
    #[error("offline: {0}")]
    Offline(String),
    #[error("file exists")]
    Exists,
    /// The cache cannot take more unstored data (offline, nothing can be
    /// evicted to make room).
    #[error("no space left in the cache: {0}")]
    NoSpace(String),
    #[error("busy: {0}")]
    Busy(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("cache: {0}")]
    Cache(#[from] cache::Error),
    #[error("configuration: {0}")]
    Config(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("cross-volume rename or link")]
    CrossVolume,
    #[error("directory not empty")]
    NotEmpty,
    #[error("the file is locked")]
    WouldBlock,
    #[error("no such open file")]
    BadHandle,
    #[error("interrupted")]
    Interrupted,
    /// A wait for a disconnected volume (the miss policy's `wait`) ended
    /// without it: the bound passed, or `afsd-rs waiting --release`.
    #[error("waited for a disconnected volume: {0}")]
    MissWait(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The outcome of a fetch shared by several waiters.
    #[error("{msg}")]
    Shared { errno: i32, msg: String },
}

/// Result of cache-manager operations.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The errno the kernel should see. Network trouble is ETIMEDOUT (the
    /// call waited its dead time) so that a user can tell it from EIO.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound | Error::NoSuchVolume(_) | Error::UnknownCell(_) => libc::ENOENT,
            Error::NotDir => libc::ENOTDIR,
            Error::IsDir => libc::EISDIR,
            Error::NotSymlink | Error::Invalid(_) => libc::EINVAL,
            Error::CrossVolume => libc::EXDEV,
            Error::NotEmpty => libc::ENOTEMPTY,
            Error::WouldBlock => libc::EAGAIN,
            Error::BadHandle => libc::EBADF,
            Error::Interrupted => libc::EINTR,
            Error::Access => libc::EACCES,
            Error::ReadOnly => libc::EROFS,
            Error::TimedOut(_) | Error::MissWait(_) => libc::ETIMEDOUT,
            Error::Unreachable(_) => libc::EHOSTUNREACH,
            Error::Offline(_) => libc::ENETDOWN,
            Error::Exists => libc::EEXIST,
            Error::NoSpace(_) => libc::ENOSPC,
            Error::Busy(_) => libc::EBUSY,
            Error::Server { code, .. } => {
                let e = afs_proto::errors::abort_to_errno(*code);
                if e > 0 {
                    e
                } else {
                    libc::EIO
                }
            }
            Error::Protocol(_) | Error::Cache(_) | Error::Config(_) => libc::EIO,
            Error::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            Error::Shared { errno, .. } => *errno,
        }
    }

    /// True when another server of the same volume may succeed.
    pub fn should_fail_over(&self) -> bool {
        match self {
            Error::TimedOut(_) | Error::Unreachable(_) => true,
            Error::Server { code, .. } => afs_proto::errors::is_volume_error(*code),
            _ => false,
        }
    }
}
