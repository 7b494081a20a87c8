//! The supernode link: the handshake that carries our registration, registrations renewed
//! and acknowledged, the control messages a supernode sends (dispatched here, member lists
//! handled in `members.rs`), lookups, and the supernode list changed by a reload.

use super::members::{ListStaging, SignedStaging};
use super::paths::Path;
use super::peers::Pending;
use super::table::{LinkId, Owner};
use super::{
    backoff, Command, Edge, Event, ACK_RETRY, LINK_LOST, REFUSED_RETRY, REGISTER_INIT_PAYLOAD_MIN,
};
use crate::control::{Control, Query};
use crate::crypto::Cipher;
use crate::crypto::Handshake;
use crate::io::{DropReason, Output};
use crate::keys::PublicKey;
use crate::session::Session;
use crate::wire;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Least time between two requests for the whole member list made because our copy fell out
/// of step with the supernode's updates.
const SYNC_RETRY: Duration = Duration::from_secs(1);

/// Our connection to one supernode.
pub(super) struct Link {
    pub(super) addr: SocketAddr,
    pub(super) key: PublicKey,
    pub(super) session: Option<Session>,
    pub(super) previous: Option<Session>,
    pub(super) pending: Option<Pending>,
    pub(super) attempts: u32,
    pub(super) next_handshake: Instant,
    pub(super) registered: bool,
    pub(super) id: Option<u32>,
    pub(super) observed: Option<SocketAddr>,
    pub(super) error: Option<String>,
    pub(super) interval: Duration,
    pub(super) next_register: Instant,
    pub(super) awaiting_ack: Option<Instant>,
    pub(super) last_register_sent: Instant,
    pub(super) last_ack: Option<Instant>,
    pub(super) registered_at: Option<Instant>,
    pub(super) epoch_applied: Option<u64>,
    pub(super) staging: Option<ListStaging>,
    /// When we last asked for the whole member list because our copy was out of step.
    pub(super) sync_sent: Option<Instant>,
    /// The supernode relays for our community (from its acknowledgement).
    pub(super) relays: bool,
    /// When an authenticated answer last came from it.
    pub(super) last_answer: Option<Instant>,
    /// Taken out of the configuration by a reload: no handshakes, not shown. The slot stays
    /// so that link ids (in paths, sessions and peers' relay ids) never move.
    pub(super) retired: bool,
    /// A signed membership being received in chunks.
    pub(super) signed_staging: Option<SignedStaging>,
    /// The last signed version this supernode offered that we refused (not asked for again).
    pub(super) signed_refused: Option<u64>,
}

impl Link {
    pub(super) fn new(addr: SocketAddr, key: PublicKey, now: Instant) -> Link {
        Link {
            addr,
            key,
            session: None,
            previous: None,
            pending: None,
            attempts: 0,
            next_handshake: now,
            registered: false,
            id: None,
            observed: None,
            error: None,
            interval: Duration::from_secs(10),
            next_register: now,
            awaiting_ack: None,
            last_register_sent: now,
            last_ack: None,
            registered_at: None,
            epoch_applied: None,
            staging: None,
            sync_sent: None,
            relays: true,
            last_answer: None,
            retired: false,
            signed_staging: None,
            signed_refused: None,
        }
    }

    /// The current or previous session with local index `receiver`.
    pub(super) fn session_for(&mut self, receiver: u32) -> Option<&mut Session> {
        [self.session.as_mut(), self.previous.as_mut()]
            .into_iter()
            .flatten()
            .find(|s| s.local_index == receiver)
    }
}

impl Edge {
    /// True once at least one supernode accepted our registration.
    pub fn is_registered(&self) -> bool {
        self.links.iter().any(|(_, l)| l.registered)
    }

