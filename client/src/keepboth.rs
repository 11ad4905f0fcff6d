//! "Keep both" for a conflict (the agent's action, `afsd-rs keep-both`):
//! the local version becomes a new file beside the server's, `STEM
//! (conflict ID local).EXT` in the same directory, and the conflict is
//! resolved. It is the stash-local resolution of `resolve.rs`: made as the
//! conflict's owner through the ordinary create, write and close path, so
//! stored at once when connected and logged when offline; a failure before
//! the copy is closed leaves the conflict as it was.

use crate::resolve::Resolution;
use crate::{AfsClient, Error, Result};

impl AfsClient {
    /// Copies conflict `id`'s local version beside the original and
    /// resolves the conflict; returns the copy's name. `uid` must own the
    /// conflict (or be root); the copy is made as the owner.
    pub async fn keep_both(&self, uid: u32, id: u64) -> Result<String> {
        let r = self.resolve(uid, id, &Resolution::StashLocal).await?;
        r.made
            .into_iter()
            .next()
            .ok_or_else(|| Error::Protocol(format!("conflict {id}: no copy was made")))
    }
}
