//! The tables that name things: peers by [`PeerId`] (and by key and MAC), supernode links by
//! [`LinkId`], and the owner of each local session index.
//!
//! Each table keeps its lookups in step with its slots itself, so that no caller can insert
//! a peer and forget its MAC, or forget a peer and leave its key pointing at an empty slot.
//! Ids are small copyable handles, as quinn-proto's `ConnectionHandle`: a [`LinkId`] stays
//! valid for the edge's life (links are retired, never removed); a [`PeerId`] may outlive its
//! peer, so peers are looked up with [`PeerTable::get`], which says so.

use super::link::Link;
use super::peers::{Peer, Pending};
use crate::keys::{Mac, PublicKey};
use crate::rng::Rng;
use crate::session::Session;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::{Index, IndexMut};

/// A peer's slot in the [`PeerTable`]. A slot is reused after its peer is forgotten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct PeerId(usize);

/// A supernode link, the position of its supernode among all the edge has been configured
/// with (in paths, session indexes and each peer's relay ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct LinkId(usize);

impl LinkId {
    /// The id of the `i`-th supernode of the configuration (test hooks).
    #[cfg(test)]
    pub(super) fn nth(i: usize) -> LinkId {
        LinkId(i)
    }
}

/// Owner of a local session index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    Link(LinkId),
    Peer(PeerId),
}

/// The peers, with their lookups by key, by MAC, by underlay endpoint and by relay id.
///
/// Invariants: `by_key` maps exactly the keys of the live peers to their slots; an entry of
/// `by_mac` points at a live peer with that MAC (a MAC two peers claim points at the one
/// that claimed it last); an entry of `by_endpoint` points at a live peer whose `direct`
/// or `endpoints` hold that endpoint (shared by two: the one that got it last); `by_relay`
/// maps (link, id) to the live peer whose relay id at that link it is. The peer's
/// `endpoints`, `direct` and `relay_ids` change only through this table, so that the peer a
/// packet came from is found in O(1) (an unknown receiver index costs no scan).
#[derive(Default)]
pub(super) struct PeerTable {
    slots: Vec<Option<Peer>>,
    by_key: HashMap<PublicKey, PeerId>,
    by_mac: HashMap<Mac, PeerId>,
    by_endpoint: HashMap<SocketAddr, PeerId>,
    by_relay: HashMap<(LinkId, u32), PeerId>,
    /// Slots visited by [`PeerTable::iter`] (tests: what a lookup costs).
    #[cfg(test)]
    pub(super) visited: std::cell::Cell<u64>,
}

impl PeerTable {
    pub(super) fn get(&self, p: PeerId) -> Option<&Peer> {
        self.slots.get(p.0)?.as_ref()
    }

    pub(super) fn get_mut(&mut self, p: PeerId) -> Option<&mut Peer> {
        self.slots.get_mut(p.0)?.as_mut()
    }

