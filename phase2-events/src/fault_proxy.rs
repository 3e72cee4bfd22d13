//! A TCP fault proxy: how tools like toxiproxy put latency and partitions between two
//! services without touching either of them.
//!
//! ```text
//!   client ──TCP──▶ FaultProxy ──TCP──▶ upstream (e.g. the Kafka broker)
//!                       ▲
//!          faults().set_latency(…) / set_down(true) at any time
//! ```
//!
//! The client connects to [`FaultProxy::addr`] instead of the upstream. For every
//! accepted connection the proxy opens its own connection upstream and copies bytes
//! both ways. Because every byte passes through our code, we can delay it or stop it:
//!
//! * **Latency is a delay line, not a sleep.** Each direction is a reader and a writer
//!   joined by a bounded channel. The reader stamps every chunk with the moment it
//!   arrived and passes it on at once; the writer sleeps until `arrival + latency`
//!   before writing it. So each byte is late by one fixed one-way delay, and many
//!   chunks are in flight at the same time: a 1 MiB response costs one latency, not one
//!   per chunk (which is what `copy_bidirectional` with a sleep per read would do).
//!   When the channel is full the reader stops reading, and TCP flow control pushes
//!   back on the sender, just as a slow link would. Jitter changes each chunk's delay
//!   but never reorders bytes: the writer handles chunks in arrival order.
//! * **A partition resets connections.** [`Faults::set_down`] cuts every open
//!   connection with a TCP reset (`SO_LINGER` 0, so the close sends `RST`, not `FIN`),
//!   and while down, new connections are accepted and reset at once. The client sees
//!   "connection reset by peer": the broker vanished.
//! * **A held link delivers nothing, and says nothing.** [`Faults::set_held`] keeps
//!   every connection open (new ones are accepted too) but stops writing in both
//!   directions: bytes pile up in the delay line until TCP flow control stops the
//!   senders, as when a switch drops every packet. Nobody is told; a client finds out
//!   only from its own timeouts. When the hold ends, what waited is delivered.
//! * **Half-closes are passed on.** When one side shuts down its write half, the proxy
//!   shuts down the same half towards the other side (after the delay), so
//!   request/response protocols that signal "done" with `FIN` still work. An error on
//!   either side resets both.
//!
//! Faults can be changed while connections are open: they live in a `watch` channel
//! that every connection reads. Counters ([`FaultProxy::bytes_forwarded`]) let a test
//! prove its traffic really went through the proxy. That matters for Kafka: a client
//! uses the bootstrap address only to learn the address the broker *advertises*, and
//! then connects there, so unless the advertised listener is the proxy, the traffic
//! goes around it.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use phase2_events::fault_proxy::FaultProxy;
//!
//! # async fn demo(broker: SocketAddr) -> std::io::Result<()> {
//! let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], 0)), broker).await?;
//! // … point the client at `proxy.addr()` …
//! proxy.faults().set_latency(Duration::from_millis(200)); // every byte 200 ms late
//! proxy.faults().set_down(true); // partition: open connections are reset
//! proxy.faults().set_down(false); // heal: new connections go through again
//! proxy.stop().await;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

/// Largest read from a socket; one read becomes one chunk in the delay line.
const CHUNK_SIZE: usize = 16 * 1024;
/// Chunks in flight per direction. Bounds the memory a connection can hold
/// (`CHUNK_SIZE` × this) while still letting a fast sender fill a slow "link".
const IN_FLIGHT_CHUNKS: usize = 1024;

/// A running proxy. Dropping it stops it too (without waiting); [`FaultProxy::stop`]
/// stops it and waits until every connection is closed.
#[derive(Debug)]
pub struct FaultProxy {
    /// The address actually bound: with port 0 in `start`, this holds the real port.
    addr: SocketAddr,
    /// Where every accepted connection is forwarded.
    upstream: SocketAddr,
    /// The knobs, shared with every connection so a change applies to open ones.
    faults: Faults,
    /// Counters shared with the tasks; atomics because they are only ever added to.
    stats: Arc<Stats>,
    /// Cancels the accept loop and every connection when dropped, so a test that
    /// panics before `stop()` does not leave a proxy running.
    shutdown: DropGuard,
    /// The accept loop, which ends only after every connection task has ended.
    accept_loop: JoinHandle<()>,
}

