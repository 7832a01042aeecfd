//! A fault-injection TCP proxy between a client and the test database (feature `testing`).
//!
//! [`Proxy::start`] listens on `127.0.0.1` and forwards every connection to the server of a
//! connection URL: a Unix socket (`host=/dir`, as the throwaway cluster of
//! [`TestDatabase`](super::TestDatabase) listens) or a TCP address. [`Proxy::url`] is a URL for
//! the same user and database through the proxy. From the test, at any time:
//!
//! - [`stall`](Proxy::stall) holds every byte in one or both directions, on existing and new
//!   connections, until [`release`](Proxy::release);
//! - [`cut_all`](Proxy::cut_all) cuts every open connection now, and
//!   [`cut_where`](Proxy::cut_where) those a test picks (say, by `application_name`);
//! - [`arm`](Proxy::arm) installs a [`Rule`] that cuts a connection after a number of bytes
//!   or protocol messages in one direction, or when the client sends a message matching a
//!   predicate (right after it, or at the end of its exchange: the next `Sync`, so that a
//!   statement and its implicit commit reach the server but no reply reaches the client);
//! - [`refuse_new`](Proxy::refuse_new) closes new connections as soon as they are accepted;
//! - [`connections`](Proxy::connections) and [`stats`](Proxy::stats) count bytes, messages,
//!   connections, cuts and refusals.
//!
//! Rules see each message as it is read from its sender; a stall then holds what is ready to
//! be sent.
//!
//! The proxy parses the framing of the frontend and backend protocols (the startup message
//! has no type byte; every later message is a type byte and a big-endian `i32` length that
//! counts itself), and forwards whole messages only, so a cut between messages leaves no
//! half message behind, except a byte-count cut, which may stop in the middle of one. After a
//! TLS handshake starts the bytes are opaque: they are forwarded and counted as bytes only.
//!
//! A cut closes the client's side at once and drops whatever the server sends from then on;
//! the server's side is half-closed and drained, so the server still reads and runs what was
//! forwarded before the cut, as it would when a network drops a reply. The proxy never
//! panics: I/O errors end the connection concerned and are logged through `tracing`.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::config::Host;

/// The startup codes of the requests sent before (or instead of) a startup message.
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
/// The largest message the proxy accepts; PostgreSQL's own limit is 1 GB.
const MAX_MESSAGE: usize = 1 << 30;

/// Why the proxy cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The upstream URL cannot be parsed.
    #[error("invalid upstream URL: {0}")]
    InvalidUrl(#[source] tokio_postgres::Error),
    /// The upstream URL names no host the proxy can reach.
    #[error("the upstream URL names no host: give `host=/socket/dir` or a TCP host")]
    NoHost,
    /// The listening socket cannot be opened.
    #[error("cannot listen on 127.0.0.1: {0}")]
    Listen(#[source] std::io::Error),
    /// No test database.
    #[error(transparent)]
    Database(#[from] super::TestDatabaseError),
}

/// A direction of traffic through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client to the server (frontend messages).
    ToServer,
    /// From the server to the client (backend messages).
    ToClient,
}

/// Which traffic a [`Proxy::stall`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// Only bytes going to the server.
    ToServer,
    /// Only bytes going to the client.
    ToClient,
    /// Every byte.
    Both,
}

impl Stall {
    fn holds(self, direction: Direction) -> bool {
        matches!(
            (self, direction),
            (Stall::Both, _)
                | (Stall::ToServer, Direction::ToServer)
                | (Stall::ToClient, Direction::ToClient)
        )
    }
}

/// One protocol message as the client sent it.
#[derive(Debug, Clone, Copy)]
pub struct FrontendMessage<'a> {
    tag: Option<u8>,
    body: &'a [u8],
}

impl<'a> FrontendMessage<'a> {
    /// The type byte (`b'Q'` a simple query, `b'P'` Parse, `b'B'` Bind, `b'E'` Execute,
    /// `b'S'` Sync, `b'X'` Terminate, ...), or `None` for the startup message and the
    /// requests sent before it.
    pub fn tag(&self) -> Option<u8> {
        self.tag
    }

