//! Writes the seed corpora in fuzz/corpus/<target>/ from real encoded messages: packets a
//! simulated overlay really exchanged, every control message, frames, config files, requests.
//! Structured targets get a few byte strings of different shapes. Run from fuzz/:
//!   cargo run --example gen_corpus
//! Existing seeds are replaced. Keep the output small: it is committed.

use metalvpc_fuzz::{ip_frame, Overlay};
use metalvpc_protocol::control::{Control, NakCode, PeerRecord, Query};
use metalvpc_protocol::{Mac, PublicKey};
use std::path::Path;
use std::time::Duration;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn clear(target: &str) {
    let _ = std::fs::remove_dir_all(Path::new("corpus").join(target));
}

fn blobs(target: &str) {
    // Shapes, not content: all zeros, a ramp, and pseudo-random bytes of a few sizes.
    let mut x: u32 = 0x1234_5678;
    for (i, n) in [16usize, 64, 256, 1024].into_iter().enumerate() {
        write(target, &format!("zeros-{n}"), &vec![0; n]);
        write(
            target,
            &format!("ramp-{n}"),
            &(0..n).map(|b| b as u8).collect::<Vec<_>>(),
        );
        let r: Vec<u8> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect();
        write(target, &format!("random-{i}"), &r);
    }
}

fn record() -> PeerRecord {
    PeerRecord {
        id: 3,
        key: PublicKey([7; 32]),
        name: "node-a".into(),
        address: "10.77.0.1".parse().unwrap(),
        mac: Mac([2, 0, 0, 0, 0, 1]),
        instance: 42,
        allowed_cidrs: vec![
            "10.244.1.0/24".parse().unwrap(),
            "fd00::/64".parse().unwrap(),
        ],
        endpoints: vec![
            "198.18.0.5:7655".parse().unwrap(),
            "[2001:db8::5]:7655".parse().unwrap(),
        ],
        ipv6_router: false,
    }
}

