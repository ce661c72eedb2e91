//! The datagram task: one datagram is one message.

use std::sync::Arc;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::{Handler, Interface, Peer, PeerIdentity, ReplyTo, Transport};
use crate::trace::Direction;

/// Largest datagram read; bigger ones are truncated by the kernel and then fail to parse.
const MAX_DATAGRAM: usize = 65_535;

// Each datagram is copied out of one reused receive buffer into bytes of its own size: a
// request kept for Timer J (32 s) then holds its own few hundred bytes, never a shared
// block with whatever else arrived beside it (a garbage flood pinned 256 KiB per kept
// request that way).

/// Reads datagrams until `shutdown` fires and hands each to the handler.
pub async fn run(
    socket: Arc<UdpSocket>,
    interface: Interface,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let tap = handler.tap();
    let local = socket.local_addr().ok();
    loop {
        let recv = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = shutdown.cancelled() => return,
        };
        match recv {
            Ok((n, from)) => {
                let received = &buf[..n];
                if received.iter().all(|b| *b == b'\r' || *b == b'\n') {
                    // Keep-alive datagrams carry no message.
                    continue;
                }
                let data = Bytes::copy_from_slice(received);
                if let (Some(tap), Some(local)) = (&tap, local) {
                    tap.capture(Direction::Received, interface, Transport::Udp, local, from, &data);
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
