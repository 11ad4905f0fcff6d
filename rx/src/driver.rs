//! Thin tokio driver: one UDP socket, one task running the sans-IO
//! [`Endpoint`](crate::proto::Endpoint).
//!
//! The task runs on a dedicated OS thread with its own current-thread
//! runtime, not on the application's: cache I/O (RocksDB, chunk files)
//! done by the application's tasks, blocking or not, can never keep the
//! socket from being read or timers (ACKs, retransmissions, keepalives)
//! from firing. Calls and incoming server calls cross over through
//! channels, which work between runtimes.
//!
//! The socket carries both our outgoing calls and the services we serve
//! (the AFS callback service), exactly like the OpenAFS cache manager and
//! libafscp, whose fileservers call back on the port the client used.

use crate::endpoint::{CallId, Config, ConnKey, Endpoint, Event, Stats};
use crate::error::{codes, CallError};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// Receive buffer per datagram: OpenAFS peers may send jumbograms and
/// large MTUs; 16 KiB covers what rx accepts (`RX_MAX_PACKET_SIZE`).
const RECV_BUF: usize = 16 * 1024 + 1024;
/// Datagrams handled per wakeup before transmits are flushed.
const RECV_BATCH: usize = 32;
/// Queue depth for incoming server calls.
const INCOMING_QUEUE: usize = 1024;

enum Command {
    Call {
        key: ConnKey,
        request: Vec<u8>,
        token: u64,
        reply: oneshot::Sender<Result<Vec<u8>, CallError>>,
    },
    Cancel(u64),
    Reply(CallId, Vec<u8>),
    Abort(CallId, i32),
    Shutdown,
}

/// A request for one of the served services.
#[derive(Debug)]
pub struct IncomingCall {
    /// Caller address.
    pub peer: SocketAddr,
    /// Service id.
    pub service_id: u16,
    /// Request payload.
    pub request: Vec<u8>,
    id: CallId,
    cmd: mpsc::UnboundedSender<Command>,
    answered: bool,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl IncomingCall {
    /// Send the reply.
    pub fn reply(mut self, data: Vec<u8>) {
        self.answered = true;
        let _ = self.cmd.send(Command::Reply(self.id, data));
    }

    /// Abort the call with an error code (e.g. `RXGEN_OPCODE`).
    pub fn abort(mut self, code: i32) {
        self.answered = true;
        let _ = self.cmd.send(Command::Abort(self.id, code));
    }
}

impl Drop for IncomingCall {
    /// An unanswered call is aborted so the caller does not wait for the
    /// dead time.
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.cmd.send(Command::Abort(self.id, codes::RX_USER_ABORT));
        }
    }
}

/// An Rx endpoint bound to one UDP socket.
#[derive(Debug)]
pub struct RxEndpoint {
    cmd: mpsc::UnboundedSender<Command>,
    local_addr: SocketAddr,
    stats: Arc<Mutex<Stats>>,
    next_token: AtomicU64,
}

struct CancelGuard<'a> {
    cmd: &'a mpsc::UnboundedSender<Command>,
    token: u64,
    armed: bool,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.cmd.send(Command::Cancel(self.token));
        }
    }
}

impl RxEndpoint {
    /// Bind the socket and start the endpoint's thread (named `rx-endpoint`,
    /// running its own current-thread tokio runtime). May be called from
    /// any thread, inside a runtime or not. Returns the endpoint and the
    /// stream of incoming calls for `config.served_services`. The thread
    /// ends after [`RxEndpoint::shutdown`], or once the endpoint and every
    /// unanswered [`IncomingCall`] are dropped.
    pub fn bind(
        addr: SocketAddr,
        config: Config,
    ) -> std::io::Result<(Arc<RxEndpoint>, mpsc::Receiver<IncomingCall>)> {
        let std_sock = std::net::UdpSocket::bind(addr)?;
        std_sock.set_nonblocking(true)?;
        grow_socket_buffers(&std_sock);
        let local_addr = std_sock.local_addr()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        // Register the socket with the endpoint thread's runtime.
        let socket = {
            let _guard = rt.enter();
            UdpSocket::from_std(std_sock)?
        };
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::channel(INCOMING_QUEUE);
        let stats = Arc::new(Mutex::new(Stats::default()));
        let ep = Endpoint::new(config);
        let task = Task {
            ep,
            socket,
            cmd_rx,
            weak_cmd: cmd_tx.downgrade(),
            incoming: in_tx,
            stats: stats.clone(),
            pending: BTreeMap::new(),
            tokens: HashMap::new(),
            send_errors: 0,
        };
        std::thread::Builder::new()
            .name("rx-endpoint".into())
            .spawn(move || rt.block_on(task.run()))?;
        Ok((
            Arc::new(RxEndpoint {
                cmd: cmd_tx,
                local_addr,
                stats,
                next_token: AtomicU64::new(1),
            }),
            in_rx,
        ))
    }