    /// The body, after the type byte and the length.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Whether the body contains `needle` (a statement's text, a parameter value).
    pub fn contains(&self, needle: &[u8]) -> bool {
        !needle.is_empty() && self.body.windows(needle.len()).any(|w| w == needle)
    }

    /// Whether this message ends an exchange: a `Sync` (the end of an extended query, where
    /// an implicit transaction commits) or a simple `Query`.
    pub fn ends_exchange(&self) -> bool {
        matches!(self.tag, Some(b'S' | b'Q'))
    }

    /// The text of a simple query.
    pub fn query(&self) -> Option<&'a str> {
        (self.tag == Some(b'Q'))
            .then(|| c_string(self.body))
            .flatten()
    }
}

fn c_string(bytes: &[u8]) -> Option<&str> {
    let end = bytes.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&bytes[..end]).ok()
}

type Predicate = Arc<dyn Fn(&FrontendMessage<'_>) -> bool + Send + Sync>;

/// What makes a [`Rule`] cut a connection.
#[derive(Clone)]
enum Trigger {
    Bytes(Direction, u64),
    Messages(Direction, u64),
    Message(Predicate),
    Exchange(Predicate),
}

impl fmt::Debug for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Bytes(d, n) => write!(f, "after {n} bytes {d:?}"),
            Trigger::Messages(d, n) => write!(f, "after {n} messages {d:?}"),
            Trigger::Message(_) => f.write_str("after a matching client message"),
            Trigger::Exchange(_) => f.write_str("after the exchange of a matching client message"),
        }
    }
}

/// Which connections a [`Rule`] watches, by when they were opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Connections open when the rule is armed.
    Existing,
    /// Connections opened after the rule is armed.
    New,
    /// Both.
    All,
}

/// A cut to make when a connection's traffic meets a condition, installed with
/// [`Proxy::arm`]. Counts start when the rule is armed (or the connection opens, if later).
#[derive(Debug, Clone)]
pub struct Rule {
    trigger: Trigger,
    scope: Scope,
    application_name: Option<String>,
    times: Option<u64>,
}

impl Rule {
    fn new(trigger: Trigger) -> Self {
        Self {
            trigger,
            scope: Scope::All,
            application_name: None,
            times: Some(1),
        }
    }

    /// Cuts a connection once `n` bytes went in `direction`: exactly `n` are forwarded.
    pub fn after_bytes(direction: Direction, n: u64) -> Self {
        Self::new(Trigger::Bytes(direction, n))
    }

    /// Cuts a connection once `n` whole protocol messages went in `direction`.
    pub fn after_messages(direction: Direction, n: u64) -> Self {
        Self::new(Trigger::Messages(direction, n))
    }

    /// Cuts a connection right after forwarding a client message `matches` accepts.
    pub fn on_client_message(
        matches: impl Fn(&FrontendMessage<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self::new(Trigger::Message(Arc::new(matches)))
    }

    /// Cuts a connection right after forwarding the message that ends the exchange of a
    /// client message `matches` accepts: that message itself when it is a `Sync` or a
    /// `Query`, else the next `Sync`. The server receives the whole exchange (and commits an
    /// implicit transaction) while no reply reaches the client: an unknown outcome.
    pub fn on_client_exchange(
        matches: impl Fn(&FrontendMessage<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self::new(Trigger::Exchange(Arc::new(matches)))
    }

    /// Watches only the connections of `scope` (default [`Scope::All`]).
    #[must_use]
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// Watches only connections whose startup message names this `application_name`.
    #[must_use]
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// Cuts at most `n` connections (default 1).
    #[must_use]
    pub fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }

    /// Cuts every connection that meets the condition, for as long as it is armed.
    #[must_use]
    pub fn every_time(mut self) -> Self {
        self.times = None;
        self
    }
}

/// An armed [`Rule`]: how often it fired. Dropping it does not disarm it; see
/// [`Proxy::disarm`].
#[derive(Debug, Clone)]
pub struct Armed {
    inner: Arc<ArmedRule>,
}

impl Armed {
    /// How many connections it cut.
    pub fn fired(&self) -> u64 {
        *self.inner.fired.borrow()
    }

