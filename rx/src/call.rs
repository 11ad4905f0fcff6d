//! Per-call state: the send queue (with congestion window and
//! retransmission) and the receive queue (reassembly and ACK generation).
//!
//! Each direction of an Rx call has its own sequence space starting at 1
//! (rx.c `rxi_ReceiveDataPacket`, `rxi_Start`).

use crate::ack::{self, AckPacket, AckTrailer};
use crate::rtt::RttEstimator;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Receivers accept packets at most this far beyond the first missing one
/// (the ACK's nAcks is a u8).
pub const MAX_ACK_SPAN: u32 = 255;

/// NACK count after which a packet is retransmitted without waiting for the
/// RTO (rx.c `rxi_ReceiveAckPacket`: "fast recovery" after 3 nacks).
pub const FAST_RETRANSMIT_NACKS: u8 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxState {
    Unsent,
    InFlight,
    SoftAcked,
    Lost,
}

#[derive(Debug)]
struct TxPacket {
    data: Vec<u8>,
    state: TxState,
    nacks: u8,
    serial: u32,
    sent_at: Option<Instant>,
}

/// What the caller has to put on the wire for one DATA packet.
#[derive(Debug)]
pub(crate) struct ToSend {
    pub seq: u32,
    pub flags: u8,
    pub retransmit: bool,
}

/// Sender side of one direction of a call.
#[derive(Debug)]
pub(crate) struct SendQueue {
    packets: Vec<TxPacket>,
    /// Packets with seq <= hard_acked are acknowledged for good.
    hard_acked: u32,
    cwind: u32,
    ssthresh: u32,
    max_window: u32,
    ca_acc: u32,
    /// No further window cut for losses of packets with seq <= this.
    recovery_point: u32,
    highest_sent: u32,
    pub rto_deadline: Option<Instant>,
}

/// Split a payload into DATA packet payloads; an empty payload still gives
/// one (empty) packet so that LAST can be sent.
pub(crate) fn split_payload(data: &[u8], max: usize) -> Vec<Vec<u8>> {
    let max = max.max(1);
    if data.is_empty() {
        return vec![Vec::new()];
    }
    data.chunks(max).map(|c| c.to_vec()).collect()
}

impl SendQueue {
    pub fn new(chunks: Vec<Vec<u8>>, initial_window: u32, max_window: u32) -> Self {
        SendQueue {
            packets: chunks
                .into_iter()
                .map(|data| TxPacket {
                    data,
                    state: TxState::Unsent,
                    nacks: 0,
                    serial: 0,
                    sent_at: None,
                })
                .collect(),
            hard_acked: 0,
            cwind: initial_window.clamp(1, max_window.max(1)),
            ssthresh: max_window.max(1),
            max_window: max_window.max(1),
            ca_acc: 0,
            recovery_point: 0,
            highest_sent: 0,
            rto_deadline: None,
        }
    }

    pub fn empty() -> Self {
        Self::new(Vec::new(), 1, 1)
    }

