//! Control messages between an edge and a supernode. They travel only inside encrypted
//! payloads: the handshake payloads and data packets of an edge↔supernode session.
//!
//! Each message is one type byte followed by its fields in order (see `docs/protocol.md`).
//! Compatibility: decoders ignore bytes after the fields they know, so a later version may
//! append fields; an unknown message type decodes to [`Control::Unknown`] and is ignored.

use crate::keys::{Mac, PublicKey};
use crate::wire::{Reader, Truncated, Writer};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// Most endpoints an edge may announce.
pub const MAX_ENDPOINTS: usize = 8;
/// Most extra CIDRs a node may own.
pub const MAX_ALLOWED_CIDRS: usize = 64;
/// Most peer records one `PeerList` message may hold.
pub const RECORDS_PER_LIST: usize = 32;
/// A supernode fills a `PeerList` chunk up to about this many bytes, to stay within one
/// underlay datagram.
pub const LIST_CHUNK_BYTES: usize = 1000;
/// Most keys one `PeerRemoved` message may carry (32 keys: about 1 KB).
pub const KEYS_PER_REMOVAL: usize = 32;

/// Why a supernode refused a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum NakCode {
    /// The key is not a member of the community.
    NotMember = 1,
    /// The key is a member, but the claimed address belongs to another node or to none.
    AddressNotOwned = 2,
    /// The community does not exist on this supernode.
    UnknownCommunity = 3,
    /// Another registered member already uses the claimed MAC.
    MacInUse = 4,
    /// The edge is configured with another data-plane cipher than the community.
    CipherMismatch = 5,
    /// An enrolment held back by the per-source or per-community bound: try again later.
    /// (An older edge reads it as `Other`.)
    RateLimited = 6,
    /// Anything else.
    Other = 255,
}

impl NakCode {
    fn from_u8(v: u8) -> NakCode {
        match v {
            1 => NakCode::NotMember,
            2 => NakCode::AddressNotOwned,
            3 => NakCode::UnknownCommunity,
            4 => NakCode::MacInUse,
            5 => NakCode::CipherMismatch,
            6 => NakCode::RateLimited,
            _ => NakCode::Other,
        }
    }
}

/// What a supernode tells edges about a registered member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    /// The member's id at this supernode (used to address relayed packets).
    pub id: u32,
    /// Static public key.
    pub key: PublicKey,
    /// Human name from the community file (may be empty).
    pub name: String,
    /// Overlay address from the community file.
    pub address: IpAddr,
    /// The member's overlay MAC.
    pub mac: Mac,
    /// Random number chosen at each start of the member's edge; a change means it restarted.
    pub instance: u64,
    /// Extra source ranges the member may send from.
    pub allowed_cidrs: Vec<IpNet>,
    /// Underlay endpoints: the one the supernode observed first, then the ones the edge announced.
    pub endpoints: Vec<SocketAddr>,
    /// The community lets this member send IPv6 router advertisements and redirects
    /// (`ipv6_router`). Appended after the records of a message (one flags byte per record),
    /// so that older edges, which ignore trailing bytes, still read it; absent means false.
    pub ipv6_router: bool,
}

