//! The supernode's member table: communities and their nodes, named by [`CommunityId`] and
//! [`NodeRef`] instead of bare index pairs, and the lookups that point into them (by key and
//! by id within a community, by session index across all of them).
//!
//! Invariant: `Table::sessions` maps exactly the local indices of the live sessions (current
//! and previous) of every registration in the table to the node holding it. A node's
//! registration is private to this module, so it is only set ([`Table::register`]) or taken
//! ([`Table::unregister`]) here, where the index map follows; a node's key and id are fixed
//! once it is in a community, so `by_key` and `by_id` stay true.

use super::limits::Budgets;
use super::{CommunityConfig, Enrolment};
use crate::control::PeerRecord;
use crate::crypto::Cipher;
use crate::io::{DropReason, Output, Traffic};
use crate::keys::{Mac, PublicKey};
use crate::membership::{NodeEntry, SignedBlob};
use crate::rng::Rng;
use crate::session::{OpenError, Session};
use ipnet::IpNet;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

/// A community's place in the [`Table`] (valid until the next reload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct CommunityId(usize);

/// A member: its community and its place there (valid until the next reload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct NodeRef {
    /// The community it belongs to.
    pub community: CommunityId,
    node: usize,
}

/// A live registration: the member's sessions with us and what it announced.
pub(super) struct Registration {
    session: Session,
    /// The session before the last rekey by the same process, for packets in flight.
    previous: Option<Session>,
    pub endpoint: SocketAddr,
    pub locals: Vec<SocketAddr>,
    pub mac: Mac,
    pub instance: u64,
    pub last_seen: Instant,
    pub since: Instant,
    /// A new source the member's packets came from, challenged and not yet proven.
    pub candidate: Option<Candidate>,
}

/// A source challenged with a `PathChallenge` (return-path proof before the endpoint moves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Candidate {
    pub addr: SocketAddr,
    pub nonce: u64,
    pub sent: Instant,
}

impl Registration {
    fn session_mut(&mut self, index: u32) -> Option<&mut Session> {
        if self.session.local_index == index {
            return Some(&mut self.session);
        }
        self.previous.as_mut().filter(|s| s.local_index == index)
    }

    fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.session.local_index)
            .chain(self.previous.as_ref().map(|s| s.local_index))
    }

    /// Opens a packet that arrived on session `index` with `open` (`Session::open_data`
    /// or `Session::open_relay`).
    pub fn open(
        &mut self,
        index: u32,
        open: impl FnOnce(&mut Session) -> Result<Range<usize>, OpenError>,
    ) -> Result<Range<usize>, DropReason> {
        let s = self.session_mut(index).ok_or(DropReason::UnknownSession)?;
        open(s).map_err(DropReason::from)
    }

    /// Seals the relay header (from member id `from`) over the inner packet at
    /// `out.buf[start..]` and sends it to the member.
    pub fn send_relay(&mut self, from: u32, out: &mut Output, start: usize) {
        self.session.seal_relay(from, &mut out.buf, start);
        out.transmit_from(start, self.endpoint);
    }

    /// Seals `msg` in the current session and sends it to `dst` (which need not be the
    /// proven endpoint: a path challenge), only if the datagram is at most `max` bytes.
    pub fn send_to(&mut self, msg: &[u8], dst: SocketAddr, max: usize, out: &mut Output) -> bool {
        let start = out.buf.len();
        self.session.seal_data(msg, &mut out.buf);
        if out.buf.len() - start > max {
            out.buf.truncate(start);
            return false;
        }
        out.transmit_from(start, dst);
        true
    }

    fn new(session: Session, a: Announced, previous: Option<Session>, since: Instant) -> Self {
        Registration {
            session,
            previous,
            endpoint: a.endpoint,
            locals: a.locals,
            mac: a.mac,
            instance: a.instance,
            last_seen: since,
            since,
            candidate: None,
        }
    }

    fn announced(&self) -> (u64, SocketAddr, Mac, &[SocketAddr]) {
        (self.instance, self.endpoint, self.mac, &self.locals)
    }
}

