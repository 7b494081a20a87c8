//! The supernode's TOML configuration: loading, validation, and errors that name the file,
//! the key and the fix.

use anyhow::{anyhow, Result};
use ipnet::IpNet;
use metalvpc_common::{parse_public_key, relative_to, MgmtAddr, MgmtToken, Problems};
use metalvpc_protocol::membership::{
    AdminPublicKey, Membership, SignedBlob, SignedMember, MAX_MEMBERSHIP_BYTES,
};
use metalvpc_protocol::supernode::{
    CommunityConfig, NodeEntry, SupernodeConfig, DEFAULT_REGISTER_INTERVAL,
};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

mod enrolment;
use enrolment::{enrolment, merge_enrolled};
pub use enrolment::{hex32, unsigned_warnings};

/// Default management socket: `supernode.sock` in [`metalvpc_common::runtime_dir`].
fn default_management() -> String {
    metalvpc_common::runtime_dir()
        .join("supernode.sock")
        .to_string_lossy()
        .into_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    private_key_file: String,
    management: Option<String>,
    management_token_file: Option<String>,
    community_dir: Option<String>,
    register_interval: Option<u16>,
    log_level: Option<String>,
    state_dir: Option<String>,
    #[serde(default)]
    community: Vec<RawCommunity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommunity {
    name: String,
    network: String,
    relay_policy: Option<String>,
    /// Enrolment: a file holding the shared join secret (without it, tokens only).
    join_secret_file: Option<String>,
    /// Enrolment: the addresses handed out (a CIDR inside `network`).
    address_pool: Option<String>,
    /// The administrator-signed member list this supernode carries (file path).
    signed_membership: Option<String>,
    /// The administrator's Ed25519 public key the signed list must verify against.
    admin_key: Option<String>,
    /// Testing only: admit the `node` entries even where they differ from the signed list,
    /// as a compromised supernode would (edges with `admin_key` refuse what is not signed).
    #[serde(default)]
    insecure_unsigned_nodes: bool,
    cipher: Option<String>,
    #[serde(default)]
    node: Vec<RawNode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    public_key: String,
    address: String,
    name: Option<String>,
    #[serde(default)]
    allowed_cidrs: Vec<String>,
    /// May send IPv6 router advertisements and redirects to the other members.
    ipv6_router: Option<bool>,
}

/// A loaded and checked configuration.
pub struct Loaded {
    /// UDP listen address.
    pub listen: SocketAddr,
    /// Management endpoint.
    pub management: MgmtAddr,
    /// `management_token_file`: what TCP management requests must carry.
    pub management_token: Option<MgmtToken>,
    /// What the core needs.
    pub core: SupernodeConfig,
    /// Each community's `join_secret_file` (resolved), for `enrolled revoke --rotate-secret`.
    pub join_secret_files: Vec<(String, PathBuf)>,
    /// Where enrolments are kept (`state_dir`).
    pub state_dir: PathBuf,
    /// `log_level` (overridden by RUST_LOG).
    pub log_level: String,
}

fn read_toml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    parse_toml(path, &Disk.read_text(path)?)
}

fn parse_toml<T: for<'de> Deserialize<'de>>(path: &Path, text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| anyhow!("{}: {}", path.display(), e.to_string().trim_end()))
}

/// What loading needs besides the main file's text: the community directory's files, the
/// private key, join secrets, the enrolment store and signed membership lists ([`Disk`]: the
/// filesystem; tests and the fuzz targets give them from memory).
pub use metalvpc_common::source::{Disk, Source};

/// True for RFC 1918 IPv4 networks and IPv6 unique local (fc00::/7) networks.
fn is_private(net: &IpNet) -> bool {
    let private: [IpNet; 4] = [
        "10.0.0.0/8".parse().unwrap(),
        "172.16.0.0/12".parse().unwrap(),
        "192.168.0.0/16".parse().unwrap(),
        "fc00::/7".parse().unwrap(),
    ];
    private.iter().any(|p| p.contains(net))
}

