//! What keeps both listeners standing under floods, slow clients, full disks and hostile
//! peers — the enforcement of the `[limits]` section ([`crate::config::Limits`]; the
//! README's "Limits" table gives every limit, its default and why):
//!
//! - [`accept_loop`]: a connection cap (a semaphore taken *before* `accept`, so a full
//!   gateway leaves new connections in the kernel's backlog instead of taking
//!   descriptors), an optional handshake rate (a token bucket, also before `accept`), and
//!   a short back-off on accept errors (EMFILE) that is logged once, not per attempt.
//! - [`Gate`]: the mTLS listener's unidentified connections — a smaller cap within the
//!   connection cap, the oldest closed when it is full, and a cap per source address.
//! - [`serve_http`]: hyper with its header read timeout switched on (it needs a timer),
//!   plus an idle timeout and a total request time limit watched per connection.
//! - [`Refusals`]: refusals of clients that could not be identified, audited as one
//!   record for the first of a kind per source address and interval and one summary
//!   with the count for the rest, so that a flood writes a bounded number of records.
//! - [`PeerSlots`]: concurrent requests per configured peer or auditor.
//! - [`DiskGuard`]: the free-space reserve on the store's filesystem.
//! - [`check_descriptors`]: every cap below the process's file-descriptor limit.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::{refusal, Reply};
use crate::chain::{Actor, Event, Outcome};
use crate::config::Limits;
use crate::error::{Code, Refusal};
use crate::local::Local;
use crate::store::Store;

/// How long the accept loop pauses after an accept error (EMFILE, ENFILE, ENOBUFS).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Most distinct (source address, reason) pairs [`Refusals`] tracks per interval; the
/// rest share one summary.
const MAX_SUMMARY_KEYS: usize = 64;

/// What each server is handed by the gateway: the limits, and the disk reserve's guard
/// (one for both servers).
#[derive(Clone)]
pub struct Bounds {
    pub limits: Limits,
    pub disk: DiskGuard,
}

impl Bounds {
    pub fn new(limits: &Limits, store_dir: PathBuf) -> Bounds {
        Bounds {
            limits: limits.clone(),
            disk: DiskGuard::new(store_dir, limits),
        }
    }
}

// ---------------------------------------------------------------------------------
// File descriptors

/// Checks that every connection cap plus the reserve fits below the process's open-file
/// limit; raises the soft limit up to the hard one if that is what it takes. Called
/// once when a gateway opens (for this gateway alone).
pub fn check_descriptors(limits: &Limits) -> Result<(), String> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let needed = limits.descriptors_needed();
    let now = getrlimit(Resource::Nofile);
    let current = now.current.unwrap_or(u64::MAX);
    if current >= needed {
        return Ok(());
    }
    let maximum = now.maximum.unwrap_or(u64::MAX);
    if maximum >= needed {
        let raised = Rlimit {
            current: Some(needed),
            maximum: now.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            tracing::info!(
                from = current,
                to = needed,
                "raised the open-file limit to fit the connection caps"
            );
            return Ok(());
        }
    }
    Err(format!(
        "max_connections ({}) + local_api_max_connections ({}) + fd_reserve ({}) need {needed} file descriptors, but this process may open {current} (hard limit {maximum}): lower the caps or raise the limit (ulimit -n, systemd LimitNOFILE=)",
        limits.max_connections, limits.local_api_max_connections, limits.fd_reserve
    ))
}

// ---------------------------------------------------------------------------------
// Accepting

