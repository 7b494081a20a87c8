//! A MAC belongs to its key. In each community the first key seen with a MAC owns it for
//! the life of the process, registered or not: every listed (or enrolled) key owns the MAC
//! derived from it from the start, and a key that registers with another MAC owns that one
//! too (its previous such claim is released). Another key registering with an owned MAC is
//! refused, so a member cannot take over an offline member's frames; group (multicast) MACs
//! and the all-zero MAC are refused outright. Each key owns at most two MACs, and keys taken
//! out of the community by a reload lose theirs: the book stays bounded.
//!
//! The claims of MACs other than the derived ones outlive a restart: when they change the core
//! emits [`Command::SaveMacs`] (the shell keeps them in `state_dir`), and the shell hands them
//! back with [`Supernode::restore_macs`] before the first packet.

use super::register::Refused;
use super::table::CommunityId;
use super::tcp::Command;
use super::Supernode;
use crate::control::NakCode;
use crate::keys::{Mac, PublicKey};
use std::collections::{HashMap, HashSet};

/// Who owns which MAC in one community.
#[derive(Debug, Default)]
pub(super) struct MacBook {
    owners: HashMap<Mac, PublicKey>,
    /// A key's MAC other than the derived one.
    claims: HashMap<PublicKey, Mac>,
}

impl MacBook {
    /// The key that owns `mac`.
    fn owner(&self, mac: &Mac) -> Option<&PublicKey> {
        self.owners.get(mac)
    }

    /// `key` uses `mac` (free or its own): it owns it from now on; its earlier claim of
    /// another MAC (not its derived one) is released. True if the claims changed.
    fn claim(&mut self, key: PublicKey, mac: Mac) -> bool {
        let derived = key.derived_mac();
        let old = if mac == derived {
            self.claims.remove(&key)
        } else {
            self.claims.insert(key, mac)
        };
        if let Some(old) = old.filter(|o| *o != mac && *o != derived) {
            if self.owners.get(&old) == Some(&key) {
                self.owners.remove(&old);
            }
        }
        self.owners.entry(mac).or_insert(key);
        old != (mac != derived).then_some(mac)
    }

    /// The claims of MACs other than derived ones, in key order (what [`Command::SaveMacs`]
    /// carries).
    fn claims(&self) -> Vec<(PublicKey, Mac)> {
        let mut v: Vec<_> = self.claims.iter().map(|(k, m)| (*k, *m)).collect();
        v.sort_by_key(|(k, _)| k.0);
        v
    }

    /// Keeps only what `keys` own, and gives each its derived MAC unless another key holds it.
    fn retain(&mut self, keys: &HashSet<PublicKey>) {
        self.owners.retain(|_, k| keys.contains(k));
        self.claims.retain(|k, _| keys.contains(k));
        for k in keys {
            self.owners.entry(k.derived_mac()).or_insert(*k);
        }
    }
}

/// True for a MAC no member may have: a group (multicast or broadcast) address, or zero.
fn unusable(mac: &Mac) -> bool {
    mac.0[0] & 1 != 0 || mac.0 == [0; 6]
}

impl Supernode {
    /// Refuses `mac` for `key` in `community` (id `c`) if it is unusable or another key owns it.
    pub(super) fn check_mac(
        &self,
        community: &str,
        c: CommunityId,
        key: &PublicKey,
        mac: Mac,
    ) -> Result<(), Refused> {
        if unusable(&mac) {
            return Err((
                NakCode::Other,
                format!(
                    "refused key {key}: MAC {mac} is a group (multicast) or all-zero address; set \
                     [interface] mac to a unicast address, or leave it out to use the one derived \
                     from the key"
                ),
            ));
        }
        let Some(owner) = self.macs.get(community).and_then(|b| b.owner(&mac)) else {
            return Ok(());
        };
        if owner == key {
            return Ok(());
        }
        let label = self
            .table
            .by_key(c, owner)
            .map_or_else(|| owner.to_base64(), |o| self.table.node(o).label());
        Err((
            NakCode::MacInUse,
            format!(
                "refused key {key}: MAC {mac} belongs to member '{label}' of community \
                 '{community}' (a MAC stays with the first key that used it, online or not); set \
                 another [interface] mac, or leave it out to use the one derived from the key"
            ),
        ))
    }

    /// `key` registered in `community` with `mac` (checked): it owns it. A changed claim is
    /// saved ([`Command::SaveMacs`]).
    pub(super) fn claim_mac(&mut self, community: &str, key: PublicKey, mac: Mac) {
        let Some(book) = self.macs.get_mut(community) else {
            return;
        };
        if book.claim(key, mac) {
            let claims = book.claims();
            self.tcp.command(Command::SaveMacs {
                community: community.to_string(),
                claims,
            });
        }
    }

    /// The claims a previous run saved ([`Command::SaveMacs`]) for `community`: each key of
    /// the community owns its MAC again, unless the MAC is unusable or another key owns it
    /// now (listed keys own their derived MACs first). Claims of keys no longer in the
    /// community, or beyond one per key, are ignored. Call before the first packet.
    pub fn restore_macs(&mut self, community: &str, claims: &[(PublicKey, Mac)]) {
        let Some(c) = self
            .table
            .community_ids()
            .find(|c| self.table.community(*c).name == community)
        else {
            return;
        };
        let keys: HashSet<PublicKey> = self
            .table
            .community(c)
            .nodes()
            .iter()
            .map(|n| n.entry.key)
            .collect();
        let Some(book) = self.macs.get_mut(community) else {
            return;
        };
        for (key, mac) in claims {
            let free = book.owner(mac).is_none_or(|o| o == key);
            if keys.contains(key) && !unusable(mac) && free && !book.claims.contains_key(key) {
                book.claim(*key, *mac);
            }
        }
    }

    /// After a reload (or at start): one book per community, holding the MACs of its keys.
    pub(super) fn refresh_macs(&mut self) {
        let mut books = std::mem::take(&mut self.macs);
        for c in self.table.community_ids() {
            let comm = self.table.community(c);
            let keys: HashSet<PublicKey> = comm.nodes().iter().map(|n| n.entry.key).collect();
            let mut book = books.remove(&comm.name).unwrap_or_default();
            book.retain(&keys);
            self.macs.insert(comm.name.clone(), book);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;

    #[test]
    fn a_key_keeps_its_derived_mac_and_one_more() {
        let a = PrivateKey([7; 32]).public_key();
        let b = PrivateKey([8; 32]).public_key();
        let mut book = MacBook::default();
        book.retain(&[a, b].into_iter().collect());
        assert_eq!(book.owner(&a.derived_mac()), Some(&a));
        let x = Mac([2, 0, 0, 0, 0, 1]);
        let y = Mac([2, 0, 0, 0, 0, 2]);
        book.claim(a, x);
        assert_eq!(book.owner(&x), Some(&a));
        // Moving to another MAC releases the first claim, never the derived one.
        book.claim(a, y);
        assert_eq!((book.owner(&x), book.owner(&y)), (None, Some(&a)));
        book.claim(a, a.derived_mac());
        assert_eq!(book.owner(&y), None);
        assert_eq!(book.owner(&a.derived_mac()), Some(&a));
        assert_eq!(book.owners.len(), 2);
        // A key taken out loses its MACs.
        book.retain(&[b].into_iter().collect());
        assert_eq!(book.owner(&a.derived_mac()), None);
        assert!(unusable(&Mac([1, 0, 0, 0, 0, 0])) && unusable(&Mac([0; 6])));
        assert!(unusable(&Mac::BROADCAST) && !unusable(&x));
    }
}
