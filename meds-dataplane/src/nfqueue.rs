//! A thin NFQUEUE layer over a raw `NETLINK_NETFILTER` socket (libc only).
//!
//! [`NfQueue::open`] binds one queue and configures it, checking the kernel's acknowledgement
//! of every step (a failed bind — e.g. the queue is owned by another process — is an error,
//! never ignored). [`NfQueue::recv`] reads one datagram into a caller-owned buffer;
//! [`NfQueue::recv_batch`] reads up to N datagrams with one `recvmmsg` into a [`RecvBatch`]
//! allocated once. [`packets`] walks the queue messages of a datagram, bounds-checking every
//! netlink header and attribute (the input is treated as hostile: it never panics, never
//! allocates and never reads past a checked length). [`NfQueue::verdict`] answers one packet
//! from a stack buffer; a [`VerdictBatcher`] collects the answers of a receive batch and sends
//! them with one `sendto`.
//!
//! Written from the kernel UAPI headers (`linux/netlink.h`, `linux/netfilter/nfnetlink.h`,
//! `linux/netfilter/nfnetlink_queue.h`) and `net/netfilter/nfnetlink_queue.c`.
//!
//! # Batch verdicts
//!
//! `NFQNL_MSG_VERDICT_BATCH` with id N gives its verdict (and its `NFQA_MARK`, when present) to
//! *every* packet the kernel still holds on this queue whose id is not after N (ids are `u32`
//! and wrap; the kernel compares them as `(i32)(id - N) <= 0`). The batcher merges consecutive
//! answers that are equal (verdict and mark) into one batch message carrying the run's last id,
//! sends a run of one as a plain `NFQNL_MSG_VERDICT`, and puts all messages of a flush into one
//! datagram, which the kernel processes in order. Because the kernel queues and reports packets
//! in id order, every packet below a run was answered earlier in the same datagram or in an
//! earlier one, so a batch message covers exactly its run, with one exception:
//!
//! * **A queued packet whose message could not be decoded at all (no readable packet id) gets
//!   no verdict of its own; the next batch message with a higher id covers it, with that
//!   run's verdict and mark.** (With single verdicts it would stay queued until the queue
//!   closes.) A message with a readable id is always answered on its own.
//!
//! Verdicts that could not be sent do not fall under that rule: a flush whose `sendto` fails
//! (after one retry for ENOBUFS, ENOMEM, EINTR or EAGAIN) keeps its messages and sends them
//! first with the next flush, ahead of any later batch message. If that send fails as well,
//! the messages are given up — the kernel keeps those packets until the queue closes — and
//! the batcher sends only single verdicts from then on, so no later batch message can cover
//! them with another packet's verdict.
//!
//! Ids must reach the batcher in the kernel's order. An id that is not after the previous one
//! (the kernel never does that) ends the current run, so each run's message still covers all
//! of its packets; such a packet may, however, already have been covered by an earlier batch
//! message with a higher id.
//!
//! # GSO
//!
//! With [`QueueConfig::gso`] off the kernel segments GSO packets and completes partial
//! checksums before queueing, so every payload is one IP packet with final checksums. With it
//! on, a payload can be a GSO super-packet larger than the MTU (up to the copy range) whose
//! transport checksum is unfinished: [`QueuedPacket::checksum_ready`] and [`QueuedPacket::gso`]
//! report that (from `NFQA_SKB_INFO`).
//!
//! Packets that the kernel queues to us *while* the queue is still being configured (between
//! the bind and the last acknowledgement) are answered with `NF_REPEAT`: the kernel runs the
//! same hook again, which queues them again under the final configuration, so they are
//! decided normally by the worker instead of being accepted, dropped or left stuck.
//!
//! This module knows nothing about rules or policy; it must not log or allocate per packet.

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::chain::Verdict;
use crate::offload::{Answer, RawVerdict};

/// Kernel UAPI constants, named as in the headers.
mod uapi {
    // linux/netlink.h
    pub const NLMSG_HDRLEN: usize = 16;
    pub const NLA_HDRLEN: usize = 4;
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLM_F_REQUEST: u16 = 1;
    pub const NLM_F_ACK: u16 = 4;
    pub const NLA_TYPE_MASK: u16 = 0x3fff;

    // linux/netfilter/nfnetlink.h
    pub const NFGENMSG_LEN: usize = 4;
    pub const NFNL_SUBSYS_QUEUE: u16 = 3;

    // linux/netfilter/nfnetlink_queue.h
    pub const NFQNL_MSG_PACKET: u16 = 0;
    pub const NFQNL_MSG_VERDICT: u16 = 1;
    pub const NFQNL_MSG_CONFIG: u16 = 2;
    pub const NFQNL_MSG_VERDICT_BATCH: u16 = 3;

    pub const NFQA_PACKET_HDR: u16 = 1;
    pub const NFQA_VERDICT_HDR: u16 = 2;
    pub const NFQA_MARK: u16 = 3;
    pub const NFQA_PAYLOAD: u16 = 10;
    pub const NFQA_SKB_INFO: u16 = 14;

    // NFQA_SKB_INFO bits
    pub const NFQA_SKB_CSUMNOTREADY: u32 = 1 << 0;
    pub const NFQA_SKB_GSO: u32 = 1 << 1;
    /// The kernel did not verify the transport checksum (not exposed: the inspector checks
    /// the checksums it relies on itself).
    #[allow(dead_code)]
    pub const NFQA_SKB_CSUM_NOTVERIFIED: u32 = 1 << 2;

    pub const NFQA_CFG_CMD: u16 = 1;
    pub const NFQA_CFG_PARAMS: u16 = 2;
    pub const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
    pub const NFQA_CFG_MASK: u16 = 4;
    pub const NFQA_CFG_FLAGS: u16 = 5;

    pub const NFQNL_CFG_CMD_BIND: u8 = 1;
    pub const NFQNL_COPY_PACKET: u8 = 2;

    pub const NFQA_CFG_F_FAIL_OPEN: u32 = 1 << 0;
    pub const NFQA_CFG_F_GSO: u32 = 1 << 2;

    /// `0xffff - NLA_HDRLEN`: the largest copy range the kernel honours.
    pub const NFQNL_MAX_COPY_RANGE: u32 = 0xffff - 4;

    // linux/netfilter.h
    pub const NF_DROP: u32 = 0;
    pub const NF_ACCEPT: u32 = 1;
    pub const NF_REPEAT: u32 = 4;

    /// `(NFNL_SUBSYS_QUEUE << 8) | msg`.
    pub const fn queue_msg_type(msg: u16) -> u16 {
        (NFNL_SUBSYS_QUEUE << 8) | msg
    }
}

use crate::netlink::{
    Messages, OpenStep, Writer, ack_errno, align4, get_int_option, open_bound, read_u16_be,
    read_u16_ne, read_u32_be, recv_datagram, send_to_kernel, set_int_option, set_recv_timeout,
    sockaddr_nl_len,
};
use uapi::*;

/// The largest copy range the kernel honours (`0xffff - NLA_HDRLEN`).
pub const MAX_COPY_RANGE: u32 = NFQNL_MAX_COPY_RANGE;

/// Receive timeout, so a blocked receive returns regularly and the worker can see `stop`.
const RECV_TIMEOUT: Duration = Duration::from_millis(200);
/// How long `open` waits for the kernel to acknowledge one configuration step.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// How many datagrams `open` reads at most while waiting for one acknowledgement.
const ACK_MAX_DATAGRAMS: usize = 1024;
/// Bytes of headroom for netlink and attribute headers around a copied payload.
const MESSAGE_HEADROOM: usize = 4096;
/// Smallest receive buffer [`NfQueue::recv_buffer_len`] recommends.
const MIN_RECV_BUFFER: usize = 64 * 1024;
/// Size of the stack buffer a verdict message is built in.
const VERDICT_MSG_CAPACITY: usize = 64;
/// Size of the stack buffer a configuration message is built in.
const CONFIG_MSG_CAPACITY: usize = 64;
/// The longest verdict message: netlink header, `nfgenmsg`, verdict header and mark attributes.
const VERDICT_MSG_MAX_LEN: usize =
    NLMSG_HDRLEN + NFGENMSG_LEN + (NLA_HDRLEN + 8) + (NLA_HDRLEN + 4);

/// Most datagrams one [`NfQueue::recv_batch`] reads (the kernel caps `recvmmsg` at
/// `UIO_MAXIOV`), and most packets one [`VerdictBatcher`] flush answers.
pub const MAX_BATCH: usize = 1024;
/// Largest datagram buffer a [`RecvBatch`] allocates (the kernel's largest queue message is
/// the 64 KiB copy range plus headers).
const MAX_DATAGRAM_BUFFER: usize = 1 << 20;

/// How one queue is bound and configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// The `--queue-num` of the iptables `NFQUEUE` rule.
    pub queue_num: u16,
    /// Packets the kernel holds for us before it drops (or, with `fail_open`, accepts) new ones.
    /// Must be at least 1.
    pub max_len: u32,
    /// Bytes of each packet copied to us. 0 or anything above [`MAX_COPY_RANGE`] means
    /// [`MAX_COPY_RANGE`] (the kernel's rule).
    pub copy_range: u32,
    /// Socket receive buffer to request (SO_RCVBUFFORCE, else SO_RCVBUF). 0 keeps the default.
    pub rcvbuf_bytes: usize,
    /// Accept packets instead of dropping them when the queue is full (NFQA_CFG_F_FAIL_OPEN).
    pub fail_open: bool,
    /// Receive GSO packets unsegmented (NFQA_CFG_F_GSO): cheaper for bulk TCP, but a payload
    /// can then exceed the MTU and carry an unfinished checksum (see
    /// [`QueuedPacket::checksum_ready`]). Off: the kernel segments and completes checksums.
    pub gso: bool,
}

