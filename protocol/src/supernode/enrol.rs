//! Enrolment with a join secret: a key that is not listed proves it holds the community's
//! secret and gets the next free address of the pool (the shell persists it from
//! [`Event::Enrolled`]).

use super::register::Refused;
use super::table::Node;
use super::{Event, Supernode};
use crate::control::NakCode;
use crate::keys::PublicKey;
use crate::membership::NodeEntry;
use std::collections::HashSet;
use std::net::IpAddr;

impl Supernode {
    /// A Register with a join proof: the key's address (listed or enrolled before), or a new
    /// one from the pool if the proof holds. `Ok(None)` leaves it to the membership check.
    pub(super) fn enrol(
        &mut self,
        community: &str,
        key: &PublicKey,
        proof: &[u8; 32],
        timestamp: u64,
    ) -> Result<Option<(IpAddr, u8)>, Refused> {
        let Some(c) = self.table.by_name(community) else {
            return Ok(None);
        };
        let prefix = self.table.community(c).network.prefix_len();
        if let Some(r) = self.table.by_key(c, key) {
            return Ok(Some((self.table.node(r).entry.address, prefix)));
        }
        let comm = self.table.community(c);
        let Some(e) = comm.enrolment.as_ref() else {
            return Err((
                NakCode::NotMember,
                format!("refused key {key}: community '{community}' does not take enrolments (the supernode has no `join_secret_file` for it); list the key in the community file instead"),
            ));
        };
        let expect = crate::control::join_proof(&e.secret, key, community, timestamp);
        if expect != *proof {
            return Err((
                NakCode::NotMember,
                format!("refused key {key}: its join proof does not match community '{community}''s join secret (check `join_secret_file` on both sides)"),
            ));
        }
        if e.revoked.contains(key) {
            return Err((
                NakCode::NotMember,
                format!("refused key {key}: its enrolment in community '{community}' was revoked"),
            ));
        }
        let used: HashSet<IpAddr> = comm.nodes().iter().map(|n| n.entry.address).collect();
        let Some(address) = e.pool.hosts().find(|a| !used.contains(a)) else {
            return Err((
                NakCode::Other,
                format!("refused key {key}: the address pool {} of community '{community}' is exhausted", e.pool),
            ));
        };
        let name = format!("enrolled-{}", &key.to_base64()[..8]);
        let id = self.table.allocate_id();
        let entry = NodeEntry {
            key: *key,
            name: name.clone(),
            address,
            allowed_cidrs: Vec::new(),
            ipv6_router: false,
        };
        self.table.community_mut(c).push(Node::new(entry, id));
        self.events.push(Event::Enrolled {
            community: community.to_string(),
            key: *key,
            address,
            name,
        });
        Ok(Some((address, prefix)))
    }
}
