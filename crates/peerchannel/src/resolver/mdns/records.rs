//! The records: what a node publishes, and the checks on what is heard.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};

use mdns_sd::{ResolvedService, ScopedIp, ServiceInfo};

#[cfg(test)]
use super::SERVICE_TYPE;
use super::{MAX_TXT_LEN, MdnsError, NearbyNode};
use crate::addresses::MAX_ADDRESSES;
use crate::{MeshId, PeerId};

/// The TXT keys and the record version this module writes and understands.
const TXT_VERSION_KEY: &str = "v";
const TXT_VERSION: &str = "1";
// One letter: a TXT string is at most 255 bytes, and `m=` plus the longest mesh id (253) is
// exactly that.
const TXT_MESH_KEY: &str = "m";
const TXT_PEER_KEY: &str = "id";

/// Characters of the mesh id and of the peer id that go into an instance name (at most 63
/// bytes in all, one DNS label).
const INSTANCE_MESH_CHARS: usize = 24;
const INSTANCE_PEER_CHARS: usize = 16;

/// Why an instance heard on the network is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ignored {
    TxtTooLarge(usize),
    Version,
    NoMesh,
    BadMesh,
    NoPeerId,
    BadPeerId,
    NoUsableAddress,
}

/// The records for `peer_id` in `mesh`.
pub(super) fn service_info(
    service_type: &str,
    mesh: &MeshId,
    peer_id: PeerId,
    addresses: &[SocketAddr],
) -> Result<ServiceInfo, MdnsError> {
    let usable: Vec<SocketAddr> = addresses
        .iter()
        .copied()
        .filter(|a| is_usable(a.ip()) && a.port() != 0)
        .collect();
    // SRV has one port: the first usable address's. Addresses on another port (a custom
    // advertise list) cannot be said in these records and are left out.
    let Some(port) = usable.first().map(SocketAddr::port) else {
        return Err(MdnsError::NoUsableAddress {
            addresses: addresses.to_vec(),
        });
    };
    let ips: Vec<IpAddr> = usable
        .iter()
        .filter(|a| a.port() == port)
        .map(SocketAddr::ip)
        .collect();
    let peer = peer_id.to_string();
    let host = format!("pc-{}.local.", &peer[..INSTANCE_PEER_CHARS]);
    let properties = [
        (TXT_VERSION_KEY, TXT_VERSION),
        (TXT_MESH_KEY, mesh.as_str()),
        (TXT_PEER_KEY, peer.as_str()),
    ];
    ServiceInfo::new(
        service_type,
        &instance_name(mesh, peer_id),
        &host,
        &ips[..],
        port,
        &properties[..],
    )
    .map_err(|e| MdnsError::Record(e.to_string()))
}

/// The instance name of `peer_id` in `mesh`: readable, unique per (node, mesh), one label.
pub(super) fn instance_name(mesh: &MeshId, peer_id: PeerId) -> String {
    let readable: String = mesh
        .as_str()
        .chars()
        .take(INSTANCE_MESH_CHARS)
        .map(|c| if c == '.' { '-' } else { c })
        .collect();
    let peer = peer_id.to_string();
    // The readable part may be cut, and `.` becomes `-`: a digest of the whole mesh id keeps
    // two meshes of one node apart. Deterministic, so a restarted node replaces its records.
    let digest = ring::digest::digest(&ring::digest::SHA256, mesh.as_str().as_bytes());
    let tag = data_encoding::BASE32_NOPAD
        .encode(&digest.as_ref()[..5])
        .to_ascii_lowercase();
    format!(
        "{}-{}-{}",
        readable.trim_end_matches('-'),
        &peer[..INSTANCE_PEER_CHARS],
        tag
    )
}

/// Checks an instance heard on the network; see the module documentation for the rules.
pub(super) fn parse_instance(service: &ResolvedService) -> Result<NearbyNode, Ignored> {
    let txt = &service.txt_properties;
    let txt_len: usize = txt
        .iter()
        .map(|p| 1 + p.key().len() + p.val().map_or(0, |v| 1 + v.len()))
        .sum();
    if txt_len > MAX_TXT_LEN {
        return Err(Ignored::TxtTooLarge(txt_len));
    }
    let text = |key: &str| -> Option<Result<&str, ()>> {
        let value = txt.get_property_val(key)?;
        Some(
            value
                .ok_or(())
                .and_then(|v| std::str::from_utf8(v).map_err(|_| ())),
        )
    };
    if let Some(version) = text(TXT_VERSION_KEY)
        && version != Ok(TXT_VERSION)
    {
        return Err(Ignored::Version);
    }
    let mesh = match text(TXT_MESH_KEY) {
        None => return Err(Ignored::NoMesh),
        Some(Err(())) => return Err(Ignored::BadMesh),
        Some(Ok(m)) => MeshId::new(m).map_err(|_| Ignored::BadMesh)?,
    };
    let peer_id = match text(TXT_PEER_KEY) {
        None => return Err(Ignored::NoPeerId),
        Some(Err(())) => return Err(Ignored::BadPeerId),
        Some(Ok(id)) => id.parse::<PeerId>().map_err(|_| Ignored::BadPeerId)?,
    };
    let port = service.port;
    if port == 0 {
        return Err(Ignored::NoUsableAddress);
    }
    let mut addresses: Vec<SocketAddr> = service
        .addresses
        .iter()
        .filter_map(|ip| socket_addr(ip, port))
        .collect();
    addresses.sort_by_key(|a| (a.ip().is_loopback(), *a));
    addresses.dedup();
    addresses.truncate(MAX_ADDRESSES);
    if addresses.is_empty() {
        return Err(Ignored::NoUsableAddress);
    }
    Ok(NearbyNode {
        mesh,
        peer_id,
        addresses,
        instance: service.fullname.clone(),
    })
}