/// What a lookup asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Query {
    /// By overlay MAC.
    Mac(Mac),
    /// By overlay IP address.
    Ip(IpAddr),
    /// By static key.
    Key(PublicKey),
}

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Edge → supernode: join (in the handshake payload) or refresh (in data).
    Register {
        /// Highest protocol version the edge speaks.
        max_version: u8,
        /// Community name.
        community: String,
        /// The overlay address the edge claims.
        address: IpAddr,
        /// The edge's overlay MAC.
        mac: Mac,
        /// Random per process start.
        instance: u64,
        /// Microseconds since the Unix epoch, strictly increasing per key: a replayed
        /// handshake carries an old one and is ignored.
        timestamp: u64,
        /// Local underlay endpoints (for peers on the same LAN).
        endpoints: Vec<SocketAddr>,
        /// The data-plane cipher the edge is configured with ([`crate::crypto::Cipher::code`]);
        /// appended in a later revision, so an edge that does not send it means ChaCha20-Poly1305 (1).
        cipher: u8,
        /// Enrolment: proof that the edge holds the community's join secret ([`join_proof`])
        /// or an enrolment token ([`token_proof`]); with `address` unspecified it asks for an
        /// address from the pool. Appended field: a kind byte (0 none, 1 secret, 2 token),
        /// then the proof (a token's id first). A supernode that knows only kind 1 reads kind 2
        /// as no enrolment.
        join: Option<Join>,
    },
    /// Supernode → edge: registration accepted.
    RegisterAck {
        /// The edge's id at this supernode.
        id: u32,
        /// The edge's endpoint as the supernode saw it.
        observed: SocketAddr,
        /// The community's membership version; a differing one means "ask for the list".
        epoch: u64,
        /// Seconds until the edge should register again.
        interval: u16,
        /// Whether this supernode relays for the community (its `relay_policy`). Appended
        /// field: an older supernode that omits it is taken to relay.
        relay: bool,
        /// Version of the signed membership the supernode carries for the community (0: none).
        /// Appended field: absent means 0. An edge with `admin_key` that has an older one asks
        /// with [`Control::SignedListRequest`].
        membership: u64,
        /// The edge's address and prefix length, when it registered without one (enrolment).
        /// Appended field: a presence byte, then an IP and a u8.
        assigned: Option<(IpAddr, u8)>,
    },
    /// Supernode → edge: registration refused.
    RegisterNak {
        /// Why.
        code: NakCode,
        /// A sentence for the operator.
        message: String,
    },
    /// Edge → supernode: send me the member list.
    SyncRequest,
    /// Supernode → edge: one chunk of the member list.
    PeerList {
        /// Membership version this list belongs to.
        epoch: u64,
        /// Chunk number, from 0.
        chunk: u16,
        /// Number of chunks.
        chunks: u16,
        /// Records in this chunk.
        records: Vec<PeerRecord>,
    },
    /// Edge → supernode: who is this? Also asks the supernode to tell the target about us.
    Lookup {
        /// Matches the reply.
        txid: u32,
        /// What we look for.
        query: Query,
    },
    /// Supernode → edge: the answer.
    LookupReply {
        /// From the lookup.
        txid: u32,
        /// The member, if registered.
        record: Option<PeerRecord>,
    },
    /// Supernode → edge: this member is trying to reach you (send to its endpoints now).
    PeerNotify {
        /// The member.
        record: PeerRecord,
    },
    /// Supernode → edge: these keys are no longer members of the community (the operator
    /// removed them and reloaded the supernode). Tear down their sessions now. Unlike a peer
    /// missing from a `PeerList` (not registered at the moment), this is a revocation.
    PeerRemoved {
        /// The removed members' static keys (at most [`KEYS_PER_REMOVAL`]).
        keys: Vec<PublicKey>,
    },
    /// Edge → supernode: send me the community's signed membership.
    SignedListRequest,
    /// Supernode → edge: one chunk of the community's signed membership (the bytes the
    /// administrator's `sign` wrote, cut into [`crate::membership::CHUNK_BYTES`] pieces).
    SignedList {
        /// Version of the list (as signed; the edge trusts only the signature).
        version: u64,
        /// Chunk number, from 0.
        chunk: u16,
        /// Number of chunks.
        chunks: u16,
        /// The bytes of this chunk (at most [`MAX_SIGNED_CHUNK`]).
        data: Vec<u8>,
    },
    /// Supernode → edge: what changed in the member list between epochs `from` and `epoch`
    /// (a member registered, moved or restarted; members whose registration ended). An edge
    /// applies it only if its copy is at `from`; otherwise it asks for the whole list
    /// (`SyncRequest`). This keeps a registration wave linear in bytes instead of quadratic.
    PeerUpdate {
        /// The epoch this change applies to.
        from: u64,
        /// The epoch after it.
        epoch: u64,
        /// Members added or changed (at most [`RECORDS_PER_LIST`]).
        records: Vec<PeerRecord>,
        /// Members no longer registered (at most [`KEYS_PER_REMOVAL`]). Unlike
        /// `PeerRemoved`, this is no revocation: the supernode just cannot relay to them.
        gone: Vec<PublicKey>,
    },
    /// Supernode → edge: a packet of this session came from an address the supernode has not
    /// proven for you; answer with [`Control::PathResponse`] (from wherever you are). The
    /// supernode moves the member's endpoint only when the answer comes from the new address:
    /// return-path proof, so that a member cannot point the supernode at a spoofed source.
    PathChallenge {
        /// Random; echoed.
        nonce: u64,
    },
    /// Edge → supernode: the answer to a [`Control::PathChallenge`].
    PathResponse {
        /// The challenge's nonce.
        nonce: u64,
    },
    /// A type this build does not know; ignored.
    Unknown(u8),
}

/// Most bytes one `SignedList` chunk may carry.
pub const MAX_SIGNED_CHUNK: usize = 1024;