impl FaultProxy {
    /// Binds `listen` (`127.0.0.1:0` in tests, then ask [`FaultProxy::addr`]) and
    /// forwards every accepted connection to `upstream`. Starts with no faults.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let faults = Faults {
            proxy: addr,
            settings: watch::Sender::new(Settings::default()),
        };
        let stats = Arc::new(Stats::default());
        let shutdown = CancellationToken::new();
        let shared = Shared {
            upstream,
            faults: faults.clone(),
            stats: stats.clone(),
            shutdown: shutdown.clone(),
        };
        let accept_loop = tokio::spawn(accept_loop(listener, shared));
        info!(proxy = %addr, %upstream, "fault proxy started");
        Ok(FaultProxy {
            addr,
            upstream,
            faults,
            stats,
            shutdown: shutdown.drop_guard(),
            accept_loop,
        })
    }

    /// Where clients should connect instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// The faults to inject; clone it to change them from another task.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Connections the listener accepted, including those reset because the proxy
    /// was down.
    pub fn connections_accepted(&self) -> u64 {
        self.stats.connections_accepted.load(Ordering::Relaxed)
    }

    /// Bytes written to either side so far (both directions added up).
    pub fn bytes_forwarded(&self) -> u64 {
        self.stats.bytes_forwarded.load(Ordering::Relaxed)
    }

    /// Closes the listener (new connections are refused), resets every open
    /// connection and waits until all of them are gone.
    pub async fn stop(self) {
        let FaultProxy {
            addr,
            shutdown,
            accept_loop,
            ..
        } = self;
        drop(shutdown); // dropping the guard cancels the token
        if let Err(error) = accept_loop.await {
            warn!(proxy = %addr, %error, "fault proxy task failed");
        }
        info!(proxy = %addr, "fault proxy stopped");
    }
}

/// The faults a [`FaultProxy`] injects. Cheap to clone; every clone changes the same
/// proxy, and changes apply at once, also to connections that are already open.
#[derive(Debug, Clone)]
pub struct Faults {
    /// The proxy's address, only to say which proxy changed in the logs.
    proxy: SocketAddr,
    /// The current settings. A `watch` channel rather than a mutex, because the
    /// connections must also be *woken* when the proxy goes down.
    settings: watch::Sender<Settings>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Settings {
    latency: Duration,
    jitter: Duration,
    down: bool,
    held: bool,
    /// How many times the proxy went down. A connection remembers the value it was
    /// opened under and ends when it changes, so even a partition that heals before
    /// the connection's task gets to run still cuts it.
    partitions: u64,
}

impl Faults {
    /// Delays every chunk of data by `latency`, in both directions: a request/response
    /// round trip gets `2 × latency` slower. Applies to data read from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.settings.send_modify(|s| s.latency = latency);
        info!(proxy = %self.proxy, ?latency, "fault proxy latency set");
    }

    /// Varies each chunk's delay uniformly within `latency ± jitter` (never below zero).
    /// Bytes are never reordered.
    pub fn set_jitter(&self, jitter: Duration) {
        self.settings.send_modify(|s| s.jitter = jitter);
        info!(proxy = %self.proxy, ?jitter, "fault proxy jitter set");
    }

    /// `true` partitions the network: every open connection is reset, and new ones are
    /// reset as soon as they are accepted. `false` lets new connections through again
    /// (the ones that were cut stay cut, as after a real partition).
    pub fn set_down(&self, down: bool) {
        let changed = self.settings.send_if_modified(|s| {
            if s.down == down {
                return false;
            }
            s.down = down;
            if down {
                s.partitions += 1;
            }
            true
        });
        if changed && down {
            info!(proxy = %self.proxy, "fault proxy down: resetting every connection");
        } else if changed {
            info!(proxy = %self.proxy, "fault proxy up: accepting connections again");
        }
    }

    /// `true` holds every connection: nothing is delivered either way, nothing is
    /// reset, until `false` (then what waited is delivered).
    pub fn set_held(&self, held: bool) {
        if self
            .settings
            .send_if_modified(|s| std::mem::replace(&mut s.held, held) != held)
        {
            info!(proxy = %self.proxy, held, "fault proxy hold changed");
        }
    }

    /// Removes every fault: no latency, no jitter, up.
    pub fn clear(&self) {
        self.settings.send_modify(|s| {
            *s = Settings {
                partitions: s.partitions,
                ..Settings::default()
            }
        });
        info!(proxy = %self.proxy, "fault proxy faults cleared");
    }