/// A token bucket: `rate` per second on average, `burst` at once.
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(rate: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            rate: f64::from(rate),
            burst: f64::from(burst),
            state: Mutex::new((f64::from(burst), Instant::now())),
        }
    }

    /// Takes a token, or says how long until one is there.
    fn try_take(&self) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            Ok(())
        } else {
            *state = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
        }
    }

    /// Waits for a token and takes it.
    pub async fn take(&self) {
        while let Err(wait) = self.try_take() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// What an accept loop counts: connections accepted, and accepts that failed (each one
/// followed by [`ACCEPT_BACKOFF`], so at most ten a second).
#[derive(Debug, Default, Clone)]
pub struct AcceptCounts {
    pub accepted: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
}

/// Accepts connections until `stop`, at most `cap` open at once (the permit goes with
/// the connection) and, with a `rate`, at most that many new ones per second; hands each
/// to `serve` as a task of its own, and at `stop` waits for those tasks to finish.
pub async fn accept_loop<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    cap: Arc<Semaphore>,
    rate: Option<Arc<TokenBucket>>,
    counts: AcceptCounts,
    mut stop: watch::Receiver<bool>,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    let mut failing: u64 = 0;
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = cap.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        if let Some(bucket) = &rate {
            tokio::select! {
                _ = bucket.take() => {}
                _ = stop.changed() => break,
            }
        }
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        match accepted {
            Ok((tcp, remote)) => {
                if failing > 0 {
                    tracing::info!(
                        listener = name,
                        failed = failing,
                        "accepting connections again"
                    );
                    failing = 0;
                }
                counts.accepted.fetch_add(1, Ordering::Relaxed);
                let _ = tcp.set_nodelay(true);
                connections.spawn(serve(tcp, remote, permit));
            }
            Err(e) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                if failing == 0 {
                    tracing::warn!(
                        listener = name,
                        error = %e,
                        backoff_ms = ACCEPT_BACKOFF.as_millis() as u64,
                        "accept failed; backing off (logged once until an accept succeeds)"
                    );
                }
                failing += 1;
                drop(permit);
                tokio::select! {
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    _ = stop.changed() => break,
                }
            }
        }
    }
    while connections.join_next().await.is_some() {}
}

// ---------------------------------------------------------------------------------
// Unidentified connections

/// The mTLS listener's unidentified connections: capped in all and per source address;
/// when full, the oldest is closed to make room.
pub struct Gate {
    max: usize,
    per_source: usize,
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    next: u64,
    /// Oldest first: id → source address, and the sender whose drop closes it.
    open: BTreeMap<u64, (IpAddr, oneshot::Sender<()>)>,
    by_source: HashMap<IpAddr, usize>,
}

impl GateState {
    fn forget(&mut self, id: u64) {
        if let Some((ip, _)) = self.open.remove(&id) {
            if let Some(n) = self.by_source.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.by_source.remove(&ip);
                }
            }
        }
    }
}

/// One unidentified connection's place at the [`Gate`]; dropping it (once the caller is
/// identified, or the connection ends) gives the place back.
pub struct Unidentified {
    gate: Arc<Gate>,
    id: u64,
    closed: oneshot::Receiver<()>,
}

impl Unidentified {
    /// Completes when the gate closed this connection to make room for a newer one.
    pub async fn evicted(&mut self) {
        let _ = (&mut self.closed).await;
    }
}

impl Drop for Unidentified {
    fn drop(&mut self) {
        let mut state = self.gate.state.lock().unwrap_or_else(|p| p.into_inner());
        state.forget(self.id);
    }
}

/// Why the gate turned a connection away.
pub const TOO_MANY_FROM_SOURCE: &str =
    "connection refused: too many unidentified connections from this address";
/// Why an unidentified connection was closed early.
pub const EVICTED: &str =
    "connection closed: the unidentified connections were full and this was the oldest";

impl Gate {
    pub fn new(limits: &Limits) -> Arc<Gate> {
        Arc::new(Gate {
            max: limits.max_unidentified,
            per_source: limits.max_unidentified_per_source,
            state: Mutex::new(GateState::default()),
        })
    }

    /// A place for a new connection from `ip`, closing the oldest unidentified one if
    /// all places are taken; `Err` if `ip` has its share already.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Unidentified, &'static str> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.by_source.get(&ip).copied().unwrap_or(0) >= self.per_source {
            return Err(TOO_MANY_FROM_SOURCE);
        }
        while state.open.len() >= self.max {
            let Some((&oldest, _)) = state.open.iter().next() else {
                break;
            };
            // Dropping its sender wakes the connection's `evicted()`.
            state.forget(oldest);
        }
        let id = state.next;
        state.next += 1;
        let (tx, rx) = oneshot::channel();
        state.open.insert(id, (ip, tx));
        *state.by_source.entry(ip).or_default() += 1;
        Ok(Unidentified {
            gate: self.clone(),
            id,
            closed: rx,
        })
    }

    /// How many unidentified connections are open.
    pub fn open(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .open
            .len()
    }
}

