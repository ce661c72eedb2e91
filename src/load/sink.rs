//! `sipedge sink`: answers every request at once and keeps no state, to stand in for the
//! UAS behind a proxy and to measure the load generator's own ceiling.
//!
//! INVITE gets 200 with a small SDP answer, ACK is absorbed, SUBSCRIBE gets 200 and then
//! a NOTIFY sent back the way the SUBSCRIBE came (same connection, or the UDP source),
//! with the Record-Route set as its Route. `--status` makes every answer that code.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::sip::framing::{self, FrameLimits, Scan};
use crate::sip::{HeaderName, Message, Method};
use crate::tls::TlsMaterial;
use crate::transport::Transport;

/// How the sink answers.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub transport: Transport,
    /// The final status for every request (200 normally).
    pub status: u16,
    /// TLS: our certificate; with `require_client_cert` clients must present one from
    /// the same CA.
    pub tls: Option<TlsMaterial>,
    pub require_client_cert: bool,
}

/// Why the sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS transport needs a certificate (--cert)")]
    NoCert,
    #[error("TLS configuration: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("--status {0}: must be a final status 200-699")]
    BadStatus(u16),
}

/// A bound sink, before it serves.
pub struct Sink {
    cfg: Arc<SinkConfig>,
    local: SocketAddr,
    socket: Bound,
}

enum Bound {
    Udp(UdpSocket),
    Stream(TcpListener),
}

impl Sink {
    pub async fn bind(addr: SocketAddr, cfg: SinkConfig) -> Result<Sink, SinkError> {
        if !(200..700).contains(&cfg.status) {
            return Err(SinkError::BadStatus(cfg.status));
        }
        if cfg.transport == Transport::Tls && cfg.tls.is_none() {
            return Err(SinkError::NoCert);
        }
        let bind_err = |source| SinkError::Bind { addr, source };
        let socket = match cfg.transport {
            Transport::Udp => Bound::Udp(crate::edge::bind_udp(addr).map_err(bind_err)?),
            _ => Bound::Stream(TcpListener::bind(addr).await.map_err(bind_err)?),
        };
        let local = match &socket {
            Bound::Udp(s) => s.local_addr(),
            Bound::Stream(l) => l.local_addr(),
        }
        .map_err(|source| SinkError::Bind { addr, source })?;
        Ok(Sink {
            cfg: Arc::new(cfg),
            local,
            socket,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until `stop` is cancelled.
    pub async fn serve(self, stop: CancellationToken) -> Result<(), SinkError> {
        match self.socket {
            Bound::Udp(s) => {
                let s = Arc::new(s);
                // One reader per core: a datagram socket can be read from several tasks.
                let n = std::thread::available_parallelism().map_or(1, |n| n.get());
                let mut tasks = Vec::new();
                for _ in 0..n {
                    tasks.push(tokio::spawn(serve_udp(
                        s.clone(),
                        self.cfg.clone(),
                        self.local,
                        stop.clone(),
                    )));
                }
                for t in tasks {
                    let _ = t.await;
                }
                Ok(())
            }
            Bound::Stream(l) => {
                let acceptor = match &self.cfg.tls {
                    Some(m) if self.cfg.transport == Transport::Tls => {
                        Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
                            m,
                            self.cfg.require_client_cert,
                        )?))
                    }
                    _ => None,
                };
                loop {
                    let tcp = tokio::select! {
                        r = l.accept() => match r {
                            Ok((s, _)) => s,
                            Err(e) => {
                                tracing::warn!(error = %e, "sink accept failed");
                                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                                continue;
                            }
                        },
                        _ = stop.cancelled() => return Ok(()),
                    };
                    let _ = tcp.set_nodelay(true);
                    let (cfg, local, stop, acceptor) =
                        (self.cfg.clone(), self.local, stop.clone(), acceptor.clone());
                    tokio::spawn(async move {
                        match acceptor {
                            None => {
                                let (rd, wr) = tcp.into_split();
                                serve_stream(rd, wr, cfg, local, stop).await
                            }
                            Some(a) => match a.accept(tcp).await {
                                Ok(s) => {
                                    let (rd, wr) = tokio::io::split(s);
                                    serve_stream(rd, wr, cfg, local, stop).await
                                }
                                Err(e) => tracing::info!(error = %e, "sink TLS handshake failed"),
                            },
                        }
                    });
                }
            }
        }
    }
}

