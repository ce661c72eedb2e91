//! Allocations per relayed message: relays MESSAGEs through the in-process edge (see
//! `support`) and counts the allocations made on the edge runtime's threads only, so the
//! client and the pool do not blur the number. Prints one line per transport.
//!
//! `cargo bench --bench allocs` (set `ALLOCS_N` to change the number of messages).
//! `ALLOCS_SITES=N` also samples every Nth counted allocation's stack and prints the
//! sipedge functions that allocate most, to show where the count comes from.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use sipedge::transport::Transport;
use support::Relay;

/// Counts allocations (and reallocations: a growing Vec is an allocation too) made on
/// threads that set `COUNTED`, then hands them to the system allocator.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// Sample every this many counted allocations (0: no sampling).
static SAMPLE_EVERY: AtomicU64 = AtomicU64::new(0);
/// Whether samples are being taken now (after the warm-up).
static SAMPLING: AtomicU64 = AtomicU64::new(0);
/// Sampled stacks, as the first few sipedge frames, with how often each was seen.
static SITES: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
    /// Set while this thread records a sample, whose own allocations are not counted.
    static IN_SAMPLE: Cell<bool> = const { Cell::new(false) };
}

fn count(size: usize) {
    if !COUNTED.try_with(Cell::get).unwrap_or(false)
        || IN_SAMPLE.try_with(Cell::get).unwrap_or(true)
    {
        return;
    }
    let n = ALLOCS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(size as u64, Ordering::Relaxed);
    let every = SAMPLE_EVERY.load(Ordering::Relaxed);
    if every > 0 && SAMPLING.load(Ordering::Relaxed) == 1 && n % every == 0 {
        IN_SAMPLE.with(|s| s.set(true));
        sample();
        IN_SAMPLE.with(|s| s.set(false));
    }
}

/// Records the sipedge frames of the current stack (innermost first, three at most).
fn sample() {
    let trace = std::backtrace::Backtrace::force_capture().to_string();
    let frames: Vec<&str> = trace
        .lines()
        .map(str::trim)
        .filter_map(|l| l.split_once(": ").map(|(_, f)| f))
        .filter(|f| f.starts_with("sipedge::") || f.starts_with("<sipedge::"))
        .take(3)
        .collect();
    let key = if frames.is_empty() {
        "(outside sipedge: tokio, std)".to_string()
    } else {
        frames.join(" <- ")
    };
    if let Ok(mut sites) = SITES.lock() {
        *sites
            .get_or_insert_with(HashMap::new)
            .entry(key)
            .or_default() += 1;
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
    let every: u64 = std::env::var("ALLOCS_SITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    SAMPLE_EVERY.store(every, Ordering::Relaxed);
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
        SAMPLING.store(1, Ordering::Relaxed);
        relay.round_trips(n);
        SAMPLING.store(0, Ordering::Relaxed);
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
        print_sites(a1 - a0, n);
    }
}

/// The sampled sites, most frequent first, scaled to allocations per message.
fn print_sites(counted: u64, n: u64) {
    let Some(sites) = SITES.lock().ok().and_then(|mut s| s.take()) else {
        return;
    };
    let total: u64 = sites.values().sum();
    let mut sites: Vec<_> = sites.into_iter().collect();
    sites.sort_by_key(|s| std::cmp::Reverse(s.1));
    for (site, seen) in sites.iter().take(40) {
        let per_msg = counted as f64 * *seen as f64 / total as f64 / n as f64;
        println!("  {per_msg:5.1}  {site}");
    }
}