// ---------------------------------------------------------------------------------
// Serving HTTP on a connection

/// What the watchdog of one connection sees: when bytes last moved, and whether a
/// request is in progress since when (milliseconds since the connection opened).
pub struct ConnState {
    opened: Instant,
    last_activity: AtomicU64,
    in_flight: AtomicUsize,
    request_started: AtomicU64,
}

impl ConnState {
    pub fn new() -> Arc<ConnState> {
        Arc::new(ConnState {
            opened: Instant::now(),
            last_activity: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            request_started: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_activity.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Marks a request in progress until the returned guard is dropped.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.request_started.store(self.now_ms(), Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Completes with the reason once the connection should be closed: idle too long
    /// with no request in progress, or a request past its time limit (plus a second for
    /// its own 408 answer to go out).
    async fn watch(&self, idle: Duration, request: Duration) -> &'static str {
        let idle_ms = idle.as_millis() as u64;
        let request_ms = request.as_millis() as u64 + 1_000;
        loop {
            let now = self.now_ms();
            let (deadline, why) = if self.in_flight.load(Ordering::SeqCst) > 0 {
                (
                    self.request_started.load(Ordering::Relaxed) + request_ms,
                    "request time limit",
                )
            } else {
                (
                    self.last_activity.load(Ordering::Relaxed) + idle_ms,
                    "idle timeout",
                )
            };
            if now >= deadline {
                return why;
            }
            let wait = (deadline - now).min(idle_ms.max(10));
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }
}

struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A stream that tells its [`ConnState`] whenever bytes move.
pub struct Tracked<S> {
    inner: S,
    state: Arc<ConnState>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, state: Arc<ConnState>) -> Tracked<S> {
        state.touch();
        Tracked { inner, state }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.state.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves HTTP/1.1 on `io` with `handle` until the client is done, `stop` (graceful),
/// or a limit closes it: hyper's header read timeout (from the first byte of a request
/// head; hyper enforces it only with a timer), the idle timeout, and the total request
/// time limit (answered 408 `request_timeout`, then the connection is closed).
pub async fn serve_http<S, H, Fut>(
    io: S,
    limits: &Limits,
    mut stop: watch::Receiver<bool>,
    handle: H,
) -> Option<&'static str>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let state = ConnState::new();
    let io = Tracked::new(io, state.clone());
    let handle = Arc::new(handle);
    let request_timeout = limits.request_timeout;
    let service_state = state.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let in_flight = service_state.begin();
        let answer = handle(req);
        async move {
            let _in_flight = in_flight;
            let reply = match tokio::time::timeout(request_timeout, answer).await {
                Ok(reply) => reply,
                Err(_) => close(refusal(&Refusal::new(
                    Code::RequestTimeout,
                    format!(
                        "the request took longer than {} ms",
                        request_timeout.as_millis()
                    ),
                ))),
            };
            Ok::<_, std::convert::Infallible>(reply)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => None,
        why = state.watch(limits.idle_timeout, limits.request_timeout) => {
            tracing::debug!(reason = why, "closing a connection");
            Some(why)
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.request_timeout, conn).await;
            None
        }
    }
}

/// `reply`, telling the client that the connection closes after it.
pub fn close(mut reply: Reply) -> Reply {
    reply.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    reply
}

/// Reads a request body of at most `limit` bytes within `timeout`. A `Content-Length`
/// above the limit is refused before anything is read; past the limit or the time,
/// reading stops.
pub async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Refusal> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Refusal::too_large(limit));
    }
    match tokio::time::timeout(timeout, super::read_body_limited(req.into_body(), limit)).await {
        Ok(body) => body,
        Err(_) => Err(Refusal::new(
            Code::RequestTimeout,
            format!(
                "the request body did not arrive within {} ms",
                timeout.as_millis()
            ),
        )),
    }
}

// ---------------------------------------------------------------------------------
// Per-peer fairness

