//! Client transaction (RFC 3261 §17.1): the request this edge forwarded.

use std::time::{Duration, Instant};

use super::TimerValues;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// INVITE "Calling" / non-INVITE "Trying".
    Trying,
    Proceeding,
    Completed,
    /// INVITE only: a 2xx arrived (RFC 6026 §7.2). Further 2xx (retransmissions, other
    /// forks) are still relayed until Timer M (64*T1); nothing else is.
    Accepted,
    Terminated,
}

/// What to do with a response the transaction received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseAction {
    /// Pass it to the server transaction (relay upstream).
    Forward,
    /// A non-2xx final to an INVITE: send the hop-by-hop ACK, then relay it.
    AckAndForward,
    /// A retransmitted non-2xx final to an INVITE: send the ACK again, relay nothing.
    AckOnly,
    /// A retransmission or late response: absorb it.
    Absorb,
}

/// What a timer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerAction {
    /// Timer A / E: send the request again (unreliable transports only).
    Retransmit,
    /// Timer B / F: no final response; the upstream gets 408.
    Timeout,
    /// Timer C with a provisional received: cancel the INVITE downstream.
    Cancel,
    /// Timer D / K ran out or the transaction is done: drop the state.
    Terminate,
}

/// A client transaction's state machine.
#[derive(Debug, Clone)]
pub struct ClientTxn {
    invite: bool,
    reliable: bool,
    state: State,
    timers: TimerValues,
    retransmit_at: Option<Instant>,
    interval: Duration,
    timeout_at: Option<Instant>,
    timer_c_at: Option<Instant>,
    end_at: Option<Instant>,
    cancelled: bool,
}

