//! Transaction timers: retransmissions, timeouts (408) and the end of each transaction,
//! fired by the edge's ticker every few milliseconds (the state machines never read the clock).

use super::*;

impl Core {
    /// Fires due transaction timers; the edge calls this every few milliseconds.
    pub fn tick(&self, now: Instant) {
        self.report_partners(now);
        crate::lograte::LOGS.flush(now);
        for key in self.txns.due(now) {
            let action = self.txns.with(&key, |e| match e {
                Entry::Client(c) => {
                    let a = c.fsm.on_timer(now);
                    let out = match a {
                        Some(client::TimerAction::Retransmit) => {
                            Tick::Send(c.bytes.clone(), c.dest.clone())
                        }
                        Some(client::TimerAction::Cancel) => Tick::Send(
                            c.forwarded
                                .as_ref()
                                .and_then(build::cancel_for)
                                .map(|b| b.freeze())
                                .unwrap_or_default(),
                            c.dest.clone(),
                        ),
                        Some(client::TimerAction::Timeout) => {
                            Tick::Timeout(c.server.clone(), c.target.clone(), c.span.clone())
                        }
                        Some(client::TimerAction::Terminate) => Tick::Remove,
                        None => Tick::Nothing,
                    };
                    (out, c.fsm.deadline())
                }
                Entry::Server(s) => {
                    let out = match s.fsm.on_timer(now) {
                        Some(server::TimerAction::Retransmit) => {
                            Tick::Send(s.last.clone().unwrap_or_default(), Some(s.reply.clone()))
                        }
                        Some(server::TimerAction::Terminate) => Tick::Remove,
                        None => Tick::Nothing,
                    };
                    (out, s.fsm.deadline())
                }
            });
            match action {
                Some(Tick::Send(bytes, Some(dest))) if !bytes.is_empty() => {
                    let _ = dest.send(bytes);
                }
                Some(Tick::Timeout(server, target, span)) => {
                    let _entered = span.enter();
                    self.txns.remove(&key);
                    let snap = self.live.load();
                    tracing::info!(target = %target, "no final response before the transaction timed out");
                    self.reject(
                        &server,
                        &Rejection::plain(Rule::ClientTimeout),
                        &snap,
                    );
                }
                Some(Tick::Remove) => {
                    self.txns.remove(&key);
                }
                _ => {}
            }
        }
    }
}

pub(super) enum Tick {
    Send(Bytes, Option<ReplyTo>),
    Timeout(TxnKey, String, tracing::Span),
    Remove,
    Nothing,
}
