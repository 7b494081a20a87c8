//! The edge's TOML configuration (one file per community): loading, validation, defaults,
//! and errors that name the file, the key and the fix.

use anyhow::{anyhow, bail, Result};
use ipnet::Ipv4Net;
use metalvpc_common::{load_private_key, parse_public_key, relative_to, MgmtAddr};
use metalvpc_protocol::{Mac, PrivateKey, PublicKey, DEFAULT_MTU};
use serde::Deserialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
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
    keepalive: Option<u64>,
    relay_policy: Option<String>,
    cipher: Option<String>,
    #[serde(default)]
    supernode: Vec<RawSupernode>,
    interface: RawInterface,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSupernode {
    address: String,
    public_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: Option<String>,
    address: String,
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
    /// TAP MAC.
    pub mac: Mac,
    /// May use supernode relays.
    pub relay: bool,
    /// Data-plane cipher (must match the community's on the supernode).
    pub cipher: metalvpc_protocol::crypto::Cipher,
}

fn read(path: &Path) -> Result<RawConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("{}: cannot read the config file: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow!("{}: {}", path.display(), e.to_string().trim_end()))
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

/// The management endpoint only (for `status`): no key file needed.
pub fn load_management(path: &Path) -> Result<MgmtAddr> {
    let raw = read(path)?;
    Ok(management(path, &raw))
}

fn management(path: &Path, raw: &RawConfig) -> MgmtAddr {
    let default = format!("/run/metalvpc/{}.sock", raw.community);
    MgmtAddr::parse(path, raw.management.as_deref().unwrap_or(&default))
}

/// Loads and validates everything, including the private key file.
pub fn load(path: &Path) -> Result<Loaded> {
    let raw = read(path)?;
    let f = path.display();
    if raw.community.is_empty() || raw.community.len() > 64 {
        bail!("{f}: key `community` must be 1 to 64 characters: the name of a community on the supernode");
    }
    if raw.supernode.is_empty() {
        bail!("{f}: no supernode: add at least one [[supernode]] table with `address` (\"host:port\") and `public_key`");
    }
    let mut supernodes = Vec::new();
    for (i, s) in raw.supernode.iter().enumerate() {
        let addr = s
            .address
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| anyhow!("{f}: key `supernode[{i}].address` = \"{}\" is not a reachable host:port; example: address = \"203.0.113.10:7654\"", s.address))?;
        let key = parse_public_key(path, &format!("supernode[{i}].public_key"), &s.public_key)?;
        supernodes.push((addr, key));
    }
    let address: Ipv4Net = raw.interface.address.parse().map_err(|_| {
        anyhow!(
            "{f}: key `interface.address` = \"{}\" is not an IPv4 address in CIDR form; example: address = \"10.10.0.2/24\"",
            raw.interface.address
        )
    })?;
    // Over an IPv6 underlay the outer header is 20 bytes larger.
    let default_mtu = if supernodes.iter().all(|(a, _)| a.is_ipv6()) {
        DEFAULT_MTU - 20
    } else {
        DEFAULT_MTU
    };
    let mtu = raw.interface.mtu.unwrap_or(default_mtu as u32);
    if !(576..=9000).contains(&mtu) {
        bail!("{f}: key `interface.mtu` = {mtu}: must be 576 to 9000 (default {DEFAULT_MTU}, for a 1500-byte underlay)");
    }
    let private_key = load_private_key(path, &relative_to(path, &raw.private_key_file))?;
    let mac = match &raw.interface.mac {
        None => private_key.public_key().derived_mac(),
        Some(m) => {
            let mac = Mac::parse(m).ok_or_else(|| anyhow!("{f}: key `interface.mac` = \"{m}\" is not a MAC address; example: mac = \"02:12:34:56:78:9a\""))?;
            if mac.is_group() || mac.0 == [0; 6] {
                bail!("{f}: key `interface.mac` = \"{m}\" is a multicast or zero address; use a unicast one such as 02:xx:xx:xx:xx:xx");
            }
            mac
        }
    };
    let if_name = raw
        .interface
        .name
        .clone()
        .unwrap_or_else(|| default_if_name(&raw.community));
    if if_name.is_empty() || if_name.len() > 15 {
        bail!("{f}: key `interface.name` = \"{if_name}\": a Linux interface name is 1 to 15 characters");
    }
    let keepalive = raw
        .keepalive
        .unwrap_or(metalvpc_protocol::edge::DEFAULT_KEEPALIVE.as_secs());
    if !(1..=300).contains(&keepalive) {
        bail!("{f}: key `keepalive` = {keepalive}: must be 1 to 300 seconds");
    }
    let relay =
        metalvpc_common::parse_relay_policy(path, "relay_policy", raw.relay_policy.as_deref())?;
    let cipher = metalvpc_common::parse_cipher(path, "cipher", raw.cipher.as_deref())?;
    Ok(Loaded {
        relay,
        cipher,
        management: management(path, &raw),
        community: raw.community,
        private_key,
        listen_port: raw.listen_port.unwrap_or(DEFAULT_LISTEN_PORT),
        keepalive: Duration::from_secs(keepalive),
        supernodes,
        if_name,
        address,
        mtu,
        mac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn setup(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("mvpc-edgecfg-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let key = d.join("e.key");
        std::fs::write(&key, PrivateKey::generate().to_base64()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        Dir(d)
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
        let p = d.0.join("prod.toml");
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
        let p = d.0.join("prod.toml");
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
            (
                format!("cipher = \"aes\"\n{}", base()),
                "`cipher` = \"aes\"",
            ),
        ];
        for (text, needle) in cases {
            std::fs::write(&p, &text).unwrap();
            let err = format!(
                "{:#}",
                load(&p).err().unwrap_or_else(|| panic!("accepted: {text}"))
            );
            assert!(err.contains("prod.toml"), "{err}");
            assert!(err.contains(needle), "expected {needle:?} in: {err}");
        }
    }
}