    /// Waits until it has cut `n` connections, at most `timeout`; returns whether it did.
    pub async fn wait_fired(&self, n: u64, timeout: Duration) -> bool {
        let mut rx = self.inner.fired.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|&fired| fired >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

#[derive(Debug)]
struct ArmedRule {
    id: u64,
    rule: Rule,
    /// Connections with an id up to this one existed when the rule was armed.
    last_existing: u64,
    fired: watch::Sender<u64>,
}

impl ArmedRule {
    fn watches(&self, connection: &Connection) -> bool {
        let existing = connection.id <= self.last_existing;
        let in_scope = match self.rule.scope {
            Scope::Existing => existing,
            Scope::New => !existing,
            Scope::All => true,
        };
        in_scope
            && self
                .rule
                .application_name
                .as_deref()
                .is_none_or(|name| connection.info().application_name.as_deref() == Some(name))
    }

    /// Takes one firing, when the rule has some left.
    fn take(&self) -> bool {
        self.fired.send_if_modified(|fired| {
            let left = self.rule.times.is_none_or(|times| *fired < times);
            if left {
                *fired += 1;
            }
            left
        })
    }
}

/// One connection through the proxy, as [`Proxy::connections`] reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The proxy's number for it, from 1 in the order of acceptance.
    pub id: u64,
    /// The `application_name` of its startup message.
    pub application_name: Option<String>,
    /// The `user` of its startup message.
    pub user: Option<String>,
    /// Bytes forwarded to the server.
    pub bytes_to_server: u64,
    /// Bytes forwarded to the client.
    pub bytes_to_client: u64,
    /// Whole messages forwarded to the server (the startup message included).
    pub messages_to_server: u64,
    /// Whole messages forwarded to the client.
    pub messages_to_client: u64,
    /// Whether it is still open.
    pub open: bool,
    /// Whether the proxy cut it.
    pub cut: bool,
}

/// Counters of a [`Proxy`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyStats {
    /// Connections accepted and forwarded.
    pub accepted: u64,
    /// Connections closed at once while [`Proxy::refuse_new`] was on.
    pub refused: u64,
    /// Connections the proxy cut.
    pub cut: u64,
    /// Connections open now.
    pub open: u64,
}

#[derive(Debug)]
struct Connection {
    id: u64,
    info: Mutex<ConnectionInfo>,
    /// Set when the proxy cuts it.
    cut: watch::Sender<bool>,
    /// Per armed rule: bytes or messages counted, or whether a matching message was seen.
    progress: Mutex<HashMap<u64, u64>>,
}

impl Connection {
    fn info(&self) -> MutexGuard<'_, ConnectionInfo> {
        lock(&self.info)
    }
}

#[derive(Debug, Clone)]
enum Upstream {
    Unix(PathBuf),
    Tcp(String, u16),
}

