//! Netlink plumbing shared by the two raw `NETLINK_NETFILTER` clients, [`crate::nfqueue`]
//! (the packet path) and [`crate::conntrack`] (revocation): socket options, the kernel's
//! address, and a total, bounds-checked, non-allocating walk over the messages of a received
//! datagram. Written from `linux/netlink.h`.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// `NLMSG_HDRLEN`: the aligned size of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
/// `NLA_HDRLEN`: the size of `struct nlattr`.
const NLA_HDRLEN: usize = 4;
/// `NLA_F_NESTED`.
const NLA_F_NESTED: u16 = 0x8000;
/// `NFNETLINK_V0`: the nfgenmsg version.
const NFNETLINK_V0: u8 = 0;

pub(crate) fn kernel_address() -> libc::sockaddr_nl {
    // SAFETY: all-zero bytes are a valid sockaddr_nl (port 0 = kernel, no groups).
    let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr
}

pub(crate) fn sockaddr_nl_len() -> libc::socklen_t {
    // The struct is 12 bytes; the cast cannot truncate.
    mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t
}

pub(crate) fn set_int_option(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a valid c_int and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub(crate) fn get_int_option(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is a writable c_int and `len` holds its size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(value)
    }
}

pub(crate) fn set_recv_timeout(fd: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    // SAFETY: `tv` is a valid timeval and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub(crate) fn align4(len: usize) -> usize {
    len.saturating_add(3) & !3
}

pub(crate) fn read_array<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

pub(crate) fn read_u16_ne(buf: &[u8], at: usize) -> Option<u16> {
    read_array(buf, at).map(u16::from_ne_bytes)
}

pub(crate) fn read_u32_ne(buf: &[u8], at: usize) -> Option<u32> {
    read_array(buf, at).map(u32::from_ne_bytes)
}

pub(crate) fn read_u16_be(buf: &[u8], at: usize) -> Option<u16> {
    read_array(buf, at).map(u16::from_be_bytes)
}

pub(crate) fn read_u32_be(buf: &[u8], at: usize) -> Option<u32> {
    read_array(buf, at).map(u32::from_be_bytes)
}

/// One netlink message of a datagram.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawMessage<'a> {
    pub(crate) msg_type: u16,
    pub(crate) seq: u32,
    /// Everything after the netlink header (cut short when `truncated`).
    pub(crate) body: &'a [u8],
    /// The header claimed more bytes than the datagram holds.
    pub(crate) truncated: bool,
}

/// Iterator over the netlink messages of one datagram. Stops after the first error.
pub(crate) struct Messages<'a> {
    buf: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> Messages<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Messages<'a> {
        Messages {
            buf,
            offset: 0,
            done: false,
        }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<RawMessage<'a>, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = match self.buf.get(self.offset..) {
            Some(rest) if !rest.is_empty() => rest,
            _ => {
                self.done = true;
                return None;
            }
        };
        let header = (
            read_u32_ne(rest, 0),
            read_u16_ne(rest, 4),
            read_u32_ne(rest, 8),
        );
        let (Some(len), Some(msg_type), Some(seq)) = header else {
            self.done = true;
            return Some(Err("netlink header truncated"));
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len < NLMSG_HDRLEN {
            self.done = true;
            return Some(Err("netlink message length below its header"));
        }
        let (body, truncated) = match rest.get(NLMSG_HDRLEN..len) {
            Some(body) => (body, false),
            None => {
                self.done = true;
                (rest.get(NLMSG_HDRLEN..).unwrap_or_default(), true)
            }
        };
        self.offset = self.offset.saturating_add(align4(len));
        Some(Ok(RawMessage {
            msg_type,
            seq,
            body,
            truncated,
        }))
    }
}

/// The errno of an `NLMSG_ERROR` body (0 for an acknowledgement), positive.
pub(crate) fn ack_errno(body: &[u8]) -> Option<i32> {
    let error = i32::from_ne_bytes(read_array(body, 0)?);
    Some(error.checked_neg().unwrap_or(i32::MAX))
}

impl std::fmt::Debug for Messages<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messages")
            .field("len", &self.buf.len())
            .field("offset", &self.offset)
            .finish()
    }
}

/// Which step of [`open_bound`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenStep {
    Socket,
    Bind,
}

/// A new `NETLINK_NETFILTER` socket (close-on-exec), bound with a port id the kernel assigns.
pub(crate) fn open_bound() -> Result<OwnedFd, (OpenStep, io::Error)> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    if raw < 0 {
        return Err((OpenStep::Socket, io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let local = kernel_address(); // port id 0: the kernel assigns ours
    // SAFETY: `local` is a valid sockaddr_nl and the length passed is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const local).cast::<libc::sockaddr>(),
            sockaddr_nl_len(),
        )
    };
    if rc < 0 {
        return Err((OpenStep::Bind, io::Error::last_os_error()));
    }
    Ok(fd)
}

/// Send one datagram to the kernel; a partial send is an error.
pub(crate) fn send_to_kernel(fd: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
    let kernel = kernel_address();
    // SAFETY: `bytes` is a valid readable buffer of the given length, and `kernel` a valid
    // sockaddr_nl of the given length.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
            (&raw const kernel).cast::<libc::sockaddr>(),
            sockaddr_nl_len(),
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    if usize::try_from(sent).ok() != Some(bytes.len()) {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "netlink message sent partially",
        ));
    }
    Ok(())
}

