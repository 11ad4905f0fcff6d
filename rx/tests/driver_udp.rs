//! The tokio driver over real loopback UDP (127.0.0.1 only).

use rx::proto::{CallError, Config, ConnKey};
use rx::RxEndpoint;
use std::net::SocketAddr;
use std::time::Duration;

fn lo() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_calls_including_1mib_reply() {
    let server_cfg = Config {
        epoch: 0x8000_0001,
        served_services: vec![1],
        // 300 KiB requests below: lift the callback service's 64 KiB cap.
        max_request_bytes: vec![],
        ..Config::default()
    };
    let (server, mut incoming) = RxEndpoint::bind(lo(), server_cfg).unwrap();
    let (client, _client_incoming) = RxEndpoint::bind(
        lo(),
        Config {
            epoch: 0x8000_0002,
            ..Config::default()
        },
    )
    .unwrap();
    // Server application: opcode byte 1 -> 1 MiB reply, 2 -> abort, else echo.
    tokio::spawn(async move {
        while let Some(call) = incoming.recv().await {
            match call.request.first() {
                Some(1) => {
                    let big: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
                    call.reply(big);
                }
                Some(2) => call.abort(-455),
                _ => {
                    let r = call.request.clone();
                    call.reply(r);
                }
            }
        }
    });
    let key = ConnKey {
        peer: server.local_addr(),
        service_id: 1,
        identity: 0,
        security: Default::default(),
    };
    let small = client.call(key.clone(), vec![0, 1, 2, 3]).await.unwrap();
    assert_eq!(small, vec![0, 1, 2, 3]);

    let big = tokio::time::timeout(Duration::from_secs(30), client.call(key.clone(), vec![1]))
        .await
        .expect("1 MiB reply took too long")
        .unwrap();
    assert_eq!(big.len(), 1024 * 1024);
    assert!(big
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (i as u32 * 7 % 251) as u8));

    // A 300 KiB request, several in parallel.
    let req: Vec<u8> = (0..300 * 1024u32).map(|i| (i % 253) as u8).collect();
    let mut handles = Vec::new();
    let client2 = client.clone();
    for _ in 0..6 {
        let c = client2.clone();
        let r = req.clone();
        let key = key.clone();
        handles.push(tokio::spawn(async move { c.call(key, r).await }));
    }
    for h in handles {
        assert_eq!(h.await.unwrap().unwrap(), req);
    }

    assert_eq!(
        client.call(key.clone(), vec![2]).await,
        Err(CallError::Aborted(-455))
    );

    // Unknown service -> RX_INVALID_OPERATION.
    let vl = ConnKey {
        service_id: 52,
        ..key.clone()
    };
    assert_eq!(client.call(vl, vec![0]).await, Err(CallError::Aborted(-2)));

    let s = client.stats();
    assert_eq!(s.calls_started, 10);
    assert_eq!(s.calls_completed, 8);
    assert!(server.stats().incoming_calls >= 9);

    client.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(client.call(key, vec![0]).await, Err(CallError::Shutdown));
    server.shutdown();
}

#[tokio::test]
async fn dropping_the_future_cancels_and_unreachable_peer_does_not_kill_endpoint() {
    // A port nobody listens on: ICMP errors must not break the endpoint.
    let sock = std::net::UdpSocket::bind(lo()).unwrap();
    let dead = sock.local_addr().unwrap();
    drop(sock);
    let (client, _rx) = RxEndpoint::bind(
        lo(),
        Config {
            dead_time: Duration::from_secs(2),
            ..Config::default()
        },
    )
    .unwrap();
    let key = ConnKey {
        peer: dead,
        service_id: 1,
        identity: 0,
        security: Default::default(),
    };
    // Cancelled by timeout (future dropped).
    assert!(tokio::time::timeout(
        Duration::from_millis(200),
        client.call(key.clone(), vec![1])
    )
    .await
    .is_err());
    // Fails at dead time, not earlier.
    let t = std::time::Instant::now();
    assert_eq!(client.call(key, vec![1]).await, Err(CallError::Timeout));
    assert!(
        t.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
    assert!(client.stats().packets_sent > 0);
    client.shutdown();
}

/// The endpoint runs on its own thread: an application runtime whose only
/// thread is stuck (say in a blocking cache write) does not keep the socket
/// from being served, and calls made from it still complete afterwards.
#[test]
fn socket_is_served_while_the_application_runtime_is_blocked() {
    use rx::packet::{decode_packet, flags, Body, Header, Packet, PacketType};
    let app = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (ep, _incoming) = app
        .block_on(async { RxEndpoint::bind(lo(), Config::default()) })
        .unwrap();
    // The application's runtime is not driven from here on: its one thread
    // blocks in this test function.
    let probe = std::net::UdpSocket::bind(lo()).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let request = Packet {
        header: Header {
            packet_type: PacketType::Version as u8,
            flags: flags::CLIENT_INITIATED,
            ..Header::default()
        },
        body: Body::Version(vec![0]),
    };
    probe.send_to(&request.encode(), ep.local_addr()).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = probe
        .recv_from(&mut buf)
        .expect("VERSION answered while the application runtime was blocked");
    assert_eq!(from, ep.local_addr());
    let answer = decode_packet(&buf[..n]).unwrap();
    assert_eq!(answer.header.ptype(), Some(PacketType::Version));
    // And the application's runtime still gets its results (an unknown
    // service answers RX_INVALID_OPERATION).
    let (server, _server_incoming) = RxEndpoint::bind(lo(), Config::default()).unwrap();
    let key = ConnKey {
        peer: server.local_addr(),
        service_id: 1,
        identity: 0,
        security: Default::default(),
    };
    assert_eq!(
        app.block_on(ep.call(key, vec![1])),
        Err(CallError::Aborted(-2))
    );
    ep.shutdown();
    server.shutdown();
}
