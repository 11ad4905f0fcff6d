//! Who may act on the cache through the control socket: `afsd-rs flush` and
//! `flushvolume` name a fid (from the path's `afs.fid` xattr), and the daemon
//! acts only for a caller who can look that fid up.

use afs_proto::types::Fid;
use cache::FidKey;

use crate::client::AfsClient;
use crate::validate::PRSFS_LOOKUP;
use crate::{Error, Result};

impl AfsClient {
    /// Ok when `uid` has established the lookup right on `fid` of `cell`:
    /// the fid is known to this client (someone looked it up through the
    /// mount) and `uid`'s identity in the cell has, on a current status,
    /// the `l` right (for a file: on its directory, as CallerAccess says).
    /// A status whose callback expired is fetched again as `uid`, as a
    /// lookup would. A fid this client does not know is refused with
    /// EACCES: looking its path up first makes it known.
    ///
    /// Root may flush any known fid: the local administrator owns the cache
    /// anyway.
    pub async fn may_flush(&self, uid: u32, cell: &str, fid: Fid) -> Result<()> {
        let key = FidKey::new(
            &cell.to_ascii_lowercase(),
            fid.volume,
            fid.vnode,
            fid.unique,
        );
        let Some((_, node)) = self.inner.nodes.matching(|k| *k == key).into_iter().next() else {
            return Err(Error::Access);
        };
        if uid == 0 {
            return Ok(());
        }
        let valid = &self.inner.valid;
        let who = valid.who(uid, &node);
        match valid.valid_status(&node, &who).await {
            Ok(_) => {}
            // Gone, or refused: either way not this caller's to flush.
            Err(e) if matches!(e.errno(), libc::EACCES | libc::ENOENT | libc::ESTALE) => {
                return Err(Error::Access)
            }
            Err(e) => return Err(e),
        }
        valid.require(&node, &who, PRSFS_LOOKUP)
    }
}
