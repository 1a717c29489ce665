//! The routing table: sessions, their services and groups, and who receives
//! a frame. A plain struct, generic over what the hub keeps per session, so
//! that routing is tested without actors.

use std::collections::HashMap;

use indexmap::IndexSet;
use slab::Slab;

use crate::protocol::{ErrorCode, Intent};
use crate::{GroupName, ServiceName, SessionId};

/// A session's slot in the table; valid until the session is removed.
pub type Key = usize;

/// One connected session.
#[derive(Debug)]
pub struct Entry<L> {
    pub id: SessionId,
    /// Set once identified.
    pub service: Option<ServiceName>,
    pub groups: Vec<GroupName>,
    /// What the hub keeps to reach the session.
    pub link: L,
}

#[derive(Debug)]
pub struct Registry<L> {
    sessions: Slab<Entry<L>>,
    by_id: HashMap<SessionId, Key>,
    /// Identified sessions, the recipients of `GLOBAL`.
    identified: IndexSet<Key>,
    groups: HashMap<GroupName, IndexSet<Key>>,
    services: HashMap<ServiceName, usize>,
}

impl<L> Default for Registry<L> {
    fn default() -> Self {
        Registry {
            sessions: Slab::new(),
            by_id: HashMap::new(),
            identified: IndexSet::new(),
            groups: HashMap::new(),
            services: HashMap::new(),
        }
    }
}

impl<L> Registry<L> {
    /// Adds a connected, not yet identified session.
    pub fn insert(&mut self, id: SessionId, link: L) -> Key {
        let key = self.sessions.insert(Entry {
            id,
            service: None,
            groups: Vec::new(),
            link,
        });
        if let Some(old) = self.by_id.insert(id, key) {
            // Ids are random UUIDs; a clash would be a bug, not a client's doing.
            log::error!("session id {id} registered twice (slot {old})");
        }
        key
    }

    /// Marks a session identified and adds it to its groups.
    pub fn identify(&mut self, key: Key, service: ServiceName, groups: Vec<GroupName>) {
        let Some(entry) = self.sessions.get_mut(key) else {
            return;
        };
        if entry.service.is_some() {
            return;
        }
        for group in &groups {
            self.groups.entry(group.clone()).or_default().insert(key);
        }
        *self.services.entry(service.clone()).or_default() += 1;
        entry.service = Some(service);
        entry.groups = groups;
        self.identified.insert(key);
    }

    /// Removes a session from every table.
    pub fn remove(&mut self, key: Key) -> Option<Entry<L>> {
        let entry = self.sessions.try_remove(key)?;
        self.by_id.remove(&entry.id);
        if let Some(service) = &entry.service {
            self.identified.swap_remove(&key);
            if let Some(n) = self.services.get_mut(service) {
                *n -= 1;
                if *n == 0 {
                    self.services.remove(service);
                }
            }
            for group in &entry.groups {
                if let Some(members) = self.groups.get_mut(group) {
                    members.swap_remove(&key);
                    if members.is_empty() {
                        self.groups.remove(group);
                    }
                }
            }
        }
        Some(entry)
    }

    pub fn key(&self, id: &SessionId) -> Option<Key> {
        self.by_id.get(id).copied()
    }

    pub fn get(&self, key: Key) -> Option<&Entry<L>> {
        self.sessions.get(key)
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut Entry<L>> {
        self.sessions.get_mut(key)
    }

    /// Appends the recipients of a frame from `sender` (`None`: the admin
    /// API) to `out`, or says why there are none.
    pub fn recipients(&self, intent: &Intent, sender: Option<Key>, out: &mut Vec<Key>) -> Result<(), ErrorCode> {
        match intent {
            Intent::Global => {
                out.extend(self.identified.iter().copied().filter(|k| Some(*k) != sender));
                Ok(())
            }
            Intent::Group(name) => {
                let members = self.groups.get(name).ok_or(ErrorCode::UnknownTarget)?;
                out.extend(members.iter().copied().filter(|k| Some(*k) != sender));
                Ok(())
            }
            Intent::Direct(id) => {
                let key = SessionId::parse(id)
                    .and_then(|id| self.key(&id))
                    .ok_or(ErrorCode::UnknownTarget)?;
                if !self.identified.contains(&key) {
                    return Err(ErrorCode::UnknownTarget);
                }
                out.push(key);
                Ok(())
            }
        }
    }

    /// Connected sessions, identified or not.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn identified_len(&self) -> usize {
        self.identified.len()
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Group name -> member count.
    pub fn groups(&self) -> impl Iterator<Item = (&GroupName, usize)> {
        self.groups.iter().map(|(name, members)| (name, members.len()))
    }

    /// Service name -> identified session count.
    pub fn services(&self) -> impl Iterator<Item = (&ServiceName, usize)> {
        self.services.iter().map(|(name, n)| (name, *n))
    }

    /// Every session, in slot order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry<L>> {
        self.sessions.iter().map(|(_, e)| e)
    }