/// The config names only what only the file can name: everything else has defaults.
/// Only the keys `status` needs; the rest of the file may be broken (the daemon may run
/// with an older, valid version of it).
pub fn load_meta(path: &Path) -> Result<(MgmtAddr, Option<SocketAddr>)> {
    let table: toml::Table = read_toml(path)?;
    let get = |k: &str| table.get(k).and_then(|v| v.as_str());
    let mgmt = MgmtAddr::parse(path, get("management").unwrap_or(&default_management()));
    Ok((mgmt, get("listen").and_then(|l| l.parse().ok())))
}

/// Loads and validates everything, including the private key.
pub fn load(path: &Path) -> Result<Loaded> {
    load_from_str(path, &Disk.read_text(path)?, &Disk)
}

/// What [`load`] does once the main file is read: `text` is the content of `path` (named in
/// errors); community files and the key come from `source`.
pub fn load_from_str(path: &Path, text: &str, source: &dyn Source) -> Result<Loaded> {
    let raw: RawConfig = parse_toml(path, text)?;
    let f = path.display();
    let listen: Option<SocketAddr> = raw.listen.parse().ok();
    let mut p = Problems::default();
    if listen.is_none() {
        p.push(format!(
            "{f}: key `listen` = \"{}\" is not an address:port; example: listen = \"0.0.0.0:7654\"",
            raw.listen
        ));
    }
    let mut communities = Vec::new();
    let before = p.len();
    let mut names = HashSet::new();
    let mut unique = |name: &str, p: &mut Problems| {
        if !names.insert(name.to_string()) {
            p.push(format!(
                "{f}: community name '{name}' is defined twice; each community needs its own name"
            ));
        }
    };
    let mut join_secret_files = Vec::new();
    let mut secret_file = |file: &Path, c: &RawCommunity| {
        if let Some(s) = &c.join_secret_file {
            join_secret_files.push((c.name.clone(), relative_to(file, s)));
        }
    };
    for (i, c) in raw.community.into_iter().enumerate() {
        unique(&c.name, &mut p);
        secret_file(path, &c);
        communities.extend(check_community(
            path,
            &format!("community[{i}]"),
            "community.node",
            c,
            true,
            source,
            &mut p,
        ));
    }
    if let Some(dir) = &raw.community_dir {
        let dir = relative_to(path, dir);
        match source.toml_files(&dir) {
            Err(e) => p.push(format!(
                "{f}: key `community_dir` = {}: cannot read the directory: {e}",
                dir.display()
            )),
            Ok(mut files) => {
                files.sort();
                for file in files {
                    let c = source
                        .read_text(&file)
                        .and_then(|t| parse_toml::<RawCommunity>(&file, &t));
                    if let Some(c) = p.ok(c) {
                        unique(&c.name, &mut p);
                        secret_file(&file, &c);
                        communities
                            .extend(check_community(&file, "", "node", c, true, source, &mut p));
                    }
                }
            }
        }
    }
    let state_dir = relative_to(
        path,
        raw.state_dir
            .as_deref()
            .unwrap_or(crate::enrol::DEFAULT_STATE_DIR),
    );
    for c in communities.iter_mut().filter(|c| c.enrolment.is_some()) {
        merge_enrolled(&state_dir, c, source, &mut p);
    }
    if communities.is_empty() && p.len() == before {
        p.push(format!("{f}: no communities: add a [[community]] table (name, network, [[community.node]] entries) or set `community_dir`"));
    }
    let key_path = relative_to(path, &raw.private_key_file);
    let private_key = p.ok(source.private_key(path, &key_path));
    let management = MgmtAddr::parse(
        path,
        raw.management.as_deref().unwrap_or(&default_management()),
    );
    let management_token = p
        .ok(metalvpc_common::management_token(
            path,
            &management,
            raw.management_token_file.as_deref(),
            source,
        ))
        .flatten();
    let register_interval = raw.register_interval.unwrap_or(DEFAULT_REGISTER_INTERVAL);
    if !(1..=300).contains(&register_interval) {
        p.push(format!("{f}: key `register_interval` = {register_interval}: must be 1 to 300 seconds (default {DEFAULT_REGISTER_INTERVAL})"));
    }
    let log_level = p.ok(metalvpc_common::parse_log_level(
        path,
        raw.log_level.as_deref(),
    ));
    p.finish(path)?;
    Ok(Loaded {
        join_secret_files,
        state_dir,
        log_level: log_level.unwrap_or_default(),
        listen: listen.ok_or_else(|| anyhow!("{f}: internal: listen missing"))?,
        management,
        management_token,
        core: SupernodeConfig {
            private_key: private_key.ok_or_else(|| anyhow!("{f}: internal: key missing"))?,
            communities,
            register_interval,
        },
    })
}

