//! The daemon's side of the disconnected-operation commands: `offline`,
//! `online`, `status`, `sync`, `conflicts` and `conflict cat`, as one
//! [`control::Request::Disconnected`] request each.
//!
//! As for every control request, the caller's uid comes from the socket's
//! peer credentials: only root changes volume modes by hand; `status` and
//! `sync` are anyone's; `conflicts` lists the caller's own (root: all), and
//! the kept bytes of a conflict go to its owner or root only (the client
//! checks).

use client::{AfsClient, ConflictSide, Targets};
use serde::{Deserialize, Serialize};

use crate::control::Response;

/// Most bytes of a conflict's kept version sent over the socket (as hex,
/// twice that on the wire).
pub const MAX_DATA: u64 = 64 << 20;

/// The requests of disconnected operation.
#[derive(Debug, Serialize, Deserialize)]
pub enum DisconnectedRequest {
    /// Root only: nothing is sent to these volumes until `Online`.
    Offline { targets: Targets },
    /// Root only: the volumes take changes again and replay their logs.
    Online { targets: Targets, dry_run: bool },
    /// Every volume used, with its mode and change log.
    Status,
    /// Replay the logs now.
    Sync { targets: Targets },
    /// The caller's conflicts (root: everyone's).
    Conflicts,
    /// The bytes of a conflict's kept version, or the server's.
    ConflictData { id: u64, side: ConflictSide },
    /// A conflict's three states (base, local, server).
    ConflictStates { id: u64 },
    /// Resolve a conflict.
    Resolve { id: u64, how: client::Resolution },
    /// Drop local versions kept by keep-remote (one, or all of yours).
    Purge { id: Option<u64> },
}

/// Answers one request of `uid`.
pub async fn execute(uid: u32, req: DisconnectedRequest, client: &AfsClient) -> Response {
    use DisconnectedRequest as R;
    let err = |e: client::Error| Response::Error(e.to_string());
    match req {
        R::Offline { .. } if uid != 0 => {
            Response::Error("only root may put volumes offline".into())
        }
        R::Online { .. } if uid != 0 => Response::Error("only root may put volumes online".into()),
        R::Offline { targets } => match client.go_offline(&targets) {
            Ok(v) => Response::Volumes(v),
            Err(e) => err(e),
        },
        R::Online { targets, dry_run } => match client.go_online(&targets, dry_run).await {
            Ok(report) => Response::Ok(report),
            Err(e) => err(e),
        },
        R::Status => Response::Volumes(client.volume_status()),
        R::Sync { targets } => match client.sync(&targets).await {
            Ok(report) => Response::Ok(report),
            Err(e) => err(e),
        },
        R::Conflicts => Response::Conflicts(client.conflicts((uid != 0).then_some(uid))),
        R::ConflictData { id, side } => conflict_data(uid, id, side, client).await,
        R::Resolve { id, how } => match client.resolve(uid, id, &how).await {
            Ok(r) => Response::Ok(format!("conflict {id}: {}", r.outcome)),
            Err(e) => Response::Error(format!("conflict {id}: {e}")),
        },
        R::Purge { id } => match client.purge_resolved(uid, id, 0) {
            Ok(n) => Response::Ok(format!("{n} kept local versions dropped")),
            Err(e) => Response::Error(e.to_string()),
        },
        R::ConflictStates { id } => match client.conflict_states(uid, id).await {
            Ok(st) => Response::States(st),
            Err(e) => Response::Error(format!("conflict {id}: {e}")),
        },
    }
}

fn too_large(id: u64, len: u64) -> Response {
    Response::Error(format!(
        "conflict {id}: the kept version is {len} bytes, more than the {} MiB \
         the control socket carries",
        MAX_DATA >> 20
    ))
}

async fn conflict_data(uid: u32, id: u64, side: ConflictSide, client: &AfsClient) -> Response {
    if side == ConflictSide::Server {
        return match client.conflict_server_data(uid, id).await {
            Ok(d) if d.len() as u64 > MAX_DATA => too_large(id, d.len() as u64),
            Ok(d) => Response::Data(d),
            Err(e) => Response::Error(format!("conflict {id}: {e}")),
        };
    }
    // Refuse a large local version before reading it (the caller's own
    // conflicts only: nobody learns the size of another user's).
    if side == ConflictSide::Local {
        let mine = client.conflicts((uid != 0).then_some(uid));
        if let Some(len) = mine
            .iter()
            .find(|c| c.id == id)
            .and_then(|c| c.local_bytes)
            .filter(|len| *len > MAX_DATA)
        {
            return too_large(id, len);
        }
    }
    match client.conflict_data(uid, id, side) {
        Ok(d) if d.len() as u64 > MAX_DATA => too_large(id, d.len() as u64),
        Ok(d) => Response::Data(d),
        Err(e) => Response::Error(format!("conflict {id}: {e}")),
    }
}

