//! Deterministic in-process network for `rx::proto::Endpoint`s: a fake
//! clock, seeded loss, duplication and reordering (random per-packet delay).

#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rx::proto::{CallError, CallId, Config, Endpoint, Event};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the simulated server application does with a request.
pub enum Responder {
    /// Reply with f(request).
    Reply(fn(&[u8]) -> Vec<u8>),
    /// Abort with a code.
    Abort(i32),
    /// Leave it to the test.
    Manual,
}

pub struct Node {
    pub addr: SocketAddr,
    pub ep: Endpoint,
    pub responder: Responder,
    /// Incoming events seen: (id, request).
    pub incoming: Vec<(CallId, Vec<u8>)>,
    pub done: BTreeMap<CallId, (Instant, Result<Vec<u8>, CallError>)>,
}

/// A datagram in flight: (delivery time, tie-break, destination node, source, bytes).
type InFlight = Reverse<(Instant, u64, usize, SocketAddr, Vec<u8>)>;

pub struct Net {
    pub start: Instant,
    pub now: Instant,
    pub nodes: Vec<Node>,
    queue: BinaryHeap<InFlight>,
    seq: u64,
    rng: StdRng,
    pub loss: f64,
    pub dup: f64,
    pub latency: Duration,
    pub jitter: Duration,
    /// Datagrams to these addresses vanish.
    pub blackhole: BTreeSet<SocketAddr>,
    /// Every datagram handed to the network: (time, from, to, bytes).
    pub wire: Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub fn config(epoch: u32, served: &[u16]) -> Config {
    Config {
        epoch,
        served_services: served.to_vec(),
        // The simulations move requests of any size through service 1.
        max_request_bytes: Vec::new(),
        ..Config::default()
    }
}

impl Net {
    pub fn new(seed: u64) -> Net {
        let now = Instant::now();
        Net {
            start: now,
            now,
            nodes: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            rng: StdRng::seed_from_u64(seed),
            loss: 0.0,
            dup: 0.0,
            latency: Duration::from_millis(5),
            jitter: Duration::ZERO,
            blackhole: BTreeSet::new(),
            wire: Vec::new(),
        }
    }

    pub fn add(&mut self, port: u16, config: Config, responder: Responder) -> usize {
        self.nodes.push(Node {
            addr: addr(port),
            ep: Endpoint::new(config),
            responder,
            incoming: Vec::new(),
            done: BTreeMap::new(),
        });
        self.nodes.len() - 1
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn index_of(&self, a: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == a)
    }

    /// Move transmits into the network and process events.
    fn pump(&mut self) {
        loop {
            let mut progress = false;
            for i in 0..self.nodes.len() {
                while let Some(t) = self.nodes[i].ep.poll_transmit() {
                    progress = true;
                    let from = self.nodes[i].addr;
                    self.wire.push((self.now, from, t.dest, t.payload.clone()));
                    if self.blackhole.contains(&t.dest) {
                        continue;
                    }
                    let Some(di) = self.index_of(t.dest) else {
                        continue;
                    };
                    let copies = if self.rng.gen_bool(self.dup) { 2 } else { 1 };
                    for _ in 0..copies {
                        if self.rng.gen_bool(self.loss) {
                            continue;
                        }
                        let j = if self.jitter.is_zero() {
                            Duration::ZERO
                        } else {
                            self.jitter.mul_f64(self.rng.gen::<f64>())
                        };
                        self.seq += 1;
                        let at = self.now + self.latency + j;
                        self.queue
                            .push(Reverse((at, self.seq, di, from, t.payload.clone())));
                    }
                }
                while let Some(ev) = self.nodes[i].ep.poll_event() {
                    progress = true;
                    let now = self.now;
                    let node = &mut self.nodes[i];
                    match ev {
                        Event::CallDone { id, result } => {
                            assert!(
                                node.done.insert(id, (now, result)).is_none(),
                                "CallDone reported twice for {id:?}"
                            );
                        }
                        Event::Incoming { id, request, .. } => {
                            node.incoming.push((id, request.clone()));
                            match node.responder {
                                Responder::Reply(f) => node.ep.reply(id, now, f(&request)),
                                Responder::Abort(code) => node.ep.abort_call(id, now, code),
                                Responder::Manual => {}
                            }
                        }
                    }
                }
            }
            if !progress {
                break;
            }
        }
    }

    /// Advance to the next event (delivery or timer). Returns false when
    /// nothing is left to do.
    pub fn step(&mut self) -> bool {
        self.step_capped(None)
    }

    /// Like [`Net::step`] but never advances the clock past `cap`.
    pub fn step_capped(&mut self, cap: Option<Instant>) -> bool {
        self.pump();
        let mut next = self.queue.peek().map(|Reverse(x)| x.0);
        for n in &self.nodes {
            if let Some(t) = n.ep.poll_timeout() {
                next = Some(next.map_or(t, |x: Instant| x.min(t)));
            }
        }
        let Some(mut next) = next else {
            return false;
        };
        if let Some(c) = cap {
            next = next.min(c);
        }
        if next > self.now {
            self.now = next;
        }
        while self.queue.peek().is_some_and(|Reverse(x)| x.0 <= self.now) {
            let Some(Reverse((_, _, di, from, data))) = self.queue.pop() else {
                break;
            };
            let now = self.now;
            self.nodes[di].ep.handle_datagram(now, from, &data);
        }
        for n in &mut self.nodes {
            if n.ep.poll_timeout().is_some_and(|t| t <= self.now) {
                n.ep.handle_timeout(self.now);
            }
        }
        self.pump();
        true
    }

    /// Run until `cond` holds or `limit` of simulated time passes.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&Net) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            if cond(self) {
                return true;
            }
            if self.now >= end || !self.step() {
                return cond(self);
            }
        }
    }

    /// Run for a fixed simulated duration.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            if !self.step_capped(Some(end)) {
                self.now = end;
                break;
            }
        }
    }
}

/// Deterministic pseudo-random payload.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut r = StdRng::seed_from_u64(seed);
    (0..len).map(|_| r.gen()).collect()
}

/// The simulated server's transformation: reversed request plus a marker.
pub fn echo_reversed(req: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = req.iter().rev().copied().collect();
    v.extend_from_slice(b"!");
    v
}