/// What a member announced in its registration handshake.
pub(super) struct Announced {
    pub endpoint: SocketAddr,
    pub locals: Vec<SocketAddr>,
    pub mac: Mac,
    pub instance: u64,
}

/// One configured (or enrolled) member.
pub(super) struct Node {
    /// As configured; its `key` never changes while the node is in a table.
    pub entry: NodeEntry,
    /// Its id here (unique across communities, never reused); never changes.
    pub id: u32,
    /// Newest handshake timestamp accepted, against replayed initiations.
    pub last_timestamp: u64,
    reg: Option<Registration>,
    /// A registration whose handshake was answered but whose key the edge has not yet
    /// confirmed (no authenticated packet in the new session yet): it takes effect only then,
    /// so a replayed or spoofed initiation changes nothing.
    pending: Option<Registration>,
    pub traffic: Traffic,
    /// What the member may still ask of the supernode (token buckets).
    pub budget: Budgets,
}

impl Node {
    pub fn new(entry: NodeEntry, id: u32) -> Node {
        Node {
            entry,
            id,
            last_timestamp: 0,
            reg: None,
            pending: None,
            traffic: Traffic::default(),
            budget: Budgets::default(),
        }
    }

    /// Its registration, if it is registered.
    pub fn reg(&self) -> Option<&Registration> {
        self.reg.as_ref()
    }

    /// Its name, or its key if it has none.
    pub fn label(&self) -> String {
        if self.entry.name.is_empty() {
            self.entry.key.to_base64()
        } else {
            self.entry.name.clone()
        }
    }

    /// Its record for member lists and lookups (None: not registered).
    pub fn record(&self) -> Option<PeerRecord> {
        let reg = self.reg.as_ref()?;
        let mut endpoints = vec![reg.endpoint];
        endpoints.extend(reg.locals.iter().filter(|e| **e != reg.endpoint));
        Some(PeerRecord {
            id: self.id,
            key: self.entry.key,
            name: self.entry.name.clone(),
            address: self.entry.address,
            mac: reg.mac,
            instance: reg.instance,
            allowed_cidrs: self.entry.allowed_cidrs.clone(),
            endpoints,
            ipv6_router: self.entry.ipv6_router,
        })
    }

    /// Seals an encoded control message to the node; no-op if it is not registered.
    pub fn send(&mut self, msg: &[u8], out: &mut Output) {
        let Some(reg) = self.reg.as_mut() else { return };
        let start = out.buf.len();
        reg.session.seal_data(msg, &mut out.buf);
        out.transmit_from(start, reg.endpoint);
        self.traffic.tx_packets += 1;
    }

    /// True while a registration waits for key confirmation.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Its registration (if any), its budgets and its counters, apart.
    pub fn parts(&mut self) -> (Option<&mut Registration>, &mut Budgets, &mut Traffic) {
        (self.reg.as_mut(), &mut self.budget, &mut self.traffic)
    }

    /// Its registration, to update what it announced (its sessions stay as they are).
    pub fn reg_mut(&mut self) -> Option<&mut Registration> {
        self.reg.as_mut()
    }

    /// A reload gives a kept node its new entry (same key): `(moved, changed)`, where moved
    /// means its address changed and its registration was dropped (it registers anew with
    /// the new one), and changed that its name, address or ranges did. Only for a node out
    /// of its table ([`Table::take`]), which reindexes it when it goes back.
    pub fn reconfigure(&mut self, entry: NodeEntry) -> (bool, bool) {
        let moved = self.entry.address != entry.address;
        if moved {
            self.reg = None;
            self.pending = None;
        }
        let changed = moved
            || self.entry.name != entry.name
            || self.entry.allowed_cidrs != entry.allowed_cidrs
            || self.entry.ipv6_router != entry.ipv6_router;
        if changed {
            self.entry = entry;
        }
        (moved, changed)
    }
}