const T_REGISTER: u8 = 1;
const T_ACK: u8 = 2;
const T_NAK: u8 = 3;
const T_SYNC: u8 = 4;
const T_LIST: u8 = 5;
const T_LOOKUP: u8 = 6;
const T_LOOKUP_REPLY: u8 = 7;
const T_NOTIFY: u8 = 8;
const T_REMOVED: u8 = 9;
const T_SIGNED_REQUEST: u8 = 10;
const T_SIGNED_LIST: u8 = 11;
const T_UPDATE: u8 = 12;
const T_PATH_CHALLENGE: u8 = 16;
const T_PATH_RESPONSE: u8 = 17;

/// Bytes of an enrolment token's public id (printed as 12 hex digits before the dot).
pub const TOKEN_ID_LEN: usize = 6;

/// The enrolment part of a `Register`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// Proof of the community's shared join secret ([`join_proof`]).
    Secret([u8; 32]),
    /// A per-server enrolment token (`metalvpc-supernode enrolled token create`): its public
    /// id and a proof keyed by its secret ([`token_proof`]).
    Token {
        /// The token's public id.
        id: [u8; TOKEN_ID_LEN],
        /// The proof.
        proof: [u8; 32],
    },
}

/// What an edge holds of its enrolment token: the public id and [`token_key`] of the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The token's public id.
    pub id: [u8; TOKEN_ID_LEN],
    /// [`token_key`] of the token's secret.
    pub key: [u8; 32],
}

impl JoinToken {
    /// Parses `<id>.<secret>` (12 hex digits, a dot, at least 16 characters of secret).
    pub fn parse(text: &str) -> Result<JoinToken, String> {
        let text = text.trim();
        let Some((id, secret)) = text.split_once('.') else {
            return Err("a token is `<id>.<secret>` (as `enrolled token create` prints it)".into());
        };
        let id = parse_token_id(id)?;
        if secret.len() < 16 {
            return Err("the secret after the dot is shorter than 16 characters".into());
        }
        Ok(JoinToken {
            id,
            key: token_key(secret.as_bytes()),
        })
    }

    /// The `Join` of a Register from `key` at `timestamp`.
    pub fn join(&self, key: &PublicKey, community: &str, timestamp: u64) -> Join {
        Join::Token {
            id: self.id,
            proof: token_proof(&self.key, &self.id, key, community, timestamp),
        }
    }
}

