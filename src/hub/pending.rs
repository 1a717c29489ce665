//! Pending requests: which session sent the `EVENT` with a given id, so that
//! `REPLY`s reach it. Bounded in time (`limits.reply_ttl_ms`) and in size
//! (`limits.max_pending_replies`, the oldest go first).
//!
//! A `REPLY` carries only the id, and ids are the clients' to choose, so two
//! sessions may use the same one (two instances of a service that both
//! number their requests from 1). An id then has several holders, oldest
//! first, and a reply goes to the oldest holder whose `EVENT` could have
//! reached the replier (by its intent) and that this replier has not
//! answered yet: a replier that answers in the order it received the
//! requests answers each requester. Another session's later `EVENT` with the
//! same id can so never take the first reply meant for the first sender.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{GroupName, SessionId};

/// Most senders one id can have waiting at once; a further one pushes out the oldest.
const MAX_HOLDERS: usize = 16;
/// Most repliers remembered per holder of a shared id.
const MAX_REPLIED: usize = 64;

/// Whom a sender's `EVENT` went to, to tell the holders of one id apart.
#[derive(Debug, Clone, PartialEq)]
pub enum Reach {
    Everyone,
    Group(GroupName),
    Session(SessionId),
}

#[derive(Debug)]
struct Holder {
    sender: SessionId,
    /// Which entry of `order` keeps it (its deadline is there).
    generation: u64,
    reach: Reach,
}

#[derive(Debug)]
enum Holders {
    One(Holder),
    /// Oldest first, each with the repliers that have answered it.
    Many(Vec<(Holder, Vec<SessionId>)>),
}

/// Where a `REPLY` goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Sender(SessionId),
    /// The id is pending but every session that sent it has left.
    Gone,
    /// No `EVENT` with this id is waiting for replies.
    Unknown,
}

/// The table. Entries are kept in insertion order, which with one TTL for
/// all is also expiry order, so expiring and evicting pop from the front.
#[derive(Debug)]
pub struct Pending {
    ttl: Duration,
    max: usize,
    map: HashMap<Arc<str>, Holders>,
    /// Insertion order, with each holder's deadline (so that expiring looks
    /// an id up only once it is due); an entry whose generation no holder
    /// has any more was renewed by a later `EVENT` and is skipped.
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

    /// Remembers that `sender` sent the `EVENT` `id` to `reach` at `now`
    /// (one lookup). The sender's own later `EVENT` with the id renews its
    /// entry; another session's is added after it unless every earlier
    /// holder has left (`is_live` says which are still connected).
    pub fn insert(
        &mut self,
        id: Arc<str>,
        sender: SessionId,
        reach: Reach,
        now: Instant,
        is_live: impl Fn(&SessionId) -> bool,
    ) {
        self.expire(now);
        let generation = self.generation + 1;
        let deadline = now + self.ttl;
        let holder = Holder {
            sender,
            generation,
            reach,
        };
        match self.map.entry(id.clone()) {
            Entry::Vacant(free) => {
                free.insert(Holders::One(holder));
            }
            Entry::Occupied(mut held) => {
                let slot = held.get_mut();
                *slot = match std::mem::replace(slot, Holders::Many(Vec::new())) {
                    Holders::One(old) if old.sender == sender || !is_live(&old.sender) => Holders::One(holder),
                    Holders::One(old) => Holders::Many(vec![(old, Vec::new()), (holder, Vec::new())]),
                    Holders::Many(mut all) => {
                        all.retain(|(h, _)| is_live(&h.sender));
                        match all.iter_mut().find(|(h, _)| h.sender == sender) {
                            Some((h, replied)) => {
                                *h = holder;
                                replied.clear();
                            }
                            None => {
                                if all.len() >= MAX_HOLDERS {
                                    all.remove(0);
                                }
                                all.push((holder, Vec::new()));
                            }
                        }
                        Holders::from_many(all)
                    }
                };
            }
        }
        self.generation = generation;
        self.order.push_back((id, generation, deadline));
        while self.map.len() > self.max || self.order.len() > 2 * self.max {
            self.pop_oldest();
        }
    }

