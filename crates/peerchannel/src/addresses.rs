//! Where a node can be reached: the addresses it advertises, and how they travel inside the
//! protocol core's opaque [`PeerData`].

use std::net::{IpAddr, SocketAddr};

use peerchannel_proto::PeerData;

/// The most addresses carried for one peer (they must fit in a [`PeerData`]).
pub const MAX_ADDRESSES: usize = 16;

/// Encodes addresses for the protocol core (which forwards them without looking inside).
pub(crate) fn encode(addresses: &[SocketAddr]) -> Option<PeerData> {
    let addresses = &addresses[..addresses.len().min(MAX_ADDRESSES)];
    PeerData::new(postcard::to_allocvec(addresses).ok()?)
}

/// Decodes addresses another node advertised; `None` for anything malformed.
pub(crate) fn decode(data: &PeerData) -> Option<Vec<SocketAddr>> {
    let addresses: Vec<SocketAddr> = postcard::from_bytes(data.as_bytes()).ok()?;
    let usable: Vec<SocketAddr> = addresses
        .into_iter()
        .take(MAX_ADDRESSES)
        .filter(|a| a.port() != 0 && !a.ip().is_unspecified() && !a.ip().is_multicast())
        .collect();
    (!usable.is_empty()).then_some(usable)
}

/// The addresses to advertise for a socket bound at `bound`: the address itself, or, for an
/// unspecified address (`0.0.0.0`, `::`), every interface address of that family, loopback
/// included (so nodes on the same host find each other), with the bound port.
pub(crate) fn advertised(bound: SocketAddr) -> Vec<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let v4 = bound.is_ipv4();
    let mut out: Vec<SocketAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| ip.is_ipv4() == v4 && !is_link_local(ip))
        .map(|ip| SocketAddr::new(ip, bound.port()))
        .collect();
    // Non-loopback first: the most useful address for other hosts leads.
    out.sort_by_key(|a| (a.ip().is_loopback(), *a));
    out.dedup();
    out.truncate(MAX_ADDRESSES);
    if out.is_empty() {
        let loopback: IpAddr = if v4 {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        out.push(SocketAddr::new(loopback, bound.port()));
    }
    out
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_unusable_ones_are_dropped() {
        let a: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let b: SocketAddr = "[::1]:7001".parse().unwrap();
        assert_eq!(decode(&encode(&[a, b]).unwrap()), Some(vec![a, b]));
        let bad: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        assert_eq!(decode(&encode(&[bad]).unwrap()), None);
        assert_eq!(decode(&PeerData::new(vec![0xff; 10]).unwrap()), None);
    }

    #[test]
    fn a_specific_address_is_advertised_as_is_and_an_unspecified_one_expands() {
        let a: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(advertised(a), vec![a]);
        let any: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        let out = advertised(any);
        assert!(!out.is_empty());
        assert!(
            out.iter()
                .all(|a| a.port() == 7000 && a.is_ipv4() && !a.ip().is_unspecified())
        );
    }
}