impl Upstream {
    async fn connect(&self) -> std::io::Result<Box<dyn Stream>> {
        Ok(match self {
            Upstream::Unix(path) => Box::new(UnixStream::connect(path).await?),
            Upstream::Tcp(host, port) => {
                Box::new(TcpStream::connect((host.as_str(), *port)).await?)
            }
        })
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

#[derive(Debug)]
struct Shared {
    upstream: Upstream,
    stall: watch::Sender<Option<Stall>>,
    refuse: AtomicBool,
    next_id: AtomicU64,
    next_rule: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    cuts: AtomicU64,
    connections: Mutex<Vec<Arc<Connection>>>,
    rules: Mutex<Vec<Arc<ArmedRule>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The fault-injection proxy; dropping it closes every connection through it.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    url: String,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// A proxy to the test database ([`TestDatabase::get`](super::TestDatabase::get)).
    pub async fn to_test_database() -> Result<Self, ProxyError> {
        let url = super::TestDatabase::get().await?;
        Self::start(&url).await
    }

    /// Listens on `127.0.0.1` on a free port and forwards to the server `url` names (its
    /// first host: a Unix socket directory or a TCP host, and its first port, default 5432).
    /// Call inside a Tokio runtime.
    pub async fn start(url: &str) -> Result<Self, ProxyError> {
        let config: tokio_postgres::Config = url.parse().map_err(ProxyError::InvalidUrl)?;
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let upstream = match config.get_hosts().first() {
            Some(Host::Unix(dir)) => Upstream::Unix(dir.join(format!(".s.PGSQL.{port}"))),
            Some(Host::Tcp(host)) => Upstream::Tcp(host.clone(), port),
            None => return Err(ProxyError::NoHost),
        };
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(ProxyError::Listen)?;
        let addr = listener.local_addr().map_err(ProxyError::Listen)?;
        let shared = Arc::new(Shared {
            upstream,
            stall: watch::channel(None).0,
            refuse: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            next_rule: AtomicU64::new(1),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            connections: Mutex::default(),
            rules: Mutex::default(),
            tasks: Mutex::default(),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self {
            url: proxied_url(&config, addr),
            shared,
            addr,
            accept,
        })
    }

    /// A `key=value` connection string for the same user, password, database and options,
    /// through the proxy.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Holds every byte going the way `stall` says, on open and new connections, until
    /// [`release`](Self::release). A later call replaces the earlier one.
    pub fn stall(&self, stall: Stall) {
        tracing::debug!(?stall, "proxy stalls traffic");
        self.shared.stall.send_replace(Some(stall));
    }

    /// Lets held bytes through.
    pub fn release(&self) {
        tracing::debug!("proxy releases traffic");
        self.shared.stall.send_replace(None);
    }

    /// While `refuse` holds, new connections are closed as soon as they are accepted.
    pub fn refuse_new(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Cuts every open connection now; returns how many.
    pub fn cut_all(&self) -> usize {
        self.cut_where(|_| true)
    }

    /// Cuts the open connections `select` picks now; returns how many.
    pub fn cut_where(&self, select: impl Fn(&ConnectionInfo) -> bool) -> usize {
        let connections: Vec<_> = lock(&self.shared.connections).clone();
        connections
            .iter()
            .filter(|c| {
                let info = c.info().clone();
                info.open && !info.cut && select(&info)
            })
            .filter(|c| cut(&self.shared, c, "by the test"))
            .count()
    }

    /// Installs `rule`; it stays armed until it has fired as often as it may or is
    /// disarmed.
    pub fn arm(&self, rule: Rule) -> Armed {
        let armed = Arc::new(ArmedRule {
            id: self.shared.next_rule.fetch_add(1, Ordering::SeqCst),
            rule,
            last_existing: self.shared.next_id.load(Ordering::SeqCst) - 1,
            fired: watch::channel(0).0,
        });
        tracing::debug!(rule = ?armed.rule, "proxy rule armed");
        lock(&self.shared.rules).push(Arc::clone(&armed));
        Armed { inner: armed }
    }

    /// Removes an armed rule.
    pub fn disarm(&self, armed: &Armed) {
        lock(&self.shared.rules).retain(|r| r.id != armed.inner.id);
    }

    /// Every connection accepted so far, in order.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        lock(&self.shared.connections)
            .iter()
            .map(|c| c.info().clone())
            .collect()
    }

    /// The counters.
    pub fn stats(&self) -> ProxyStats {
        let open = lock(&self.shared.connections)
            .iter()
            .filter(|c| c.info().open)
            .count() as u64;
        ProxyStats {
            accepted: self.shared.accepted.load(Ordering::SeqCst),
            refused: self.shared.refused.load(Ordering::SeqCst),
            cut: self.shared.cuts.load(Ordering::SeqCst),
            open,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in lock(&self.shared.tasks).drain(..) {
            task.abort();
        }
    }
}

/// `key=value` with single quotes, escaping `'` and `\`.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn proxied_url(config: &tokio_postgres::Config, addr: SocketAddr) -> String {
    let mut url = format!("host=127.0.0.1 port={}", addr.port());
    let mut push = |key: &str, value: &str| {
        url.push(' ');
        url.push_str(key);
        url.push('=');
        url.push_str(&quote(value));
    };
    if let Some(user) = config.get_user() {
        push("user", user);
    }
    if let Some(password) = config.get_password() {
        push("password", &String::from_utf8_lossy(password));
    }
    if let Some(dbname) = config.get_dbname() {
        push("dbname", dbname);
    }
    if let Some(options) = config.get_options() {
        push("options", options);
    }
    if let Some(name) = config.get_application_name() {
        push("application_name", name);
    }
    url
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "proxy cannot accept a connection");
                // Out of file descriptors and the like: try again shortly.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shared.refuse.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            tracing::debug!(%peer, "proxy refuses a connection");
            drop(client);
            continue;
        }
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let connection = Arc::new(Connection {
            id,
            info: Mutex::new(ConnectionInfo {
                id,
                open: true,
                ..ConnectionInfo::default()
            }),
            cut: watch::channel(false).0,
            progress: Mutex::default(),
        });
        lock(&shared.connections).push(Arc::clone(&connection));
        let task = tokio::spawn(serve(client, Arc::clone(&shared), connection));
        let mut tasks = lock(&shared.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }
}

/// Marks `connection` cut; returns whether this call cut it.
fn cut(shared: &Shared, connection: &Connection, why: &str) -> bool {
    let newly = connection
        .cut
        .send_if_modified(|cut| !std::mem::replace(cut, true));
    if newly {
        shared.cuts.fetch_add(1, Ordering::SeqCst);
        let mut info = connection.info();
        info.cut = true;
        tracing::debug!(
            connection = connection.id,
            application_name = ?info.application_name,
            why,
            "proxy cuts a connection"
        );
    }
    newly
}

async fn serve(client: TcpStream, shared: Arc<Shared>, connection: Arc<Connection>) {
    let _ = client.set_nodelay(true);
    let server = match shared.upstream.connect().await {
        Ok(server) => server,
        Err(error) => {
            tracing::warn!(%error, upstream = ?shared.upstream, "proxy cannot reach the server");
            connection.info().open = false;
            return;
        }
    };
    let (client_read, client_write) = tokio::io::split(client);
    let (server_read, server_write) = tokio::io::split(server);
    // Set when the client asked for TLS or GSSAPI encryption: the server answers one byte.
    let awaiting_answer = Arc::new(AtomicBool::new(false));
    // A pump that fails (an I/O error, a malformed message) ends the other one too.
    let ended = |result: std::io::Result<()>| {
        if result.is_err() {
            connection.cut.send_replace(true);
        }
        result
    };
    let to_server = async {
        ended(
            pump(
                Direction::ToServer,
                client_read,
                server_write,
                &shared,
                &connection,
                &awaiting_answer,
            )
            .await,
        )
    };
    let to_client = async {
        ended(
            pump(
                Direction::ToClient,
                server_read,
                client_write,
                &shared,
                &connection,
                &awaiting_answer,
            )
            .await,
        )
    };
    let (a, b) = tokio::join!(to_server, to_client);
    for (direction, result) in [(Direction::ToServer, a), (Direction::ToClient, b)] {
        if let Err(error) = result {
            tracing::debug!(connection = connection.id, ?direction, %error, "proxy connection ended");
        }
    }
    connection.info().open = false;
}

/// How a pump reads its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// A message without type byte comes next (the client's first ones).
    Untyped,
    /// Type byte and length.
    Typed,
    /// One byte answers an encryption request (the server's reply to it).
    OneByte,
    /// Encrypted: bytes only.
    Opaque,
}