/// One received datagram: its full length (may exceed the buffer: `MSG_TRUNC`) and the
/// sender's port id (0 = the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Datagram {
    pub(crate) len: usize,
    pub(crate) sender: u32,
}

/// `recvfrom` with `MSG_TRUNC` added to `flags`; the kernel writes at most `buf.len()` bytes.
pub(crate) fn recv_datagram(
    fd: &OwnedFd,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<Datagram> {
    // SAFETY: all-zero bytes are a valid sockaddr_nl.
    let mut from: libc::sockaddr_nl = unsafe { mem::zeroed() };
    let mut from_len = sockaddr_nl_len();
    // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes; `from` and `from_len`
    // describe a valid sockaddr_nl. MSG_TRUNC makes the call return the full datagram
    // length but the kernel still writes at most `buf.len()` bytes.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags | libc::MSG_TRUNC,
            (&raw mut from).cast::<libc::sockaddr>(),
            &mut from_len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Datagram {
        len: usize::try_from(n).unwrap_or(0),
        sender: from.nl_pid,
    })
}

// ---------------------------------------------------------------------------------------------
// Building messages (fixed-size stack buffers, no allocation).

/// Netlink bytes built in a fixed-size buffer. Writing past the capacity marks the buffer as
/// overflowed instead of panicking; [`Writer::bytes`] and [`Writer::message`] then return
/// `None`.
#[derive(Debug, Clone)]
pub(crate) struct Writer<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflow: bool,
}

impl<const N: usize> Writer<N> {
    pub(crate) fn new() -> Writer<N> {
        Writer {
            buf: [0; N],
            len: 0,
            overflow: false,
        }
    }

    /// A netlink message header and an nfgenmsg (`family`, version 0, res_id 0); the length
    /// is filled in by [`Writer::message`].
    pub(crate) fn request(msg_type: u16, flags: u16, seq: u32, family: u8) -> Writer<N> {
        Writer::request_for(msg_type, flags, seq, family, 0)
    }

    /// [`Writer::request`] with the nfgenmsg `res_id` (big endian; NFQUEUE: the queue number).
    pub(crate) fn request_for(
        msg_type: u16,
        flags: u16,
        seq: u32,
        family: u8,
        res_id: u16,
    ) -> Writer<N> {
        let mut w = Writer::new();
        w.put(&0u32.to_ne_bytes()); // nlmsg_len
        w.put(&msg_type.to_ne_bytes());
        w.put(&flags.to_ne_bytes());
        w.put(&seq.to_ne_bytes());
        w.put(&0u32.to_ne_bytes()); // nlmsg_pid: 0, the kernel fills in ours
        w.put(&[family, NFNETLINK_V0]);
        w.put(&res_id.to_be_bytes());
        w
    }

    /// The sequence number of a message started by [`Writer::request`].
    pub(crate) fn seq(&self) -> u32 {
        read_u32_ne(&self.buf, 8).unwrap_or(0)
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) {
        let Some(end) = self.len.checked_add(bytes.len()) else {
            self.overflow = true;
            return;
        };
        match self.buf.get_mut(self.len..end) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.len = end;
            }
            None => self.overflow = true,
        }
    }

    /// Append one attribute, padded to 4 bytes.
    pub(crate) fn attr(&mut self, attr_type: u16, payload: &[u8]) {
        let Ok(len) = u16::try_from(NLA_HDRLEN + payload.len()) else {
            self.overflow = true;
            return;
        };
        self.put(&len.to_ne_bytes());
        self.put(&attr_type.to_ne_bytes());
        self.put(payload);
        self.pad();
    }

    pub(crate) fn pad(&mut self) {
        let padding = align4(self.len) - self.len;
        self.put(&[0u8; 3][..padding.min(3)]);
    }

    /// Open a nested attribute; returns where it starts, for [`Writer::nest_end`].
    pub(crate) fn nest_start(&mut self, attr_type: u16) -> usize {
        let start = self.len;
        self.put(&0u16.to_ne_bytes());
        self.put(&(attr_type | NLA_F_NESTED).to_ne_bytes());
        start
    }

    pub(crate) fn nest_end(&mut self, start: usize) {
        let len = self.len.checked_sub(start).map(u16::try_from);
        match (len, self.buf.get_mut(start..start.saturating_add(2))) {
            (Some(Ok(len)), Some(dst)) => dst.copy_from_slice(&len.to_ne_bytes()),
            _ => self.overflow = true,
        }
    }

    /// The bytes written, or `None` if they did not fit.
    pub(crate) fn bytes(&self) -> Option<&[u8]> {
        if self.overflow {
            return None;
        }
        self.buf.get(..self.len)
    }

    /// The finished message (length filled in), or `None` if it did not fit.
    pub(crate) fn message(&mut self) -> Option<&[u8]> {
        if self.overflow {
            return None;
        }
        let len = u32::try_from(self.len).ok()?;
        self.buf.get_mut(0..4)?.copy_from_slice(&len.to_ne_bytes());
        self.buf.get(..self.len)
    }
}
