//! A thin ctnetlink layer: conntrack entries over a raw `NETLINK_NETFILTER` socket (libc only).
//!
//! It exists for revocation. Offloaded flows carry a "trusted" or a "blocked" bit in their
//! connection mark ([`crate::offload`]); when the policy changes, the entries carrying the
//! trusted bit whose peer is now blocked must switch to the blocked bit (the kernel then drops
//! the rest of the flow), and the blocked bit of entries whose peer is no longer blocked must be
//! cleared. This module is the mechanism; which entries to change is the caller's policy.
//!
//! * [`Conntrack::dump_marked`] streams the entries whose mark matches `value` under `mask`
//!   (`mark & mask == value`), filtered **in the kernel**: one `IPCTNL_MSG_CT_GET` +
//!   `NLM_F_DUMP` request with `CTA_MARK` and `CTA_MARK_MASK` (`ctnetlink_start` →
//!   `ctnetlink_alloc_filter`), nfgenmsg family `AF_UNSPEC` so both IPv4 and IPv6 come in one
//!   dump. Each message is decoded into an [`Entry`] on the stack and handed to a visitor; the
//!   table is never collected, so memory is one 64 KiB receive buffer whatever the table size.
//! * [`Updater::set_mark`] and [`Updater::delete`] address one entry again by the original
//!   tuple the kernel sent (its raw bytes, echoed as they came, plus `CTA_ZONE`), and wait for
//!   the kernel's acknowledgement. A vanished entry is `Ok(false)`, not an error.
//!
//! **Updates during a dump.** A [`Conntrack`] owns two sockets: one for dumps, and the
//! [`Updater`]'s for changes, which the visitor receives, so an entry can be re-marked the
//! moment it is seen: nothing is buffered, memory stays bounded for tables of millions of
//! entries. The kernel fills each dump chunk on demand (one per receive) without holding any
//! lock in between, and resumes after the id of the last entry it sent; if that entry was
//! deleted meanwhile it re-walks the hash bucket, so an entry may be visited twice (updates are
//! idempotent) but none is skipped. An entry the visitor re-marked out of the filter is not sent
//! again. A dump left unfinished (the visitor stopped early, or an error) is read to its end
//! and discarded before the socket is used again: the kernel allows one dump per socket.
//!
//! **Namespaces.** Both sockets belong to the network namespace of the thread that called
//! [`Conntrack::open`]; every later call works on that namespace, whichever thread makes it.
//!
//! **Mark semantics** (`ctnetlink_change_mark`, as read in 6.18): with `CTA_MARK_MASK`,
//! `new = (old & !mask) ^ value`; without it, `new = value`. This layer always sends the mask
//! and refuses a `value` with bits outside it ([`ConntrackError::MarkOutsideMask`]), so an
//! update is exactly `new = (old & !mask) | value` and the bits outside `mask`, which belong to
//! other software, never change. A kernel that ignored `CTA_MARK_MASK` in updates would
//! overwrite the whole mark; the netns test (`tests/conntrack_netns.rs`) checks that the other
//! bits are kept on the running kernel.
//!
//! **Identity.** `set_mark` finds the entry by its tuple (the kernel has no id check for
//! updates): if the flow ended and a new one with the same 5-tuple took its place between the
//! dump and the update, the new one is changed — it has the same peers, so the same policy
//! applies. `delete` also sends `CTA_ID`, so it never removes a different connection.
//!
//! Written from the kernel UAPI headers (`linux/netlink.h`, `linux/netfilter/nfnetlink.h`,
//! `linux/netfilter/nfnetlink_conntrack.h`, `linux/netfilter/nf_conntrack_tuple_common.h`) and
//! checked against `net/netfilter/nf_conntrack_netlink.c` of 6.18. Every decoder is total: the
//! input is bounds-checked at every nesting level, malformed input is an error, never a panic,
//! and nothing is allocated per entry. Not for the packet path: every call is a system call
//! round trip.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::ControlFlow;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

/// Kernel UAPI constants, named as in the headers.
mod uapi {
    // linux/netlink.h
    pub const NLA_HDRLEN: usize = 4;
    pub const NLMSG_NOOP: u16 = 1;
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLMSG_DONE: u16 = 3;
    pub const NLM_F_REQUEST: u16 = 0x1;
    pub const NLM_F_ACK: u16 = 0x4;
    /// `NLM_F_ROOT | NLM_F_MATCH`.
    pub const NLM_F_DUMP: u16 = 0x300;
    pub const NLA_F_NESTED: u16 = 0x8000;
    pub const NLA_TYPE_MASK: u16 = 0x3fff;

    // linux/netfilter/nfnetlink.h
    pub const NFGENMSG_LEN: usize = 4;
    pub const NFNL_SUBSYS_CTNETLINK: u16 = 1;

    // linux/netfilter/nfnetlink_conntrack.h: enum cntl_msg_types
    pub const IPCTNL_MSG_CT_NEW: u16 = 0;
    pub const IPCTNL_MSG_CT_GET: u16 = 1;
    pub const IPCTNL_MSG_CT_DELETE: u16 = 2;
    pub const IPCTNL_MSG_CT_GET_STATS: u16 = 5;

    // enum ctattr_type
    pub const CTA_TUPLE_ORIG: u16 = 1;
    pub const CTA_TUPLE_REPLY: u16 = 2;
    pub const CTA_MARK: u16 = 8;
    pub const CTA_ID: u16 = 12;
    pub const CTA_ZONE: u16 = 18;
    pub const CTA_MARK_MASK: u16 = 21;

    // enum ctattr_tuple
    pub const CTA_TUPLE_IP: u16 = 1;
    pub const CTA_TUPLE_PROTO: u16 = 2;
    pub const CTA_TUPLE_ZONE: u16 = 3;

    // enum ctattr_ip
    pub const CTA_IP_V4_SRC: u16 = 1;
    pub const CTA_IP_V4_DST: u16 = 2;
    pub const CTA_IP_V6_SRC: u16 = 3;
    pub const CTA_IP_V6_DST: u16 = 4;

    // enum ctattr_l4proto
    pub const CTA_PROTO_NUM: u16 = 1;
    pub const CTA_PROTO_SRC_PORT: u16 = 2;
    pub const CTA_PROTO_DST_PORT: u16 = 3;
    pub const CTA_PROTO_ICMP_ID: u16 = 4;
    pub const CTA_PROTO_ICMP_TYPE: u16 = 5;
    pub const CTA_PROTO_ICMP_CODE: u16 = 6;
    pub const CTA_PROTO_ICMPV6_ID: u16 = 7;
    pub const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
    pub const CTA_PROTO_ICMPV6_CODE: u16 = 9;

    // linux/socket.h, linux/in.h
    pub const AF_UNSPEC: u8 = 0;
    pub const AF_INET: u8 = 2;
    pub const AF_INET6: u8 = 10;
    pub const IPPROTO_ICMPV6: u8 = 58;

    /// `(NFNL_SUBSYS_CTNETLINK << 8) | msg`.
    pub const fn ctnl_msg_type(msg: u16) -> u16 {
        (NFNL_SUBSYS_CTNETLINK << 8) | msg
    }
}

use crate::netlink::{
    Messages, OpenStep, Writer, ack_errno, align4, open_bound, read_u16_ne, recv_datagram,
    send_to_kernel, set_int_option, set_recv_timeout,
};
use uapi::*;

/// Bytes kept of an entry's original tuple (the `CTA_TUPLE_ORIG` payload) to address it again.
/// The largest tuple the kernel sends (IPv6 + ICMPv6 + a directional zone) is 88 bytes.
pub const TUPLE_CAPACITY: usize = 128;

/// Receive buffer for dump datagrams. The kernel caps a dump chunk at 32 KiB
/// (`netlink_recvmsg`: `SKB_WITH_OVERHEAD(32768)`), so a chunk is never cut.
const DUMP_BUFFER_LEN: usize = 64 * 1024;
/// SO_RCVBUF asked for the dump socket: the kernel queues one chunk at a time.
const DUMP_RCVBUF: usize = 256 * 1024;
/// SO_RCVBUF asked for the update socket: it only ever receives acknowledgements.
const UPDATE_RCVBUF: usize = 64 * 1024;
/// Receive timeout of the dump socket. The kernel fills the next chunk inside our receive,
/// so a healthy dump never waits; this only bounds a stuck one.
const DUMP_RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// Receive timeout of the update socket (one wait for an acknowledgement).
const UPDATE_RECV_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a request waits for its acknowledgement in total.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// How many datagrams a request reads at most while waiting for its acknowledgement.
const ACK_MAX_DATAGRAMS: usize = 64;
/// Stack buffer for acknowledgements (NETLINK_CAP_ACK keeps them at 36 bytes; without it an
/// error echoes the request, at most `REQUEST_CAPACITY` bytes).
const ACK_BUFFER_LEN: usize = 1024;
/// Stack buffer a request is built in (header + nfgenmsg + tuple + zone + mark + mask + id).
const REQUEST_CAPACITY: usize = 256;
/// Consecutive interrupted or foreign receives tolerated before a dump gives up.
const DUMP_MAX_IDLE_RECEIVES: usize = 64;

