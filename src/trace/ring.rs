//! The last messages of recent calls, by Call-ID, within a memory budget.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use super::Captured;

/// What a kept message costs beyond its bytes: the record and its map entry, roughly.
const OVERHEAD: usize = 128;

/// Calls in the order they were first seen; the oldest go first when over the budget.
#[derive(Debug)]
pub struct Ring {
    budget: usize,
    used: usize,
    calls: HashMap<String, VecDeque<Captured>>,
    order: VecDeque<String>,
}

impl Ring {
    pub fn new(budget: usize) -> Ring {
        Ring {
            budget,
            used: 0,
            calls: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn cost(call_id: &str, bytes: &[u8]) -> usize {
        bytes.len() + call_id.len() + OVERHEAD
    }

    /// Keeps `c` under `call_id`, evicting the oldest calls (or, when `c`'s own call is the
    /// oldest, its oldest messages) until the budget holds.
    pub fn push(&mut self, call_id: &str, c: &Captured) {
        let cost = Self::cost(call_id, &c.bytes);
        if cost > self.budget {
            return;
        }
        // Its bytes copied, so that no receive buffer stays pinned.
        let kept = Captured {
            bytes: Bytes::copy_from_slice(&c.bytes),
            ..c.clone()
        };
        match self.calls.get_mut(call_id) {
            Some(v) => v.push_back(kept),
            None => {
                self.calls
                    .insert(call_id.to_string(), VecDeque::from([kept]));
                self.order.push_back(call_id.to_string());
            }
        }
        self.used += cost;
        while self.used > self.budget {
            let Some(oldest) = self.order.front().cloned() else {
                break;
            };
            if oldest == call_id {
                let calls = self.calls.get_mut(&oldest).expect("ordered calls are kept");
                if let Some(m) = calls.pop_front() {
                    self.used -= Self::cost(&oldest, &m.bytes);
                }
                continue;
            }
            self.order.pop_front();
            for m in self.calls.remove(&oldest).unwrap_or_default() {
                self.used -= Self::cost(&oldest, &m.bytes);
            }
        }
    }

    /// The kept messages of one call, oldest first.
    pub fn call(&self, call_id: &str) -> Vec<Captured> {
        self.calls
            .get(call_id)
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Bytes accounted to the kept messages.
    pub fn used(&self) -> usize {
        self.used
    }

    pub fn calls(&self) -> usize {
        self.calls.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::{Interface, Transport};
    use crate::trace::Direction;
    use std::net::SocketAddr;
    use std::time::SystemTime;

    fn msg(n: usize) -> Captured {
        let a: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        Captured {
            at: SystemTime::now(),
            direction: Direction::Received,
            interface: Interface::External,
            transport: Transport::Udp,
            local: a,
            remote: a,
            bytes: Bytes::from(vec![b'x'; n]),
        }
    }

    #[test]
    fn the_oldest_calls_are_evicted_first_and_the_budget_holds() {
        let one = Ring::cost("c0", &[0; 1000]);
        let mut ring = Ring::new(3 * one);
        for id in ["c0", "c1", "c2"] {
            ring.push(id, &msg(1000));
        }
        assert_eq!(ring.calls(), 3);
        ring.push("c1", &msg(1000));
        assert!(ring.call("c0").is_empty(), "the oldest call went first");
        assert_eq!(ring.call("c1").len(), 2);
        assert!(ring.used() <= 3 * one);
        ring.push("c3", &msg(1000));
        ring.push("c3", &msg(1000));
        assert!(ring.call("c1").is_empty(), "the whole oldest call went");
        assert_eq!(ring.call("c2").len(), 1);
        assert_eq!(ring.call("c3").len(), 2);
        assert!(ring.used() <= 3 * one);
    }

    #[test]
    fn a_call_that_is_the_oldest_loses_its_own_oldest_messages() {
        let one = Ring::cost("c", &[0; 100]);
        let mut ring = Ring::new(2 * one);
        for _ in 0..5 {
            ring.push("c", &msg(100));
        }
        assert_eq!(ring.call("c").len(), 2);
        let mut none = Ring::new(0);
        none.push("c", &msg(1));
        assert_eq!(none.calls(), 0, "a zero budget keeps nothing");
    }
}
