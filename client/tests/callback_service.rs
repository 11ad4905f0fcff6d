//! The callback service answers what an OpenAFS 1.8 fileserver asks, over a
//! real loopback Rx exchange with the client's own endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use afs_proto::cb::{self, CbRequest};
use afs_proto::types::{CallBack, Fid, InterfaceAddr, Uuid};
use cache::MemoryStore;
use client::{AfsClient, CellDb, ClientConfig, RxFileServer};
use rx::{CallError, ConnKey, RxEndpoint};

async fn start() -> (
    AfsClient,
    client::InvalidationReceiver,
    SocketAddr,
    Arc<RxFileServer>,
) {
    let mut config = ClientConfig::new("/nonexistent".into(), "/nonexistent".into());
    config.dead_time = Duration::from_secs(5);
    let cells = CellDb {
        this_cell: Some("test.lab".into()),
        cells: client::parse_cellservdb(b">test.lab\n127.0.0.1\n").cells,
    };
    let stats = Arc::new(client::Stats::default());
    let fs = RxFileServer::bind(config.dead_time, config.vldb_ttl, stats.clone()).unwrap();
    let (c, inval) = AfsClient::start_with(
        config,
        cells,
        Arc::new(MemoryStore::new()),
        fs.clone(),
        stats,
    )
    .unwrap();
    let port = c.local_addr().port();
    (c, inval, SocketAddr::from(([127, 0, 0, 1], port)), fs)
}

async fn fileserver() -> Arc<RxEndpoint> {
    let config = rx::Config {
        dead_time: Duration::from_secs(5),
        ..rx::Config::default()
    };
    let (ep, _incoming) = RxEndpoint::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
    ep
}

fn key(peer: SocketAddr) -> ConnKey {
    ConnKey {
        peer,
        service_id: cb::CB_SERVICE_ID,
        identity: 0,
        security: rx::ClientSecurity::Null,
    }
}

#[tokio::test]
async fn answers_the_calls_a_fileserver_makes() {
    let (client, _inval, addr, seam) = start().await;
    let fs = fileserver().await;
    seam.trust(fs.local_addr());

    let reply = fs.call(key(addr), CbRequest::Probe.encode()).await.unwrap();
    assert!(reply.is_empty());

    let reply = fs
        .call(key(addr), CbRequest::TellMeAboutYourself.encode())
        .await
        .unwrap();
    let (ia, caps) = cb::decode_tell_me_about_yourself_reply(&reply).unwrap();
    assert_eq!(ia.uuid, client.uuid());
    assert!(caps.contains(&cb::CLIENT_CAPABILITY_ERRORTRANS));
    // Only real interface addresses, never loopback.
    assert!(ia.addrs().iter().all(|a| !a.is_loopback()));

    let reply = fs
        .call(key(addr), CbRequest::WhoAreYou.encode())
        .await
        .unwrap();
    let (_, ia) = InterfaceAddr::decode(&reply).unwrap();
    assert_eq!(ia.uuid, client.uuid());

    let ok = fs
        .call(
            key(addr),
            CbRequest::ProbeUuid {
                client_uuid: client.uuid(),
            }
            .encode(),
        )
        .await;
    assert!(ok.is_ok());
    let other = Uuid::from_bytes([7; 16]);
    let err = fs
        .call(
            key(addr),
            CbRequest::ProbeUuid { client_uuid: other }.encode(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::Aborted(cb::PROBE_UUID_MISMATCH)),
        "{err:?}"
    );

    let err = fs
        .call(key(addr), CbRequest::Unknown(999).encode())
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::Aborted(cb::RXGEN_OPCODE)),
        "{err:?}"
    );

    let err = fs.call(key(addr), vec![0, 0]).await.unwrap_err();
    assert!(matches!(err, CallError::Aborted(_)), "{err:?}");

    for req in [
        CbRequest::InitCallBackState,
        CbRequest::InitCallBackState3 { server_uuid: other },
        CbRequest::CallBack {
            fids: vec![Fid::new(536870915, 2, 3), Fid::new(536870915, 0, 0)],
            callbacks: vec![CallBack {
                version: 1,
                expiration_time: 0,
                callback_type: 2,
            }],
        },
    ] {
        let reply = fs.call(key(addr), req.encode()).await.unwrap();
        assert!(reply.is_empty());
    }
    // Four breaks: the two resets and one per fid of the CallBack.
    assert!(
        client.render_stats().contains("callback_breaks 4"),
        "{}",
        client.render_stats()
    );
}

/// A peer this client never called is no fileserver of its: every call is
/// refused, and nothing it says breaks a callback.
#[tokio::test]
async fn calls_from_others_are_refused() {
    let (client, _inval, addr, _seam) = start().await;
    let stranger = fileserver().await;
    for req in [
        CbRequest::Probe,
        CbRequest::WhoAreYou,
        CbRequest::InitCallBackState,
        CbRequest::CallBack {
            fids: vec![Fid::new(536870915, 2, 3)],
            callbacks: vec![],
        },
    ] {
        let err = stranger.call(key(addr), req.encode()).await.unwrap_err();
        assert!(matches!(err, CallError::Aborted(1)), "{err:?}");
    }
    assert!(
        client.render_stats().contains("callback_breaks 0"),
        "{}",
        client.render_stats()
    );
}