/// What was being done when a [`ConntrackError`] happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// [`Conntrack::open`]: the update socket and the probe request.
    Open,
    /// [`Conntrack::dump_marked`].
    Dump,
    /// [`Updater::set_mark`].
    SetMark,
    /// [`Updater::delete`].
    Delete,
    /// [`Entry::parse`] of a message given by the caller.
    Decode,
    /// [`Entry::from_parts`].
    Encode,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Open => "open ctnetlink",
            Op::Dump => "dump conntrack entries",
            Op::SetMark => "set conntrack mark",
            Op::Delete => "delete conntrack entry",
            Op::Decode => "decode conntrack entry",
            Op::Encode => "encode conntrack tuple",
        })
    }
}

/// A failure of one conntrack operation; every message starts with the operation.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("{op}: open netlink socket: {error}")]
    Socket { op: Op, error: io::Error },
    #[error("{op}: bind netlink socket: {error}")]
    BindSocket { op: Op, error: io::Error },
    #[error("{op}: set socket option {option}: {error}")]
    SocketOption {
        op: Op,
        option: &'static str,
        error: io::Error,
    },
    /// The value has bits outside the mask: the kernel would flip (update) or never match
    /// (dump) them, so the request is refused before it is sent.
    #[error("{op}: mark value {value:#x} has bits outside the mask {mask:#x}")]
    MarkOutsideMask { op: Op, value: u32, mask: u32 },
    #[error("{op}: send request: {error}")]
    Send { op: Op, error: io::Error },
    #[error("{op}: receive: {error}")]
    Recv { op: Op, error: io::Error },
    #[error("{op}: no answer from the kernel within {timeout:?}")]
    Timeout { op: Op, timeout: Duration },
    /// The kernel answered with an error (`NLMSG_ERROR`, or a failed dump's `NLMSG_DONE`).
    #[error("{op}: the kernel refused: {error}{hint}", hint = kernel_hint(.error))]
    Kernel { op: Op, error: io::Error },
    /// Input that does not decode (the framing of a dump datagram, a caller's message, or a
    /// tuple that cannot be encoded).
    #[error("{op}: malformed message: {what}")]
    Malformed { op: Op, what: &'static str },
}

fn kernel_hint(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EPERM) => " (CAP_NET_ADMIN is missing)",
        Some(libc::EOPNOTSUPP) => " (kernel without conntrack mark support?)",
        Some(libc::EBUSY) => " (a dump on this socket is still running; open a new handle)",
        _ => "",
    }
}

impl ConntrackError {
    /// The operation that failed.
    pub fn op(&self) -> Op {
        match self {
            ConntrackError::Socket { op, .. }
            | ConntrackError::BindSocket { op, .. }
            | ConntrackError::SocketOption { op, .. }
            | ConntrackError::MarkOutsideMask { op, .. }
            | ConntrackError::Send { op, .. }
            | ConntrackError::Recv { op, .. }
            | ConntrackError::Timeout { op, .. }
            | ConntrackError::Kernel { op, .. }
            | ConntrackError::Malformed { op, .. } => *op,
        }
    }

    /// The errno behind this failure, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            ConntrackError::Socket { error, .. }
            | ConntrackError::BindSocket { error, .. }
            | ConntrackError::SocketOption { error, .. }
            | ConntrackError::Send { error, .. }
            | ConntrackError::Recv { error, .. }
            | ConntrackError::Kernel { error, .. } => error.raw_os_error(),
            ConntrackError::MarkOutsideMask { .. }
            | ConntrackError::Timeout { .. }
            | ConntrackError::Malformed { .. } => None,
        }
    }
}

fn check_mark(op: Op, value: u32, mask: u32) -> Result<(), ConntrackError> {
    if value & !mask == 0 {
        Ok(())
    } else {
        Err(ConntrackError::MarkOutsideMask { op, value, mask })
    }
}

// ---------------------------------------------------------------------------------------------
// Entries.

/// The layer-4 keys of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4 {
    /// TCP, UDP, UDP-Lite, SCTP, DCCP (ports) and GRE (keys, sent in the port attributes).
    Ports { src: u16, dst: u16 },
    /// ICMP or ICMPv6 (which one follows from the tuple's protocol): the identifier is the
    /// source key, type and code the destination keys.
    Icmp { id: u16, icmp_type: u8, code: u8 },
    /// A protocol the kernel tracks by addresses only.
    Other,
}

/// One direction of a connection, as conntrack records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, …).
    pub protocol: u8,
    pub l4: L4,
    /// `CTA_TUPLE_ZONE`: a zone that applies to this direction only.
    pub zone: Option<u16>,
}

/// One conntrack entry, decoded from a dump message. Plain data on the stack (no heap); it
/// keeps the raw original tuple so that [`Updater::set_mark`] and [`Updater::delete`] can
/// address the entry again exactly as the kernel named it.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    original: Tuple,
    reply: Tuple,
    mark: u32,
    zone: Option<u16>,
    id: Option<u32>,
    /// The `CTA_TUPLE_ORIG` payload; never empty (decoding and encoding refuse that).
    orig_raw: [u8; TUPLE_CAPACITY],
    orig_raw_len: usize,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("original", &self.original)
            .field("reply", &self.reply)
            .field("mark", &format_args!("{:#x}", self.mark))
            .field("zone", &self.zone)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Entry {
    /// The tuple of the direction that opened the connection.
    pub fn original(&self) -> &Tuple {
        &self.original
    }

    /// The tuple of the answers: after NAT, its source is the host that really answers.
    pub fn reply(&self) -> &Tuple {
        &self.reply
    }

    /// The connection mark (0 when the kernel sent none).
    pub fn mark(&self) -> u32 {
        self.mark
    }

    /// `CTA_ZONE`: the conntrack zone of both directions, when not the default zone.
    pub fn zone(&self) -> Option<u16> {
        self.zone
    }

    /// `CTA_ID`: the kernel's id of this connection (unique while it lives).
    pub fn id(&self) -> Option<u32> {
        self.id
    }

    /// The two ends of the connection: `[original source, reply source]` — the host that
    /// opened it, and the host that answers it (after destination NAT, the real server, not
    /// the address the opener dialled). For a flow terminated on this host one of the two is a
    /// local address and the other is the remote peer (inbound: `[remote, local]`; outbound:
    /// `[local, remote]`); for a forwarded flow both are remote. A caller deciding whether a
    /// connection touches a blocked address checks both.
    pub fn peers(&self) -> [IpAddr; 2] {
        [self.original.src, self.reply.src]
    }

    /// `AF_INET` or `AF_INET6` (the nfgenmsg family of an update for this entry).
    fn family(&self) -> u8 {
        if self.original.src.is_ipv4() {
            AF_INET
        } else {
            AF_INET6
        }
    }

    fn orig_raw(&self) -> &[u8] {
        self.orig_raw.get(..self.orig_raw_len).unwrap_or_default()
    }

    /// Build an entry from its parts (for tests, and to address a connection known otherwise).
    /// The original tuple is encoded the way the kernel sends it. Fails when the addresses mix
    /// IPv4 and IPv6.
    pub fn from_parts(
        original: Tuple,
        reply: Tuple,
        mark: u32,
        zone: Option<u16>,
        id: Option<u32>,
    ) -> Result<Entry, ConntrackError> {
        let malformed = |what| ConntrackError::Malformed {
            op: Op::Encode,
            what,
        };
        let v4 = original.src.is_ipv4();
        let consistent = [original.dst, reply.src, reply.dst]
            .iter()
            .all(|a| a.is_ipv4() == v4);
        if !consistent {
            return Err(malformed("the tuples mix IPv4 and IPv6 addresses"));
        }
        let mut w: Writer<TUPLE_CAPACITY> = Writer::new();
        encode_tuple(&mut w, &original);
        let raw = w
            .bytes()
            .ok_or(malformed("original tuple larger than the capacity"))?;
        let mut orig_raw = [0u8; TUPLE_CAPACITY];
        let orig_raw_len = raw.len();
        orig_raw
            .get_mut(..orig_raw_len)
            .ok_or(malformed("original tuple larger than the capacity"))?
            .copy_from_slice(raw);
        Ok(Entry {
            original,
            reply,
            mark,
            zone,
            id,
            orig_raw,
            orig_raw_len,
        })
    }

    /// Decode one netlink message (header included) carrying a conntrack entry
    /// (`IPCTNL_MSG_CT_NEW` as in dumps and events, or `IPCTNL_MSG_CT_DELETE`). Total over any
    /// input: malformed input is an error, never a panic, and nothing is allocated.
    pub fn parse(message: &[u8]) -> Result<Entry, ConntrackError> {
        let malformed = |what| ConntrackError::Malformed {
            op: Op::Decode,
            what,
        };
        let mut messages = Messages::new(message);
        let raw = match messages.next() {
            Some(Ok(raw)) => raw,
            Some(Err(what)) => return Err(malformed(what)),
            None => return Err(malformed("empty input")),
        };
        if raw.truncated {
            return Err(malformed("netlink message runs past the input"));
        }
        if raw.msg_type != ctnl_msg_type(IPCTNL_MSG_CT_NEW)
            && raw.msg_type != ctnl_msg_type(IPCTNL_MSG_CT_DELETE)
        {
            return Err(malformed("not a conntrack entry message"));
        }
        decode_entry(raw.body).map_err(malformed)
    }
}

