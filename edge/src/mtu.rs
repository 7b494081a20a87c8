//! The underlay side of the MTU: the route to each supernode (`ip route get`) and the
//! largest TAP MTU that fits it, with the overhead from `metalvpc_protocol::overhead`.

use metalvpc_protocol::overhead::{self, Path, Underlay};
use std::net::{IpAddr, SocketAddr};

/// How a TAP MTU fits the route to one supernode.
pub struct Fit {
    /// The route's interface.
    pub dev: String,
    /// Its MTU.
    pub underlay: u32,
    /// Bytes of the outer IP header (20 or 40).
    pub ip_header: u32,
    /// The largest TAP MTU whose frames fit, relayed.
    pub largest: u32,
}

/// The largest TAP MTU whose frames, with our overhead (relay envelope included), fit the
/// route to `addr`.
pub fn underlay_fit(addr: SocketAddr) -> Option<Fit> {
    let family = Underlay::of(&addr);
    let (dev, underlay) = route_mtu(addr.ip())?;
    Some(Fit {
        dev,
        underlay,
        ip_header: family.ip_header() as u32,
        largest: overhead::largest_tap_mtu(underlay as usize, family, Path::Relayed) as u32,
    })
}

/// Without `interface.mtu`: the largest TAP MTU that fits the routes to every supernode
/// (relay overhead included), within 576–9000. None if no route is known.
pub fn auto_mtu(supernodes: &[(SocketAddr, metalvpc_protocol::PublicKey)]) -> Option<u32> {
    supernodes
        .iter()
        .filter_map(|(a, _)| underlay_fit(*a))
        .map(|f| f.largest)
        .min()
        .map(|m| m.clamp(576, 9000))
}

/// The interface and MTU of the route to `ip` (`ip route get`), if there is one.
pub fn route_mtu(ip: IpAddr) -> Option<(String, u32)> {
    let out = std::process::Command::new("ip")
        .args(["-o", "route", "get", &ip.to_string()])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    let mut dev = None;
    let mut mtu = None;
    while let Some(w) = words.next() {
        match w {
            "dev" => dev = words.next().map(str::to_string),
            "mtu" => mtu = words.next().and_then(|m| m.parse().ok()),
            _ => {}
        }
    }
    let dev = dev?;
    let mtu = mtu.or_else(|| {
        std::fs::read_to_string(format!("/sys/class/net/{dev}/mtu"))
            .ok()?
            .trim()
            .parse()
            .ok()
    })?;
    Some((dev, mtu))
}
