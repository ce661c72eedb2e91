//! One task per TCP or TLS connection, generic over the byte stream.
//!
//! The task reads, frames (`sip::framing`) and hands each whole message to the handler in
//! bytes of its own (a held request pins no read buffer), and writes whatever the edge queued for this connection, batching
//! queued messages into one write (one TLS record where possible).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::conn::{ConnHandle, CHANNEL_CAPACITY, SEND_QUEUE};
use super::{Handler, Peer, ReplyTo};
use crate::trace::Direction;
use crate::sip::framing::{scan, FrameError, FrameLimits, Scan, MAX_KEEPALIVE_RUN};

/// Most bytes taken from the socket in one read: at least ~100 bytes a request, so one
/// read yields a few hundred answers at most.
const MAX_READ: usize = 32 * 1024;

/// Settings of a stream connection.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    pub limits: FrameLimits,
    pub idle_timeout: Duration,
    /// A message begun (its first byte read) must be whole within this; a peer trickling
    /// bytes (slowloris) is otherwise never caught by the idle timeout.
    pub header_timeout: Duration,
    /// Stop reading while half the send queue waits for the peer: for inbound connections,
    /// whose requests are answered on the same connection. Off for outbound ones, where
    /// what is read (responses) leaves on other connections and a stall could deadlock.
    pub read_backpressure: bool,
    /// Send a CRLFCRLF ping after this long without traffic (RFC 5626 §4.4.1); set on
    /// outbound federation connections so that NATs and peers keep them open.
    pub keepalive: Option<Duration>,
}

/// The read buffer's growth step.
const GROW_STEP: usize = 4096;

/// After this long without input an empty read buffer is freed (until the next read).
const QUIET: Duration = Duration::from_secs(1);

/// Creates the handle and queue for a new connection; `run` then serves it.
/// `tap` records the connection's messages (`Handler::tap`).
pub fn channel(
    peer: &Peer,
    local: std::net::SocketAddr,
    tap: Option<Arc<crate::trace::Tap>>,
) -> (ConnHandle, mpsc::Receiver<Bytes>) {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let handle = ConnHandle::new(
        tx,
        peer.addr,
        local,
        peer.transport,
        peer.interface,
        peer.identity.clone(),
        tap,
    );
    (handle, rx)
}

