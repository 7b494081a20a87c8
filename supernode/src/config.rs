//! The supernode's TOML configuration: loading, validation, and errors that name the file,
//! the key and the fix.

use anyhow::{anyhow, bail, Result};
use ipnet::IpNet;
use metalvpc_common::{load_private_key, parse_public_key, relative_to, MgmtAddr};
use metalvpc_protocol::supernode::{
    CommunityConfig, NodeEntry, SupernodeConfig, DEFAULT_REGISTER_INTERVAL,
};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Default management socket.
pub const DEFAULT_MANAGEMENT: &str = "/run/metalvpc/supernode.sock";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    private_key_file: String,
    management: Option<String>,
    community_dir: Option<String>,
    register_interval: Option<u16>,
    #[serde(default)]
    community: Vec<RawCommunity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommunity {
    name: String,
    network: String,
    relay_policy: Option<String>,
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
}

/// A loaded and checked configuration.
pub struct Loaded {
    /// UDP listen address.
    pub listen: SocketAddr,
    /// Management endpoint.
    pub management: MgmtAddr,
    /// What the core needs.
    pub core: SupernodeConfig,
}

fn read_toml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("{}: cannot read the config file: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow!("{}: {}", path.display(), e.to_string().trim_end()))
}

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
pub fn load_meta(path: &Path) -> Result<(MgmtAddr, Option<SocketAddr>)> {
    let raw: RawConfig = read_toml(path)?;
    let mgmt = MgmtAddr::parse(
        path,
        raw.management.as_deref().unwrap_or(DEFAULT_MANAGEMENT),
    );
    Ok((mgmt, raw.listen.parse().ok()))
}

