//! Enrolment (issue 13): join-secret and token proofs, token parsing, Registers with join
//! fields, enrolment store files through the supernode's config loader, and the enrolment
//! handshake itself. The first byte picks the part; never a panic, and:
//! - a proof verifies only for the exact (secret, id, key, community, timestamp) it was made of;
//! - what decodes re-encodes to itself;
//! - a store file that loads is within its caps, and every error names the store file;
//! - an edge is admitted only with the token the supernode holds, unexpired, with uses left.
#![no_main]
use anyhow::{anyhow, Result};
use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use metalvpc_fuzz::{arb_join, key, underlay};
use metalvpc_protocol::control::{
    join_proof, proofs_equal, token_key, token_proof, Control, JoinToken, TOKEN_ID_LEN,
};
use metalvpc_protocol::edge::{Edge, EdgeConfig};
use metalvpc_protocol::supernode::{
    CommunityConfig, Enrolment, Supernode, SupernodeConfig, Token, MAX_TOKENS,
};
use metalvpc_protocol::{Output, PrivateKey, PublicKey, Rng};
use metalvpc_supernode::config::{load_from_str, Source};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The store file comes from the input; nothing else exists.
struct Store(Vec<u8>);

impl Source for Store {
    fn toml_files(&self, _: &Path) -> std::io::Result<Vec<PathBuf>> {
        Err(std::io::ErrorKind::NotFound.into())
    }
    fn read_text(&self, path: &Path) -> Result<String> {
        Err(anyhow!("{}: cannot read the config file", path.display()))
    }
    fn private_key(&self, _: &Path, _: &Path) -> Result<PrivateKey> {
        Ok(key(10))
    }
    fn secret(&self, _: &Path) -> std::io::Result<(Vec<u8>, u32)> {
        Err(std::io::ErrorKind::NotFound.into())
    }
    fn read_bounded(&self, path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
        assert_eq!(path, Path::new("/fuzz/state/prod.enrolled.toml"));
        Ok(self.0[..self.0.len().min(limit as usize)].to_vec())
    }
}

const SUPERNODE: &str = "listen = \"0.0.0.0:7654\"\nprivate_key_file = \"k\"\nstate_dir = \"state\"\n\
[[community]]\nname = \"prod\"\nnetwork = \"10.10.0.0/24\"\naddress_pool = \"10.10.0.128/25\"\n";

fn proofs(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let secret: Vec<u8> = u.arbitrary()?;
    let key = PublicKey(u.arbitrary()?);
    let community: String = u.arbitrary()?;
    let ts: u64 = u.arbitrary()?;
    let id: [u8; TOKEN_ID_LEN] = u.arbitrary()?;
    let flip: usize = u.arbitrary()?;
    let p = join_proof(&secret, &key, &community, ts);
    assert!(proofs_equal(&p, &join_proof(&secret, &key, &community, ts)));
    assert!(!proofs_equal(&p, &join_proof(&secret, &key, &community, ts ^ 1)));
    let mut q = p;
    q[flip % 32] ^= 1 << (flip % 8);
    assert!(!proofs_equal(&p, &q));
    let k = token_key(&secret);
    let t = token_proof(&k, &id, &key, &community, ts);
    let mut other = id;
    other[flip % TOKEN_ID_LEN] ^= 1;
    assert!(!proofs_equal(&t, &token_proof(&k, &other, &key, &community, ts)));
    let text: String = u.arbitrary()?;
    if let Ok(tok) = JoinToken::parse(&text) {
        let (_, secret) = text.trim().split_once('.').expect("parsed");
        assert_eq!(tok.key, token_key(secret.as_bytes()));
    }
    Ok(())
}