/// What a pump sends at once: the whole messages (or opaque bytes) read so far, cut short
/// where a rule fires.
#[derive(Default)]
struct Outgoing {
    bytes: Vec<u8>,
    /// Whole protocol messages among `bytes`.
    messages: u64,
    /// The rule that cuts the connection once `bytes` are sent.
    cut_by: Option<Arc<ArmedRule>>,
}

/// Forwards `from` to `to`: whole messages only (each run of messages read together in one
/// write), applying rules as messages are read, then stalls and cuts.
async fn pump<R, W>(
    direction: Direction,
    mut from: R,
    mut to: W,
    shared: &Shared,
    connection: &Connection,
    awaiting_answer: &AtomicBool,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let ended = forward_messages(
        direction,
        &mut from,
        &mut to,
        shared,
        connection,
        awaiting_answer,
    )
    .await;
    // Pass the end on: the sender closed, failed or was cut.
    let _ = to.shutdown().await;
    match ended {
        Ok(Ended::Cut) if direction == Direction::ToClient => {
            // `from` is the server: read until it closes, dropping everything, so that it
            // runs what it received.
            let mut sink = vec![0u8; 16 * 1024];
            while matches!(from.read(&mut sink).await, Ok(n) if n > 0) {}
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Why [`forward_messages`] returned.
enum Ended {
    /// The sender closed its side.
    Closed,
    /// The connection was cut.
    Cut,
}

async fn forward_messages<R, W>(
    direction: Direction,
    from: &mut R,
    to: &mut W,
    shared: &Shared,
    connection: &Connection,
    awaiting_answer: &AtomicBool,
) -> std::io::Result<Ended>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut cut_rx = connection.cut.subscribe();
    let mut stall_rx = shared.stall.subscribe();
    let mut framing = match direction {
        Direction::ToServer => Framing::Untyped,
        Direction::ToClient => Framing::Typed,
    };
    let mut buffer: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let mut out = Outgoing::default();
        while out.cut_by.is_none() {
            if direction == Direction::ToClient && awaiting_answer.swap(false, Ordering::SeqCst) {
                framing = Framing::OneByte;
            }
            let Some(len) = message_len(framing, &buffer)? else {
                break;
            };
            let message: Vec<u8> = buffer.drain(..len).collect();
            let (tag, body) = split_message(framing, &message);
            // The next framing, decided before forwarding: the answer to an encryption
            // request must not race the request.
            framing = match framing {
                Framing::Untyped => match startup_code(&message) {
                    Some(SSL_REQUEST | GSSENC_REQUEST) => {
                        awaiting_answer.store(true, Ordering::SeqCst);
                        Framing::Untyped
                    }
                    _ => Framing::Typed,
                },
                Framing::OneByte
                    if message.first() == Some(&b'S') || message.first() == Some(&b'G') =>
                {
                    Framing::Opaque
                }
                Framing::OneByte => Framing::Typed,
                other => other,
            };
            if direction == Direction::ToServer && framing == Framing::Typed && tag.is_none() {
                record_startup(connection, body);
            }
            let frontend = (direction == Direction::ToServer && framing != Framing::Opaque)
                .then_some(FrontendMessage { tag, body });
            let (allowed, cut_by) = apply_rules(direction, &message, frontend, shared, connection);
            out.bytes.extend_from_slice(&message[..allowed]);
            out.messages += u64::from(allowed == message.len());
            out.cut_by = cut_by;
        }
        if framing == Framing::Untyped && buffer.first() == Some(&0x16) {
            // A TLS handshake record where a startup message would be.
            framing = Framing::Opaque;
        }
        if out.cut_by.is_none() && framing == Framing::Opaque && !buffer.is_empty() {
            let bytes = std::mem::take(&mut buffer);
            let (allowed, cut_by) = apply_rules(direction, &bytes, None, shared, connection);
            out.bytes.extend_from_slice(&bytes[..allowed]);
            out.cut_by = cut_by;
        }
        if (!out.bytes.is_empty() || out.cut_by.is_some())
            && !send(
                direction,
                out,
                to,
                shared,
                connection,
                &mut cut_rx,
                &mut stall_rx,
            )
            .await?
        {
            return Ok(Ended::Cut);
        }
        let read = tokio::select! {
            read = from.read(&mut chunk) => read?,
            () = cut_signal(&mut cut_rx) => return Ok(Ended::Cut),
        };
        if read == 0 {
            return Ok(Ended::Closed);
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// Resolves once the connection is cut.
async fn cut_signal(rx: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: the connection is over as well.
    let _ = rx.wait_for(|&cut| cut).await.map(drop);
}

/// The length of the next whole message in `buffer`, if it holds one.
fn message_len(framing: Framing, buffer: &[u8]) -> std::io::Result<Option<usize>> {
    let (header, skip) = match framing {
        Framing::Opaque => return Ok(None),
        Framing::OneByte => return Ok((!buffer.is_empty()).then_some(1)),
        Framing::Untyped => (0, 0),
        Framing::Typed => (1, 1),
    };
    if buffer.len() < header + 4 {
        return Ok(None);
    }
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&buffer[header..header + 4]);
    let len = i32::from_be_bytes(len_bytes);
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| (4..=MAX_MESSAGE).contains(&len))
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("protocol message with invalid length {len}"),
            )
        })?;
    let total = skip + len;
    Ok((buffer.len() >= total).then_some(total))
}