/// A failure of one NFQUEUE step. Every message names the step; kernel and socket errors are
/// included in the message (and available through [`NfQueueError::io_error`]).
#[derive(Debug, thiserror::Error)]
pub enum NfQueueError {
    #[error("invalid queue configuration: {0}")]
    InvalidConfig(&'static str),
    #[error("open netlink socket: {error}")]
    Socket { error: io::Error },
    #[error("bind netlink socket: {error}")]
    BindSocket { error: io::Error },
    #[error("set socket option {option} for queue {queue}: {error}")]
    SocketOption {
        queue: u16,
        option: &'static str,
        error: io::Error,
    },
    #[error("bind queue {queue}: {error}{hint}", hint = bind_hint(.error))]
    BindQueue { queue: u16, error: io::Error },
    #[error("set copy mode of queue {queue} (copy range {copy_range}): {error}")]
    CopyMode {
        queue: u16,
        copy_range: u32,
        error: io::Error,
    },
    #[error("set max length of queue {queue} to {max_len}: {error}")]
    MaxLen {
        queue: u16,
        max_len: u32,
        error: io::Error,
    },
    #[error("set flags of queue {queue}: {error}")]
    Flags { queue: u16, error: io::Error },
    #[error("receive from queue {queue}: {error}")]
    Recv { queue: u16, error: io::Error },
    #[error("send verdict for packet {packet_id} on queue {queue}: {error}")]
    Verdict {
        queue: u16,
        packet_id: u32,
        error: io::Error,
    },
    /// One flush of a [`VerdictBatcher`] could not be sent.
    #[error("send {messages} verdict messages on queue {queue}: {error}")]
    VerdictBatch {
        queue: u16,
        messages: usize,
        error: io::Error,
    },
    /// The kernel answered one of our requests (after `open`: a verdict) with an error.
    #[error("kernel rejected request {seq}: {error}")]
    Kernel { seq: u32, error: io::Error },
    /// A datagram that did not come from the kernel (netlink port id != 0); ignored.
    #[error("ignored a netlink message from port {portid} (not the kernel)")]
    ForeignSender { portid: u32 },
    /// A queue message that could not be decoded. `packet_id` is set when the packet header
    /// could still be read, so the packet can be given a verdict.
    #[error("malformed queue message{}: {what}", packet_id.map(|id| format!(" for packet {id}")).unwrap_or_default())]
    Malformed {
        packet_id: Option<u32>,
        what: &'static str,
    },
}

fn bind_hint(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EPERM) => {
            " (another process owns this queue number, or CAP_NET_ADMIN is missing)"
        }
        Some(libc::EBUSY) => " (this socket already bound the queue)",
        _ => "",
    }
}

impl NfQueueError {
    /// The operating-system error behind this failure, if any.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            NfQueueError::Socket { error }
            | NfQueueError::BindSocket { error }
            | NfQueueError::SocketOption { error, .. }
            | NfQueueError::BindQueue { error, .. }
            | NfQueueError::CopyMode { error, .. }
            | NfQueueError::MaxLen { error, .. }
            | NfQueueError::Flags { error, .. }
            | NfQueueError::Recv { error, .. }
            | NfQueueError::Verdict { error, .. }
            | NfQueueError::VerdictBatch { error, .. }
            | NfQueueError::Kernel { error, .. } => Some(error),
            NfQueueError::InvalidConfig(_)
            | NfQueueError::ForeignSender { .. }
            | NfQueueError::Malformed { .. } => None,
        }
    }

    /// The errno behind this failure, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.io_error().and_then(io::Error::raw_os_error)
    }
}

/// One bound NFQUEUE. Owns its netlink socket; dropping it closes the socket, which makes the
/// kernel unbind the queue (packets still queued are then dropped by the kernel).
#[derive(Debug)]
pub struct NfQueue {
    fd: OwnedFd,
    queue_num: u16,
    copy_range: u32,
    effective_rcvbuf: usize,
    rcvbuf_forced: bool,
    seq: u32,
}

/// One packet handed to user space, borrowed from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedPacket<'b> {
    /// The id to answer with a verdict.
    pub packet_id: u32,
    /// Link-layer protocol (EtherType) in host order, e.g. 0x0800 for IPv4.
    pub hw_protocol: u16,
    /// The packet's netfilter mark, when the kernel sent one (it does when non-zero).
    pub mark: Option<u32>,
    /// The IP packet, cut at the copy range. Empty when the kernel sent no payload.
    pub payload: &'b [u8],
    /// False when the transport checksum is not computed yet (`NFQA_SKB_CSUMNOTREADY`: the
    /// sender left it to checksum offload, e.g. a locally sent packet, or one from a veth or
    /// virtio peer). Only possible with [`QueueConfig::gso`]; otherwise the kernel completes
    /// checksums before queueing.
    pub checksum_ready: bool,
    /// The payload is a GSO super-packet (`NFQA_SKB_GSO`, only with [`QueueConfig::gso`]):
    /// several segments' worth of data behind one IP and transport header.
    pub gso: bool,
}

/// Buffers for [`NfQueue::recv_batch`], allocated once: `capacity` datagram buffers in one
/// allocation, and the `mmsghdr`, `iovec` and `sockaddr_nl` arrays that `recvmmsg` fills.
///
/// Memory: capacity × buffer length, e.g. 64 × 68 KiB ≈ 4.3 MiB at the full copy range (the
/// buffers are zeroed on allocation, so with the system allocator a page is only backed once
/// a datagram reaches it).
pub struct RecvBatch {
    /// `capacity` buffers of `buffer_len` bytes, back to back.
    buffers: Box<[u8]>,
    buffer_len: usize,
    headers: Box<[libc::mmsghdr]>,
    iovecs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_nl]>,
    /// Datagrams filled by the last `recv_batch`.
    received: usize,
}

// SAFETY: the raw pointers inside `headers` and `iovecs` point only into this batch's own heap
// allocations (`buffers`, `iovecs`, `addrs`), which move with it; they are rewritten before
// every `recvmmsg` and never dereferenced by Rust code.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("capacity", &self.headers.len())
            .field("buffer_len", &self.buffer_len)
            .field("received", &self.received)
            .finish()
    }
}

impl RecvBatch {
    /// `capacity` datagram buffers of `buffer_len` bytes each. `capacity` is clamped to
    /// 1..=[`MAX_BATCH`], `buffer_len` to 16 bytes..=1 MiB.
    pub fn new(capacity: usize, buffer_len: usize) -> RecvBatch {
        let capacity = capacity.clamp(1, MAX_BATCH);
        let buffer_len = buffer_len.clamp(NLMSG_HDRLEN, MAX_DATAGRAM_BUFFER);
        // SAFETY (all three): all-zero bytes are valid values of these C structs (null
        // pointers, zero lengths); `prepare` fills them in before each use.
        let headers = (0..capacity)
            .map(|_| unsafe { mem::zeroed::<libc::mmsghdr>() })
            .collect();
        let iovecs = (0..capacity)
            .map(|_| unsafe { mem::zeroed::<libc::iovec>() })
            .collect();
        let addrs = (0..capacity)
            .map(|_| unsafe { mem::zeroed::<libc::sockaddr_nl>() })
            .collect();
        RecvBatch {
            // At most 1024 × 1 MiB: the product cannot overflow.
            buffers: vec![0u8; capacity * buffer_len].into_boxed_slice(),
            buffer_len,
            headers,
            iovecs,
            addrs,
            received: 0,
        }
    }

    /// `capacity` buffers of [`NfQueue::recv_buffer_len`] bytes: any message of `queue` fits.
    pub fn for_queue(queue: &NfQueue, capacity: usize) -> RecvBatch {
        RecvBatch::new(capacity, queue.recv_buffer_len())
    }

    /// Most datagrams one receive fills.
    pub fn capacity(&self) -> usize {
        self.headers.len()
    }

    /// Bytes of each datagram buffer; a longer datagram is cut (see [`NfQueue::recv`]).
    pub fn buffer_len(&self) -> usize {
        self.buffer_len
    }

    /// Datagrams filled by the last [`NfQueue::recv_batch`].
    pub fn len(&self) -> usize {
        self.received
    }

    pub fn is_empty(&self) -> bool {
        self.received == 0
    }

    /// Datagram `i` of the last receive (`None` at or past [`RecvBatch::len`]). A datagram
    /// that did not come from the kernel is [`NfQueueError::ForeignSender`]; a datagram longer
    /// than the buffer is cut, and [`packets`] reports its cut message as
    /// [`NfQueueError::Malformed`] (with the packet id when that is readable).
    pub fn datagram(&self, i: usize) -> Option<Result<&[u8], NfQueueError>> {
        if i >= self.received {
            return None;
        }
        let portid = self.addrs.get(i)?.nl_pid;
        if portid != 0 {
            return Some(Err(NfQueueError::ForeignSender { portid }));
        }
        let len = usize::try_from(self.headers.get(i)?.msg_len)
            .unwrap_or(usize::MAX)
            .min(self.buffer_len);
        let start = i.checked_mul(self.buffer_len)?;
        Some(Ok(self.buffers.get(start..start.checked_add(len)?)?))
    }

    /// Every datagram of the last receive, in the order the kernel sent them.
    pub fn datagrams(&self) -> impl Iterator<Item = Result<&[u8], NfQueueError>> {
        (0..self.received).filter_map(move |i| self.datagram(i))
    }

