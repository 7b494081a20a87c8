//! The edge's TOML configuration (one file per community): loading, validation, defaults,
//! and errors that name the file, the key and the fix.

use anyhow::{anyhow, Result};
use ipnet::Ipv4Net;
use metalvpc_common::source::{Disk, Source};
use metalvpc_common::{parse_public_key, relative_to, MgmtAddr, MgmtToken, Problems};
use metalvpc_protocol::membership::AdminPublicKey;
use metalvpc_protocol::overhead::{self, Underlay};
use metalvpc_protocol::{Mac, PrivateKey, PublicKey, DEFAULT_MTU};
use serde::Deserialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default UDP port of an edge.
pub const DEFAULT_LISTEN_PORT: u16 = 7655;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    community: String,
    private_key_file: String,
    listen_port: Option<u16>,
    management: Option<String>,
    management_token_file: Option<String>,
    keepalive: Option<u64>,
    relay_policy: Option<String>,
    log_level: Option<String>,
    neighbor_suppression: Option<bool>,
    mss_clamp: Option<bool>,
    join_secret_file: Option<String>,
    join_token_file: Option<String>,
    admin_key: Option<String>,
    membership_cache: Option<String>,
    cipher: Option<String>,
    #[serde(default)]
    supernode: Vec<RawSupernode>,
    /// Optional as a whole for an enrolling edge (its address comes from the supernode).
    #[serde(default)]
    interface: RawInterface,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSupernode {
    address: String,
    public_key: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: Option<String>,
    address: Option<String>,
    address6: Option<String>,
    mtu: Option<u32>,
    mac: Option<String>,
}

/// A loaded and checked edge configuration.
pub struct Loaded {
    /// Community name.
    pub community: String,
    /// Our key.
    pub private_key: PrivateKey,
    /// UDP port.
    pub listen_port: u16,
    /// Management endpoint.
    pub management: MgmtAddr,
    /// `management_token_file`: what TCP management requests must carry.
    pub management_token: Option<MgmtToken>,
    /// Keepalive interval to peers.
    pub keepalive: Duration,
    /// Supernodes.
    pub supernodes: Vec<(SocketAddr, PublicKey)>,
    /// TAP name.
    pub if_name: String,
    /// Overlay address and prefix.
    pub address: Ipv4Net,
    /// TAP MTU.
    pub mtu: u32,
    /// `interface.mtu` was given; otherwise `run` derives it from the route to the supernodes.
    pub mtu_explicit: bool,
    /// TAP MAC.
    pub mac: Mac,
    /// May use supernode relays.
    pub relay: bool,
    /// `log_level` (overridden by RUST_LOG).
    pub log_level: String,
    /// Answer ARP/ND for members locally.
    pub neighbor_suppression: bool,
    /// Clamp the MSS of TCP SYNs crossing the overlay.
    pub mss_clamp: bool,
    /// The community's join secret (enrolment), if `join_secret_file` is set.
    pub join_secret: Option<Vec<u8>>,
    /// The enrolment token (`join_token_file`), if set.
    pub join_token: Option<metalvpc_protocol::control::JoinToken>,
    /// IPv6 (ULA) address and prefix of the TAP device, if any.
    pub address6: Option<ipnet::Ipv6Net>,
    /// `admin_key`: peers must be on a list signed by this key.
    pub admin_key: Option<AdminPublicKey>,
    /// `membership_cache`: where the newest signed list is kept across restarts.
    pub membership_cache: Option<PathBuf>,
    /// Data-plane cipher (must match the community's on the supernode).
    pub cipher: metalvpc_protocol::crypto::Cipher,
}

/// The warning for an edge without `admin_key` (for `check` and the start-up log), if any.
pub fn unsigned_warning(c: &Loaded) -> Option<String> {
    c.admin_key.is_none().then(|| format!(
        "community '{}' is unsigned (no `admin_key`): this edge trusts its supernodes to say who is a member and which address is whose, so whoever controls a supernode can give a member's address to a key of its own and sit in the middle; fix: sign the membership and set `admin_key` (docs/signed-membership.md)",
        c.community
    ))
}

fn parse(path: &Path, text: &str) -> Result<RawConfig> {
    toml::from_str(text).map_err(|e| anyhow!("{}: {}", path.display(), e.to_string().trim_end()))
}

