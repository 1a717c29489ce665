//! Pending requests: which session sent the `EVENT` with a given id, so that
//! `REPLY`s reach it. Bounded in time (`limits.reply_ttl_ms`) and in size
//! (`limits.max_pending_replies`, the oldest go first).

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

    /// Remembers that `sender` sent the `EVENT` `id` at `now`. A later
    /// `EVENT` with the same id takes its place: the hub calls this only when
    /// the id is free, or its sender's own, or its sender has left
    /// ([`Pending::owner`]).
    pub fn insert(&mut self, id: Arc<str>, sender: SessionId, now: Instant) {
        self.expire(now);
        self.generation += 1;
        let deadline = now + self.ttl;
        self.map.insert(id.clone(), (sender, deadline, self.generation));
        self.order.push_back((id, self.generation, deadline));
        while self.map.len() > self.max || self.order.len() > 2 * self.max {
            self.pop_oldest();
        }
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

    /// Who holds `id` at `now`, without touching the table.
    pub fn owner(&self, id: &str, now: Instant) -> Option<SessionId> {
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
        p.insert("x".into(), a, t0);
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
            p.insert(i.to_string().into(), s, t0);
        }
        assert_eq!(p.len(), 3);
        assert_eq!(p.lookup("0", t0), None);
        assert_eq!(p.lookup("1", t0), None);
        assert_eq!(p.lookup("4", t0), Some(s));
    }

    #[test]
    fn owner_reads_without_expiring() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_millis(100), 10);
        let a = SessionId::new();
        p.insert("x".into(), a, t0);
        assert_eq!(p.owner("x", t0 + Duration::from_millis(99)), Some(a));
        assert_eq!(p.owner("x", t0 + Duration::from_millis(100)), None);
        assert_eq!(p.owner("y", t0), None);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn reusing_an_id_keeps_the_order_queue_bounded_and_the_latest_sender() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_secs(60), 4);
        let (a, b) = (SessionId::new(), SessionId::new());
        for i in 0..1000 {
            p.insert("same".into(), if i % 2 == 0 { a } else { b }, t0);
        }
        assert_eq!(p.lookup("same", t0), Some(b));
        assert!(p.order.len() <= 8);
    }
}