fn main() {
    for t in [
        "wire_decode",
        "wire_roundtrip",
        "control_decode",
        "control_roundtrip",
        "eth_frame",
        "replay_window",
        "noise_handshake",
        "config_edge",
        "config_supernode",
        "mgmt_request",
        "mgmt_slow",
        "tcp_framing",
        "gro_split",
        "edge_datagrams",
        "supernode_datagrams",
        "session_mix",
        "edge_control",
        "member_frames",
    ] {
        clear(t);
    }

    // Real packets: run a small overlay and keep one of each kind it sent.
    let mut net = Overlay::new(true);
    for _ in 0..40 {
        net.advance(Duration::from_millis(250));
        net.deliver_all(512);
    }
    let (mac0, ip0) = net.identity(0);
    let (mac1, _) = net.identity(1);
    net.frame(0, &ip_frame(mac1, mac0, ip0, b"hello"));
    net.deliver_all(512);
    let mut kinds = std::collections::BTreeMap::new();
    for d in &net.history {
        kinds
            .entry((d.bytes[1], d.bytes.len().min(200) / 50))
            .or_insert(d.bytes.clone());
    }
    for ((ty, size), bytes) in &kinds {
        let name = format!("type{ty}-{size}");
        write("wire_decode", &name, bytes);
        write("edge_datagrams", &name, bytes);
        write("supernode_datagrams", &name, bytes);
        write("noise_handshake", &name, bytes);
    }

    let msgs = vec![
        Control::Register {
            max_version: 1,
            community: "prod".into(),
            address: "10.77.0.1".parse().unwrap(),
            mac: Mac([2, 1, 2, 3, 4, 5]),
            instance: 9,
            timestamp: 1_700_000_000_000_000,
            endpoints: vec!["192.168.1.4:7655".parse().unwrap()],
            cipher: 1,
            join: None,
        },
        Control::RegisterAck {
            id: 3,
            observed: "198.18.0.9:40000".parse().unwrap(),
            epoch: 12,
            interval: 10,
            relay: false,
            membership: 0,
            assigned: None,
        },
        Control::RegisterNak {
            code: NakCode::AddressNotOwned,
            message: "no".into(),
        },
        Control::SyncRequest,
        Control::PeerList {
            epoch: 5,
            chunk: 0,
            chunks: 2,
            records: vec![record(), record()],
        },
        Control::Lookup {
            txid: 8,
            query: Query::Mac(Mac([2, 0, 0, 0, 0, 1])),
        },
        Control::Lookup {
            txid: 9,
            query: Query::Ip("10.77.0.2".parse().unwrap()),
        },
        Control::Lookup {
            txid: 10,
            query: Query::Key(PublicKey([7; 32])),
        },
        Control::LookupReply {
            txid: 8,
            record: Some(record()),
        },
        Control::LookupReply {
            txid: 8,
            record: None,
        },
        Control::PeerNotify { record: record() },
        Control::Unknown(200),
    ];
    for (i, m) in msgs.iter().enumerate() {
        write("control_decode", &format!("msg-{i}"), &m.encode());
    }
    blobs("control_roundtrip");
    blobs("wire_roundtrip");
    blobs("replay_window");
    blobs("noise_handshake");
    blobs("edge_datagrams");
    blobs("supernode_datagrams");
    blobs("session_mix");
    blobs("edge_control");
    blobs("member_frames");

    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&mac0.0);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&mac0.0);
    arp.extend_from_slice(&ip0);
    arp.extend_from_slice(&[0; 10]);
    write("eth_frame", "arp", &arp);
    write("eth_frame", "ipv4", &ip_frame(mac1, mac0, ip0, b"payload"));
    let mut v6 = ip_frame(mac1, mac0, ip0, &[0; 40]);
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    v6[14] = 0x60;
    v6[22..38].copy_from_slice(&"fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    write("eth_frame", "ipv6", &v6);
    let mut vlan = ip_frame(mac1, mac0, ip0, b"");
    vlan[12..14].copy_from_slice(&[0x81, 0x00]);
    write("eth_frame", "vlan", &vlan);

    let pk = metalvpc_fuzz::key(1).public_key().to_base64();
    write(
        "config_edge",
        "full.toml",
        format!(
            "community = \"prod\"\nprivate_key_file = \"prod.key\"\nlisten_port = 7655\n\
             management = \"/run/metalvpc/prod.sock\"\nkeepalive = 5\nrelay_policy = \"allow\"\n\n\
             [[supernode]]\naddress = \"198.18.0.1:7654\"\npublic_key = \"{pk}\"\n\n\
             [[supernode]]\naddress = \"[2001:db8::1]:7654\"\npublic_key = \"{pk}\"\n\n\
             [interface]\nname = \"mv-prod\"\naddress = \"10.10.0.2/24\"\nmtu = 1390\nmac = \"02:12:34:56:78:9a\"\n"
        )
        .as_bytes(),
    );
    write(
        "config_edge",
        "minimal.toml",
        format!(
            "community = \"p\"\nprivate_key_file = \"k\"\n[[supernode]]\naddress = \"198.18.0.1:7654\"\n\
             public_key = \"{pk}\"\n[interface]\naddress = \"10.10.0.2/24\"\n"
        )
        .as_bytes(),
    );
    write(
        "config_supernode",
        "inline.toml",
        format!(
            "listen = \"0.0.0.0:7654\"\nprivate_key_file = \"sn.key\"\nregister_interval = 10\n\
             management = \"127.0.0.1:9000\"\n\n[[community]]\nname = \"prod\"\nnetwork = \"10.10.0.0/24\"\n\
             relay_policy = \"direct-only\"\n\n[[community.node]]\nname = \"a\"\npublic_key = \"{pk}\"\n\
             address = \"10.10.0.1\"\nallowed_cidrs = [\"10.244.1.0/24\", \"fd00::/64\"]\n"
        )
        .as_bytes(),
    );
    write(
        "config_supernode",
        "directory.toml",
        format!(
            "listen = \"[::]:7654\"\nprivate_key_file = \"sn.key\"\ncommunity_dir = \"c.d\"\n\
             \n#---\nname = \"staging\"\nnetwork = \"192.168.50.0/24\"\n[[node]]\npublic_key = \"{pk}\"\n\
             address = \"192.168.50.9\"\n\n#---\nname = \"v6\"\nnetwork = \"fd00:1::/64\"\n[[node]]\n\
             public_key = \"{pk}\"\naddress = \"fd00:1::9\"\n"
        )
        .as_bytes(),
    );
    for (i, r) in [
        &b"GET /status HTTP/1.0\r\n\r\n"[..],
        b"GET /status?json HTTP/1.0\r\nHost: x\r\n\r\n",
        b"POST /status HTTP/1.1\r\n\r\n",
        b"GET /\n\n",
    ]
    .iter()
    .enumerate()
    {
        write("mgmt_request", &format!("req-{i}"), r);
        // Chunk sizes first (any bytes), then the request.
        write("mgmt_slow", &format!("req-{i}"), &[&[1u8, 3, 2, 7, 0][..], r].concat());
    }
    write(
        "mgmt_slow",
        "token",
        b"\x01\x02GET /metrics HTTP/1.0\r\nAuthorization: Bearer fuzz-token-0123456789\r\n\r\n",
    );
    // Framed streams: two frames and half of a third, a zero length.
    let mut framed = vec![5, 0, 1, 0];
    for f in [&b"hello"[..], &[7u8; 300], b"partial"] {
        framed.extend_from_slice(&(f.len() as u16).to_be_bytes());
        framed.extend_from_slice(f);
    }
    framed.truncate(framed.len() - 3);
    write("tcp_framing", "frames", &framed);
    write("tcp_framing", "zero", &[1, 0, 0, 2, b'h', b'i', 0, 0, 0, 1, 9]);
    // (n, seg, full): a 64 KiB batch of 1400-byte segments, empty, no segment size.
    write("gro_split", "gso-1400", &[0xff, 0xff, 0x78, 0x05, 0]);
    write("gro_split", "empty", &[0, 0, 0x78, 0x05, 0]);
    write("gro_split", "no-seg", &[0x10, 0x02, 0, 0, 0]);
}