    /// The peer with static key `key`.
    pub(super) fn by_key(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    /// The peer frames to `mac` go to.
    pub(super) fn by_mac(&self, mac: &Mac) -> Option<PeerId> {
        self.by_mac.get(mac).copied()
    }

    /// The peer whose direct path or one of whose endpoints is `ep`.
    pub(super) fn by_endpoint(&self, ep: &SocketAddr) -> Option<PeerId> {
        self.by_endpoint.get(ep).copied()
    }

    /// The peer with relay id `id` at supernode `l`.
    pub(super) fn by_relay(&self, l: LinkId, id: u32) -> Option<PeerId> {
        self.by_relay.get(&(l, id)).copied()
    }

    /// Gives peer `p` the endpoints `eps` (from a supernode's record).
    pub(super) fn set_endpoints(&mut self, p: PeerId, eps: Vec<SocketAddr>) {
        let Some(peer) = self.slots.get_mut(p.0).and_then(Option::as_mut) else {
            return;
        };
        let old = std::mem::replace(&mut peer.endpoints, eps);
        for e in old {
            self.unindex_endpoint(p, e);
        }
        self.index_endpoints(p);
    }

    /// Sets peer `p`'s proven direct endpoint.
    pub(super) fn set_direct(&mut self, p: PeerId, direct: Option<SocketAddr>) {
        let Some(peer) = self.slots.get_mut(p.0).and_then(Option::as_mut) else {
            return;
        };
        if peer.direct == direct {
            return;
        }
        let old = std::mem::replace(&mut peer.direct, direct);
        if let Some(e) = old {
            self.unindex_endpoint(p, e);
        }
        self.index_endpoints(p);
    }

    /// Sets peer `p`'s relay id at supernode `l` (None: `l` does not list it now).
    pub(super) fn set_relay_id(&mut self, p: PeerId, l: LinkId, id: Option<u32>) {
        let Some(peer) = self.slots.get_mut(p.0).and_then(Option::as_mut) else {
            return;
        };
        let old = peer.relay_ids.get(l);
        if old == id {
            return;
        }
        peer.relay_ids.set(l, id);
        if let Some(o) = old {
            if self.by_relay.get(&(l, o)) == Some(&p) {
                self.by_relay.remove(&(l, o));
            }
        }
        if let Some(n) = id {
            self.by_relay.insert((l, n), p);
        }
    }

    /// Drops `e` from the endpoint index if it leads to `p` and `p` no longer has it.
    fn unindex_endpoint(&mut self, p: PeerId, e: SocketAddr) {
        let still = self
            .get(p)
            .is_some_and(|peer| peer.direct == Some(e) || peer.endpoints.contains(&e));
        if !still && self.by_endpoint.get(&e) == Some(&p) {
            self.by_endpoint.remove(&e);
        }
    }

    fn index_endpoints(&mut self, p: PeerId) {
        let Some(peer) = self.slots.get(p.0).and_then(Option::as_ref) else {
            return;
        };
        for e in peer.endpoints.iter().chain(peer.direct.iter()) {
            self.by_endpoint.insert(*e, p);
        }
    }

    /// Adds a peer (its key not in the table yet) in the first free slot.
    pub(super) fn insert(&mut self, peer: Peer) -> PeerId {
        let (key, mac) = (peer.key, peer.mac);
        let p = match self.slots.iter().position(Option::is_none) {
            Some(i) => {
                self.slots[i] = Some(peer);
                PeerId(i)
            }
            None => {
                self.slots.push(Some(peer));
                PeerId(self.slots.len() - 1)
            }
        };
        self.by_key.insert(key, p);
        self.by_mac.insert(mac, p);
        self.index_endpoints(p);
        if let Some(peer) = self.slots[p.0].as_ref() {
            for (l, id) in peer.relay_ids.iter() {
                self.by_relay.insert((l, id), p);
            }
        }
        p
    }

    /// Gives peer `p` the MAC `mac` (frames to it go to `p` from now on).
    pub(super) fn set_mac(&mut self, p: PeerId, mac: Mac) {
        let Some(peer) = self.slots.get_mut(p.0).and_then(Option::as_mut) else {
            return;
        };
        if peer.mac != mac {
            if self.by_mac.get(&peer.mac) == Some(&p) {
                self.by_mac.remove(&peer.mac);
            }
            peer.mac = mac;
        }
        self.by_mac.insert(mac, p);
    }

    /// Takes peer `p` out of the table; its slot becomes free.
    pub(super) fn remove(&mut self, p: PeerId) -> Option<Peer> {
        let peer = self.slots.get_mut(p.0)?.take()?;
        self.by_key.remove(&peer.key);
        if self.by_mac.get(&peer.mac) == Some(&p) {
            self.by_mac.remove(&peer.mac);
        }
        for e in peer.endpoints.iter().chain(peer.direct.iter()) {
            if self.by_endpoint.get(e) == Some(&p) {
                self.by_endpoint.remove(e);
            }
        }
        for (l, id) in peer.relay_ids.iter() {
            if self.by_relay.get(&(l, id)) == Some(&p) {
                self.by_relay.remove(&(l, id));
            }
        }
        Some(peer)
    }

    /// Supernode `l` lists no peer any more (it was removed by a reload).
    pub(super) fn unlist_all(&mut self, l: LinkId) {
        for p in self.ids() {
            self.set_relay_id(p, l, None);
        }
    }

    /// The live peers, in slot order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (PeerId, &Peer)> + Clone {
        #[cfg(test)]
        let visited = &self.visited;
        self.slots.iter().enumerate().filter_map(move |(i, s)| {
            #[cfg(test)]
            visited.set(visited.get() + 1);
            Some((PeerId(i), s.as_ref()?))
        })
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Peer> {
        self.slots.iter_mut().flatten()
    }

    /// The ids of the live peers, in slot order (a copy: the caller may change the table).
    pub(super) fn ids(&self) -> Vec<PeerId> {
        self.iter().map(|(p, _)| p).collect()
    }

    /// Slots, live or free (`table_sizes`).
    pub(super) fn slots(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn keys_len(&self) -> usize {
        self.by_key.len()
    }

    pub(super) fn macs_len(&self) -> usize {
        self.by_mac.len()
    }

    /// Entries of the endpoint and relay-id indexes (`table_sizes`).
    pub(super) fn paths_len(&self) -> (usize, usize) {
        (self.by_endpoint.len(), self.by_relay.len())
    }
}

/// The supernode links. Never shrinks (a link taken out by a reload is retired and keeps its
/// slot), so that a [`LinkId`] always names a link: indexing by one cannot fail.
#[derive(Default)]
pub(super) struct Links(Vec<Link>);

impl Links {
    pub(super) fn push(&mut self, link: Link) -> LinkId {
        self.0.push(link);
        LinkId(self.0.len() - 1)
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn ids(&self) -> impl Iterator<Item = LinkId> {
        (0..self.0.len()).map(LinkId)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (LinkId, &Link)> {
        self.0.iter().enumerate().map(|(i, l)| (LinkId(i), l))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Link> {
        self.0.iter_mut()
    }

    pub(super) fn first(&self) -> Option<&Link> {
        self.0.first()
    }

    /// The link `l` when it exists (a relay path from a packet may name any link).
    pub(super) fn get_mut(&mut self, l: LinkId) -> Option<&mut Link> {
        self.0.get_mut(l.0)
    }
}

impl Index<LinkId> for Links {
    type Output = Link;
    fn index(&self, l: LinkId) -> &Link {
        &self.0[l.0]
    }
}

impl IndexMut<LinkId> for Links {
    fn index_mut(&mut self, l: LinkId) -> &mut Link {
        &mut self.0[l.0]
    }
}

/// A peer's relay id at each supernode, by [`LinkId`] (None: that supernode does not list it
/// now). Grows with the links.
#[derive(Debug, Clone, Default)]
pub(super) struct RelayIds(Vec<Option<u32>>);

impl RelayIds {
    pub(super) fn new(links: usize) -> RelayIds {
        RelayIds(vec![None; links])
    }

    pub(super) fn get(&self, l: LinkId) -> Option<u32> {
        self.0.get(l.0).copied().flatten()
    }

    /// The (link, id) pairs set.
    pub(super) fn iter(&self) -> impl Iterator<Item = (LinkId, u32)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(i, id)| Some((LinkId(i), (*id)?)))
    }

    /// Only through [`PeerTable::set_relay_id`] for a peer in the table.
    fn set(&mut self, l: LinkId, id: Option<u32>) {
        if let Some(x) = self.0.get_mut(l.0) {
            *x = id;
        }
    }

    /// A link was added.
    pub(super) fn push(&mut self) {
        self.0.push(None);
    }

    /// Some supernode lists the peer.
    pub(super) fn any(&self) -> bool {
        self.0.iter().any(Option::is_some)
    }
}

/// Who owns each of our local session indexes (the receiver index peers and supernodes put
/// in front of what they send us). Every index a session or pending handshake holds is here,
/// and goes when it does ([`SessionIndex::retire`]).
#[derive(Default)]
pub(super) struct SessionIndex(HashMap<u32, Owner>);

impl SessionIndex {
    /// A fresh random nonzero index for `owner`.
    pub(super) fn allocate(&mut self, owner: Owner, rng: &mut Rng) -> u32 {
        loop {
            let i = rng.next_u32();
            if i != 0 && !self.0.contains_key(&i) {
                self.0.insert(i, owner);
                return i;
            }
        }
    }

    pub(super) fn owner(&self, i: u32) -> Option<Owner> {
        self.0.get(&i).copied()
    }

    /// Frees index `i` (a handshake that failed or was refused).
    pub(super) fn remove(&mut self, i: u32) {
        self.0.remove(&i);
    }

    /// Frees the index of a session that is dropped.
    pub(super) fn retire(&mut self, s: Option<Session>) {
        if let Some(s) = s {
            self.0.remove(&s.local_index);
        }
    }

    /// Frees the index of a handshake that is dropped.
    pub(super) fn retire_pending(&mut self, p: Option<Pending>) {
        if let Some(p) = p {
            self.0.remove(&p.local_index);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::PeerRecord;
    use crate::keys::PrivateKey;
    use std::time::Instant;

    fn peer(mac: u8) -> Peer {
        let r = PeerRecord {
            id: 1,
            key: PrivateKey::generate().public_key(),
            name: String::new(),
            address: [10, 0, 0, mac].into(),
            mac: Mac([2, 0, 0, 0, 0, mac]),
            instance: 1,
            allowed_cidrs: vec![],
            endpoints: vec![],
            ipv6_router: false,
        };
        Peer::new(&r, 1, Instant::now())
    }

    #[test]
    fn the_lookups_follow_inserts_mac_changes_and_removals() {
        let mut t = PeerTable::default();
        let (a, b) = (peer(1), peer(2));
        let (ka, kb) = (a.key, b.key);
        let pa = t.insert(a);
        let pb = t.insert(b);
        assert_eq!((t.by_key(&ka), t.by_key(&kb)), (Some(pa), Some(pb)));
        assert_eq!(t.by_mac(&Mac([2, 0, 0, 0, 0, 2])), Some(pb));
        // b moves to a new MAC: the old one no longer leads to it.
        t.set_mac(pb, Mac([2, 0, 0, 0, 0, 9]));
        assert_eq!(t.by_mac(&Mac([2, 0, 0, 0, 0, 2])), None);
        assert_eq!(t.by_mac(&Mac([2, 0, 0, 0, 0, 9])), Some(pb));
        // a goes: its key and MAC go with it, its slot is reused, its id finds nothing.
        assert!(t.remove(pa).is_some());
        assert!(t.get(pa).is_none() && t.remove(pa).is_none());
        assert_eq!(
            (t.by_key(&ka), t.by_mac(&Mac([2, 0, 0, 0, 0, 1]))),
            (None, None)
        );
        assert_eq!((t.keys_len(), t.macs_len()), (1, 1));
        let pc = t.insert(peer(3));
        assert_eq!((pc, t.slots()), (pa, 2));
        assert_eq!(t.ids(), vec![pa, pb]);
    }

    #[test]
    fn the_edge_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<crate::edge::Edge>();
    }
}
