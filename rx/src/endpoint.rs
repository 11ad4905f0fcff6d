//! The sans-IO Rx endpoint: connections, calls, timers. No sockets and no
//! clocks: the caller feeds datagrams and the current time, and drains
//! transmits and events (quinn-proto style).

use crate::ack::{self, AckTrailer};
use crate::call::{split_payload, Call, Phase, RecvOutcome, SendQueue};
use crate::conn::{Conn, ConnMeta, Role, CHANNELS};
use crate::error::{codes, CallError};
use crate::packet::{self, flags, Body, Header, Packet, PacketType, HEADER_LEN};
use crate::rxkad::{ClientSecurity, RxkadLevel};
use crate::security::Null;
use rand::rngs::OsRng;
use rand::RngCore;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tracing::{debug, trace, warn};

/// Identifies a call (client or server) within one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

/// Which connection a client call uses. Calls with equal keys share
/// connections (4 calls each); `identity` and `security` keep connections
/// of different users and tokens apart.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnKey {
    /// Server address.
    pub peer: SocketAddr,
    /// Rx service id (1 fileserver, 52 VL server, ...).
    pub service_id: u16,
    /// Opaque user identity; connections are never shared across values.
    pub identity: u64,
    /// Security class and token (index 0 for `Null`, 2 for rxkad).
    pub security: ClientSecurity,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub dest: SocketAddr,
    /// UDP payload.
    pub payload: Vec<u8>,
}

/// Something the application must know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A client call finished.
    CallDone {
        /// The call.
        id: CallId,
        /// The reply, or why the call failed.
        result: Result<Vec<u8>, CallError>,
    },
    /// A complete request for one of our served services arrived; answer
    /// with [`Endpoint::reply`] or [`Endpoint::abort_call`].
    Incoming {
        /// The server call.
        id: CallId,
        /// Who called.
        peer: SocketAddr,
        /// Service id from the header.
        service_id: u16,
        /// Request payload.
        request: Vec<u8>,
    },
}

/// Endpoint configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Connection epoch for connections we create. 0 (the default) makes
    /// [`Endpoint::new`] draw a random one from the OS's secure generator,
    /// with the high bit set, so that every start has its own and an
    /// off-path attacker cannot guess it.
    pub epoch: u32,
    /// Service ids we answer (e.g. 1 for the AFS callback service). Calls for
    /// other services are aborted with `RX_INVALID_OPERATION`, like rx.c
    /// `rxi_ReceivePacket`.
    pub served_services: Vec<u16>,
    /// Max payload per DATA packet (`RX_JUMBOBUFFERSIZE` = 1412).
    pub max_packet_payload: usize,
    /// Fail a call when nothing was heard from the peer for this long.
    pub dead_time: Duration,
    /// Fail a call after this total time; zero disables.
    pub hard_dead_time: Duration,
    /// Ping the server this often while waiting (OpenAFS: dead time / 6,
    /// rx.c `rx_SetConnDeadTime`); zero disables.
    pub keepalive_interval: Duration,
    /// Send a VERSION packet to every peer with a client connection this
    /// often, to keep NAT mappings open (afs_conn.c); zero disables.
    pub nat_keepalive: Duration,
    /// Drop idle client connections after this long.
    pub idle_conn_timeout: Duration,
    /// Forget a server connection (one a peer created) after this long
    /// without a packet from or to it, once it has no active call.
    pub server_idle_timeout: Duration,
    /// Most server connections kept at once. A new one beyond this takes
    /// the place of the longest-idle server connection without active
    /// calls; with none, its packet is dropped (counted in
    /// [`Stats::server_conns_refused`]).
    pub max_server_conns: usize,
    /// Most server connections from one peer IP address (any port);
    /// beyond this, packets opening new ones are dropped and counted.
    pub max_server_conns_per_peer: usize,
    /// Largest request accepted, per served service id; services not
    /// listed use `max_message_size`. A larger request is aborted with
    /// `RX_MSGSIZE` and counted in [`Stats::oversized_requests`].
    pub max_request_bytes: Vec<(u16, usize)>,
    /// Delayed-ACK timer (rx.c `rxi_SoftAckRate` path: 100 ms).
    pub ack_delay: Duration,
    /// Initial congestion window (rx_globals.h `rx_initSendWindow` = 16).
    pub initial_window: u32,
    /// Max send window (rx_globals.h `rx_maxSendWindow` = 32).
    pub max_window: u32,
    /// Receive window we advertise in the ACK trailer.
    pub recv_window: u32,
    /// How many times a call is moved to another channel after BUSY.
    pub max_busy_retries: u32,
    /// Largest request or reply we accept, in bytes.
    pub max_message_size: usize,
    /// Answer to VERSION requests (rxdebug -version).
    pub version_string: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            epoch: 0,
            served_services: Vec::new(),
            max_packet_payload: packet::JUMBO_BUFFER_SIZE,
            dead_time: Duration::from_secs(50),
            hard_dead_time: Duration::ZERO,
            keepalive_interval: Duration::from_secs(8),
            nat_keepalive: Duration::from_secs(20),
            idle_conn_timeout: Duration::from_secs(300),
            server_idle_timeout: Duration::from_secs(60),
            max_server_conns: 1024,
            max_server_conns_per_peer: 64,
            // Service 1 on a client is the AFS callback service, whose
            // requests are a few KB at most (CallBack with AFSCBMAX = 50
            // fids and callbacks is about 1.2 KB).
            max_request_bytes: vec![(1, 64 << 10)],
            ack_delay: Duration::from_millis(100),
            initial_window: 16,
            max_window: 32,
            recv_window: 64,
            max_busy_retries: 3,
            max_message_size: 1 << 30,
            version_string: "afsd-rs 0.1".into(),
        }
    }
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams queued for sending.
    pub packets_sent: u64,
    /// Datagrams received.
    pub packets_received: u64,
    /// DATA packets sent, including retransmissions.
    pub data_packets_sent: u64,
    /// DATA retransmissions.
    pub retransmits: u64,
    /// Payload bytes sent in DATA packets.
    pub data_bytes_sent: u64,
    /// Payload bytes received in new DATA packets.
    pub data_bytes_received: u64,
    /// ACK packets sent (all reasons).
    pub acks_sent: u64,
    /// PING ACKs sent.
    pub pings_sent: u64,
    /// ABORT packets sent.
    pub aborts_sent: u64,
    /// BUSY packets received.
    pub busy_received: u64,
    /// Undecodable datagrams.
    pub decode_errors: u64,
    /// Client calls started.
    pub calls_started: u64,
    /// Client calls that returned a reply.
    pub calls_completed: u64,
    /// Client calls that failed.
    pub calls_failed: u64,
    /// Server calls delivered as `Event::Incoming`.
    pub incoming_calls: u64,
    /// DATA packets dropped because the security class rejected them (bad
    /// rxkad checksum, seal or length).
    pub security_drops: u64,
    /// CHALLENGE packets answered with a RESPONSE.
    pub responses_sent: u64,
    /// DATA packets that passed the check of an rxnull connection. This and
    /// the three below count by the protection the connection runs at: they
    /// show the rxkad level the server accepted and answered at.
    pub data_accepted_rxnull: u64,
    /// DATA packets that passed rxkad `clear` checks (header checksum).
    pub data_accepted_rxkad_clear: u64,
    /// DATA packets that passed rxkad `auth` checks (checksum, sealed length).
    pub data_accepted_rxkad_auth: u64,
    /// DATA packets decrypted and checked at rxkad `crypt`.
    pub data_accepted_rxkad_crypt: u64,
    /// Packets for one of our client connections that came from another
    /// address or port than the connection's peer (spoofed replies,
    /// ABORTs, CHALLENGEs...), dropped.
    pub wrong_peer_drops: u64,
    /// Packets that would have opened a server connection beyond
    /// [`Config::max_server_conns`] or [`Config::max_server_conns_per_peer`],
    /// dropped.
    pub server_conns_refused: u64,
    /// Idle server connections forgotten to make room for a new one.
    pub server_conns_evicted: u64,
    /// Server connections forgotten after [`Config::server_idle_timeout`].
    pub server_conns_expired: u64,
    /// Server calls aborted because the request exceeded the service's
    /// [`Config::max_request_bytes`].
    pub oversized_requests: u64,
}

