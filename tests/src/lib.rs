//! meds-e2e: the end-to-end test harness for Meds.
//!
//! It runs the real binaries (`meds-controld`, `meds-dataplane`, `medsctl`) against the real
//! kernel: two network namespaces joined by a veth pair, iptables/ip6tables and NFQUEUE. A
//! [`bed::Bed`] is one such test bed; its guards always clean up (namespaces, processes, temp
//! files), also when a test fails or panics, and on failure it keeps the temp dir and prints the
//! daemons' logs.
//!
//! Layout of a bed:
//! * namespace `fw`: `fw0` with 203.0.113.1/24 and 2001:db8:1::1/64, the dataplane
//!   (`ip netns exec fw meds-dataplane`, root) and TCP/UDP echo servers;
//! * namespace `peer`: `peer0` with 203.0.113.2 + .3/24 and 2001:db8:1::2 + ::3/64 (the second
//!   address of each family checks that a /32 or /128 blocks only its own host);
//! * the controller runs in the root namespace as `nobody` with a temp state dir; Unix sockets
//!   work across network namespaces, so the dataplane and `medsctl` reach it there.
//!
//! Traffic comes from threads that `setns(CLONE_NEWNET)` into the peer namespace (see
//! [`netns::Netns::enter`]) and from `ip netns exec peer ping`. Every probe times out within one
//! second; waiting is done with [`eventually::eventually`], never with fixed sleeps.
//!
//! The domain and TLS tests add, in the same namespaces: a DNS responder in `fw` ([`dns`]),
//! `openssl s_server` in `fw` and real TLS clients in `peer` ([`tls`]), and `tcpdump` captures
//! read by our own pcap reader, `meds-dataplane replay` and `tshark` ([`capture`]).
//!
//! Must not: send traffic anywhere but the namespaces it created, or touch the host's rules.
//! Tests skip (printing why) when not root or when `ip`/`iptables` are missing, unless
//! `MEDS_E2E_REQUIRE=1` is set (CI sets it), in which case skipping is a failure.

pub mod bed;
pub mod binaries;
pub mod capture;
pub mod dns;
pub mod eventually;
pub mod exposition;
pub mod feedserver;
pub mod frag;
pub mod host;
pub mod http;
pub mod medsctl;
pub mod netns;
pub mod process;
pub mod stats;
pub mod tls;
pub mod topology;
pub mod traffic;
pub mod workdir;

pub use bed::Bed;
pub use eventually::eventually;
