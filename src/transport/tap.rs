//! Where the transports hand messages to the edge's `trace::Tap`, in one place.
//!
//! A stream connection carries its edge's tap in its handle. A datagram is sent through a
//! shared socket by a free function, so the edge registers its UDP sockets here; the
//! lookup runs only while some edge in the process records (one atomic load otherwise).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Weak};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::net::UdpSocket;

use super::{Interface, Transport};
use crate::trace::{Direction, Tap};

struct Registered {
    socket: Weak<UdpSocket>,
    interface: Interface,
    local: SocketAddr,
    tap: Weak<Tap>,
}

static RECORDING: AtomicBool = AtomicBool::new(false);
/// Read on every datagram sent while recording: a lock-free snapshot, replaced whole when
/// an edge registers its sockets.
static SOCKETS: LazyLock<ArcSwap<Vec<Arc<Registered>>>> = LazyLock::new(ArcSwap::default);

/// Records what `tap`'s edge sends through `socket` (its listening socket of `interface`).
pub fn register_datagram_socket(socket: &Arc<UdpSocket>, interface: Interface, tap: &Arc<Tap>) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let added = Arc::new(Registered {
        socket: Arc::downgrade(socket),
        interface,
        local,
        tap: Arc::downgrade(tap),
    });
    SOCKETS.rcu(|current| {
        let mut next: Vec<Arc<Registered>> = current
            .iter()
            .filter(|r| r.socket.strong_count() > 0 && r.tap.strong_count() > 0)
            .cloned()
            .collect();
        next.push(added.clone());
        next
    });
    RECORDING.store(true, Ordering::Release);
}

/// A datagram left `socket` for `to`.
#[inline]
pub(super) fn datagram_sent(socket: &Arc<UdpSocket>, to: SocketAddr, msg: &Bytes) {
    if RECORDING.load(Ordering::Relaxed) {
        datagram_sent_slow(socket, to, msg);
    }
}

#[cold]
fn datagram_sent_slow(socket: &Arc<UdpSocket>, to: SocketAddr, msg: &Bytes) {
    let found = SOCKETS
        .load()
        .iter()
        .find(|r| std::ptr::eq(r.socket.as_ptr(), Arc::as_ptr(socket)))
        .and_then(|r| Some((r.tap.upgrade()?, r.interface, r.local)));
    if let Some((tap, interface, local)) = found {
        tap.capture(Direction::Sent, interface, Transport::Udp, local, to, msg);
    }
}
