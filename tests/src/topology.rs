//! The two-namespace test network: `fw` (the firewall host) and `peer` (the remote host) joined
//! by one veth pair. Only connected routes exist, neighbour entries are static (no ARP/NDP
//! during a test, so a blocked peer cannot poison the neighbour cache), and IPv6 addresses use
//! `nodad` so they work at once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Result, bail};

use crate::netns::{Netns, unique_name};

/// The firewall's addresses.
pub const FW4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const FW6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// The peer's main addresses.
pub const PEER4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
pub const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
/// The peer's second addresses: in the same /24 and /64, outside the /32 and /128.
pub const PEER4_ALT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 3);
pub const PEER6_ALT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 3);

/// Interface names (one per namespace, so parallel beds do not clash).
pub const FW_IF: &str = "fw0";
pub const PEER_IF: &str = "peer0";
const FW_MAC: &str = "02:00:5e:00:00:01";
const PEER_MAC: &str = "02:00:5e:00:00:02";

/// The firewall address of the same family as `src`.
pub fn fw_addr_for(src: IpAddr) -> IpAddr {
    match src {
        IpAddr::V4(_) => IpAddr::V4(FW4),
        IpAddr::V6(_) => IpAddr::V6(FW6),
    }
}

/// `fw` and `peer`, deleted (with the veth pair and every rule inside) on drop.
#[derive(Debug)]
pub struct Topology {
    pub fw: Netns,
    pub peer: Netns,
}

impl Topology {
    pub fn create() -> Result<Topology> {
        let fw = Netns::create(unique_name("fw")?)?;
        let peer = Netns::create(unique_name("peer")?)?;
        fw.ip(&[
            "link",
            "add",
            FW_IF,
            "address",
            FW_MAC,
            "type",
            "veth",
            "peer",
            "name",
            PEER_IF,
            "address",
            PEER_MAC,
            "netns",
            peer.name(),
        ])?;
        let peer_v4 = [PEER4, PEER4_ALT].map(|a| format!("{a}/24"));
        let peer_v6 = [PEER6, PEER6_ALT].map(|a| format!("{a}/64"));
        let sides: [(&Netns, &str, Vec<String>, Vec<String>); 2] = [
            (
                &fw,
                FW_IF,
                vec![format!("{FW4}/24")],
                vec![format!("{FW6}/64")],
            ),
            (&peer, PEER_IF, peer_v4.to_vec(), peer_v6.to_vec()),
        ];
        for (ns, dev, v4, v6) in &sides {
            ns.ip(&["link", "set", "lo", "up"])?;
            for a in v4 {
                ns.ip(&["addr", "add", a, "dev", dev])?;
            }
            for a in v6 {
                ns.ip(&["addr", "add", a, "dev", dev, "nodad"])?;
            }
            ns.ip(&["link", "set", dev, "up"])?;
        }
        for a in [
            PEER4.to_string(),
            PEER4_ALT.to_string(),
            PEER6.to_string(),
            PEER6_ALT.to_string(),
        ] {
            fw.ip(&[
                "neigh",
                "replace",
                &a,
                "lladdr",
                PEER_MAC,
                "dev",
                FW_IF,
                "nud",
                "permanent",
            ])?;
        }
        for a in [FW4.to_string(), FW6.to_string()] {
            peer.ip(&[
                "neigh",
                "replace",
                &a,
                "lladdr",
                FW_MAC,
                "dev",
                PEER_IF,
                "nud",
                "permanent",
            ])?;
        }
        for ns in [&fw, &peer] {
            check_connected_routes_only(ns)?;
        }
        Ok(Topology { fw, peer })
    }
}

impl Topology {
    /// Make the peer send every TCP segment as its own packet. A veth does TCP segmentation
    /// offload, so a multi-segment write (a large ClientHello) would otherwise cross the pair,
    /// and show in a capture, as one large packet; with `gso_max_segs 1` the kernel cuts it
    /// into MSS-sized segments first, as a real NIC would put them on the wire.
    pub fn segment_on_the_wire(&self) -> Result<()> {
        self.peer
            .ip(&["link", "set", "dev", PEER_IF, "gso_max_segs", "1"])?;
        Ok(())
    }
}

/// Fail unless every route is a connected one (no default route, no gateway): nothing a test
/// sends can leave the two namespaces.
fn check_connected_routes_only(ns: &Netns) -> Result<()> {
    for family in ["-4", "-6"] {
        let routes = ns.ip(&[family, "route", "show", "table", "all"])?;
        for line in routes.lines() {
            let first = line.split_whitespace().next().unwrap_or_default();
            if first == "default" || line.contains(" via ") {
                bail!("unexpected route in {}: {line}", ns.name());
            }
        }
    }
    Ok(())
}
