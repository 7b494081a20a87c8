//! An address a supernode assigns in its `RegisterAck` (enrolment). A supernode may assign
//! an address only to an edge that asked for one: it is taken only while enrolling (no
//! address yet, a join token or secret configured), or is the same address again; only with a prefix
//! of 8 to 32 (128 for IPv6) that is the community network's when this edge knows it; only a
//! unicast host address of that network; and with `admin_key`, only the address the verified
//! signed membership gives this key (until a list arrives, the assignment waits for it).
//! Anything else is refused, counted (`address_refused`) and reported as
//! [`Event::AddressRefused`] with the reason.

use super::table::LinkId;
use super::{Command, Edge, Event};
use crate::io::DropReason;
use ipnet::IpNet;
use std::net::IpAddr;

/// What to do with an assigned address.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Ours already: nothing changes.
    Same,
    /// Take it.
    Take,
    /// With `admin_key` and no signed membership yet: decide when one is accepted.
    Wait,
    /// Refuse it, for this reason.
    Refuse(String),
}

/// `ip/prefix` is a plausible host address of an overlay network: a prefix of 8 to 32 (IPv4)
/// or 8 to 128 (IPv6), a unicast address that is neither the network's nor its broadcast
/// address. Returns the network.
pub(super) fn host_network(ip: IpAddr, prefix: u8) -> Result<IpNet, String> {
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if !(8..=max).contains(&prefix) {
        return Err(format!("prefix /{prefix} is not 8 to {max}"));
    }
    let net = IpNet::new(ip, prefix)
        .map_err(|_| format!("prefix /{prefix} is too long"))?
        .trunc();
    let special = match ip {
        IpAddr::V4(a) => {
            a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_link_local()
                || (prefix <= 30 && (ip == net.network() || ip == net.broadcast()))
        }
        IpAddr::V6(a) => {
            a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_unicast_link_local()
        }
    };
    if special {
        return Err(format!("{ip} is not a unicast host address of {net}"));
    }
    Ok(net)
}

impl Edge {
    fn assignment_verdict(&self, ip: IpAddr, prefix: u8) -> Verdict {
        let net = match host_network(ip, prefix) {
            Ok(n) => n,
            Err(e) => return Verdict::Refuse(e),
        };
        if let Some(known) = self.cfg.network {
            if known != net {
                return Verdict::Refuse(format!(
                    "{ip}/{prefix} is not in the community network {known} with its prefix"
                ));
            }
        }
        if ip == self.cfg.address {
            return Verdict::Same;
        }
        if !self.cfg.address.is_unspecified()
            || (self.cfg.join_secret.is_none() && self.cfg.join_token.is_none())
        {
            return Verdict::Refuse(format!(
                "this edge is not enrolling: it has the address {} (configured or assigned before)",
                self.cfg.address
            ));
        }
        if self.cfg.admin_key.is_none() {
            return Verdict::Take;
        }
        match &self.signed {
            None => Verdict::Wait,
            Some((m, _)) => match m.get(&self.public) {
                Some(me) if me.address == ip => Verdict::Take,
                Some(me) => Verdict::Refuse(format!(
                    "the signed membership (version {}) gives this key {}",
                    m.version, me.address
                )),
                None => Verdict::Refuse(format!(
                    "the signed membership (version {}) does not list this key",
                    m.version
                )),
            },
        }
    }

    /// Supernode `l` assigned us `ip/prefix` (in a `RegisterAck`).
    pub(super) fn on_assigned(&mut self, l: LinkId, ip: IpAddr, prefix: u8) {
        let supernode = self.links[l].addr;
        match self.assignment_verdict(ip, prefix) {
            Verdict::Same => {}
            Verdict::Wait => self.pending_assignment = Some((l, ip, prefix)),
            Verdict::Take => {
                self.pending_assignment = None;
                self.cfg.address = ip;
                self.cfg.network = IpNet::new(ip, prefix).ok().map(|n| n.trunc());
                self.events.push(Event::AddressAssigned {
                    address: ip,
                    prefix,
                    supernode,
                });
                if let IpAddr::V4(address) = ip {
                    self.commands
                        .push(Command::ApplyAddress { address, prefix });
                }
            }
            Verdict::Refuse(reason) => {
                self.drops.add(DropReason::AddressRefused);
                self.events.push(Event::AddressRefused {
                    address: ip,
                    prefix,
                    supernode,
                    reason,
                });
            }
        }
    }

    /// A signed membership was accepted: an assignment that waited for one is decided now.
    pub(super) fn retry_assignment(&mut self) {
        if let Some((l, ip, prefix)) = self.pending_assignment.take() {
            self.on_assigned(l, ip, prefix);
        }
    }

    /// [`on_assigned`](Self::on_assigned) from the first supernode (tests).
    #[cfg(test)]
    pub(crate) fn test_on_assigned(&mut self, ip: IpAddr, prefix: u8) {
        self.on_assigned(LinkId::nth(0), ip, prefix);
    }
}

#[cfg(test)]
mod tests {
    use super::host_network;

    #[test]
    fn a_hostile_prefix_or_a_special_address_is_no_host_network() {
        let ip = |s: &str| s.parse().unwrap();
        assert_eq!(
            host_network(ip("10.0.0.7"), 16),
            Ok("10.0.0.0/16".parse().unwrap())
        );
        assert!(host_network(ip("10.0.0.7"), 32).is_ok());
        assert!(host_network(ip("fd10::7"), 64).is_ok());
        for p in [0, 1, 7, 33, 64, 128, 255] {
            assert!(host_network(ip("10.0.0.7"), p).is_err(), "/{p}");
        }
        assert!(host_network(ip("fd10::7"), 129).is_err());
        assert!(host_network(ip("fd10::7"), 255).is_err());
        for a in [
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "169.254.1.1",
            "10.0.0.0",
            "10.0.255.255",
        ] {
            assert!(host_network(ip(a), 16).is_err(), "{a}");
        }
        for a in ["::", "::1", "ff02::1", "fe80::1"] {
            assert!(host_network(ip(a), 64).is_err(), "{a}");
        }
    }
}
