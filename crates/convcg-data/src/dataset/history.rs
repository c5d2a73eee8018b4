//! Each user's engagements in time order, for the recent-engagement bags.

/// Clicks and saves grouped by user, sorted by time within a user.
#[derive(Clone)]
pub(crate) struct History {
    offsets: Vec<usize>,
    ts: Vec<i64>,
    pins: Vec<u32>,
}

impl History {
    /// From (user, ts, pin) events of users `0..num_users`.
    pub(crate) fn new(num_users: usize, mut events: Vec<(u32, i64, u32)>) -> History {
        events.sort_unstable();
        let mut offsets = vec![0usize; num_users + 1];
        for &(u, _, _) in &events {
            offsets[u as usize + 1] += 1;
        }
        for u in 0..num_users {
            offsets[u + 1] += offsets[u];
        }
        History {
            offsets,
            ts: events.iter().map(|e| e.1).collect(),
            pins: events.iter().map(|e| e.2).collect(),
        }
    }

    /// The pins of the user's last `len` engagements strictly before `ts`, oldest first.
    pub(crate) fn before(&self, user: u32, ts: i64, len: usize) -> &[u32] {
        let (a, b) = (self.offsets[user as usize], self.offsets[user as usize + 1]);
        let end = a + self.ts[a..b].partition_point(|&t| t < ts);
        &self.pins[end.saturating_sub(len).max(a)..end]
    }
}