impl ClientTxn {
    /// Starts a transaction for a request just sent at `now`.
    pub fn new(invite: bool, reliable: bool, timers: TimerValues, now: Instant) -> Self {
        ClientTxn {
            invite,
            reliable,
            state: State::Trying,
            timers,
            retransmit_at: (!reliable).then(|| now + timers.t1),
            interval: timers.t1,
            timeout_at: Some(now + timers.t1 * 64),
            timer_c_at: invite.then(|| now + timers.timer_c),
            end_at: None,
            cancelled: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Whether a provisional response has arrived (CANCEL may be sent only then).
    pub fn is_proceeding(&self) -> bool {
        self.state == State::Proceeding
    }

    pub fn is_invite(&self) -> bool {
        self.invite
    }

    /// Feeds a response with `status`.
    pub fn on_response(&mut self, status: u16, now: Instant) -> ResponseAction {
        let provisional = status < 200;
        match self.state {
            State::Trying | State::Proceeding => {
                if provisional {
                    self.state = State::Proceeding;
                    if self.invite {
                        // Timer A and B stop once the INVITE is known to have arrived;
                        // Timer C restarts with every provisional (§16.7 step 2).
                        self.retransmit_at = None;
                        self.timeout_at = None;
                        self.timer_c_at = Some(now + self.timers.timer_c);
                    } else if !self.reliable {
                        self.interval = self.timers.t2;
                        self.retransmit_at = Some(now + self.timers.t2);
                    }
                    return ResponseAction::Forward;
                }
                self.retransmit_at = None;
                self.timeout_at = None;
                self.timer_c_at = None;
                if self.invite && status < 300 {
                    // The ACK for a 2xx is end to end; the transaction stays Accepted for
                    // Timer M so retransmitted 2xx still reach the UAC.
                    self.state = State::Accepted;
                    self.end_at = Some(now + self.timers.t1 * 64);
                    return ResponseAction::Forward;
                }
                self.state = State::Completed;
                let linger = match (self.reliable, self.invite) {
                    (true, _) => Duration::ZERO,
                    (false, true) => Duration::from_secs(32),
                    (false, false) => self.timers.t4,
                };
                self.end_at = Some(now + linger);
                if self.invite {
                    ResponseAction::AckAndForward
                } else {
                    ResponseAction::Forward
                }
            }
            State::Completed => {
                if self.invite && !provisional && status >= 300 {
                    ResponseAction::AckOnly
                } else {
                    ResponseAction::Absorb
                }
            }
            State::Accepted if (200..300).contains(&status) => ResponseAction::Forward,
            State::Accepted | State::Terminated => ResponseAction::Absorb,
        }
    }

    /// Marks the INVITE as cancelled (a CANCEL was sent); Timer C no longer cancels again.
    pub fn mark_cancelled(&mut self) {
        self.cancelled = true;
    }

    /// The next instant something is due, if any.
    pub fn deadline(&self) -> Option<Instant> {
        [
            self.retransmit_at,
            self.timeout_at,
            self.timer_c_at,
            self.end_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires whatever is due at `now`.
    pub fn on_timer(&mut self, now: Instant) -> Option<TimerAction> {
        if self.end_at.is_some_and(|t| t <= now) {
            self.state = State::Terminated;
            self.clear();
            return Some(TimerAction::Terminate);
        }
        if self.timeout_at.is_some_and(|t| t <= now) {
            self.state = State::Terminated;
            self.clear();
            self.end_at = Some(now);
            return Some(TimerAction::Timeout);
        }
        if self.timer_c_at.is_some_and(|t| t <= now) {
            self.timer_c_at = None;
            if self.state == State::Proceeding && !self.cancelled {
                self.cancelled = true;
                // Wait up to 64*T1 for the 487 before giving up on the branch.
                self.timeout_at = Some(now + self.timers.t1 * 64);
                return Some(TimerAction::Cancel);
            }
            self.state = State::Terminated;
            self.clear();
            self.end_at = Some(now);
            return Some(TimerAction::Timeout);
        }
        if self.retransmit_at.is_some_and(|t| t <= now) {
            self.interval = if self.invite {
                self.interval * 2
            } else {
                (self.interval * 2).min(self.timers.t2)
            };
            if self.state == State::Proceeding && !self.invite {
                self.interval = self.timers.t2;
            }
            self.retransmit_at = Some(now + self.interval);
            return Some(TimerAction::Retransmit);
        }
        None
    }

    fn clear(&mut self) {
        self.retransmit_at = None;
        self.timeout_at = None;
        self.timer_c_at = None;
        self.end_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn non_invite_over_udp_retransmits_with_backoff_then_times_out() {
        let t0 = Instant::now();
        let mut c = ClientTxn::new(false, false, TimerValues::default(), t0);
        let mut fired = Vec::new();
        let mut now = t0;
        while let Some(d) = c.deadline() {
            now = d;
            match c.on_timer(now) {
                Some(TimerAction::Retransmit) => fired.push((now - t0).as_millis()),
                Some(TimerAction::Timeout) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(&fired[..5], &[500, 1500, 3500, 7500, 11500]);
        assert_eq!(now - t0, ms(32_000));
    }

    #[test]
    fn reliable_non_invite_never_retransmits() {
        let t0 = Instant::now();
        let mut c = ClientTxn::new(false, true, TimerValues::default(), t0);
        assert_eq!(c.deadline(), Some(t0 + ms(32_000)));
        assert_eq!(c.on_response(200, t0 + ms(5)), ResponseAction::Forward);
        assert_eq!(c.on_timer(t0 + ms(5)), Some(TimerAction::Terminate));
        assert_eq!(c.on_response(200, t0 + ms(6)), ResponseAction::Absorb);
    }

    #[test]
    fn invite_non_2xx_is_acked_and_retransmissions_re_acked() {
        let t0 = Instant::now();
        let mut c = ClientTxn::new(true, false, TimerValues::default(), t0);
        assert_eq!(c.on_response(180, t0), ResponseAction::Forward);
        assert_eq!(c.on_response(486, t0), ResponseAction::AckAndForward);
        assert_eq!(c.on_response(486, t0 + ms(100)), ResponseAction::AckOnly);
        assert_eq!(c.on_timer(t0 + ms(32_000)), Some(TimerAction::Terminate));
    }

    #[test]
    fn invite_2xx_is_accepted_for_timer_m_and_only_2xx_are_relayed() {
        let t0 = Instant::now();
        let tv = TimerValues::default();
        let mut c = ClientTxn::new(true, false, tv, t0);
        assert_eq!(c.on_response(180, t0), ResponseAction::Forward);
        assert_eq!(c.on_response(200, t0 + ms(10)), ResponseAction::Forward);
        assert_eq!(c.state(), State::Accepted);
        assert!(!c.is_proceeding(), "no CANCEL after a 2xx");
        assert_eq!(
            c.on_response(200, t0 + ms(510)),
            ResponseAction::Forward,
            "the UAS's retransmitted 2xx still reaches the UAC"
        );
        assert_eq!(c.on_response(180, t0 + ms(600)), ResponseAction::Absorb);
        assert_eq!(c.on_response(486, t0 + ms(600)), ResponseAction::Absorb);
        assert_eq!(c.deadline(), Some(t0 + ms(10) + tv.t1 * 64), "Timer M");
        assert_eq!(
            c.on_timer(t0 + ms(10) + tv.t1 * 64),
            Some(TimerAction::Terminate)
        );
        assert_eq!(c.on_response(200, t0 + ms(40_000)), ResponseAction::Absorb);
    }

    #[test]
    fn timer_c_cancels_a_ringing_invite_and_times_out_a_silent_one() {
        let t0 = Instant::now();
        let tv = TimerValues::default();
        let mut c = ClientTxn::new(true, true, tv, t0);
        c.on_response(180, t0 + ms(10));
        assert_eq!(c.deadline(), Some(t0 + ms(10) + tv.timer_c));
        assert_eq!(
            c.on_timer(t0 + ms(10) + tv.timer_c),
            Some(TimerAction::Cancel)
        );
        let mut s = ClientTxn::new(true, true, tv, t0);
        // Timer B (32 s) fires long before Timer C when nothing at all comes back.
        assert_eq!(s.on_timer(t0 + ms(32_000)), Some(TimerAction::Timeout));
    }
}
