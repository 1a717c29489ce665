//! Pending requests: which session sent the `EVENT` with a given id, so that
//! `REPLY`s reach it. Bounded in time (`limits.reply_ttl_ms`) and in size
//! (`limits.max_pending_replies`, the oldest go first).
//!
//! Only a session a request reached (by its intent, and identified when it
//! was routed) may answer it: a reply from any other is answered as if the
//! id were unknown.
//!
//! A `REPLY` carries only the id, and ids are the clients' to choose, so the
//! same id may be waiting several times: two instances of a service that
//! both number their requests from 1, or one client that reuses an id. Each
//! `EVENT` is then its own request, oldest first, and a replier's reply
//! goes to the oldest of them that could have reached it (by its intent)
//! and that it has not answered yet; once it has answered them all, to the
//! newest. A replier that answers in the order it received the requests so
//! answers each requester, and a later `EVENT` with the same id cannot take
//! the first reply meant for the first sender.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{GroupName, SessionId};

/// Most requests one id can have waiting at once; a further one pushes out the oldest.
pub const MAX_REQUESTS: usize = 16;
/// Repliers told apart per request; past them, the request counts as
/// answered by every other replier.
pub const MAX_REPLIERS: usize = 16;

/// Whom a sender's `EVENT` went to, to tell the requests of one id apart.
#[derive(Debug, Clone, PartialEq)]
pub enum Reach {
    Everyone,
    Group(GroupName),
    Session(SessionId),
}

#[derive(Debug)]
struct Request {
    sender: SessionId,
    /// Which entry of `order` keeps it (its deadline is there).
    generation: u64,
    reach: Reach,
    /// Identifies (counted by the hub) before it was routed: a session that
    /// identified later cannot have received it.
    joins: u64,
    /// The repliers that have answered it (at most [`MAX_REPLIERS`]).
    replied: Vec<SessionId>,
}

impl Request {
    fn answered_by(&self, replier: &SessionId) -> bool {
        self.replied.len() >= MAX_REPLIERS || self.replied.contains(replier)
    }

    fn record(&mut self, replier: SessionId) {
        if !self.answered_by(&replier) {
            self.replied.push(replier);
        }
    }
}

#[derive(Debug)]
enum Requests {
    One(Request),
    /// Oldest first.
    Many(Vec<Request>),
}

impl Requests {
    /// `Many` back to `One` when a single request is left (never called empty).
    fn from_many(mut all: Vec<Request>) -> Requests {
        if all.len() == 1 {
            if let Some(one) = all.pop() {
                return Requests::One(one);
            }
        }
        Requests::Many(all)
    }
}

/// Where a `REPLY` goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Sender(SessionId),
    /// The request it answers is pending, but its sender has left.
    Gone,
    /// No `EVENT` with this id is waiting for replies.
    Unknown,
}

/// What the hub knows of a request's sender and the replier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// The sender is still connected.
    pub live: bool,
    /// The request could have reached the replier.
    pub reaches: bool,
}

/// The table. Entries are kept in insertion order, which with one TTL for
/// all is also expiry order, so expiring and evicting pop from the front.
#[derive(Debug)]
pub struct Pending {
    ttl: Duration,
    max: usize,
    map: HashMap<Arc<str>, Requests>,
    /// Every request in insertion order, with its deadline (so that
    /// expiring looks an id up only once it is due); an entry whose request
    /// is already gone (its sender left, or the id had too many) is skipped.
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