    /// Make a call and wait for the whole reply. Dropping the future cancels
    /// the call (an ABORT goes to the server).
    pub async fn call(&self, key: ConnKey, request: Vec<u8>) -> Result<Vec<u8>, CallError> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Call {
                key,
                request,
                token,
                reply: tx,
            })
            .map_err(|_| CallError::Shutdown)?;
        let mut guard = CancelGuard {
            cmd: &self.cmd,
            token,
            armed: true,
        };
        let r = rx.await;
        guard.armed = false;
        r.unwrap_or(Err(CallError::Shutdown))
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counters (updated by the task after every step).
    pub fn stats(&self) -> Stats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stop the task; pending calls fail with [`CallError::Shutdown`].
    pub fn shutdown(&self) {
        let _ = self.cmd.send(Command::Shutdown);
    }
}

type Pending = BTreeMap<CallId, (u64, oneshot::Sender<Result<Vec<u8>, CallError>>)>;

struct Task {
    ep: Endpoint,
    socket: UdpSocket,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    weak_cmd: mpsc::WeakUnboundedSender<Command>,
    incoming: mpsc::Sender<IncomingCall>,
    stats: Arc<Mutex<Stats>>,
    pending: Pending,
    tokens: HashMap<u64, CallId>,
    send_errors: u64,
}

impl Task {
    async fn run(mut self) {
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            self.flush().await;
            let deadline = self.ep.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        let now = Instant::now();
                        self.ep.handle_datagram(now, from, &buf[..n]);
                        // Drain what else is queued before sending, so ACKs
                        // describe a whole burst.
                        for _ in 0..RECV_BATCH {
                            match self.socket.try_recv_from(&mut buf) {
                                Ok((n, from)) => self.ep.handle_datagram(now, from, &buf[..n]),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(e) => {
                        // ICMP errors may surface here; they must not kill
                        // the endpoint. Calls fail at dead time instead.
                        debug!(error = %e, "recv error");
                        tokio::task::yield_now().await;
                    }
                },
                _ = sleep => self.ep.handle_timeout(Instant::now()),
                cmd = self.cmd_rx.recv() => match cmd {
                    None | Some(Command::Shutdown) => break,
                    Some(c) => self.command(c),
                },
            }
        }
        debug!("rx endpoint task stopped");
        for (_, (_, tx)) in std::mem::take(&mut self.pending) {
            let _ = tx.send(Err(CallError::Shutdown));
        }
    }

    fn command(&mut self, c: Command) {
        let now = Instant::now();
        match c {
            Command::Call {
                key,
                request,
                token,
                reply,
            } => {
                let id = self.ep.start_call(now, key, request);
                self.pending.insert(id, (token, reply));
                self.tokens.insert(token, id);
            }
            Command::Cancel(token) => {
                if let Some(id) = self.tokens.remove(&token) {
                    self.pending.remove(&id);
                    self.ep.cancel_call(id);
                }
            }
            Command::Reply(id, data) => self.ep.reply(id, now, data),
            Command::Abort(id, code) => self.ep.abort_call(id, now, code),
            Command::Shutdown => {}
        }
    }

    async fn flush(&mut self) {
        while let Some(t) = self.ep.poll_transmit() {
            if let Err(e) = self.socket.send_to(&t.payload, t.dest).await {
                // ENETUNREACH, EPERM, ...: keep going; the call retries on
                // its RTO (with backoff) and fails at dead time, as the
                // OpenAFS cache manager does.
                self.send_errors += 1;
                if self.send_errors.is_power_of_two() {
                    warn!(dest = %t.dest, error = %e, count = self.send_errors, "send failed");
                }
            }
        }
        while let Some(ev) = self.ep.poll_event() {
            match ev {
                Event::CallDone { id, result } => {
                    if let Some((token, tx)) = self.pending.remove(&id) {
                        self.tokens.remove(&token);
                        let _ = tx.send(result);
                    }
                }
                Event::Incoming {
                    id,
                    peer,
                    service_id,
                    request,
                } => {
                    let Some(cmd) = self.weak_cmd.upgrade() else {
                        continue;
                    };
                    let call = IncomingCall {
                        peer,
                        service_id,
                        request,
                        id,
                        cmd,
                        answered: false,
                    };
                    if let Err(e) = self.incoming.try_send(call) {
                        // Queue full or receiver gone: the IncomingCall's
                        // Drop aborts the call.
                        debug!("incoming call dropped: {e}");
                    }
                }
            }
        }
        if let Ok(mut s) = self.stats.lock() {
            *s = self.ep.stats();
        }
    }
}

/// Socket buffer size asked for: several calls' windows of 1444-byte
/// packets arrive back to back, and a datagram the kernel drops for want of
/// buffer costs a retransmission timeout at the server (about 200 ms).
const SOCKET_BUFFER: libc::c_int = 8 << 20;

/// Grows the socket's receive and send buffers. As root the FORCE variants
/// exceed `net.core.rmem_max`; otherwise the kernel caps the request. Best
/// effort: a small buffer costs speed, not correctness.
fn grow_socket_buffers(sock: &std::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        let v = SOCKET_BUFFER;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let p = (&v as *const libc::c_int).cast();
        // SAFETY: setsockopt with a pointer to a live c_int and its size.
        let ok = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, force, p, len) } == 0
            || unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, plain, p, len) } == 0;
        if !ok {
            tracing::debug!(
                "could not grow socket buffer: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}
