//! Allocations per relayed message: relays MESSAGEs through the in-process edge (see
//! `support`) and counts the allocations made on the edge runtime's threads only, so the
//! client and the pool do not blur the number. Prints one line per transport.
//!
//! `cargo bench --bench allocs` (set `ALLOCS_N` to change the number of messages).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use sipedge::transport::Transport;
use support::Relay;

/// Counts allocations (and reallocations: a growing Vec is an allocation too) made on
/// threads that set `COUNTED`, then hands them to the system allocator.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count(size: usize) {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; counting touches only atomics
// and a const-initialised thread-local, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let n: u64 = std::env::var("ALLOCS_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    println!(
        "allocations on the edge's threads per relayed MESSAGE (request + its 200), {n} messages, {} in flight",
        support::WINDOW
    );
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut relay = match Relay::start(transport, || COUNTED.with(|c| c.set(true))) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("start the {transport:?} relay: {e}");
                std::process::exit(1);
            }
        };
        // Warm: connections open, table shards and buffers grown.
        relay.round_trips(1_000);
        let (a0, b0) = (
            ALLOCS.load(Ordering::Relaxed),
            BYTES.load(Ordering::Relaxed),
        );
        relay.round_trips(n);
        let (a1, b1) = (
            ALLOCS.load(Ordering::Relaxed),
            BYTES.load(Ordering::Relaxed),
        );
        println!(
            "{transport:?}: {:.1} allocations, {:.0} bytes per relayed message (lost: {})",
            (a1 - a0) as f64 / n as f64,
            (b1 - b0) as f64 / n as f64,
            relay.lost
        );
    }
}