    /// Point every header at its own buffer and address, and reset what the kernel writes.
    fn prepare(&mut self) {
        self.received = 0;
        let slots = self
            .headers
            .iter_mut()
            .zip(self.iovecs.iter_mut())
            .zip(self.addrs.iter_mut())
            .zip(self.buffers.chunks_exact_mut(self.buffer_len));
        for (((header, iov), addr), buffer) in slots {
            // SAFETY: all-zero bytes are a valid sockaddr_nl.
            *addr = unsafe { mem::zeroed() };
            iov.iov_base = buffer.as_mut_ptr().cast();
            iov.iov_len = buffer.len();
            header.msg_hdr.msg_name = (&raw mut *addr).cast();
            header.msg_hdr.msg_namelen = sockaddr_nl_len();
            header.msg_hdr.msg_iov = &raw mut *iov;
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_control = std::ptr::null_mut();
            header.msg_hdr.msg_controllen = 0;
            header.msg_hdr.msg_flags = 0;
            header.msg_len = 0;
        }
    }
}

impl NfQueue {
    /// Open a netlink socket, bind `cfg.queue_num` and configure it. Every configuration step
    /// waits for the kernel's acknowledgement and fails with the step's error.
    pub fn open(cfg: &QueueConfig) -> Result<NfQueue, NfQueueError> {
        if cfg.max_len == 0 {
            return Err(NfQueueError::InvalidConfig(
                "queue max length must be at least 1",
            ));
        }
        let queue = cfg.queue_num;
        let copy_range = if cfg.copy_range == 0 || cfg.copy_range > MAX_COPY_RANGE {
            MAX_COPY_RANGE
        } else {
            cfg.copy_range
        };

        let fd = open_bound().map_err(|(step, error)| match step {
            OpenStep::Socket => NfQueueError::Socket { error },
            OpenStep::Bind => NfQueueError::BindSocket { error },
        })?;

        let option_error = |option: &'static str, error: io::Error| NfQueueError::SocketOption {
            queue,
            option,
            error,
        };
        let mut rcvbuf_forced = false;
        if cfg.rcvbuf_bytes > 0 {
            let want = libc::c_int::try_from(cfg.rcvbuf_bytes).unwrap_or(libc::c_int::MAX);
            match set_int_option(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want) {
                Ok(()) => rcvbuf_forced = true,
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    set_int_option(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, want)
                        .map_err(|e| option_error("SO_RCVBUF", e))?;
                }
                Err(e) => return Err(option_error("SO_RCVBUFFORCE", e)),
            }
        }
        let effective_rcvbuf = get_int_option(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF)
            .map_err(|e| option_error("SO_RCVBUF (read back)", e))?;
        set_int_option(&fd, libc::SOL_NETLINK, libc::NETLINK_NO_ENOBUFS, 1)
            .map_err(|e| option_error("NETLINK_NO_ENOBUFS", e))?;
        set_recv_timeout(&fd, RECV_TIMEOUT).map_err(|e| option_error("SO_RCVTIMEO", e))?;

        let mut nfq = NfQueue {
            fd,
            queue_num: queue,
            copy_range,
            effective_rcvbuf: usize::try_from(effective_rcvbuf).unwrap_or(0),
            rcvbuf_forced,
            seq: 0,
        };
        // Scratch space for acknowledgements (and any packet queued meanwhile); freed on return.
        let mut scratch = vec![0u8; nfq.recv_buffer_len()];

        let mut msg = nfq.config_message();
        msg.attr(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0]);
        nfq.request(&mut msg, &mut scratch)
            .map_err(|error| NfQueueError::BindQueue { queue, error })?;

        let mut params = [0u8; 5];
        params[..4].copy_from_slice(&copy_range.to_be_bytes());
        params[4] = NFQNL_COPY_PACKET;
        let mut msg = nfq.config_message();
        msg.attr(NFQA_CFG_PARAMS, &params);
        nfq.request(&mut msg, &mut scratch)
            .map_err(|error| NfQueueError::CopyMode {
                queue,
                copy_range,
                error,
            })?;

        let mut msg = nfq.config_message();
        msg.attr(NFQA_CFG_QUEUE_MAXLEN, &cfg.max_len.to_be_bytes());
        nfq.request(&mut msg, &mut scratch)
            .map_err(|error| NfQueueError::MaxLen {
                queue,
                max_len: cfg.max_len,
                error,
            })?;

        // Set both flags explicitly either way. With GSO off the kernel segments GSO packets
        // and completes partial checksums before queueing them, so every payload is one IP
        // packet; with it on, `NFQA_SKB_INFO` tells which payloads are not.
        let mut flags = 0;
        if cfg.fail_open {
            flags |= NFQA_CFG_F_FAIL_OPEN;
        }
        if cfg.gso {
            flags |= NFQA_CFG_F_GSO;
        }
        let mask = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO;
        let mut msg = nfq.config_message();
        msg.attr(NFQA_CFG_FLAGS, &flags.to_be_bytes());
        msg.attr(NFQA_CFG_MASK, &mask.to_be_bytes());
        nfq.request(&mut msg, &mut scratch)
            .map_err(|error| NfQueueError::Flags { queue, error })?;

        Ok(nfq)
    }

    /// The socket receive buffer as the kernel reports it (SO_RCVBUF; the kernel doubles the
    /// requested size to account for its bookkeeping).
    pub fn effective_rcvbuf(&self) -> usize {
        self.effective_rcvbuf
    }

    /// False when SO_RCVBUFFORCE was refused (no CAP_NET_ADMIN) and SO_RCVBUF, capped by
    /// `net.core.rmem_max`, was used instead — or when no size was requested.
    pub fn rcvbuf_forced(&self) -> bool {
        self.rcvbuf_forced
    }

    pub fn queue_num(&self) -> u16 {
        self.queue_num
    }

    /// The copy range in effect (0 and oversized requests resolved to [`MAX_COPY_RANGE`]).
    pub fn copy_range(&self) -> u32 {
        self.copy_range
    }

    /// A receive buffer size that holds any message of this queue: the copy range plus
    /// headroom for the headers, and at least 64 KiB.
    pub fn recv_buffer_len(&self) -> usize {
        let copy = usize::try_from(self.copy_range).unwrap_or(usize::MAX);
        copy.saturating_add(MESSAGE_HEADROOM).max(MIN_RECV_BUFFER)
    }

    /// Receive one datagram into `buf` and return its length (walk it with [`packets`]).
    ///
    /// `Ok(None)` when the receive timed out (about 200 ms) or was interrupted. A datagram
    /// larger than `buf` is cut; [`packets`] then reports the cut message as
    /// [`NfQueueError::Malformed`] with its packet id when that is readable. Errors (including
    /// ENOBUFS, should the kernel report one) are per-call: the queue stays usable.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NfQueueError> {
        self.recv_raw(buf).map_err(|error| match error {
            RecvError::Io(error) => NfQueueError::Recv {
                queue: self.queue_num,
                error,
            },
            RecvError::Foreign(portid) => NfQueueError::ForeignSender { portid },
        })
    }

    /// Receive up to [`RecvBatch::capacity`] datagrams with one `recvmmsg(MSG_WAITFORONE)`:
    /// the call blocks for the first datagram (at most the ~200 ms receive timeout), then takes
    /// only what is already queued. Returns how many datagrams were received — `Ok(0)` when the
    /// receive timed out or was interrupted — and walks them with [`RecvBatch::datagrams`].
    /// Errors are per-call as for [`NfQueue::recv`]; an error after the first datagram is
    /// reported by the next call (the kernel's rule). Does not allocate.
    pub fn recv_batch(&mut self, batch: &mut RecvBatch) -> Result<usize, NfQueueError> {
        batch.prepare();
        let vlen = libc::c_uint::try_from(batch.headers.len()).unwrap_or(libc::c_uint::MAX);
        // MSG_TRUNC: each `msg_len` is the datagram's full length even when it was cut (as in
        // `recv_raw`); `datagram` caps it at the buffer. The flags' C type differs between
        // libcs (int on glibc, unsigned on musl); both values are small positive constants.
        let flags = libc::MSG_WAITFORONE | libc::MSG_TRUNC;
        // SAFETY: `prepare` pointed every header at its own iovec, buffer and address; all are
        // owned by `batch`, outlive the call and are not otherwise borrowed during it. `vlen`
        // is the length of `headers`; a null timeout is allowed.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                batch.headers.as_mut_ptr(),
                vlen,
                flags as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(0),
                _ => Err(NfQueueError::Recv {
                    queue: self.queue_num,
                    error,
                }),
            };
        }
        batch.received = usize::try_from(n).unwrap_or(0).min(batch.headers.len());
        Ok(batch.received)
    }

    /// Tell the kernel what to do with one queued packet, optionally setting its mark.
    /// Builds the message on the stack; does not allocate. A verdict the kernel rejects (for
    /// example an unknown packet id) comes back later as [`NfQueueError::Kernel`] from
    /// [`packets`].
    pub fn verdict(
        &mut self,
        packet_id: u32,
        verdict: Verdict,
        mark: Option<u32>,
    ) -> Result<(), NfQueueError> {
        let raw = match verdict {
            Verdict::Accept => NF_ACCEPT,
            Verdict::Drop => NF_DROP,
        };
        self.send_verdict(packet_id, raw, mark)
    }

    /// Give one packet back to the hook that queued it (`NF_REPEAT`): the kernel evaluates the
    /// hook again, so a packet that still matches the `NFQUEUE` rule is queued again with a
    /// new id.
    pub fn repeat(&mut self, packet_id: u32) -> Result<(), NfQueueError> {
        self.send_verdict(packet_id, NF_REPEAT, None)
    }

    fn send_verdict(
        &self,
        packet_id: u32,
        raw: u32,
        mark: Option<u32>,
    ) -> Result<(), NfQueueError> {
        let mut msg = verdict_message(NFQNL_MSG_VERDICT, self.queue_num, packet_id, raw, mark);
        let sent = match msg.message() {
            Some(bytes) => self.send(bytes),
            None => Err(io::Error::from_raw_os_error(libc::EMSGSIZE)),
        };
        sent.map_err(|error| NfQueueError::Verdict {
            queue: self.queue_num,
            packet_id,
            error,
        })
    }

    fn config_message(&mut self) -> Writer<CONFIG_MSG_CAPACITY> {
        self.seq = self.seq.wrapping_add(1);
        queue_message(
            queue_msg_type(NFQNL_MSG_CONFIG),
            NLM_F_REQUEST | NLM_F_ACK,
            self.seq,
            self.queue_num,
        )
    }

    /// Send a configuration message and wait for its acknowledgement.
    fn request(&self, msg: &mut Writer<CONFIG_MSG_CAPACITY>, scratch: &mut [u8]) -> io::Result<()> {
        let seq = msg.seq();
        let bytes = msg
            .message()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EMSGSIZE))?;
        self.send(bytes)?;
        let deadline = Instant::now() + ACK_TIMEOUT;
        for _ in 0..ACK_MAX_DATAGRAMS {
            if Instant::now() >= deadline {
                break;
            }
            let len = match self.recv_raw(scratch) {
                Ok(Some(len)) => len,
                Ok(None) | Err(RecvError::Foreign(_)) => continue,
                Err(RecvError::Io(e)) => return Err(e),
            };
            let datagram = scratch.get(..len).unwrap_or_default();
            for message in Messages::new(datagram).flatten() {
                match message.msg_type {
                    NLMSG_ERROR if message.seq == seq => {
                        let errno = ack_errno(message.body)
                            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADMSG))?;
                        return if errno == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(errno))
                        };
                    }
                    t if t == queue_msg_type(NFQNL_MSG_PACKET) => {
                        // Queued before the configuration is complete: send it round again.
                        if let Some(id) = packet_header_id(message.body) {
                            let _ = self.send_verdict(id, NF_REPEAT, None);
                        }
                    }
                    _ => {}
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the kernel did not acknowledge the request",
        ))
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        send_to_kernel(&self.fd, bytes)
    }

    fn recv_raw(&self, buf: &mut [u8]) -> Result<Option<usize>, RecvError> {
        let datagram = match recv_datagram(&self.fd, buf, 0) {
            Ok(datagram) => datagram,
            Err(error) => {
                return match error.raw_os_error() {
                    Some(libc::EAGAIN | libc::EINTR) => Ok(None),
                    _ => Err(RecvError::Io(error)),
                };
            }
        };
        if datagram.sender != 0 {
            return Err(RecvError::Foreign(datagram.sender));
        }
        Ok(Some(datagram.len.min(buf.len())))
    }
}