async fn serve_udp(
    s: Arc<UdpSocket>,
    cfg: Arc<SinkConfig>,
    local: SocketAddr,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::with_capacity(2048);
    loop {
        let (n, from) = tokio::select! {
            r = s.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
            _ = stop.cancelled() => return,
        };
        let Ok(msg) = Message::parse(Bytes::copy_from_slice(&buf[..n]), true) else {
            continue;
        };
        out.clear();
        if answer(&msg, &cfg, local, &mut out) {
            for m in split_messages(&out) {
                let _ = s.send_to(m, from).await;
            }
        }
    }
}

async fn serve_stream<R, W>(
    mut rd: R,
    wr: W,
    cfg: Arc<SinkConfig>,
    local: SocketAddr,
    stop: CancellationToken,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // The writer is its own task so a slow reader on the other side never stops us reading.
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        let mut wr = wr;
        let mut buf = Vec::with_capacity(64 * 1024);
        while let Some(first) = rx.recv().await {
            buf.clear();
            buf.extend_from_slice(&first);
            while let Ok(more) = rx.try_recv() {
                buf.extend_from_slice(&more);
                if buf.len() > 256 * 1024 {
                    break;
                }
            }
            if wr.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let limits = FrameLimits::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut out = Vec::with_capacity(16 * 1024);
    'conn: loop {
        out.clear();
        loop {
            match framing::scan(&buf, &limits) {
                Ok(Scan::Message { len }) => {
                    let bytes = buf.split_to(len).freeze();
                    if let Ok(msg) = Message::parse(bytes, false) {
                        answer(&msg, &cfg, local, &mut out);
                    }
                }
                Ok(Scan::KeepAlive { len, ping }) => {
                    let _ = buf.split_to(len);
                    if ping {
                        out.extend_from_slice(b"\r\n");
                    }
                }
                Ok(Scan::Incomplete) => break,
                Err(_) => break 'conn,
            }
        }
        if !out.is_empty() && tx.send(std::mem::take(&mut out)).is_err() {
            break;
        }
        if buf.capacity() - buf.len() < 8 * 1024 {
            buf.reserve(64 * 1024);
        }
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            _ = stop.cancelled() => break,
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Appends the answer(s) to `msg` to `out`; false when there is nothing to send.
fn answer(msg: &Message, cfg: &SinkConfig, local: SocketAddr, out: &mut Vec<u8>) -> bool {
    if !msg.is_request() || msg.method() == Method::Ack {
        return false;
    }
    let status = cfg.status;
    let ok = (200..300).contains(&status);
    let method = msg.method();
    let mut extra = String::new();
    let mut body: &str = "";
    if ok && matches!(method, Method::Invite | Method::Subscribe) {
        extra.push_str(&format!(
            "Contact: <sip:sink@{local};transport={}>\r\n",
            cfg.transport.as_str()
        ));
        if method == Method::Subscribe {
            extra.push_str("Expires: 60\r\n");
        }
    }
    if ok && method == Method::Invite {
        body = SDP_ANSWER;
        extra.push_str("Content-Type: application/sdp\r\n");
    }
    response(
        msg,
        status,
        &extra,
        body,
        ok && method.creates_dialog(),
        out,
    );
    if ok && method == Method::Subscribe {
        notify(msg, cfg.transport, local, out);
    }
    true
}

/// The answer to an INVITE: audio accepted.
const SDP_ANSWER: &str = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49172 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        603 => "Decline",
        _ => "Sink Answer",
    }
}

/// Copies Via, From, To (adding our tag), Call-ID, CSeq and, for a dialog, Record-Route.
fn response(msg: &Message, status: u16, extra: &str, body: &str, dialog: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("SIP/2.0 {status} {}\r\n", reason(status)).as_bytes());
    let b = msg.bytes();
    for h in msg.headers() {
        let copy = match h.name {
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => true,
            HeaderName::RecordRoute => dialog,
            HeaderName::To => {
                out.extend_from_slice(&b[h.name_range.start..h.value.end]);
                if msg.to().and_then(|t| t.tag()).is_none() {
                    out.extend_from_slice(b";tag=sink");
                }
                out.extend_from_slice(b"\r\n");
                false
            }
            _ => false,
        };
        if copy {
            // `line` ends with its own CRLF.
            out.extend_from_slice(&b[h.line.clone()]);
        }
    }
    out.extend_from_slice(extra.as_bytes());
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
}