/// What one [`Conntrack::dump_marked`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DumpSummary {
    /// Entries decoded and handed to the visitor.
    pub entries: u64,
    /// Entry messages that did not decode; skipped (the rest of the dump still ran).
    pub malformed: u64,
    /// The visitor stopped the dump early.
    pub stopped: bool,
}

// ---------------------------------------------------------------------------------------------
// Sockets.

/// A ctnetlink handle: a socket for dumps with its receive buffer, and the [`Updater`] (a
/// second socket, for changes). Not for the packet path.
#[derive(Debug)]
pub struct Conntrack {
    updater: Updater,
    dump_socket: NlSocket,
    dump_buf: Box<[u8]>,
    dump_seq: u32,
    /// The sequence number of a dump that was not read to its end.
    unfinished: Option<u32>,
}

/// The socket that changes entries. Handed to the visitor of [`Conntrack::dump_marked`] so
/// that entries can be changed while the dump runs.
#[derive(Debug)]
pub struct Updater {
    socket: NlSocket,
    seq: u32,
}

impl Conntrack {
    /// Open the two `NETLINK_NETFILTER` sockets (explicit receive buffers, receive timeouts;
    /// `NETLINK_CAP_ACK` on the update socket) in the calling thread's network namespace, and
    /// check that ctnetlink answers: an `IPCTNL_MSG_CT_GET_STATS` probe must be acknowledged,
    /// so a missing CAP_NET_ADMIN or ctnetlink support fails here, at start-up, rather than at
    /// the first policy change. Allocates the 64 KiB dump buffer once.
    pub fn open() -> Result<Conntrack, ConntrackError> {
        let socket = NlSocket::open(Op::Open, UPDATE_RCVBUF, UPDATE_RECV_TIMEOUT)?;
        // Errors are acknowledged with the request header only, not the whole request. Older
        // kernels lack the option; the acknowledgement buffer holds a full echo anyway.
        let _ = set_int_option(&socket.fd, libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1);
        let mut updater = Updater { socket, seq: 0 };
        let seq = updater.next_seq();
        let mut msg: Writer<REQUEST_CAPACITY> = Writer::request(
            ctnl_msg_type(IPCTNL_MSG_CT_GET_STATS),
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            AF_UNSPEC,
        );
        updater.transact(Op::Open, &mut msg, seq)?;
        let dump_socket = NlSocket::open(Op::Open, DUMP_RCVBUF, DUMP_RECV_TIMEOUT)?;
        Ok(Conntrack {
            updater,
            dump_socket,
            dump_buf: vec![0u8; DUMP_BUFFER_LEN].into_boxed_slice(),
            dump_seq: 0,
            unfinished: None,
        })
    }

