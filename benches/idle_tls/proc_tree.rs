//! The memory of a proxy's whole process tree, read from `/proc`: Kamailio runs as a dozen
//! processes sharing one memory segment, sipedge as one, and both must be measured alike.

use std::collections::HashMap;

/// Resident memory summed over a process and its descendants.
#[derive(Debug, Clone, Copy)]
pub struct TreeMemory {
    pub processes: usize,
    /// Sum of `VmRSS`: a shared page counts once in every process that touched it.
    pub rss_kb: u64,
    /// Sum of `Pss` (proportional set size): a shared page is split between its users, so
    /// the sum is what the tree really holds.
    pub pss_kb: u64,
}

/// The memory of `root` and every process below it; `None` when `root` is gone.
pub fn memory(root: u32) -> Option<TreeMemory> {
    let pids = tree(root);
    let mut m = TreeMemory {
        processes: 0,
        rss_kb: 0,
        pss_kb: 0,
    };
    for (i, pid) in pids.iter().enumerate() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
        let Ok(status) = status else {
            // A descendant may exit between the scan and the read; the root may not.
            if i == 0 {
                return None;
            }
            continue;
        };
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        m.processes += 1;
        m.rss_kb += kb_field(&status, "VmRSS:").unwrap_or(0);
        m.pss_kb += kb_field(&rollup, "Pss:").unwrap_or(0);
    }
    Some(m)
}

/// `root` followed by its descendants, found through the parent PID of every process.
fn tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Some(ppid) = parent(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = vec![root];
    let mut next = 0;
    while next < out.len() {
        if let Some(c) = children.get(&out[next]) {
            out.extend(c);
        }
        next += 1;
    }
    out
}

/// The parent PID from `/proc/PID/stat`, read after the command name (which may hold
/// spaces and parentheses, hence the last `)`).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The number after `key` in a `/proc` "Key:   123 kB" listing.
fn kb_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
