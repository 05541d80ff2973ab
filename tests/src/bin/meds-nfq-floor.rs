//! `meds-nfq-floor`: the accept-all NFQUEUE loop that `tests/bench.sh` measures as the floor of
//! any NFQUEUE firewall. It binds one queue through the dataplane's own netlink layer
//! ([`meds_dataplane::nfqueue`], configured like the dataplane's defaults) and answers every
//! packet with ACCEPT without looking at it, with the dataplane's queue I/O: `--batch` queue
//! messages per `recvmmsg` and their verdicts merged by the same [`VerdictBatcher`] (one batch
//! verdict for a run of accepts), or with `--batch 1` one receive and one verdict per packet
//! (the classic loop). The gap between this loop and `meds-dataplane` is therefore the cost of
//! everything the dataplane does on top of queue I/O (parsing, the rule chain, counters), not
//! of the kernel.
//!
//! Bounded: it exits by itself after `--max-seconds`. SIGTERM ends it at once (the kernel unbinds
//! the queue when the socket closes). It installs no iptables rule: the bench adds
//! `-j NFQUEUE --queue-num N` inside its own network namespace.
//!
//! Exit codes: 0 after `--max-seconds`, 2 usage error, 1 runtime error (bind, receive, verdict).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use meds_dataplane::chain::Verdict;
use meds_dataplane::nfqueue::{
    self, MAX_BATCH, NfQueue, NfQueueError, QueueConfig, RecvBatch, VerdictBatcher,
};
use meds_dataplane::offload::Answer;

/// Longest life `--max-seconds` allows (one hour).
const MAX_LIFETIME_SECONDS: u64 = 3600;

#[derive(Debug, Parser)]
#[command(about = "Accept-all NFQUEUE loop (the bench's floor) on the dataplane's queue I/O")]
struct Args {
    /// NFQUEUE number to bind.
    #[arg(long, default_value_t = 0)]
    queue_num: u16,
    /// Queue length in the kernel (the dataplane's default).
    #[arg(long, default_value_t = 4096)]
    max_len: u32,
    /// Netlink socket receive buffer in bytes (the dataplane's default).
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    rcvbuf_bytes: usize,
    /// Bytes of each packet copied to user space (the dataplane's default).
    #[arg(long, default_value_t = 65535)]
    copy_range: u32,
    /// Queue messages per receive and verdicts per flush (1..=1024, the dataplane's default);
    /// 1: one recv and one verdict per packet.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Receive GSO packets unsegmented (as the dataplane does by default).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    gso: bool,
    /// Exit after this many seconds (1..=3600).
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(&args) {
        Ok(answered) => {
            println!("{}", serde_json::json!({ "answered": answered }));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meds-nfq-floor: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Answer every queued packet with ACCEPT until `--max-seconds` passed; returns how many.
fn run(args: &Args) -> Result<u64> {
    if !(1..=MAX_LIFETIME_SECONDS).contains(&args.max_seconds) {
        bail!("--max-seconds must be 1..={MAX_LIFETIME_SECONDS}");
    }
    if !(1..=MAX_BATCH).contains(&args.batch) {
        bail!("--batch must be 1..={MAX_BATCH}");
    }
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let mut queue = NfQueue::open(&QueueConfig {
        queue_num: args.queue_num,
        max_len: args.max_len,
        copy_range: args.copy_range,
        rcvbuf_bytes: args.rcvbuf_bytes,
        fail_open: false,
        gso: args.gso,
    })
    .with_context(|| format!("bind NFQUEUE {}", args.queue_num))?;
    if args.batch == 1 {
        single(&mut queue, deadline)
    } else {
        batched(&mut queue, deadline, args.batch)
    }
}

/// One receive and one verdict per packet.
fn single(queue: &mut NfQueue, deadline: Instant) -> Result<u64> {
    let mut buf = vec![0u8; queue.recv_buffer_len()];
    let mut answered = 0u64;
    while Instant::now() < deadline {
        let len = match queue.recv(&mut buf) {
            Ok(Some(len)) => len,
            Ok(None) => continue, // receive timeout: look at the deadline
            Err(NfQueueError::ForeignSender { .. }) => continue,
            Err(e) if is_transient(&e) => continue,
            Err(e) => return Err(e).context("receive"),
        };
        // INVARIANT: `recv` returns at most `buf.len()`.
        let datagram = buf.get(..len).unwrap_or(&[]);
        for item in nfqueue::packets(datagram) {
            let id = match item {
                Ok(p) => p.packet_id,
                Err(NfQueueError::Malformed {
                    packet_id: Some(id),
                    ..
                }) => id,
                // Kernel errors for earlier verdicts and undecodable messages without an id
                // have nothing to answer.
                Err(_) => continue,
            };
            queue
                .verdict(id, Verdict::Accept, None)
                .with_context(|| format!("verdict for packet {id}"))?;
            answered += 1;
        }
    }
    Ok(answered)
}

/// `batch` messages per receive; their accepts merged into batch verdicts, one send per
/// receive (the dataplane's loop without the engine).
fn batched(queue: &mut NfQueue, deadline: Instant, batch: usize) -> Result<u64> {
    let mut received = RecvBatch::for_queue(queue, batch);
    let mut batcher = VerdictBatcher::new(queue.queue_num(), received.capacity());
    let accept = Answer::plain(Verdict::Accept);
    let mut answered = 0u64;
    while Instant::now() < deadline {
        match queue.recv_batch(&mut received) {
            Ok(0) => continue, // receive timeout: look at the deadline
            Ok(_) => {}
            Err(e) if is_transient(&e) => continue,
            Err(e) => return Err(e).context("receive"),
        }
        for datagram in received.datagrams() {
            // A datagram from another sender has nothing for us.
            let Ok(datagram) = datagram else { continue };
            for item in nfqueue::packets(datagram) {
                let id = match item {
                    Ok(p) => p.packet_id,
                    Err(NfQueueError::Malformed {
                        packet_id: Some(id),
                        ..
                    }) => id,
                    Err(_) => continue,
                };
                if let Some(flushed) = batcher.push(queue, id, accept) {
                    answered += flushed_ok(flushed)?;
                }
            }
        }
        answered += flushed_ok(batcher.flush(queue))?;
    }
    Ok(answered)
}

/// The packets a flush answered; an error when verdicts were lost (the floor must not hide
/// a failure behind a number).
fn flushed_ok(flushed: nfqueue::Flushed) -> Result<u64> {
    if flushed.lost > 0 {
        let reason = flushed.error.map_or(String::new(), |e| e.to_string());
        bail!("{} verdicts lost: {reason}", flushed.lost);
    }
    Ok((flushed.sent + flushed.late) as u64)
}

/// ENOBUFS (should the kernel report one) and EINTR leave the queue usable.
fn is_transient(e: &NfQueueError) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOBUFS) | Some(libc::EINTR) | Some(libc::EAGAIN)
    )
}