/// A bounded number of requests in progress per configured peer or auditor (by its
/// organisation identifier).
pub struct PeerSlots {
    per_peer: usize,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl PeerSlots {
    pub fn new(limits: &Limits) -> PeerSlots {
        PeerSlots {
            per_peer: limits.max_requests_per_peer,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one request of `org`, or a 429 refusal if it has all of its slots.
    /// Only called for configured organisations, so the map stays small.
    pub fn take(&self, org: &str) -> Result<OwnedSemaphorePermit, Refusal> {
        let semaphore = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots
                .entry(org.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_peer)))
                .clone()
        };
        semaphore.try_acquire_owned().map_err(|_| {
            Refusal::new(
                Code::TooManyRequests,
                format!(
                    "at most {} requests of one organisation at once; retry later",
                    self.per_peer
                ),
            )
        })
    }
}

// ---------------------------------------------------------------------------------
// Bounded audit of unidentified refusals

/// Audits refusals of clients that could not be identified (no certificate, a failed
/// or timed-out handshake, a bare connect, a connection the limits turned away): the
/// first refusal per source address and reason in an interval gets a record of its
/// own at once, the rest of that interval one summary record with their count. So a
/// flood from one address writes at most two records per reason and interval, and from
/// many addresses at most `2 × 64 + 1` per interval.
///
/// A certificate that the TLS layer refused but that a configured issuing CA did issue
/// (revoked, expired, under a stale revocation list: see [`Refusals::refuse_identified`])
/// gets a record of its own naming its organisation, serial and the reason, once per
/// certificate and reason in an interval; repeats of that same refusal within the
/// interval are counted in one summary naming the same certificate. rustls checks the
/// certificate before the client proves it holds the key, so anyone holding a copy of a
/// revoked certificate could replay it: without this, each replay would be a record.
/// Other refusals of an identified certificate (after the handshake) are audited where
/// they happen.
pub struct Refusals {
    store: Store,
    local: Arc<Local>,
    interval: Duration,
    counts: Mutex<HashMap<(IpAddr, String), u64>>,
    identified: Mutex<HashMap<IdentifiedRefusal, u64>>,
}

/// One identified certificate's refusal, as [`Refusals`] counts it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdentifiedRefusal {
    /// The organisation identifier the certificate names (by its issuing CA's rule).
    pub organisation: String,
    /// The certificate's serial number.
    pub serial: String,
    pub reason: String,
}

impl IdentifiedRefusal {
    /// The audit record of this refusal; `remote` is the address of its first
    /// connection in the interval (later ones are counted in the summary).
    fn event(
        &self,
        local: &Local,
        reason: String,
        remote: Option<SocketAddr>,
    ) -> crate::chain::AuditEvent {
        local
            .event(
                Event::CertificateRefused,
                Outcome::Refused,
                Actor::Peer {
                    organisation: self.organisation.clone(),
                    certificate_serial: self.serial.clone(),
                    remote: remote.map(|r| r.to_string()),
                },
            )
            .peer(&self.organisation)
            .reason(reason)
    }
}

/// The key that refusals share once [`MAX_SUMMARY_KEYS`] keys are taken.
const OTHERS: &str =
    "refusals of unidentified clients from further addresses or for further reasons";

impl Refusals {
    pub fn new(store: Store, local: Arc<Local>, limits: &Limits) -> Arc<Refusals> {
        Arc::new(Refusals {
            store,
            local,
            interval: limits.audit_summary_interval,
            counts: Mutex::new(HashMap::new()),
            identified: Mutex::new(HashMap::new()),
        })
    }