/// Resolves a supernode's `host:port` (DNS names included) to its first address.
fn resolve(address: &str) -> Option<SocketAddr> {
    address.to_socket_addrs().ok().and_then(|mut a| a.next())
}

/// The default TAP name for a community: `mv-` and the community, cut to 15 characters.
pub fn default_if_name(community: &str) -> String {
    let mut n: String = format!("mv-{community}")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect();
    n.truncate(15);
    n
}

/// The management endpoint only (for `status`): no key file needed, and the rest of the
/// file may be broken (the daemon may run with an older, valid version of it).
pub fn load_management(path: &Path) -> Result<MgmtAddr> {
    let text = Disk.read_text(path)?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
    let get = |k: &str| table.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    let default = default_management(get("community"));
    let m = Some(get("management")).filter(|m| !m.is_empty());
    Ok(MgmtAddr::parse(path, m.unwrap_or(&default)))
}

/// The management socket of a community's edge unless `management` says otherwise.
fn default_management(community: &str) -> String {
    metalvpc_common::runtime_dir()
        .join(format!("{community}.sock"))
        .to_string_lossy()
        .into_owned()
}

fn management(path: &Path, raw: &RawConfig) -> MgmtAddr {
    let default = default_management(&raw.community);
    MgmtAddr::parse(path, raw.management.as_deref().unwrap_or(&default))
}

/// Loads and validates everything, including the private key file. Every problem in the
/// file is reported at once.
pub fn load(path: &Path) -> Result<Loaded> {
    load_from_str(path, &Disk.read_text(path)?, resolve, &Disk)
}

