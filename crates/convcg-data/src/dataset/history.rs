//! Each user's events in time order, for the recent-engagement bags and the recently-seen
//! baseline.

/// Events (a pin each) grouped by user, sorted by (ts, seq) within a user, where `seq` is the
/// event's impression id: the file order that breaks ties between events of one second.
#[derive(Clone)]
pub(crate) struct History {
    offsets: Vec<usize>,
    points: Vec<(i64, i64)>,
    pins: Vec<u32>,
}

impl History {
    /// From (user, ts, seq, pin) events of users `0..num_users`.
    pub(crate) fn new(num_users: usize, mut events: Vec<(u32, i64, i64, u32)>) -> History {
        events.sort_unstable();
        let mut offsets = vec![0usize; num_users + 1];
        for &(u, _, _, _) in &events {
            offsets[u as usize + 1] += 1;
        }
        for u in 0..num_users {
            offsets[u + 1] += offsets[u];
        }
        History {
            offsets,
            points: events.iter().map(|e| (e.1, e.2)).collect(),
            pins: events.iter().map(|e| e.3).collect(),
        }
    }

    /// The pins of the user's last `len` events strictly before `(ts, seq)` (lexicographic:
    /// earlier seconds, then smaller seq within the second; `seq = i64::MIN` keeps only earlier
    /// seconds), oldest first. A user without events (or past the table) has none.
    pub(crate) fn before(&self, user: u32, ts: i64, seq: i64, len: usize) -> &[u32] {
        let u = user as usize;
        let (Some(&a), Some(&b)) = (self.offsets.get(u), self.offsets.get(u + 1)) else {
            return &[];
        };
        let end = a + self.points[a..b].partition_point(|&p| p < (ts, seq));
        &self.pins[end.saturating_sub(len).max(a)..end]
    }
}