/// The `*.toml` files of `community_dir` (relative to the config `path`), sorted.
fn community_files(path: &Path, dir: &str) -> Result<Vec<PathBuf>> {
    let dir = relative_to(path, dir);
    let mut files = Disk.toml_files(&dir).map_err(|e| {
        anyhow!(
            "{}: key `community_dir` = {}: cannot read the directory: {e}",
            path.display(),
            dir.display()
        )
    })?;
    files.sort();
    Ok(files)
}

/// Checks one community table (or file); notes every problem in `p`. `None` if the
/// community itself is unusable (bad name or network). With `load_signed`, the community's
/// `signed_membership` is read and verified too (not when `sign` is about to write it).
fn check_community(
    file: &Path,
    prefix: &str,
    node_table: &str,
    mut c: RawCommunity,
    load_signed: bool,
    source: &dyn Source,
    p: &mut Problems,
) -> Option<CommunityConfig> {
    let f = file.display();
    let at = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    let start = p.len();
    if !metalvpc_common::is_community_name(&c.name) {
        p.push(format!(
            "{f}: key `{}` = \"{}\": a community name is 1 to 64 letters, digits, '-', '_' or '.'",
            at("name"),
            c.name
        ));
    }
    let network: Option<IpNet> = c.network.parse().ok();
    match network {
        None => p.push(format!(
            "{f}: key `{}` = \"{}\" is not a CIDR; example: network = \"10.10.0.0/24\"",
            at("network"),
            c.network
        )),
        Some(network) if network != network.trunc() => p.push(format!(
            "{f}: key `{}` = \"{}\" has host bits set; did you mean \"{}\"?",
            at("network"),
            c.network,
            network.trunc()
        )),
        Some(network) if !is_private(&network) => p.push(format!(
            "{f}: key `{}` = \"{network}\" is not a private range; use RFC 1918 (10.0.0.0/8, 172.16.0.0/12, \
             192.168.0.0/16) so overlay addresses never collide with the Internet",
            at("network")
        )),
        Some(_) => {}
    }
    let mut keys = HashSet::new();
    let mut addrs = HashSet::new();
    let mut nodes = Vec::new();
    for (i, n) in std::mem::take(&mut c.node).into_iter().enumerate() {
        let here = format!(
            "{node_table}[{i}]{}",
            n.name
                .as_deref()
                .map(|x| format!(" ({x})"))
                .unwrap_or_default()
        );
        let key = p.ok(parse_public_key(
            file,
            &format!("{here}.public_key"),
            &n.public_key,
        ));
        if let Some(key) = key {
            if !keys.insert(key) {
                p.push(format!("{f}: `{here}.public_key`: this key is listed twice in community '{}'; each node needs its own key", c.name));
            }
        }
        let address: Option<IpAddr> = n.address.parse().ok();
        match (address, network) {
            (None, _) => p.push(format!("{f}: key `{here}.address` = \"{}\" is not an IP address; example: address = \"10.10.0.2\"", n.address)),
            (Some(address), Some(network)) => {
                if !network.contains(&address) {
                    p.push(format!(
                        "{f}: key `{here}.address` = \"{address}\" is outside the community's `network` {network}; \
                         pick an address inside it"
                    ));
                }
                if let (IpNet::V4(v4), IpAddr::V4(a)) = (network, address) {
                    if v4.prefix_len() < 31 && (a == v4.network() || a == v4.broadcast()) {
                        p.push(format!("{f}: key `{here}.address` = \"{address}\" is the network or broadcast address of {network}; pick a host address"));
                    }
                }
                if !addrs.insert(address) {
                    p.push(format!("{f}: key `{here}.address` = \"{address}\" is given to two nodes; each node needs its own address"));
                }
            }
            (Some(_), None) => {}
        }
        let mut allowed_cidrs = Vec::new();
        for cidr in &n.allowed_cidrs {
            match cidr.parse::<IpNet>() {
                Ok(net) => allowed_cidrs.push(net.trunc()),
                Err(_) => p.push(format!("{f}: key `{here}.allowed_cidrs` entry \"{cidr}\" is not a CIDR; example: allowed_cidrs = [\"10.244.1.0/24\"]")),
            }
        }
        if allowed_cidrs.len() > metalvpc_protocol::control::MAX_ALLOWED_CIDRS {
            p.push(format!(
                "{f}: key `{here}.allowed_cidrs` has more than {} entries",
                metalvpc_protocol::control::MAX_ALLOWED_CIDRS
            ));
        }
        if let (Some(key), Some(address)) = (key, address) {
            nodes.push(NodeEntry {
                key,
                name: n.name.unwrap_or_default(),
                address,
                allowed_cidrs,
                ipv6_router: n.ipv6_router.unwrap_or(false),
            });
        }
    }
    let relay = p.ok(metalvpc_common::parse_relay_policy(
        file,
        &at("relay_policy"),
        c.relay_policy.as_deref(),
    ));
    let cipher = p.ok(metalvpc_common::parse_cipher(
        file,
        &at("cipher"),
        c.cipher.as_deref(),
    ));
    let signed = if load_signed {
        signed_membership(file, &at, &c, &mut nodes, source, p)
    } else {
        None
    };
    if p.len() > start {
        return None;
    }
    let enrolment = enrolment(file, &at, &c, network, signed.is_some(), source, p);
    if p.len() > start {
        return None;
    }
    Some(CommunityConfig {
        name: c.name,
        network: network?,
        nodes,
        relay: relay?,
        signed,
        enrolment,
        cipher: cipher?,
    })
}

