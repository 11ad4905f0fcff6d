//! Tells users before their tokens end: `token-expiring` 60 and 10 minutes
//! before a token's end, `token-expired` when it has ended, each once per
//! token. Coda warns an hour ahead (`userent::CheckTokenExpiry`); a user
//! who hears nothing finds out only when a write is refused or replay
//! pauses.
//!
//! The decision ([`Watch::tick`]) takes the time as an argument, so it is
//! tested without waiting; [`watch_loop`] runs it every few seconds over
//! the tokens in memory. A new token (aklog) is a new generation: its
//! warnings start again.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use crate::client::Inner;
use crate::events::EventKind;
use crate::status::now_secs;

/// How often the tokens are looked at: a warning is at most this late.
const TICK: Duration = Duration::from_secs(5);

/// The warnings, in minutes before the end, earliest first.
const WARN_MINUTES: [u64; 2] = [60, 10];

/// One token as the watch sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TokenEnd {
    pub(crate) uid: u32,
    pub(crate) cell: String,
    pub(crate) end: u64,
    /// Changes when the token is replaced.
    pub(crate) generation: u64,
}

/// How far along its life a token was last reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// Nothing said yet.
    Quiet,
    /// Warned at `WARN_MINUTES[i]`.
    Warned(usize),
    Expired,
}

fn stage_at(end: u64, now: u64) -> Stage {
    if end <= now {
        return Stage::Expired;
    }
    let left = end - now;
    let mut stage = Stage::Quiet;
    for (i, m) in WARN_MINUTES.iter().enumerate() {
        if left <= m * 60 {
            stage = Stage::Warned(i);
        }
    }
    stage
}

/// What was said about each (uid, cell)'s token.
#[derive(Default)]
pub(crate) struct Watch {
    said: HashMap<(u32, String), (u64, Stage)>,
}

impl Watch {
    /// The events due at `now` for these tokens. A token first seen (or
    /// replaced) already inside a warning window gets that window's event
    /// once, not every earlier one; a token gone (unlog) is forgotten.
    pub(crate) fn tick(&mut self, now: u64, tokens: &[TokenEnd]) -> Vec<(u32, EventKind)> {
        let mut out = Vec::new();
        self.said
            .retain(|(uid, cell), _| tokens.iter().any(|t| t.uid == *uid && &t.cell == cell));
        for t in tokens {
            let key = (t.uid, t.cell.clone());
            let before = match self.said.get(&key) {
                Some((g, s)) if *g == t.generation => *s,
                _ => Stage::Quiet,
            };
            let now_stage = stage_at(t.end, now);
            if now_stage > before {
                let kind = match now_stage {
                    Stage::Expired => EventKind::TokenExpired {
                        cell: t.cell.clone(),
                        end: t.end,
                    },
                    Stage::Warned(_) => EventKind::TokenExpiring {
                        cell: t.cell.clone(),
                        end: t.end,
                        // Rounded up: "within 5 minutes" for 4m30s left.
                        minutes: (t.end - now).div_ceil(60),
                    },
                    Stage::Quiet => unreachable!("Quiet is the least stage"),
                };
                out.push((t.uid, kind));
            }
            self.said.insert(key, (t.generation, now_stage.max(before)));
        }
        out
    }
}

/// Runs the watch until the client is gone.
pub(crate) async fn watch_loop(weak: Weak<Inner>) {
    let mut watch = Watch::default();
    loop {
        {
            let Some(inner) = weak.upgrade() else { return };
            let tokens = inner.valid.tokens.ends();
            for (uid, kind) in watch.tick(now_secs(), &tokens) {
                inner.valid.conn.events.emit(Some(uid), kind);
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(uid: u32, end: u64, generation: u64) -> TokenEnd {
        TokenEnd {
            uid,
            cell: "test.lab".into(),
            end,
            generation,
        }
    }

    fn names(ev: &[(u32, EventKind)]) -> Vec<(u32, String)> {
        ev.iter()
            .map(|(u, k)| {
                let what = match k {
                    EventKind::TokenExpiring { minutes, .. } => format!("expiring {minutes}"),
                    other => other.name().to_string(),
                };
                (*u, what)
            })
            .collect()
    }

    #[test]
    fn warns_at_sixty_and_ten_minutes_then_expired_each_once() {
        let end = 100_000;
        let t = [tok(1000, end, 1)];
        let mut w = Watch::default();
        let mut said = Vec::new();
        // Two hours before the end to one hour after, every 5 s.
        for now in (end - 7200..end + 3600).step_by(5) {
            said.extend(names(&w.tick(now, &t)));
        }
        assert_eq!(
            said,
            vec![
                (1000, "expiring 60".to_string()),
                (1000, "expiring 10".to_string()),
                (1000, "token-expired".to_string()),
            ]
        );
    }

    #[test]
    fn a_short_token_gets_the_window_it_is_in_and_a_new_token_starts_again() {
        let mut w = Watch::default();
        // kinit -l 5m: inside the ten-minute window at once.
        let ev = names(&w.tick(1000, &[tok(7, 1300, 1)]));
        assert_eq!(ev, vec![(7, "expiring 5".to_string())]);
        assert!(w.tick(1005, &[tok(7, 1300, 1)]).is_empty());
        assert_eq!(
            names(&w.tick(1300, &[tok(7, 1300, 1)])),
            vec![(7, "token-expired".to_string())]
        );
        assert!(w.tick(1400, &[tok(7, 1300, 1)]).is_empty());
        // aklog again: a new generation, warned again when due.
        assert!(w.tick(1400, &[tok(7, 1400 + 7200, 2)]).is_empty());
        assert_eq!(
            names(&w.tick(1400 + 3600, &[tok(7, 1400 + 7200, 2)])),
            vec![(7, "expiring 60".to_string())]
        );
    }

    #[test]
    fn users_and_cells_are_separate_and_unlog_forgets() {
        let mut w = Watch::default();
        let mut other_cell = tok(7, 500, 3);
        other_cell.cell = "other.cell".into();
        let ev = w.tick(600, &[tok(7, 500, 1), tok(8, 500, 2), other_cell.clone()]);
        assert_eq!(ev.len(), 3);
        assert!(
            matches!(&ev[2].1, EventKind::TokenExpired { cell, end: 500 } if cell == "other.cell")
        );
        // uid 7's test.lab token is dropped, then set again with the same
        // generation number (cannot happen, but must not stay silent).
        assert!(w.tick(601, &[tok(8, 500, 2)]).is_empty());
        assert_eq!(w.tick(602, &[tok(7, 500, 1)]).len(), 1);
    }
}