    /// Records the refusal of a certificate that names an organisation (issued by a
    /// configured issuing CA, signature checked) from `remote`: its own audit record
    /// at the first refusal of this certificate for this reason in the interval.
    pub async fn refuse_identified(&self, remote: SocketAddr, refused: IdentifiedRefusal) {
        tracing::warn!(
            remote = %remote,
            organisation = %refused.organisation,
            certificate_serial = %refused.serial,
            reason = %refused.reason,
            "a certificate was refused in the TLS handshake"
        );
        let first = {
            let mut counts = self.identified.lock().unwrap_or_else(|p| p.into_inner());
            let full = counts.len() >= MAX_SUMMARY_KEYS;
            match counts.get_mut(&refused) {
                Some(n) => {
                    *n += 1;
                    Some(false)
                }
                // More distinct certificates in one interval than a real network has
                // broken ones: counted with the unidentified rest.
                None if full => None,
                None => {
                    counts.insert(refused.clone(), 0);
                    Some(true)
                }
            }
        };
        let Some(first) = first else {
            return self.refuse(remote, &refused.reason).await;
        };
        if first {
            let reason = format!(
                "{} (organisation {}, certificate serial {})",
                refused.reason, refused.organisation, refused.serial
            );
            let event = refused.event(&self.local, reason, Some(remote));
            if let Err(e) = self.store.commit_audit(vec![event]).await {
                tracing::error!(error = %e, "could not audit a refused certificate");
            }
        }
    }

    /// Records one refusal of an unidentified client from `remote` for `reason`.
    pub async fn refuse(&self, remote: SocketAddr, reason: &str) {
        tracing::warn!(remote = %remote, reason, "unidentified client refused");
        let first = {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            let mut key = (remote.ip(), reason.to_string());
            if !counts.contains_key(&key) && counts.len() >= MAX_SUMMARY_KEYS {
                key = (IpAddr::from([0, 0, 0, 0]), OTHERS.to_string());
            }
            match counts.get_mut(&key) {
                Some(n) => {
                    *n += 1;
                    false
                }
                None => {
                    counts.insert(key, 0);
                    true
                }
            }
        };
        if first {
            let event = self
                .local
                .event(
                    Event::CertificateRefused,
                    Outcome::Refused,
                    Actor::Unknown {
                        remote: remote.to_string(),
                    },
                )
                .reason(reason.to_string());
            if let Err(e) = self.store.commit_audit(vec![event]).await {
                tracing::error!(error = %e, "could not audit a refused client");
            }
        }
    }

    /// Writes one summary record per source address and reason with refusals not yet
    /// recorded, and starts a new interval.
    pub async fn flush(&self) {
        let counts = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()));
        let identified =
            std::mem::take(&mut *self.identified.lock().unwrap_or_else(|p| p.into_inner()));
        let secs = self.interval.as_secs_f64();
        let repeated = identified
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| {
                let reason = format!(
                "{} (organisation {}, certificate serial {}; summary: {n} more within {secs} s)",
                r.reason, r.organisation, r.serial
            );
                r.event(&self.local, reason, None)
            });
        let events: Vec<_> = counts
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|((ip, reason), n)| {
                let from = if reason == OTHERS {
                    "various addresses".to_string()
                } else {
                    ip.to_string()
                };
                self.local
                    .event(
                        Event::CertificateRefused,
                        Outcome::Refused,
                        Actor::Unknown {
                            remote: from.clone(),
                        },
                    )
                    .reason(format!(
                        "{reason} (summary: {n} more from {from} within {secs} s)"
                    ))
            })
            .chain(repeated)
            .collect();
        if events.is_empty() {
            return;
        }
        if let Err(e) = self.store.commit_audit(events).await {
            tracing::error!(error = %e, "could not audit a summary of refused clients");
        }
    }

    /// Flushes every interval until `stop`. The last flush is the listener's, once its
    /// connection tasks have finished (see `Listener::serve`).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => self.flush().await,
                _ = stop.changed() => break,
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Disk

/// The free-space reserve on the store's filesystem: below it, new submissions are
/// refused with 503 `disk_full`, so that what is already accepted can still be
/// delivered, acknowledged and audited. Read with `statvfs` (through rustix, safe
/// code) at every submission: one system call, far cheaper than the commit it guards.
#[derive(Clone)]
pub struct DiskGuard {
    dir: PathBuf,
    reserve: u64,
    low: Arc<AtomicBool>,
}