/// Largest datagram we advertise as acceptable (the same value libafscp
/// advertises, see the captures). We accept up to 16 KiB anyway.
const ADVERTISED_MAX_MTU: u32 = 5692;
/// Avoid a channel this long after it answered BUSY.
const BUSY_AVOID: Duration = Duration::from_secs(1);

/// Borrowed pieces of the endpoint needed while a connection is borrowed.
struct Out<'a> {
    now: Instant,
    config: &'a Config,
    transmits: &'a mut VecDeque<Transmit>,
    events: &'a mut VecDeque<Event>,
    stats: &'a mut Stats,
    calls: &'a mut BTreeMap<CallId, (u64, u8)>,
}

impl Out<'_> {
    fn send(&mut self, meta: &mut ConnMeta, mut header: Header, body: Body) {
        if let Body::Data(mut payload) = body {
            meta.security.secure_outgoing(&mut header, &mut payload);
            self.stats.data_packets_sent += 1;
            self.stats.data_bytes_sent += payload.len() as u64;
            self.push(
                meta.peer,
                Packet {
                    header,
                    body: Body::Data(payload),
                },
            );
        } else {
            match &body {
                Body::Ack(_) => self.stats.acks_sent += 1,
                Body::Abort(_) => self.stats.aborts_sent += 1,
                _ => {}
            }
            self.push(meta.peer, Packet { header, body });
        }
        meta.last_active = self.now;
    }

    fn push(&mut self, dest: SocketAddr, p: Packet) {
        trace!(
            ?dest,
            ptype = p.header.packet_type,
            seq = p.header.seq,
            serial = p.header.serial,
            "tx"
        );
        self.stats.packets_sent += 1;
        self.transmits.push_back(Transmit {
            dest,
            payload: p.encode(),
        });
    }

    fn trailer(&self) -> AckTrailer {
        AckTrailer {
            max_mtu: Some(ADVERTISED_MAX_MTU),
            if_mtu: Some((self.config.max_packet_payload + HEADER_LEN) as u32),
            rwind: Some(self.config.recv_window),
            max_dgram_packets: Some(1),
        }
    }

    /// Send an ACK describing `call`'s receive queue.
    fn send_ack(&mut self, meta: &mut ConnMeta, ch: u8, call: &mut Call, reason: u8, serial: u32) {
        let a = call
            .rx
            .build_ack(reason, serial, self.trailer(), self.config.recv_window);
        let mut fl = flags::SLOW_START_OK;
        if reason == ack::reason::PING {
            fl |= flags::REQUEST_ACK;
        }
        let h = meta.header(ch, call.call_number, 0, PacketType::Ack, fl);
        if reason == ack::reason::PING {
            call.ping_serial = h.serial;
            call.ping_sent_at = Some(self.now);
            self.stats.pings_sent += 1;
        }
        self.send(meta, h, Body::Ack(a));
        call.rx.unacked = 0;
        call.rx.ack_deadline = None;
    }

    /// ACK without a call (a duplicate of a finished call, or a ping).
    fn send_bare_ack(
        &mut self,
        meta: &mut ConnMeta,
        ch: u8,
        call_number: u32,
        first: u32,
        reason: u8,
        serial: u32,
    ) {
        let a = ack::AckPacket {
            buffer_space: self.config.recv_window.min(u16::MAX as u32) as u16,
            max_skew: 0,
            first_packet: first,
            previous_packet: first.saturating_sub(1),
            serial,
            reason,
            acks: Vec::new(),
            trailer: self.trailer(),
        };
        let h = meta.header(ch, call_number, 0, PacketType::Ack, flags::SLOW_START_OK);
        self.send(meta, h, Body::Ack(a));
    }

    fn send_abort(&mut self, meta: &mut ConnMeta, ch: u8, call_number: u32, code: i32) {
        let h = meta.header(ch, call_number, 0, PacketType::Abort, 0);
        self.send(meta, h, Body::Abort(code));
    }

    /// Send whatever the window allows.
    fn flush_tx(&mut self, meta: &mut ConnMeta, ch: u8, call: &mut Call) {
        while let Some(t) = call.tx.next_to_send(meta.twind, meta.peer_slow_start_ok) {
            // Room for the security header and padding, so that sealing
            // works in this buffer instead of allocating another.
            let data = call.tx.payload(t.seq);
            let mut payload = Vec::with_capacity(data.len() + crate::rxkad::SEAL_ROOM);
            payload.extend_from_slice(data);
            let h = meta.header(ch, call.call_number, t.seq, PacketType::Data, t.flags);
            let serial = h.serial;
            self.send(meta, h, Body::Data(payload));
            if t.retransmit {
                self.stats.retransmits += 1;
            }
            call.tx.mark_sent(t.seq, serial, self.now, meta.rtt.rto());
            // Data going out acknowledges what we received (rx.c: the reply
            // implicitly ACKs the request), so no delayed ACK is needed.
            call.rx.ack_deadline = None;
        }
    }

    /// Feed a DATA packet to a call's receive queue and ACK it the way
    /// OpenAFS expects (rx.c `rxi_ReceiveDataPacket`): at once for
    /// duplicates, out-of-sequence packets and REQUEST_ACK, every second
    /// packet otherwise, and after `ack_delay` for the rest.
    fn receive_data(
        &mut self,
        meta: &mut ConnMeta,
        ch: u8,
        call: &mut Call,
        h: &Header,
        payload: Vec<u8>,
    ) -> RecvOutcome {
        let len = payload.len();
        let outcome = call
            .rx
            .insert(h.seq, h.has(flags::LAST_PACKET), h.serial, payload);
        match outcome {
            RecvOutcome::Duplicate => {
                self.send_ack(meta, ch, call, ack::reason::DUPLICATE, h.serial)
            }
            RecvOutcome::ExceedsWindow => {
                self.send_ack(meta, ch, call, ack::reason::EXCEEDS_WINDOW, h.serial)
            }
            // The caller aborts the call.
            RecvOutcome::TooLarge => {}
            RecvOutcome::OutOfSequence => {
                self.stats.data_bytes_received += len as u64;
                self.send_ack(meta, ch, call, ack::reason::OUT_OF_SEQUENCE, h.serial)
            }
            RecvOutcome::InSequence => {
                self.stats.data_bytes_received += len as u64;
                if h.has(flags::REQUEST_ACK) {
                    self.send_ack(meta, ch, call, ack::reason::REQUESTED, h.serial);
                } else if call.rx.unacked >= 2 {
                    self.send_ack(meta, ch, call, ack::reason::IDLE, h.serial);
                } else if call.rx.ack_deadline.is_none() {
                    call.rx.ack_deadline = Some(self.now + self.config.ack_delay);
                }
            }
        }
        outcome
    }

    /// Run the connection's security check on an incoming DATA payload
    /// (may decrypt it); a failure drops the packet and is counted.
    fn verify_data(&mut self, meta: &mut ConnMeta, h: &Header, payload: &mut Vec<u8>) -> bool {
        match meta.security.verify_incoming(h, payload) {
            Ok(()) => {
                *match meta.security.rxkad_level() {
                    None => &mut self.stats.data_accepted_rxnull,
                    Some(RxkadLevel::Clear) => &mut self.stats.data_accepted_rxkad_clear,
                    Some(RxkadLevel::Auth) => &mut self.stats.data_accepted_rxkad_auth,
                    Some(RxkadLevel::Crypt) => &mut self.stats.data_accepted_rxkad_crypt,
                } += 1;
                true
            }
            Err(e) => {
                self.stats.security_drops += 1;
                debug!(error = %e.0, seq = h.seq, call = h.call_number, "dropping DATA that failed the security check");
                false
            }
        }
    }

    /// Process the ACK-state fields common to all ACKs for `call`.
    fn receive_ack(
        &mut self,
        meta: &mut ConnMeta,
        ch: u8,
        call: &mut Call,
        h: &Header,
        a: &ack::AckPacket,
    ) {
        if h.has(flags::SLOW_START_OK) {
            meta.peer_slow_start_ok = true;
        }
        if let Some(w) = a.trailer.rwind {
            meta.twind = w.clamp(1, self.config.max_window.max(1));
        }
        if a.reason == ack::reason::PING {
            // rx.c `rxi_ReceiveAckPacket`: answer with PING_RESPONSE.
            self.send_ack(meta, ch, call, ack::reason::PING_RESPONSE, h.serial);
        } else if a.reason == ack::reason::PING_RESPONSE
            && a.serial == call.ping_serial
            && a.serial != 0
        {
            if let Some(t) = call.ping_sent_at.take() {
                meta.rtt.sample(self.now.saturating_duration_since(t));
            }
        }
        let sending = match call.phase {
            Phase::Client => !call.reply_started,
            Phase::ServerReplying => true,
            _ => false,
        };
        if sending && !call.tx.is_empty() {
            call.tx.on_ack(self.now, a, &mut meta.rtt);
            self.flush_tx(meta, ch, call);
        }
    }

    /// Finish a client call: report, free the channel, remember enough to
    /// re-ACK a retransmitted reply.
    fn finish_client(&mut self, conn: &mut Conn, ch: u8, result: Result<Vec<u8>, CallError>) {
        let channel = &mut conn.channels[ch as usize];
        let Some(call) = channel.call.take() else {
            return;
        };
        if result.is_ok() {
            channel.done = Some((call.call_number, call.rx.next_seq()));
            self.stats.calls_completed += 1;
        } else {
            self.stats.calls_failed += 1;
        }
        debug!(id = call.id.0, ok = result.is_ok(), "client call done");
        self.calls.remove(&call.id);
        self.events.push_back(Event::CallDone {
            id: call.id,
            result,
        });
    }
}