fn register(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let m = Control::Register {
        max_version: u.arbitrary()?,
        community: "prod".into(),
        address: std::net::Ipv4Addr::UNSPECIFIED.into(),
        mac: metalvpc_protocol::Mac(u.arbitrary()?),
        instance: u.arbitrary()?,
        timestamp: u.arbitrary()?,
        endpoints: Vec::new(),
        cipher: u.arbitrary()?,
        join: arb_join(u)?,
    };
    assert_eq!(Control::decode(&m.encode()), Ok(m));
    let raw: Vec<u8> = u.arbitrary()?;
    if let Ok(m) = Control::decode(&raw) {
        assert_eq!(Control::decode(&m.encode()), Ok(m));
    }
    Ok(())
}

fn store(data: &[u8]) {
    match load_from_str(Path::new("/fuzz/sn.toml"), SUPERNODE, &Store(data.to_vec())) {
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(msg.contains("/fuzz/state/prod.enrolled.toml"), "{msg}");
        }
        Ok(c) => {
            let e = c.core.communities[0].enrolment.as_ref().expect("a pool");
            assert!(e.tokens.len() <= MAX_TOKENS);
        }
    }
}

fn handshake(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let now = Instant::now();
    let unix = 1_700_000_000;
    let real = JoinToken {
        id: [7; TOKEN_ID_LEN],
        key: token_key(b"the token's secret, 16+"),
    };
    let uses: u32 = u.int_in_range(0..=2)?;
    let expires: Option<u64> = if u.arbitrary()? {
        Some(unix + u.int_in_range(0..=20)?)
    } else {
        None
    };
    let mut enrolment = Enrolment::new(None, "10.10.0.128/30".parse().unwrap());
    enrolment.tokens.push(Token {
        id: real.id,
        key: real.key,
        expires,
        uses,
        address: None,
    });
    let sn_key = key(1);
    let mut sn = Supernode::new(
        SupernodeConfig {
            private_key: sn_key.clone(),
            communities: vec![CommunityConfig {
                name: "prod".into(),
                network: "10.10.0.0/24".parse().unwrap(),
                nodes: Vec::new(),
                relay: true,
                signed: None,
                enrolment: Some(enrolment),
                cipher: Default::default(),
            }],
            register_interval: 10,
        },
        now,
        Rng::from_seed([1; 32]),
    );
    sn.set_wall_clock(now, unix);
    let token = if u.arbitrary()? {
        real.clone()
    } else {
        JoinToken {
            id: if u.arbitrary()? { real.id } else { u.arbitrary()? },
            key: u.arbitrary()?,
        }
    };
    let sn_addr = underlay(1, 7654);
    let edge_addr = underlay(11, 7655);
    let mut cfg = EdgeConfig::new(
        "prod",
        key(20),
        std::net::Ipv4Addr::UNSPECIFIED.into(),
        vec![(sn_addr, sn_key.public_key())],
    );
    cfg.join_token = Some(token.clone());
    let mut edge = Edge::new(cfg, now, 1_700_000_000_000_000, Rng::from_seed([2; 32]));
    let mut out = Output::default();
    let mut t = now;
    for _ in 0..40 {
        t += Duration::from_millis(500);
        edge.handle_timeout(t, &mut out);
        let to_sn: Vec<Vec<u8>> = out.transmits.iter().map(|x| out.bytes(x).to_vec()).collect();
        out.clear();
        for mut p in to_sn {
            sn.handle_udp(t, edge_addr, &mut p, &mut out);
        }
        sn.handle_timeout(t, &mut out);
        let to_edge: Vec<Vec<u8>> = out.transmits.iter().map(|x| out.bytes(x).to_vec()).collect();
        out.clear();
        for mut p in to_edge {
            edge.handle_udp(t, sn_addr, &mut p, &mut out);
        }
        out.clear();
    }
    if edge.is_registered() {
        assert_eq!(token, real, "admitted with a token the supernode does not hold");
        assert!(uses > 0, "admitted with a used-up token");
        // Expiry is checked at the handshake: the first one is at most a second in.
        assert!(expires.is_none_or(|e| e > unix), "admitted with an expired token");
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    match which % 4 {
        0 => {
            let _ = proofs(&mut u);
        }
        1 => {
            let _ = register(&mut u);
        }
        2 => store(rest),
        _ => {
            let _ = handshake(&mut u);
        }
    }
});