impl AsFd for NfQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

enum RecvError {
    Io(io::Error),
    Foreign(u32),
}

// ---------------------------------------------------------------------------------------------
// Building messages (fixed-size stack buffers, no allocation).

/// A message to queue `queue_num` (nfgenmsg family `AF_UNSPEC`, res_id = the queue number).
fn queue_message<const N: usize>(msg_type: u16, flags: u16, seq: u32, queue_num: u16) -> Writer<N> {
    Writer::request_for(msg_type, flags, seq, libc::AF_UNSPEC as u8, queue_num)
}

/// An `NFQNL_MSG_VERDICT` (for `packet_id`) or `NFQNL_MSG_VERDICT_BATCH` (for every queued id
/// up to `packet_id`) message.
fn verdict_message(
    msg: u16,
    queue_num: u16,
    packet_id: u32,
    raw_verdict: u32,
    mark: Option<u32>,
) -> Writer<VERDICT_MSG_CAPACITY> {
    let mut msg = queue_message(queue_msg_type(msg), NLM_F_REQUEST, 0, queue_num);
    let mut hdr = [0u8; 8];
    hdr[..4].copy_from_slice(&raw_verdict.to_be_bytes());
    hdr[4..].copy_from_slice(&packet_id.to_be_bytes());
    msg.attr(NFQA_VERDICT_HDR, &hdr);
    if let Some(mark) = mark {
        msg.attr(NFQA_MARK, &mark.to_be_bytes());
    }
    msg
}

fn raw_verdict(verdict: RawVerdict) -> u32 {
    match verdict {
        RawVerdict::Accept => NF_ACCEPT,
        RawVerdict::Drop => NF_DROP,
        RawVerdict::Repeat => NF_REPEAT,
    }
}

/// `a` comes after `b` in the kernel's wrapping id order (`nfq_id_after`).
fn id_after(a: u32, b: u32) -> bool {
    a.wrapping_sub(b).cast_signed() > 0
}

/// Send errors worth one immediate retry: the kernel was briefly short of memory, or a signal.
fn is_transient_send(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOBUFS | libc::ENOMEM | libc::EINTR | libc::EAGAIN)
    )
}

/// The answers of a receive batch, merged into as few verdict messages as the kernel's batch
/// semantics allow and sent with one `sendto` (see the module docs, "Batch verdicts").
///
/// Holds at most `capacity` packets between flushes: the push that would exceed it first
/// flushes the earlier ones. The message buffer is allocated once, sized for the worst case
/// (every packet its own message with a mark) plus the messages of one failed flush kept for
/// the next; `push` and `flush` never allocate.
#[derive(Debug)]
pub struct VerdictBatcher {
    queue_num: u16,
    capacity: usize,
    buf: Box<[u8]>,
    /// Bytes and messages written into `buf` (kept ones first).
    len: usize,
    messages: usize,
    /// Packets whose messages in `buf` are kept from the last, failed flush.
    carried_packets: usize,
    /// Packets pushed since the last flush, the open run included.
    pending_packets: usize,
    /// Pending packets whose message did not fit (cannot happen with the buffer's sizing;
    /// handled like a failed send that is given up).
    unbuffered: usize,
    /// Consecutive equal answers not written yet.
    run: Option<Run>,
    /// False once verdicts were given up: single verdicts only from then on.
    batching: bool,
}

/// Equal answers for increasing ids, written as one message when the run ends.
#[derive(Debug, Clone, Copy)]
struct Run {
    last: u32,
    answer: Answer,
    packets: usize,
}

/// What one flush of a [`VerdictBatcher`] did. The counts are packets.
#[derive(Debug, Default)]
#[must_use = "packets whose verdicts were not sent must be counted"]
pub struct Flushed {
    /// Packets pushed since the previous flush whose verdicts reached the kernel.
    pub sent: usize,
    /// Packets pushed since the previous flush whose verdicts did not. Their messages are kept
    /// and sent first by the next flush (see `late`), unless `lost` says otherwise.
    pub failed: usize,
    /// Packets of the previous, failed flush whose kept messages went out with this one.
    pub late: usize,
    /// Packets whose verdicts were given up (both sends failed): the kernel keeps them until
    /// the queue closes, and the batcher sends single verdicts from now on.
    pub lost: usize,
    /// Netlink messages in the datagram that was sent (0 when nothing was sent).
    pub messages: usize,
    /// Why the send failed, when it did.
    pub error: Option<NfQueueError>,
}

impl VerdictBatcher {
    /// A batcher for queue `queue_num` holding at most `capacity` packets between flushes
    /// (clamped to 1..=[`MAX_BATCH`]).
    pub fn new(queue_num: u16, capacity: usize) -> VerdictBatcher {
        let capacity = capacity.clamp(1, MAX_BATCH);
        VerdictBatcher {
            queue_num,
            capacity,
            buf: vec![0u8; 2 * capacity * VERDICT_MSG_MAX_LEN].into_boxed_slice(),
            len: 0,
            messages: 0,
            carried_packets: 0,
            pending_packets: 0,
            unbuffered: 0,
            run: None,
            batching: true,
        }
    }

    /// Most packets held between flushes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Packets pushed since the last flush.
    pub fn pending(&self) -> usize {
        self.pending_packets
    }

    /// False once verdicts were given up after two failed sends: from then on every packet
    /// gets its own message, so no batch verdict can cover a packet the kernel still holds.
    pub fn batching(&self) -> bool {
        self.batching
    }

    /// Add the answer for `packet_id` (ids in the order the kernel queued them). When the
    /// batcher already holds `capacity` packets, those are flushed first and that flush's
    /// outcome is returned; the new answer is always kept.
    pub fn push(&mut self, queue: &mut NfQueue, packet_id: u32, answer: Answer) -> Option<Flushed> {
        self.push_with(packet_id, answer, |bytes| queue.send(bytes))
    }

    /// Send every held answer in one datagram (the queue must be the one the batcher was made
    /// for). Retries once, immediately, on ENOBUFS, ENOMEM, EINTR and EAGAIN.
    pub fn flush(&mut self, queue: &mut NfQueue) -> Flushed {
        self.flush_with(|bytes| queue.send(bytes))
    }

