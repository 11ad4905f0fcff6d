//! Settings of one cache-manager instance.

use std::path::PathBuf;
use std::time::Duration;

/// Settings of one cache manager. Defaults match OpenAFS's cache manager
/// where it has an equivalent.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Directory holding ThisCell and CellServDB (`/etc/openafs`).
    pub conf_dir: PathBuf,
    /// Directory of the persistent cache.
    pub cache_dir: PathBuf,
    /// A call fails when the server was silent this long (OpenAFS: 50 s).
    pub dead_time: Duration,
    /// Size of the data chunks fetched and cached.
    pub chunk_size: u64,
    /// Chunks fetched ahead of a sequential reader.
    pub readahead_chunks: u64,
    /// How long a VLDB answer is trusted before it is asked again.
    pub vldb_ttl: Duration,
    /// rxkad level of authenticated connections. Crypt, as OpenAFS's cache
    /// manager defaults to.
    pub rxkad_level: rx::RxkadLevel,
    /// Bytes of file data the cache may hold (0: unlimited). Clean data is
    /// evicted least recently used first; data not yet stored never is.
    pub cache_bytes: u64,
    /// Chunks the cache may hold (0: unlimited).
    pub cache_entries: u64,
    /// Bytes of file data pins may hold (`--pin-reserve`); None: half the
    /// cache size.
    pub pin_reserve: Option<u64>,
    /// What a read of data not cached gets while its volume is
    /// disconnected (see `miss/`).
    pub miss: crate::miss::MissConfig,
    /// Seconds a local version discarded by keep-remote stays in the
    /// conflict store (`conflict-retention`).
    pub conflict_retention: u64,
    /// External resolvers by name (`resolver.NAME = COMMAND`; see
    /// `resolver.rs`). afsd-rs adds `sqlite`, its own `merge-sqlite`, unless
    /// the config file names one.
    pub resolvers: std::collections::BTreeMap<String, String>,
}

impl ClientConfig {
    pub fn new(conf_dir: PathBuf, cache_dir: PathBuf) -> Self {
        ClientConfig {
            conf_dir,
            cache_dir,
            dead_time: Duration::from_secs(50),
            chunk_size: 1 << 20,
            readahead_chunks: 4,
            vldb_ttl: Duration::from_secs(600),
            rxkad_level: rx::RxkadLevel::Crypt,
            cache_bytes: 1 << 30,
            cache_entries: 0,
            pin_reserve: None,
            miss: crate::miss::MissConfig::default(),
            conflict_retention: crate::resolve::DEFAULT_RETENTION_SECS,
            resolvers: Default::default(),
        }
    }
}
