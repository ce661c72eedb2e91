//! The datagram task: one datagram is one message.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::{Handler, Interface, Peer, PeerIdentity, ReplyTo, Transport};

/// Largest datagram read; bigger ones are truncated by the kernel and then fail to parse.
const MAX_DATAGRAM: usize = 65_535;

/// Reads datagrams until `shutdown` fires and hands each to the handler.
pub async fn run(
    socket: Arc<UdpSocket>,
    interface: Interface,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(MAX_DATAGRAM * 4);
    loop {
        if buf.capacity() < MAX_DATAGRAM {
            buf.reserve(MAX_DATAGRAM * 4);
        }
        let recv = tokio::select! {
            r = socket.recv_buf_from(&mut buf) => r,
            _ = shutdown.cancelled() => return,
        };
        match recv {
            Ok((n, from)) => {
                let data = buf.split_to(n).freeze();
                if data.iter().all(|b| *b == b'\r' || *b == b'\n') {
                    // Keep-alive datagrams carry no message.
                    continue;
                }
                let peer = Peer {
                    interface,
                    transport: Transport::Udp,
                    addr: from,
                    identity: PeerIdentity::anonymous(),
                };
                let reply = ReplyTo::Datagram {
                    socket: socket.clone(),
                    to: from,
                };
                handler.on_message(data, &peer, &reply);
            }
            Err(e) => {
                // ICMP port unreachable surfaces here on some systems; keep serving.
                tracing::debug!(%interface, error = %e, "udp receive error");
            }
        }
    }
}