/// Parses a token id: 12 hex digits.
pub fn parse_token_id(id: &str) -> Result<[u8; TOKEN_ID_LEN], String> {
    let bytes = id.as_bytes();
    if bytes.len() != 2 * TOKEN_ID_LEN || !bytes.iter().all(u8::is_ascii_hexdigit) {
        return Err(format!(
            "the token id \"{}\" is not {} hex digits",
            id.chars().take(32).collect::<String>(),
            2 * TOKEN_ID_LEN
        ));
    }
    let mut out = [0u8; TOKEN_ID_LEN];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&id[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// A token id as printed: 12 hex digits.
pub fn token_id_hex(id: &[u8; TOKEN_ID_LEN]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key an enrolment token's proofs are made with: a hash of its secret. The supernode's
/// store keeps this, never the secret (so the store does not print tokens, but whoever copies
/// it can make proofs for live tokens: keep `state_dir` private).
pub fn token_key(secret: &[u8]) -> [u8; 32] {
    hash_key(b"metalvpc token v1", secret)
}

/// The proof of an enrolment token for `key`: a BLAKE2s MAC under [`token_key`] of the token
/// id, the key, the community and the Register's timestamp.
pub fn token_proof(
    token_key: &[u8; 32],
    id: &[u8; TOKEN_ID_LEN],
    key: &PublicKey,
    community: &str,
    timestamp: u64,
) -> [u8; 32] {
    mac(
        token_key,
        &[id, &key.0, community.as_bytes(), &timestamp.to_le_bytes()],
    )
}

/// Compares two proofs in constant time (the time does not depend on where they differ).
pub fn proofs_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use blake2::digest::CtOutput;
    use blake2::Blake2sMac256;
    CtOutput::<Blake2sMac256>::new((*a).into()) == CtOutput::<Blake2sMac256>::new((*b).into())
}

fn hash_key(label: &[u8], secret: &[u8]) -> [u8; 32] {
    use blake2::{Blake2s256, Digest};
    let mut h = Blake2s256::new();
    Digest::update(&mut h, label);
    Digest::update(&mut h, secret);
    h.finalize().into()
}

fn mac(k: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    use blake2::digest::{FixedOutput, KeyInit, Update};
    use blake2::Blake2sMac256;
    let mut m = <Blake2sMac256 as KeyInit>::new_from_slice(k).expect("32-byte key");
    for p in parts {
        Update::update(&mut m, p);
    }
    m.finalize_fixed().into()
}

/// The enrolment proof an edge with public key `key` sends: a BLAKE2s MAC, under a key
/// derived from the community's join secret, of its key, the community and the Register's
/// timestamp (so a captured proof is useless for another key, and replays are refused with
/// the timestamp).
pub fn join_proof(secret: &[u8], key: &PublicKey, community: &str, timestamp: u64) -> [u8; 32] {
    let k = hash_key(b"metalvpc join v1", secret);
    mac(
        &k,
        &[&key.0, community.as_bytes(), &timestamp.to_le_bytes()],
    )
}

/// The appended enrolment field of a Register (see [`Join`]); anything else is no enrolment.
fn get_join(r: &mut Reader<'_>) -> Result<Option<Join>, Truncated> {
    if r.remaining() < 33 {
        return Ok(None);
    }
    Ok(match r.u8()? {
        1 => Some(Join::Secret(r.array()?)),
        2 if r.remaining() >= TOKEN_ID_LEN + 32 => Some(Join::Token {
            id: r.array()?,
            proof: r.array()?,
        }),
        _ => None,
    })
}

/// Splits records into `PeerList` chunks of at most [`LIST_CHUNK_BYTES`] (or one record).
pub fn chunk_records(records: Vec<PeerRecord>) -> Vec<Vec<PeerRecord>> {
    let mut chunks: Vec<Vec<PeerRecord>> = vec![Vec::new()];
    let mut size = 0;
    for r in records {
        let mut w = Writer::default();
        put_record(&mut w, &r);
        let last = chunks.last_mut().unwrap();
        if !last.is_empty()
            && (size + w.buf.len() > LIST_CHUNK_BYTES || last.len() == RECORDS_PER_LIST)
        {
            chunks.push(Vec::new());
            size = 0;
        }
        size += w.buf.len();
        chunks.last_mut().unwrap().push(r);
    }
    chunks
}

fn put_record(w: &mut Writer, r: &PeerRecord) {
    w.u32(r.id)
        .raw(&r.key.0)
        .str(&r.name)
        .ip(r.address)
        .raw(&r.mac.0)
        .u64(r.instance);
    let cidrs = &r.allowed_cidrs[..r.allowed_cidrs.len().min(MAX_ALLOWED_CIDRS)];
    w.u8(cidrs.len() as u8);
    for c in cidrs {
        w.ip(c.addr()).u8(c.prefix_len());
    }
    let eps = &r.endpoints[..r.endpoints.len().min(MAX_ENDPOINTS)];
    w.u8(eps.len() as u8);
    for e in eps {
        w.sockaddr(*e);
    }
}

fn get_record(r: &mut Reader<'_>) -> Result<PeerRecord, Truncated> {
    let id = r.u32()?;
    let key = PublicKey(r.array()?);
    let name = r.str()?;
    let address = r.ip()?;
    let mac = Mac(r.array()?);
    let instance = r.u64()?;
    let n = r.count(MAX_ALLOWED_CIDRS)?;
    let mut allowed_cidrs = Vec::with_capacity(n);
    for _ in 0..n {
        let ip = r.ip()?;
        let len = r.u8()?;
        allowed_cidrs.push(IpNet::new(ip, len).map_err(|_| Truncated)?.trunc());
    }
    let endpoints = get_endpoints(r)?;
    Ok(PeerRecord {
        id,
        key,
        name,
        address,
        mac,
        instance,
        allowed_cidrs,
        endpoints,
        ipv6_router: false,
    })
}

/// The flags byte of a record (appended after a message's records).
fn record_flags(r: &PeerRecord) -> u8 {
    u8::from(r.ipv6_router)
}

fn set_record_flags(r: &mut PeerRecord, flags: u8) {
    r.ipv6_router = flags & 1 != 0;
}

/// Appends the records' flags: a count, then one byte per record.
fn put_flags(w: &mut Writer, records: &[PeerRecord]) {
    w.u8(records.len() as u8);
    for r in records {
        w.u8(record_flags(r));
    }
}

/// Reads what [`put_flags`] appended, if it is there (an older sender omits it).
fn get_flags(r: &mut Reader<'_>, records: &mut [PeerRecord]) -> Result<(), Truncated> {
    if r.remaining() == 0 {
        return Ok(());
    }
    let n = r.count(RECORDS_PER_LIST)?;
    for i in 0..n {
        let f = r.u8()?;
        if let Some(rec) = records.get_mut(i) {
            set_record_flags(rec, f);
        }
    }
    Ok(())
}

fn get_endpoints(r: &mut Reader<'_>) -> Result<Vec<SocketAddr>, Truncated> {
    let n = r.count(MAX_ENDPOINTS)?;
    (0..n).map(|_| r.sockaddr()).collect()
}

impl Control {
    /// Encodes into a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Control::Register {
                max_version,
                community,
                address,
                mac,
                instance,
                timestamp,
                endpoints,
                cipher,
                join,
            } => {
                w.u8(T_REGISTER)
                    .u8(*max_version)
                    .str(community)
                    .ip(*address)
                    .raw(&mac.0);
                w.u64(*instance).u64(*timestamp);
                let eps = &endpoints[..endpoints.len().min(MAX_ENDPOINTS)];
                w.u8(eps.len() as u8);
                for e in eps {
                    w.sockaddr(*e);
                }
                w.u8(*cipher);
                match join {
                    Some(Join::Secret(proof)) => w.u8(1).raw(proof),
                    Some(Join::Token { id, proof }) => w.u8(2).raw(id).raw(proof),
                    None => w.u8(0),
                };
            }
            Control::RegisterAck {
                id,
                observed,
                epoch,
                interval,
                relay,
                membership,
                assigned,
            } => {
                w.u8(T_ACK)
                    .u32(*id)
                    .sockaddr(*observed)
                    .u64(*epoch)
                    .u16(*interval)
                    .u8(u8::from(*relay))
                    .u64(*membership);
                match assigned {
                    Some((ip, prefix)) => w.u8(1).ip(*ip).u8(*prefix),
                    None => w.u8(0),
                };
            }
            Control::RegisterNak { code, message } => {
                w.u8(T_NAK).u8(*code as u8).str(message);
            }
            Control::SyncRequest => {
                w.u8(T_SYNC);
            }
            Control::PeerList {
                epoch,
                chunk,
                chunks,
                records,
            } => {
                w.u8(T_LIST).u64(*epoch).u16(*chunk).u16(*chunks);
                let recs = &records[..records.len().min(RECORDS_PER_LIST)];
                w.u8(recs.len() as u8);
                for r in recs {
                    put_record(&mut w, r);
                }
                put_flags(&mut w, recs);
            }
            Control::Lookup { txid, query } => {
                w.u8(T_LOOKUP).u32(*txid);
                match query {
                    Query::Mac(m) => w.u8(1).raw(&m.0),
                    Query::Ip(ip) => w.u8(2).ip(*ip),
                    Query::Key(k) => w.u8(3).raw(&k.0),
                };
            }
            Control::LookupReply { txid, record } => {
                w.u8(T_LOOKUP_REPLY).u32(*txid);
                match record {
                    Some(r) => {
                        w.u8(1);
                        put_record(&mut w, r);
                        w.u8(record_flags(r));
                    }
                    None => {
                        w.u8(0);
                    }
                }
            }
            Control::PeerNotify { record } => {
                w.u8(T_NOTIFY);
                put_record(&mut w, record);
                w.u8(record_flags(record));
            }
            Control::PeerRemoved { keys } => {
                let keys = &keys[..keys.len().min(KEYS_PER_REMOVAL)];
                w.u8(T_REMOVED).u8(keys.len() as u8);
                for k in keys {
                    w.raw(&k.0);
                }
            }
            Control::SignedListRequest => {
                w.u8(T_SIGNED_REQUEST);
            }
            Control::PeerUpdate {
                from,
                epoch,
                records,
                gone,
            } => {
                w.u8(T_UPDATE).u64(*from).u64(*epoch);
                let recs = &records[..records.len().min(RECORDS_PER_LIST)];
                w.u8(recs.len() as u8);
                for r in recs {
                    put_record(&mut w, r);
                }
                let gone = &gone[..gone.len().min(KEYS_PER_REMOVAL)];
                w.u8(gone.len() as u8);
                for k in gone {
                    w.raw(&k.0);
                }
                put_flags(&mut w, recs);
            }
            Control::SignedList {
                version,
                chunk,
                chunks,
                data,
            } => {
                let data = &data[..data.len().min(MAX_SIGNED_CHUNK)];
                w.u8(T_SIGNED_LIST)
                    .u64(*version)
                    .u16(*chunk)
                    .u16(*chunks)
                    .u16(data.len() as u16)
                    .raw(data);
            }
            Control::PathChallenge { nonce } => {
                w.u8(T_PATH_CHALLENGE).u64(*nonce);
            }
            Control::PathResponse { nonce } => {
                w.u8(T_PATH_RESPONSE).u64(*nonce);
            }
            Control::Unknown(t) => {
                w.u8(*t);
            }
        }
        w.buf
    }

    /// Decodes; never panics, never allocates more than the input bounds allow.
    pub fn decode(b: &[u8]) -> Result<Control, Truncated> {
        let mut r = Reader::new(b);
        Ok(match r.u8()? {
            T_REGISTER => Control::Register {
                max_version: r.u8()?,
                community: r.str()?,
                address: r.ip()?,
                mac: Mac(r.array()?),
                instance: r.u64()?,
                timestamp: r.u64()?,
                endpoints: get_endpoints(&mut r)?,
                cipher: if r.remaining() > 0 { r.u8()? } else { 1 },
                join: get_join(&mut r)?,
            },
            T_ACK => Control::RegisterAck {
                id: r.u32()?,
                observed: r.sockaddr()?,
                epoch: r.u64()?,
                interval: r.u16()?,
                relay: if r.remaining() > 0 {
                    r.u8()? != 0
                } else {
                    true
                },
                membership: if r.remaining() >= 8 { r.u64()? } else { 0 },
                assigned: if r.remaining() > 0 && r.u8()? == 1 {
                    Some((r.ip()?, r.u8()?))
                } else {
                    None
                },
            },
            T_NAK => Control::RegisterNak {
                code: NakCode::from_u8(r.u8()?),
                message: r.str()?,
            },
            T_SYNC => Control::SyncRequest,
            T_LIST => {
                let epoch = r.u64()?;
                let chunk = r.u16()?;
                let chunks = r.u16()?;
                let n = r.count(RECORDS_PER_LIST)?;
                let mut records: Vec<PeerRecord> = (0..n)
                    .map(|_| get_record(&mut r))
                    .collect::<Result<_, _>>()?;
                get_flags(&mut r, &mut records)?;
                Control::PeerList {
                    epoch,
                    chunk,
                    chunks,
                    records,
                }
            }
            T_LOOKUP => {
                let txid = r.u32()?;
                let query = match r.u8()? {
                    1 => Query::Mac(Mac(r.array()?)),
                    2 => Query::Ip(r.ip()?),
                    3 => Query::Key(PublicKey(r.array()?)),
                    _ => return Err(Truncated),
                };
                Control::Lookup { txid, query }
            }
            T_LOOKUP_REPLY => {
                let txid = r.u32()?;
                let record = match r.u8()? {
                    0 => None,
                    1 => {
                        let mut rec = get_record(&mut r)?;
                        if r.remaining() > 0 {
                            set_record_flags(&mut rec, r.u8()?);
                        }
                        Some(rec)
                    }
                    _ => return Err(Truncated),
                };
                Control::LookupReply { txid, record }
            }
            T_NOTIFY => {
                let mut record = get_record(&mut r)?;
                if r.remaining() > 0 {
                    set_record_flags(&mut record, r.u8()?);
                }
                Control::PeerNotify { record }
            }
            T_REMOVED => {
                let n = r.count(KEYS_PER_REMOVAL)?;
                let keys = (0..n)
                    .map(|_| r.array().map(PublicKey))
                    .collect::<Result<_, _>>()?;
                Control::PeerRemoved { keys }
            }
            T_SIGNED_REQUEST => Control::SignedListRequest,
            T_UPDATE => {
                let from = r.u64()?;
                let epoch = r.u64()?;
                let n = r.count(RECORDS_PER_LIST)?;
                let mut records: Vec<PeerRecord> = (0..n)
                    .map(|_| get_record(&mut r))
                    .collect::<Result<_, _>>()?;
                let n = r.count(KEYS_PER_REMOVAL)?;
                let gone = (0..n)
                    .map(|_| r.array().map(PublicKey))
                    .collect::<Result<_, _>>()?;
                get_flags(&mut r, &mut records)?;
                Control::PeerUpdate {
                    from,
                    epoch,
                    records,
                    gone,
                }
            }
            T_SIGNED_LIST => {
                let version = r.u64()?;
                let chunk = r.u16()?;
                let chunks = r.u16()?;
                let n = usize::from(r.u16()?);
                if n > MAX_SIGNED_CHUNK {
                    return Err(Truncated);
                }
                Control::SignedList {
                    version,
                    chunk,
                    chunks,
                    data: r.raw(n)?.to_vec(),
                }
            }
            T_PATH_CHALLENGE => Control::PathChallenge { nonce: r.u64()? },
            T_PATH_RESPONSE => Control::PathResponse { nonce: r.u64()? },
            t => Control::Unknown(t),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(id: u32) -> PeerRecord {
        PeerRecord {
            id,
            key: PublicKey([id as u8; 32]),
            name: format!("node-{id}"),
            address: "10.0.0.7".parse().unwrap(),
            mac: Mac([2, 0, 0, 0, 0, id as u8]),
            instance: 42,
            allowed_cidrs: vec![
                "10.244.1.0/24".parse().unwrap(),
                "fd00::/64".parse().unwrap(),
            ],
            endpoints: vec![
                "198.18.0.5:7655".parse().unwrap(),
                "[2001:db8::5]:7655".parse().unwrap(),
            ],
            ipv6_router: id % 2 == 1,
        }
    }

    #[test]
    fn a_record_without_its_flags_from_an_older_supernode_means_no_router() {
        let rec = record(1);
        assert!(rec.ipv6_router);
        for msg in [
            Control::PeerNotify {
                record: rec.clone(),
            },
            Control::LookupReply {
                txid: 3,
                record: Some(rec.clone()),
            },
            Control::PeerList {
                epoch: 1,
                chunk: 0,
                chunks: 1,
                records: vec![rec.clone()],
            },
            Control::PeerUpdate {
                from: 1,
                epoch: 2,
                records: vec![rec.clone()],
                gone: vec![],
            },
        ] {
            let b = msg.encode();
            assert_eq!(Control::decode(&b), Ok(msg.clone()));
            // What an older supernode sends: the same without the appended flags.
            let cut = if matches!(msg, Control::PeerList { .. } | Control::PeerUpdate { .. }) {
                2
            } else {
                1
            };
            let old = Control::decode(&b[..b.len() - cut]).unwrap();
            let records = match old {
                Control::PeerNotify { record } => vec![record],
                Control::LookupReply { record, .. } => record.into_iter().collect(),
                Control::PeerList { records, .. } | Control::PeerUpdate { records, .. } => records,
                _ => unreachable!(),
            };
            assert_eq!(records.len(), 1);
            assert!(!records[0].ipv6_router);
            assert_eq!(records[0].endpoints, rec.endpoints);
        }
    }

    /// A Register asking for an address with `join`.
    fn enrolling(join: Join) -> Control {
        Control::Register {
            max_version: 1,
            community: "prod".into(),
            address: "0.0.0.0".parse().unwrap(),
            mac: Mac([2, 1, 2, 3, 4, 5]),
            instance: 9,
            timestamp: 1_700_000_000_000_000,
            endpoints: vec![],
            cipher: 1,
            join: Some(join),
        }
    }

    #[test]
    fn every_message_round_trips() {
        let msgs = vec![
            Control::Register {
                max_version: 1,
                community: "prod".into(),
                address: "10.0.0.1".parse().unwrap(),
                mac: Mac([2, 1, 2, 3, 4, 5]),
                instance: 9,
                timestamp: 1_700_000_000_000_000,
                endpoints: vec!["192.168.1.4:7655".parse().unwrap()],
                cipher: 2,
                join: None,
            },
            enrolling(Join::Secret([7; 32])),
            enrolling(Join::Token {
                id: [1, 2, 3, 4, 5, 6],
                proof: [8; 32],
            }),
            Control::RegisterAck {
                id: 3,
                observed: "198.18.0.9:40000".parse().unwrap(),
                epoch: 12,
                interval: 10,
                relay: false,
                membership: 77,
                assigned: None,
            },
            Control::RegisterAck {
                id: 3,
                observed: "198.18.0.9:40000".parse().unwrap(),
                epoch: 12,
                interval: 10,
                relay: true,
                membership: 0,
                assigned: Some(("10.10.0.100".parse().unwrap(), 24)),
            },
            Control::RegisterNak {
                code: NakCode::AddressNotOwned,
                message: "no".into(),
            },
            Control::SyncRequest,
            Control::PeerList {
                epoch: 5,
                chunk: 1,
                chunks: 3,
                records: vec![record(1), record(2)],
            },
            Control::Lookup {
                txid: 8,
                query: Query::Mac(Mac([2, 0, 0, 0, 0, 1])),
            },
            Control::Lookup {
                txid: 9,
                query: Query::Ip("10.0.0.2".parse().unwrap()),
            },
            Control::Lookup {
                txid: 10,
                query: Query::Key(PublicKey([7; 32])),
            },
            Control::LookupReply {
                txid: 8,
                record: Some(record(4)),
            },
            Control::LookupReply {
                txid: 8,
                record: None,
            },
            Control::PeerNotify { record: record(5) },
            Control::PeerRemoved {
                keys: vec![PublicKey([3; 32]), PublicKey([4; 32])],
            },
            Control::PeerRemoved { keys: vec![] },
            Control::SignedListRequest,
            Control::SignedList {
                version: 9,
                chunk: 2,
                chunks: 3,
                data: vec![7; 960],
            },
            Control::PeerUpdate {
                from: 6,
                epoch: 7,
                records: vec![record(6)],
                gone: vec![PublicKey([5; 32])],
            },
            Control::PeerUpdate {
                from: 7,
                epoch: 8,
                records: vec![],
                gone: vec![],
            },
            Control::PathChallenge {
                nonce: 0x0102_0304_0506_0708,
            },
            Control::PathResponse { nonce: u64::MAX },
            Control::Unknown(200),
        ];
        for m in msgs {
            let bytes = m.encode();
            assert_eq!(Control::decode(&bytes), Ok(m.clone()), "{m:?}");
            // Appended fields from a newer version are ignored.
            let mut longer = bytes.clone();
            longer.extend_from_slice(&[1, 2, 3]);
            assert_eq!(Control::decode(&longer), Ok(m.clone()));
            // Every truncation fails cleanly (except where the prefix is itself complete).
            for cut in 0..bytes.len() {
                let _ = Control::decode(&bytes[..cut]);
            }
        }
    }

    #[test]
    fn an_ack_without_the_appended_relay_field_means_relay_allowed() {
        let mut w = Writer::default();
        w.u8(T_ACK)
            .u32(3)
            .sockaddr("198.18.0.9:40000".parse().unwrap())
            .u64(1)
            .u16(10);
        let Ok(Control::RegisterAck {
            relay, membership, ..
        }) = Control::decode(&w.buf)
        else {
            panic!()
        };
        assert!(relay);
        assert_eq!(
            membership, 0,
            "no signed membership from an older supernode"
        );
    }

    #[test]
    fn list_chunks_stay_under_one_datagram() {
        let records: Vec<_> = (0..100u32).map(record).collect();
        let chunks = chunk_records(records.clone());
        assert!(chunks.len() > 1);
        assert_eq!(chunks.concat(), records);
        for c in &chunks {
            let m = Control::PeerList {
                epoch: 1,
                chunk: 0,
                chunks: 1,
                records: c.clone(),
            };
            assert!(
                m.encode().len() <= LIST_CHUNK_BYTES + 200,
                "{}",
                m.encode().len()
            );
        }
        assert_eq!(chunk_records(Vec::new()), vec![Vec::<PeerRecord>::new()]);
    }

    #[test]
    fn a_token_proof_binds_the_token_the_key_the_community_and_the_time() {
        let t = JoinToken::parse("0a1b2c3d4e5f.00112233445566778899aabbccddeeff\n").unwrap();
        assert_eq!(token_id_hex(&t.id), "0a1b2c3d4e5f");
        assert_eq!(t.key, token_key(b"00112233445566778899aabbccddeeff"));
        let k = PublicKey([5; 32]);
        let Join::Token { proof, .. } = t.join(&k, "prod", 7) else {
            panic!("a token join")
        };
        assert!(proofs_equal(
            &proof,
            &token_proof(&t.key, &t.id, &k, "prod", 7)
        ));
        for other in [
            token_proof(&t.key, &[0; TOKEN_ID_LEN], &k, "prod", 7),
            token_proof(&t.key, &t.id, &PublicKey([6; 32]), "prod", 7),
            token_proof(&t.key, &t.id, &k, "test", 7),
            token_proof(&t.key, &t.id, &k, "prod", 8),
            token_proof(&token_key(b"another secret 0123"), &t.id, &k, "prod", 7),
        ] {
            assert!(!proofs_equal(&proof, &other));
        }
        for bad in [
            "0a1b2c3d4e5f",
            "0a1b.00112233445566778899",
            "0a1b2c3d4e5f.short",
            "zz1b2c3d4e5f.00112233445566778899",
        ] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_token_register_reads_as_no_enrolment_to_a_decoder_that_knows_only_secrets() {
        // What the decoder before tokens did with the appended field.
        fn old_join(b: &[u8]) -> Option<[u8; 32]> {
            let b = &b[b.len() - (1 + TOKEN_ID_LEN + 32)..];
            (b.len() >= 33 && b[0] == 1).then(|| b[1..33].try_into().unwrap())
        }
        let m = enrolling(Join::Token {
            id: [1; TOKEN_ID_LEN],
            proof: [1; 32],
        });
        assert_eq!(old_join(&m.encode()), None);
        assert_eq!(Control::decode(&m.encode()), Ok(m));
    }

    proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Control::decode(&b);
        }
    }
}
