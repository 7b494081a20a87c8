//! The relay: a member's envelope is opened with its session to us and the inner packet,
//! still end-to-end encrypted, is sealed into the target member's session, within the
//! community only.

use super::Supernode;
use crate::io::{DropReason, Output};
use crate::wire::RELAY_HEADER_LEN;
use std::net::SocketAddr;
use std::time::Instant;

impl Supernode {
    /// A relay envelope from `src` on session `receiver` for member id `to`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_relay(
        &mut self,
        now: Instant,
        src: SocketAddr,
        receiver: u32,
        counter: u64,
        to: u32,
        pkt: &mut [u8],
        out: &mut Output,
    ) {
        let len = pkt.len();
        let Some((r, inner)) = self.open(now, receiver, |s| s.open_relay(counter, pkt), out) else {
            return;
        };
        self.seen(now, r, src, len, out);
        if !self.table.community(r.community).relay {
            return self.drops.add(DropReason::RelayDenied);
        }
        let len = inner.len() as u64;
        let node = self.table.node_mut(r);
        let from = node.id;
        node.traffic.rx_packets += 1;
        node.traffic.rx_bytes += len;
        // Only within the community: ids of other communities are not found.
        let Some(t) = self.table.by_id(r.community, to) else {
            return self.drops.add(DropReason::NoRoute);
        };
        let target = self.table.node_mut(t);
        let Some(reg) = target.reg_mut() else {
            return self.drops.add(DropReason::NoRoute);
        };
        let start = out.buf.len();
        out.buf.resize(start + RELAY_HEADER_LEN, 0);
        out.buf.extend_from_slice(&pkt[inner]);
        reg.send_relay(from, out, start);
        target.traffic.tx_packets += 1;
        target.traffic.tx_bytes += len;
        self.relay_packets += 1;
        self.relay_bytes += len;
    }
}
