//! Enrolment: a key that is not listed proves it holds the community's join secret or one of
//! its enrolment tokens, and gets an address: the token's fixed one, or the next free one of
//! the pool that is not quarantined (the shell persists it from [`Command::SaveEnrolment`]).
//! Revoked keys are refused with either proof; a token that expired or was used up (or
//! burned by a revocation) is refused with a message naming the fix. Proofs are compared in
//! constant time. New enrolments are bounded per source and per community (`enrol_limit`).

use super::register::Refused;
use super::table::Node;
use super::{Command, Enrolment, Event, Supernode, MAX_ENROLLED};
use crate::control::{join_proof, proofs_equal, token_id_hex, token_proof, Join, NakCode};
use crate::keys::PublicKey;
use crate::membership::NodeEntry;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// An enrolment for the shell to persist (see [`Command::SaveEnrolment`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolmentRecord {
    /// Community.
    pub community: String,
    /// The new member's key.
    pub key: PublicKey,
    /// The address it got.
    pub address: IpAddr,
    /// The name it is shown with.
    pub name: String,
    /// The token it enrolled with (one use of it is spent), if not the join secret.
    pub token: Option<[u8; crate::control::TOKEN_ID_LEN]>,
}

fn refused(key: &PublicKey, why: String) -> Refused {
    (NakCode::NotMember, format!("refused key {key}: {why}"))
}

impl Supernode {
    /// Seconds since the Unix epoch at `now`, if the shell told the wall clock.
    fn unix_now(&self, now: Instant) -> Option<u64> {
        self.wall
            .map(|(at, secs)| secs + now.saturating_duration_since(at).as_secs())
    }

    /// A Register with a join proof from `src`: the key's address (listed or enrolled
    /// before), or a new one if the proof holds. `Ok(None)` leaves it to the membership check.
    pub(super) fn enrol(
        &mut self,
        now: Instant,
        src: SocketAddr,
        community: &str,
        key: &PublicKey,
        join: &Join,
        timestamp: u64,
    ) -> Result<Option<(IpAddr, u8)>, Refused> {
        let Some(c) = self.table.by_name(community) else {
            return Ok(None);
        };
        let prefix = self.table.community(c).network.prefix_len();
        if let Some(r) = self.table.by_key(c, key) {
            return Ok(Some((self.table.node(r).entry.address, prefix)));
        }
        let unix = self.unix_now(now);
        let comm = self.table.community(c);
        let Some(e) = comm.enrolment.as_ref() else {
            return Err(refused(key, format!("community '{community}' does not take enrolments (the supernode has no `address_pool` for it); list the key in the community file instead")));
        };
        let token = check_proof(e, key, community, join, timestamp, unix)?;
        let used: HashSet<IpAddr> = comm.nodes().iter().map(|n| n.entry.address).collect();
        let address = match token.and_then(|t| e.tokens[t].address) {
            Some(a) if used.contains(&a) => {
                return Err((NakCode::Other, format!("refused key {key}: address {a}, which its token assigns, belongs to another member of community '{community}'; create a token with another --address")));
            }
            Some(a) => Some(a),
            None if e.enrolled >= MAX_ENROLLED => None,
            None => e
                .pool
                .hosts()
                .find(|a| !used.contains(a) && !e.quarantined.contains(a)),
        };
        let Some(address) = address else {
            return Err((NakCode::Other, format!("refused key {key}: the address pool {} of community '{community}' is exhausted (free addresses of revoked servers with `metalvpc-supernode enrolled release`, or widen `address_pool`; at most {MAX_ENROLLED} enrolments)", e.pool)));
        };
        if let Err(why) = self.enrol_limit.allow(now, src.ip(), community) {
            return Err((
                NakCode::RateLimited,
                format!("refused key {key}: enrolment bound: {why}"),
            ));
        }
        let name = format!("enrolled-{}", &key.to_base64()[..8]);
        let id = self.table.allocate_id();
        let entry = NodeEntry {
            key: *key,
            name: name.clone(),
            address,
            allowed_cidrs: Vec::new(),
            ipv6_router: false,
        };
        let comm = self.table.community_mut(c);
        let e = comm.enrolment.as_mut().expect("checked above");
        e.enrolled += 1;
        let token_id = token.map(|t| {
            e.tokens[t].uses -= 1;
            e.tokens[t].id
        });
        comm.push(Node::new(entry, id));
        self.events.push(Event::Enrolled {
            community: community.to_string(),
            key: *key,
            address,
            name: name.clone(),
        });
        self.tcp.command(Command::SaveEnrolment(EnrolmentRecord {
            community: community.to_string(),
            key: *key,
            address,
            name,
            token: token_id,
        }));
        Ok(Some((address, prefix)))
    }
}

/// Checks a join proof against the community's secret or token: `Ok(Some(i))` for a valid
/// use of token `i`, `Ok(None)` for the secret.
fn check_proof(
    e: &Enrolment,
    key: &PublicKey,
    community: &str,
    join: &Join,
    timestamp: u64,
    unix: Option<u64>,
) -> Result<Option<usize>, Refused> {
    let revoked = || {
        e.revoked.contains(key).then(|| {
            refused(
                key,
                format!("its enrolment in community '{community}' was revoked"),
            )
        })
    };
    match join {
        Join::Secret(proof) => {
            let Some(secret) = &e.secret else {
                return Err(refused(key, format!("community '{community}' takes enrolment tokens only (no `join_secret_file`); create one with `metalvpc-supernode enrolled token create --community {community}` and set `join_token_file` on the edge")));
            };
            if !proofs_equal(&join_proof(secret, key, community, timestamp), proof) {
                return Err(refused(key, format!("its join proof does not match community '{community}''s join secret (check `join_secret_file` on both sides)")));
            }
            revoked().map_or(Ok(None), Err)
        }
        Join::Token { id, proof } => {
            let hex = token_id_hex(id);
            let Some(i) = e.tokens.iter().position(|t| t.id == *id) else {
                return Err(refused(key, format!("enrolment token {hex} is unknown to community '{community}' (deleted, or created for another community or supernode); create one with `metalvpc-supernode enrolled token create`")));
            };
            let t = &e.tokens[i];
            if !proofs_equal(&token_proof(&t.key, id, key, community, timestamp), proof) {
                return Err(refused(key, format!("its proof does not match enrolment token {hex} (check `join_token_file`: it holds the whole `<id>.<secret>` that `enrolled token create` printed)")));
            }
            if let Some(r) = revoked() {
                return Err(r);
            }
            if let Some(exp) = t.expires {
                match unix {
                    Some(u) if u < exp => {}
                    Some(_) => return Err(refused(key, format!("enrolment token {hex} of community '{community}' has expired; create a new one with `metalvpc-supernode enrolled token create --community {community}`"))),
                    None => return Err(refused(key, format!("enrolment token {hex} expires, but this supernode does not know the time yet; try again"))),
                }
            }
            if t.uses == 0 {
                return Err(refused(key, format!("enrolment token {hex} of community '{community}' is used up (or was burned when a server that enrolled with it was revoked); create a new one with `metalvpc-supernode enrolled token create --community {community}`")));
            }
            Ok(Some(i))
        }
    }
}