/// The NOTIFY that follows an accepted SUBSCRIBE (RFC 6665 §4.2.1): to the subscriber's
/// Contact, along the Record-Route set, in the dialog the 200 created.
fn notify(sub: &Message, transport: Transport, local: SocketAddr, out: &mut Vec<u8>) {
    let (Some(call_id), Some(from_raw), Some(to_raw), Some(contact)) = (
        sub.call_id(),
        sub.header_value(HeaderName::From),
        sub.header_value(HeaderName::To),
        sub.header_value(HeaderName::Contact),
    ) else {
        return;
    };
    let Some(target) = contact.find('<').and_then(|a| {
        contact[a + 1..]
            .find('>')
            .map(|b| &contact[a + 1..a + 1 + b])
    }) else {
        return;
    };
    let branch = format!("z9hG4bKsinkn{:016x}", rand::random::<u64>());
    let mut routes = String::new();
    for (_, r) in sub.values(HeaderName::RecordRoute) {
        routes.push_str(&format!("Route: {}\r\n", sub.text(r).trim()));
    }
    let to_tag = if sub.to().and_then(|t| t.tag()).is_some() {
        ""
    } else {
        ";tag=sink"
    };
    out.extend_from_slice(
        format!(
            "NOTIFY {target} SIP/2.0\r\n\
             Via: SIP/2.0/{} {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             {routes}\
             From: {to_raw}{to_tag}\r\n\
             To: {from_raw}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 NOTIFY\r\n\
             Contact: <sip:sink@{local};transport={}>\r\n\
             Event: presence\r\n\
             Subscription-State: active;expires=60\r\n\
             Content-Length: 0\r\n\r\n",
            transport.via_token(),
            transport.as_str(),
        )
        .as_bytes(),
    );
}

/// Splits concatenated messages (each with Content-Length) for sending one per datagram.
fn split_messages(buf: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        match framing::scan(rest, &FrameLimits::default()) {
            Ok(Scan::Message { len }) => {
                out.push(&rest[..len]);
                rest = &rest[len..];
            }
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Message {
        Message::parse(Bytes::from(text.to_string()), true).unwrap()
    }

    const SUB: &str = "SUBSCRIBE sip:bob@contoso.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\nRecord-Route: <sip:edge;lr>\r\nFrom: <sip:alice@fabrikam.test>;tag=a\r\nTo: <sip:bob@contoso.test>\r\nCall-ID: c1\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:alice@127.0.0.1:4000>\r\nEvent: presence\r\nContent-Length: 0\r\n\r\n";

    fn cfg(status: u16) -> SinkConfig {
        SinkConfig {
            transport: Transport::Udp,
            status,
            tls: None,
            require_client_cert: false,
        }
    }

    #[test]
    fn subscribe_gets_200_then_a_notify_along_the_route_set() {
        let mut out = Vec::new();
        assert!(answer(
            &req(SUB),
            &cfg(200),
            "127.0.0.1:5070".parse().unwrap(),
            &mut out
        ));
        let parts = split_messages(&out);
        assert_eq!(parts.len(), 2, "{}", String::from_utf8_lossy(&out));
        let ok = Message::parse(Bytes::copy_from_slice(parts[0]), true).unwrap();
        assert_eq!(ok.status(), Some(200));
        assert_eq!(ok.to().unwrap().tag(), Some("sink"));
        let n = Message::parse(Bytes::copy_from_slice(parts[1]), true).unwrap();
        assert_eq!(n.method(), Method::Notify);
        assert_eq!(n.text(n.uri_range().unwrap()), "sip:alice@127.0.0.1:4000");
        assert_eq!(
            n.header_value(HeaderName::Route).as_deref(),
            Some("<sip:edge;lr>")
        );
        assert_eq!(n.to().unwrap().tag(), Some("a"));
        assert_eq!(n.from().unwrap().tag(), Some("sink"));
    }

    #[test]
    fn a_configured_status_answers_everything_but_ack() {
        let mut out = Vec::new();
        assert!(answer(
            &req(SUB),
            &cfg(486),
            "127.0.0.1:5070".parse().unwrap(),
            &mut out
        ));
        let parts = split_messages(&out);
        assert_eq!(parts.len(), 1, "no NOTIFY after a refusal");
        assert!(parts[0].starts_with(b"SIP/2.0 486 Busy Here\r\n"));
        let ack = SUB.replace("SUBSCRIBE", "ACK");
        assert!(!answer(
            &req(&ack),
            &cfg(200),
            "127.0.0.1:5070".parse().unwrap(),
            &mut Vec::new()
        ));
    }
}
