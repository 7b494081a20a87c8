//! Member lists from the supernodes: whole lists (in chunks, staged until complete), the
//! updates between epochs, notifications and removals, and the records they carry applied to
//! the peer table; with `admin_key`, the signed membership every record is checked against.

use super::paths::{probe_worthy, relay_path};
use super::peers::Peer;
use super::table::{LinkId, PeerId};
use super::{Command, Edge, Event};
use crate::control::{Control, PeerRecord};
use crate::eth;
use crate::io::{DropReason, Output};
use crate::keys::PublicKey;
use crate::membership::{Membership, MAX_CHUNKS, MAX_MEMBERSHIP_BYTES};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// A signed membership being received in chunks.
pub(super) struct SignedStaging {
    version: u64,
    chunks: Vec<Option<Vec<u8>>>,
    bytes: usize,
}

/// A whole member list being received in chunks.
pub(super) struct ListStaging {
    epoch: u64,
    pub(super) chunks: Vec<Option<Vec<PeerRecord>>>,
}

impl Edge {
    /// The newest valid signed membership's bytes (to persist for the next start).
    pub fn signed_membership(&self) -> Option<&[u8]> {
        self.signed.as_ref().map(|(_, b)| b.as_slice())
    }

    /// Verifies a complete signed membership and, if it is valid, for our community and newer
    /// than ours, makes it the list peers are checked against: peers not on it (or whose
    /// address or ranges it changed) are torn down, and the supernodes are asked for their
    /// records again (some may have been refused before the list arrived).
    pub(super) fn accept_signed(
        &mut self,
        now: Instant,
        link: Option<LinkId>,
        bytes: Vec<u8>,
        out: &mut Output,
    ) -> bool {
        let Some(admin) = self.cfg.admin_key else {
            return false;
        };
        let from = link.map(|l| self.links[l].addr);
        let current = self.signed.as_ref().map(|(m, _)| m.version);
        let verdict = match Membership::verify(&bytes, &admin) {
            Err(e) => Err(format!("signed membership refused: {e}")),
            Ok(m) if m.community != self.cfg.community => Err(format!(
                "signed membership refused: it is for community '{}', not '{}'",
                m.community, self.cfg.community
            )),
            Ok(m) if current.is_some_and(|v| m.version < v) => Err(format!(
                "signed membership refused: version {} is older than version {} already seen (a rollback)",
                m.version,
                current.unwrap_or_default()
            )),
            Ok(m) if current == Some(m.version) => {
                if self.signed.as_ref().is_some_and(|(_, b)| *b == bytes) {
                    return true; // the list we have
                }
                Err(format!(
                    "signed membership refused: another list with version {} than the one already accepted",
                    m.version
                ))
            }
            Ok(m) => Ok(m),
        };
        let m = match verdict {
            Ok(m) => m,
            Err(reason) => {
                if self.membership_error.as_deref() != Some(reason.as_str()) {
                    self.events.push(Event::MembershipRefused {
                        supernode: from,
                        reason: reason.clone(),
                    });
                }
                self.membership_error = Some(reason);
                return false;
            }
        };
        // Revocation: peers the new list does not vouch for go, sessions and all.
        for p in self.peers.ids() {
            let Some(peer) = self.peers.get(p) else {
                continue;
            };
            if m.get(&peer.key)
                .is_some_and(|s| s.matches(peer.address, &peer.allowed))
            {
                continue;
            }
            self.events.push(Event::PeerRemoved {
                peer: peer.label(),
                supernode: from.unwrap_or(
                    self.links
                        .first()
                        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |l| l.addr),
                ),
            });
            self.forget_peer(p);
        }
        self.events.push(Event::MembershipAccepted {
            version: m.version,
            members: m.members.len(),
            supernode: from,
        });
        self.membership_error = None;
        // The cached copy at start is already on disk; a supernode's is kept for next time.
        if from.is_some() {
            self.commands
                .push(Command::PersistMembership(bytes.clone()));
        }
        self.signed = Some((m, bytes));
        self.retry_assignment();
        // Records refused while we had no (or an older) list: ask for them again.
        for l in self.links.ids() {
            let link = &mut self.links[l];
            link.epoch_applied = None;
            link.staging = None;
            if link.registered && !link.retired {
                self.send_control(l, &Control::SyncRequest, out);
            }
        }
        self.next_tick = self.next_tick.min(now);
        true
    }

    /// With `admin_key`: is this record what the signed membership says (key listed, same
    /// address and ranges, a MAC no other member uses)? Without: always.
    fn vouched(&self, r: &PeerRecord) -> bool {
        if self.cfg.admin_key.is_none() {
            return true;
        }
        let Some((m, _)) = &self.signed else {
            return false;
        };
        let Some(member) = m.get(&r.key) else {
            return false;
        };
        if !member.matches(r.address, &r.allowed_cidrs) {
            return false;
        }
        // A MAC another member holds would divert its frames to this one.
        let me = self.peers.by_key(&r.key);
        let taken = self
            .peers
            .by_mac(&r.mac)
            .is_some_and(|q| Some(q) != me && self.peers.get(q).is_some_and(|x| x.mac == r.mac));
        !(taken || r.mac.is_group() || r.mac == self.cfg.mac)
    }

    /// The changes between epochs `from` and `epoch` of supernode `l`'s list: applied when
    /// our copy is at `from`; otherwise our copy is out of step and we ask for a whole list.
    pub(super) fn on_peer_update(
        &mut self,
        now: Instant,
        l: LinkId,
        (from, epoch): (u64, u64),
        records: Vec<PeerRecord>,
        gone: Vec<PublicKey>,
        out: &mut Output,
    ) {
        let link = &mut self.links[l];
        if link.epoch_applied == Some(from) {
            link.epoch_applied = Some(epoch);
            for r in records {
                self.upsert_peer(now, l, r, out);
            }
            // Not registered with this supernode any more: it cannot relay to them.
            // Sessions stay, as for a peer missing from a whole list.
            for key in gone {
                if let Some(p) = self.peers.by_key(&key) {
                    self.peers.set_relay_id(p, l, None);
                }
            }
        } else if link.epoch_applied != Some(epoch) {
            // We missed a step (a lost update) or a whole list is on its way.
            self.request_sync(now, l, out);
        }
    }

    /// One chunk of supernode `l`'s whole list at `epoch`; the list applies once all are in.
    pub(super) fn on_peer_list(
        &mut self,
        now: Instant,
        l: LinkId,
        epoch: u64,
        (chunk, chunks): (u16, u16),
        records: Vec<PeerRecord>,
        out: &mut Output,
    ) {
        let chunks = usize::from(chunks.max(1));
        let chunk = usize::from(chunk);
        if chunk >= chunks {
            return self.drops.add(DropReason::Malformed);
        }
        let link = &mut self.links[l];
        let staging = link.staging.get_or_insert_with(|| ListStaging {
            epoch,
            chunks: Vec::new(),
        });
        if staging.epoch != epoch || staging.chunks.len() != chunks {
            *staging = ListStaging {
                epoch,
                chunks: vec![None; chunks],
            };
        }
        staging.chunks[chunk] = Some(records);
        if staging.chunks.iter().all(Option::is_some) {
            let Some(staging) = link.staging.take() else {
                return;
            };
            link.epoch_applied = Some(staging.epoch);
            let all: Vec<PeerRecord> = staging.chunks.into_iter().flatten().flatten().collect();
            self.apply_list(now, l, all, out);
        }
    }

    /// Someone is trying to reach us: open our side of the path now. Without a session, and
    /// without a relay to carry its handshake, we start one ourselves: our initiation opens
    /// our NAT towards the peer (the hole punch).
    pub(super) fn on_peer_notify(
        &mut self,
        now: Instant,
        l: LinkId,
        record: PeerRecord,
        out: &mut Output,
    ) {
        let key = record.key;
        self.upsert_peer(now, l, record, out);
        let Some(p) = self.peers.by_key(&key) else {
            return;
        };
        let Some(peer) = self.peers.get(p) else {
            return;
        };
        if peer.current.is_some() {
            self.probe_on_notice(now, p, out);
        } else if peer.pending.is_none() && relay_path(peer, &self.links, self.cfg.relay).is_none()
        {
            self.start_handshake(now, p, out);
        }
    }

    /// Supernode `l` says these keys are members no more: their peers go, sessions and all.
    pub(super) fn on_peers_removed(&mut self, l: LinkId, keys: Vec<PublicKey>) {
        for key in keys {
            let Some(p) = self.peers.by_key(&key) else {
                continue;
            };
            let Some(peer) = self.peers.get(p) else {
                continue;
            };
            self.events.push(Event::PeerRemoved {
                peer: peer.label(),
                supernode: self.links[l].addr,
            });
            self.forget_peer(p);
        }
    }

    /// One chunk of a signed membership; verified once all are in.
    pub(super) fn on_signed_chunk(
        &mut self,
        now: Instant,
        l: LinkId,
        version: u64,
        (chunk, chunks): (u16, u16),
        data: Vec<u8>,
        out: &mut Output,
    ) {
        if self.cfg.admin_key.is_none() {
            return;
        }
        let (chunk, chunks) = (usize::from(chunk), usize::from(chunks));
        if chunks == 0 || chunk >= chunks || chunks > MAX_CHUNKS {
            return self.drops.add(DropReason::Malformed);
        }
        let link = &mut self.links[l];
        let staging = link.signed_staging.get_or_insert_with(|| SignedStaging {
            version,
            chunks: Vec::new(),
            bytes: 0,
        });
        if staging.version != version || staging.chunks.len() != chunks {
            *staging = SignedStaging {
                version,
                chunks: vec![None; chunks],
                bytes: 0,
            };
        }
        if let Some(old) = &staging.chunks[chunk] {
            staging.bytes -= old.len();
        }
        staging.bytes += data.len();
        if staging.bytes > MAX_MEMBERSHIP_BYTES {
            link.signed_staging = None;
            return self.drops.add(DropReason::Malformed);
        }
        staging.chunks[chunk] = Some(data);
        if staging.chunks.iter().all(Option::is_some) {
            let Some(staging) = link.signed_staging.take() else {
                return;
            };
            let bytes: Vec<u8> = staging.chunks.into_iter().flatten().flatten().collect();
            if !self.accept_signed(now, Some(l), bytes, out) {
                // Not asked for again from this supernode until it offers another version.
                self.links[l].signed_refused = Some(version);
            }
        }
    }

    fn apply_list(&mut self, now: Instant, l: LinkId, records: Vec<PeerRecord>, out: &mut Output) {
        let listed: HashSet<PublicKey> = records.iter().map(|r| r.key).collect();
        for r in records {
            self.upsert_peer(now, l, r, out);
        }
        // A supernode that no longer lists a peer cannot relay to it. Its session, if any,
        // stays: a supernode restart must not cut tunnels that work without it.
        for p in self.peers.ids() {
            if self
                .peers
                .get(p)
                .is_some_and(|peer| !listed.contains(&peer.key))
            {
                self.peers.set_relay_id(p, l, None);
            }
        }
    }

    /// A member's record from supernode `l`: a new peer, or what changed of a known one.
    pub(super) fn upsert_peer(&mut self, now: Instant, l: LinkId, r: PeerRecord, out: &mut Output) {
        if r.key == self.public {
            return;
        }
        if !self.vouched(&r) {
            let p = self.peers.by_key(&r.key);
            return self.drop_peer(p, DropReason::NotSigned);
        }
        // A new peer, or a new MAC for a known one (a restart with another `mac`, a rotated
        // key): tell our kernel, whose neighbour entry for that address may point at a MAC
        // nobody owns any more. Without this it keeps it until the entry goes stale (~15 s).
        let known: Option<PeerId> = self.peers.by_key(&r.key);
        let known_mac = known.and_then(|p| self.peers.get(p)).map(|p| p.mac);
        if known_mac != Some(r.mac) {
            if let IpAddr::V4(ip) = r.address {
                let start = out.buf.len();
                out.buf.extend_from_slice(&eth::gratuitous_arp(r.mac, ip));
                out.frames.push(start..out.buf.len());
            }
        }
        let p = match known {
            Some(p) => p,
            None => self.peers.insert(Peer::new(&r, self.links.len(), now)),
        };
        self.peers.set_mac(p, r.mac);
        let Some(peer) = self.peers.get_mut(p) else {
            return;
        };
        if r.instance != peer.instance {
            // The peer restarted: its sessions died with it. Drop ours so that the next frame
            // starts a handshake instead of feeding a session nobody can read.
            peer.instance = r.instance;
            for s in [
                peer.current.take(),
                peer.previous.take(),
                peer.unconfirmed.take(),
            ] {
                self.index.retire(s);
            }
            peer.last_direct_rx = None;
            self.peers.set_direct(p, None);
        }
        // With admin_key only the administrator decides who may advertise routes.
        let ipv6_router = match (&self.cfg.admin_key, &self.signed) {
            (None, _) => r.ipv6_router,
            (Some(_), Some((m, _))) => m.get(&r.key).is_some_and(|s| s.ipv6_router),
            (Some(_), None) => false,
        };
        let Some(peer) = self.peers.get_mut(p) else {
            return;
        };
        peer.ipv6_router = ipv6_router;
        peer.name = r.name;
        peer.address = r.address;
        peer.allowed = r.allowed_cidrs;
        let endpoints = probe_worthy(r.endpoints, self.cfg.network);
        self.peers.set_endpoints(p, endpoints);
        self.peers.set_relay_id(p, l, Some(r.id));
    }
}