    /// Remembers that `sender` sent the `EVENT` `id` to `reach` at `now`,
    /// after `joins` identifies (one lookup). Earlier requests with the same id stay until they
    /// expire, also those whose sender has left: a reply to one of them is
    /// `unknown_target`, not a reply for whoever used the id next.
    pub fn insert(&mut self, id: Arc<str>, sender: SessionId, reach: Reach, joins: u64, now: Instant) {
        self.expire(now);
        let generation = self.generation + 1;
        let deadline = now + self.ttl;
        let request = Request {
            sender,
            generation,
            reach,
            joins,
            replied: Vec::new(),
        };
        match self.map.entry(id.clone()) {
            Entry::Vacant(free) => {
                free.insert(Requests::One(request));
            }
            Entry::Occupied(mut held) => {
                let slot = held.get_mut();
                *slot = match std::mem::replace(slot, Requests::Many(Vec::new())) {
                    Requests::One(old) => Requests::Many(vec![old, request]),
                    Requests::Many(mut all) => {
                        if all.len() >= MAX_REQUESTS {
                            all.remove(0);
                        }
                        all.push(request);
                        Requests::from_many(all)
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

    /// Where `replier`'s `REPLY` to `id` goes, and notes that it answered.
    /// Every replier may answer until the request expires (scatter/gather).
    /// `check` tells of a request's sender and reach; `joined` is how many
    /// identifies the hub had counted when the replier identified.
    pub fn lookup(
        &mut self,
        id: &str,
        replier: SessionId,
        joined: u64,
        now: Instant,
        check: impl Fn(&SessionId, &Reach) -> Check,
    ) -> Target {
        self.expire(now);
        // Only a session the request reached may answer it (§5): one its
        // intent covers, that had identified when it was routed.
        let reached = |r: &Request| joined <= r.joins && check(&r.sender, &r.reach).reaches;
        let request = match self.map.get_mut(id) {
            None => return Target::Unknown,
            Some(Requests::One(one)) if reached(one) => one,
            Some(Requests::One(_)) => return Target::Unknown,
            Some(Requests::Many(all)) => {
                let mut unanswered = None;
                let mut newest_reaching = None;
                for (i, r) in all.iter().enumerate() {
                    if reached(r) {
                        if !r.answered_by(&replier) {
                            unanswered = Some(i);
                            break;
                        }
                        newest_reaching = Some(i);
                    }
                }
                match unanswered.or(newest_reaching) {
                    Some(i) => &mut all[i],
                    None => return Target::Unknown,
                }
            }
        };
        request.record(replier);
        if check(&request.sender, &request.reach).live {
            Target::Sender(request.sender)
        } else {
            Target::Gone
        }
    }

    /// Drops every request whose TTL has passed.
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
        let next = match std::mem::replace(slot, Requests::Many(Vec::new())) {
            Requests::One(r) if r.generation == generation => None,
            Requests::One(r) => Some(Requests::One(r)),
            Requests::Many(mut all) => {
                all.retain(|r| r.generation != generation);
                (!all.is_empty()).then(|| Requests::from_many(all))
            }
        };
        match next {
            Some(requests) => *slot = requests,
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

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Reach = Reach::Everyone;
    const YES: Check = Check {
        live: true,
        reaches: true,
    };

    /// Every sender is connected and every request reached the replier.
    fn ask(p: &mut Pending, id: &str, replier: SessionId, now: Instant) -> Target {
        p.lookup(id, replier, 0, now, |_, _| YES)
    }

    fn group(name: &str) -> Reach {
        Reach::Group(GroupName::parse(name).unwrap())
    }

    fn ids<const N: usize>() -> [SessionId; N] {
        std::array::from_fn(|_| SessionId::new())
    }

    #[test]
    fn entries_answer_until_their_ttl_then_expire() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_millis(100), 10);
        let [a, r] = ids();
        p.insert("x".into(), a, ALL, 0, t0);
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
        let [a, r] = ids();
        p.insert("x".into(), a, ALL, 0, t0);
        let left = |_: &SessionId, _: &Reach| Check {
            live: false,
            reaches: true,
        };
        assert_eq!(p.lookup("x", r, 0, t0, left), Target::Gone);
    }

    #[test]
    fn the_table_is_bounded_and_the_oldest_go_first() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_secs(60), 3);
        let [s, r] = ids();
        for i in 0..5 {
            p.insert(i.to_string().into(), s, ALL, 0, t0);
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
        let [a, b, r, q] = ids();
        p.insert("1".into(), a, group("g"), 0, t0);
        p.insert("1".into(), b, group("g"), 0, t0);
        // A replier that answers in the order it received the requests.
        assert_eq!(ask(&mut p, "1", r, t0), Target::Sender(a));
        assert_eq!(ask(&mut p, "1", r, t0), Target::Sender(b));
        // A further reply from it goes to the newest; another replier starts again.
        assert_eq!(ask(&mut p, "1", r, t0), Target::Sender(b));
        assert_eq!(ask(&mut p, "1", q, t0), Target::Sender(a));
    }

    #[test]
    fn a_reply_before_the_second_request_still_counts() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_secs(60), 10);
        let [a, b, r] = ids();
        p.insert("1".into(), a, group("g"), 0, t0);
        assert_eq!(ask(&mut p, "1", r, t0), Target::Sender(a));
        p.insert("1".into(), b, group("g"), 0, t0);
        assert_eq!(ask(&mut p, "1", r, t0), Target::Sender(b));
    }

    #[test]
    fn a_sender_reusing_its_id_makes_a_new_request_after_the_others() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_secs(60), 10);
        let [a, b, r] = ids();
        p.insert("1".into(), a, ALL, 0, t0);
        p.insert("1".into(), b, ALL, 0, t0);
        assert_eq!(ask(&mut p, "1", r, t0), Target::Sender(a));
        p.insert("1".into(), a, ALL, 0, t0);
        assert_eq!(ask(&mut p, "1", r, t0), Target::Sender(b));
        assert_eq!(ask(&mut p, "1", r, t0), Target::Sender(a));
    }

    #[test]
    fn a_reply_goes_to_the_request_that_could_have_reached_the_replier() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_secs(60), 10);
        let [a, b, r] = ids();
        p.insert("1".into(), a, group("g1"), 0, t0);
        p.insert("1".into(), b, Reach::Session(r), 0, t0);
        let in_g2 = |_: &SessionId, reach: &Reach| Check {
            live: true,
            reaches: *reach == group("g2") || *reach == Reach::Session(r),
        };
        assert_eq!(p.lookup("1", r, 0, t0, in_g2), Target::Sender(b), "A asked g1 only");
        // No request reached the replier: as if the id were unknown.
        let nobody = |_: &SessionId, _: &Reach| Check {
            live: true,
            reaches: false,
        };
        assert_eq!(p.lookup("1", SessionId::new(), 0, t0, nobody), Target::Unknown);
    }

    #[test]
    fn a_session_that_identified_after_the_request_was_routed_cannot_answer_it() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_secs(60), 10);
        let [a, early, late] = ids();
        // Routed after 2 identifies: the sessions that joined as 1st and 2nd.
        p.insert("q".into(), a, ALL, 2, t0);
        assert_eq!(p.lookup("q", late, 3, t0, |_, _| YES), Target::Unknown);
        assert_eq!(p.lookup("q", early, 2, t0, |_, _| YES), Target::Sender(a));
    }

    #[test]
    fn a_session_the_request_did_not_reach_cannot_answer_it() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_secs(60), 10);
        let [a, b, bystander] = ids();
        p.insert("q".into(), a, Reach::Session(b), 0, t0);
        let reached = |replier: SessionId| {
            move |_: &SessionId, reach: &Reach| Check {
                live: true,
                reaches: *reach == Reach::Session(replier),
            }
        };
        assert_eq!(p.lookup("q", bystander, 0, t0, reached(bystander)), Target::Unknown);
        assert_eq!(p.lookup("q", a, 0, t0, reached(a)), Target::Unknown, "nor its sender");
        assert_eq!(p.lookup("q", b, 0, t0, reached(b)), Target::Sender(a));
        let Some(Requests::One(request)) = p.map.get("q") else {
            panic!("one request")
        };
        assert_eq!(request.replied, vec![b], "only the recipient's answer is recorded");
    }

    #[test]
    fn a_reply_to_a_request_whose_sender_left_is_gone_not_sent_to_another() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_secs(60), 10);
        let [a, b, r] = ids();
        p.insert("7".into(), a, group("g1"), 0, t0);
        p.insert("7".into(), b, group("g2"), 0, t0);
        // A has left; the replier is in g1 only.
        let check = |s: &SessionId, reach: &Reach| Check {
            live: *s != a,
            reaches: *reach == group("g1"),
        };
        assert_eq!(p.lookup("7", r, 0, t0, check), Target::Gone);
        assert_eq!(p.lookup("7", r, 0, t0, check), Target::Gone, "and again");
    }

    #[test]
    fn a_later_event_with_the_same_id_cannot_take_the_first_reply() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_millis(100), 10);
        let [a, m, r] = ids();
        p.insert("x".into(), a, group("g"), 0, t0);
        p.insert("x".into(), m, group("g"), 0, t0);
        assert_eq!(ask(&mut p, "x", r, t0), Target::Sender(a));
        // Once A has left, a reply to its request is unknown_target, even
        // after M has used the id again; M's requests come after it.
        p.insert("x".into(), m, group("g"), 0, t0 + Duration::from_millis(50));
        let a_left = |s: &SessionId, _: &Reach| Check {
            live: *s != a,
            reaches: true,
        };
        let fresh = SessionId::new();
        let t = t0 + Duration::from_millis(50);
        assert_eq!(p.lookup("x", fresh, 0, t, a_left), Target::Gone);
        assert_eq!(p.lookup("x", fresh, 0, t, a_left), Target::Sender(m));
        // Each request expires on its own: M's first at 100 ms, its second at 150.
        assert_eq!(ask(&mut p, "x", r, t0 + Duration::from_millis(120)), Target::Sender(m));
        assert_eq!(ask(&mut p, "x", r, t0 + Duration::from_millis(150)), Target::Unknown);
        assert!(p.is_empty());
        assert!(p.order.is_empty());
    }

    #[test]
    fn requests_expire_one_by_one_and_a_last_one_is_single_again() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_millis(100), 10);
        let [a, b, r] = ids();
        p.insert("x".into(), a, ALL, 0, t0);
        p.insert("x".into(), b, ALL, 0, t0 + Duration::from_millis(50));
        let t = t0 + Duration::from_millis(100);
        assert_eq!(ask(&mut p, "x", r, t), Target::Sender(b));
        assert!(matches!(p.map.get("x"), Some(Requests::One(_))));
    }

    #[test]
    fn one_id_keeps_at_most_max_requests_and_each_at_most_max_repliers() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_secs(60), 1000);
        let senders: Vec<_> = (0..MAX_REQUESTS + 5).map(|_| SessionId::new()).collect();
        for s in &senders {
            p.insert("1".into(), *s, ALL, 0, t0);
        }
        let Some(Requests::Many(all)) = p.map.get("1") else {
            panic!("several requests")
        };
        assert_eq!(all.len(), MAX_REQUESTS);
        assert_eq!(all[0].sender, senders[5], "the oldest went first");
        // Past MAX_REPLIERS repliers the oldest request counts as answered.
        for _ in 0..MAX_REPLIERS {
            assert_eq!(ask(&mut p, "1", SessionId::new(), t0), Target::Sender(senders[5]));
        }
        assert_eq!(ask(&mut p, "1", SessionId::new(), t0), Target::Sender(senders[6]));
        let Some(Requests::Many(all)) = p.map.get("1") else {
            panic!("several requests")
        };
        assert_eq!(all[0].replied.len(), MAX_REPLIERS);
    }

    #[test]
    fn reusing_an_id_keeps_the_order_queue_bounded_and_the_latest_sender() {
        let t0 = Instant::now();
        let mut p = Pending::new(Duration::from_secs(60), 4);
        let [a, b, r] = ids();
        for i in 0..1000 {
            p.insert("same".into(), if i % 2 == 0 { a } else { b }, ALL, 0, t0);
        }
        // The newest requests are kept (as many as the order queue holds):
        // a replier answers them oldest first.
        assert!(p.order.len() <= 8);
        let Some(Requests::Many(all)) = p.map.get("same") else {
            panic!("several requests")
        };
        assert_eq!(all.len(), p.order.len());
        assert_eq!(all.last().map(|r| r.sender), Some(b));
        let first = all[0].sender;
        assert_eq!(ask(&mut p, "same", r, t0), Target::Sender(first));
    }
}