/// Loads and validates everything, including the private key.
pub fn load(path: &Path) -> Result<Loaded> {
    let raw: RawConfig = read_toml(path)?;
    let f = path.display();
    let listen: SocketAddr = raw.listen.parse().map_err(|_| {
        anyhow!(
            "{f}: key `listen` = \"{}\" is not an address:port; example: listen = \"0.0.0.0:7654\"",
            raw.listen
        )
    })?;
    let mut communities = Vec::new();
    for (i, c) in raw.community.into_iter().enumerate() {
        communities.push(check_community(
            path,
            &format!("community[{i}]"),
            "community.node",
            c,
        )?);
    }
    if let Some(dir) = &raw.community_dir {
        let dir = relative_to(path, dir);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| {
                anyhow!(
                    "{f}: key `community_dir` = {}: cannot read the directory: {e}",
                    dir.display()
                )
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for file in files {
            let c: RawCommunity = read_toml(&file)?;
            communities.push(check_community(&file, "", "node", c)?);
        }
    }
    if communities.is_empty() {
        bail!("{f}: no communities: add a [[community]] table (name, network, [[community.node]] entries) or set `community_dir`");
    }
    let mut names = HashSet::new();
    for c in &communities {
        if !names.insert(c.name.clone()) {
            bail!(
                "{f}: community name '{}' is defined twice; each community needs its own name",
                c.name
            );
        }
    }
    let key_path = relative_to(path, &raw.private_key_file);
    let private_key = load_private_key(path, &key_path)?;
    let management = MgmtAddr::parse(
        path,
        raw.management.as_deref().unwrap_or(DEFAULT_MANAGEMENT),
    );
    let register_interval = raw.register_interval.unwrap_or(DEFAULT_REGISTER_INTERVAL);
    if !(1..=300).contains(&register_interval) {
        bail!("{f}: key `register_interval` = {register_interval}: must be 1 to 300 seconds (default {DEFAULT_REGISTER_INTERVAL})");
    }
    Ok(Loaded {
        listen,
        management,
        core: SupernodeConfig {
            private_key,
            communities,
            register_interval,
        },
    })
}

fn check_community(
    file: &Path,
    prefix: &str,
    node_table: &str,
    c: RawCommunity,
) -> Result<CommunityConfig> {
    let f = file.display();
    let at = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    if c.name.is_empty()
        || c.name.len() > 64
        || !c
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
    {
        bail!(
            "{f}: key `{}` = \"{}\": a community name is 1 to 64 letters, digits, '-', '_' or '.'",
            at("name"),
            c.name
        );
    }
    let network: IpNet = c.network.parse().map_err(|_| {
        anyhow!(
            "{f}: key `{}` = \"{}\" is not a CIDR; example: network = \"10.10.0.0/24\"",
            at("network"),
            c.network
        )
    })?;
    if network != network.trunc() {
        bail!(
            "{f}: key `{}` = \"{}\" has host bits set; did you mean \"{}\"?",
            at("network"),
            c.network,
            network.trunc()
        );
    }
    if !is_private(&network) {
        bail!(
            "{f}: key `{}` = \"{network}\" is not a private range; use RFC 1918 (10.0.0.0/8, 172.16.0.0/12, \
             192.168.0.0/16) so overlay addresses never collide with the Internet",
            at("network")
        );
    }
    let mut keys = HashSet::new();
    let mut addrs = HashSet::new();
    let mut nodes = Vec::new();
    for (i, n) in c.node.into_iter().enumerate() {
        let here = format!(
            "{node_table}[{i}]{}",
            n.name
                .as_deref()
                .map(|x| format!(" ({x})"))
                .unwrap_or_default()
        );
        let key = parse_public_key(file, &format!("{here}.public_key"), &n.public_key)?;
        if !keys.insert(key) {
            bail!("{f}: `{here}.public_key`: this key is listed twice in community '{}'; each node needs its own key", c.name);
        }
        let address: IpAddr = n.address.parse().map_err(|_| {
            anyhow!("{f}: key `{here}.address` = \"{}\" is not an IP address; example: address = \"10.10.0.2\"", n.address)
        })?;
        if !network.contains(&address) {
            bail!(
                "{f}: key `{here}.address` = \"{address}\" is outside the community's `network` {network}; \
                 pick an address inside it"
            );
        }
        if let (IpNet::V4(v4), IpAddr::V4(a)) = (network, address) {
            if v4.prefix_len() < 31 && (a == v4.network() || a == v4.broadcast()) {
                bail!("{f}: key `{here}.address` = \"{address}\" is the network or broadcast address of {network}; pick a host address");
            }
        }
        if !addrs.insert(address) {
            bail!("{f}: key `{here}.address` = \"{address}\" is given to two nodes; each node needs its own address");
        }
        let mut allowed_cidrs = Vec::new();
        for cidr in &n.allowed_cidrs {
            let net: IpNet = cidr.parse().map_err(|_| {
                anyhow!("{f}: key `{here}.allowed_cidrs` entry \"{cidr}\" is not a CIDR; example: allowed_cidrs = [\"10.244.1.0/24\"]")
            })?;
            allowed_cidrs.push(net.trunc());
        }
        if allowed_cidrs.len() > metalvpc_protocol::control::MAX_ALLOWED_CIDRS {
            bail!(
                "{f}: key `{here}.allowed_cidrs` has more than {} entries",
                metalvpc_protocol::control::MAX_ALLOWED_CIDRS
            );
        }
        nodes.push(NodeEntry {
            key,
            name: n.name.unwrap_or_default(),
            address,
            allowed_cidrs,
        });
    }
    let relay =
        metalvpc_common::parse_relay_policy(file, &at("relay_policy"), c.relay_policy.as_deref())?;
    let cipher = metalvpc_common::parse_cipher(file, &at("cipher"), c.cipher.as_deref())?;
    Ok(CommunityConfig {
        name: c.name,
        network,
        nodes,
        relay,
        cipher,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use metalvpc_protocol::PrivateKey;
    use std::os::unix::fs::PermissionsExt;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn setup(name: &str) -> (Dir, String) {
        let d = std::env::temp_dir().join(format!("mvpc-sncfg-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let key = d.join("sn.key");
        std::fs::write(&key, PrivateKey::generate().to_base64()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        (Dir(d), PrivateKey::generate().public_key().to_base64())
    }

    fn write(d: &Dir, name: &str, text: &str) -> PathBuf {
        let p = d.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
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
        std::fs::create_dir_all(d.0.join("communities.d")).unwrap();
        write(
            &d,
            "communities.d/staging.toml",
            &format!("name = \"staging\"\nnetwork = \"192.168.50.0/24\"\n[[node]]\npublic_key = \"{pk}\"\naddress = \"192.168.50.9\"\nallowed_cidrs = [\"10.244.0.0/16\"]\n"),
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
        assert_eq!(c.management, MgmtAddr::Unix(DEFAULT_MANAGEMENT.into()));
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
            let p = write(&d, "sn.toml", &text);
            let err = format!(
                "{:#}",
                load(&p).err().unwrap_or_else(|| panic!("accepted: {text}"))
            );
            assert!(err.contains("sn.toml"), "{err}");
            assert!(err.contains(needle), "expected {needle:?} in: {err}");
        }
        // A broken file in the community directory is named too.
        std::fs::create_dir_all(d.0.join("c.d")).unwrap();
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
        let err = format!("{:#}", load(&p).err().unwrap());
        assert!(err.contains("bad.toml") && err.contains("bogus"), "{err}");
    }
}