fn socket_addr(ip: &ScopedIp, port: u16) -> Option<SocketAddr> {
    let addr = ip.to_ip_addr();
    if !is_usable(addr) {
        return None;
    }
    match ip {
        // A link-local IPv6 address is only usable with the interface it was heard on.
        ScopedIp::V6(v6) if is_link_local_v6(v6.addr()) => Some(SocketAddr::V6(SocketAddrV6::new(
            *v6.addr(),
            port,
            0,
            v6.scope_id().index,
        ))),
        _ => Some(SocketAddr::new(addr, port)),
    }
}

fn is_usable(ip: IpAddr) -> bool {
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}

fn is_link_local_v6(ip: &Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xffc0) == 0xfe80
}

/// `_name._udp[.local[.]]` -> `_name._udp.local.`
pub(super) fn normalize_service_type(given: &str) -> Result<String, MdnsError> {
    let bad = |reason| MdnsError::ServiceType {
        given: given.to_owned(),
        reason,
    };
    let trimmed = given.trim().trim_end_matches('.');
    let trimmed = trimmed.strip_suffix(".local").unwrap_or(trimmed);
    let (name, proto) = trimmed
        .rsplit_once('.')
        .ok_or_else(|| bad("it has no protocol (._udp or ._tcp)"))?;
    if proto != "_udp" && proto != "_tcp" {
        return Err(bad("the protocol is neither _udp nor _tcp"));
    }
    let name = name
        .strip_prefix('_')
        .ok_or_else(|| bad("the name does not start with _"))?;
    if name.is_empty() || name.len() > 15 {
        return Err(bad("the name is not 1 to 15 characters"));
    }
    let valid = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !valid {
        return Err(bad(
            "the name has characters other than letters, digits and -",
        ));
    }
    Ok(format!("_{}.{proto}.local.", name.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        PeerId::from_bytes([n; 32])
    }

    fn resolved(props: &[(&str, &str)], ips: &str, port: u16) -> ResolvedService {
        ServiceInfo::new(SERVICE_TYPE, "x", "h.local.", ips, port, props)
            .unwrap()
            .as_resolved_service()
    }

    #[test]
    fn our_records_parse_back() {
        let mesh = MeshId::new("soccerpals").unwrap();
        let addrs: Vec<SocketAddr> = vec!["127.0.0.1:4433".parse().unwrap()];
        let info = service_info(SERVICE_TYPE, &mesh, peer(7), &addrs).unwrap();
        let node = parse_instance(&info.as_resolved_service()).unwrap();
        assert_eq!(node.mesh, mesh);
        assert_eq!(node.peer_id, peer(7));
        assert_eq!(node.addresses, addrs);
    }

    #[test]
    fn the_txt_stays_small_for_the_longest_mesh_id() {
        let label = "a".repeat(63);
        let longest = MeshId::new(&[&label[..], &label, &label, &label[..61]].join(".")).unwrap();
        assert_eq!(longest.as_str().len(), 253);
        let info = service_info(
            SERVICE_TYPE,
            &longest,
            peer(1),
            &["10.0.0.1:1".parse().unwrap()],
        )
        .unwrap();
        let txt_len: usize = info
            .get_properties()
            .iter()
            .map(|p| 1 + p.key().len() + p.val().map_or(0, |v| 1 + v.len()))
            .sum();
        assert!(txt_len < 400, "{txt_len} bytes");
        assert!(parse_instance(&info.as_resolved_service()).is_ok());
    }

    #[test]
    fn instance_names_are_one_label_and_unique_per_node_and_mesh() {
        let long = MeshId::new(&format!("{}.b", "a".repeat(63))).unwrap();
        let other = MeshId::new(&format!("{}.c", "a".repeat(63))).unwrap();
        let names = [
            instance_name(&long, peer(1)),
            instance_name(&other, peer(1)),
            instance_name(&long, peer(2)),
            instance_name(&MeshId::new("a.b").unwrap(), peer(1)),
            instance_name(&MeshId::new("a-b").unwrap(), peer(1)),
        ];
        for name in &names {
            assert!(name.len() <= 63 && !name.contains('.'), "{name}");
        }
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert!(
            instance_name(&MeshId::new("soccerpals").unwrap(), peer(1)).starts_with("soccerpals-")
        );
    }

    #[test]
    fn malformed_instances_are_ignored() {
        let id = peer(3).to_string();
        let good = [("m", "m"), ("id", id.as_str())];
        assert!(parse_instance(&resolved(&good, "10.0.0.1", 9)).is_ok());
        // (TXT, addresses, port, why it is ignored)
        type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, u16, Ignored);
        let cases: Vec<Case> = vec![
            (vec![("id", &id)], "10.0.0.1", 9, Ignored::NoMesh),
            (vec![("m", "m")], "10.0.0.1", 9, Ignored::NoPeerId),
            (
                vec![("m", "-bad-"), ("id", &id)],
                "10.0.0.1",
                9,
                Ignored::BadMesh,
            ),
            (
                vec![("m", "m"), ("id", "xyz")],
                "10.0.0.1",
                9,
                Ignored::BadPeerId,
            ),
            (
                vec![("v", "2"), ("m", "m"), ("id", &id)],
                "10.0.0.1",
                9,
                Ignored::Version,
            ),
            (good.to_vec(), "10.0.0.1", 0, Ignored::NoUsableAddress),
            (good.to_vec(), "0.0.0.0", 9, Ignored::NoUsableAddress),
            (good.to_vec(), "224.0.0.251", 9, Ignored::NoUsableAddress),
            (
                good.to_vec(),
                "255.255.255.255",
                9,
                Ignored::NoUsableAddress,
            ),
        ];
        for (props, ips, port, want) in cases {
            assert_eq!(
                parse_instance(&resolved(&props, ips, port)),
                Err(want),
                "{props:?} {ips} {port}"
            );
        }
        // A key without a value.
        let mut service = resolved(&good, "10.0.0.1", 9);
        service.txt_properties = resolved(&[("id", &id)], "10.0.0.1", 9).txt_properties;
        assert_eq!(parse_instance(&service), Err(Ignored::NoMesh));
    }

    #[test]
    fn huge_txt_is_ignored_and_addresses_are_filtered_and_capped() {
        let id = peer(3).to_string();
        let filler = "x".repeat(200);
        let mut props = vec![("m", "m"), ("id", id.as_str())];
        let keys: Vec<String> = (0..6).map(|i| format!("k{i}")).collect();
        for key in &keys {
            props.push((key.as_str(), filler.as_str()));
        }
        assert!(matches!(
            parse_instance(&resolved(&props, "10.0.0.1", 9)),
            Err(Ignored::TxtTooLarge(_))
        ));

        let many: Vec<String> = (1..=40).map(|i| format!("10.0.0.{i}")).collect();
        let ips = format!("0.0.0.0,224.0.0.1,127.0.0.1,{}", many.join(","));
        let node = parse_instance(&resolved(&[("m", "m"), ("id", &id)], &ips, 9)).unwrap();
        assert_eq!(node.addresses.len(), MAX_ADDRESSES);
        assert!(node.addresses.iter().all(|a| is_usable(a.ip())));
        assert!(!node.addresses[0].ip().is_loopback(), "loopback goes last");
    }

    #[test]
    fn unusable_own_addresses_are_not_published() {
        let mesh = MeshId::new("m").unwrap();
        let err = service_info(
            SERVICE_TYPE,
            &mesh,
            peer(1),
            &["0.0.0.0:5".parse().unwrap(), "10.0.0.1:0".parse().unwrap()],
        )
        .unwrap_err();
        assert!(matches!(err, MdnsError::NoUsableAddress { .. }));
    }

    #[test]
    fn service_types_are_checked_and_normalised() {
        for (given, want) in [
            ("_peerchannel._udp", SERVICE_TYPE),
            ("_peerchannel._udp.local", SERVICE_TYPE),
            ("_peerchannel._udp.local.", SERVICE_TYPE),
            ("_PC-Test._tcp", "_pc-test._tcp.local."),
        ] {
            assert_eq!(normalize_service_type(given).unwrap(), want, "{given}");
        }
        for bad in [
            "",
            "peerchannel._udp",
            "_peerchannel",
            "_peerchannel._sctp",
            "_a-very-long-service-name._udp",
            "_bad_name._udp",
            "_._udp",
        ] {
            assert!(normalize_service_type(bad).is_err(), "{bad} was accepted");
        }
    }
}