/// Bytes as a hex string on the wire (half the size of a JSON number
/// array, and no dependency).
pub mod hex_bytes {
    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(b.len() * 2);
        for x in b {
            out.push(DIGITS[(x >> 4) as usize] as char);
            out.push(DIGITS[(x & 15) as usize] as char);
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Hex;
        impl de::Visitor<'_> for Hex {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string of hex digits")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<u8>, E> {
                decode(s).ok_or_else(|| E::custom("bad hex digits"))
            }
        }
        d.deserialize_str(Hex)
    }

    fn decode(s: &str) -> Option<Vec<u8>> {
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let s = s.as_bytes();
        if !s.len().is_multiple_of(2) {
            return None;
        }
        s.chunks(2)
            .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::control::tests::{ask, daemon};
    use crate::control::{Limits, Request};
    use client::memserver::{rights, ANYUSER};
    use client::{Mode, VolumeStatus, ROOT_INO};

    const ALICE: u32 = 1000;
    const BOB: u32 = 1001;

    /// The cell's root volume, looked up as `uid`.
    async fn root_volume(c: &AfsClient, uid: u32) -> Targets {
        let root = c.lookup(uid, ROOT_INO, b".mem.test").await.unwrap().ino;
        let fid = c.getxattr(uid, root, "afs.fid").await.unwrap().unwrap();
        let fid = String::from_utf8(fid).unwrap();
        let vol = u32::from_str_radix(fid.split(':').next().unwrap(), 16).unwrap();
        Targets::Volumes(vec![("mem.test".into(), vol)])
    }

    /// Writes a whole file as `uid` (made when absent), stored at close.
    async fn write(c: &AfsClient, uid: u32, name: &str, data: &[u8]) {
        let root = c.lookup(uid, ROOT_INO, b".mem.test").await.unwrap().ino;
        let fh = match c.lookup(uid, root, name.as_bytes()).await {
            Ok(a) => c
                .open(uid, a.ino, libc::O_WRONLY | libc::O_TRUNC)
                .await
                .unwrap(),
            Err(_) => {
                c.create(uid, root, name.as_bytes(), 0o644, libc::O_WRONLY)
                    .await
                    .unwrap()
                    .1
            }
        };
        assert_eq!(c.write(fh, 0, data).await.unwrap() as usize, data.len());
        c.flush(fh).await.unwrap();
        c.release(fh, None).await.unwrap();
    }

    fn disc(req: DisconnectedRequest) -> Request {
        Request::Disconnected(req)
    }

    #[tokio::test]
    async fn only_root_changes_modes() {
        let (_path, c, _cell) = daemon(Limits::default());
        let targets = root_volume(&c, ALICE).await;
        for req in [
            DisconnectedRequest::Offline {
                targets: Targets::All,
            },
            DisconnectedRequest::Online {
                targets: Targets::All,
                dry_run: true,
            },
        ] {
            match execute(ALICE, req, &c).await {
                Response::Error(e) => assert!(e.starts_with("only root may"), "{e}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(c.volume_status().iter().all(|v| v.mode == Mode::Connected));
        // Root may.
        match execute(0, DisconnectedRequest::Offline { targets }, &c).await {
            Response::Volumes(v) => {
                assert!(!v.is_empty());
                assert!(v.iter().all(|v| v.mode == Mode::Disconnected && v.manual));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn status_json_round_trip() {
        let (path, c, _cell) = daemon(Limits::default());
        let targets = root_volume(&c, ALICE).await;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            // The socket gives our uid: only root may go offline.
            c.go_offline(&targets).unwrap();
        } else {
            match ask(&path, &disc(DisconnectedRequest::Offline { targets })).await {
                Response::Volumes(v) => assert!(!v.is_empty()),
                other => panic!("{other:?}"),
            }
        }
        let Response::Volumes(vols) = ask(&path, &disc(DisconnectedRequest::Status)).await else {
            panic!("no volumes");
        };
        assert_eq!(vols, c.volume_status());
        // What `status --json` prints: the struct's field names, the mode
        // as its word.
        let json = serde_json::to_string(&vols).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let first = value.as_array().unwrap()[0].as_object().unwrap();
        let mut keys: Vec<&str> = first.keys().map(|k| k.as_str()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "cell",
                "conflicts",
                "manual",
                "mode",
                "name",
                "pending_bytes",
                "pending_ops",
                "reason",
                "since",
                "volume",
                "waiting_for"
            ]
        );
        assert_eq!(first["mode"], "disconnected");
        assert_eq!(first["cell"], "mem.test");
        assert_eq!(
            serde_json::from_str::<Vec<VolumeStatus>>(&json).unwrap(),
            vols
        );
    }

    #[tokio::test]
    async fn conflicts_are_the_callers_own() {
        let (_path, c, cell) = daemon(Limits::default());
        cell.third_party(|tp| tp.set_acl("", &[(ANYUSER, rights::ALL)], &[]));
        write(&c, ALICE, "a", b"alice's first").await;
        write(&c, BOB, "b", b"bob's first").await;
        let targets = root_volume(&c, ALICE).await;
        match execute(0, DisconnectedRequest::Offline { targets }, &c).await {
            Response::Volumes(_) => {}
            other => panic!("{other:?}"),
        }
        write(&c, ALICE, "a", b"alice offline").await;
        write(&c, BOB, "b", b"bob offline").await;
        // Meanwhile on the server.
        cell.third_party(|tp| {
            tp.write("a", b"third party a");
            tp.write("b", b"third party b");
        });
        let online = DisconnectedRequest::Online {
            targets: Targets::All,
            dry_run: false,
        };
        assert!(matches!(execute(0, online, &c).await, Response::Ok(_)));
        let sync = DisconnectedRequest::Sync {
            targets: Targets::All,
        };
        match execute(ALICE, sync, &c).await {
            Response::Ok(r) => assert!(!r.is_empty()),
            other => panic!("{other:?}"),
        }
        let list = |uid| {
            let c = c.clone();
            async move {
                match execute(uid, DisconnectedRequest::Conflicts, &c).await {
                    Response::Conflicts(v) => v,
                    other => panic!("{other:?}"),
                }
            }
        };
        let all = list(0).await;
        assert_eq!(all.len(), 2, "{all:?}");
        let alice = list(ALICE).await;
        assert_eq!(alice.len(), 1, "{alice:?}");
        assert_eq!(alice[0].uid, ALICE);
        assert!(alice[0].path.ends_with("/a"), "{alice:?}");
        let bob = list(BOB).await;
        assert_eq!(bob.len(), 1);
        assert_eq!(bob[0].uid, BOB);
        assert!(list(1002).await.is_empty());
        // The kept bytes: the owner's, root's, nobody else's.
        let data = |uid, id| {
            let side = ConflictSide::Local;
            execute(uid, DisconnectedRequest::ConflictData { id, side }, &c)
        };
        match data(ALICE, alice[0].id).await {
            Response::Data(d) => assert_eq!(d, b"alice offline"),
            other => panic!("{other:?}"),
        }
        match data(0, bob[0].id).await {
            Response::Data(d) => assert_eq!(d, b"bob offline"),
            other => panic!("{other:?}"),
        }
        match data(BOB, alice[0].id).await {
            Response::Error(e) => assert!(e.starts_with("conflict "), "{e}"),
            other => panic!("{other:?}"),
        }
        match data(0, 999_999).await {
            Response::Error(e) => assert!(e.contains("999999"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn bad_requests_are_errors() {
        let (path, _c, _cell) = daemon(Limits::default());
        for line in [
            "{\"Disconnected\":\"Nonsense\"}\n",
            "{\"Disconnected\":{\"Offline\":{\"targets\":\"Everything\"}}}\n",
            "{\"Disconnected\":{\"ConflictData\":{\"id\":-1,\"side\":\"Local\"}}}\n",
            "not json\n",
        ] {
            match crate::control::tests::ask_raw(&path, line).await {
                Response::Error(e) => assert!(e.starts_with("bad request"), "{line}: {e}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        // Putting offline a volume the daemon never used is refused.
        let req = disc(DisconnectedRequest::Offline {
            targets: Targets::Cell("nowhere.test".into()),
        });
        match ask(&path, &req).await {
            Response::Error(e) => assert!(e.contains("no volume"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_crosses_as_hex() {
        let all: Vec<u8> = (0..=255).collect();
        let json = serde_json::to_string(&Response::Data(all.clone())).unwrap();
        assert!(json.starts_with("{\"Data\":\"000102"), "{json}");
        match serde_json::from_str::<Response>(&json).unwrap() {
            Response::Data(d) => assert_eq!(d, all),
            other => panic!("{other:?}"),
        }
        for bad in ["{\"Data\":\"0\"}", "{\"Data\":\"zz\"}", "{\"Data\":[1,2]}"] {
            assert!(serde_json::from_str::<Response>(bad).is_err(), "{bad}");
        }
    }
}
