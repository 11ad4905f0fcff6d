//! The afsd-rs cache manager: AFS semantics on top of the Rx RPCs and the
//! persistent cache, with no knowledge of FUSE.
//!
//! [`AfsClient`] answers file-system questions (lookup, getattr, readdir,
//! read, readlink, statfs, xattrs) for numbered nodes. It finds volumes
//! through the VL servers of the cells in CellServDB, talks to fileservers,
//! serves the callback service the fileservers call back on, and keeps the
//! cache coherent by data version: cached data is served while the callback
//! holds, revalidated with FetchStatus/InlineBulkStatus when it does not.

mod admin;
mod callback;
mod cellservdb;
mod config;
mod error;
mod fs;
mod identity;
mod inode;
mod mutation;
mod openfile;
mod rpc;
mod stats;
mod status;
mod volume;

pub use admin::{
    parse_rights, rights_string, Acl, XATTR_ACL, XATTR_MOUNTPOINT_PREFIX, XATTR_VOLSTATUS,
    XATTR_WHEREIS,
};
pub use cellservdb::{parse_cellservdb, Cell, CellDb};
pub use config::ClientConfig;
pub use error::{Error, Result};
pub use fs::{AfsClient, Attr, CacheStats, DirEntryOut, Invalidation, NodeKind, StatFs, ROOT_INO};
pub use identity::TokenInfo;
pub use mutation::{Mutation, SetAttrs};
pub use stats::Stats;
pub use volume::{MountKind, MountPoint, VolType};