/// The Rx endpoint state machine.
pub struct Endpoint {
    config: Config,
    next_cid: u32,
    next_call_id: u64,
    next_conn: u64,
    conns: BTreeMap<u64, Conn>,
    client_by_cid: BTreeMap<u32, u64>,
    client_by_key: BTreeMap<ConnKey, Vec<u64>>,
    server_by_id: BTreeMap<(SocketAddr, u32, u32), u64>,
    /// Server connections per peer IP address (entries are never 0).
    server_per_ip: BTreeMap<IpAddr, usize>,
    calls: BTreeMap<CallId, (u64, u8)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    next_nat: Option<Instant>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("epoch", &self.config.epoch)
            .field("conns", &self.conns.len())
            .field("calls", &self.calls.len())
            .finish()
    }
}

macro_rules! out {
    ($s:ident, $now:expr) => {
        Out {
            now: $now,
            config: &$s.config,
            transmits: &mut $s.transmits,
            events: &mut $s.events,
            stats: &mut $s.stats,
            calls: &mut $s.calls,
        }
    };
}

impl Endpoint {
    /// Create an endpoint. The epoch (when `config.epoch` is 0) and the
    /// connection id base come from the OS's secure random generator:
    /// together they are what an off-path attacker would have to guess to
    /// inject packets into our calls.
    pub fn new(mut config: Config) -> Self {
        if config.epoch == 0 {
            config.epoch = random_epoch();
        }
        Endpoint {
            config,
            next_cid: random_cid_base(),
            next_call_id: 1,
            next_conn: 1,
            conns: BTreeMap::new(),
            client_by_cid: BTreeMap::new(),
            client_by_key: BTreeMap::new(),
            server_by_id: BTreeMap::new(),
            server_per_ip: BTreeMap::new(),
            calls: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            next_nat: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Number of live connections (client and server).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Connection id (without channel bits) and channel of a live call.
    pub fn call_location(&self, id: CallId) -> Option<(u32, u8)> {
        let (h, ch) = self.calls.get(&id)?;
        Some((self.conns.get(h)?.meta.cid, *ch))
    }

    fn alloc_call_id(&mut self) -> CallId {
        let id = CallId(self.next_call_id);
        self.next_call_id += 1;
        id
    }

    /// Start a client call. The whole request is given up front; the reply
    /// arrives as [`Event::CallDone`].
    pub fn start_call(&mut self, now: Instant, key: ConnKey, request: Vec<u8>) -> CallId {
        let id = self.alloc_call_id();
        self.stats.calls_started += 1;
        let mut call = Call::new(
            id,
            Phase::Client,
            now,
            SendQueue::empty(),
            self.config.max_message_size,
        );
        call.request = request;
        self.place_client_call(now, key, call);
        id
    }

    /// Put a client call on a free channel of a connection with this key,
    /// creating a connection if all are busy, and start sending.
    fn place_client_call(&mut self, now: Instant, key: ConnKey, mut call: Call) {
        let mut slot = None;
        if let Some(hs) = self.client_by_key.get(&key) {
            'outer: for &h in hs {
                if let Some(conn) = self.conns.get(&h) {
                    for (i, c) in conn.channels.iter().enumerate() {
                        if c.call.is_none() && c.avoid_until.is_none_or(|t| t <= now) {
                            slot = Some((h, i as u8));
                            break 'outer;
                        }
                    }
                }
            }
        }
        let (h, ch) = match slot {
            Some(s) => s,
            None => (self.new_client_conn(now, key), 0),
        };
        let cfg = &self.config;
        let max_payload = self.conns.get(&h).map_or(cfg.max_packet_payload, |c| {
            c.meta.security.max_payload(cfg.max_packet_payload)
        });
        call.tx = SendQueue::new(
            split_payload(&call.request, max_payload),
            cfg.initial_window,
            cfg.max_window,
        );
        call.rx = crate::call::RecvQueue::new(cfg.max_message_size);
        call.reply_started = false;
        call.last_heard = now;
        call.next_ping = (!cfg.keepalive_interval.is_zero()).then(|| now + cfg.keepalive_interval);
        self.calls.insert(call.id, (h, ch));
        let Some(conn) = self.conns.get_mut(&h) else {
            return;
        };
        let channel = &mut conn.channels[ch as usize];
        channel.call_number = channel.call_number.wrapping_add(1).max(1);
        channel.done = None;
        channel.avoid_until = None;
        call.call_number = channel.call_number;
        debug!(
            id = call.id.0,
            cid = conn.meta.cid,
            ch,
            call_number = call.call_number,
            "start call"
        );
        let mut out = out!(self, now);
        out.flush_tx(&mut conn.meta, ch, &mut call);
        conn.channels[ch as usize].call = Some(call);
        if self.next_nat.is_none() && !self.config.nat_keepalive.is_zero() {
            self.next_nat = Some(now + self.config.nat_keepalive);
        }
    }

    fn new_client_conn(&mut self, now: Instant, key: ConnKey) -> u64 {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(4) & 0x7fff_fffc;
        if self.next_cid == 0 {
            self.next_cid = random_cid_base();
        }
        let h = self.next_conn;
        self.next_conn += 1;
        let meta = ConnMeta::new(
            Role::Client,
            key.peer,
            self.config.epoch,
            cid,
            key.service_id,
            Some(key.clone()),
            key.security.new_security(self.config.epoch, cid),
            now,
            self.config.max_window,
        );
        self.conns.insert(h, Conn::new(meta));
        self.client_by_cid.insert(cid, h);
        self.client_by_key.entry(key.clone()).or_default().push(h);
        debug!(cid, peer = %key.peer, "new client connection");
        h
    }

    /// Abandon a client call: sends ABORT (`RX_USER_ABORT`) and forgets it.
    /// No event is reported for it.
    pub fn cancel_call(&mut self, id: CallId) {
        let Some((h, ch)) = self.calls.remove(&id) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&h) else {
            return;
        };
        let now = conn.meta.last_active;
        let Some(call) = conn.channels[ch as usize].call.take() else {
            return;
        };
        let mut out = out!(self, now);
        out.send_abort(&mut conn.meta, ch, call.call_number, codes::RX_USER_ABORT);
        if conn.meta.role == Role::Server {
            conn.channels[ch as usize].call = Some(Call {
                phase: Phase::ServerAborted(codes::RX_USER_ABORT),
                ..call
            });
        } else {
            self.stats.calls_failed += 1;
        }
    }