    fn push_with(
        &mut self,
        packet_id: u32,
        answer: Answer,
        send: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> Option<Flushed> {
        let early = (self.pending_packets >= self.capacity).then(|| self.flush_with(send));
        let extends = self.batching
            && self
                .run
                .is_some_and(|run| run.answer == answer && id_after(packet_id, run.last));
        match self.run.as_mut() {
            Some(run) if extends => {
                run.last = packet_id;
                run.packets += 1;
            }
            _ => {
                self.close_run();
                self.run = Some(Run {
                    last: packet_id,
                    answer,
                    packets: 1,
                });
            }
        }
        self.pending_packets += 1;
        early
    }

    fn flush_with(&mut self, mut send: impl FnMut(&[u8]) -> io::Result<()>) -> Flushed {
        self.close_run();
        let pending = mem::take(&mut self.pending_packets);
        let unbuffered = mem::take(&mut self.unbuffered);
        let carried = self.carried_packets;
        if self.len == 0 {
            return Flushed {
                failed: unbuffered,
                lost: unbuffered,
                ..Flushed::default()
            };
        }
        let bytes = self.buf.get(..self.len).unwrap_or_default();
        let mut result = send(bytes);
        if result.as_ref().is_err_and(is_transient_send) {
            result = send(bytes);
        }
        let messages = self.messages;
        match result {
            Ok(()) => {
                self.clear();
                Flushed {
                    sent: pending.saturating_sub(unbuffered),
                    failed: unbuffered,
                    late: carried,
                    lost: unbuffered,
                    messages,
                    error: None,
                }
            }
            Err(error) => {
                let error = Some(NfQueueError::VerdictBatch {
                    queue: self.queue_num,
                    messages,
                    error,
                });
                if carried == 0 && unbuffered == 0 {
                    // Keep the messages: the next flush sends them ahead of everything else.
                    self.carried_packets = pending;
                    Flushed {
                        failed: pending,
                        error,
                        ..Flushed::default()
                    }
                } else {
                    // Give up. The kernel keeps these packets, and any later batch verdict
                    // would cover them: single verdicts only from now on.
                    self.clear();
                    self.batching = false;
                    Flushed {
                        failed: pending,
                        lost: carried + pending,
                        error,
                        ..Flushed::default()
                    }
                }
            }
        }
    }

    fn clear(&mut self) {
        self.len = 0;
        self.messages = 0;
        self.carried_packets = 0;
    }

    /// Write the open run as one message: a batch verdict for several packets, a plain
    /// verdict for one.
    fn close_run(&mut self) {
        let Some(run) = self.run.take() else {
            return;
        };
        let msg = if run.packets > 1 {
            NFQNL_MSG_VERDICT_BATCH
        } else {
            NFQNL_MSG_VERDICT
        };
        let mut msg = verdict_message(
            msg,
            self.queue_num,
            run.last,
            raw_verdict(run.answer.verdict),
            run.answer.mark,
        );
        let start = self.len;
        let end = msg.message().and_then(|bytes| {
            let end = start.checked_add(bytes.len())?;
            self.buf.get_mut(start..end)?.copy_from_slice(bytes);
            Some(end)
        });
        match end {
            Some(end) => {
                self.len = end;
                self.messages += 1;
            }
            None => {
                self.unbuffered += run.packets;
                self.batching = false;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Walking received datagrams (hostile-ish input: total, bounds-checked, no allocation).

/// The packet id of a queue message body, if its packet header attribute can be read.
fn packet_header_id(body: &[u8]) -> Option<u32> {
    match decode_packet(body) {
        Ok(packet) => Some(packet.packet_id),
        Err(NfQueueError::Malformed { packet_id, .. }) => packet_id,
        Err(_) => None,
    }
}

/// Decode the body (after the netlink header) of an `NFQNL_MSG_PACKET` message.
fn decode_packet(body: &[u8]) -> Result<QueuedPacket<'_>, NfQueueError> {
    let malformed =
        |packet_id: Option<u32>, what: &'static str| NfQueueError::Malformed { packet_id, what };
    let attrs = body
        .get(NFGENMSG_LEN..)
        .ok_or(malformed(None, "nfgenmsg header truncated"))?;
    let mut packet_id = None;
    let mut hw_protocol = 0;
    let mut mark = None;
    let mut payload: &[u8] = &[];
    let mut skb_info = 0u32;
    let mut offset = 0usize;
    while offset < attrs.len() {
        let (Some(nla_len), Some(nla_type)) =
            (read_u16_ne(attrs, offset), read_u16_ne(attrs, offset + 2))
        else {
            return Err(malformed(packet_id, "attribute header truncated"));
        };
        let nla_len = usize::from(nla_len);
        if nla_len < NLA_HDRLEN {
            return Err(malformed(packet_id, "attribute length below its header"));
        }
        let Some(data) = attrs.get(offset + NLA_HDRLEN..offset + nla_len) else {
            return Err(malformed(packet_id, "attribute runs past the message"));
        };
        match nla_type & NLA_TYPE_MASK {
            NFQA_PACKET_HDR => {
                let (Some(id), Some(hw)) = (read_u32_be(data, 0), read_u16_be(data, 4)) else {
                    return Err(malformed(packet_id, "packet header attribute too short"));
                };
                packet_id = Some(id);
                hw_protocol = hw;
            }
            NFQA_MARK => match read_u32_be(data, 0) {
                Some(m) => mark = Some(m),
                None => return Err(malformed(packet_id, "mark attribute too short")),
            },
            NFQA_PAYLOAD => payload = data,
            NFQA_SKB_INFO => match read_u32_be(data, 0) {
                Some(info) => skb_info = info,
                None => return Err(malformed(packet_id, "skb info attribute too short")),
            },
            _ => {}
        }
        offset += align4(nla_len);
    }
    let packet_id = packet_id.ok_or(malformed(None, "no packet header attribute"))?;
    Ok(QueuedPacket {
        packet_id,
        hw_protocol,
        mark,
        payload,
        checksum_ready: skb_info & NFQA_SKB_CSUMNOTREADY == 0,
        gso: skb_info & NFQA_SKB_GSO != 0,
    })
}

/// Iterator returned by [`packets`].
#[derive(Debug)]
struct Packets<'a> {
    messages: Messages<'a>,
}

impl<'a> Iterator for Packets<'a> {
    type Item = Result<QueuedPacket<'a>, NfQueueError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let message = match self.messages.next()? {
                Ok(message) => message,
                Err(what) => {
                    return Some(Err(NfQueueError::Malformed {
                        packet_id: None,
                        what,
                    }));
                }
            };
            if message.msg_type == queue_msg_type(NFQNL_MSG_PACKET) {
                let decoded = decode_packet(message.body);
                return Some(match decoded {
                    Ok(packet) if message.truncated => Err(NfQueueError::Malformed {
                        packet_id: Some(packet.packet_id),
                        what: "message cut short (receive buffer too small?)",
                    }),
                    other => other,
                });
            }
            if message.msg_type == NLMSG_ERROR {
                match ack_errno(message.body) {
                    Some(0) => continue, // an acknowledgement
                    Some(errno) => {
                        return Some(Err(NfQueueError::Kernel {
                            seq: message.seq,
                            error: io::Error::from_raw_os_error(errno),
                        }));
                    }
                    None => {
                        return Some(Err(NfQueueError::Malformed {
                            packet_id: None,
                            what: "netlink error message too short",
                        }));
                    }
                }
            }
            // NLMSG_NOOP, NLMSG_DONE, NLMSG_OVERRUN and anything unknown: nothing to answer.
        }
    }
}