    pub fn total(&self) -> u32 {
        self.packets.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// All packets hard-acknowledged.
    pub fn all_acked(&self) -> bool {
        !self.packets.is_empty() && self.hard_acked >= self.total()
    }

    pub fn payload(&self, seq: u32) -> &[u8] {
        &self.packets[(seq - 1) as usize].data
    }

    #[cfg(test)]
    pub fn cwind(&self) -> u32 {
        self.cwind
    }

    /// Next packet allowed out by the window, with its flags (REQUEST_ACK
    /// and LAST; the caller adds CLIENT_INITIATED).
    ///
    /// REQUEST_ACK rules after rx.c `rxi_SendXmitList`/`rxi_SendPacket`: on
    /// the last packet, on the packet that fills the window, on
    /// retransmissions, and on every other packet unless the peer's ACKs
    /// carry SLOW_START_OK.
    pub fn next_to_send(&self, twind: u32, peer_slow_start_ok: bool) -> Option<ToSend> {
        let window = self.cwind.min(twind.max(1));
        let limit = self.hard_acked.saturating_add(window).min(self.total());
        for seq in self.hard_acked + 1..=limit {
            let p = &self.packets[(seq - 1) as usize];
            if matches!(p.state, TxState::Unsent | TxState::Lost) {
                let retransmit = p.state == TxState::Lost;
                let mut flags = 0;
                if seq == self.total() {
                    flags |= crate::packet::flags::LAST_PACKET;
                }
                if seq == self.total()
                    || seq == limit
                    || retransmit
                    || (!peer_slow_start_ok && seq % 2 == 0)
                {
                    flags |= crate::packet::flags::REQUEST_ACK;
                }
                return Some(ToSend {
                    seq,
                    flags,
                    retransmit,
                });
            }
        }
        None
    }

    pub fn mark_sent(&mut self, seq: u32, serial: u32, now: Instant, rto: Duration) {
        if let Some(p) = self.packets.get_mut((seq as usize).wrapping_sub(1)) {
            p.state = TxState::InFlight;
            p.serial = serial;
            p.sent_at = Some(now);
            p.nacks = 0;
        }
        self.highest_sent = self.highest_sent.max(seq);
        if self.rto_deadline.is_none() {
            self.rto_deadline = Some(now + rto);
        }
    }

    fn any_in_flight(&self) -> bool {
        self.packets[self.hard_acked as usize..]
            .iter()
            .any(|p| p.state == TxState::InFlight)
    }

    fn on_newly_acked(&mut self, n: u32) {
        for _ in 0..n {
            if self.cwind < self.ssthresh {
                self.cwind += 1;
            } else {
                self.ca_acc += 1;
                if self.ca_acc >= self.cwind {
                    self.cwind += 1;
                    self.ca_acc = 0;
                }
            }
        }
        self.cwind = self.cwind.min(self.max_window);
    }

    /// Everything is acknowledged implicitly (the peer started its reply).
    pub fn ack_all(&mut self) {
        self.hard_acked = self.total();
        self.rto_deadline = None;
    }

    /// Process an ACK. Returns true if something new was acknowledged.
    pub fn on_ack(&mut self, now: Instant, a: &AckPacket, rtt: &mut RttEstimator) -> bool {
        // RTT sample from the serial echo; delayed ACKs include our peer's
        // ACK delay, so skip them.
        if a.reason != ack::reason::DELAY && a.serial != 0 {
            let lo = self.hard_acked as usize;
            if let Some(p) = self.packets[lo.min(self.packets.len())..]
                .iter()
                .find(|p| p.serial == a.serial && p.sent_at.is_some())
            {
                if let Some(t) = p.sent_at {
                    rtt.sample(now.saturating_duration_since(t));
                }
            }
        }
        let mut newly = 0;
        let total = self.total();
        let first = a.first_packet;
        if first > 0 {
            let hard = (first - 1).min(total);
            if hard > self.hard_acked {
                for p in &self.packets[self.hard_acked as usize..hard as usize] {
                    if p.state != TxState::SoftAcked {
                        newly += 1;
                    }
                }
                self.hard_acked = hard;
            }
        }
        let mut lost_seq = None;
        for (i, &st) in a.acks.iter().enumerate() {
            let seq = first.wrapping_add(i as u32);
            if seq == 0 || seq <= self.hard_acked {
                continue;
            }
            if seq > total {
                break;
            }
            let p = &mut self.packets[(seq - 1) as usize];
            if st == ack::ACK_TYPE_ACK {
                if matches!(p.state, TxState::InFlight | TxState::Lost) {
                    p.state = TxState::SoftAcked;
                    newly += 1;
                }
            } else {
                match p.state {
                    TxState::SoftAcked => p.state = TxState::Lost,
                    TxState::InFlight => {
                        p.nacks = p.nacks.saturating_add(1);
                        if p.nacks >= FAST_RETRANSMIT_NACKS {
                            p.state = TxState::Lost;
                            lost_seq = Some(seq);
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(seq) = lost_seq {
            if seq > self.recovery_point {
                self.ssthresh = (self.cwind / 2).max(2);
                self.cwind = self.ssthresh;
                self.ca_acc = 0;
                self.recovery_point = self.highest_sent;
            }
        }
        if newly > 0 {
            self.on_newly_acked(newly);
            rtt.reset_backoff();
            self.rto_deadline = None;
        }
        if self.all_acked() || !self.any_in_flight() {
            self.rto_deadline = None;
        } else if self.rto_deadline.is_none() {
            self.rto_deadline = Some(now + rtt.rto());
        }
        newly > 0
    }

    /// Retransmission timeout: everything in flight is presumed lost and the
    /// window collapses to one packet (rx.c `rxi_Resend`, cwind = 1).
    pub fn on_rto(&mut self, rtt: &mut RttEstimator) {
        self.rto_deadline = None;
        let mut any = false;
        for p in &mut self.packets[self.hard_acked as usize..] {
            if p.state == TxState::InFlight {
                p.state = TxState::Lost;
                any = true;
            }
        }
        if any {
            rtt.on_timeout();
            self.ssthresh = (self.cwind / 2).max(2);
            self.cwind = 1;
            self.ca_acc = 0;
            self.recovery_point = self.highest_sent;
        }
    }

    /// Send every unacknowledged packet again (a duplicate request for an
    /// answered call, or a reply that was already fully acked).
    pub fn resend_unacked(&mut self) {
        if self.all_acked() {
            // The peer still asks: start over from the last packet.
            if let Some(p) = self.packets.last_mut() {
                p.state = TxState::Lost;
            }
            self.hard_acked = self.total().saturating_sub(1);
            return;
        }
        for p in &mut self.packets[self.hard_acked as usize..] {
            if p.state == TxState::InFlight {
                p.state = TxState::Lost;
            }
        }
    }
}

/// Result of feeding one DATA packet to a receive queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvOutcome {
    /// The next expected packet.
    InSequence,
    /// A later packet, buffered.
    OutOfSequence,
    /// Already seen.
    Duplicate,
    /// Too far ahead, dropped.
    ExceedsWindow,
    /// Would make the message larger than the queue's limit, dropped.
    TooLarge,
}

/// Receiver side of one direction of a call.
#[derive(Debug, Default)]
pub(crate) struct RecvQueue {
    data: Vec<u8>,
    next_seq: u32,
    ooo: BTreeMap<u32, Vec<u8>>,
    /// Payload bytes held in `ooo`.
    ooo_bytes: usize,
    last_seq: Option<u32>,
    prev_seq: u32,
    /// Packets received since the last ACK went out.
    pub unacked: u32,
    /// When a delayed ACK is due.
    pub ack_deadline: Option<Instant>,
    /// Serial of the newest DATA packet received.
    pub last_serial: u32,
    max_bytes: usize,
}

impl RecvQueue {
    pub fn new(max_bytes: usize) -> Self {
        RecvQueue {
            next_seq: 1,
            max_bytes,
            ..Default::default()
        }
    }

    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// LAST received and everything before it in order.
    pub fn complete(&self) -> bool {
        matches!(self.last_seq, Some(l) if self.next_seq > l)
    }

    /// Payload bytes held (in order and out of order).
    pub fn buffered_bytes(&self) -> usize {
        self.data.len() + self.ooo_bytes
    }

    pub fn take_data(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.data)
    }

    /// Insert one DATA packet.
    pub fn insert(&mut self, seq: u32, last: bool, serial: u32, payload: Vec<u8>) -> RecvOutcome {
        if seq == 0 || seq < self.next_seq || self.ooo.contains_key(&seq) {
            return RecvOutcome::Duplicate;
        }
        if seq >= self.next_seq.saturating_add(MAX_ACK_SPAN)
            || matches!(self.last_seq, Some(l) if seq > l)
        {
            return RecvOutcome::ExceedsWindow;
        }
        // Out-of-order packets count too, so that what a call buffers never
        // exceeds its limit.
        if self.data.len() + self.ooo_bytes + payload.len() > self.max_bytes {
            return RecvOutcome::TooLarge;
        }
        self.last_serial = serial;
        self.prev_seq = seq;
        if last {
            self.last_seq = Some(seq);
            // Anything buffered beyond LAST is bogus.
            self.ooo.retain(|&s, _| s <= seq);
            self.ooo_bytes = self.ooo.values().map(Vec::len).sum();
        }
        self.unacked += 1;
        if seq == self.next_seq {
            self.data.extend_from_slice(&payload);
            self.next_seq += 1;
            while let Some(p) = self.ooo.remove(&self.next_seq) {
                self.ooo_bytes -= p.len();
                self.data.extend_from_slice(&p);
                self.next_seq += 1;
            }
            RecvOutcome::InSequence
        } else {
            self.ooo_bytes += payload.len();
            self.ooo.insert(seq, payload);
            RecvOutcome::OutOfSequence
        }
    }

    /// Build an ACK describing this queue (rx.c `rxi_SendAck`).
    pub fn build_ack(&self, reason: u8, serial: u32, trailer: AckTrailer, rwind: u32) -> AckPacket {
        let mut acks = Vec::new();
        if let Some((&hi, _)) = self.ooo.iter().next_back() {
            let span = (hi - self.next_seq + 1).min(MAX_ACK_SPAN);
            for i in 0..span {
                let s = self.next_seq + i;
                acks.push(if self.ooo.contains_key(&s) {
                    ack::ACK_TYPE_ACK
                } else {
                    ack::ACK_TYPE_NACK
                });
            }
        }
        AckPacket {
            buffer_space: rwind.min(u16::MAX as u32) as u16,
            max_skew: 0,
            first_packet: self.next_seq,
            previous_packet: self.prev_seq,
            serial,
            reason,
            acks,
            trailer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ackp(first: u32, acks: Vec<u8>) -> AckPacket {
        AckPacket {
            first_packet: first,
            acks,
            reason: ack::reason::REQUESTED,
            ..Default::default()
        }
    }

    #[test]
    fn split_empty_gives_one_packet() {
        assert_eq!(split_payload(&[], 10), vec![Vec::<u8>::new()]);
        assert_eq!(split_payload(&[1; 25], 10).len(), 3);
    }

    #[test]
    fn window_limits_and_fast_retransmit() {
        let now = Instant::now();
        let mut rtt = RttEstimator::default();
        let mut q = SendQueue::new(split_payload(&[0; 100], 1), 4, 32);
        let mut sent = vec![];
        while let Some(t) = q.next_to_send(32, true) {
            q.mark_sent(t.seq, t.seq, now, rtt.rto());
            sent.push(t.seq);
        }
        assert_eq!(sent, vec![1, 2, 3, 4]);
        // ACK 2..4 but not 1, three times -> 1 is fast-retransmitted.
        for _ in 0..3 {
            q.on_ack(now, &ackp(1, vec![0, 1, 1, 1]), &mut rtt);
        }
        let t = q.next_to_send(32, true).unwrap();
        assert_eq!(t.seq, 1);
        assert!(t.retransmit);
    }

    #[test]
    fn slow_start_grows_window() {
        let now = Instant::now();
        let mut rtt = RttEstimator::default();
        let mut q = SendQueue::new(split_payload(&[0; 100], 1), 2, 32);
        for _ in 0..2 {
            let t = q.next_to_send(32, true).unwrap();
            q.mark_sent(t.seq, t.seq, now, rtt.rto());
        }
        q.on_ack(now, &ackp(3, vec![]), &mut rtt);
        assert_eq!(q.cwind(), 4);
        q.on_rto(&mut rtt);
        assert_eq!(q.cwind(), 4, "nothing in flight, no cut");
    }

    #[test]
    fn recv_reorders_and_acks() {
        let mut r = RecvQueue::new(1 << 20);
        assert_eq!(r.insert(2, false, 2, vec![2]), RecvOutcome::OutOfSequence);
        let a = r.build_ack(ack::reason::OUT_OF_SEQUENCE, 2, AckTrailer::default(), 32);
        assert_eq!(a.first_packet, 1);
        assert_eq!(a.acks, vec![0, 1]);
        assert_eq!(r.insert(3, true, 3, vec![3]), RecvOutcome::OutOfSequence);
        assert!(!r.complete());
        assert_eq!(r.insert(1, false, 4, vec![1]), RecvOutcome::InSequence);
        assert!(r.complete());
        assert_eq!(r.insert(2, false, 5, vec![2]), RecvOutcome::Duplicate);
        assert_eq!(r.take_data(), vec![1, 2, 3]);
        assert_eq!(r.insert(9, false, 6, vec![]), RecvOutcome::ExceedsWindow);
    }
}

/// Lifecycle of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Client call: request going out and/or reply coming in.
    Client,
    /// Server call: request not complete yet.
    ServerReceiving,
    /// Server call: request delivered to the user, no reply yet.
    ServerPending,
    /// Server call: reply being sent.
    ServerReplying,
    /// Server call: reply fully acknowledged; kept to answer duplicates.
    ServerDone,
    /// Server call: aborted (by either side) or dead.
    ServerAborted(i32),
}

/// One call on a channel.
#[derive(Debug)]
pub(crate) struct Call {
    pub id: crate::endpoint::CallId,
    pub call_number: u32,
    pub phase: Phase,
    pub tx: SendQueue,
    pub rx: RecvQueue,
    pub started: Instant,
    pub last_heard: Instant,
    pub next_ping: Option<Instant>,
    pub ping_serial: u32,
    pub ping_sent_at: Option<Instant>,
    /// Client: the request, kept to retry elsewhere after BUSY.
    pub request: Vec<u8>,
    pub busy_retries: u32,
    /// Client: the first reply packet arrived (implicit ACK of the request).
    pub reply_started: bool,
}

impl Call {
    pub fn new(
        id: crate::endpoint::CallId,
        phase: Phase,
        now: Instant,
        tx: SendQueue,
        max_recv: usize,
    ) -> Self {
        Call {
            id,
            call_number: 0,
            phase,
            tx,
            rx: RecvQueue::new(max_recv),
            started: now,
            last_heard: now,
            next_ping: None,
            ping_serial: 0,
            ping_sent_at: None,
            request: Vec::new(),
            busy_retries: 0,
            reply_started: false,
        }
    }

    /// Still doing work (not a finished record kept for duplicates).
    pub fn is_active(&self) -> bool {
        matches!(
            self.phase,
            Phase::Client | Phase::ServerReceiving | Phase::ServerPending | Phase::ServerReplying
        )
    }
}