    /// Supernodes that have not answered anything for a while although we keep trying
    /// (outbound UDP may be blocked): the shell may then try its TCP fallback.
    pub fn silent_supernodes(&self, now: Instant) -> Vec<SocketAddr> {
        self.links
            .iter()
            .map(|(_, l)| l)
            .filter(|l| {
                !l.registered
                    && !l.retired
                    && l.attempts >= 3
                    && l.last_answer
                        .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(10))
            })
            .map(|l| l.addr)
            .collect()
    }

    /// The shell's TCP connection to supernode `addr` is up (after [`Command::ConnectTcp`]):
    /// it is not tried again while the connection lasts, and the handshake is repeated at
    /// once over it.
    pub fn tcp_connected(&mut self, now: Instant, addr: SocketAddr) {
        if !self.links.iter().any(|(_, l)| l.addr == addr && !l.retired) {
            // Removed by a reload while the connect was under way.
            self.commands.push(Command::CloseTcp(addr));
            return;
        }
        self.fallback.connected(addr);
        self.retry_supernode(addr, now);
    }

    /// The shell's TCP connection to supernode `addr` failed or closed: it may be tried
    /// again once [`tcp_fallback::RETRY_INTERVAL`](super) has passed since the last attempt.
    pub fn tcp_closed(&mut self, addr: SocketAddr) {
        self.fallback.closed(addr);
    }

    /// The shell has a new way to reach supernode `addr` (its TCP fallback connected):
    /// handshake again at the next timer instead of waiting out the backoff.
    pub fn retry_supernode(&mut self, addr: SocketAddr, now: Instant) {
        for l in self.links.iter_mut().filter(|l| l.addr == addr) {
            self.index.retire_pending(l.pending.take());
            l.next_handshake = now;
        }
        self.next_tick = self.next_tick.min(now);
    }

    /// Applies a new supernode list and keepalive interval (the config was edited and the
    /// daemon got SIGHUP). Supernodes that stay keep their registration; new ones are
    /// contacted at once; removed ones are dropped (their sessions closed, relays through
    /// them no longer used). Sessions with peers are not touched: a direct tunnel carries on.
    /// Returns the supernodes (added, removed).
    pub fn reload(
        &mut self,
        supernodes: &[(SocketAddr, PublicKey)],
        keepalive: Duration,
        now: Instant,
    ) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        self.cfg.keepalive = keepalive;
        self.cfg.supernodes = supernodes.to_vec();
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for l in self.links.ids() {
            let link = &mut self.links[l];
            let wanted = supernodes.contains(&(link.addr, link.key));
            if link.retired != wanted {
                continue;
            }
            if wanted {
                *link = Link::new(link.addr, link.key, now);
                added.push(link.addr);
                continue;
            }
            link.retired = true;
            link.registered = false;
            removed.push(link.addr);
            // Whatever the state of its fallback (a connect may still be under way).
            self.fallback.removed(link.addr);
            self.commands.push(Command::CloseTcp(link.addr));
            for s in [link.session.take(), link.previous.take()] {
                self.index.retire(s);
            }
            self.index.retire_pending(link.pending.take());
            self.peers.unlist_all(l);
        }
        for &(addr, key) in supernodes {
            if !self
                .links
                .iter()
                .any(|(_, x)| x.addr == addr && x.key == key)
            {
                self.links.push(Link::new(addr, key, now));
                for peer in self.peers.iter_mut() {
                    peer.relay_ids.push();
                }
                added.push(addr);
            }
        }
        self.next_tick = now;
        (added, removed)
    }

    /// The response to our initiation to supernode `l`: it carries the supernode's
    /// acknowledgement or refusal of the registration in the initiation.
    pub(super) fn on_link_response(
        &mut self,
        now: Instant,
        path: Path,
        l: LinkId,
        (sender, receiver): (u32, u32),
        noise: &[u8],
        out: &mut Output,
    ) {
        if path != Path::Direct(self.links[l].addr) {
            return self.drops.add(DropReason::Stale);
        }
        let link = &mut self.links[l];
        let Some(pending) = link.pending.take_if(|x| x.local_index == receiver) else {
            return self.drops.add(DropReason::Stale);
        };
        let (keys, payload) = match pending.hs.finish_initiation(noise) {
            Ok(x) => x,
            Err(_) => {
                self.index.remove(receiver);
                return self.drops.add(DropReason::HandshakeFailed);
            }
        };
        let session = Session::new(receiver, sender, keys, now, true);
        link.last_answer = Some(now);
        match Control::decode(&payload) {
            Ok(msg @ Control::RegisterAck { .. }) => {
                let old = link.previous.take();
                link.previous = link.session.replace(session);
                self.index.retire(old);
                link.attempts = 0;
                self.on_control(now, l, msg, out);
            }
            Ok(Control::RegisterNak { message, .. }) => {
                self.index.remove(receiver);
                self.refused(now, l, message);
            }
            _ => {
                self.index.remove(receiver);
                self.drops.add(DropReason::Malformed);
            }
        }
    }

    fn refused(&mut self, now: Instant, l: LinkId, message: String) {
        let link = &mut self.links[l];
        link.registered = false;
        self.index.retire(link.session.take());
        self.index.retire(link.previous.take());
        link.next_handshake = now + REFUSED_RETRY;
        link.awaiting_ack = None;
        if link.error.as_deref() != Some(message.as_str()) {
            self.events.push(Event::Refused {
                supernode: link.addr,
                message: message.clone(),
            });
        }
        link.error = Some(message);
    }

    /// A control message from supernode `l`.
    pub(super) fn on_control(&mut self, now: Instant, l: LinkId, msg: Control, out: &mut Output) {
        match msg {
            msg @ Control::RegisterAck { .. } => self.on_register_ack(now, l, msg, out),
            Control::RegisterNak { message, .. } => self.refused(now, l, message),
            Control::PeerUpdate {
                from,
                epoch,
                records,
                gone,
            } => self.on_peer_update(now, l, (from, epoch), records, gone, out),
            Control::PeerList {
                epoch,
                chunk,
                chunks,
                records,
            } => self.on_peer_list(now, l, epoch, (chunk, chunks), records, out),
            Control::LookupReply {
                record: Some(r), ..
            } => {
                self.upsert_peer(now, l, r, out);
            }
            Control::PeerNotify { record } => self.on_peer_notify(now, l, record, out),
            Control::PeerRemoved { keys } => self.on_peers_removed(l, keys),
            Control::SignedList {
                version,
                chunk,
                chunks,
                data,
            } => self.on_signed_chunk(now, l, version, (chunk, chunks), data, out),
            // Return-path proof: the answer goes to the supernode from wherever we are now.
            Control::PathChallenge { nonce } => {
                self.send_control(l, &Control::PathResponse { nonce }, out)
            }
            Control::LookupReply { record: None, .. }
            | Control::PathResponse { .. }
            | Control::Register { .. }
            | Control::SignedListRequest
            | Control::SyncRequest
            | Control::Lookup { .. }
            | Control::Unknown(_) => {}
        }
    }

    /// Our registration accepted (first, renewed, or after a handshake).
    fn on_register_ack(&mut self, now: Instant, l: LinkId, ack: Control, out: &mut Output) {
        let Control::RegisterAck {
            id,
            observed,
            epoch,
            interval,
            relay,
            membership,
            assigned,
        } = ack
        else {
            return;
        };
        if let Some((ip, prefix)) = assigned {
            self.on_assigned(l, ip, prefix);
        }
        // A newer signed membership than ours: ask for it first (the records that
        // follow are checked against it).
        let have = self.signed.as_ref().map_or(0, |(m, _)| m.version);
        if self.cfg.admin_key.is_some()
            && membership > have
            && self.links[l].signed_refused != Some(membership)
        {
            self.send_control(l, &Control::SignedListRequest, out);
        }
        let link = &mut self.links[l];
        let first = !link.registered;
        link.relays = relay;
        link.registered = true;
        link.id = Some(id);
        link.observed = Some(observed);
        link.error = None;
        link.interval = Duration::from_secs(u64::from(interval.clamp(1, 3600)));
        link.awaiting_ack = None;
        link.last_ack = Some(now);
        link.next_register = now + link.interval;
        if first {
            // A new registration (ours or a restarted supernode's): epochs from
            // before mean nothing now, so start from a whole list.
            link.epoch_applied = None;
            link.staging = None;
            link.sync_sent = None;
            link.registered_at = Some(now);
            self.events.push(Event::Registered {
                supernode: link.addr,
                observed,
            });
        }
        if link.epoch_applied != Some(epoch) {
            self.request_sync(now, l, out);
        }
    }

    /// Asks supernode `l` for the whole member list, at most once per [`SYNC_RETRY`] (a
    /// burst of updates we cannot apply must not become a burst of whole lists).
    pub(super) fn request_sync(&mut self, now: Instant, l: LinkId, out: &mut Output) {
        let link = &mut self.links[l];
        if link
            .sync_sent
            .is_some_and(|t| now.saturating_duration_since(t) < SYNC_RETRY)
        {
            return;
        }
        link.sync_sent = Some(now);
        self.send_control(l, &Control::SyncRequest, out);
    }

    pub(super) fn send_control(&mut self, l: LinkId, msg: &Control, out: &mut Output) {
        let link = &mut self.links[l];
        let Some(session) = link.session.as_mut() else {
            return;
        };
        let start = out.buf.len();
        session.seal_data(&msg.encode(), &mut out.buf);
        out.transmit_from(start, link.addr);
    }

    /// Asks every registered supernode about `query`, at most once a second per query.
    pub(super) fn lookup(&mut self, now: Instant, query: Query, out: &mut Output) {
        if !self.lookups.try_ask(now, query) {
            return;
        }
        let txid = self.next_txid;
        self.next_txid = self.next_txid.wrapping_add(1);
        for l in self.links.ids() {
            if self.links[l].registered {
                self.send_control(l, &Control::Lookup { txid, query }, out);
            }
        }
    }

    fn start_link_handshake(&mut self, now: Instant, l: LinkId, out: &mut Output) {
        let ts = self.timestamp(now);
        let local_index = self.index.allocate(Owner::Link(l), &mut self.rng);
        let register = self.register_message(ts);
        let link = &mut self.links[l];
        let start = out.buf.len();
        wire::put_init_header(&mut out.buf, local_index);
        // Padded (decoders ignore trailing bytes) so that a supernode's refusal, which is
        // never larger than the initiation it answers, has room for its whole explanation.
        let mut payload = register.encode();
        payload.resize(payload.len().max(REGISTER_INIT_PAYLOAD_MIN), 0);
        let hs = match Handshake::initiate_with(
            Cipher::ChaCha20Poly1305,
            &self.cfg.private_key,
            &link.key,
            &payload,
            &mut out.buf,
            &mut self.rng,
        ) {
            Ok(hs) => hs,
            Err(_) => {
                out.buf.truncate(start);
                self.index.remove(local_index);
                return;
            }
        };
        out.transmit_from(start, link.addr);
        link.attempts += 1;
        let old = link.pending.replace(Pending {
            local_index,
            hs,
            sent: now,
            attempts: link.attempts,
            init: out.buf[start..].to_vec(),
        });
        self.index.retire_pending(old);
        link.next_handshake = now + backoff(link.attempts);
        if link.attempts >= 4 && link.error.is_none() {
            link.error = Some(format!(
                "no answer from the supernode after {} handshake attempts: check that it runs, that its \
                 `public_key` in this config is right, and that UDP to it is not blocked",
                link.attempts
            ));
        }
    }

    fn register_message(&mut self, ts: u64) -> Control {
        Control::Register {
            max_version: wire::VERSION,
            community: self.cfg.community.clone(),
            address: self.cfg.address,
            mac: self.cfg.mac,
            instance: self.instance,
            timestamp: ts,
            endpoints: self.cfg.local_endpoints.clone(),
            cipher: self.cfg.cipher.code(),
            join: match (&self.cfg.join_token, &self.cfg.join_secret) {
                (Some(t), _) => Some(t.join(&self.public, &self.cfg.community, ts)),
                (None, Some(s)) => Some(crate::control::Join::Secret(crate::control::join_proof(
                    s,
                    &self.public,
                    &self.cfg.community,
                    ts,
                ))),
                (None, None) => None,
            },
        }
    }

    /// A link's timers: session expiry, registration renewal and its acknowledgement, the
    /// link lost, and handshakes (first, retried with backoff, and rekeying).
    pub(super) fn link_timers(&mut self, now: Instant, l: LinkId, out: &mut Output) {
        let link = &mut self.links[l];
        if link.retired {
            return;
        }
        if link.session.as_ref().is_some_and(|s| !s.usable(now)) {
            self.index.retire(link.session.take());
            link.registered = false;
        }
        if let Some(since) = link.awaiting_ack {
            if now.saturating_duration_since(since) >= LINK_LOST {
                // The supernode restarted or the path broke: start over.
                link.awaiting_ack = None;
                if link.registered {
                    link.registered = false;
                    self.events.push(Event::LinkLost {
                        supernode: link.addr,
                    });
                }
                self.index.retire(link.session.take());
                self.index.retire(link.previous.take());
                link.next_handshake = now;
            } else if now.saturating_duration_since(link.last_register_sent) >= ACK_RETRY {
                self.send_register(now, l, out);
            }
        } else if link.session.is_some() && link.registered && now >= link.next_register {
            link.awaiting_ack = Some(now);
            self.send_register(now, l, out);
        }
        let link = &self.links[l];
        let wants_session =
            link.session.is_none() || link.session.as_ref().is_some_and(|s| s.wants_rekey(now));
        let retry_due = match &link.pending {
            Some(p) => now.saturating_duration_since(p.sent) >= backoff(p.attempts),
            None => now >= link.next_handshake,
        };
        if wants_session && retry_due {
            self.start_link_handshake(now, l, out);
        }
    }

    fn send_register(&mut self, now: Instant, l: LinkId, out: &mut Output) {
        let ts = self.timestamp(now);
        let msg = self.register_message(ts);
        self.links[l].last_register_sent = now;
        self.send_control(l, &msg, out);
    }

    /// The member-list epoch our copy from supernode `l` is at.
    #[cfg(test)]
    pub(crate) fn test_epoch(&self, l: usize) -> Option<u64> {
        self.links[LinkId::nth(l)].epoch_applied
    }

    #[cfg(test)]
    pub(crate) fn test_send_control(&mut self, l: usize, msg: &Control, out: &mut Output) {
        self.send_control(LinkId::nth(l), msg, out);
    }

    #[cfg(test)]
    pub(crate) fn test_open_control(&mut self, pkt: &mut [u8]) -> Option<Control> {
        let Ok(wire::Packet::Data { receiver, counter }) = wire::decode(pkt) else {
            return None;
        };
        let link = self.links.iter_mut().find(|l| {
            l.session
                .as_ref()
                .is_some_and(|s| s.local_index == receiver)
        })?;
        let r = link.session.as_mut()?.open_data(counter, pkt).ok()?;
        Control::decode(&pkt[r]).ok()
    }
}