    /// Answer a server call delivered by [`Event::Incoming`].
    pub fn reply(&mut self, id: CallId, now: Instant, data: Vec<u8>) {
        let Some(&(h, ch)) = self.calls.get(&id) else {
            debug!(id = id.0, "reply for unknown or finished call ignored");
            return;
        };
        let Some(conn) = self.conns.get_mut(&h) else {
            return;
        };
        let Some(call) = conn.channels[ch as usize].call.as_mut() else {
            return;
        };
        if call.phase != Phase::ServerPending {
            debug!(id = id.0, phase = ?call.phase, "reply in wrong phase ignored");
            return;
        }
        let max_payload = conn
            .meta
            .security
            .max_payload(self.config.max_packet_payload);
        call.tx = SendQueue::new(
            split_payload(&data, max_payload),
            self.config.initial_window,
            self.config.max_window,
        );
        call.phase = Phase::ServerReplying;
        call.last_heard = now;
        let mut out = out!(self, now);
        out.flush_tx(&mut conn.meta, ch, call);
    }

    /// Abort a call (server or client) with an error code.
    pub fn abort_call(&mut self, id: CallId, now: Instant, code: i32) {
        let Some(&(h, ch)) = self.calls.get(&id) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&h) else {
            return;
        };
        let role = conn.meta.role;
        let Some(call) = conn.channels[ch as usize].call.as_mut() else {
            return;
        };
        let mut out = out!(self, now);
        out.send_abort(&mut conn.meta, ch, call.call_number, code);
        if role == Role::Server {
            call.phase = Phase::ServerAborted(code);
            call.rx.ack_deadline = None;
            call.tx.rto_deadline = None;
            out.calls.remove(&id);
        } else {
            out.finish_client(conn, ch, Err(CallError::Aborted(code)));
        }
    }

    /// Send a NAT keepalive (a VERSION packet without CLIENT_INITIATED, so
    /// the peer does not answer; afs_conn.c / rx.c `rxi_NatKeepAliveEvent`).
    pub fn send_version_keepalive(&mut self, now: Instant, peer: SocketAddr) {
        let h = Header {
            epoch: self.config.epoch,
            packet_type: PacketType::Version as u8,
            flags: flags::LAST_PACKET,
            ..Default::default()
        };
        let mut out = out!(self, now);
        out.push(
            peer,
            Packet {
                header: h,
                body: Body::Version(vec![0]),
            },
        );
    }

    /// Feed one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.stats.packets_received += 1;
        let pkt = match packet::decode_packet(data) {
            Ok(p) => p,
            Err(e) => {
                self.stats.decode_errors += 1;
                debug!(%from, error = %e, "undecodable datagram");
                return;
            }
        };
        trace!(%from, ptype = pkt.header.packet_type, seq = pkt.header.seq, serial = pkt.header.serial, "rx");
        match pkt.header.ptype() {
            Some(PacketType::Version) => {
                self.handle_version(now, from, &pkt.header);
                return;
            }
            Some(PacketType::Debug) | Some(PacketType::Params) => return,
            _ => {}
        }
        // Jumbograms: split into ordinary packets.
        let packets = match pkt.body {
            Body::Data(ref payload) if pkt.header.has(flags::JUMBO_PACKET) => {
                packet::split_jumbo(pkt.header, payload)
                    .into_iter()
                    .map(|(header, d)| Packet {
                        header,
                        body: Body::Data(d),
                    })
                    .collect()
            }
            _ => vec![pkt],
        };
        for p in packets {
            if p.header.has(flags::CLIENT_INITIATED) {
                self.server_packet(now, from, p);
            } else {
                self.client_packet(now, from, p);
            }
        }
    }

    /// rx_packet.c `rxi_ReceiveVersionPacket`: answer only client-initiated
    /// requests, with the flag cleared and a 65-byte version string.
    fn handle_version(&mut self, now: Instant, from: SocketAddr, h: &Header) {
        if !h.has(flags::CLIENT_INITIATED) {
            return;
        }
        let mut header = *h;
        header.flags &= !flags::CLIENT_INITIATED;
        let mut body = vec![0u8; 65];
        let v = self.config.version_string.as_bytes();
        let n = v.len().min(64);
        body[..n].copy_from_slice(&v[..n]);
        let mut out = out!(self, now);
        out.push(
            from,
            Packet {
                header,
                body: Body::Version(body),
            },
        );
    }

    /// A packet on a connection we created.
    fn client_packet(&mut self, now: Instant, from: SocketAddr, p: Packet) {
        let hdr = p.header;
        let Some(&h) = self.client_by_cid.get(&hdr.conn_id()) else {
            trace!(%from, cid = hdr.cid, "packet for unknown client connection");
            return;
        };
        if hdr.epoch != self.config.epoch {
            return;
        }
        let Some(conn) = self.conns.get_mut(&h) else {
            return;
        };
        if from != conn.meta.peer {
            // Replies, ACKs, ABORTs, BUSYs and CHALLENGEs count only from
            // the address and port the connection talks to.
            self.stats.wrong_peer_drops += 1;
            debug!(%from, peer = %conn.meta.peer, cid = hdr.cid, "packet from the wrong peer dropped");
            return;
        }
        let ch = hdr.channel();
        let mut out = out!(self, now);
        conn.meta.last_active = now;
        let mut retry: Option<(ConnKey, Call)> = None;
        match p.body {
            Body::Abort(code) => {
                if hdr.call_number == 0 {
                    for c in 0..CHANNELS as u8 {
                        out.finish_client(conn, c, Err(CallError::Aborted(code)));
                    }
                } else if conn.channels[ch as usize]
                    .call
                    .as_ref()
                    .is_some_and(|c| c.call_number == hdr.call_number)
                {
                    out.finish_client(conn, ch, Err(CallError::Aborted(code)));
                }
            }
            Body::Other(ref body) if hdr.ptype() == Some(PacketType::Challenge) => {
                let mut call_numbers = [0u32; CHANNELS];
                for (n, c) in call_numbers.iter_mut().zip(conn.channels.iter()) {
                    *n = c.call_number;
                }
                let answer = conn
                    .meta
                    .security
                    .challenge_response(&hdr, body, &call_numbers);
                if let Ok(resp) = answer.as_ref() {
                    // rx.c `rxi_ReceiveChallengePacket`: RESPONSE on call 0.
                    let rh = conn.meta.header(0, 0, 0, PacketType::Response, 0);
                    out.stats.responses_sent += 1;
                    out.send(&mut conn.meta, rh, Body::Other(resp.clone()));
                }
                if let Err(e) = answer {
                    warn!(peer = %from, "{}", e.0);
                    for c in 0..CHANNELS as u8 {
                        if let Some(call) = conn.channels[c as usize].call.as_ref() {
                            let cn = call.call_number;
                            out.send_abort(&mut conn.meta, c, cn, codes::RX_PROTOCOL_ERROR);
                            out.finish_client(conn, c, Err(CallError::Protocol(e.0.clone())));
                        }
                    }
                }
            }
            Body::Busy => {
                out.stats.busy_received += 1;
                let channel = &mut conn.channels[ch as usize];
                let matches = channel
                    .call
                    .as_ref()
                    .is_some_and(|c| c.call_number == hdr.call_number && !c.reply_started);
                if matches {
                    channel.avoid_until = Some(now + BUSY_AVOID);
                    if let Some(mut call) = channel.call.take() {
                        call.busy_retries += 1;
                        if call.busy_retries > out.config.max_busy_retries {
                            conn.channels[ch as usize].call = Some(call);
                            out.finish_client(conn, ch, Err(CallError::Busy));
                        } else if let Some(key) = conn.meta.key.clone() {
                            debug!(id = call.id.0, "BUSY, retrying on another channel");
                            retry = Some((key, call));
                        }
                    }
                }
            }
            Body::Data(mut payload) => {
                let channel = &mut conn.channels[ch as usize];
                let Some(call) = channel
                    .call
                    .as_mut()
                    .filter(|c| c.call_number == hdr.call_number)
                else {
                    // Retransmitted reply of a call we already finished:
                    // ACK it again so the server can let go.
                    if let Some((cn, next)) = channel.done {
                        if cn == hdr.call_number {
                            out.send_bare_ack(
                                &mut conn.meta,
                                ch,
                                cn,
                                next,
                                ack::reason::DUPLICATE,
                                hdr.serial,
                            );
                        }
                    }
                    return;
                };
                if !out.verify_data(&mut conn.meta, &hdr, &mut payload) {
                    return;
                }
                call.last_heard = now;
                if !call.reply_started {
                    // rx.c: the first reply packet acknowledges the request.
                    call.reply_started = true;
                    call.tx.ack_all();
                }
                let outcome = out.receive_data(&mut conn.meta, ch, call, &hdr, payload);
                if outcome == RecvOutcome::TooLarge {
                    let cn = call.call_number;
                    out.send_abort(&mut conn.meta, ch, cn, codes::RX_MSGSIZE);
                    out.finish_client(
                        conn,
                        ch,
                        Err(CallError::Protocol("reply exceeds max_message_size".into())),
                    );
                    return;
                }
                if call.rx.complete() {
                    if outcome == RecvOutcome::InSequence && call.rx.unacked > 0 {
                        out.send_ack(&mut conn.meta, ch, call, ack::reason::DELAY, hdr.serial);
                    }
                    let data = call.rx.take_data();
                    out.finish_client(conn, ch, Ok(data));
                }
            }
            Body::Ack(a) => {
                let channel = &mut conn.channels[ch as usize];
                match channel
                    .call
                    .as_mut()
                    .filter(|c| c.call_number == hdr.call_number)
                {
                    Some(call) => {
                        call.last_heard = now;
                        out.receive_ack(&mut conn.meta, ch, call, &hdr, &a);
                    }
                    None if a.reason == ack::reason::PING => {
                        let first = match channel.done {
                            Some((cn, next)) if cn == hdr.call_number => next,
                            _ => 1,
                        };
                        out.send_bare_ack(
                            &mut conn.meta,
                            ch,
                            hdr.call_number,
                            first,
                            ack::reason::PING_RESPONSE,
                            hdr.serial,
                        );
                    }
                    None => {}
                }
            }
            _ => {}
        }
        if let Some((key, call)) = retry {
            self.place_client_call(now, key, call);
        }
    }

    /// A packet on a connection the peer created (we are the server).
    fn server_packet(&mut self, now: Instant, from: SocketAddr, p: Packet) {
        let hdr = p.header;
        let id_key = (from, hdr.epoch, hdr.conn_id());
        let h = match self.server_by_id.get(&id_key) {
            Some(&h) => h,
            None => {
                if !matches!(p.body, Body::Data(_)) {
                    return;
                }
                if !self.config.served_services.contains(&hdr.service_id) || hdr.security_index != 0
                {
                    // rx.c `rxi_ReceivePacket`: unknown service (or security
                    // class) -> raw ABORT with RX_INVALID_OPERATION.
                    debug!(%from, service = hdr.service_id, sec = hdr.security_index, "refusing call");
                    let mut header = hdr;
                    header.packet_type = PacketType::Abort as u8;
                    header.flags = 0;
                    header.seq = 0;
                    header.serial = 1;
                    let mut out = out!(self, now);
                    out.stats.aborts_sent += 1;
                    out.push(
                        from,
                        Packet {
                            header,
                            body: Body::Abort(codes::RX_INVALID_OPERATION),
                        },
                    );
                    return;
                }
                if !self.make_room_for_server_conn(from.ip()) {
                    self.stats.server_conns_refused += 1;
                    debug!(%from, "server connection cap reached; packet dropped");
                    return;
                }
                let h = self.next_conn;
                self.next_conn += 1;
                let meta = ConnMeta::new(
                    Role::Server,
                    from,
                    hdr.epoch,
                    hdr.cid,
                    hdr.service_id,
                    None,
                    Box::new(Null),
                    now,
                    self.config.max_window,
                );
                self.conns.insert(h, Conn::new(meta));
                self.server_by_id.insert(id_key, h);
                *self.server_per_ip.entry(from.ip()).or_default() += 1;
                debug!(%from, cid = hdr.cid, epoch = hdr.epoch, "new server connection");
                h
            }
        };
        let Some(conn) = self.conns.get_mut(&h) else {
            return;
        };
        conn.meta.last_active = now;
        let ch = hdr.channel();
        let mut out = out!(self, now);
        match p.body {
            Body::Data(mut payload) => {
                if !out.verify_data(&mut conn.meta, &hdr, &mut payload) {
                    return;
                }
                let channel = &mut conn.channels[ch as usize];
                if hdr.call_number == 0 || hdr.call_number < channel.call_number {
                    return;
                }
                if hdr.call_number > channel.call_number || channel.call.is_none() {
                    if let Some(old) = channel.call.as_ref() {
                        if old.phase == Phase::ServerPending
                            && hdr.call_number > channel.call_number
                        {
                            // Still working on the previous call: BUSY
                            // (rx.c `rxi_ReceivePacket`, rxi_SendCallBusy).
                            let bh = conn
                                .meta
                                .header(ch, hdr.call_number, 0, PacketType::Busy, 0);
                            out.send(&mut conn.meta, bh, Body::Busy);
                            return;
                        }
                        // A new call number implicitly ACKs the old reply.
                        out.calls.remove(&old.id);
                    }
                    let id = CallId(self.next_call_id);
                    self.next_call_id += 1;
                    let mut call = Call::new(
                        id,
                        Phase::ServerReceiving,
                        now,
                        SendQueue::empty(),
                        request_limit(out.config, conn.meta.service_id),
                    );
                    call.call_number = hdr.call_number;
                    channel.call_number = hdr.call_number;
                    channel.call = Some(call);
                    out.calls.insert(id, (h, ch));
                }
                let Some(call) = conn.channels[ch as usize].call.as_mut() else {
                    return;
                };
                call.last_heard = now;
                match call.phase {
                    Phase::ServerAborted(code) => {
                        let cn = call.call_number;
                        out.send_abort(&mut conn.meta, ch, cn, code);
                    }
                    Phase::ServerReceiving => {
                        let outcome = out.receive_data(&mut conn.meta, ch, call, &hdr, payload);
                        if outcome == RecvOutcome::TooLarge {
                            debug!(%from, service = hdr.service_id, "request too large; aborting");
                            out.stats.oversized_requests += 1;
                            let cn = call.call_number;
                            out.send_abort(&mut conn.meta, ch, cn, codes::RX_MSGSIZE);
                            call.phase = Phase::ServerAborted(codes::RX_MSGSIZE);
                            // Free what was buffered.
                            call.rx = crate::call::RecvQueue::new(0);
                            call.tx.rto_deadline = None;
                            out.calls.remove(&call.id);
                        } else if call.rx.complete() {
                            call.phase = Phase::ServerPending;
                            out.stats.incoming_calls += 1;
                            out.events.push_back(Event::Incoming {
                                id: call.id,
                                peer: from,
                                service_id: hdr.service_id,
                                request: call.rx.take_data(),
                            });
                        }
                    }
                    Phase::ServerPending => {
                        out.receive_data(&mut conn.meta, ch, call, &hdr, payload);
                    }
                    Phase::ServerReplying | Phase::ServerDone => {
                        // The client did not see our reply: send it again.
                        out.receive_data(&mut conn.meta, ch, call, &hdr, payload);
                        if call.phase == Phase::ServerDone {
                            call.phase = Phase::ServerReplying;
                            out.calls.insert(call.id, (h, ch));
                        }
                        call.tx.resend_unacked();
                        out.flush_tx(&mut conn.meta, ch, call);
                    }
                    Phase::Client => {}
                }
            }
            Body::Ack(a) => {
                let channel = &mut conn.channels[ch as usize];
                match channel
                    .call
                    .as_mut()
                    .filter(|c| c.call_number == hdr.call_number)
                {
                    Some(call) => {
                        call.last_heard = now;
                        out.receive_ack(&mut conn.meta, ch, call, &hdr, &a);
                        if call.phase == Phase::ServerReplying && call.tx.all_acked() {
                            call.phase = Phase::ServerDone;
                            call.tx.rto_deadline = None;
                            out.calls.remove(&call.id);
                        }
                    }
                    None if a.reason == ack::reason::PING => {
                        out.send_bare_ack(
                            &mut conn.meta,
                            ch,
                            hdr.call_number,
                            1,
                            ack::reason::PING_RESPONSE,
                            hdr.serial,
                        );
                    }
                    None => {}
                }
            }
            Body::Abort(code) => {
                for c in 0..CHANNELS as u8 {
                    if hdr.call_number != 0 && c != ch {
                        continue;
                    }
                    if let Some(call) = conn.channels[c as usize].call.as_mut() {
                        if (hdr.call_number == 0 || call.call_number == hdr.call_number)
                            && call.is_active()
                        {
                            debug!(id = call.id.0, code, "server call aborted by peer");
                            call.phase = Phase::ServerAborted(code);
                            call.rx.ack_deadline = None;
                            call.tx.rto_deadline = None;
                            out.calls.remove(&call.id);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Earliest time [`Endpoint::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let cfg = &self.config;
        let mut best: Option<Instant> = self.next_nat;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        };
        for conn in self.conns.values() {
            let mut active = false;
            for channel in &conn.channels {
                let Some(call) = channel.call.as_ref() else {
                    continue;
                };
                if !call.is_active() {
                    continue;
                }
                active = true;
                consider(call.rx.ack_deadline);
                match call.phase {
                    Phase::Client => {
                        if !call.reply_started {
                            consider(call.tx.rto_deadline);
                        }
                        consider(Some(call.last_heard + cfg.dead_time));
                        if !cfg.hard_dead_time.is_zero() {
                            consider(Some(call.started + cfg.hard_dead_time));
                        }
                        consider(call.next_ping);
                    }
                    Phase::ServerReplying => {
                        consider(call.tx.rto_deadline);
                        consider(Some(call.last_heard + cfg.dead_time));
                    }
                    Phase::ServerReceiving => consider(Some(call.last_heard + cfg.dead_time)),
                    _ => {}
                }
            }
            if !active {
                consider(Some(
                    conn.meta.last_active + idle_timeout(cfg, conn.meta.role),
                ));
            }
        }
        best
    }

    /// Run timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let handles: Vec<u64> = self.conns.keys().copied().collect();
        let mut dead_conns = Vec::new();
        for h in handles {
            let Some(conn) = self.conns.get_mut(&h) else {
                continue;
            };
            let mut out = out!(self, now);
            for ch in 0..CHANNELS as u8 {
                Self::call_timers(&mut out, conn, ch);
            }
            if !conn.has_active_calls()
                && now >= conn.meta.last_active + idle_timeout(&self.config, conn.meta.role)
            {
                dead_conns.push(h);
            }
        }
        for h in dead_conns {
            if self.remove_conn(h) == Some(Role::Server) {
                self.stats.server_conns_expired += 1;
            }
        }
        if let Some(t) = self.next_nat {
            if now >= t {
                let peers: BTreeSet<SocketAddr> = self
                    .conns
                    .values()
                    .filter(|c| c.meta.role == Role::Client)
                    .map(|c| c.meta.peer)
                    .collect();
                for p in &peers {
                    self.send_version_keepalive(now, *p);
                }
                self.next_nat = (!peers.is_empty()).then(|| now + self.config.nat_keepalive);
            }
        }
    }

    fn call_timers(out: &mut Out<'_>, conn: &mut Conn, ch: u8) {
        let now = out.now;
        let cfg = out.config;
        let Some(call) = conn.channels[ch as usize].call.as_mut() else {
            return;
        };
        if !call.is_active() {
            return;
        }
        if call.rx.ack_deadline.is_some_and(|t| now >= t) {
            let serial = call.rx.last_serial;
            out.send_ack(&mut conn.meta, ch, call, ack::reason::DELAY, serial);
        }
        match call.phase {
            Phase::Client => {
                let dead = now >= call.last_heard + cfg.dead_time;
                let hard =
                    !cfg.hard_dead_time.is_zero() && now >= call.started + cfg.hard_dead_time;
                if dead || hard {
                    debug!(id = call.id.0, dead, hard, "client call timed out");
                    let cn = call.call_number;
                    out.send_abort(&mut conn.meta, ch, cn, codes::RX_CALL_TIMEOUT);
                    out.finish_client(conn, ch, Err(CallError::Timeout));
                    return;
                }
                if !call.reply_started && call.tx.rto_deadline.is_some_and(|t| now >= t) {
                    call.tx.on_rto(&mut conn.meta.rtt);
                    out.flush_tx(&mut conn.meta, ch, call);
                }
                if call.next_ping.is_some_and(|t| now >= t) {
                    let since = call
                        .last_heard
                        .max(call.ping_sent_at.unwrap_or(call.started));
                    if now >= since + cfg.keepalive_interval {
                        out.send_ack(&mut conn.meta, ch, call, ack::reason::PING, 0);
                        call.next_ping = Some(now + cfg.keepalive_interval);
                    } else {
                        call.next_ping = Some(since + cfg.keepalive_interval);
                    }
                }
            }
            Phase::ServerReplying | Phase::ServerReceiving => {
                if now >= call.last_heard + cfg.dead_time {
                    debug!(id = call.id.0, "server call dead");
                    call.phase = Phase::ServerAborted(codes::RX_CALL_DEAD);
                    call.rx.ack_deadline = None;
                    call.tx.rto_deadline = None;
                    out.calls.remove(&call.id);
                    return;
                }
                if call.tx.rto_deadline.is_some_and(|t| now >= t) {
                    call.tx.on_rto(&mut conn.meta.rtt);
                    out.flush_tx(&mut conn.meta, ch, call);
                }
            }
            _ => {}
        }
    }

    /// Forget a connection; returns its role.
    fn remove_conn(&mut self, h: u64) -> Option<Role> {
        let conn = self.conns.remove(&h)?;
        debug!(cid = conn.meta.cid, "dropping idle connection");
        for c in &conn.channels {
            if let Some(call) = &c.call {
                self.calls.remove(&call.id);
            }
        }
        match conn.meta.role {
            Role::Client => {
                self.client_by_cid.remove(&conn.meta.cid);
                if let Some(key) = conn.meta.key.as_ref() {
                    if let Some(v) = self.client_by_key.get_mut(key) {
                        v.retain(|&x| x != h);
                        if v.is_empty() {
                            self.client_by_key.remove(key);
                        }
                    }
                }
            }
            Role::Server => {
                self.server_by_id
                    .remove(&(conn.meta.peer, conn.meta.epoch, conn.meta.cid));
                let ip = conn.meta.peer.ip();
                if let Some(n) = self.server_per_ip.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.server_per_ip.remove(&ip);
                    }
                }
            }
        }
        Some(conn.meta.role)
    }

    /// Whether a new server connection from `ip` fits under the caps,
    /// after forgetting the longest-idle server connection without active
    /// calls (of that peer when the peer is at its cap) if needed.
    fn make_room_for_server_conn(&mut self, ip: IpAddr) -> bool {
        let per_peer = self.server_per_ip.get(&ip).copied().unwrap_or(0);
        let peer_full = per_peer >= self.config.max_server_conns_per_peer;
        let total_full = self.server_conn_count() >= self.config.max_server_conns;
        if !peer_full && !total_full {
            return true;
        }
        let victim = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.meta.role == Role::Server
                    && !c.has_active_calls()
                    && (!peer_full || c.meta.peer.ip() == ip)
            })
            .min_by_key(|(_, c)| c.meta.last_active)
            .map(|(&h, _)| h);
        let Some(h) = victim else {
            return false;
        };
        self.remove_conn(h);
        self.stats.server_conns_evicted += 1;
        // Evicting one of another peer's connections frees a slot in the
        // total but not in this peer's count; check both again.
        self.server_per_ip.get(&ip).copied().unwrap_or(0) < self.config.max_server_conns_per_peer
            && self.server_conn_count() < self.config.max_server_conns
    }

    /// Number of server connections (created by peers).
    pub fn server_connection_count(&self) -> usize {
        self.server_conn_count()
    }

    fn server_conn_count(&self) -> usize {
        self.server_by_id.len()
    }

    /// Sizes of the endpoint's state, to check that it stays bounded.
    pub fn state_size(&self) -> StateSize {
        let mut buffered_bytes = 0;
        let mut live_calls = 0;
        for c in self.conns.values() {
            for ch in &c.channels {
                if let Some(call) = ch.call.as_ref() {
                    live_calls += 1;
                    buffered_bytes += call.rx.buffered_bytes();
                }
            }
        }
        StateSize {
            conns: self.conns.len(),
            server_conns: self.server_by_id.len(),
            client_conns: self.client_by_cid.len(),
            peers: self.server_per_ip.len(),
            calls: live_calls,
            call_ids: self.calls.len(),
            buffered_bytes,
            transmits: self.transmits.len(),
            events: self.events.len(),
        }
    }

    /// Panics if the endpoint's indexes disagree with its connections (for
    /// tests and fuzzers).
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        let servers = self
            .conns
            .values()
            .filter(|c| c.meta.role == Role::Server)
            .count();
        assert_eq!(servers, self.server_by_id.len(), "server index");
        assert_eq!(
            self.conns.len() - servers,
            self.client_by_cid.len(),
            "client index"
        );
        assert_eq!(
            self.server_per_ip.values().sum::<usize>(),
            servers,
            "per-peer counts"
        );
        assert!(servers <= self.config.max_server_conns, "server cap");
        assert!(
            self.server_per_ip
                .values()
                .all(|&n| n > 0 && n <= self.config.max_server_conns_per_peer),
            "per-peer cap"
        );
        for (id, (h, ch)) in &self.calls {
            let call = self
                .conns
                .get(h)
                .and_then(|c| c.channels[*ch as usize].call.as_ref());
            assert!(call.is_some_and(|c| c.id == *id), "call index");
        }
        for (key, hs) in &self.client_by_key {
            for h in hs {
                assert!(
                    self.conns
                        .get(h)
                        .is_some_and(|c| c.meta.key.as_ref() == Some(key)),
                    "client key index"
                );
            }
        }
    }
}

/// Sizes of an endpoint's state ([`Endpoint::state_size`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateSize {
    /// Connections, client and server.
    pub conns: usize,
    /// Server connections (created by peers).
    pub server_conns: usize,
    /// Client connections.
    pub client_conns: usize,
    /// Peer IP addresses with server connections.
    pub peers: usize,
    /// Calls held on channels (finished ones included).
    pub calls: usize,
    /// Calls in the call index (active ones).
    pub call_ids: usize,
    /// Received payload bytes held by calls.
    pub buffered_bytes: usize,
    /// Datagrams waiting to be sent.
    pub transmits: usize,
    /// Events waiting for the application.
    pub events: usize,
}

/// A random epoch from the OS's secure generator, high bit set (rx.c
/// `rx_InitHost` sets it: connections are then identified by epoch and cid
/// alone).
pub fn random_epoch() -> u32 {
    OsRng.next_u32() | 0x8000_0000
}

/// A random connection id base from the OS's secure generator (rx.c
/// `rx_InitHost`): channel bits clear, and the top bit clear so that +4
/// steps do not wrap soon.
fn random_cid_base() -> u32 {
    (OsRng.next_u32() & 0x7fff_fffc).max(4)
}

/// Largest request a server call of `service` may carry.
fn request_limit(cfg: &Config, service: u16) -> usize {
    cfg.max_request_bytes
        .iter()
        .find(|(s, _)| *s == service)
        .map_or(cfg.max_message_size, |&(_, n)| n.min(cfg.max_message_size))
}

/// How long a connection of `role` may stay idle.
fn idle_timeout(cfg: &Config, role: Role) -> Duration {
    match role {
        Role::Client => cfg.idle_conn_timeout,
        Role::Server => cfg.server_idle_timeout,
    }
}