/// Walk every message of a received datagram: queued packets as `Ok`; kernel errors and
/// undecodable messages as `Err` (a [`NfQueueError::Malformed`] carries the packet id when it
/// could be read, so the packet can still get a verdict). Acknowledgements, `NLMSG_NOOP` and
/// other non-packet messages are skipped. Total over any input; never allocates.
pub fn packets(buf: &[u8]) -> impl Iterator<Item = Result<QueuedPacket<'_>, NfQueueError>> {
    Packets {
        messages: Messages::new(buf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Build one queue packet message the way the kernel does.
    fn packet_msg(id: u32, mark: Option<u32>, payload: Option<&[u8]>) -> Vec<u8> {
        packet_msg_with_info(id, mark, payload, None)
    }

    /// A queue packet message with an `NFQA_SKB_INFO` attribute of the given bytes.
    fn packet_msg_with_info(
        id: u32,
        mark: Option<u32>,
        payload: Option<&[u8]>,
        skb_info: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut attrs = Vec::new();
        let mut push = |ty: u16, data: &[u8]| {
            let len = u16::try_from(4 + data.len()).unwrap();
            attrs.extend_from_slice(&len.to_ne_bytes());
            attrs.extend_from_slice(&ty.to_ne_bytes());
            attrs.extend_from_slice(data);
            while attrs.len() % 4 != 0 {
                attrs.push(0);
            }
        };
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&0x0800u16.to_be_bytes());
        hdr.push(1); // NF_INET_LOCAL_IN
        push(NFQA_PACKET_HDR, &hdr);
        if let Some(mark) = mark {
            push(NFQA_MARK, &mark.to_be_bytes());
        }
        push(5, &7u32.to_be_bytes()); // NFQA_IFINDEX_INDEV: ignored
        if let Some(info) = skb_info {
            push(14, info); // NFQA_SKB_INFO
        }
        if let Some(payload) = payload {
            push(NFQA_PAYLOAD, payload);
        }
        let mut body = vec![libc::AF_INET as u8, 0, 0, 7];
        body.extend_from_slice(&attrs);
        nlmsg(queue_msg_type(NFQNL_MSG_PACKET), 0, &body)
    }

    fn nlmsg(msg_type: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(16 + body.len()).unwrap();
        let mut m = len.to_ne_bytes().to_vec();
        m.extend_from_slice(&msg_type.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn error_msg(seq: u32, errno: i32) -> Vec<u8> {
        let mut body = (-errno).to_ne_bytes().to_vec();
        body.extend_from_slice(&[0u8; 16]); // the echoed request header
        nlmsg(NLMSG_ERROR, seq, &body)
    }

    const PAYLOAD: &[u8] = b"\x45\x00\x00\x14abcdefghijklmnop";

    #[test]
    fn one_packet() {
        let datagram = packet_msg(42, Some(0x2a), Some(PAYLOAD));
        let got: Vec<_> = packets(&datagram).collect();
        assert_eq!(got.len(), 1);
        let p = got[0].as_ref().unwrap();
        assert_eq!(p.packet_id, 42);
        assert_eq!(p.hw_protocol, 0x0800);
        assert_eq!(p.mark, Some(0x2a));
        assert_eq!(p.payload, PAYLOAD);
    }

    #[test]
    fn packet_without_mark_or_payload() {
        let datagram = packet_msg(1, None, None);
        let p = packets(&datagram).next().unwrap().unwrap();
        assert_eq!((p.packet_id, p.mark, p.payload), (1, None, &[][..]));
    }

    #[test]
    fn several_messages_acks_and_noops() {
        let mut datagram = packet_msg(1, None, Some(b"a"));
        datagram.extend(error_msg(9, 0)); // ack: skipped
        datagram.extend(nlmsg(1, 0, &[])); // NLMSG_NOOP: skipped
        datagram.extend(packet_msg(2, None, Some(b"bc")));
        datagram.extend(error_msg(10, libc::ENOENT));
        datagram.extend(nlmsg(queue_msg_type(NFQNL_MSG_VERDICT), 0, &[0; 4])); // not for us
        datagram.extend(packet_msg(3, Some(1), Some(b"def")));
        let got: Vec<_> = packets(&datagram).collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].as_ref().unwrap().payload, b"a");
        assert_eq!(got[1].as_ref().unwrap().payload, b"bc");
        match &got[2] {
            Err(NfQueueError::Kernel { seq: 10, error }) => {
                assert_eq!(error.raw_os_error(), Some(libc::ENOENT));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(got[3].as_ref().unwrap().packet_id, 3);
    }

    #[test]
    fn malformed_messages() {
        let good = packet_msg(77, Some(5), Some(PAYLOAD));
        let mut bad_attr_len = good.clone();
        // first attribute (packet header) at 20: claim 2 bytes
        bad_attr_len[20..22].copy_from_slice(&2u16.to_ne_bytes());
        let mut attr_past_end = good.clone();
        // second attribute (mark) at 32: claim it runs past the message
        attr_past_end[32..34].copy_from_slice(&500u16.to_ne_bytes());
        let mut short_header_attr = good.clone();
        short_header_attr[20..22].copy_from_slice(&6u16.to_ne_bytes());
        let mut short_nlmsg_len = good.clone();
        short_nlmsg_len[0..4].copy_from_slice(&8u32.to_ne_bytes());
        let mut long_nlmsg_len = good.clone();
        long_nlmsg_len[0..4].copy_from_slice(&4096u32.to_ne_bytes());
        let no_header = nlmsg(queue_msg_type(NFQNL_MSG_PACKET), 0, &[2, 0, 0, 0]);
        let no_nfgenmsg = nlmsg(queue_msg_type(NFQNL_MSG_PACKET), 0, &[2, 0]);
        let short_error = nlmsg(NLMSG_ERROR, 0, &[1, 2]);
        let cases: [(&str, &[u8], Option<u32>); 9] = [
            ("attribute length below header", &bad_attr_len, None),
            ("attribute past end, after header", &attr_past_end, Some(77)),
            (
                "packet header attribute too short",
                &short_header_attr,
                None,
            ),
            ("nlmsg_len below header", &short_nlmsg_len, None),
            ("nlmsg_len past datagram", &long_nlmsg_len, Some(77)),
            ("no packet header", &no_header, None),
            ("no nfgenmsg", &no_nfgenmsg, None),
            ("short error message", &short_error, None),
            ("short datagram", &good[..10], None),
        ];
        for (name, datagram, want_id) in cases {
            let got: Vec<_> = packets(datagram).collect();
            assert_eq!(got.len(), 1, "{name}: {got:?}");
            match &got[0] {
                Err(e @ NfQueueError::Malformed { packet_id, .. }) => {
                    assert_eq!(*packet_id, want_id, "{name}");
                    assert!(e.to_string().starts_with("malformed queue message"), "{e}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn truncated_datagram_never_panics_and_recovers_ids() {
        let mut datagram = packet_msg(5, Some(9), Some(PAYLOAD));
        datagram.extend(packet_msg(6, None, Some(PAYLOAD)));
        let first_len = packet_msg(5, Some(9), Some(PAYLOAD)).len();
        for len in 0..=datagram.len() {
            let got: Vec<_> = packets(&datagram[..len]).collect();
            for item in &got {
                match item {
                    Ok(p) => assert!(p.packet_id == 5 || p.packet_id == 6),
                    Err(NfQueueError::Malformed { packet_id, .. }) => {
                        assert!(matches!(packet_id, None | Some(5) | Some(6)), "{len}");
                    }
                    Err(other) => panic!("{len}: {other:?}"),
                }
            }
            if len >= first_len {
                assert_eq!(got[0].as_ref().map(|p| p.packet_id).ok(), Some(5), "{len}");
            }
            // past the packet header attribute (16 + 4 + 12 bytes) the id is always found
            if len >= 32 {
                let id = match &got[0] {
                    Ok(p) => Some(p.packet_id),
                    Err(NfQueueError::Malformed { packet_id, .. }) => *packet_id,
                    Err(_) => None,
                };
                assert_eq!(id, Some(5), "{len}");
            }
        }
    }

    #[test]
    fn verdict_message_layout() {
        let mut msg = verdict_message(
            NFQNL_MSG_VERDICT,
            7,
            0x0102_0304,
            NF_ACCEPT,
            Some(0xa0b0_c0d0),
        );
        let bytes = msg.message().unwrap().to_vec();
        let mut want = Vec::new();
        want.extend_from_slice(&40u32.to_ne_bytes());
        want.extend_from_slice(&0x0301u16.to_ne_bytes());
        want.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&[0, 0, 0, 7]);
        want.extend_from_slice(&12u16.to_ne_bytes());
        want.extend_from_slice(&NFQA_VERDICT_HDR.to_ne_bytes());
        want.extend_from_slice(&[0, 0, 0, 1, 1, 2, 3, 4]);
        want.extend_from_slice(&8u16.to_ne_bytes());
        want.extend_from_slice(&NFQA_MARK.to_ne_bytes());
        want.extend_from_slice(&[0xa0, 0xb0, 0xc0, 0xd0]);
        assert_eq!(bytes, want);

        let mut drop = verdict_message(NFQNL_MSG_VERDICT, 0, 1, NF_DROP, None);
        assert_eq!(drop.message().unwrap().len(), 32);
    }

    #[test]
    fn config_message_pads_attributes() {
        let mut msg: Writer<64> = queue_message(
            queue_msg_type(NFQNL_MSG_CONFIG),
            NLM_F_REQUEST | NLM_F_ACK,
            3,
            0x0102,
        );
        msg.attr(NFQA_CFG_PARAMS, &[0, 0, 0, 128, NFQNL_COPY_PACKET]);
        assert_eq!(msg.seq(), 3);
        let bytes = msg.message().unwrap();
        assert_eq!(bytes.len(), 16 + 4 + 12);
        assert_eq!(&bytes[18..20], &[0x01, 0x02]); // res_id big endian
        assert_eq!(&bytes[20..22], &9u16.to_ne_bytes()); // nla_len excludes padding
        assert_eq!(&bytes[24..32], &[0, 0, 0, 128, 2, 0, 0, 0]);
    }

    #[test]
    fn message_overflow_is_reported_not_panicked() {
        let mut msg: Writer<24> = queue_message(0, 0, 0, 0);
        msg.attr(1, &[0; 8]);
        assert!(msg.message().is_none());
    }

    #[test]
    fn error_messages_name_the_step() {
        let e = NfQueueError::BindQueue {
            queue: 0,
            error: io::Error::from_raw_os_error(libc::EBUSY),
        };
        assert!(e.to_string().starts_with("bind queue 0: "), "{e}");
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
        let e = NfQueueError::Malformed {
            packet_id: Some(3),
            what: "x",
        };
        assert_eq!(e.to_string(), "malformed queue message for packet 3: x");
        assert!(e.io_error().is_none());
    }

    #[test]
    fn skb_info_flags() {
        let cases: [(&str, Option<&[u8]>, bool, bool); 6] = [
            ("no attribute (GSO off)", None, true, false),
            ("csum not ready", Some(&[0, 0, 0, 1]), false, false),
            ("gso", Some(&[0, 0, 0, 2]), true, true),
            ("gso, csum not ready", Some(&[0, 0, 0, 3]), false, true),
            ("csum not verified only", Some(&[0, 0, 0, 4]), true, false),
            ("unknown bits ignored", Some(&[0xff, 0, 0, 0]), true, false),
        ];
        for (name, info, ready, gso) in cases {
            let datagram = packet_msg_with_info(9, None, Some(PAYLOAD), info);
            let p = packets(&datagram).next().unwrap().unwrap();
            assert_eq!((p.checksum_ready, p.gso), (ready, gso), "{name}");
            assert_eq!(p.payload, PAYLOAD, "{name}");
        }
        let short = packet_msg_with_info(9, None, Some(PAYLOAD), Some(&[0, 1]));
        match packets(&short).next().unwrap() {
            Err(NfQueueError::Malformed {
                packet_id: Some(9),
                what,
            }) => assert_eq!(what, "skb info attribute too short"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn recv_batch_slots() {
        let mut batch = RecvBatch::new(3, 100);
        assert_eq!(
            (batch.capacity(), batch.buffer_len(), batch.len()),
            (3, 100, 0)
        );
        assert!(batch.datagram(0).is_none());
        batch.prepare();
        // what recvmmsg would leave: datagram 0 cut (MSG_TRUNC length), 1 from a user process
        batch.buffers[..4].copy_from_slice(b"abcd");
        batch.headers[0].msg_len = 5000;
        batch.headers[1].msg_len = 4;
        batch.addrs[1].nl_pid = 4242;
        batch.headers[2].msg_len = 3;
        batch.buffers[200..203].copy_from_slice(b"xyz");
        batch.received = 3;
        assert_eq!(batch.datagram(0).unwrap().unwrap().len(), 100);
        assert_eq!(&batch.datagram(0).unwrap().unwrap()[..4], b"abcd");
        assert!(matches!(
            batch.datagram(1),
            Some(Err(NfQueueError::ForeignSender { portid: 4242 }))
        ));
        assert_eq!(batch.datagram(2).unwrap().unwrap(), b"xyz");
        assert!(batch.datagram(3).is_none());
        assert_eq!(batch.datagrams().count(), 3);
        // every header points at its own buffer and address again
        batch.prepare();
        assert!(batch.is_empty());
        for i in 0..3 {
            let h = &batch.headers[i].msg_hdr;
            // SAFETY: `prepare` pointed `msg_iov` at `batch.iovecs[i]`, which is alive.
            let iov = unsafe { &*h.msg_iov };
            assert_eq!(
                iov.iov_base.cast::<u8>(),
                batch.buffers[i * 100..].as_ptr().cast_mut()
            );
            assert_eq!(iov.iov_len, 100);
            assert_eq!(h.msg_namelen, sockaddr_nl_len());
            assert_eq!(batch.addrs[i].nl_pid, 0);
        }
        let clamped = RecvBatch::new(0, 0);
        assert_eq!(
            (clamped.capacity(), clamped.buffer_len()),
            (1, NLMSG_HDRLEN)
        );
        assert_eq!(RecvBatch::new(5000, 64).capacity(), MAX_BATCH);
    }

    // ---- verdict batches --------------------------------------------------------------------

    const TRUSTED: u32 = 0x0010_0000;

    fn accept() -> Answer {
        Answer {
            verdict: RawVerdict::Accept,
            mark: None,
        }
    }

    fn drop_() -> Answer {
        Answer {
            verdict: RawVerdict::Drop,
            mark: None,
        }
    }

    fn repeat(mark: u32) -> Answer {
        Answer {
            verdict: RawVerdict::Repeat,
            mark: Some(mark),
        }
    }

    /// The bytes of one verdict message, written out by hand from the UAPI layout.
    fn want(msg: u16, queue: u16, id: u32, verdict: u32, mark: Option<u32>) -> Vec<u8> {
        let len: u32 = if mark.is_some() { 40 } else { 32 };
        let mut w = len.to_ne_bytes().to_vec();
        w.extend_from_slice(&(0x0300 | msg).to_ne_bytes()); // NFNL_SUBSYS_QUEUE << 8 | msg
        w.extend_from_slice(&1u16.to_ne_bytes()); // NLM_F_REQUEST
        w.extend_from_slice(&0u32.to_ne_bytes()); // seq
        w.extend_from_slice(&0u32.to_ne_bytes()); // port id
        w.extend_from_slice(&[0, 0]); // AF_UNSPEC, NFNETLINK_V0
        w.extend_from_slice(&queue.to_be_bytes());
        w.extend_from_slice(&12u16.to_ne_bytes());
        w.extend_from_slice(&2u16.to_ne_bytes()); // NFQA_VERDICT_HDR
        w.extend_from_slice(&verdict.to_be_bytes());
        w.extend_from_slice(&id.to_be_bytes());
        if let Some(mark) = mark {
            w.extend_from_slice(&8u16.to_ne_bytes());
            w.extend_from_slice(&3u16.to_ne_bytes()); // NFQA_MARK
            w.extend_from_slice(&mark.to_be_bytes());
        }
        w
    }

    const SINGLE: u16 = 1;
    const BATCH: u16 = 3;

    /// Push `answers` and flush once; returns the datagrams sent and the flush outcome.
    fn batch_of(capacity: usize, answers: &[(u32, Answer)]) -> (Vec<Vec<u8>>, Flushed) {
        let mut b = VerdictBatcher::new(7, capacity);
        let mut sent = Vec::new();
        for &(id, answer) in answers {
            let early = b.push_with(id, answer, |bytes| {
                sent.push(bytes.to_vec());
                Ok(())
            });
            assert!(early.is_none(), "unexpected early flush");
        }
        let flushed = b.flush_with(|bytes| {
            sent.push(bytes.to_vec());
            Ok(())
        });
        (sent, flushed)
    }

    #[test]
    fn batch_verdict_without_mark() {
        let (sent, flushed) = batch_of(8, &[(10, accept()), (11, accept()), (12, accept())]);
        assert_eq!(sent, [want(BATCH, 7, 12, 1, None)]);
        assert_eq!((flushed.sent, flushed.failed, flushed.messages), (3, 0, 1));
        assert!(flushed.error.is_none());
    }

    #[test]
    fn batch_verdict_with_mark() {
        let (sent, _) = batch_of(8, &[(13, repeat(TRUSTED)), (14, repeat(TRUSTED))]);
        assert_eq!(sent, [want(BATCH, 7, 14, 4, Some(TRUSTED))]);
        let (sent, _) = batch_of(8, &[(1, drop_()), (2, drop_())]);
        assert_eq!(sent, [want(BATCH, 7, 2, 0, None)]);
    }

    #[test]
    fn a_run_of_one_is_a_plain_verdict() {
        let (sent, flushed) = batch_of(8, &[(5, repeat(TRUSTED))]);
        assert_eq!(sent, [want(SINGLE, 7, 5, 4, Some(TRUSTED))]);
        assert_eq!((flushed.sent, flushed.messages), (1, 1));
    }

    #[test]
    fn runs_merge_equal_consecutive_answers_into_one_datagram() {
        let answers = [
            (1, accept()),
            (2, accept()),
            (3, drop_()),
            (4, accept()),
            (5, repeat(TRUSTED)),
            (6, repeat(TRUSTED)),
            (7, repeat(TRUSTED | 1)), // another mark: another run
            (9, accept()),            // a gap in the ids does not matter
            (12, accept()),
        ];
        let (sent, flushed) = batch_of(16, &answers);
        let mut datagram = want(BATCH, 7, 2, 1, None);
        datagram.extend(want(SINGLE, 7, 3, 0, None));
        datagram.extend(want(SINGLE, 7, 4, 1, None));
        datagram.extend(want(BATCH, 7, 6, 4, Some(TRUSTED)));
        datagram.extend(want(SINGLE, 7, 7, 4, Some(TRUSTED | 1)));
        datagram.extend(want(BATCH, 7, 12, 1, None));
        assert_eq!(sent, [datagram], "one sendto for the whole batch");
        assert_eq!((flushed.sent, flushed.messages), (9, 6));
    }

    #[test]
    fn ids_wrap() {
        let answers = [
            (u32::MAX - 1, accept()),
            (u32::MAX, accept()),
            (0, accept()),
            (1, accept()),
        ];
        let (sent, flushed) = batch_of(8, &answers);
        assert_eq!(sent, [want(BATCH, 7, 1, 1, None)]);
        assert_eq!(flushed.sent, 4);
    }

    #[test]
    fn an_id_not_after_the_previous_one_ends_the_run() {
        let answers = [
            (5, accept()),
            (6, accept()),
            (6, accept()),
            (3, accept()),
            (4, accept()),
        ];
        let (sent, _) = batch_of(8, &answers);
        let mut datagram = want(BATCH, 7, 6, 1, None);
        datagram.extend(want(SINGLE, 7, 6, 1, None));
        datagram.extend(want(BATCH, 7, 4, 1, None));
        assert_eq!(sent, [datagram]);
    }

    #[test]
    fn id_order_is_the_kernels() {
        let cases = [
            (1, 0, true),
            (0, 1, false),
            (0, 0, false),
            (0, u32::MAX, true),
            (u32::MAX, 0, false),
            (0x7fff_ffff, 0, true),
            (0x8000_0000, 0, false),
            (5, 0x8000_0006, true),
        ];
        for (a, b, after) in cases {
            assert_eq!(id_after(a, b), after, "{a:#x} after {b:#x}");
        }
    }

    #[test]
    fn a_full_batcher_flushes_early() {
        let mut b = VerdictBatcher::new(7, 2);
        let mut sent = Vec::new();
        let mut send = |bytes: &[u8]| {
            sent.push(bytes.to_vec());
            Ok(())
        };
        assert!(b.push_with(1, accept(), &mut send).is_none());
        assert!(b.push_with(2, drop_(), &mut send).is_none());
        assert_eq!(b.pending(), 2);
        let early = b.push_with(3, drop_(), &mut send).expect("early flush");
        assert_eq!((early.sent, early.messages), (2, 2));
        assert_eq!(b.pending(), 1);
        let last = b.flush_with(&mut send);
        assert_eq!((last.sent, last.messages), (1, 1));
        let mut first = want(SINGLE, 7, 1, 1, None);
        first.extend(want(SINGLE, 7, 2, 0, None));
        // 3 could not join 2's run: it is in the next flush
        assert_eq!(sent, [first, want(SINGLE, 7, 3, 0, None)]);
        // nothing pending: no send at all
        let empty = b.flush_with(|_| panic!("sent an empty batch"));
        assert_eq!((empty.sent, empty.messages), (0, 0));
    }

    fn failing(errno: i32) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(errno))
    }

    #[test]
    fn a_transient_send_error_is_retried_once() {
        let mut b = VerdictBatcher::new(7, 8);
        b.push_with(1, accept(), |_| unreachable!());
        let mut calls = Vec::new();
        let flushed = b.flush_with(|bytes| {
            calls.push(bytes.to_vec());
            if calls.len() == 1 {
                failing(libc::ENOBUFS)
            } else {
                Ok(())
            }
        });
        assert_eq!(
            calls,
            [want(SINGLE, 7, 1, 1, None), want(SINGLE, 7, 1, 1, None)]
        );
        assert_eq!((flushed.sent, flushed.failed), (1, 0));

        b.push_with(2, accept(), |_| unreachable!());
        let mut tries = 0;
        let flushed = b.flush_with(|_| {
            tries += 1;
            failing(libc::EPERM)
        });
        assert_eq!(tries, 1, "EPERM is not retried");
        assert_eq!((flushed.sent, flushed.failed, flushed.lost), (0, 1, 0));
        let error = flushed.error.unwrap();
        assert_eq!(error.raw_os_error(), Some(libc::EPERM));
        assert!(
            error
                .to_string()
                .starts_with("send 1 verdict messages on queue 7: "),
            "{error}"
        );
    }

    #[test]
    fn failed_verdicts_go_out_first_with_the_next_flush() {
        let mut b = VerdictBatcher::new(7, 4);
        b.push_with(1, accept(), |_| unreachable!());
        b.push_with(2, accept(), |_| unreachable!());
        let failed = b.flush_with(|_| failing(libc::ENOMEM));
        assert_eq!((failed.sent, failed.failed, failed.lost), (0, 2, 0));
        assert!(b.batching());
        b.push_with(3, drop_(), |_| unreachable!());
        b.push_with(4, accept(), |_| unreachable!());
        b.push_with(5, accept(), |_| unreachable!());
        let mut sent = Vec::new();
        let flushed = b.flush_with(|bytes| {
            sent.push(bytes.to_vec());
            Ok(())
        });
        let mut datagram = want(BATCH, 7, 2, 1, None);
        datagram.extend(want(SINGLE, 7, 3, 0, None));
        datagram.extend(want(BATCH, 7, 5, 1, None));
        assert_eq!(sent, [datagram]);
        assert_eq!(
            (flushed.sent, flushed.late, flushed.lost, flushed.messages),
            (3, 2, 0, 3)
        );
    }

    #[test]
    fn verdicts_failing_twice_are_given_up_and_batching_stops() {
        let mut b = VerdictBatcher::new(7, 4);
        b.push_with(1, accept(), |_| unreachable!());
        b.push_with(2, accept(), |_| unreachable!());
        let first = b.flush_with(|_| failing(libc::EPERM));
        assert_eq!((first.failed, first.lost), (2, 0));
        b.push_with(3, accept(), |_| unreachable!());
        let given_up = b.flush_with(|_| failing(libc::EPERM));
        assert_eq!((given_up.failed, given_up.lost), (1, 3));
        assert!(!b.batching());
        // 1..=3 may still be queued: equal answers no longer merge into a batch verdict
        b.push_with(4, accept(), |_| unreachable!());
        b.push_with(5, accept(), |_| unreachable!());
        let mut sent = Vec::new();
        let flushed = b.flush_with(|bytes| {
            sent.push(bytes.to_vec());
            Ok(())
        });
        let mut datagram = want(SINGLE, 7, 4, 1, None);
        datagram.extend(want(SINGLE, 7, 5, 1, None));
        assert_eq!(sent, [datagram]);
        assert_eq!((flushed.sent, flushed.late, flushed.messages), (2, 0, 2));
    }

    /// The decoded verdict messages of a datagram we send: (message type, queue, verdict, id,
    /// mark).
    fn decode_verdicts(datagram: &[u8]) -> Vec<(u16, u16, u32, u32, Option<u32>)> {
        let mut out = Vec::new();
        for message in Messages::new(datagram) {
            let message = message.unwrap();
            assert!(!message.truncated);
            let queue = u16::from_be_bytes([message.body[2], message.body[3]]);
            let attrs = &message.body[4..];
            let (mut verdict, mut id, mut mark) = (None, None, None);
            let mut at = 0;
            while at < attrs.len() {
                let len = usize::from(u16::from_ne_bytes([attrs[at], attrs[at + 1]]));
                let ty = u16::from_ne_bytes([attrs[at + 2], attrs[at + 3]]);
                let data = &attrs[at + 4..at + len];
                match ty {
                    2 => {
                        verdict = read_u32_be(data, 0);
                        id = read_u32_be(data, 4);
                    }
                    3 => mark = read_u32_be(data, 0),
                    other => panic!("attribute {other}"),
                }
                at += align4(len);
            }
            out.push((
                message.msg_type & 0xff,
                queue,
                verdict.unwrap(),
                id.unwrap(),
                mark,
            ));
        }
        out
    }

    /// The kernel's side, as in `nfnetlink_queue.c`: a list of queued ids in queue order; a
    /// verdict takes its id from anywhere in the list, a batch verdict takes every id from
    /// the front that is not after its id. Either finding nothing is ENOENT.
    #[derive(Default)]
    struct KernelQueue {
        queued: std::collections::VecDeque<u32>,
        answered: std::collections::HashMap<u32, (u32, Option<u32>)>,
        enoent: usize,
    }

    impl KernelQueue {
        fn receive(&mut self, datagram: &[u8]) {
            for (msg, queue, verdict, id, mark) in decode_verdicts(datagram) {
                assert_eq!(queue, 7);
                match msg {
                    SINGLE => match self.queued.iter().position(|&q| q == id) {
                        Some(at) => {
                            self.queued.remove(at);
                            self.answered.insert(id, (verdict, mark));
                        }
                        None => self.enoent += 1,
                    },
                    BATCH => {
                        let mut taken = 0;
                        while let Some(&front) = self.queued.front() {
                            if (front.wrapping_sub(id) as i32) > 0 {
                                break;
                            }
                            self.queued.pop_front();
                            self.answered.insert(front, (verdict, mark));
                            taken += 1;
                        }
                        if taken == 0 {
                            self.enoent += 1;
                        }
                    }
                    other => panic!("message type {other}"),
                }
            }
        }
    }

    const ANSWERS: [Answer; 5] = [
        Answer {
            verdict: RawVerdict::Accept,
            mark: None,
        },
        Answer {
            verdict: RawVerdict::Drop,
            mark: None,
        },
        Answer {
            verdict: RawVerdict::Repeat,
            mark: Some(TRUSTED),
        },
        Answer {
            verdict: RawVerdict::Repeat,
            mark: Some(0x0020_0000),
        },
        Answer {
            verdict: RawVerdict::Accept,
            mark: Some(1),
        },
    ];

    #[derive(Debug, Clone)]
    enum Op {
        /// The kernel queues `gap - 1` ids we never see (undecodable when `hidden`, else not
        /// queued at all), then one packet we answer with `ANSWERS[answer]`.
        Packet {
            gap: u32,
            hidden: bool,
            answer: usize,
        },
        Flush,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1u32..4, proptest::bool::weighted(0.1), 0usize..ANSWERS.len())
                .prop_map(|(gap, hidden, answer)| Op::Packet { gap, hidden, answer }),
            1 => Just(Op::Flush),
        ]
    }

    proptest! {
        /// Against a model of the kernel: every packet we push gets exactly its own answer
        /// (or, when its verdict was given up, none), no message is ever rejected, and every
        /// push is accounted for once as sent or failed. Only the hidden ids (undecodable
        /// messages) may be covered by another packet's batch verdict.
        #[test]
        fn batches_answer_every_packet_with_its_own_answer(
            start in prop_oneof![Just(0u32), Just(u32::MAX - 20), any::<u32>()],
            capacity in 1usize..8,
            ops in proptest::collection::vec(op(), 0..200),
            // send results, cycled: 0 ok, 1 ENOBUFS (retried), 2 EPERM
            plan in proptest::collection::vec(prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)], 1..12),
        ) {
            let mut kernel = KernelQueue::default();
            let mut b = VerdictBatcher::new(7, capacity);
            let mut expected = std::collections::HashMap::new();
            let mut next_send = 0usize;
            let (mut pushed, mut sent, mut failed, mut lost) = (0usize, 0usize, 0usize, 0usize);
            let mut send = |kernel: &mut KernelQueue, bytes: &[u8]| {
                let step = plan[next_send % plan.len()];
                next_send += 1;
                match step {
                    0 => {
                        kernel.receive(bytes);
                        Ok(())
                    }
                    1 => failing(libc::ENOBUFS),
                    _ => failing(libc::EPERM),
                }
            };
            let mut tally = |f: Flushed| {
                sent += f.sent;
                failed += f.failed;
                lost += f.lost;
            };
            let mut id = start;
            for op in ops {
                match op {
                    Op::Packet { gap, hidden, answer } => {
                        for _ in 1..gap {
                            id = id.wrapping_add(1);
                            if hidden {
                                kernel.queued.push_back(id);
                            }
                        }
                        id = id.wrapping_add(1);
                        kernel.queued.push_back(id);
                        expected.insert(id, ANSWERS[answer]);
                        pushed += 1;
                        if let Some(f) = b.push_with(id, ANSWERS[answer], |bytes| send(&mut kernel, bytes)) {
                            tally(f);
                        }
                        prop_assert!(b.pending() <= b.capacity());
                    }
                    Op::Flush => tally(b.flush_with(|bytes| send(&mut kernel, bytes))),
                }
            }
            // the last flush gets through (and sends what an earlier failure kept)
            tally(b.flush_with(|bytes| {
                kernel.receive(bytes);
                Ok(())
            }));
            prop_assert_eq!(sent + failed, pushed);
            prop_assert_eq!(kernel.enoent, 0);
            let mut unanswered = 0;
            for (id, answer) in &expected {
                match kernel.answered.get(id) {
                    Some(&(verdict, mark)) => {
                        prop_assert_eq!(verdict, raw_verdict(answer.verdict), "packet {}", id);
                        prop_assert_eq!(mark, answer.mark, "packet {}", id);
                    }
                    None => unanswered += 1,
                }
            }
            prop_assert_eq!(unanswered, lost);
            if lost == 0 {
                prop_assert!(b.batching());
            }
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            for item in packets(&bytes).take(1000) {
                let _ = item;
            }
        }

        #[test]
        fn mutated_messages_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        ) {
            let mut datagram = packet_msg(11, Some(2), Some(PAYLOAD));
            datagram.extend(error_msg(1, 0));
            datagram.extend(packet_msg(12, None, Some(b"x")));
            for (at, byte) in flips {
                let i = at % datagram.len();
                datagram[i] = byte;
            }
            // every item consumes at least one 16-byte header, or ends the walk
            let n = packets(&datagram).count();
            prop_assert!(n <= datagram.len() / 16 + 1);
        }
    }
}