/// Serves one connection until the peer closes it, it idles out, framing fails, or
/// `shutdown` fires.
pub async fn run<S>(
    io: S,
    handle: ConnHandle,
    mut rx: mpsc::Receiver<Bytes>,
    peer: Peer,
    handler: Arc<dyn Handler>,
    settings: StreamSettings,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    // Both buffers are allocated on first use and the read buffer is given back when the
    // connection goes quiet: ten thousand idle connections must not hold buffers each.
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    let reply = ReplyTo::Stream(handle.clone());
    let quiet = QUIET.min(settings.idle_timeout);
    let mut last_read = tokio::time::Instant::now();
    let idle = tokio::time::sleep(quiet);
    tokio::pin!(idle);
    let ping_every = settings
        .keepalive
        .unwrap_or(Duration::from_secs(86_400 * 365));
    let ping = tokio::time::sleep(ping_every);
    tokio::pin!(ping);
    // Armed while the buffer holds the start of a message; re-armed when a message
    // completes and another has begun.
    let message_due = tokio::time::sleep(settings.header_timeout);
    tokio::pin!(message_due);
    let mut partial = false;
    // Keep-alive bytes since the last message or pause, across reads (`MAX_KEEPALIVE_RUN`).
    let mut keepalive_run = 0usize;
    let reason: &str = loop {
        tokio::select! {
            // Backpressure: while half the send queue waits for the peer, its requests are
            // not read (a pipelining peer that does not read its answers would otherwise
            // lose them to the bounded queue); at most MAX_READ per read keeps the
            // answers to one read well inside the other half.
            read = async { reader.read_buf(&mut (&mut buf).limit(MAX_READ)).await }, if !settings.read_backpressure || handle.queued() < SEND_QUEUE / 2 => {
                match read {
                    Ok(0) => break "closed by peer",
                    Ok(_) => {
                        let now = tokio::time::Instant::now();
                        // A peer that pings waits for each pong: keep-alives a second or
                        // more apart are pacing, not a run.
                        if now.duration_since(last_read) >= Duration::from_secs(1) {
                            keepalive_run = 0;
                        }
                        last_read = now;
                        idle.as_mut().reset(now + quiet);
                        let consumed = match drain_frames(&mut buf, &mut keepalive_run, &peer, &reply, &handler, &settings) {
                            Ok(c) => c,
                            Err(why) => break why,
                        };
                        if buf.is_empty() {
                            partial = false;
                        } else if consumed || !partial {
                            partial = true;
                            message_due.as_mut().reset(now + settings.header_timeout);
                        }
                        if buf.is_empty() && buf.capacity() > 4 * GROW_STEP {
                            // A large message passed; an idle connection gives the space back.
                            buf = BytesMut::with_capacity(GROW_STEP);
                        } else if buf.capacity() - buf.len() < GROW_STEP / 2 {
                            buf.reserve(4 * GROW_STEP);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(peer = %peer.addr, error = %e, "read failed");
                        break "read error";
                    }
                }
            }
            msg = rx.recv() => {
                let Some(msg) = msg else { break "handle dropped" };
                let began = tokio::time::Instant::now();
                handle.capture(Direction::Sent, &msg);
                let written = match rx.try_recv() {
                    // One message queued: write it as it is, without a copy.
                    Err(_) => writer.write_all(&msg).await,
                    Ok(next) => {
                        // Batch whatever else is queued into the same write.
                        handle.capture(Direction::Sent, &next);
                        out.clear();
                        out.extend_from_slice(&msg);
                        out.extend_from_slice(&next);
                        while out.len() < 64 * 1024 {
                            match rx.try_recv() {
                                Ok(m) => {
                                    handle.capture(Direction::Sent, &m);
                                    out.extend_from_slice(&m)
                                }
                                Err(_) => break,
                            }
                        }
                        writer.write_all(&out).await
                    }
                };
                if written.is_err() || writer.flush().await.is_err() {
                    break "write error";
                }
                if out.capacity() > 64 * 1024 + GROW_STEP {
                    out = BytesMut::new();
                }
                let now = tokio::time::Instant::now();
                if partial {
                    // Time spent waiting for the peer to take our bytes is not time it
                    // took to send its message: the header timeout pauses meanwhile.
                    let due = message_due.deadline() + (now - began);
                    message_due.as_mut().reset(due);
                }
                ping.as_mut().reset(now + ping_every);
            }
            _ = &mut ping => {
                if writer.write_all(b"\r\n\r\n").await.is_err() || writer.flush().await.is_err() {
                    break "write error";
                }
                ping.as_mut().reset(tokio::time::Instant::now() + ping_every);
            }
            _ = &mut idle => {
                if last_read.elapsed() >= settings.idle_timeout {
                    break "idle timeout";
                }
                if buf.is_empty() {
                    buf = BytesMut::new();
                }
                idle.as_mut().reset(last_read + settings.idle_timeout);
            }
            _ = &mut message_due, if partial => {
                if crate::lograte::LOGS.admit(crate::lograte::Noisy::HeaderTimeout, peer.addr.ip()) {
                    tracing::info!(peer = %peer.addr, interface = %peer.interface, "message not complete within the header timeout; closing");
                }
                break "header timeout";
            }
            _ = shutdown.cancelled() => break "shutdown",
        }
    };
    rx.close();
    // Flush what was already queued (e.g. the 400 or 513 sent just before closing).
    out.clear();
    while let Ok(m) = rx.try_recv() {
        out.extend_from_slice(&m);
    }
    if !out.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = writer.write_all(&out).await;
            let _ = writer.flush().await;
        })
        .await;
    }
    let _ = tokio::time::timeout(Duration::from_millis(200), writer.shutdown()).await;
    handler.on_closed(&handle, reason);
}

/// Hands every complete message in `buf` to the handler; `Ok(true)` when anything was
/// consumed. `Err` closes the connection.
fn drain_frames(
    buf: &mut BytesMut,
    keepalive_run: &mut usize,
    peer: &Peer,
    reply: &ReplyTo,
    handler: &Arc<dyn Handler>,
    settings: &StreamSettings,
) -> Result<bool, &'static str> {
    let mut consumed = false;
    loop {
        match scan(buf, &settings.limits) {
            Ok(Scan::Incomplete) => return Ok(consumed),
            Ok(Scan::KeepAlive { len, ping }) => {
                consumed = true;
                *keepalive_run += len;
                if *keepalive_run > MAX_KEEPALIVE_RUN {
                    let head = buf.split().freeze();
                    let e = FrameError::KeepAliveRun {
                        limit: MAX_KEEPALIVE_RUN,
                    };
                    handler.on_frame_error(head, e, peer, reply);
                    return Err("keep-alive flood");
                }
                buf.advance(len);
                if ping {
                    // RFC 5626 §4.4.1: a CRLFCRLF ping is answered with a CRLF pong.
                    let _ = reply.send(Bytes::from_static(b"\r\n"));
                }
            }
            Ok(Scan::Message { len }) => {
                consumed = true;
                *keepalive_run = 0;
                // Copied out rather than split off: a slice would keep the whole read
                // buffer alive for as long as the request is held (Timer L, a retry).
                let msg = Bytes::copy_from_slice(&buf[..len]);
                buf.advance(len);
                if let ReplyTo::Stream(conn) = reply {
                    conn.capture(Direction::Received, &msg);
                }
                handler.on_message(msg, peer, reply);
            }
            Err(e) => {
                let head = buf.split().freeze();
                handler.on_frame_error(head, e, peer, reply);
                return Err("framing error");
            }
        }
    }
}