    /// Visit every entry (IPv4 and IPv6) whose mark satisfies `mark & mask == value`, filtered
    /// by the kernel; `dump_marked(0, 0, …)` visits the whole table. The visitor gets each
    /// entry and the [`Updater`], with which it may change or delete entries while the dump
    /// runs (see the module documentation); returning `ControlFlow::Break(())` ends the visit
    /// (the rest of the dump is then read and discarded, which costs a walk of the remaining
    /// matching entries).
    ///
    /// Entry messages that do not decode are skipped and counted in the summary; a framing
    /// error, a kernel error or a stuck dump is an error (entries visited until then stay
    /// visited). Allocates nothing per entry.
    pub fn dump_marked<F>(
        &mut self,
        value: u32,
        mask: u32,
        mut visit: F,
    ) -> Result<DumpSummary, ConntrackError>
    where
        F: FnMut(&Entry, &mut Updater) -> ControlFlow<()>,
    {
        check_mark(Op::Dump, value, mask)?;
        self.finish_unfinished()?;
        self.dump_seq = self.dump_seq.wrapping_add(1);
        let seq = self.dump_seq;
        let mut msg = dump_request(seq, value, mask);
        let bytes = msg.message().ok_or(ConntrackError::Malformed {
            op: Op::Dump,
            what: "request larger than its buffer",
        })?;
        self.dump_socket
            .send(bytes)
            .map_err(|error| ConntrackError::Send {
                op: Op::Dump,
                error,
            })?;
        self.unfinished = Some(seq);

        let Conntrack {
            updater,
            dump_socket,
            dump_buf,
            unfinished,
            ..
        } = self;
        let mut summary = DumpSummary::default();
        let mut idle = 0usize;
        loop {
            let len = match dump_socket.recv(dump_buf, false) {
                Ok(Received::Datagram { len, truncated }) => {
                    if truncated {
                        return Err(ConntrackError::Malformed {
                            op: Op::Dump,
                            what: "datagram larger than the receive buffer",
                        });
                    }
                    idle = 0;
                    len
                }
                Ok(Received::Empty) => {
                    return Err(ConntrackError::Timeout {
                        op: Op::Dump,
                        timeout: DUMP_RECV_TIMEOUT,
                    });
                }
                Ok(Received::Interrupted | Received::Foreign) => {
                    idle += 1;
                    if idle > DUMP_MAX_IDLE_RECEIVES {
                        return Err(ConntrackError::Timeout {
                            op: Op::Dump,
                            timeout: DUMP_RECV_TIMEOUT,
                        });
                    }
                    continue;
                }
                Err(error) => {
                    return Err(ConntrackError::Recv {
                        op: Op::Dump,
                        error,
                    });
                }
            };
            let datagram = dump_buf.get(..len).unwrap_or_default();
            let progress = walk_dump_datagram(datagram, seq, &mut summary, &mut |entry| {
                visit(entry, updater)
            });
            match progress {
                Ok(DumpProgress::More) => {}
                Ok(DumpProgress::Done) => {
                    *unfinished = None;
                    return Ok(summary);
                }
                Ok(DumpProgress::Stopped) => {
                    summary.stopped = true;
                    // Best effort now; if it fails, the next dump tries again first.
                    if drain(dump_socket, dump_buf, seq).is_ok() {
                        *unfinished = None;
                    }
                    return Ok(summary);
                }
                Err(e @ ConntrackError::Kernel { .. }) => {
                    // NLMSG_DONE or NLMSG_ERROR of this dump: the kernel ended it.
                    *unfinished = None;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Read an unfinished dump to its end, discarding it, so the socket can start a new one.
    fn finish_unfinished(&mut self) -> Result<(), ConntrackError> {
        if let Some(seq) = self.unfinished {
            drain(&self.dump_socket, &mut self.dump_buf, seq)?;
            self.unfinished = None;
        }
        Ok(())
    }

    /// [`Updater::set_mark`] on this handle's update socket.
    pub fn set_mark(
        &mut self,
        entry: &Entry,
        value: u32,
        mask: u32,
    ) -> Result<bool, ConntrackError> {
        self.updater.set_mark(entry, value, mask)
    }

    /// [`Updater::delete`] on this handle's update socket.
    pub fn delete(&mut self, entry: &Entry) -> Result<bool, ConntrackError> {
        self.updater.delete(entry)
    }

    /// The update socket, for changes outside a dump.
    pub fn updater(&mut self) -> &mut Updater {
        &mut self.updater
    }
}

impl Updater {
    /// Change the bits `mask` of the entry's connection mark to `value`, leaving every other
    /// bit as it is: the kernel computes `(old & !mask) ^ value`, and `value` must lie inside
    /// `mask` ([`ConntrackError::MarkOutsideMask`] otherwise), which makes it
    /// `(old & !mask) | value`. `IPCTNL_MSG_CT_NEW` without `NLM_F_CREATE` (never creates an
    /// entry) with the original tuple, `CTA_ZONE`, `CTA_MARK` and `CTA_MARK_MASK`; waits for
    /// the acknowledgement. `Ok(false)` when no entry has this tuple any more.
    pub fn set_mark(
        &mut self,
        entry: &Entry,
        value: u32,
        mask: u32,
    ) -> Result<bool, ConntrackError> {
        check_mark(Op::SetMark, value, mask)?;
        let seq = self.next_seq();
        let mut msg = set_mark_request(seq, entry, value, mask);
        self.transact(Op::SetMark, &mut msg, seq)
    }

    /// Delete the entry (`IPCTNL_MSG_CT_DELETE` with the original tuple, `CTA_ZONE` and
    /// `CTA_ID`, so a newer connection that reuses the tuple is left alone). `Ok(false)` when
    /// the entry is gone already.
    pub fn delete(&mut self, entry: &Entry) -> Result<bool, ConntrackError> {
        let seq = self.next_seq();
        let mut msg = delete_request(seq, entry);
        self.transact(Op::Delete, &mut msg, seq)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Send one request and wait for its acknowledgement: `Ok(true)` on success, `Ok(false)`
    /// on ENOENT. Messages that answer other (older, timed-out) requests are skipped.
    fn transact(
        &mut self,
        op: Op,
        msg: &mut Writer<REQUEST_CAPACITY>,
        seq: u32,
    ) -> Result<bool, ConntrackError> {
        let bytes = msg.message().ok_or(ConntrackError::Malformed {
            op,
            what: "request larger than its buffer",
        })?;
        self.socket
            .send(bytes)
            .map_err(|error| ConntrackError::Send { op, error })?;
        let mut buf = [0u8; ACK_BUFFER_LEN];
        let deadline = Instant::now() + ACK_TIMEOUT;
        for _ in 0..ACK_MAX_DATAGRAMS {
            if Instant::now() >= deadline {
                break;
            }
            let len = match self.socket.recv(&mut buf, false) {
                // A cut datagram still holds the errno at the start of its first message.
                Ok(Received::Datagram { len, .. }) => len,
                Ok(Received::Empty | Received::Interrupted | Received::Foreign) => continue,
                Err(error) => return Err(ConntrackError::Recv { op, error }),
            };
            if let Some(answer) = find_ack(buf.get(..len).unwrap_or_default(), seq) {
                return match answer {
                    Some(0) => Ok(true),
                    Some(libc::ENOENT) => Ok(false),
                    Some(errno) => Err(ConntrackError::Kernel {
                        op,
                        error: io::Error::from_raw_os_error(errno),
                    }),
                    None => Err(ConntrackError::Malformed {
                        op,
                        what: "netlink error message too short",
                    }),
                };
            }
        }
        Err(ConntrackError::Timeout {
            op,
            timeout: ACK_TIMEOUT,
        })
    }
}

/// Read and discard what is left of dump `seq`: until its `NLMSG_DONE` (or `NLMSG_ERROR`), or
/// until nothing is queued. The kernel queues the next chunk of a running dump inside every
/// receive that takes one, so an empty queue means no dump is running any more.
fn drain(socket: &NlSocket, buf: &mut [u8], seq: u32) -> Result<(), ConntrackError> {
    loop {
        match socket.recv(buf, true) {
            Ok(Received::Datagram { len, .. }) => {
                let datagram = buf.get(..len).unwrap_or_default();
                let ended = Messages::new(datagram).map_while(Result::ok).any(|m| {
                    m.seq == seq && (m.msg_type == NLMSG_DONE || m.msg_type == NLMSG_ERROR)
                });
                if ended {
                    return Ok(());
                }
            }
            Ok(Received::Empty) => return Ok(()),
            Ok(Received::Interrupted | Received::Foreign) => {}
            Err(error) => {
                return Err(ConntrackError::Recv {
                    op: Op::Dump,
                    error,
                });
            }
        }
    }
}

/// The acknowledgement of request `seq` in a datagram: `Some(Some(errno))` (0 = success),
/// `Some(None)` when it is too short to read, `None` when the datagram does not answer `seq`.
fn find_ack(datagram: &[u8], seq: u32) -> Option<Option<i32>> {
    Messages::new(datagram)
        .map_while(Result::ok)
        .find(|m| m.msg_type == NLMSG_ERROR && m.seq == seq)
        .map(|m| ack_errno(m.body))
}

/// An open `NETLINK_NETFILTER` socket, bound with a kernel-assigned port id.
#[derive(Debug)]
struct NlSocket {
    fd: OwnedFd,
}

enum Received {
    Datagram {
        len: usize,
        truncated: bool,
    },
    /// Nothing arrived within the receive timeout (or, non-blocking, nothing was queued).
    Empty,
    Interrupted,
    /// A datagram from another socket than the kernel's; dropped.
    Foreign,
}

impl NlSocket {
    fn open(op: Op, rcvbuf: usize, timeout: Duration) -> Result<NlSocket, ConntrackError> {
        let fd = open_bound().map_err(|(step, error)| match step {
            OpenStep::Socket => ConntrackError::Socket { op, error },
            OpenStep::Bind => ConntrackError::BindSocket { op, error },
        })?;
        let option_error = |option, error| ConntrackError::SocketOption { op, option, error };
        let want = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
        match set_int_option(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                set_int_option(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, want)
                    .map_err(|e| option_error("SO_RCVBUF", e))?;
            }
            Err(e) => return Err(option_error("SO_RCVBUFFORCE", e)),
        }
        set_recv_timeout(&fd, timeout).map_err(|e| option_error("SO_RCVTIMEO", e))?;
        Ok(NlSocket { fd })
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        send_to_kernel(&self.fd, bytes)
    }

    /// Receive one datagram; `nonblocking` returns [`Received::Empty`] at once when nothing
    /// is queued instead of waiting for the receive timeout.
    fn recv(&self, buf: &mut [u8], nonblocking: bool) -> io::Result<Received> {
        let flags = if nonblocking { libc::MSG_DONTWAIT } else { 0 };
        let datagram = match recv_datagram(&self.fd, buf, flags) {
            Ok(datagram) => datagram,
            Err(error) => {
                return match error.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(Received::Empty),
                    Some(libc::EINTR) => Ok(Received::Interrupted),
                    _ => Err(error),
                };
            }
        };
        if datagram.sender != 0 {
            return Ok(Received::Foreign);
        }
        Ok(Received::Datagram {
            len: datagram.len.min(buf.len()),
            truncated: datagram.len > buf.len(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Building requests (fixed-size stack buffers, no allocation).

fn dump_request(seq: u32, value: u32, mask: u32) -> Writer<REQUEST_CAPACITY> {
    let mut msg = Writer::request(
        ctnl_msg_type(IPCTNL_MSG_CT_GET),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        AF_UNSPEC,
    );
    msg.attr(CTA_MARK, &value.to_be_bytes());
    msg.attr(CTA_MARK_MASK, &mask.to_be_bytes());
    msg
}

/// The attributes that name an entry: its original tuple (exactly as the kernel sent it; never
/// empty, see [`Entry`]) and its zone.
fn put_entry_key(msg: &mut Writer<REQUEST_CAPACITY>, entry: &Entry) {
    msg.attr(CTA_TUPLE_ORIG | NLA_F_NESTED, entry.orig_raw());
    if let Some(zone) = entry.zone {
        msg.attr(CTA_ZONE, &zone.to_be_bytes());
    }
}

fn set_mark_request(seq: u32, entry: &Entry, value: u32, mask: u32) -> Writer<REQUEST_CAPACITY> {
    // No NLM_F_CREATE: an entry that is gone is not created again (ENOENT).
    let mut msg = Writer::request(
        ctnl_msg_type(IPCTNL_MSG_CT_NEW),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        entry.family(),
    );
    put_entry_key(&mut msg, entry);
    msg.attr(CTA_MARK, &value.to_be_bytes());
    msg.attr(CTA_MARK_MASK, &mask.to_be_bytes());
    msg
}

fn delete_request(seq: u32, entry: &Entry) -> Writer<REQUEST_CAPACITY> {
    // A delete without a tuple would flush the whole table; `put_entry_key` always writes one.
    let mut msg = Writer::request(
        ctnl_msg_type(IPCTNL_MSG_CT_DELETE),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        entry.family(),
    );
    put_entry_key(&mut msg, entry);
    if let Some(id) = entry.id {
        msg.attr(CTA_ID, &id.to_be_bytes());
    }
    msg
}

/// The payload of a `CTA_TUPLE_*` attribute, as the kernel encodes it.
fn encode_tuple<const N: usize>(w: &mut Writer<N>, tuple: &Tuple) {
    let ip = w.nest_start(CTA_TUPLE_IP);
    match (tuple.src, tuple.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            w.attr(CTA_IP_V4_SRC, &src.octets());
            w.attr(CTA_IP_V4_DST, &dst.octets());
        }
        (src, dst) => {
            w.attr(CTA_IP_V6_SRC, &ipv6_of(src).octets());
            w.attr(CTA_IP_V6_DST, &ipv6_of(dst).octets());
        }
    }
    w.nest_end(ip);
    let proto = w.nest_start(CTA_TUPLE_PROTO);
    w.attr(CTA_PROTO_NUM, &[tuple.protocol]);
    match tuple.l4 {
        L4::Ports { src, dst } => {
            w.attr(CTA_PROTO_SRC_PORT, &src.to_be_bytes());
            w.attr(CTA_PROTO_DST_PORT, &dst.to_be_bytes());
        }
        L4::Icmp {
            id,
            icmp_type,
            code,
        } => {
            let (id_attr, type_attr, code_attr) = if tuple.protocol == IPPROTO_ICMPV6 {
                (
                    CTA_PROTO_ICMPV6_ID,
                    CTA_PROTO_ICMPV6_TYPE,
                    CTA_PROTO_ICMPV6_CODE,
                )
            } else {
                (CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE)
            };
            w.attr(id_attr, &id.to_be_bytes());
            w.attr(type_attr, &[icmp_type]);
            w.attr(code_attr, &[code]);
        }
        L4::Other => {}
    }
    w.nest_end(proto);
    if let Some(zone) = tuple.zone {
        w.attr(CTA_TUPLE_ZONE, &zone.to_be_bytes());
    }
}

fn ipv6_of(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

// ---------------------------------------------------------------------------------------------
// Walking received datagrams (total, bounds-checked, no allocation).

/// The payload as `N` bytes, only if it is exactly that long.
fn exact<const N: usize>(payload: &[u8]) -> Option<[u8; N]> {
    payload.try_into().ok()
}

fn exact_u8(payload: &[u8], what: &'static str) -> Result<u8, &'static str> {
    exact::<1>(payload).map(|[b]| b).ok_or(what)
}

fn exact_be16(payload: &[u8], what: &'static str) -> Result<u16, &'static str> {
    exact(payload).map(u16::from_be_bytes).ok_or(what)
}

fn exact_be32(payload: &[u8], what: &'static str) -> Result<u32, &'static str> {
    exact(payload).map(u32::from_be_bytes).ok_or(what)
}

/// Iterator over the attributes of one attribute stream (a message body after its fixed
/// header, or a nested attribute's payload): `(type without flags, payload)`. Stops after the
/// first error.
struct Attrs<'a> {
    buf: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> Attrs<'a> {
    fn new(buf: &'a [u8]) -> Attrs<'a> {
        Attrs {
            buf,
            offset: 0,
            done: false,
        }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.offset >= self.buf.len() {
            return None;
        }
        let start = self.offset;
        let (Some(len), Some(attr_type)) = (
            read_u16_ne(self.buf, start),
            read_u16_ne(self.buf, start + 2),
        ) else {
            self.done = true;
            return Some(Err("attribute header truncated"));
        };
        let len = usize::from(len);
        if len < NLA_HDRLEN {
            self.done = true;
            return Some(Err("attribute length below its header"));
        }
        let Some(payload) = self.buf.get(start + NLA_HDRLEN..start + len) else {
            self.done = true;
            return Some(Err("attribute runs past its container"));
        };
        // The last attribute's padding may be missing; the next call then ends the walk.
        self.offset = start.saturating_add(align4(len));
        Some(Ok((attr_type & NLA_TYPE_MASK, payload)))
    }
}

/// Decode the body (after the netlink header) of an entry message.
fn decode_entry(body: &[u8]) -> Result<Entry, &'static str> {
    let family = *body.first().ok_or("nfgenmsg header truncated")?;
    let attrs = body
        .get(NFGENMSG_LEN..)
        .ok_or("nfgenmsg header truncated")?;
    let mut original = None;
    let mut orig_raw: &[u8] = &[];
    let mut reply = None;
    let mut mark = 0;
    let mut zone = None;
    let mut id = None;
    for attr in Attrs::new(attrs) {
        let (attr_type, payload) = attr?;
        match attr_type {
            CTA_TUPLE_ORIG => {
                original = Some(decode_tuple(payload)?);
                orig_raw = payload;
            }
            CTA_TUPLE_REPLY => reply = Some(decode_tuple(payload)?),
            CTA_MARK => mark = exact_be32(payload, "mark attribute is not 4 bytes")?,
            CTA_ZONE => zone = Some(exact_be16(payload, "zone attribute is not 2 bytes")?),
            CTA_ID => id = Some(exact_be32(payload, "id attribute is not 4 bytes")?),
            _ => {}
        }
    }
    let original: Tuple = original.ok_or("no original tuple")?;
    let reply: Tuple = reply.ok_or("no reply tuple")?;
    let v4 = match family {
        AF_INET => true,
        AF_INET6 => false,
        _ => return Err("address family is neither IPv4 nor IPv6"),
    };
    if original.src.is_ipv4() != v4 || reply.src.is_ipv4() != v4 {
        return Err("tuple addresses do not match the message's address family");
    }
    let mut raw = [0u8; TUPLE_CAPACITY];
    raw.get_mut(..orig_raw.len())
        .ok_or("original tuple larger than the capacity")?
        .copy_from_slice(orig_raw);
    Ok(Entry {
        original,
        reply,
        mark,
        zone,
        id,
        orig_raw: raw,
        orig_raw_len: orig_raw.len(),
    })
}

/// Decode the payload of a `CTA_TUPLE_ORIG` / `CTA_TUPLE_REPLY` attribute.
fn decode_tuple(payload: &[u8]) -> Result<Tuple, &'static str> {
    let mut addrs = None;
    let mut proto = None;
    let mut zone = None;
    for attr in Attrs::new(payload) {
        let (attr_type, data) = attr?;
        match attr_type {
            CTA_TUPLE_IP => addrs = Some(decode_tuple_ip(data)?),
            CTA_TUPLE_PROTO => proto = Some(decode_tuple_proto(data)?),
            CTA_TUPLE_ZONE => zone = Some(exact_be16(data, "tuple zone is not 2 bytes")?),
            _ => {}
        }
    }
    let (src, dst) = addrs.ok_or("tuple without addresses")?;
    let (protocol, l4) = proto.ok_or("tuple without protocol")?;
    Ok(Tuple {
        src,
        dst,
        protocol,
        l4,
        zone,
    })
}

fn decode_tuple_ip(payload: &[u8]) -> Result<(IpAddr, IpAddr), &'static str> {
    let (mut v4_src, mut v4_dst, mut v6_src, mut v6_dst) = (None, None, None, None);
    for attr in Attrs::new(payload) {
        let (attr_type, data) = attr?;
        let v4 = || {
            exact::<4>(data)
                .map(Ipv4Addr::from)
                .ok_or("IPv4 address is not 4 bytes")
        };
        let v6 = || {
            exact::<16>(data)
                .map(Ipv6Addr::from)
                .ok_or("IPv6 address is not 16 bytes")
        };
        match attr_type {
            CTA_IP_V4_SRC => v4_src = Some(v4()?),
            CTA_IP_V4_DST => v4_dst = Some(v4()?),
            CTA_IP_V6_SRC => v6_src = Some(v6()?),
            CTA_IP_V6_DST => v6_dst = Some(v6()?),
            _ => {}
        }
    }
    match (v4_src, v4_dst, v6_src, v6_dst) {
        (Some(src), Some(dst), None, None) => Ok((src.into(), dst.into())),
        (None, None, Some(src), Some(dst)) => Ok((src.into(), dst.into())),
        _ => Err("tuple addresses incomplete or of mixed families"),
    }
}

fn decode_tuple_proto(payload: &[u8]) -> Result<(u8, L4), &'static str> {
    let mut protocol = None;
    let (mut src_port, mut dst_port) = (None, None);
    let (mut icmp_id, mut icmp_type, mut icmp_code) = (None, None, None);
    let mut icmp_families = (false, false);
    for attr in Attrs::new(payload) {
        let (attr_type, data) = attr?;
        match attr_type {
            CTA_PROTO_NUM => protocol = Some(exact_u8(data, "protocol number is not 1 byte")?),
            CTA_PROTO_SRC_PORT => src_port = Some(exact_be16(data, "port is not 2 bytes")?),
            CTA_PROTO_DST_PORT => dst_port = Some(exact_be16(data, "port is not 2 bytes")?),
            CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => {
                icmp_id = Some(exact_be16(data, "ICMP id is not 2 bytes")?);
            }
            CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => {
                icmp_type = Some(exact_u8(data, "ICMP type is not 1 byte")?);
            }
            CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => {
                icmp_code = Some(exact_u8(data, "ICMP code is not 1 byte")?);
            }
            _ => {}
        }
        match attr_type {
            CTA_PROTO_ICMP_ID | CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMP_CODE => {
                icmp_families.0 = true;
            }
            CTA_PROTO_ICMPV6_ID | CTA_PROTO_ICMPV6_TYPE | CTA_PROTO_ICMPV6_CODE => {
                icmp_families.1 = true;
            }
            _ => {}
        }
    }
    let protocol = protocol.ok_or("tuple without protocol number")?;
    if icmp_families == (true, true) {
        return Err("tuple mixes ICMP and ICMPv6 keys");
    }
    let ports = (src_port, dst_port);
    let icmp = (icmp_id, icmp_type, icmp_code);
    let l4 = match (ports, icmp) {
        ((None, None), (None, None, None)) => L4::Other,
        ((Some(src), Some(dst)), (None, None, None)) => L4::Ports { src, dst },
        ((None, None), (Some(id), Some(icmp_type), Some(code))) => L4::Icmp {
            id,
            icmp_type,
            code,
        },
        ((None, None), _) => return Err("ICMP keys incomplete"),
        (_, (None, None, None)) => return Err("only one port in tuple"),
        _ => return Err("tuple has both ports and ICMP keys"),
    };
    Ok((protocol, l4))
}

/// Where a dump stands after one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DumpProgress {
    /// More datagrams follow.
    More,
    /// `NLMSG_DONE` arrived.
    Done,
    /// The visitor asked to stop.
    Stopped,
}

/// Walk one dump datagram: entries of dump `seq` go to `on_entry` (entries that do not decode
/// are counted in `summary.malformed`), `NLMSG_DONE` ends the dump, a kernel error or broken
/// framing is an error. Messages of other sequence numbers are ignored.
fn walk_dump_datagram(
    datagram: &[u8],
    seq: u32,
    summary: &mut DumpSummary,
    on_entry: &mut dyn FnMut(&Entry) -> ControlFlow<()>,
) -> Result<DumpProgress, ConntrackError> {
    let malformed = |what| ConntrackError::Malformed { op: Op::Dump, what };
    for message in Messages::new(datagram) {
        let message = message.map_err(malformed)?;
        if message.truncated {
            return Err(malformed("netlink message runs past the datagram"));
        }
        if message.seq != seq {
            continue;
        }
        match message.msg_type {
            NLMSG_DONE => {
                // The body is the dump's result: 0, or a negative errno if it failed.
                return match ack_errno(message.body) {
                    Some(errno) if errno != 0 => Err(ConntrackError::Kernel {
                        op: Op::Dump,
                        error: io::Error::from_raw_os_error(errno),
                    }),
                    _ => Ok(DumpProgress::Done),
                };
            }
            NLMSG_ERROR => match ack_errno(message.body) {
                Some(0) => {}
                Some(errno) => {
                    return Err(ConntrackError::Kernel {
                        op: Op::Dump,
                        error: io::Error::from_raw_os_error(errno),
                    });
                }
                None => return Err(malformed("netlink error message too short")),
            },
            t if t == ctnl_msg_type(IPCTNL_MSG_CT_NEW) => match decode_entry(message.body) {
                Ok(entry) => {
                    summary.entries += 1;
                    if on_entry(&entry).is_break() {
                        return Ok(DumpProgress::Stopped);
                    }
                }
                Err(_) => summary.malformed += 1,
            },
            NLMSG_NOOP => {}
            // NLMSG_OVERRUN (never sent by the kernel) and anything unknown.
            _ => {}
        }
    }
    Ok(DumpProgress::More)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nla(attr_type: u16, payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + payload.len()).unwrap();
        let mut a = len.to_ne_bytes().to_vec();
        a.extend_from_slice(&attr_type.to_ne_bytes());
        a.extend_from_slice(payload);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn nest(attr_type: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        nla(attr_type | NLA_F_NESTED, &parts.concat())
    }

    /// A tuple attribute payload the way `ctnetlink_dump_tuples` builds it.
    fn tuple_attrs(src: IpAddr, dst: IpAddr, proto: &[Vec<u8>], zone: Option<u16>) -> Vec<Vec<u8>> {
        let ip = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => vec![
                nla(CTA_IP_V4_SRC, &s.octets()),
                nla(CTA_IP_V4_DST, &d.octets()),
            ],
            (IpAddr::V6(s), IpAddr::V6(d)) => vec![
                nla(CTA_IP_V6_SRC, &s.octets()),
                nla(CTA_IP_V6_DST, &d.octets()),
            ],
            _ => panic!("mixed families"),
        };
        let mut parts = vec![nest(CTA_TUPLE_IP, &ip), nest(CTA_TUPLE_PROTO, proto)];
        if let Some(zone) = zone {
            parts.push(nla(CTA_TUPLE_ZONE, &zone.to_be_bytes()));
        }
        parts
    }

    fn ports(protocol: u8, src: u16, dst: u16) -> Vec<Vec<u8>> {
        vec![
            nla(CTA_PROTO_NUM, &[protocol]),
            nla(CTA_PROTO_SRC_PORT, &src.to_be_bytes()),
            nla(CTA_PROTO_DST_PORT, &dst.to_be_bytes()),
        ]
    }

    fn icmp(v6: bool, id: u16, icmp_type: u8, code: u8) -> Vec<Vec<u8>> {
        let (num, a, b, c) = if v6 {
            (
                58,
                CTA_PROTO_ICMPV6_ID,
                CTA_PROTO_ICMPV6_TYPE,
                CTA_PROTO_ICMPV6_CODE,
            )
        } else {
            (
                1,
                CTA_PROTO_ICMP_ID,
                CTA_PROTO_ICMP_TYPE,
                CTA_PROTO_ICMP_CODE,
            )
        };
        vec![
            nla(CTA_PROTO_NUM, &[num]),
            nla(a, &id.to_be_bytes()),
            nla(b, &[icmp_type]),
            nla(c, &[code]),
        ]
    }

    fn nlmsg(msg_type: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(16 + body.len()).unwrap();
        let mut m = len.to_ne_bytes().to_vec();
        m.extend_from_slice(&msg_type.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&4242u32.to_ne_bytes());
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    struct Msg {
        family: u8,
        orig: Vec<Vec<u8>>,
        reply: Vec<Vec<u8>>,
        zone: Option<u16>,
        mark: Option<u32>,
        id: u32,
    }

    /// An entry message the way `ctnetlink_fill_info` builds it (with the status, use, timeout
    /// and protoinfo attributes this layer skips).
    fn entry_msg(m: &Msg, seq: u32) -> Vec<u8> {
        let mut body = vec![m.family, 0, 0, 0];
        body.extend(nest(CTA_TUPLE_ORIG, &m.orig));
        body.extend(nest(CTA_TUPLE_REPLY, &m.reply));
        if let Some(zone) = m.zone {
            body.extend(nla(CTA_ZONE, &zone.to_be_bytes()));
        }
        body.extend(nla(3, &0x18eu32.to_be_bytes())); // CTA_STATUS
        if let Some(mark) = m.mark {
            body.extend(nla(CTA_MARK, &mark.to_be_bytes()));
        }
        body.extend(nla(CTA_ID, &m.id.to_be_bytes()));
        body.extend(nla(11, &1u32.to_be_bytes())); // CTA_USE
        body.extend(nla(7, &120u32.to_be_bytes())); // CTA_TIMEOUT
        body.extend(nest(4, &[nest(1, &[nla(1, &[3])])])); // CTA_PROTOINFO / TCP / STATE
        nlmsg(ctnl_msg_type(IPCTNL_MSG_CT_NEW), 0x2 | 0x20, seq, &body)
    }

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn tcp4() -> Msg {
        Msg {
            family: AF_INET,
            orig: tuple_attrs(
                v4("203.0.113.1"),
                v4("203.0.113.2"),
                &ports(6, 40000, 443),
                None,
            ),
            reply: tuple_attrs(
                v4("203.0.113.2"),
                v4("203.0.113.1"),
                &ports(6, 443, 40000),
                None,
            ),
            zone: None,
            mark: Some(0x0010_0001),
            id: 0xdead_beef,
        }
    }

    fn udp6_zoned() -> Msg {
        let (a, b) = (v4_6("2001:db8::1"), v4_6("2001:db8::2"));
        Msg {
            family: AF_INET6,
            orig: tuple_attrs(a, b, &ports(17, 5353, 53), None),
            reply: tuple_attrs(b, a, &ports(17, 53, 5353), None),
            zone: Some(7),
            mark: None,
            id: 1,
        }
    }

    fn v4_6(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn icmp4() -> Msg {
        Msg {
            family: AF_INET,
            orig: tuple_attrs(
                v4("203.0.113.1"),
                v4("203.0.113.2"),
                &icmp(false, 77, 8, 0),
                None,
            ),
            reply: tuple_attrs(
                v4("203.0.113.2"),
                v4("203.0.113.1"),
                &icmp(false, 77, 0, 0),
                None,
            ),
            zone: None,
            mark: Some(0),
            id: 2,
        }
    }

    fn icmp6_directional_zone() -> Msg {
        let (a, b) = (v4_6("2001:db8::1"), v4_6("2001:db8::2"));
        Msg {
            family: AF_INET6,
            orig: tuple_attrs(a, b, &icmp(true, 9, 128, 0), Some(3)),
            reply: tuple_attrs(b, a, &icmp(true, 9, 129, 0), None),
            zone: None,
            mark: Some(0x0020_0000),
            id: 3,
        }
    }

    fn parse(m: &Msg) -> Result<Entry, ConntrackError> {
        Entry::parse(&entry_msg(m, 1))
    }

    #[test]
    fn ipv4_tcp_entry() {
        let e = parse(&tcp4()).unwrap();
        assert_eq!(
            *e.original(),
            Tuple {
                src: v4("203.0.113.1"),
                dst: v4("203.0.113.2"),
                protocol: 6,
                l4: L4::Ports {
                    src: 40000,
                    dst: 443
                },
                zone: None,
            }
        );
        assert_eq!(e.reply().src, v4("203.0.113.2"));
        assert_eq!(
            e.reply().l4,
            L4::Ports {
                src: 443,
                dst: 40000
            }
        );
        assert_eq!(e.mark(), 0x0010_0001);
        assert_eq!(e.zone(), None);
        assert_eq!(e.id(), Some(0xdead_beef));
        assert_eq!(e.peers(), [v4("203.0.113.1"), v4("203.0.113.2")]);
        assert_eq!(e.family(), AF_INET);
        // The raw tuple is the CTA_TUPLE_ORIG payload, byte for byte.
        assert_eq!(e.orig_raw(), &nest(CTA_TUPLE_ORIG, &tcp4().orig)[4..]);
    }

    #[test]
    fn ipv6_udp_entry_with_zone_without_mark() {
        let e = parse(&udp6_zoned()).unwrap();
        assert_eq!(e.original().protocol, 17);
        assert_eq!(e.original().src, v4_6("2001:db8::1"));
        assert_eq!(e.original().l4, L4::Ports { src: 5353, dst: 53 });
        assert_eq!(e.mark(), 0, "no CTA_MARK means mark 0");
        assert_eq!(e.zone(), Some(7));
        assert_eq!(e.family(), AF_INET6);
    }

    #[test]
    fn icmp_entries() {
        let e = parse(&icmp4()).unwrap();
        assert_eq!(e.original().protocol, 1);
        assert_eq!(
            e.original().l4,
            L4::Icmp {
                id: 77,
                icmp_type: 8,
                code: 0
            }
        );
        assert_eq!(
            e.reply().l4,
            L4::Icmp {
                id: 77,
                icmp_type: 0,
                code: 0
            }
        );
        let e = parse(&icmp6_directional_zone()).unwrap();
        assert_eq!(e.original().protocol, 58);
        assert_eq!(
            e.original().l4,
            L4::Icmp {
                id: 9,
                icmp_type: 128,
                code: 0
            }
        );
        assert_eq!(e.original().zone, Some(3));
        assert_eq!(e.reply().zone, None);
        assert_eq!(e.zone(), None);
        assert_eq!(e.mark(), 0x0020_0000);
    }

    #[test]
    fn protocol_without_l4_keys() {
        let mut m = tcp4();
        m.orig = tuple_attrs(
            v4("203.0.113.1"),
            v4("203.0.113.2"),
            &[nla(CTA_PROTO_NUM, &[50])],
            None,
        );
        m.reply = tuple_attrs(
            v4("203.0.113.2"),
            v4("203.0.113.1"),
            &[nla(CTA_PROTO_NUM, &[50])],
            None,
        );
        let e = parse(&m).unwrap();
        assert_eq!((e.original().protocol, e.original().l4), (50, L4::Other));
    }

    #[test]
    fn entry_accepts_delete_events_and_refuses_other_messages() {
        let mut msg = entry_msg(&tcp4(), 1);
        msg[4..6].copy_from_slice(&ctnl_msg_type(IPCTNL_MSG_CT_DELETE).to_ne_bytes());
        assert!(Entry::parse(&msg).is_ok());
        msg[4..6].copy_from_slice(&ctnl_msg_type(IPCTNL_MSG_CT_GET_STATS).to_ne_bytes());
        let e = Entry::parse(&msg).unwrap_err();
        assert_eq!(
            e.to_string(),
            "decode conntrack entry: malformed message: not a conntrack entry message"
        );
    }

    #[test]
    fn malformed_entries() {
        let six = v4_6("2001:db8::2");
        let with = |f: &dyn Fn(&mut Msg)| {
            let mut m = tcp4();
            f(&mut m);
            m
        };
        let cases: Vec<(&str, Msg)> = vec![
            ("no reply tuple", with(&|m| m.reply.clear())),
            ("family mismatch", with(&|m| m.family = AF_INET6)),
            ("unknown family", with(&|m| m.family = 7)),
            (
                "mixed address families",
                with(&|m| {
                    m.orig[0] = nest(
                        CTA_TUPLE_IP,
                        &[
                            nla(CTA_IP_V4_SRC, &[1, 2, 3, 4]),
                            nla(CTA_IP_V6_DST, &[0; 16]),
                        ],
                    )
                }),
            ),
            (
                "short IPv4 address",
                with(&|m| {
                    m.orig[0] = nest(
                        CTA_TUPLE_IP,
                        &[
                            nla(CTA_IP_V4_SRC, &[1, 2, 3]),
                            nla(CTA_IP_V4_DST, &[1, 2, 3, 4]),
                        ],
                    )
                }),
            ),
            (
                "one port only",
                with(&|m| {
                    m.orig[1] = nest(
                        CTA_TUPLE_PROTO,
                        &[nla(CTA_PROTO_NUM, &[6]), nla(CTA_PROTO_SRC_PORT, &[0, 1])],
                    )
                }),
            ),
            (
                "one-byte port",
                with(&|m| {
                    m.orig[1] = nest(
                        CTA_TUPLE_PROTO,
                        &[
                            nla(CTA_PROTO_NUM, &[6]),
                            nla(CTA_PROTO_SRC_PORT, &[1]),
                            nla(CTA_PROTO_DST_PORT, &[0, 1]),
                        ],
                    )
                }),
            ),
            (
                "no protocol number",
                with(&|m| m.orig[1] = nest(CTA_TUPLE_PROTO, &ports(6, 1, 2)[1..])),
            ),
            (
                "incomplete ICMP keys",
                with(&|m| m.orig[1] = nest(CTA_TUPLE_PROTO, &icmp(false, 1, 8, 0)[..3])),
            ),
            (
                "ICMP and ICMPv6 keys",
                with(&|m| {
                    let mut keys = icmp(false, 1, 8, 0);
                    keys.push(nla(CTA_PROTO_ICMPV6_CODE, &[0]));
                    m.orig[1] = nest(CTA_TUPLE_PROTO, &keys);
                }),
            ),
            (
                "ports and ICMP keys",
                with(&|m| {
                    let mut keys = ports(6, 1, 2);
                    keys.extend(icmp(false, 1, 8, 0).into_iter().skip(1));
                    m.orig[1] = nest(CTA_TUPLE_PROTO, &keys);
                }),
            ),
            (
                "oversized original tuple",
                with(&|m| m.orig.push(nla(99, &[0; TUPLE_CAPACITY]))),
            ),
            (
                "IPv6 reply in an IPv4 entry",
                with(&|m| m.reply = tuple_attrs(six, six, &ports(6, 1, 2), None)),
            ),
            ("short mark", with(&|m| m.mark = None)),
        ];
        for (name, m) in cases {
            let mut msg = entry_msg(&m, 1);
            if name == "short mark" {
                // Append a 2-byte CTA_MARK and fix the length.
                msg.extend(nla(CTA_MARK, &[0, 1]));
                let len = u32::try_from(msg.len()).unwrap();
                msg[0..4].copy_from_slice(&len.to_ne_bytes());
            }
            match Entry::parse(&msg) {
                Err(ConntrackError::Malformed { op: Op::Decode, .. }) => {}
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn every_prefix_of_an_entry_is_refused_without_panic() {
        for m in [tcp4(), udp6_zoned(), icmp4(), icmp6_directional_zone()] {
            let msg = entry_msg(&m, 1);
            assert!(Entry::parse(&msg).is_ok());
            for len in 0..msg.len() {
                let mut cut = msg[..len].to_vec();
                // Claim the cut length, so the walk of the attributes itself meets the cut.
                if len >= 4 {
                    let claimed = u32::try_from(len).unwrap();
                    cut[0..4].copy_from_slice(&claimed.to_ne_bytes());
                }
                let _ = Entry::parse(&cut);
                // Without the fix-up, the header claims more than there is.
                assert!(Entry::parse(&msg[..len]).is_err(), "{len}");
            }
        }
    }

    #[test]
    fn from_parts_encodes_like_the_kernel() {
        for m in [tcp4(), udp6_zoned(), icmp4(), icmp6_directional_zone()] {
            let parsed = parse(&m).unwrap();
            let built = Entry::from_parts(
                *parsed.original(),
                *parsed.reply(),
                parsed.mark(),
                parsed.zone(),
                parsed.id(),
            )
            .unwrap();
            assert_eq!(built, parsed);
        }
        let t = *parse(&tcp4()).unwrap().original();
        let mut six = t;
        six.dst = v4_6("2001:db8::2");
        let e = Entry::from_parts(t, six, 0, None, None).unwrap_err();
        assert_eq!(e.op(), Op::Encode);
    }

    #[test]
    fn set_mark_request_layout() {
        let e = parse(&udp6_zoned()).unwrap();
        let mut msg = set_mark_request(9, &e, 0x0020_0000, 0x0030_0000);
        let bytes = msg.message().unwrap().to_vec();
        let mut want = Vec::new();
        let mut body = vec![AF_INET6, 0, 0, 0];
        body.extend(nest(CTA_TUPLE_ORIG, &udp6_zoned().orig));
        body.extend(nla(CTA_ZONE, &7u16.to_be_bytes()));
        body.extend(nla(CTA_MARK, &[0, 0x20, 0, 0]));
        body.extend(nla(CTA_MARK_MASK, &[0, 0x30, 0, 0]));
        let len = u32::try_from(16 + body.len()).unwrap();
        want.extend_from_slice(&len.to_ne_bytes());
        want.extend_from_slice(&0x0100u16.to_ne_bytes()); // CTNETLINK << 8 | CT_NEW
        want.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes()); // no NLM_F_CREATE
        want.extend_from_slice(&9u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend(body);
        assert_eq!(bytes, want);
    }

    #[test]
    fn delete_request_names_tuple_and_id() {
        let e = parse(&tcp4()).unwrap();
        let mut msg = delete_request(3, &e);
        let bytes = msg.message().unwrap().to_vec();
        assert_eq!(read_u16_ne(&bytes, 4), Some(0x0102));
        assert_eq!(bytes[16], AF_INET);
        let attrs: Vec<_> = Attrs::new(&bytes[20..]).map(Result::unwrap).collect();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0].0, CTA_TUPLE_ORIG);
        assert_eq!(attrs[0].1, e.orig_raw());
        assert_eq!(attrs[1], (CTA_ID, &0xdead_beefu32.to_be_bytes()[..]));
    }

    #[test]
    fn dump_request_layout() {
        let mut msg = dump_request(5, 0x0010_0000, 0x0030_0000);
        let bytes = msg.message().unwrap().to_vec();
        assert_eq!(bytes.len(), 16 + 4 + 8 + 8);
        assert_eq!(read_u16_ne(&bytes, 4), Some(0x0101));
        assert_eq!(read_u16_ne(&bytes, 6), Some(NLM_F_REQUEST | NLM_F_DUMP));
        assert_eq!(bytes[16], AF_UNSPEC);
        let attrs: Vec<_> = Attrs::new(&bytes[20..]).map(Result::unwrap).collect();
        assert_eq!(
            attrs,
            [
                (CTA_MARK, &[0u8, 0x10, 0, 0][..]),
                (CTA_MARK_MASK, &[0u8, 0x30, 0, 0][..])
            ]
        );
    }

    #[test]
    fn mark_outside_mask_is_refused() {
        assert!(check_mark(Op::SetMark, 0x0020_0000, 0x0030_0000).is_ok());
        assert!(check_mark(Op::SetMark, 0, 0).is_ok());
        let e = check_mark(Op::SetMark, 0x0040_0000, 0x0030_0000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "set conntrack mark: mark value 0x400000 has bits outside the mask 0x300000"
        );
    }

    #[test]
    fn writer_overflow_is_reported_not_panicked() {
        let mut w: Writer<24> = Writer::request(0, 0, 0, 0);
        w.attr(1, &[0; 8]);
        assert!(w.message().is_none());
        let mut w: Writer<8> = Writer::new();
        let n = w.nest_start(1);
        w.attr(2, &[0; 8]);
        w.nest_end(n);
        assert!(w.bytes().is_none());
    }

    fn done_msg(seq: u32, errno: i32) -> Vec<u8> {
        nlmsg(NLMSG_DONE, 0x2, seq, &(-errno).to_ne_bytes())
    }

    fn error_msg(seq: u32, errno: i32) -> Vec<u8> {
        let mut body = (-errno).to_ne_bytes().to_vec();
        body.extend_from_slice(&[0u8; 16]);
        nlmsg(NLMSG_ERROR, 0, seq, &body)
    }

    fn walk(
        datagram: &[u8],
        seq: u32,
    ) -> (
        Result<DumpProgress, ConntrackError>,
        Vec<Entry>,
        DumpSummary,
    ) {
        let mut seen = Vec::new();
        let mut summary = DumpSummary::default();
        let result = walk_dump_datagram(datagram, seq, &mut summary, &mut |e| {
            seen.push(e.clone());
            ControlFlow::Continue(())
        });
        (result, seen, summary)
    }

    #[test]
    fn dump_datagrams() {
        let mut datagram = entry_msg(&tcp4(), 7);
        datagram.extend(entry_msg(&udp6_zoned(), 6)); // another dump's: ignored
        datagram.extend(nlmsg(NLMSG_NOOP, 0, 7, &[]));
        let mut bad = entry_msg(&icmp4(), 7);
        bad[16] = 99; // unknown family: counted, skipped
        datagram.extend(bad);
        datagram.extend(entry_msg(&icmp6_directional_zone(), 7));
        let (result, seen, summary) = walk(&datagram, 7);
        assert_eq!(result.unwrap(), DumpProgress::More);
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].original().protocol, 6);
        assert_eq!(seen[1].original().protocol, 58);
        assert_eq!(
            summary,
            DumpSummary {
                entries: 2,
                malformed: 1,
                stopped: false
            }
        );

        let mut last = entry_msg(&tcp4(), 7);
        last.extend(done_msg(7, 0));
        last.extend(entry_msg(&tcp4(), 7)); // after DONE: not read
        let (result, seen, _) = walk(&last, 7);
        assert_eq!(result.unwrap(), DumpProgress::Done);
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn dump_errors() {
        let (result, _, _) = walk(&done_msg(1, libc::EINTR), 1);
        match result {
            Err(ConntrackError::Kernel {
                op: Op::Dump,
                error,
            }) => {
                assert_eq!(error.raw_os_error(), Some(libc::EINTR));
            }
            other => panic!("{other:?}"),
        }
        let (result, _, _) = walk(&error_msg(1, libc::EPERM), 1);
        let e = result.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        assert!(e.to_string().ends_with("(CAP_NET_ADMIN is missing)"), "{e}");
        let (result, _, _) = walk(&error_msg(1, libc::EPERM), 2);
        assert_eq!(
            result.unwrap(),
            DumpProgress::More,
            "other sequence: ignored"
        );
        let mut cut = entry_msg(&tcp4(), 1);
        cut[0..4].copy_from_slice(&4096u32.to_ne_bytes());
        let (result, _, _) = walk(&cut, 1);
        assert!(matches!(
            result,
            Err(ConntrackError::Malformed { op: Op::Dump, .. })
        ));
    }

    #[test]
    fn dump_stops_when_the_visitor_breaks() {
        let mut datagram = entry_msg(&tcp4(), 1);
        datagram.extend(entry_msg(&icmp4(), 1));
        let mut summary = DumpSummary::default();
        let mut calls = 0;
        let result = walk_dump_datagram(&datagram, 1, &mut summary, &mut |_| {
            calls += 1;
            ControlFlow::Break(())
        });
        assert_eq!(result.unwrap(), DumpProgress::Stopped);
        assert_eq!((calls, summary.entries), (1, 1));
    }

    #[test]
    fn acknowledgements() {
        let mut datagram = error_msg(4, libc::EEXIST); // an older request's answer
        datagram.extend(error_msg(5, libc::ENOENT));
        assert_eq!(find_ack(&datagram, 5), Some(Some(libc::ENOENT)));
        assert_eq!(find_ack(&datagram, 4), Some(Some(libc::EEXIST)));
        assert_eq!(find_ack(&datagram, 6), None);
        assert_eq!(find_ack(&error_msg(1, 0), 1), Some(Some(0)));
        assert_eq!(find_ack(&nlmsg(NLMSG_ERROR, 0, 1, &[1, 2]), 1), Some(None));
        assert_eq!(find_ack(&[1, 2, 3], 1), None);
    }

    fn arb_tuple(v6: bool) -> impl Strategy<Value = Tuple> {
        let addr = move || {
            if v6 {
                any::<[u8; 16]>().prop_map(IpAddr::from).boxed()
            } else {
                any::<[u8; 4]>().prop_map(IpAddr::from).boxed()
            }
        };
        let l4 = prop_oneof![
            (any::<u16>(), any::<u16>()).prop_map(|(src, dst)| L4::Ports { src, dst }),
            (any::<u16>(), any::<u8>(), any::<u8>()).prop_map(|(id, icmp_type, code)| L4::Icmp {
                id,
                icmp_type,
                code
            }),
            Just(L4::Other),
        ];
        (addr(), addr(), any::<u8>(), l4, any::<Option<u16>>()).prop_map(
            |(src, dst, protocol, l4, zone)| Tuple {
                src,
                dst,
                protocol,
                l4,
                zone,
            },
        )
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        any::<bool>()
            .prop_flat_map(|v6| (arb_tuple(v6), arb_tuple(v6)))
            .prop_flat_map(|(o, r)| {
                (
                    Just(o),
                    Just(r),
                    any::<u32>(),
                    any::<Option<u16>>(),
                    any::<Option<u32>>(),
                )
            })
            .prop_map(|(o, r, mark, zone, id)| Entry::from_parts(o, r, mark, zone, id).unwrap())
    }

    /// An entry message built from an entry's parts with this module's own encoder.
    fn message_of(e: &Entry, seq: u32) -> Vec<u8> {
        let mut reply: Writer<TUPLE_CAPACITY> = Writer::new();
        encode_tuple(&mut reply, e.reply());
        let mut body = vec![e.family(), 0, 0, 0];
        body.extend(nla(CTA_TUPLE_ORIG | NLA_F_NESTED, e.orig_raw()));
        body.extend(nla(CTA_TUPLE_REPLY | NLA_F_NESTED, reply.bytes().unwrap()));
        if let Some(zone) = e.zone() {
            body.extend(nla(CTA_ZONE, &zone.to_be_bytes()));
        }
        body.extend(nla(CTA_MARK, &e.mark().to_be_bytes()));
        if let Some(id) = e.id() {
            body.extend(nla(CTA_ID, &id.to_be_bytes()));
        }
        nlmsg(ctnl_msg_type(IPCTNL_MSG_CT_NEW), 2, seq, &body)
    }

    proptest! {
        #[test]
        fn encode_then_parse_round_trips(e in arb_entry()) {
            let parsed = Entry::parse(&message_of(&e, 1)).unwrap();
            prop_assert_eq!(parsed, e);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Entry::parse(&bytes);
            let _ = walk(&bytes, 0);
            let _ = find_ack(&bytes, 0);
        }

        #[test]
        fn mutated_messages_never_panic(
            entries in proptest::collection::vec(arb_entry(), 1..4),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let mut datagram: Vec<u8> = entries.iter().flat_map(|e| message_of(e, 3)).collect();
            datagram.extend(done_msg(3, 0));
            for (at, byte) in flips {
                let i = at % datagram.len();
                datagram[i] = byte;
            }
            let (_, seen, summary) = walk(&datagram, 3);
            prop_assert!(seen.len() <= entries.len() + datagram.len() / 16);
            prop_assert!(summary.entries as usize == seen.len());
            for len in [datagram.len() / 2, datagram.len() - 1] {
                let _ = walk(&datagram[..len], 3);
                let _ = Entry::parse(&datagram[..len]);
            }
        }
    }
}