    /// The delay for a chunk read now: `latency`, moved by up to `± jitter`.
    fn delay(&self) -> Duration {
        let Settings {
            latency, jitter, ..
        } = *self.settings.borrow();
        if jitter.is_zero() {
            return latency;
        }
        // latency - jitter + [0, 2·jitter], computed so that it never goes below zero.
        (latency + jitter.mul_f64(2.0 * rand::random::<f64>())).saturating_sub(jitter)
    }
}

#[derive(Debug, Default)]
struct Stats {
    connections_accepted: AtomicU64,
    bytes_forwarded: AtomicU64,
}

/// Why a connection was cut from outside.
#[derive(Debug, Clone, Copy)]
enum Cut {
    Stopped,
    Down,
}

/// What every connection task needs from its proxy.
#[derive(Debug, Clone)]
struct Shared {
    upstream: SocketAddr,
    faults: Faults,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
}

async fn accept_loop(listener: TcpListener, shared: Shared) {
    // Owning the connection tasks lets `stop()` wait until every one has ended.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            // Reap finished connections so the set does not grow forever.
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined {
                    warn!(%error, "fault proxy connection task failed");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    shared.stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
                    // Subscribe now, so a partition that starts after this accept cuts
                    // this connection even if its task has not run yet.
                    let settings = shared.faults.settings.subscribe();
                    connections.spawn(serve(client, peer, settings, shared.clone()));
                }
                Err(error) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    warn!(%error, "fault proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener); // from here on, connecting is refused
    // Every connection watches the same token, so they all end promptly.
    while connections.join_next().await.is_some() {}
}

/// One proxied connection, from accept to close.
async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    mut settings: watch::Receiver<Settings>,
    shared: Shared,
) {
    let opened_in = settings.borrow_and_update().partitions;
    let connect = TcpStream::connect(shared.upstream);
    let connected = unless_cut(connect, &shared.shutdown, &mut settings, opened_in).await;
    let mut server = match connected {
        Ok(Ok(server)) => server,
        Ok(Err(error)) => {
            debug!(%peer, upstream = %shared.upstream, %error, "upstream unreachable");
            reset(client);
            return;
        }
        Err(cut) => {
            debug!(%peer, ?cut, "connection cut before it reached upstream");
            reset(client);
            return;
        }
    };
    debug!(%peer, upstream = %shared.upstream, "connection opened");
    // The delay is ours to add: don't let Nagle's algorithm add another one.
    for stream in [&client, &server] {
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%peer, %error, "could not set TCP_NODELAY");
        }
    }

    let forwarded = unless_cut(
        forward(&mut client, &mut server, &shared),
        &shared.shutdown,
        &mut settings,
        opened_in,
    )
    .await;
    match forwarded {
        Ok(Ok(())) => debug!(%peer, "connection closed by both sides"),
        Ok(Err(error)) => {
            debug!(%peer, %error, "connection failed; resetting both sides");
            reset(client);
            reset(server);
        }
        Err(cut) => {
            debug!(%peer, ?cut, "connection cut");
            reset(client);
            reset(server);
        }
    }
}