    /// Where `replier`'s `REPLY` to `id` goes. Every replier may answer
    /// until the entry expires (scatter/gather). `check` says of a holder
    /// whether it is still connected (`None` if not) and whether its
    /// `EVENT` could have reached the replier.
    pub fn lookup(
        &mut self,
        id: &str,
        replier: SessionId,
        now: Instant,
        check: impl Fn(&SessionId, &Reach) -> Option<bool>,
    ) -> Target {
        self.expire(now);
        match self.map.get_mut(id) {
            None => Target::Unknown,
            Some(Holders::One(h)) => match check(&h.sender, &h.reach) {
                Some(_) => Target::Sender(h.sender),
                None => Target::Gone,
            },
            Some(Holders::Many(all)) => {
                let mut first_live = None;
                let mut unanswered = None;
                let mut newest_reaching = None;
                for (i, (h, replied)) in all.iter().enumerate() {
                    let Some(reaches) = check(&h.sender, &h.reach) else {
                        continue;
                    };
                    first_live.get_or_insert(i);
                    if reaches {
                        if !replied.contains(&replier) {
                            unanswered = Some(i);
                            break;
                        }
                        newest_reaching = Some(i);
                    }
                }
                if let Some(i) = unanswered {
                    // The oldest request that could have reached this
                    // replier and that it has not answered.
                    let (h, replied) = &mut all[i];
                    if replied.len() < MAX_REPLIED {
                        replied.push(replier);
                    }
                    return Target::Sender(h.sender);
                }
                match newest_reaching.or(first_live) {
                    Some(i) => Target::Sender(all[i].0.sender),
                    None => Target::Gone,
                }
            }
        }
    }