/// What is read of a signed membership file: one byte more than [`MAX_MEMBERSHIP_BYTES`], so
/// that verifying refuses a larger one.
const SIGNED_FILE_LIMIT: u64 = MAX_MEMBERSHIP_BYTES as u64 + 1;

/// Reads at most [`SIGNED_FILE_LIMIT`] bytes of a signed membership file.
pub fn read_signed_file(path: &Path) -> std::io::Result<Vec<u8>> {
    Disk.read_bounded(path, SIGNED_FILE_LIMIT)
}

/// The community's `signed_membership`, verified against its `admin_key`. Its members become
/// the community's nodes; `[[node]]` entries, if any, must say exactly the same (unless
/// `insecure_unsigned_nodes`, the test stand-in for a compromised supernode).
fn signed_membership(
    file: &Path,
    at: &dyn Fn(&str) -> String,
    c: &RawCommunity,
    nodes: &mut Vec<NodeEntry>,
    source: &dyn Source,
    p: &mut Problems,
) -> Option<SignedBlob> {
    let f = file.display();
    let admin = match (&c.signed_membership, &c.admin_key) {
        (None, None) => return None,
        (None, Some(_)) => {
            p.push(format!("{f}: key `{}` is set but `{}` is not: give the signed member list the key verifies (written by `metalvpc-supernode sign`), or remove admin_key", at("admin_key"), at("signed_membership")));
            return None;
        }
        (Some(_), None) => {
            p.push(format!("{f}: key `{}` needs `{}`: the administrator's public key (print it with `metalvpc-supernode admin-pubkey < admin.key`)", at("signed_membership"), at("admin_key")));
            return None;
        }
        (Some(_), Some(k)) => match AdminPublicKey::from_base64(k) {
            Ok(k) => k,
            Err(e) => {
                p.push(format!("{f}: key `{}` = \"{k}\": not an administrator public key ({e}); use the output of `metalvpc-supernode admin-pubkey < admin.key`", at("admin_key")));
                return None;
            }
        },
    };
    let rel = c.signed_membership.as_deref().unwrap_or_default();
    let path = relative_to(file, rel);
    let key = at("signed_membership");
    let bytes = match source.read_bounded(&path, SIGNED_FILE_LIMIT) {
        Ok(b) => b,
        Err(e) => {
            p.push(format!("{f}: key `{key}` = \"{rel}\": cannot read {} ({e}); write it with `metalvpc-supernode sign`", path.display()));
            return None;
        }
    };
    let m = match Membership::verify(&bytes, &admin) {
        Ok(m) => m,
        Err(e) => {
            p.push(format!("{f}: key `{key}` = \"{rel}\": refused: {e}. Sign the list again with the administrator key whose public half is `{}`", at("admin_key")));
            return None;
        }
    };
    if m.community != c.name {
        p.push(format!("{f}: key `{key}` = \"{rel}\": the list is signed for community '{}', not '{}'; sign this community's list", m.community, c.name));
        return None;
    }
    let signed_nodes: Vec<NodeEntry> = m.members.iter().map(NodeEntry::from).collect();
    if nodes.is_empty() {
        *nodes = signed_nodes;
    } else if let Some(diff) = first_difference(&m, nodes) {
        if !c.insecure_unsigned_nodes {
            p.push(format!("{f}: the [[node]] entries of community '{}' differ from its `{key}` \"{rel}\" (version {}): {diff}. Sign the list again (`metalvpc-supernode sign`) or remove the [[node]] entries (members then come from the signed list)", c.name, m.version));
            return None;
        }
        eprintln!("warning: {f}: community '{}': insecure_unsigned_nodes = true: admitting [[node]] entries the signed list does not vouch for ({diff}); edges with admin_key will refuse them", c.name);
    }
    Some(SignedBlob {
        version: m.version,
        bytes,
    })
}