/// One community as served.
pub(super) struct Community {
    pub name: String,
    pub network: IpNet,
    nodes: Vec<Node>,
    by_key: HashMap<PublicKey, usize>,
    by_id: HashMap<u32, usize>,
    /// Membership version; grows with every change to the member list.
    pub epoch: u64,
    pub relay: bool,
    pub cipher: Cipher,
    /// Keys removed by a reload, newest last (bounded by [`super::REMEMBERED_REMOVALS`]).
    pub removed: VecDeque<PublicKey>,
    pub enrolment: Option<Enrolment>,
    /// The signed membership carried for edges.
    pub signed: Option<SignedBlob>,
}

impl Community {
    /// A community as `cfg` configures it, with no nodes yet (they are returned, for the
    /// caller to push), at membership version `epoch`, remembering `removed`.
    pub fn new(
        cfg: CommunityConfig,
        epoch: u64,
        removed: VecDeque<PublicKey>,
    ) -> (Community, Vec<NodeEntry>) {
        let comm = Community {
            name: cfg.name,
            network: cfg.network,
            nodes: Vec::new(),
            by_key: HashMap::new(),
            by_id: HashMap::new(),
            epoch,
            relay: cfg.relay,
            cipher: cfg.cipher,
            removed,
            enrolment: cfg.enrolment,
            signed: cfg.signed,
        };
        (comm, cfg.nodes)
    }

    /// Adds a node (its key and id must be new to the community).
    pub fn push(&mut self, node: Node) {
        let i = self.nodes.len();
        self.by_key.insert(node.entry.key, i);
        self.by_id.insert(node.id, i);
        self.nodes.push(node);
    }

    /// The nodes, in configuration order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Takes the nodes out (the community is being rebuilt by a reload or dropped).
    pub fn into_nodes(self) -> Vec<Node> {
        self.nodes
    }

    /// The version of the signed membership carried (0: none).
    pub fn signed_version(&self) -> u64 {
        self.signed.as_ref().map_or(0, |s| s.version)
    }
}

/// The communities and the session index into them.
#[derive(Default)]
pub(super) struct Table {
    communities: Vec<Community>,
    sessions: HashMap<u32, NodeRef>,
    next_id: u32,
}

impl Table {
    /// The communities, in configuration order.
    pub fn communities(&self) -> &[Community] {
        &self.communities
    }

    /// The ids of all communities.
    pub fn community_ids(&self) -> impl Iterator<Item = CommunityId> {
        (0..self.communities.len()).map(CommunityId)
    }

    /// The members of community `c`, registered or not.
    pub fn members(&self, c: CommunityId) -> impl Iterator<Item = NodeRef> {
        let len = self.communities[c.0].nodes.len();
        (0..len).map(move |node| NodeRef { community: c, node })
    }

    pub fn community(&self, c: CommunityId) -> &Community {
        &self.communities[c.0]
    }

    pub fn community_mut(&mut self, c: CommunityId) -> &mut Community {
        &mut self.communities[c.0]
    }

    pub fn node(&self, r: NodeRef) -> &Node {
        &self.communities[r.community.0].nodes[r.node]
    }

    pub fn node_mut(&mut self, r: NodeRef) -> &mut Node {
        &mut self.communities[r.community.0].nodes[r.node]
    }

    /// The community called `name`.
    pub fn by_name(&self, name: &str) -> Option<CommunityId> {
        self.communities
            .iter()
            .position(|c| c.name == name)
            .map(CommunityId)
    }

    /// The member of `c` with `key`.
    pub fn by_key(&self, c: CommunityId, key: &PublicKey) -> Option<NodeRef> {
        let node = *self.communities[c.0].by_key.get(key)?;
        Some(NodeRef { community: c, node })
    }

    /// The member of `c` with id `id` (ids of other communities are not found).
    pub fn by_id(&self, c: CommunityId, id: u32) -> Option<NodeRef> {
        let node = *self.communities[c.0].by_id.get(&id)?;
        Some(NodeRef { community: c, node })
    }

