//! Pending requests: which session sent the `EVENT` with a given id, so that
//! `REPLY`s reach it. Bounded in time (`limits.reply_ttl_ms`) and in size
//! (`limits.max_pending_replies`, the oldest go first).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::SessionId;

/// The table. Entries are kept in insertion order, which with one TTL for
/// all is also expiry order, so expiring and evicting pop from the front.
#[derive(Debug)]
pub struct Pending {
    ttl: Duration,
    max: usize,
    /// id -> (sender, when it expires, generation).
    map: HashMap<Arc<str>, (SessionId, Instant, u64)>,
    /// Insertion order, with each entry's deadline (so that expiring looks
    /// an id up only once it is due); an entry whose generation differs
    /// from the map's was overwritten by a later `EVENT` with the same id
    /// and is skipped.
    order: VecDeque<(Arc<str>, u64, Instant)>,
    generation: u64,
}

impl Pending {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Pending {
            ttl,
            max: max.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
            generation: 0,
        }
    }

    /// Remembers that `sender` sent the `EVENT` `id` at `now`, unless the id
    /// is held by another session that `is_live` (one lookup either way). An
    /// id waiting for replies belongs to its sender until it expires or that
    /// sender leaves; the sender's own later `EVENT` with the id renews it.
    /// Returns whether `sender` now holds the id.
    pub fn insert(
        &mut self,
        id: Arc<str>,
        sender: SessionId,
        now: Instant,
        is_live: impl FnOnce(&SessionId) -> bool,
    ) -> bool {
        self.expire(now);
        let generation = self.generation + 1;
        let deadline = now + self.ttl;
        match self.map.entry(id.clone()) {
            Entry::Occupied(held) if held.get().0 != sender && is_live(&held.get().0) => return false,
            Entry::Occupied(mut held) => {
                held.insert((sender, deadline, generation));
            }
            Entry::Vacant(free) => {
                free.insert((sender, deadline, generation));
            }
        }
        self.generation = generation;
        self.order.push_back((id, generation, deadline));
        while self.map.len() > self.max || self.order.len() > 2 * self.max {
            self.pop_oldest();
        }
        true
    }

    /// Who is waiting for replies to `id`; every replier may answer until
    /// the entry expires (scatter/gather).
    pub fn lookup(&mut self, id: &str, now: Instant) -> Option<SessionId> {
        self.expire(now);
        self.map
            .get(id)
            .filter(|(_, deadline, _)| *deadline > now)
            .map(|(sender, _, _)| *sender)
    }

    /// Drops every entry whose TTL has passed.
    pub fn expire(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(_, _, deadline)| *deadline <= now) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((id, generation, _)) = self.order.pop_front() {
            if self.map.get(&id).is_some_and(|(_, _, g)| *g == generation) {
                self.map.remove(&id);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_answer_until_their_ttl_then_expire() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_millis(100), 10);
        let a = SessionId::new();
        p.insert("x".into(), a, t0, |_| false);
        assert_eq!(p.lookup("x", t0 + Duration::from_millis(50)), Some(a));
        assert_eq!(
            p.lookup("x", t0 + Duration::from_millis(60)),
            Some(a),
            "several replies are allowed"
        );
        assert_eq!(p.lookup("x", t0 + Duration::from_millis(100)), None);
        assert_eq!(p.lookup("y", t0), None);
        assert!(p.is_empty());
    }

    #[test]
    fn the_table_is_bounded_and_the_oldest_go_first() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_secs(60), 3);
        let s = SessionId::new();
        for i in 0..5 {
            p.insert(i.to_string().into(), s, t0, |_| false);
        }
        assert_eq!(p.len(), 3);
        assert_eq!(p.lookup("0", t0), None);
        assert_eq!(p.lookup("1", t0), None);
        assert_eq!(p.lookup("4", t0), Some(s));
    }

    #[test]
    fn an_id_belongs_to_its_sender_until_it_expires_or_the_sender_leaves() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_millis(100), 10);
        let (a, b) = (SessionId::new(), SessionId::new());
        assert!(p.insert("x".into(), a, t0, |_| true));
        // Held by a live session: another cannot take it...
        assert!(!p.insert("x".into(), b, t0, |_| true));
        assert_eq!(p.lookup("x", t0), Some(a));
        // ...its own sender renews it...
        assert!(p.insert("x".into(), a, t0 + Duration::from_millis(50), |_| true));
        assert_eq!(p.lookup("x", t0 + Duration::from_millis(120)), Some(a));
        // ...and once the holder has left, another session may.
        assert!(p.insert("x".into(), b, t0 + Duration::from_millis(120), |_| false));
        assert_eq!(p.lookup("x", t0 + Duration::from_millis(120)), Some(b));
        // An expired id is free again.
        assert!(p.insert("x".into(), a, t0 + Duration::from_millis(300), |_| true));
        assert_eq!(p.lookup("x", t0 + Duration::from_millis(300)), Some(a));
    }

    #[test]
    fn reusing_an_id_keeps_the_order_queue_bounded_and_the_latest_sender() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_secs(60), 4);
        let (a, b) = (SessionId::new(), SessionId::new());
        for i in 0..1000 {
            p.insert("same".into(), if i % 2 == 0 { a } else { b }, t0, |_| false);
        }
        assert_eq!(p.lookup("same", t0), Some(b));
        assert!(p.order.len() <= 8);
    }
}