/// How the configured nodes differ from a signed list, in words (None: they agree).
fn first_difference(m: &Membership, nodes: &[NodeEntry]) -> Option<String> {
    for n in nodes {
        match m.get(&n.key) {
            None => return Some(format!("node {} is not on the signed list", n.key)),
            Some(s) if !s.matches(n.address, &n.allowed_cidrs) || s.name != n.name => {
                return Some(format!(
                    "node {} has address {} and allowed_cidrs {:?} but the signed list says {} and {:?}",
                    n.key, n.address, n.allowed_cidrs, s.address, s.allowed_cidrs
                ))
            }
            Some(_) => {}
        }
    }
    m.members
        .iter()
        .find(|s| !nodes.iter().any(|n| n.key == s.key))
        .map(|s| {
            format!(
                "signed member {} is missing from the [[node]] entries",
                s.key
            )
        })
}

/// For `sign`: the community named `name` (or the only one) of a supernode config, or the
/// community file `path`, checked, with the `signed_membership` path it names (if any).
pub fn community_for_signing(
    path: &Path,
    name: Option<&str>,
) -> Result<(CommunityConfig, Option<PathBuf>)> {
    let table: toml::Table = read_toml(path)?;
    let f = path.display();
    let mut candidates: Vec<(PathBuf, String, String, RawCommunity)> = Vec::new();
    if table.contains_key("listen") {
        let raw: RawConfig = read_toml(path)?;
        for (i, c) in raw.community.into_iter().enumerate() {
            candidates.push((
                path.to_path_buf(),
                format!("community[{i}]"),
                "community.node".into(),
                c,
            ));
        }
        if let Some(dir) = &raw.community_dir {
            for file in community_files(path, dir)? {
                let c: RawCommunity = read_toml(&file)?;
                candidates.push((file, String::new(), "node".into(), c));
            }
        }
    } else {
        let c: RawCommunity = read_toml(path)?;
        candidates.push((path.to_path_buf(), String::new(), "node".into(), c));
    }
    let names: Vec<String> = candidates.iter().map(|c| c.3.name.clone()).collect();
    let pick = match name {
        Some(n) => candidates
            .into_iter()
            .find(|c| c.3.name == n)
            .ok_or_else(|| {
                anyhow!(
                    "{f}: no community '{n}' (communities: {})",
                    names.join(", ")
                )
            })?,
        None if candidates.len() == 1 => candidates.remove(0),
        None => anyhow::bail!(
            "{f}: {} communities ({}): say which with --community NAME",
            candidates.len(),
            names.join(", ")
        ),
    };
    let (file, prefix, table_name, c) = pick;
    let target = c
        .signed_membership
        .as_deref()
        .map(|t| relative_to(&file, t));
    let mut p = Problems::default();
    let community = check_community(&file, &prefix, &table_name, c, false, &Disk, &mut p);
    p.finish(&file)?;
    let community =
        community.ok_or_else(|| anyhow!("{f}: internal: a checked community is missing"))?;
    if community.nodes.is_empty() {
        anyhow::bail!(
            "{}: community '{}' has no [[node]] entries to sign",
            file.display(),
            community.name
        );
    }
    Ok((community, target))
}

