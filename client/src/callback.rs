//! The callback (CB) service the fileservers call on our Rx socket.
//!
//! A fileserver calls back the address and port the client's calls came
//! from, so this service shares the client's one Rx endpoint. It answers the
//! calls an OpenAFS 1.8 fileserver makes (CallBack, InitCallBackState,
//! InitCallBackState3, Probe, ProbeUuid, WhoAreYou, TellMeAboutYourself) and
//! answers anything else with RXGEN_OPCODE, as Linux's cmservice.c does.

use std::net::Ipv4Addr;
use std::sync::Weak;

use afs_proto::cb::{self, CbRequest};
use afs_proto::types::{InterfaceAddr, Uuid};
use rx::IncomingCall;
use tokio::sync::mpsc;

use crate::fileserver::CallbackSink;

/// Calls from addresses that are not fileservers we called are refused
/// with this abort code (EPERM), and only counted in the log now and then.
const NOT_A_FILESERVER: i32 = 1;

/// Serves callback calls until the endpoint closes or the client is dropped.
/// Only peers `trusted` says are fileservers this client called are served:
/// anyone else could otherwise make the client forget what it cached, or
/// learn its UUID and addresses.
pub(crate) async fn serve(
    sink: Weak<dyn CallbackSink>,
    uuid: Uuid,
    mut calls: mpsc::Receiver<IncomingCall>,
    trusted: impl Fn(std::net::IpAddr) -> bool,
) {
    let mut refused: u64 = 0;
    while let Some(call) = calls.recv().await {
        let Some(sink) = sink.upgrade() else { break };
        if !trusted(call.peer.ip()) {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(peer = %call.peer, refused, "callback call from an address that is not a fileserver we called: refused");
            }
            call.abort(NOT_A_FILESERVER);
            continue;
        }
        if call.service_id != cb::CB_SERVICE_ID {
            call.abort(cb::RXGEN_OPCODE);
            continue;
        }
        let req = match CbRequest::decode(&call.request) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(peer = %call.peer, "undecodable callback request: {e}");
                // RXGEN_SS_UNMARSHAL: the server could not decode the arguments.
                call.abort(-453);
                continue;
            }
        };
        tracing::debug!(peer = %call.peer, ?req, "callback service call");
        match req {
            CbRequest::CallBack { fids, .. } => {
                sink.break_fids(call.peer, &fids);
                call.reply(cb::encode_empty_reply());
            }
            CbRequest::InitCallBackState | CbRequest::InitCallBackState3 { .. } => {
                sink.break_all(call.peer);
                call.reply(cb::encode_empty_reply());
            }
            CbRequest::Probe => call.reply(cb::encode_empty_reply()),
            CbRequest::ProbeUuid { client_uuid } => {
                if client_uuid == uuid {
                    call.reply(cb::encode_empty_reply())
                } else {
                    call.abort(cb::PROBE_UUID_MISMATCH)
                }
            }
            CbRequest::WhoAreYou => call.reply(cb::encode_who_are_you_reply(&interface_addr(uuid))),
            CbRequest::TellMeAboutYourself => call.reply(cb::encode_tell_me_about_yourself_reply(
                &interface_addr(uuid),
                &[cb::CLIENT_CAPABILITY_ERRORTRANS],
            )),
            CbRequest::Unknown(op) => {
                tracing::debug!(op, "unknown callback opcode");
                call.abort(cb::RXGEN_OPCODE)
            }
        }
    }
}

/// Our identity for the fileserver: the UUID and the IPv4 addresses of this
/// host's (network namespace's) non-loopback interfaces, as OpenAFS's cache
/// manager reports them.
fn interface_addr(uuid: Uuid) -> InterfaceAddr {
    let addrs = local_ipv4_addrs();
    let mut ia = InterfaceAddr {
        number_of_interfaces: 0,
        uuid,
        addr_in: [Ipv4Addr::UNSPECIFIED; afs_proto::types::MAX_INTERFACE_ADDR],
        subnetmask: [Ipv4Addr::UNSPECIFIED; afs_proto::types::MAX_INTERFACE_ADDR],
        mtu: [0; afs_proto::types::MAX_INTERFACE_ADDR],
    };
    for (i, (a, m)) in addrs.into_iter().take(ia.addr_in.len()).enumerate() {
        ia.addr_in[i] = a;
        ia.subnetmask[i] = m;
        ia.mtu[i] = 1500;
        ia.number_of_interfaces = i as u32 + 1;
    }
    ia
}

fn local_ipv4_addrs() -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a linked list we walk read-only and free once.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut p = ifap;
        while !p.is_null() {
            let ifa = &*p;
            if !ifa.ifa_addr.is_null() && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                let mask = if ifa.ifa_netmask.is_null() {
                    Ipv4Addr::UNSPECIFIED
                } else {
                    let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in);
                    Ipv4Addr::from(u32::from_be(m.sin_addr.s_addr))
                };
                if !ip.is_loopback() && !ip.is_unspecified() {
                    out.push((ip, mask));
                }
            }
            p = ifa.ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    out
}