    /// Every session's slot.
    pub fn keys(&self) -> Vec<Key> {
        self.sessions.iter().map(|(k, _)| k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str) -> GroupName {
        GroupName::parse(name).expect("valid name")
    }

    fn setup() -> (Registry<()>, [Key; 4], [SessionId; 4]) {
        let mut r = Registry::default();
        let ids = [SessionId::new(), SessionId::new(), SessionId::new(), SessionId::new()];
        let keys = ids.map(|id| r.insert(id, ()));
        r.identify(keys[0], "a".into(), vec![group("g1")]);
        r.identify(keys[1], "a".into(), vec![group("g1"), group("g2")]);
        r.identify(keys[2], "b".into(), vec![]);
        // keys[3] stays unidentified.
        (r, keys, ids)
    }

    fn recipients(r: &Registry<()>, intent: Intent, sender: Option<Key>) -> Result<Vec<Key>, ErrorCode> {
        let mut out = Vec::new();
        r.recipients(&intent, sender, &mut out).map(|()| {
            out.sort();
            out
        })
    }

    #[test]
    fn global_reaches_every_identified_session_but_the_sender() {
        let (r, k, _) = setup();
        assert_eq!(recipients(&r, Intent::Global, Some(k[0])), Ok(vec![k[1], k[2]]));
        assert_eq!(recipients(&r, Intent::Global, None), Ok(vec![k[0], k[1], k[2]]));
    }

    #[test]
    fn group_reaches_members_but_the_sender_who_need_not_be_one() {
        let (r, k, _) = setup();
        assert_eq!(recipients(&r, Intent::Group(group("g1")), Some(k[0])), Ok(vec![k[1]]));
        assert_eq!(recipients(&r, Intent::Group(group("g2")), Some(k[2])), Ok(vec![k[1]]));
        assert_eq!(
            recipients(&r, Intent::Group(group("none")), Some(k[0])),
            Err(ErrorCode::UnknownTarget)
        );
    }

    #[test]
    fn direct_reaches_one_identified_session_the_sender_included() {
        let (r, k, ids) = setup();
        assert_eq!(
            recipients(&r, Intent::Direct(ids[1].to_string()), Some(k[0])),
            Ok(vec![k[1]])
        );
        assert_eq!(
            recipients(&r, Intent::Direct(ids[0].to_string()), Some(k[0])),
            Ok(vec![k[0]])
        );
        assert_eq!(
            recipients(&r, Intent::Direct(ids[3].to_string()), Some(k[0])),
            Err(ErrorCode::UnknownTarget)
        );
        assert_eq!(
            recipients(&r, Intent::Direct("not-a-uuid".into()), Some(k[0])),
            Err(ErrorCode::UnknownTarget)
        );
    }

    #[test]
    fn removing_a_session_cleans_every_table() {
        let (mut r, k, ids) = setup();
        r.remove(k[1]);
        assert_eq!(
            recipients(&r, Intent::Group(group("g2")), None),
            Err(ErrorCode::UnknownTarget)
        );
        assert_eq!(recipients(&r, Intent::Group(group("g1")), None), Ok(vec![k[0]]));
        assert_eq!(r.key(&ids[1]), None);
        assert_eq!((r.len(), r.identified_len(), r.group_count()), (3, 2, 1));
        let services: HashMap<_, _> = r.services().map(|(s, n)| (s.to_string(), n)).collect();
        assert_eq!(services, HashMap::from([("a".to_string(), 1), ("b".to_string(), 1)]));
        r.remove(k[2]);
        assert!(r.services().all(|(s, _)| &**s != "b"));
        assert!(r.remove(k[2]).is_none(), "removing twice is harmless");
    }
}
