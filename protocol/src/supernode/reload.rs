//! Reload: a new membership applied without disturbing anyone it does not concern.

use super::members::send_removals;
use super::table::{Community, Node};
use super::{CommunityConfig, ReloadSummary, Supernode, REMEMBERED_REMOVALS};
use crate::io::Output;
use crate::keys::PublicKey;
use std::collections::VecDeque;

impl Supernode {
    /// Applies a new membership (the community files were edited and the daemon got SIGHUP)
    /// without disturbing anyone it does not concern: members that stay keep their
    /// registration, id and sessions; new members may register at once; removed members'
    /// sessions are torn down here, and every registered member of their community is sent
    /// a `PeerRemoved` so that it tears down its own sessions with them. A member whose
    /// address changed is treated as removed and must register again with the new one.
    pub fn reload(
        &mut self,
        communities: Vec<CommunityConfig>,
        register_interval: u16,
        out: &mut Output,
    ) -> ReloadSummary {
        self.interval = register_interval.max(1);
        let mut summary = ReloadSummary::default();
        let mut old: Vec<Community> = self.table.take();
        let initial = old.is_empty() && self.table.fresh();
        for cfg in communities {
            let prev = old
                .iter()
                .position(|c| c.name == cfg.name)
                .map(|i| old.swap_remove(i));
            if prev.is_none() && !initial {
                summary.communities_added.push(cfg.name.clone());
            }
            let (epoch, removed, prev_signed, mut prev_nodes) = match prev {
                Some(mut p) => {
                    let (removed, signed) = (std::mem::take(&mut p.removed), p.signed.take());
                    (p.epoch, removed, signed, p.into_nodes())
                }
                None => (0, VecDeque::new(), None, Vec::new()),
            };
            let signed_changed = cfg.signed != prev_signed;
            let (mut comm, nodes) = Community::new(cfg, epoch + 1, removed);
            let mut gone = Vec::new();
            for entry in nodes {
                let kept = prev_nodes
                    .iter()
                    .position(|n| n.entry.key == entry.key)
                    .map(|i| prev_nodes.swap_remove(i));
                let node = match kept {
                    Some(mut n) => {
                        let key = n.entry.key;
                        let (moved, changed) = n.reconfigure(entry);
                        if moved {
                            // Its peers must forget the old binding; it registers anew.
                            gone.push(key);
                        }
                        if changed {
                            summary.changed.push((comm.name.clone(), n.label()));
                        }
                        n
                    }
                    None => {
                        let id = self.table.allocate_id();
                        comm.removed.retain(|k| *k != entry.key);
                        let n = Node::new(entry, id);
                        if !initial {
                            summary.added.push((comm.name.clone(), n.label()));
                        }
                        n
                    }
                };
                comm.push(node);
            }
            for n in prev_nodes {
                summary.removed.push((comm.name.clone(), n.label()));
                gone.push(n.entry.key);
            }
            remember_removals(&mut comm.removed, &gone);
            let c = self.table.push(comm);
            self.announce_removals(c, &gone, out);
            if signed_changed {
                // A new signed list (a revocation, an address move) goes out at once; edges
                // verify it and tear down sessions with members no longer on it.
                for r in self.table.members(c) {
                    self.send_signed(r, out);
                }
            }
        }
        // Communities no longer configured: their members are cut off from each other.
        for comm in old {
            summary.communities_removed.push(comm.name.clone());
            let mut nodes = comm.into_nodes();
            let keys: Vec<PublicKey> = nodes.iter().map(|n| n.entry.key).collect();
            for node in nodes.iter_mut() {
                send_removals(node, &keys, out);
            }
        }
        self.refresh_macs();
        for c in self.table.community_ids() {
            self.push_lists(c, None, out);
        }
        let table = &self.table;
        self.enrol_limit
            .retain_communities(|name| table.by_name(name).is_some());
        summary
    }
}

/// Moves `gone` to the newest end of `removed`, keeping the newest [`REMEMBERED_REMOVALS`].
fn remember_removals(removed: &mut VecDeque<PublicKey>, gone: &[PublicKey]) {
    for k in gone {
        removed.retain(|x| x != k);
        removed.push_back(*k);
    }
    while removed.len() > REMEMBERED_REMOVALS {
        removed.pop_front();
    }
}