/// What [`load`] does once the file is read: `text` is the content of `path` (named in
/// errors); `resolve` turns a supernode `address` into a socket address; the key named by
/// `private_key_file` comes from `source`. With a `resolve` that does no DNS and a `source`
/// from memory, this touches neither the network nor the key file (the fuzz target uses it
/// that way).
pub fn load_from_str(
    path: &Path,
    text: &str,
    resolve: impl Fn(&str) -> Option<SocketAddr>,
    source: &dyn Source,
) -> Result<Loaded> {
    let raw = parse(path, text)?;
    let f = path.display();
    let mut p = Problems::default();
    if !metalvpc_common::is_community_name(&raw.community) {
        p.push(format!("{f}: key `community` = \"{}\": a community name is 1 to 64 letters, digits, '-', '_' or '.', as on the supernode", raw.community));
    }
    if raw.supernode.is_empty() {
        p.push(format!("{f}: no supernode: add at least one [[supernode]] table with `address` (\"host:port\") and `public_key`"));
    }
    let mut supernodes = Vec::new();
    for (i, s) in raw.supernode.iter().enumerate() {
        let addr = resolve(&s.address);
        if addr.is_none() {
            p.push(format!("{f}: key `supernode[{i}].address` = \"{}\" is not a reachable host:port; example: address = \"203.0.113.10:7654\"", s.address));
        }
        let key = p.ok(parse_public_key(
            path,
            &format!("supernode[{i}].public_key"),
            &s.public_key,
        ));
        if let (Some(addr), Some(key)) = (addr, key) {
            if supernodes.iter().any(|(a, _)| *a == addr) {
                p.push(format!("{f}: key `supernode[{i}].address` = \"{}\" is listed twice; list each supernode once", s.address));
            }
            supernodes.push((addr, key));
        }
    }
    let mut secret_file = |key: &str, file: Option<&str>, what: &str, fix: &str| {
        let file = relative_to(path, file?);
        match source.secret(&file) {
            Err(e) => {
                p.push(format!(
                    "{f}: key `{key}` = {}: cannot read it ({e}); {fix} (mode 600)",
                    file.display()
                ));
                None
            }
            Ok((bytes, mode)) => {
                if mode & 0o077 != 0 {
                    p.push(format!("{f}: {what} file {} is readable by group or others (mode {:o}); fix: chmod 600 {}", file.display(), mode & 0o777, file.display()));
                }
                Some((file, String::from_utf8_lossy(&bytes).trim().to_string()))
            }
        }
    };
    let join_secret = secret_file(
        "join_secret_file",
        raw.join_secret_file.as_deref(),
        "join secret",
        "copy the community's join secret from the supernode",
    )
    .map(|(_, s)| s.into_bytes());
    let join_token = secret_file(
        "join_token_file",
        raw.join_token_file.as_deref(),
        "enrolment token",
        "write the token `metalvpc-supernode enrolled token create` printed to it",
    )
    .and_then(|(file, text)| match metalvpc_protocol::control::JoinToken::parse(&text) {
        Ok(t) => Some(t),
        Err(e) => {
            p.push(format!("{f}: key `join_token_file` = {}: not an enrolment token: {e}; create one on the supernode with `metalvpc-supernode enrolled token create --community {}`", file.display(), raw.community));
            None
        }
    });
    if raw.join_token_file.is_some() && raw.join_secret_file.is_some() {
        p.push(format!("{f}: keys `join_token_file` and `join_secret_file` exclude each other: keep the token (per server, revocable) and remove `join_secret_file`"));
    }
    let enrols = raw.join_secret_file.is_some() || raw.join_token_file.is_some();
    // Without an address the supernode assigns one (enrolment with a token or the join secret).
    let address: Option<Ipv4Net> = match raw.interface.address.as_deref() {
        None | Some("auto") if enrols => {
            Some(Ipv4Net::new(std::net::Ipv4Addr::UNSPECIFIED, 32).expect("valid"))
        }
        None => {
            p.push(format!("{f}: key `interface.address` is missing: give this server's overlay address (example: address = \"10.10.0.2/24\"), or set `join_token_file` to have the supernode assign one"));
            None
        }
        Some(a) => {
            let parsed = a.parse().ok();
            if parsed.is_none() {
                p.push(format!(
                    "{f}: key `interface.address` = \"{a}\" is not an IPv4 address in CIDR form; example: address = \"10.10.0.2/24\""
                ));
            }
            parsed
        }
    };
    // Over an IPv6 underlay the outer header is 20 bytes larger.
    let default_mtu = if !supernodes.is_empty() && supernodes.iter().all(|(a, _)| a.is_ipv6()) {
        overhead::largest_tap_mtu(1500, Underlay::V6, overhead::Path::Relayed)
    } else {
        DEFAULT_MTU
    };
    let mtu = raw.interface.mtu.unwrap_or(default_mtu as u32);
    if !(576..=9000).contains(&mtu) {
        p.push(format!("{f}: key `interface.mtu` = {mtu}: must be 576 to 9000 (default {DEFAULT_MTU}, for a 1500-byte underlay)"));
    }
    let private_key = p.ok(source.private_key(path, &relative_to(path, &raw.private_key_file)));
    let mac = match &raw.interface.mac {
        None => private_key.as_ref().map(|k| k.public_key().derived_mac()),
        Some(m) => match Mac::parse(m) {
            None => {
                p.push(format!("{f}: key `interface.mac` = \"{m}\" is not a MAC address; example: mac = \"02:12:34:56:78:9a\""));
                None
            }
            Some(mac) if mac.is_group() || mac.0 == [0; 6] => {
                p.push(format!("{f}: key `interface.mac` = \"{m}\" is a multicast or zero address; use a unicast one such as 02:xx:xx:xx:xx:xx"));
                None
            }
            Some(mac) => Some(mac),
        },
    };
    let if_name = raw
        .interface
        .name
        .clone()
        .unwrap_or_else(|| default_if_name(&raw.community));
    if if_name.is_empty() || if_name.len() > 15 {
        p.push(format!("{f}: key `interface.name` = \"{if_name}\": a Linux interface name is 1 to 15 characters"));
    }
    let keepalive = raw
        .keepalive
        .unwrap_or(metalvpc_protocol::edge::DEFAULT_KEEPALIVE.as_secs());
    if !(1..=300).contains(&keepalive) {
        p.push(format!(
            "{f}: key `keepalive` = {keepalive}: must be 1 to 300 seconds"
        ));
    }
    let relay = p.ok(metalvpc_common::parse_relay_policy(
        path,
        "relay_policy",
        raw.relay_policy.as_deref(),
    ));
    let address6 = match raw.interface.address6.as_deref() {
        None => None,
        Some(a) => match a.parse::<ipnet::Ipv6Net>() {
            Ok(n) if !n.addr().is_unicast_link_local() && !n.addr().is_multicast() => Some(n),
            _ => {
                p.push(format!("{f}: key `interface.address6` = \"{a}\" is not an IPv6 unicast address in CIDR form; use a unique local address, example: address6 = \"fd10:10::2/64\""));
                None
            }
        },
    };
    let log_level = p.ok(metalvpc_common::parse_log_level(
        path,
        raw.log_level.as_deref(),
    ));
    let admin_key = match raw.admin_key.as_deref().map(AdminPublicKey::from_base64) {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            p.push(format!("{f}: key `admin_key` = \"{}\": not an administrator public key ({e}); use the output of `metalvpc-supernode admin-pubkey < admin.key`", raw.admin_key.as_deref().unwrap_or_default()));
            None
        }
    };
    if raw.membership_cache.is_some() && raw.admin_key.is_none() {
        p.push(format!("{f}: key `membership_cache` is set but `admin_key` is not: the cache keeps a signed membership, which only an edge with admin_key uses; set admin_key or remove membership_cache"));
    }
    let membership_cache = raw
        .membership_cache
        .as_deref()
        .map(|m| relative_to(path, m));
    let cipher = p.ok(metalvpc_common::parse_cipher(
        path,
        "cipher",
        raw.cipher.as_deref(),
    ));
    let management = management(path, &raw);
    let management_token = p
        .ok(metalvpc_common::management_token(
            path,
            &management,
            raw.management_token_file.as_deref(),
            source,
        ))
        .flatten();
    p.finish(path)?;
    let missing = || anyhow!("{f}: internal: a checked value is missing");
    Ok(Loaded {
        relay: relay.ok_or_else(missing)?,
        cipher: cipher.ok_or_else(missing)?,
        log_level: log_level.ok_or_else(missing)?,
        neighbor_suppression: raw.neighbor_suppression.unwrap_or(true),
        mss_clamp: raw.mss_clamp.unwrap_or(true),
        mtu_explicit: raw.interface.mtu.is_some(),
        join_secret,
        join_token,
        address6,
        management,
        management_token,
        community: raw.community,
        private_key: private_key.ok_or_else(missing)?,
        listen_port: raw.listen_port.unwrap_or(DEFAULT_LISTEN_PORT),
        keepalive: Duration::from_secs(keepalive),
        supernodes,
        if_name,
        address: address.ok_or_else(missing)?,
        mtu,
        mac: mac.ok_or_else(missing)?,
        admin_key,
        membership_cache,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use metalvpc_common::testing::{assert_refused, TempDir};
    use std::os::unix::fs::PermissionsExt;

    fn setup(name: &str) -> TempDir {
        let d = TempDir::new(&format!("edgecfg-{name}"));
        d.write_private("e.key", PrivateKey::generate().to_base64());
        d
    }

    fn base() -> String {
        format!(
            "community = \"prod\"\nprivate_key_file = \"e.key\"\n[[supernode]]\naddress = \"198.18.0.1:7654\"\n\
             public_key = \"{}\"\n[interface]\naddress = \"10.10.0.2/24\"\n",
            PrivateKey::generate().public_key().to_base64()
        )
    }

    #[test]
    fn defaults() {
        let d = setup("ok");
        let p = d.join("prod.toml");
        std::fs::write(&p, base()).unwrap();
        let c = load(&p).unwrap();
        assert_eq!(c.mtu, 1390);
        assert!(c.relay);
        assert_eq!(
            c.cipher,
            metalvpc_protocol::crypto::Cipher::ChaCha20Poly1305
        );
        std::fs::write(&p, format!("cipher = \"aes-256-gcm\"\n{}", base())).unwrap();
        assert_eq!(
            load(&p).unwrap().cipher,
            metalvpc_protocol::crypto::Cipher::Aes256Gcm
        );
        assert_eq!(c.listen_port, DEFAULT_LISTEN_PORT);
        assert_eq!(c.if_name, "mv-prod");
        assert_eq!(c.mac, c.private_key.public_key().derived_mac());
        assert_eq!(
            c.management,
            MgmtAddr::Unix("/run/metalvpc/prod.sock".into())
        );
        assert_eq!(
            default_if_name("a-very-long-community-name"),
            "mv-a-very-long-"
        );
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let d = setup("err");
        let p = d.join("prod.toml");
        let cases = [
            (format!("listn = 1\n{}", base()), "listn"),
            (
                base().replace("public_key = \"", "public_key = \"x"),
                "public_key",
            ),
            (
                base().replace("10.10.0.2/24", "10.10.0.2/33"),
                "interface.address",
            ),
            (
                base().replace("198.18.0.1:7654", "no-port"),
                "supernode[0].address",
            ),
            (
                base().replace("[interface]", "[interface]\nmtu = 100"),
                "interface.mtu",
            ),
            (
                base().replace("[interface]", "[interface]\nmac = \"01:00:5e:00:00:01\""),
                "interface.mac",
            ),
            (base().replace("e.key", "nope.key"), "private_key_file"),
            (
                format!("relay_policy = \"sometimes\"\n{}", base()),
                "relay_policy",
            ),
            (format!("admin_key = \"abc\"\n{}", base()), "admin_key"),
            (
                format!("membership_cache = \"m\"\n{}", base()),
                "membership_cache",
            ),
            (
                format!("cipher = \"aes\"\n{}", base()),
                "`cipher` = \"aes\"",
            ),
            (
                format!("management = \"0.0.0.0:9100\"\n{}", base()),
                "`management` = \"0.0.0.0:9100\" is not a loopback address",
            ),
            (
                format!(
                    "management = \"127.0.0.1:9100\"\nmanagement_token_file = \"no.token\"\n{}",
                    base()
                ),
                "`management_token_file`",
            ),
            (
                base().replace("community = \"prod\"", "community = \"prod east\""),
                "`community` = \"prod east\"",
            ),
            (
                base().replace("[interface]\naddress = \"10.10.0.2/24\"\n", ""),
                "interface.address",
            ),
        ];
        for (text, needle) in cases {
            std::fs::write(&p, &text).unwrap();
            assert_refused(load(&p), &text, &["prod.toml", needle]);
        }
    }

    #[test]
    fn an_enrolling_edge_needs_no_interface_table() {
        let d = setup("enrol");
        let secret = d.join("prod.join");
        std::fs::write(&secret, "a-long-random-join-secret").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let p = d.join("prod.toml");
        let text = format!("join_secret_file = \"prod.join\"\n{}", base())
            .replace("[interface]\naddress = \"10.10.0.2/24\"\n", "");
        std::fs::write(&p, text).unwrap();
        let c = load(&p).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(c.join_secret.is_some());
        assert_eq!(c.if_name, "mv-prod");
    }

    #[test]
    fn an_edge_enrols_with_a_token_file_and_a_bad_one_names_the_key_and_the_fix() {
        let d = setup("token");
        let token = d.join("prod.token");
        std::fs::write(&token, "0a1b2c3d4e5f.00112233445566778899aabbccddeeff\n").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        let p = d.join("prod.toml");
        let text = format!("join_token_file = \"prod.token\"\n{}", base())
            .replace("[interface]\naddress = \"10.10.0.2/24\"\n", "");
        std::fs::write(&p, &text).unwrap();
        let c = load(&p).unwrap_or_else(|e| panic!("{e:#}"));
        let t = c.join_token.as_ref().unwrap();
        assert_eq!(t.id, [0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f]);
        assert!(c.join_secret.is_none());
        assert!(unsigned_warning(&c).is_some_and(|w| w.contains("admin_key")));
        std::fs::write(&token, "not a token").unwrap();
        assert_refused(
            load(&p),
            &text,
            &["prod.toml", "join_token_file", "enrolled token create"],
        );
        std::fs::write(&token, "0a1b2c3d4e5f.00112233445566778899aabbccddeeff\n").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_refused(load(&p), &text, &["prod.token", "chmod 600"]);
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let d = setup("many");
        let p = d.join("prod.toml");
        let text = format!("keepalive = 0\n{}", base())
            .replace("10.10.0.2/24", "10.10.0.2")
            .replace("[interface]", "[interface]\nmtu = 70000")
            .replace("e.key", "missing.key");
        std::fs::write(&p, &text).unwrap();
        let keys = [
            "keepalive",
            "interface.address",
            "interface.mtu",
            "missing.key",
        ];
        assert_refused(load(&p), &text, &[&["4 problems"][..], &keys].concat());
    }
}
