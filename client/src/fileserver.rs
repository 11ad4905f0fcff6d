//! The seam between the cache manager and the fileservers.
//!
//! Everything the cache manager asks of a cell goes through [`FileServer`]:
//! volume location (VL), the FS RPCs for a volume, and the callback breaks
//! that come back. Two implementations exist: [`crate::rxserver::RxFileServer`]
//! talks Rx to real OpenAFS servers (site rotation, down marking, the CB
//! service on the shared socket), and [`crate::memserver::MemCell`] is an
//! in-memory fileserver with AFS semantics, so that the cache manager can be
//! tested deterministically in plain `cargo test`, with faults injected.
//!
//! Calls are typed RPC structs from `afs_proto::fs` wrapped in one enum, so
//! that the trait stays object-safe while callers keep writing
//! `fs_call(&rpcs::FetchStatus { .. })` and get the typed reply back.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use afs_proto::fs as rpcs;
use afs_proto::types::{Fid, Uuid};

use crate::identity::Identity;
use crate::volume::VolumeInfo;
use crate::{Cell, Error, Result, VolType};

/// A boxed future, for the object-safe trait.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Where a call goes: a volume instance of a cell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeTarget {
    pub cell: String,
    pub volume: u32,
}

macro_rules! fs_calls {
    ($($name:ident),* $(,)?) => {
        /// One FS RPC with its arguments.
        #[derive(Clone, Debug)]
        pub enum FsCall {
            $($name(rpcs::$name),)*
            /// StoreData64 and the bytes that follow its arguments.
            StoreData64(rpcs::StoreData64, Vec<u8>),
        }

        /// The reply to an [`FsCall`] of the same name.
        #[derive(Clone, Debug)]
        pub enum FsReply {
            $($name(<rpcs::$name as afs_proto::Rpc>::Reply),)*
            StoreData64(<rpcs::StoreData64 as afs_proto::Rpc>::Reply),
        }

        impl FsCall {
            /// The RPC's name, for counters and logs.
            pub fn name(&self) -> &'static str {
                match self {
                    $(FsCall::$name(_) => <rpcs::$name as afs_proto::Rpc>::NAME,)*
                    FsCall::StoreData64(..) => <rpcs::StoreData64 as afs_proto::Rpc>::NAME,
                }
            }

            /// Sends the call over Rx to one fileserver.
            pub(crate) async fn send_rx(
                &self,
                rpc: &crate::rpc::RpcClient,
                peer: SocketAddr,
                who: &Identity,
            ) -> Result<FsReply> {
                Ok(match self {
                    $(FsCall::$name(r) => FsReply::$name(rpc.call_with_data(peer, who, r, &[]).await?),)*
                    FsCall::StoreData64(r, data) => {
                        FsReply::StoreData64(rpc.call_with_data(peer, who, r, data).await?)
                    }
                })
            }
        }

        $(
            impl FsRpc for rpcs::$name {
                fn wrap(&self, _data: &[u8]) -> FsCall {
                    FsCall::$name(self.clone())
                }
                fn unwrap(reply: FsReply) -> Result<Self::Reply> {
                    match reply {
                        FsReply::$name(r) => Ok(r),
                        other => Err(Error::Protocol(format!("reply {other:?} to {}", <Self as afs_proto::Rpc>::NAME))),
                    }
                }
            }
        )*
    };
}

/// A typed FS RPC that travels through the seam.
pub trait FsRpc: afs_proto::Rpc {
    fn wrap(&self, data: &[u8]) -> FsCall;
    fn unwrap(reply: FsReply) -> Result<Self::Reply>;
}

fs_calls!(
    FetchStatus,
    FetchData64,
    InlineBulkStatus,
    GetVolumeStatus,
    FetchAcl,
    StoreAcl,
    StoreStatus,
    CreateFile,
    MakeDir,
    RemoveFile,
    RemoveDir,
    Rename,
    Symlink,
    Link,
    SetLock,
    ExtendLock,
    ReleaseLock,
);

impl FsRpc for rpcs::StoreData64 {
    fn wrap(&self, data: &[u8]) -> FsCall {
        FsCall::StoreData64(*self, data.to_vec())
    }
    fn unwrap(reply: FsReply) -> Result<Self::Reply> {
        match reply {
            FsReply::StoreData64(r) => Ok(r),
            other => Err(Error::Protocol(format!("reply {other:?} to StoreData64"))),
        }
    }
}

/// Where callback breaks go: the cache manager's callback handling.
pub trait CallbackSink: Send + Sync {
    /// The fileserver at `from` broke its callbacks on `fids` (a vnode of 0
    /// names a whole volume).
    fn break_fids(&self, from: SocketAddr, fids: &[Fid]);
    /// The fileserver at `from` forgot every callback it gave us.
    fn break_all(&self, from: SocketAddr);
}

/// The fileservers and VL servers of the cells, as the cache manager sees
/// them.
pub trait FileServer: Send + Sync {
    /// Starts delivering callback breaks to `sink`; `uuid` is the client's,
    /// as the callback service reports it.
    fn attach(&self, sink: Weak<dyn CallbackSink>, uuid: Uuid);

    /// Locates a volume by its base name (VL GetEntryByNameU).
    fn locate<'a>(
        &'a self,
        cell: &'a Cell,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Arc<VolumeInfo>>>;

    /// Takes what is known of a volume without asking the VLDB (the last
    /// answer kept in the cache, when the VL servers cannot be reached).
    fn seed(&self, info: VolumeInfo);

    /// The volume a volume id belongs to, if it was located before.
    fn volume_by_id(&self, cell: &str, id: u32) -> Option<(Arc<VolumeInfo>, VolType)>;

    /// Sends one FS RPC to a fileserver of the volume, as `who`.
    fn call<'a>(
        &'a self,
        target: &'a VolumeTarget,
        who: &'a Identity,
        call: FsCall,
    ) -> BoxFuture<'a, Result<FsReply>>;

    /// The volume instances (cell, volume id) this client knows on the
    /// fileserver at `server`: what its InitCallBackState resets.
    fn volumes_at(&self, server: SocketAddr) -> Vec<(String, u32)>;

    /// Fileservers talked to, those marked down, and every site of the
    /// volumes located (`checkservers`).
    fn known_servers(&self) -> Vec<SocketAddr>;

    /// Probes one fileserver: true when it answers anything.
    fn probe(&self, server: SocketAddr) -> BoxFuture<'_, bool>;

    /// Tells every fileserver used to drop our callbacks (clean unmount).
    fn give_up_callbacks(&self) -> BoxFuture<'_, ()>;

    /// A text line of transport counters for `stats`.
    fn transport_stats(&self) -> String;

    /// Where our calls leave from and callbacks arrive.
    fn local_addr(&self) -> SocketAddr;
}

/// Typed call through the seam.
pub(crate) async fn fs_call<R: FsRpc>(
    fs: &dyn FileServer,
    target: &VolumeTarget,
    who: &Identity,
    rpc: &R,
    data: &[u8],
) -> Result<R::Reply> {
    let reply = fs.call(target, who, rpc.wrap(data)).await?;
    R::unwrap(reply)
}
