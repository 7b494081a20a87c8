//! Registration checks (community, key, address, MAC, cipher), the registration refresh
//! inside a session and its acknowledgement, and the expiry of registrations that stopped
//! refreshing.

use super::limits::filter_locals;
use super::table::NodeRef;
use super::{Event, Supernode};
use crate::control::{Control, NakCode, KEYS_PER_REMOVAL};
use crate::crypto::Cipher;
use crate::io::Output;
use crate::keys::{Mac, PublicKey};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Why a registration was refused: the code for the edge and a message naming the fix.
pub(super) type Refused = (NakCode, String);

impl Supernode {
    /// Both ends must use the community's cipher: refuse an edge configured otherwise, with
    /// a message naming the key to set (peers could never complete a handshake with it).
    pub(super) fn check_cipher(
        &self,
        r: NodeRef,
        key: &PublicKey,
        code: u8,
    ) -> Result<(), Refused> {
        let comm = self.table.community(r.community);
        let want = comm.cipher;
        if code == want.code() {
            return Ok(());
        }
        let have =
            Cipher::from_code(code).map_or("a cipher this supernode does not know", Cipher::name);
        Err((
            NakCode::CipherMismatch,
            format!(
                "refused key {key}: community '{}' uses cipher {want} but this edge is configured                  with {have} (set cipher = \"{want}\" in the edge config, or change the                  community's cipher on the supernode)",
                comm.name
            ),
        ))
    }

    /// The member `key` of `community` if it may register with `address` and `mac`.
    pub(super) fn check_registration(
        &self,
        community: &str,
        key: &PublicKey,
        address: IpAddr,
        mac: Mac,
    ) -> Result<NodeRef, Refused> {
        let Some(c) = self.table.by_name(community) else {
            return Err((
                NakCode::UnknownCommunity,
                format!(
                    "refused key {key}: community '{community}' does not exist on this supernode"
                ),
            ));
        };
        let Some(r) = self.table.by_key(c, key) else {
            return Err((
                NakCode::NotMember,
                format!(
                    "refused key {key}: not a member of community '{community}' (add a [[community.node]] \
                     with this public_key to the supernode's community file)"
                ),
            ));
        };
        let nodes = self.table.community(c).nodes();
        let node = self.table.node(r);
        if node.entry.address != address {
            let owner = nodes
                .iter()
                .find(|x| x.entry.address == address)
                .map(|n| n.label());
            let whose = match owner {
                Some(o) => format!("it belongs to member '{o}'"),
                None => "no member owns it".to_string(),
            };
            return Err((
                NakCode::AddressNotOwned,
                format!(
                    "refused key {key}: it claims address {address} but {whose}; this key owns {} in \
                     community '{community}' (set [interface] address accordingly)",
                    node.entry.address
                ),
            ));
        }
        self.check_mac(community, c, key, mac)?;
        if let Some(other) = nodes
            .iter()
            .find(|x| x.entry.key != *key && x.reg().is_some_and(|r| r.mac == mac))
        {
            return Err((
                NakCode::MacInUse,
                format!(
                    "refused key {key}: MAC {mac} is already used by member '{}'",
                    other.label()
                ),
            ));
        }
        Ok(r)
    }

    /// A `Register` inside member `r`'s session (the periodic refresh): check it again,
    /// take what changed, and acknowledge.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_reregister(
        &mut self,
        now: Instant,
        r: NodeRef,
        community: &str,
        address: IpAddr,
        mac: Mac,
        instance: u64,
        endpoints: Vec<SocketAddr>,
        cipher: u8,
        out: &mut Output,
    ) {
        let key = self.table.node(r).entry.key;
        let same_community = self.table.community(r.community).name == community;
        if let Err((code, message)) = self
            .check_registration(community, &key, address, mac)
            .and_then(|x| self.check_cipher(x, &key, cipher).map(|()| x))
            .and_then(|x| {
                if x == r && same_community {
                    Ok(x)
                } else {
                    Err((
                        NakCode::Other,
                        "registration does not match its session".to_string(),
                    ))
                }
            })
        {
            self.send(r, &Control::RegisterNak { code, message }, out);
            return;
        }
        self.claim_mac(community, key, mac);
        let endpoints = filter_locals(&self.table.community(r.community).network, endpoints);
        let Some(reg) = self.table.node_mut(r).reg_mut() else {
            return; // found by its session, so registered
        };
        let changed = reg.instance != instance || reg.mac != mac || reg.locals != endpoints;
        reg.instance = instance;
        reg.mac = mac;
        reg.locals = endpoints;
        let observed = reg.endpoint;
        if changed {
            self.announce(now, r, Some(r), out);
        }
        let comm = self.table.community(r.community);
        let ack = Control::RegisterAck {
            id: self.table.node(r).id,
            observed,
            epoch: comm.epoch,
            interval: self.interval,
            relay: comm.relay,
            membership: comm.signed_version(),
            assigned: None,
        };
        self.send(r, &ack, out);
    }

    /// Ends the registrations that stopped refreshing (three intervals and five seconds
    /// without a packet) and tells the other members.
    pub(super) fn expire_registrations(&mut self, now: Instant, out: &mut Output) {
        let expiry = Duration::from_secs(u64::from(self.interval) * 3 + 5);
        for c in self.table.community_ids() {
            let mut gone = Vec::new();
            for r in self.table.members(c) {
                self.table.expire_pending(r, now, expiry);
                let node = self.table.node(r);
                let stale = node
                    .reg()
                    .is_some_and(|reg| now.saturating_duration_since(reg.last_seen) >= expiry);
                if stale && self.table.unregister(r) {
                    let node = self.table.node(r);
                    self.events.push(Event::Expired {
                        community: self.table.community(c).name.clone(),
                        member: node.label(),
                    });
                    gone.push(node.entry.key);
                }
            }
            if gone.is_empty() {
                continue;
            }
            self.table.community_mut(c).epoch += 1;
            if gone.len() > KEYS_PER_REMOVAL {
                self.push_lists(c, None, out);
            } else {
                self.push_update(c, Vec::new(), gone, None, out);
            }
        }
    }
}