fn split_message(framing: Framing, message: &[u8]) -> (Option<u8>, &[u8]) {
    match framing {
        Framing::Typed => (
            message.first().copied(),
            message.get(5..).unwrap_or_default(),
        ),
        Framing::Untyped => (None, message.get(4..).unwrap_or_default()),
        Framing::OneByte | Framing::Opaque => (None, message),
    }
}

fn startup_code(message: &[u8]) -> Option<i32> {
    let bytes: [u8; 4] = message.get(4..8)?.try_into().ok()?;
    Some(i32::from_be_bytes(bytes))
}

/// Records `user` and `application_name` of a startup message body (code, then pairs of
/// C strings).
fn record_startup(connection: &Connection, body: &[u8]) {
    let mut fields = body
        .get(4..)
        .unwrap_or_default()
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned());
    let mut info = connection.info();
    while let (Some(key), Some(value)) = (fields.next(), fields.next()) {
        match key.as_str() {
            "user" => info.user = Some(value),
            "application_name" => info.application_name = Some(value),
            _ => {}
        }
    }
}

/// Sends `out`, waiting out a stall; returns `false` when the connection is cut (by the
/// rule that fired on `out`, or from elsewhere).
async fn send<W>(
    direction: Direction,
    out: Outgoing,
    to: &mut W,
    shared: &Shared,
    connection: &Connection,
    cut_rx: &mut watch::Receiver<bool>,
    stall_rx: &mut watch::Receiver<Option<Stall>>,
) -> std::io::Result<bool>
where
    W: AsyncWrite + Unpin,
{
    // Hold the bytes while stalled, unless cut meanwhile.
    tokio::select! {
        () = async {
            let _ = stall_rx
                .wait_for(|stall| !stall.is_some_and(|s| s.holds(direction)))
                .await
                .map(drop);
        } => {}
        () = cut_signal(cut_rx) => return Ok(false),
    }
    if *cut_rx.borrow() {
        return Ok(false);
    }
    tokio::select! {
        written = to.write_all(&out.bytes) => written?,
        () = cut_signal(cut_rx) => return Ok(false),
    }
    {
        let mut guard = connection.info();
        let info = &mut *guard;
        let (bytes, messages) = match direction {
            Direction::ToServer => (&mut info.bytes_to_server, &mut info.messages_to_server),
            Direction::ToClient => (&mut info.bytes_to_client, &mut info.messages_to_client),
        };
        *bytes += out.bytes.len() as u64;
        *messages += out.messages;
    }
    if let Some(rule) = out.cut_by {
        to.flush().await?;
        cut(shared, connection, &format!("rule {:?}", rule.rule.trigger));
        return Ok(false);
    }
    Ok(true)
}