impl DiskGuard {
    pub fn new(dir: PathBuf, limits: &Limits) -> DiskGuard {
        DiskGuard {
            dir,
            reserve: limits.disk_reserve_bytes,
            low: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Bytes free for this process on the store's filesystem.
    pub fn free_bytes(&self) -> io::Result<u64> {
        // The tests' hook (debug builds only): the free space is read from a file, so
        // that a test can run out of space and get it back without filling a disk.
        #[cfg(debug_assertions)]
        if let Some(path) = std::env::var_os("WIJKPOORT_FAULT_FREE_BYTES_FILE") {
            let text = std::fs::read_to_string(path)?;
            return text
                .trim()
                .parse()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e}")));
        }
        let s = rustix::fs::statvfs(&self.dir)?;
        Ok(s.f_bavail.saturating_mul(s.f_frsize))
    }

    /// Whether the reserve is reached (logged when that changes).
    pub fn is_low(&self) -> bool {
        if self.reserve == 0 {
            return false;
        }
        let low = match self.free_bytes() {
            Ok(free) => free < self.reserve,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the free space; not refusing");
                false
            }
        };
        if self.low.swap(low, Ordering::Relaxed) != low {
            if low {
                tracing::error!(
                    reserve_mb = self.reserve / (1024 * 1024),
                    store = %self.dir.display(),
                    "the store's filesystem is down to its free-space reserve; refusing new submissions"
                );
            } else {
                tracing::info!("free space above the reserve again; accepting submissions");
            }
        }
        low
    }

    /// `Err(disk_full)` if the reserve is reached.
    pub fn check(&self) -> Result<(), Refusal> {
        if self.is_low() {
            Err(Refusal::new(
                Code::DiskFull,
                format!(
                    "the gateway's disk is down to its reserve of {} MiB; nothing new is accepted until space is freed (reads still work), try again later",
                    self.reserve / (1024 * 1024)
                ),
            ))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_source: usize) -> Limits {
        Limits {
            max_unidentified: max,
            max_unidentified_per_source: per_source,
            ..Limits::default()
        }
    }

    #[tokio::test]
    async fn a_full_gate_closes_the_oldest_unidentified_connection() {
        let gate = Gate::new(&limits(2, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut first = gate.admit(a).unwrap();
        let _second = gate.admit(b).unwrap();
        let _third = gate.admit(b).unwrap();
        tokio::time::timeout(Duration::from_secs(1), first.evicted())
            .await
            .expect("the oldest is closed");
        assert_eq!(gate.open(), 2);
        assert_eq!(gate.admit(b).err(), Some(TOO_MANY_FROM_SOURCE));
        drop(first);
        assert_eq!(gate.open(), 2, "an evicted place is not given back twice");
    }

    #[test]
    fn a_peer_gets_a_bounded_number_of_requests_at_once() {
        let slots = PeerSlots::new(&Limits {
            max_requests_per_peer: 2,
            ..Limits::default()
        });
        let a = slots.take("00000001").unwrap();
        let _b = slots.take("00000001").unwrap();
        assert_eq!(
            slots.take("00000001").unwrap_err().code,
            Code::TooManyRequests
        );
        assert!(
            slots.take("00000002").is_ok(),
            "another peer has its own slots"
        );
        drop(a);
        assert!(slots.take("00000001").is_ok());
    }

    #[test]
    fn the_token_bucket_allows_its_burst_then_its_rate() {
        let bucket = TokenBucket::new(10, 3);
        for _ in 0..3 {
            assert!(bucket.try_take().is_ok());
        }
        let wait = bucket.try_take().unwrap_err();
        assert!(wait <= Duration::from_millis(101), "{wait:?}");
    }

    #[test]
    fn statvfs_reads_the_free_space_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let guard = DiskGuard::new(dir.path().to_path_buf(), &Limits::default());
        if std::env::var_os("WIJKPOORT_FAULT_FREE_BYTES_FILE").is_none() {
            assert!(guard.free_bytes().unwrap() > 0);
        }
        let none = DiskGuard::new(
            dir.path().to_path_buf(),
            &Limits {
                disk_reserve_bytes: u64::MAX,
                ..Limits::default()
            },
        );
        assert_eq!(none.check().unwrap_err().code, Code::DiskFull);
    }

    #[test]
    fn the_default_caps_fit_this_process() {
        check_descriptors(&Limits::default()).unwrap();
    }
}
