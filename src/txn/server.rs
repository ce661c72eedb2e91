//! Server transaction (RFC 3261 §17.2): the request this edge received.

use std::time::{Duration, Instant};

use super::TimerValues;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Received; no final response yet.
    Proceeding,
    /// A final response was sent (non-2xx for INVITE); absorbing retransmissions.
    Completed,
    /// INVITE only: the ACK for a non-2xx final arrived.
    Confirmed,
    /// INVITE only: a 2xx was sent (RFC 6026 §8.5). Later 2xx (retransmissions from the
    /// UAS, other forks) still pass for Timer L; retransmitted INVITEs are absorbed.
    Accepted,
    Terminated,
}

/// What a timer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerAction {
    /// Timer G: send the final response again (INVITE, unreliable).
    Retransmit,
    /// Timer H / I / J ran out: drop the state.
    Terminate,
}

/// What to do with a retransmitted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetransmitAction {
    /// Send the last response again.
    Resend,
    /// Nothing sent yet: absorb.
    Absorb,
}

/// A server transaction's state machine.
#[derive(Debug, Clone)]
pub struct ServerTxn {
    invite: bool,
    reliable: bool,
    state: State,
    timers: TimerValues,
    has_response: bool,
    retransmit_at: Option<Instant>,
    interval: Duration,
    end_at: Option<Instant>,
}

impl ServerTxn {
    pub fn new(invite: bool, reliable: bool, timers: TimerValues) -> Self {
        ServerTxn {
            invite,
            reliable,
            state: State::Proceeding,
            timers,
            has_response: false,
            retransmit_at: None,
            interval: timers.t1,
            end_at: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Whether a final response has been sent.
    pub fn is_final(&self) -> bool {
        !matches!(self.state, State::Proceeding)
    }

    /// Whether all that is left is to answer retransmissions of a non-INVITE request with
    /// its final response until Timer J (32 s over UDP): the request itself is not needed.
    pub fn only_resends_final(&self) -> bool {
        !self.invite && self.state == State::Completed
    }

    /// Records that a response with `status` was sent at `now`. Returns false when the
    /// transaction already sent a final response and this one must not go out.
    pub fn on_send(&mut self, status: u16, now: Instant) -> bool {
        if self.state != State::Proceeding {
            // 2xx retransmissions for INVITE pass statelessly; nothing else may follow a final.
            return self.invite && (200..300).contains(&status);
        }
        self.has_response = true;
        if status < 200 {
            return true;
        }
        if self.invite && status < 300 {
            // 2xx: the ACK is end to end; the transaction stays Accepted for Timer L
            // (64*T1) so the 2xx retransmissions the UAS sends still find their way.
            self.state = State::Accepted;
            self.end_at = Some(now + self.timers.t1 * 64);
            return true;
        }
        self.state = State::Completed;
        if self.invite {
            if !self.reliable {
                self.retransmit_at = Some(now + self.timers.t1);
            }
            self.end_at = Some(now + self.timers.t1 * 64);
        } else {
            self.end_at = Some(
                now + if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t1 * 64
                },
            );
        }
        true
    }

    /// A retransmission of the request arrived.
    pub fn on_retransmission(&self) -> RetransmitAction {
        // Accepted: the UAS retransmits its 2xx itself (RFC 6026 §8.5).
        if self.has_response && !matches!(self.state, State::Confirmed | State::Accepted) {
            RetransmitAction::Resend
        } else {
            RetransmitAction::Absorb
        }
    }

    /// The ACK for a non-2xx final arrived (INVITE). Returns whether it matched.
    pub fn on_ack(&mut self, now: Instant) -> bool {
        if self.invite && self.state == State::Completed {
            self.state = State::Confirmed;
            self.retransmit_at = None;
            self.end_at = Some(
                now + if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                },
            );
            true
        } else {
            self.state == State::Confirmed
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.end_at]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn on_timer(&mut self, now: Instant) -> Option<TimerAction> {
        if self.end_at.is_some_and(|t| t <= now) {
            self.state = State::Terminated;
            self.retransmit_at = None;
            self.end_at = None;
            return Some(TimerAction::Terminate);
        }
        if self.retransmit_at.is_some_and(|t| t <= now) {
            self.interval = (self.interval * 2).min(self.timers.t2);
            self.retransmit_at = Some(now + self.interval);
            return Some(TimerAction::Retransmit);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invite_non_2xx_over_udp_retransmits_until_ack() {
        let t0 = Instant::now();
        let mut s = ServerTxn::new(true, false, TimerValues::default());
        assert_eq!(s.on_retransmission(), RetransmitAction::Absorb);
        assert!(s.on_send(100, t0));
        assert_eq!(s.on_retransmission(), RetransmitAction::Resend);
        assert!(s.on_send(486, t0));
        assert!(!s.on_send(404, t0), "a second final is refused");
        assert_eq!(
            s.on_timer(t0 + Duration::from_millis(500)),
            Some(TimerAction::Retransmit)
        );
        assert_eq!(
            s.on_timer(t0 + Duration::from_millis(1500)),
            Some(TimerAction::Retransmit)
        );
        assert!(s.on_ack(t0 + Duration::from_millis(1600)));
        assert_eq!(s.state(), State::Confirmed);
        assert_eq!(s.on_retransmission(), RetransmitAction::Absorb);
        assert_eq!(
            s.on_timer(t0 + Duration::from_millis(6600)),
            Some(TimerAction::Terminate)
        );
    }

    #[test]
    fn reliable_non_invite_ends_at_once() {
        let t0 = Instant::now();
        let mut s = ServerTxn::new(false, true, TimerValues::default());
        assert!(s.on_send(200, t0));
        assert_eq!(s.deadline(), Some(t0));
        assert_eq!(s.on_timer(t0), Some(TimerAction::Terminate));
    }

    #[test]
    fn invite_2xx_is_accepted_for_timer_l_and_only_later_2xx_pass() {
        let t0 = Instant::now();
        let tv = TimerValues::default();
        let mut s = ServerTxn::new(true, true, tv);
        assert!(s.on_send(200, t0));
        assert_eq!(s.state(), State::Accepted);
        assert!(s.is_final());
        assert!(s.on_send(200, t0 + Duration::from_secs(1)), "a 2xx retransmission");
        assert!(!s.on_send(486, t0), "nothing but 2xx after a 2xx");
        // The UAS retransmits its 2xx itself: a retransmitted INVITE is absorbed.
        assert_eq!(s.on_retransmission(), RetransmitAction::Absorb);
        assert!(!s.on_ack(t0), "the ACK for a 2xx is end to end");
        assert_eq!(s.deadline(), Some(t0 + tv.t1 * 64));
        assert_eq!(s.on_timer(t0 + tv.t1 * 64), Some(TimerAction::Terminate));
    }
}
