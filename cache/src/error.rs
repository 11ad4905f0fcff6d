/// Errors of the cache store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RocksDB failed (I/O error, corruption, lock held by another daemon).
    #[error("cache database: {0}")]
    Db(String),
    /// A stored record could not be decoded: written by an incompatible version.
    #[error("corrupt cache record under {key}: {msg}")]
    Corrupt { key: String, msg: String },
    /// The cache directory could not be prepared.
    #[error("cache directory {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Result of cache operations.
pub type Result<T> = std::result::Result<T, Error>;

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Db(e.into_string())
    }
}