    /// Drops every entry whose TTL has passed.
    pub fn expire(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(_, _, deadline)| *deadline <= now) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        let Some((id, generation, _)) = self.order.pop_front() else {
            return;
        };
        let Some(slot) = self.map.get_mut(&id) else { return };
        let next = match std::mem::replace(slot, Holders::Many(Vec::new())) {
            Holders::One(h) if h.generation == generation => None,
            Holders::One(h) => Some(Holders::One(h)),
            Holders::Many(mut all) => {
                all.retain(|(h, _)| h.generation != generation);
                (!all.is_empty()).then(|| Holders::from_many(all))
            }
        };
        match next {
            Some(holders) => *slot = holders,
            None => {
                self.map.remove(&id);
            }
        }
    }

    /// Ids waiting for replies.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl Holders {
    /// `Many` back to `One` when a single holder is left (never called empty).
    fn from_many(mut all: Vec<(Holder, Vec<SessionId>)>) -> Holders {
        if all.len() == 1 {
            if let Some((h, _)) = all.pop() {
                return Holders::One(h);
            }
        }
        Holders::Many(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Reach = Reach::Everyone;

    /// Every holder is connected, and reaches the replier by `reaches`.
    fn ask(p: &mut Pending, id: &str, replier: SessionId, now: Instant) -> Target {
        p.lookup(id, replier, now, |_, _| Some(true))
    }

    fn group(name: &str) -> Reach {
        Reach::Group(GroupName::parse(name).unwrap())
    }

    #[test]
    fn entries_answer_until_their_ttl_then_expire() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_millis(100), 10);
        let (a, r) = (SessionId::new(), SessionId::new());
        p.insert("x".into(), a, ALL, t0, |_| false);
        assert_eq!(ask(&mut p, "x", r, t0 + Duration::from_millis(50)), Target::Sender(a));
        assert_eq!(
            ask(&mut p, "x", r, t0 + Duration::from_millis(60)),
            Target::Sender(a),
            "several replies are allowed"
        );
        assert_eq!(ask(&mut p, "x", r, t0 + Duration::from_millis(100)), Target::Unknown);
        assert_eq!(ask(&mut p, "y", r, t0), Target::Unknown);
        assert!(p.is_empty());
    }

    #[test]
    fn a_sender_that_left_is_gone_not_unknown() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_secs(60), 10);
        let (a, r) = (SessionId::new(), SessionId::new());
        p.insert("x".into(), a, ALL, t0, |_| true);
        assert_eq!(p.lookup("x", r, t0, |_, _| None), Target::Gone);
    }

    #[test]
    fn the_table_is_bounded_and_the_oldest_go_first() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_secs(60), 3);
        let (s, r) = (SessionId::new(), SessionId::new());
        for i in 0..5 {
            p.insert(i.to_string().into(), s, ALL, t0, |_| false);
        }
        assert_eq!(p.len(), 3);
        assert_eq!(ask(&mut p, "0", r, t0), Target::Unknown);
        assert_eq!(ask(&mut p, "1", r, t0), Target::Unknown);
        assert_eq!(ask(&mut p, "4", r, t0), Target::Sender(s));
    }

    #[test]
    fn two_senders_of_one_id_each_get_the_reply_to_their_own_request() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_secs(60), 10);
        let (a, b, r, q) = (SessionId::new(), SessionId::new(), SessionId::new(), SessionId::new());
        p.insert("1".into(), a, group("g"), t0, |_| true);
        p.insert("1".into(), b, group("g"), t0, |_| true);
        // A replier that answers in the order it received the requests.
        assert_eq!(ask(&mut p, "1", r, t0), Target::Sender(a));
        assert_eq!(ask(&mut p, "1", r, t0), Target::Sender(b));
        // A further reply from it goes to the newest; another replier starts again.
        assert_eq!(ask(&mut p, "1", r, t0), Target::Sender(b));
        assert_eq!(ask(&mut p, "1", q, t0), Target::Sender(a));
    }

    #[test]
    fn a_reply_goes_to_the_holder_whose_event_could_have_reached_the_replier() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_secs(60), 10);
        let (a, b, r) = (SessionId::new(), SessionId::new(), SessionId::new());
        p.insert("1".into(), a, group("g1"), t0, |_| true);
        p.insert("1".into(), b, Reach::Session(r), t0, |_| true);
        let in_g2 = |_: &SessionId, reach: &Reach| Some(*reach == group("g2") || *reach == Reach::Session(r));
        assert_eq!(p.lookup("1", r, t0, in_g2), Target::Sender(b), "A asked g1 only");
        // No holder reached the replier: the oldest connected one.
        let nobody = |_: &SessionId, _: &Reach| Some(false);
        assert_eq!(p.lookup("1", r, t0, nobody), Target::Sender(a));
        // The holders that left are skipped.
        let only_b = |s: &SessionId, _: &Reach| (*s == b).then_some(true);
        assert_eq!(p.lookup("1", SessionId::new(), t0, only_b), Target::Sender(b));
    }

    #[test]
    fn a_later_event_with_the_same_id_cannot_take_the_first_reply() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_millis(100), 10);
        let (a, m, r) = (SessionId::new(), SessionId::new(), SessionId::new());
        p.insert("x".into(), a, group("g"), t0, |_| true);
        p.insert("x".into(), m, group("g"), t0, |_| true);
        assert_eq!(ask(&mut p, "x", r, t0), Target::Sender(a));
        // Once A has left, its place is taken.
        p.insert("x".into(), m, group("g"), t0 + Duration::from_millis(50), |s| *s != a);
        assert_eq!(ask(&mut p, "x", r, t0 + Duration::from_millis(50)), Target::Sender(m));
        // Each holder expires on its own: A's original at 100 ms, M's renewal at 150.
        assert_eq!(ask(&mut p, "x", r, t0 + Duration::from_millis(120)), Target::Sender(m));
        assert_eq!(ask(&mut p, "x", r, t0 + Duration::from_millis(150)), Target::Unknown);
        assert!(p.is_empty());
    }

    #[test]
    fn holders_expire_one_by_one_and_a_last_one_is_single_again() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_millis(100), 10);
        let (a, b, r) = (SessionId::new(), SessionId::new(), SessionId::new());
        p.insert("x".into(), a, ALL, t0, |_| true);
        p.insert("x".into(), b, ALL, t0 + Duration::from_millis(50), |_| true);
        // A expired: B alone holds the id, and any replier reaches it.
        let t = t0 + Duration::from_millis(100);
        assert_eq!(p.lookup("x", r, t, |_, _| Some(false)), Target::Sender(b));
        assert!(matches!(p.map.get("x"), Some(Holders::One(_))));
    }

    #[test]
    fn one_id_keeps_at_most_max_holders() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_secs(60), 1000);
        let senders: Vec<_> = (0..MAX_HOLDERS + 5).map(|_| SessionId::new()).collect();
        for s in &senders {
            p.insert("1".into(), *s, ALL, t0, |_| true);
        }
        let Some(Holders::Many(all)) = p.map.get("1") else {
            panic!("several holders")
        };
        assert_eq!(all.len(), MAX_HOLDERS);
        assert_eq!(all[0].0.sender, senders[5], "the oldest went first");
    }

    #[test]
    fn reusing_an_id_keeps_the_order_queue_bounded_and_the_latest_sender() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_secs(60), 4);
        let (a, b, r) = (SessionId::new(), SessionId::new(), SessionId::new());
        for i in 0..1000 {
            p.insert("same".into(), if i % 2 == 0 { a } else { b }, ALL, t0, |_| false);
        }
        assert_eq!(ask(&mut p, "same", r, t0), Target::Sender(b));
        assert!(p.order.len() <= 8);
    }
}