    /// The registered member whose session has local index `index`.
    #[cfg(test)]
    pub fn by_session(&mut self, index: u32) -> Option<(NodeRef, &mut Registration)> {
        let r = *self.sessions.get(&index)?;
        let reg = self.node_mut(r).reg.as_mut()?;
        Some((r, reg))
    }

    /// A new node id (unique, never reused).
    pub fn allocate_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    /// True before any node got an id (the first configuration).
    pub fn fresh(&self) -> bool {
        self.next_id == 0
    }

    /// A random local index no live session uses.
    pub fn fresh_index(&self, rng: &mut Rng) -> u32 {
        loop {
            let i = rng.next_u32();
            if i != 0 && !self.sessions.contains_key(&i) {
                return i;
            }
        }
    }

    /// Adds a community (and indexes the sessions of its registered nodes).
    pub fn push(&mut self, comm: Community) -> CommunityId {
        let c = CommunityId(self.communities.len());
        for (node, n) in comm.nodes.iter().enumerate() {
            let regs = n.reg.iter().chain(n.pending.iter());
            for i in regs.flat_map(Registration::indices) {
                self.sessions.insert(i, NodeRef { community: c, node });
            }
        }
        self.communities.push(comm);
        c
    }

    /// Takes every community out, for a reload to rebuild them ([`Table::push`] puts them
    /// back); node ids keep counting.
    pub fn take(&mut self) -> Vec<Community> {
        self.sessions.clear();
        std::mem::take(&mut self.communities)
    }

    /// A registration handshake of `r` was answered with `session`: it is kept pending
    /// (replacing an older pending one) until the edge confirms the key
    /// ([`Table::open`]); the registration in force, if any, stays as it is until then.
    pub fn register_pending(&mut self, r: NodeRef, session: Session, a: Announced, now: Instant) {
        self.sessions.insert(session.local_index, r);
        let reg = Registration::new(session, a, None, now);
        let old = self.node_mut(r).pending.replace(reg);
        self.retire(old.map(|p| p.session));
    }

    /// The pending registration of `r` takes effect: the same process re-keying keeps its
    /// old session for packets in flight; a restarted edge (new instance) replaces its old
    /// registration at once. Some(changed) if there was one, where changed means that its
    /// instance, endpoint, MAC or local endpoints differ from the registration it replaced.
    fn confirm(&mut self, r: NodeRef, now: Instant) -> Option<bool> {
        let pending = self.node_mut(r).pending.take()?;
        let changed = self
            .node(r)
            .reg
            .as_ref()
            .is_none_or(|old| old.announced() != pending.announced());
        let (previous, since) = match self.node_mut(r).reg.take() {
            Some(old) if old.instance == pending.instance => {
                self.retire(old.previous);
                (Some(old.session), old.since)
            }
            Some(old) => {
                self.retire(Some(old.session));
                self.retire(old.previous);
                (None, now)
            }
            None => (None, now),
        };
        let mut reg = pending;
        reg.previous = previous;
        reg.since = since;
        reg.last_seen = now;
        self.node_mut(r).reg = Some(reg);
        Some(changed)
    }

    /// Installs a registration at once (pending, then confirmed).
    #[cfg(test)]
    pub fn register(&mut self, r: NodeRef, session: Session, a: Announced, now: Instant) {
        self.register_pending(r, session, a, now);
        self.confirm(r, now);
    }

    /// Opens a packet that arrived on session `index` with `open` (`Session::open_data` or
    /// `Session::open_relay`): the member, the plaintext, and Some(changed) if the packet
    /// confirmed the member's pending registration (see [`Table::confirm`]).
    pub fn open(
        &mut self,
        now: Instant,
        index: u32,
        open: impl FnOnce(&mut Session) -> Result<Range<usize>, OpenError>,
    ) -> Result<(NodeRef, Range<usize>, Option<bool>), DropReason> {
        let r = *self
            .sessions
            .get(&index)
            .ok_or(DropReason::UnknownSession)?;
        let node = self.node_mut(r);
        if let Some(p) = node
            .pending
            .as_mut()
            .filter(|p| p.session.local_index == index)
        {
            let range = open(&mut p.session).map_err(DropReason::from)?;
            return Ok((r, range, self.confirm(r, now)));
        }
        let reg = node.reg.as_mut().ok_or(DropReason::UnknownSession)?;
        Ok((r, reg.open(index, open)?, None))
    }

