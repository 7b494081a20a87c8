//! What members learn about each other: whole member lists (after revocations), one-step
//! updates pushed on every change, the signed membership in chunks, removals, and lookups
//! with their hole-punch notice.

use super::table::{CommunityId, Node, NodeRef};
use super::Supernode;
use crate::control::{chunk_records, Control, PeerRecord, Query, KEYS_PER_REMOVAL};
use crate::io::Output;
use crate::keys::PublicKey;
use crate::membership::CHUNK_BYTES;

/// Sends `keys` to `node` as `PeerRemoved` messages (no-op if it is not registered).
pub(super) fn send_removals(node: &mut Node, keys: &[PublicKey], out: &mut Output) {
    for chunk in keys.chunks(KEYS_PER_REMOVAL) {
        let msg = Control::PeerRemoved {
            keys: chunk.to_vec(),
        };
        node.send(&msg.encode(), out);
    }
}

impl Supernode {
    /// Tells every registered member of `c` that `keys` are no longer members.
    pub(super) fn announce_removals(
        &mut self,
        c: CommunityId,
        keys: &[PublicKey],
        out: &mut Output,
    ) {
        if keys.is_empty() {
            return;
        }
        for r in self.table.members(c) {
            send_removals(self.table.node_mut(r), keys, out);
        }
    }

    /// Sends member `r` the community's signed membership in chunks (no-op if the
    /// community has none or the member is not registered).
    pub(super) fn send_signed(&mut self, r: NodeRef, out: &mut Output) {
        let Some(signed) = self.table.community(r.community).signed.clone() else {
            return;
        };
        let node = self.table.node_mut(r);
        if node.reg().is_none() {
            return;
        }
        let chunks = signed.bytes.chunks(CHUNK_BYTES);
        let total = chunks.len() as u16;
        for (i, data) in chunks.enumerate() {
            let msg = Control::SignedList {
                version: signed.version,
                chunk: i as u16,
                chunks: total,
                data: data.to_vec(),
            };
            node.send(&msg.encode(), out);
        }
    }

    /// Sends member `r` the whole member list, after the remembered removals.
    pub(super) fn send_list(&mut self, r: NodeRef, out: &mut Output) {
        // Revocations first, for an edge that missed the push when they happened.
        let comm = self.table.community(r.community);
        if !comm.removed.is_empty() {
            let keys: Vec<PublicKey> = comm.removed.iter().copied().collect();
            send_removals(self.table.node_mut(r), &keys, out);
        }
        let comm = self.table.community(r.community);
        let epoch = comm.epoch;
        let records: Vec<PeerRecord> = comm.nodes().iter().filter_map(Node::record).collect();
        let chunks = chunk_records(records);
        let total = chunks.len() as u16;
        for (i, records) in chunks.into_iter().enumerate() {
            let msg = Control::PeerList {
                epoch,
                chunk: i as u16,
                chunks: total,
                records,
            };
            self.send(r, &msg, out);
        }
    }

    /// Tells every registered member except `skip` that member `r` registered or changed:
    /// the step from the previous epoch to the current one, one record. Members whose copy is
    /// not at the previous epoch ask for the whole list. A registration costs the supernode
    /// one record per member instead of the whole list per member.
    pub(super) fn push_member(&mut self, r: NodeRef, skip: Option<NodeRef>, out: &mut Output) {
        if let Some(rec) = self.table.node(r).record() {
            self.push_update(r.community, vec![rec], Vec::new(), skip, out);
        }
    }

    /// Sends every registered member of `c` except `skip` the step from the previous epoch
    /// to the current one: `records` added or changed, `gone` no longer registered.
    pub(super) fn push_update(
        &mut self,
        c: CommunityId,
        records: Vec<PeerRecord>,
        gone: Vec<PublicKey>,
        skip: Option<NodeRef>,
        out: &mut Output,
    ) {
        let epoch = self.table.community(c).epoch;
        let msg = Control::PeerUpdate {
            from: epoch.saturating_sub(1),
            epoch,
            records,
            gone,
        };
        let bytes = msg.encode();
        for r in self.table.members(c) {
            if Some(r) != skip {
                self.table.node_mut(r).send(&bytes, out);
            }
        }
    }

    /// Sends the member list to every registered member of `c` except `skip` (which asks by
    /// itself when its acknowledgement shows a new epoch).
    pub(super) fn push_lists(&mut self, c: CommunityId, skip: Option<NodeRef>, out: &mut Output) {
        for r in self.table.members(c) {
            if Some(r) != skip && self.table.node(r).reg().is_some() {
                self.send_list(r, out);
            }
        }
    }

    /// A lookup by member `r`: the registered member that matches, if any, and a notice to
    /// that member so that both send to each other now (hole punching).
    pub(super) fn on_lookup(&mut self, r: NodeRef, txid: u32, query: Query, out: &mut Output) {
        let found = self.table.members(r.community).find(|&t| {
            let x = self.table.node(t);
            x.reg().is_some_and(|reg| match query {
                Query::Key(k) => x.entry.key == k,
                Query::Mac(m) => reg.mac == m,
                Query::Ip(ip) => {
                    x.entry.address == ip || x.entry.allowed_cidrs.iter().any(|n| n.contains(&ip))
                }
            })
        });
        let record = found.and_then(|t| self.table.node(t).record());
        self.send(r, &Control::LookupReply { txid, record }, out);
        if let Some(t) = found.filter(|t| *t != r) {
            if let Some(me) = self.table.node(r).record() {
                self.send(t, &Control::PeerNotify { record: me }, out);
            }
        }
    }
}
