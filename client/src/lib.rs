//! The afsd-rs cache manager: AFS semantics on top of the fileservers and
//! the persistent cache, with no knowledge of FUSE.
//!
//! [`AfsClient`] answers file-system questions (lookup, getattr, readdir,
//! read, readlink, statfs, xattrs) and makes changes for numbered nodes. It
//! finds volumes through the VL servers of the cells in CellServDB, talks to
//! fileservers through the [`FileServer`] seam, receives their callback
//! breaks, and keeps the cache coherent by data version: cached data is
//! served while the callback holds, revalidated with
//! FetchStatus/InlineBulkStatus when it does not. Every change is a
//! [`Mutation`] record run by one executor. The components and what each
//! owns are drawn in `client.rs`.

mod access;
mod admin;
mod attr;
mod cachectl;
mod callback;
mod cellservdb;
mod changes;
mod client;
mod config;
mod conflict_tree;
mod conflicts;
mod connectivity;
mod data;
mod dirs;
mod error;
pub mod events;
mod executor;
mod files;
mod fileserver;
mod identity;
mod inode;
mod invalidations;
mod journal;
mod keepboth;
mod local;
mod locks;
pub mod memserver;
pub mod miss;
mod mutation;
mod namespace;
mod nodes;
mod offline;
mod openfile;
mod pinning;
mod pins;
mod replay;
mod resolve;
mod resolver;
mod rpc;
mod rxserver;
mod states;
mod stats;
mod status;
mod tokenwatch;
mod validate;
mod volume;
mod writes;

pub use admin::{
    parse_rights, rights_string, Acl, XATTR_ACL, XATTR_MOUNTPOINT_PREFIX, XATTR_STATE,
    XATTR_VOLSTATUS, XATTR_WHEREIS,
};
pub use attr::{Attr, DirEntryOut, Invalidation, NodeKind, StatFs, ROOT_INO};
pub use cellservdb::{parse_cellservdb, read_this_cell, Cell, CellDb, ParsedCellServDb, Skipped};
pub use client::{AfsClient, CacheStats};
pub use config::ClientConfig;
pub use conflicts::{ConflictInfo, ConflictKind, ConflictSide};
pub use connectivity::Mode;
pub use error::{Error, Result};
pub use fileserver::{BoxFuture, CallbackSink, FileServer, FsCall, FsReply, VolumeTarget};
pub use identity::{Identity, TokenInfo};
pub use invalidations::InvalidationReceiver;
pub use miss::book::{MissInfo, WaitingInfo};
pub use miss::{Caller, MissAt, MissConfig};
pub use mutation::{BaseState, Change, DataChange, Mutation, SetAttrs};
pub use offline::{Targets, VolumeStatus, Waiting};
pub use pinning::{human as human_bytes, PinCheck, PinInfo, PinProgress, PinRequest};
pub use pins::PinRecord;
pub use resolve::{Resolution, Resolved, DEFAULT_RETENTION_SECS};
pub use rxserver::RxFileServer;
pub use states::{ConflictStates, ObjectState};
pub use stats::Stats;
pub use volume::{MountKind, MountPoint, VolType, VolumeInfo};