/// Runs the armed rules on one message: how many of its bytes to forward, and the rule
/// that cuts the connection after them.
fn apply_rules(
    direction: Direction,
    bytes: &[u8],
    frontend: Option<FrontendMessage<'_>>,
    shared: &Shared,
    connection: &Connection,
) -> (usize, Option<Arc<ArmedRule>>) {
    let rules: Vec<_> = lock(&shared.rules).clone();
    let mut progress = lock(&connection.progress);
    let mut allowed = bytes.len();
    let mut firing = None;
    for rule in rules.iter().filter(|r| r.watches(connection)) {
        let seen = progress.entry(rule.id).or_insert(0);
        let hit = match &rule.rule.trigger {
            Trigger::Bytes(d, n) if *d == direction => {
                let left = n.saturating_sub(*seen);
                *seen += bytes.len() as u64;
                (left <= bytes.len() as u64).then(|| {
                    allowed = allowed.min(usize::try_from(left).unwrap_or(usize::MAX));
                })
            }
            Trigger::Messages(d, n) if *d == direction => {
                *seen += 1;
                (*seen >= *n).then_some(())
            }
            Trigger::Message(matches) => frontend.filter(|m| matches(m)).map(|_| ()),
            Trigger::Exchange(matches) => frontend.and_then(|m| {
                if *seen == 0 && matches(&m) {
                    *seen = 1;
                }
                (*seen == 1 && m.ends_exchange()).then_some(())
            }),
            _ => None,
        };
        if hit.is_some() && firing.is_none() && rule.take() {
            firing = Some(Arc::clone(rule));
        }
    }
    if firing.is_none() {
        allowed = bytes.len();
    }
    // Rules that have fired all they may are done.
    drop(progress);
    lock(&shared.rules).retain(|r| r.rule.times.is_none_or(|times| *r.fired.borrow() < times));
    (allowed, firing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_reads_lengths_and_refuses_bad_ones() {
        let mut sync = vec![b'S'];
        sync.extend_from_slice(&4i32.to_be_bytes());
        assert_eq!(message_len(Framing::Typed, &sync).ok().flatten(), Some(5));
        assert_eq!(message_len(Framing::Typed, &sync[..3]).ok().flatten(), None);
        let mut bad = vec![b'Q'];
        bad.extend_from_slice(&(-1i32).to_be_bytes());
        assert!(message_len(Framing::Typed, &bad).is_err());
        let mut startup = 8i32.to_be_bytes().to_vec();
        startup.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        assert_eq!(
            message_len(Framing::Untyped, &startup).ok().flatten(),
            Some(8)
        );
        assert_eq!(startup_code(&startup), Some(SSL_REQUEST));
    }

    #[test]
    fn proxied_urls_quote_values() {
        let config: tokio_postgres::Config = "host=/tmp user='o\\'brien' dbname=db"
            .parse()
            .expect("config");
        let url = proxied_url(&config, SocketAddr::from(([127, 0, 0, 1], 7)));
        assert_eq!(url, "host=127.0.0.1 port=7 user='o\\'brien' dbname='db'");
        let back: tokio_postgres::Config = url.parse().expect("parses back");
        assert_eq!(back.get_user(), Some("o'brien"));
    }

    #[test]
    fn messages_expose_queries_and_contents() {
        let query = FrontendMessage {
            tag: Some(b'Q'),
            body: b"COMMIT\0",
        };
        assert_eq!(query.query(), Some("COMMIT"));
        assert!(query.ends_exchange());
        assert!(query.contains(b"COMM"));
        assert!(!query.contains(b""));
    }
}