    /// Forgets `r`'s pending registration if it is older than `max` (never confirmed).
    pub fn expire_pending(&mut self, r: NodeRef, now: Instant, max: Duration) {
        let node = self.node_mut(r);
        if node
            .pending
            .as_ref()
            .is_some_and(|p| now.saturating_duration_since(p.since) >= max)
        {
            let p = node.pending.take();
            self.retire(p.map(|p| p.session));
        }
    }

    /// Ends `r`'s registration and forgets its sessions: false if it was not registered.
    pub fn unregister(&mut self, r: NodeRef) -> bool {
        let pending = self.node_mut(r).pending.take();
        self.retire(pending.map(|p| p.session));
        let Some(reg) = self.node_mut(r).reg.take() else {
            return false;
        };
        for i in reg.indices() {
            self.sessions.remove(&i);
        }
        true
    }

    fn retire(&mut self, s: Option<Session>) {
        if let Some(s) = s {
            self.sessions.remove(&s.local_index);
        }
    }

    /// Live session indices (for `table_sizes`).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{AeadKey, SessionKeys};

    fn session(index: u32, now: Instant) -> Session {
        let keys = SessionKeys {
            send: AeadKey::new(&[1; 32]),
            recv: AeadKey::new(&[2; 32]),
        };
        Session::new(index, 7, keys, now, false)
    }

    fn announced(instance: u64) -> Announced {
        Announced {
            endpoint: "198.18.0.9:7655".parse().unwrap(),
            locals: Vec::new(),
            mac: Mac([2, 0, 0, 0, 0, 1]),
            instance,
        }
    }

    fn indexed(t: &mut Table, index: u32) -> Option<NodeRef> {
        t.by_session(index).map(|(r, _)| r)
    }

    #[test]
    fn the_session_index_follows_rekeys_restarts_expiry_and_reloads() {
        let now = Instant::now();
        let mut t = Table::default();
        let cfg = CommunityConfig {
            name: "c".into(),
            network: "10.0.0.0/24".parse().unwrap(),
            nodes: vec![NodeEntry {
                key: crate::keys::PrivateKey([5; 32]).public_key(),
                name: "n".into(),
                address: "10.0.0.1".parse().unwrap(),
                allowed_cidrs: Vec::new(),
                ipv6_router: false,
            }],
            relay: true,
            cipher: Cipher::default(),
            signed: None,
            enrolment: None,
        };
        let (mut comm, nodes) = Community::new(cfg, 1, VecDeque::new());
        for e in nodes {
            let id = t.allocate_id();
            comm.push(Node::new(e, id));
        }
        let c = t.push(comm);
        let r = t.by_id(c, 1).unwrap();
        assert_eq!(t.by_key(c, &t.node(r).entry.key.clone()), Some(r));
        // A rekey by the same process keeps the old session for packets in flight.
        t.register(r, session(10, now), announced(1), now);
        t.register(r, session(11, now), announced(1), now);
        assert_eq!(
            (indexed(&mut t, 10), indexed(&mut t, 11)),
            (Some(r), Some(r))
        );
        t.register(r, session(12, now), announced(1), now);
        assert_eq!(indexed(&mut t, 10), None, "only one previous session");
        // A restarted process replaces both at once.
        t.register(r, session(13, now), announced(2), now);
        assert_eq!(t.session_count(), 1);
        assert_eq!(indexed(&mut t, 13), Some(r));
        // A reload takes the table apart and puts it back: registrations survive.
        let comms = t.take();
        assert_eq!(t.session_count(), 0);
        for comm in comms {
            t.push(comm);
        }
        assert_eq!(indexed(&mut t, 13), Some(r));
        assert!(t.unregister(r) && !t.unregister(r));
        assert_eq!(t.session_count(), 0);
    }
}