/// The signed form of a checked community's nodes.
pub fn membership_of(c: &CommunityConfig, version: u64) -> Membership {
    Membership {
        community: c.name.clone(),
        version,
        members: c.nodes.iter().map(SignedMember::from).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metalvpc_common::testing::{assert_refused, TempDir};
    use metalvpc_protocol::PrivateKey;

    fn setup(name: &str) -> (TempDir, String) {
        let d = TempDir::new(&format!("sncfg-{name}"));
        d.write_private("sn.key", PrivateKey::generate().to_base64());
        (d, PrivateKey::generate().public_key().to_base64())
    }

    fn write(d: &TempDir, name: &str, text: &str) -> PathBuf {
        d.write(name, text)
    }

    fn base(pk: &str, extra_node: &str) -> String {
        format!(
            "listen = \"0.0.0.0:7654\"\nprivate_key_file = \"sn.key\"\n[[community]]\nname = \"prod\"\n\
             network = \"10.10.0.0/24\"\n[[community.node]]\nname = \"a\"\npublic_key = \"{pk}\"\naddress = \"10.10.0.1\"\n{extra_node}"
        )
    }

    #[test]
    fn loads_inline_and_directory_communities() {
        let (d, pk) = setup("ok");
        std::fs::create_dir_all(d.join("communities.d")).unwrap();
        write(
            &d,
            "communities.d/staging.toml",
            &format!("name = \"staging\"\nnetwork = \"192.168.50.0/24\"\n[[node]]\npublic_key = \"{pk}\"\naddress = \"192.168.50.9\"\nallowed_cidrs = [\"10.244.0.0/16\"]\nipv6_router = true\n"),
        );
        let p = write(
            &d,
            "sn.toml",
            &format!("community_dir = \"communities.d\"\n{}", base(&pk, "")),
        );
        let c = load(&p).unwrap();
        assert_eq!(c.core.communities.len(), 2);
        assert_eq!(c.core.communities[1].name, "staging");
        assert_eq!(
            c.core.communities[1].nodes[0].allowed_cidrs[0].to_string(),
            "10.244.0.0/16"
        );
        assert!(c.core.communities[1].nodes[0].ipv6_router);
        assert!(!c.core.communities[0].nodes[0].ipv6_router, "by default");
        assert_eq!(c.management, MgmtAddr::Unix(default_management().into()));
        assert_eq!(c.core.communities[0].cipher, Default::default());
        let p = write(
            &d,
            "sn.toml",
            &base(&pk, "").replace("network = ", "cipher = \"aes-256-gcm\"\nnetwork = "),
        );
        assert_eq!(
            load(&p).unwrap().core.communities[0].cipher,
            metalvpc_protocol::crypto::Cipher::Aes256Gcm
        );
    }

    #[test]
    fn tcp_management_outside_loopback_needs_a_token_file_of_mode_600() {
        let (d, pk) = setup("mgmt");
        let text = format!("management = \"[::]:9100\"\n{}", base(&pk, ""));
        let p = write(&d, "sn.toml", &text);
        assert_refused(
            load(&p),
            &text,
            &[
                "sn.toml",
                "`management`",
                "loopback",
                "management_token_file",
            ],
        );
        let text = format!(
            "management = \"[::]:9100\"\nmanagement_token_file = \"mgmt.token\"\n{}",
            base(&pk, "")
        );
        let p = write(&d, "sn.toml", &text);
        d.write("mgmt.token", "0123456789abcdef0123\n");
        assert_refused(load(&p), &text, &["sn.toml", "chmod 600"]);
        d.write_private("mgmt.token", "0123456789abcdef0123\n");
        let c = load(&p).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(c.management_token.unwrap().matches(b"0123456789abcdef0123"));
        // Loopback needs none.
        let text = format!("management = \"127.0.0.1:9100\"\n{}", base(&pk, ""));
        assert!(load(&write(&d, "sn.toml", &text))
            .unwrap()
            .management_token
            .is_none());
    }

    #[test]
    fn a_pool_without_a_join_secret_enrols_with_tokens_and_check_warns_on_what_is_unsigned() {
        let (d, pk) = setup("tokens");
        let text = format!(
            "state_dir = \"state\"\n{}",
            base(&pk, "").replace(
                "network = \"10.10.0.0/24\"\n",
                "network = \"10.10.0.0/24\"\naddress_pool = \"10.10.0.128/25\"\n"
            )
        );
        let p = write(&d, "sn.toml", &text);
        std::fs::create_dir_all(d.join("state")).unwrap();
        write(
            &d,
            "state/prod.enrolled.toml",
            &format!(
                "quarantined = [\"10.10.0.129\"]\n[[token]]\nid = \"0102030405a6\"\nhash = \"{}\"\ncreated = 1\nexpires = 99\nuses = 2\naddress = \"10.10.0.7\"\n",
                "ab".repeat(32)
            ),
        );
        let c = load(&p).unwrap_or_else(|e| panic!("{e:#}"));
        let e = c.core.communities[0].enrolment.as_ref().unwrap();
        assert!(e.secret.is_none());
        use metalvpc_protocol::supernode::Token;
        assert_eq!(
            e.quarantined,
            vec!["10.10.0.129".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            e.tokens,
            vec![Token {
                id: [1, 2, 3, 4, 5, 0xa6],
                key: [0xab; 32],
                expires: Some(99),
                uses: 2,
                address: Some("10.10.0.7".parse().unwrap()),
            }]
        );
        let w = unsigned_warnings(&c);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("unsigned") && w[0].contains("docs/signed-membership.md"));
        // With a shared secret, it says that a revocation does not hold.
        d.write_private("prod.join", "a-long-random-join-secret");
        let p = write(
            &d,
            "sn.toml",
            &text.replace(
                "address_pool",
                "join_secret_file = \"prod.join\"\naddress_pool",
            ),
        );
        let w = unsigned_warnings(&load(&p).unwrap_or_else(|e| panic!("{e:#}")));
        assert!(
            w.iter()
                .any(|l| l.contains("shared join secret") && l.contains("token create")),
            "{w:?}"
        );
        // A damaged token names the store and the fix.
        write(
            &d,
            "state/prod.enrolled.toml",
            "[[token]]\nid = \"nothex\"\nhash = \"\"\ncreated = 1\nuses = 1\n",
        );
        let err = assert_refused(
            load(&p),
            "a damaged token",
            &["prod.enrolled.toml", "token delete"],
        );
        assert!(err.contains("nothex"), "{err}");
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let (d, pk) = setup("many");
        let text = base(
            &pk,
            "[[community.node]]\npublic_key = \"nope\"\naddress = \"10.99.0.1\"\n",
        )
        .replace("0.0.0.0:7654", "nowhere")
        .replace("sn.key", "missing.key");
        let p = write(&d, "sn.toml", &text);
        assert_refused(
            load(&p),
            &text,
            &[
                "4 problems",
                "`listen`",
                "public_key",
                "outside the community",
                "missing.key",
            ],
        );
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let (d, pk) = setup("err");
        let cases = [
            (format!("listn = \"x\"\n{}", base(&pk, "")), "listn"),
            (base("not-a-key", ""), "public_key"),
            (
                base(&pk, "").replace("10.10.0.1", "10.99.0.1"),
                "outside the community's `network`",
            ),
            (
                base(&pk, "").replace("10.10.0.0/24", "8.8.8.0/24"),
                "not a private range",
            ),
            (
                base(
                    &pk,
                    &format!(
                        "[[community.node]]\npublic_key = \"{}\"\naddress = \"10.10.0.1\"\n",
                        PrivateKey::generate().public_key().to_base64()
                    ),
                ),
                "given to two nodes",
            ),
            (
                base(
                    &pk,
                    &format!(
                        "[[community.node]]\npublic_key = \"{pk}\"\naddress = \"10.10.0.2\"\n"
                    ),
                ),
                "listed twice",
            ),
            (base(&pk, "").replace("0.0.0.0:7654", "nowhere"), "`listen`"),
            (
                base(&pk, "").replace("sn.key", "missing.key"),
                "private_key_file",
            ),
            (
                base(&pk, "").replace("network = ", "cipher = \"aes128\"\nnetwork = "),
                "community[0].cipher",
            ),
        ];
        for (text, needle) in cases {
            assert_refused(
                load(&write(&d, "sn.toml", &text)),
                &text,
                &["sn.toml", needle],
            );
        }
        // A broken file in the community directory is named too.
        std::fs::create_dir_all(d.join("c.d")).unwrap();
        write(
            &d,
            "c.d/bad.toml",
            "name = \"x\"\nnetwork = \"10.1.0.0/24\"\nbogus = 1\n",
        );
        let p = write(
            &d,
            "sn.toml",
            &format!("community_dir = \"c.d\"\n{}", base(&pk, "")),
        );
        assert_refused(load(&p), "community_dir c.d", &["bad.toml", "bogus"]);
    }

    #[test]
    fn signed_membership_is_verified_and_must_match_the_nodes() {
        use metalvpc_protocol::membership::AdminKey;
        let (d, pk) = setup("signed");
        let admin = AdminKey::generate();
        let unsigned = write(&d, "src.toml", &base(&pk, ""));
        let (c, target) = community_for_signing(&unsigned, None).unwrap();
        assert_eq!(target, None);
        std::fs::write(d.join("prod.members"), membership_of(&c, 3).sign(&admin)).unwrap();
        let keys = |admin_pub: &str| {
            format!(
                "network = \"10.10.0.0/24\"\nsigned_membership = \"prod.members\"\nadmin_key = \"{admin_pub}\"\n"
            )
        };
        let good = keys(&admin.public_key().to_base64());
        // Nodes from the signed list alone, or [[node]] entries that agree with it.
        let only_signed = format!(
            "listen = \"0.0.0.0:7654\"\nprivate_key_file = \"sn.key\"\n[[community]]\nname = \"prod\"\n{good}"
        );
        let c = load(&write(&d, "a.toml", &only_signed)).unwrap();
        assert_eq!(c.core.communities[0].nodes.len(), 1);
        assert_eq!(c.core.communities[0].signed.as_ref().unwrap().version, 3);
        let both = base(&pk, "").replace("network = \"10.10.0.0/24\"\n", &good);
        assert!(load(&write(&d, "b.toml", &both)).is_ok());
        let other = PrivateKey::generate().public_key().to_base64();
        let cases = [
            // A node the list does not have.
            (
                base(
                    &pk,
                    &format!(
                        "[[community.node]]\npublic_key = \"{other}\"\naddress = \"10.10.0.5\"\n"
                    ),
                )
                .replace("network = \"10.10.0.0/24\"\n", &good),
                "differ from",
            ),
            // Another administrator key.
            (
                base(&pk, "").replace(
                    "network = \"10.10.0.0/24\"\n",
                    &keys(&AdminKey::generate().public_key().to_base64()),
                ),
                "signature does not verify",
            ),
            (
                base(&pk, "").replace(
                    "network = \"10.10.0.0/24\"\n",
                    "network = \"10.10.0.0/24\"\nsigned_membership = \"prod.members\"\n",
                ),
                "needs `community[0].admin_key`",
            ),
            (
                base(&pk, "")
                    .replace("prod\"", "staging\"")
                    .replace("network = \"10.10.0.0/24\"\n", &good),
                "not 'staging'",
            ),
        ];
        for (text, needle) in &cases {
            assert_refused(load(&write(&d, "c.toml", text)), text, &["c.toml", needle]);
        }
        // The test-only switch admits the differing node (as a compromised supernode would).
        let insecure = cases[0]
            .0
            .replace("admin_key", "insecure_unsigned_nodes = true\nadmin_key");
        let c = load(&write(&d, "e.toml", &insecure)).unwrap();
        assert_eq!(c.core.communities[0].nodes.len(), 2);
    }
}