/// Runs `work` unless the proxy is stopped or goes down first.
async fn unless_cut<T>(
    work: impl Future<Output = T>,
    shutdown: &CancellationToken,
    settings: &mut watch::Receiver<Settings>,
    opened_in: u64,
) -> Result<T, Cut> {
    let partitioned = async {
        // `is_err()` at once: the `Ok` value holds the channel's read lock.
        let closed = settings
            .wait_for(|s| s.down || s.partitions != opened_in)
            .await
            .is_err();
        if closed {
            // Every `Faults` is gone, so nothing can partition us any more.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        // Check the cuts first: a connection accepted while down must not go through.
        biased;
        () = shutdown.cancelled() => Err(Cut::Stopped),
        () = partitioned => Err(Cut::Down),
        output = work => Ok(output),
    }
}

/// Copies both directions until both are closed, or until either fails.
async fn forward(
    client: &mut TcpStream,
    server: &mut TcpStream,
    shared: &Shared,
) -> io::Result<()> {
    let (from_client, to_client) = client.split();
    let (from_server, to_server) = server.split();
    tokio::try_join!(
        delay_line(from_client, to_server, shared),
        delay_line(from_server, to_client, shared),
    )?;
    Ok(())
}

/// A chunk of bytes and the moment it may be written on.
#[derive(Debug)]
struct Chunk {
    due: Instant,
    bytes: Vec<u8>,
}

/// One direction: `from` → delay → `to`, then passes the half-close on.
///
/// Reader and writer run concurrently (`try_join!`), so a writer waiting for a chunk's
/// moment never stops the reader from stamping the next chunks.
async fn delay_line(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    shared: &Shared,
) -> io::Result<()> {
    let (chunks, mut in_flight) = mpsc::channel::<Chunk>(IN_FLIGHT_CHUNKS);
    let read = async move {
        let mut buf = vec![0; CHUNK_SIZE];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok(()); // end of stream: dropping `chunks` tells the writer
            }
            let chunk = Chunk {
                due: Instant::now() + shared.faults.delay(),
                bytes: buf[..n].to_vec(),
            };
            if chunks.send(chunk).await.is_err() {
                return Ok(()); // the writer is gone, and its error is the one reported
            }
        }
    };
    let mut settings = shared.faults.settings.subscribe();
    let write = async move {
        while let Some(chunk) = in_flight.recv().await {
            tokio::time::sleep_until(chunk.due).await;
            // Held: wait for the link to come back (an error: the proxy is gone).
            if settings.wait_for(|s| !s.held).await.is_err() {
                return Ok(());
            }
            to.write_all(&chunk.bytes).await?;
            let n = chunk.bytes.len() as u64;
            shared.stats.bytes_forwarded.fetch_add(n, Ordering::Relaxed);
        }
        to.shutdown().await // pass the half-close on
    };
    tokio::try_join!(read, write)?;
    Ok(())
}

