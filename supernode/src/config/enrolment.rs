//! The enrolment part of the supernode's configuration: a community's `address_pool` and
//! `join_secret_file`, and what the enrolment store in `state_dir` adds (enrolled nodes,
//! tokens, revoked keys, quarantined addresses); the warnings `check` and the start-up log
//! give about unsigned communities and shared secrets.

use super::{Loaded, RawCommunity};
use ipnet::IpNet;
use metalvpc_common::source::Source;
use metalvpc_common::{parse_public_key, relative_to, Problems};
use metalvpc_protocol::supernode::{CommunityConfig, Enrolment, NodeEntry, Token};
use metalvpc_protocol::PublicKey;
use std::net::IpAddr;
use std::path::Path;

/// Adds the servers that enrolled earlier (from the store in `state_dir`) to `c`'s members
/// and its revoked keys to its enrolment.
pub(super) fn merge_enrolled(
    state_dir: &Path,
    c: &mut CommunityConfig,
    source: &dyn Source,
    p: &mut Problems,
) {
    let file = crate::enrol::path(state_dir, &c.name);
    let Some(store) = p.ok(crate::enrol::load_from(source, &file)) else {
        return;
    };
    let f = file.display();
    let enrolled = store.node.len();
    for n in store.node {
        let key = p.ok(parse_public_key(&file, "node.public_key", &n.public_key));
        let address: Option<IpAddr> = n.address.parse().ok();
        let (Some(key), Some(address)) = (key, address) else {
            p.push(format!(
                "{f}: an enrolled node has a bad address \"{}\"",
                n.address
            ));
            continue;
        };
        if c.nodes.iter().any(|x| x.key == key) {
            continue; // listed in the community file too: the file wins
        }
        if store.revoked.contains(&n.public_key) {
            continue; // revoked: never a member again
        }
        if c.nodes.iter().any(|x| x.address == address) {
            p.push(format!("{f}: enrolled node {} has address {address}, which the community file now gives to another node; revoke the enrolment or change the file", n.name));
            continue;
        }
        c.nodes.push(NodeEntry {
            key,
            name: n.name,
            address,
            allowed_cidrs: vec![],
            ipv6_router: false,
        });
    }
    let Some(e) = c.enrolment.as_mut() else {
        return;
    };
    e.enrolled = enrolled;
    e.revoked = store
        .revoked
        .iter()
        .filter_map(|k| PublicKey::from_base64(k).ok())
        .collect();
    e.quarantined = store
        .quarantined
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    for t in &store.token {
        let id = metalvpc_protocol::control::parse_token_id(&t.id);
        let key = hex32(&t.hash);
        let address = t.address.as_deref().map(str::parse::<IpAddr>).transpose();
        match (id, key, address) {
            (Ok(id), Some(key), Ok(address)) => e.tokens.push(Token {
                id,
                key,
                expires: t.expires,
                uses: t.uses,
                address,
            }),
            _ => p.push(format!("{f}: enrolment token {} is damaged (its id, hash or address does not parse); delete it with `metalvpc-supernode enrolled token delete {}`", t.id, t.id)),
        }
    }
}

/// 64 hex digits as 32 bytes.
pub fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The community's enrolment settings (`join_secret_file`, `address_pool`), checked.
pub(super) fn enrolment(
    file: &Path,
    at: &dyn Fn(&str) -> String,
    c: &RawCommunity,
    network: Option<IpNet>,
    signed: bool,
    source: &dyn Source,
    p: &mut Problems,
) -> Option<Enrolment> {
    let f = file.display();
    let pool = match (&c.join_secret_file, &c.address_pool) {
        (None, None) => return None,
        (_, Some(pool)) => pool,
        (Some(_), None) => {
            p.push(format!("{f}: key `{}` is set but `{}` is not: give the addresses to hand out, example: address_pool = \"10.10.0.128/25\"", at("join_secret_file"), at("address_pool")));
            return None;
        }
    };
    if signed {
        p.push(format!("{f}: `{}` and `signed_membership` exclude each other: with a signed list, only the administrator adds members", at("address_pool")));
        return None;
    }
    let pool_net: Option<IpNet> = pool.parse().ok().map(|n: IpNet| n.trunc());
    match (pool_net, network) {
        (None, _) => p.push(format!(
            "{f}: key `{}` = \"{pool}\" is not a CIDR; example: address_pool = \"10.10.0.128/25\"",
            at("address_pool")
        )),
        (Some(pn), Some(net)) if !net.contains(&pn) => p.push(format!(
            "{f}: key `{}` = \"{pool}\" is not inside the community's `network` {net}",
            at("address_pool")
        )),
        _ => {}
    }
    // Without a join secret, only enrolment tokens (`enrolled token create`) admit servers.
    let secret = match &c.join_secret_file {
        None => Some(None),
        Some(secret_file) => join_secret(file, &at, secret_file, source, p).map(Some),
    };
    Some(Enrolment::new(secret?, pool_net?))
}

/// The community's join secret, checked (readable, mode 600, at least 16 characters).
fn join_secret(
    file: &Path,
    at: &dyn Fn(&str) -> String,
    secret_file: &str,
    source: &dyn Source,
    p: &mut Problems,
) -> Option<Vec<u8>> {
    let f = file.display();
    let path = relative_to(file, secret_file);
    match source.secret(&path) {
        Err(e) => {
            p.push(format!("{f}: key `{}` = {}: cannot read it ({e}). Create it with: (umask 077; head -c 32 /dev/urandom | base64 > {})", at("join_secret_file"), path.display(), path.display()));
            None
        }
        Ok((bytes, mode)) => {
            let secret: Vec<u8> = String::from_utf8_lossy(&bytes).trim().as_bytes().to_vec();
            if mode & 0o077 != 0 {
                p.push(format!("{f}: join secret file {} is readable by group or others (mode {:o}); fix: chmod 600 {}", path.display(), mode & 0o777, path.display()));
                None
            } else if secret.len() < 16 {
                p.push(format!("{f}: join secret file {} holds fewer than 16 characters; use a long random string: head -c 32 /dev/urandom | base64", path.display()));
                None
            } else {
                Some(secret)
            }
        }
    }
}

/// One line per community whose membership is the supernode's word alone (no
/// `signed_membership`), and per community whose shared join secret cannot make a revocation
/// stick: for `check` and the start-up log.
pub fn unsigned_warnings(cfg: &Loaded) -> Vec<String> {
    let mut out = Vec::new();
    for c in &cfg.core.communities {
        if c.signed.is_none() {
            out.push(format!("community '{}' is unsigned (no `signed_membership`/`admin_key`): its edges trust this supernode to say who is a member and which address is whose, so whoever controls this supernode can give a member's address to a key of its own and sit in the middle; fix: sign the membership (docs/signed-membership.md)", c.name));
        }
        if c.enrolment.as_ref().is_some_and(|e| e.secret.is_some()) {
            out.push(format!("community '{}' enrols with a shared join secret: a revoked server still holds it and can enrol again with a fresh key, so a revocation holds only once the secret is rotated; prefer per-server tokens (`metalvpc-supernode enrolled token create`, then remove `join_secret_file`)", c.name));
        }
    }
    out
}