/// Closes `stream` with a TCP reset instead of a graceful `FIN`.
fn reset(stream: TcpStream) {
    if let Err(error) = stream.set_zero_linger() {
        debug!(%error, "could not set SO_LINGER 0; closing gracefully instead");
    }
    drop(stream);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generous bound so a broken proxy fails a test instead of hanging it.
    const PATIENCE: Duration = Duration::from_secs(2);

    fn localhost() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// An upstream that writes back whatever it reads, then closes.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind(localhost()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut from, mut to) = stream.split();
                    // Errors are expected here: the proxy resets connections.
                    let _ = tokio::io::copy(&mut from, &mut to).await;
                });
            }
        });
        addr
    }

    async fn proxy_to_echo() -> FaultProxy {
        FaultProxy::start(localhost(), echo_server().await)
            .await
            .unwrap()
    }

    /// Sends `payload`, half-closes, and reads everything until the other side closes.
    async fn echo_through(addr: SocketAddr, payload: &[u8]) -> io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(addr).await?;
        let (mut from, mut to) = stream.split();
        let send = async {
            to.write_all(payload).await?;
            to.shutdown().await
        };
        let mut echoed = Vec::new();
        let receive = from.read_to_end(&mut echoed);
        tokio::time::timeout(PATIENCE, async { tokio::try_join!(send, receive) })
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        Ok(echoed)
    }

    /// One small request and its response over an open connection.
    async fn ping(stream: &mut TcpStream) -> io::Result<()> {
        stream.write_all(b"ping").await?;
        let mut pong = [0; 4];
        tokio::time::timeout(PATIENCE, stream.read_exact(&mut pong))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        assert_eq!(&pong, b"ping");
        Ok(())
    }

    /// Reading from a connection the proxy cut ends (EOF or reset), and does so soon.
    async fn assert_cut(stream: &mut TcpStream) {
        let mut buf = [0; 16];
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("the proxy should cut the connection promptly");
        assert!(matches!(read, Ok(0) | Err(_)), "still open: read {read:?}");
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn bytes_pass_through_unchanged_and_in_order_and_half_closes_are_passed_on() {
        let proxy = proxy_to_echo().await;
        let sent = payload(1024 * 1024);

        // `echo_through` only returns once the proxy passed our FIN up and the echo
        // server's FIN back: that is the half-close test.
        let echoed = echo_through(proxy.addr(), &sent).await.unwrap();

        assert!(echoed == sent, "1 MiB came back changed or reordered");
        assert_eq!(proxy.connections_accepted(), 1);
        assert_eq!(proxy.bytes_forwarded(), 2 * sent.len() as u64, "both ways");
        proxy.stop().await;
    }

    #[tokio::test]
    async fn latency_delays_each_direction_once_so_a_round_trip_costs_twice_the_latency() {
        let proxy = proxy_to_echo().await;
        proxy.faults().set_latency(Duration::from_millis(200));
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();

        let started = std::time::Instant::now();
        ping(&mut stream).await.unwrap();

        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(400),
            "round trip took {elapsed:?}"
        );
        proxy.stop().await;
    }

    #[tokio::test]
    async fn latency_is_a_delay_line_not_a_sleep_per_chunk() {
        let proxy = proxy_to_echo().await;
        proxy.faults().set_latency(Duration::from_millis(100));
        proxy.faults().set_jitter(Duration::from_millis(20));
        let sent = payload(1024 * 1024);

        let started = std::time::Instant::now();
        let echoed = echo_through(proxy.addr(), &sent).await.unwrap();

        // 1 MiB is at least 64 chunks each way: with a sleep per chunk this would take
        // over 12 s; as a delay line it is one latency each way plus the copying.
        let elapsed = started.elapsed();
        assert!(echoed == sent, "jitter must never reorder bytes");
        assert!(elapsed >= Duration::from_millis(160), "took {elapsed:?}");
        assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
        proxy.stop().await;
    }

    #[tokio::test]
    async fn going_down_cuts_open_connections_and_refuses_new_ones_until_up_again() {
        let proxy = proxy_to_echo().await;
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        ping(&mut open).await.unwrap();

        proxy.faults().set_down(true);

        assert_cut(&mut open).await;
        // The listener stays open (the port stays ours), but whatever connects is reset.
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_cut(&mut fresh).await;

        proxy.faults().set_down(false);

        let mut healed = TcpStream::connect(proxy.addr()).await.unwrap();
        ping(&mut healed).await.unwrap();
        assert_eq!(proxy.connections_accepted(), 3);
        proxy.stop().await;
    }

    #[tokio::test]
    async fn a_held_link_delivers_nothing_and_cuts_nothing_until_it_is_released() {
        let proxy = proxy_to_echo().await;
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        ping(&mut open).await.unwrap();

        proxy.faults().set_held(true);

        // No answer, and no reset either: the ping just waits.
        let waited = ping(&mut open).await;
        assert_eq!(
            waited.map_err(|e| e.kind()),
            Err(io::ErrorKind::TimedOut),
            "a held link must neither answer nor cut"
        );
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        fresh.write_all(b"ping").await.unwrap();

        proxy.faults().set_held(false);

        // What waited is delivered: the first connection's ping (its answer), then
        // the second's.
        let mut pong = [0; 4];
        tokio::time::timeout(PATIENCE, open.read_exact(&mut pong))
            .await
            .expect("the held ping is answered once the link is back")
            .unwrap();
        tokio::time::timeout(PATIENCE, fresh.read_exact(&mut pong))
            .await
            .expect("the connection opened while held works once the link is back")
            .unwrap();
        assert_eq!(&pong, b"ping");
        ping(&mut open).await.unwrap();
        proxy.stop().await;
    }

    #[tokio::test]
    async fn a_partition_that_heals_at_once_still_cuts_the_connections_it_caught() {
        let proxy = proxy_to_echo().await;
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        ping(&mut open).await.unwrap();

        proxy.faults().set_down(true);
        proxy.faults().set_down(false);

        assert_cut(&mut open).await;
        proxy.stop().await;
    }

    #[tokio::test]
    async fn clear_removes_latency_and_heals_a_partition() {
        let proxy = proxy_to_echo().await;
        proxy.faults().set_latency(Duration::from_secs(10));
        proxy.faults().set_down(true);

        proxy.faults().clear();

        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        ping(&mut stream).await.unwrap(); // would time out with 10 s of latency
        proxy.stop().await;
    }

    #[tokio::test]
    async fn stop_closes_open_connections_and_the_listener() {
        let proxy = proxy_to_echo().await;
        let addr = proxy.addr();
        let mut open = TcpStream::connect(addr).await.unwrap();
        ping(&mut open).await.unwrap();

        proxy.stop().await;

        assert_cut(&mut open).await;
        let refused = TcpStream::connect(addr).await;
        assert!(refused.is_err(), "still listening after stop()");
    }
}
