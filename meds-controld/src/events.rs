//! The drop-event hub: the most recent sampled drop decisions from the dataplane, and a
//! broadcast of new ones for followers (`medsctl events --follow`, `GET /v1/events?follow=true`).
//!
//! The sync stream is a trust boundary: [`EventHub::publish`] validates every event (source 4
//! or 16 bytes, ports and queue ≤ 65535, protocol ≤ 255, else the event is dropped; strings
//! clipped and stripped of control characters) and takes at most [`MAX_BATCH_EVENTS`] events
//! of a batch (the rest are counted as suppressed). The ring keeps the last
//! [`RING_CAPACITY`] events; every event gets a sequence number, so a follower that falls
//! behind the broadcast learns exactly how many events it missed ([`EventHub::stream`] sends
//! it a batch whose `suppressed` says so). [`EventHub::close`] (controller shutdown) ends
//! every open stream.
//!
//! Must not: block the sync stream (publishing takes one short lock), keep more than the ring,
//! or treat an event as anything but data (addresses and names never become labels).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use meds_proto::pb;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

/// Events kept for `recent`.
pub const RING_CAPACITY: usize = 1000;
/// Most events taken from one dataplane batch.
pub const MAX_BATCH_EVENTS: usize = 256;
/// Most events in one batch sent to a client.
pub const SEND_BATCH_EVENTS: usize = 256;
/// Published batches a follower may lag behind before it misses some.
const BROADCAST_CAPACITY: usize = 256;
/// Longest filter or reason label kept.
const MAX_LABEL: usize = 64;
/// Longest name kept (a DNS name's longest text form).
const MAX_NAME: usize = 253;
/// Longest fingerprint text kept.
const MAX_FINGERPRINT: usize = 64;

/// What one publish adds: validated events, numbered from `first_seq`.
#[derive(Debug)]
struct Published {
    first_seq: u64,
    events: Vec<pb::DropEvent>,
    /// Drop decisions the dataplane did not sample (or could not send), plus events of this
    /// batch refused here.
    suppressed: u64,
}

/// The outcome of [`EventHub::publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accepted {
    pub events: usize,
    pub invalid: usize,
    pub over_limit: usize,
}

struct Ring {
    events: VecDeque<pb::DropEvent>,
    next_seq: u64,
}

/// The ring and the broadcast. Share behind an `Arc`.
pub struct EventHub {
    ring: Mutex<Ring>,
    capacity: usize,
    tx: broadcast::Sender<std::sync::Arc<Published>>,
    closed: watch::Sender<bool>,
    invalid: AtomicU64,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Default for EventHub {
    fn default() -> EventHub {
        EventHub::new(RING_CAPACITY)
    }
}

impl EventHub {
    /// A hub keeping the last `capacity` events.
    pub fn new(capacity: usize) -> EventHub {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        let (closed, _) = watch::channel(false);
        EventHub {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(capacity),
                next_seq: 0,
            }),
            capacity,
            tx,
            closed,
            invalid: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // The ring is plain data replaced element-wise; a poisoned lock leaves it usable.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Events refused by validation since start.
    pub fn invalid(&self) -> u64 {
        self.invalid.load(Ordering::Relaxed)
    }

    /// Validate a batch from the dataplane, keep its events and send them to the followers.
    pub fn publish(&self, batch: pb::EventBatch) -> Accepted {
        let mut accepted = Accepted::default();
        let total = batch.events.len();
        accepted.over_limit = total.saturating_sub(MAX_BATCH_EVENTS);
        let events: Vec<pb::DropEvent> = batch
            .events
            .into_iter()
            .take(MAX_BATCH_EVENTS)
            .filter_map(validate)
            .collect();
        accepted.events = events.len();
        accepted.invalid = total - accepted.over_limit - accepted.events;
        if accepted.invalid > 0 {
            self.invalid
                .fetch_add(accepted.invalid as u64, Ordering::Relaxed);
        }
        let suppressed = batch
            .suppressed
            .saturating_add((accepted.invalid + accepted.over_limit) as u64);
        if events.is_empty() && suppressed == 0 {
            return accepted;
        }
        let mut ring = self.lock();
        let first_seq = ring.next_seq;
        ring.next_seq += events.len() as u64;
        for e in &events {
            if ring.events.len() == self.capacity {
                ring.events.pop_front();
            }
            if self.capacity > 0 {
                ring.events.push_back(e.clone());
            }
        }
        // Sent under the lock: a subscriber sees each event once, in `recent` or here.
        let _ = self.tx.send(std::sync::Arc::new(Published {
            first_seq,
            events,
            suppressed,
        }));
        accepted
    }

    /// The last `recent` events (oldest first) and a receiver for what comes after them.
    fn subscribe(
        &self,
        recent: usize,
    ) -> (
        Vec<pb::DropEvent>,
        u64,
        broadcast::Receiver<std::sync::Arc<Published>>,
    ) {
        let ring = self.lock();
        let skip = ring.events.len().saturating_sub(recent);
        let events = ring.events.iter().skip(skip).cloned().collect();
        (events, ring.next_seq, self.tx.subscribe())
    }

    /// End every stream (controller shutdown); later streams end after their recent events.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// The events stream of one client: first the `recent` most recent events (capped at the
    /// ring's size) in batches of at most [`SEND_BATCH_EVENTS`], then with `follow` every new
    /// batch, until the client goes away or [`EventHub::close`]. A follower that fell behind
    /// gets a batch whose `suppressed` counts the events it missed.
    pub fn stream(&self, recent: usize, follow: bool) -> ReceiverStream<pb::EventBatch> {
        let (tx, rx) = mpsc::channel(4);
        let (events, mut next_seq, mut updates) = self.subscribe(recent.min(self.capacity));
        let mut closed = self.closed.subscribe();
        tokio::spawn(async move {
            for chunk in events.chunks(SEND_BATCH_EVENTS) {
                let batch = pb::EventBatch {
                    events: chunk.to_vec(),
                    suppressed: 0,
                };
                if tx.send(batch).await.is_err() {
                    return;
                }
            }
            if !follow {
                return;
            }
            loop {
                let received = tokio::select! {
                    r = updates.recv() => r,
                    _ = closed.wait_for(|c| *c) => return,
                    () = tx.closed() => return,
                };
                let batch = match received {
                    Ok(published) => {
                        let missed = published.first_seq.saturating_sub(next_seq);
                        next_seq = published.first_seq + published.events.len() as u64;
                        pb::EventBatch {
                            events: published.events.clone(),
                            suppressed: published.suppressed.saturating_add(missed),
                        }
                    }
                    // The exact count comes with the next batch received (sequence gap).
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(batch).await.is_err() {
                    return;
                }
            }
        });
        ReceiverStream::new(rx)
    }
}

/// A valid copy of `e`, or `None` when it cannot be shown honestly.
fn validate(mut e: pb::DropEvent) -> Option<pb::DropEvent> {
    if !matches!(e.source.len(), 4 | 16)
        || e.source_port > 65_535
        || e.destination_port > 65_535
        || e.protocol > 255
        || e.queue > 65_535
    {
        return None;
    }
    e.filter = clip(&e.filter, MAX_LABEL);
    e.reason = clip(&e.reason, MAX_LABEL);
    e.sni = clip(&e.sni, MAX_NAME);
    e.dns = clip(&e.dns, MAX_NAME);
    e.ja3 = clip(&e.ja3, MAX_FINGERPRINT);
    e.ja4 = clip(&e.ja4, MAX_FINGERPRINT);
    Some(e)
}

/// `s` without control characters, at most `max` bytes (cut at a character boundary).
pub fn clip(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    fn event(last: u8) -> pb::DropEvent {
        pb::DropEvent {
            time_unix_ms: 1_700_000_000_000,
            source: vec![203, 0, 113, last],
            source_port: 40_000,
            destination_port: 443,
            protocol: 6,
            filter: "ip".into(),
            reason: "BlackList".into(),
            queue: 0,
            ..pb::DropEvent::default()
        }
    }

    fn batch(events: Vec<pb::DropEvent>) -> pb::EventBatch {
        pb::EventBatch {
            events,
            suppressed: 0,
        }
    }

    #[test]
    fn validation_drops_bad_sources_and_clips_strings() {
        let long = "a".repeat(300);
        let cases: Vec<(&str, pb::DropEvent, bool)> = vec![
            ("ipv4", event(1), true),
            (
                "ipv6",
                pb::DropEvent {
                    source: vec![0x20; 16],
                    ..event(1)
                },
                true,
            ),
            (
                "empty source",
                pb::DropEvent {
                    source: vec![],
                    ..event(1)
                },
                false,
            ),
            (
                "5 bytes",
                pb::DropEvent {
                    source: vec![1; 5],
                    ..event(1)
                },
                false,
            ),
            (
                "port 65536",
                pb::DropEvent {
                    source_port: 65_536,
                    ..event(1)
                },
                false,
            ),
            (
                "port 65535",
                pb::DropEvent {
                    destination_port: 65_535,
                    ..event(1)
                },
                true,
            ),
            (
                "protocol 256",
                pb::DropEvent {
                    protocol: 256,
                    ..event(1)
                },
                false,
            ),
            (
                "queue 65536",
                pb::DropEvent {
                    queue: 65_536,
                    ..event(1)
                },
                false,
            ),
        ];
        for (name, e, ok) in cases {
            assert_eq!(validate(e).is_some(), ok, "{name}");
        }
        let clipped = validate(pb::DropEvent {
            sni: long.clone(),
            dns: format!("bad\u{1b}[31m.example{long}"),
            filter: long.clone(),
            ..event(1)
        })
        .unwrap();
        assert_eq!(clipped.sni.len(), 253);
        assert_eq!(clipped.filter.len(), 64);
        assert!(clipped.dns.starts_with("bad[31m.example"));
        assert!(!clipped.dns.contains('\u{1b}'));
        assert_eq!(clip("ééé", 5), "éé");
    }

    #[test]
    fn ring_keeps_the_most_recent() {
        let hub = EventHub::new(3);
        let got = hub.publish(batch((0..5).map(event).collect()));
        assert_eq!(got.events, 5);
        let (recent, next, _) = hub.subscribe(10);
        let last: Vec<u8> = recent.iter().map(|e| e.source[3]).collect();
        assert_eq!(last, [2, 3, 4]);
        assert_eq!(next, 5);
        let (recent, _, _) = hub.subscribe(1);
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].source[3], 4);
        let (recent, _, _) = hub.subscribe(0);
        assert!(recent.is_empty());
    }

    #[test]
    fn batches_are_capped_and_invalid_events_counted() {
        let hub = EventHub::new(RING_CAPACITY);
        let mut events: Vec<pb::DropEvent> = (0..300).map(|i| event(i as u8)).collect();
        events[0].source.clear();
        let got = hub.publish(batch(events));
        assert_eq!(
            got,
            Accepted {
                events: 255,
                invalid: 1,
                over_limit: 44
            }
        );
        assert_eq!(hub.invalid(), 1);
    }

    #[tokio::test]
    async fn recent_then_follow_then_close() {
        let hub = std::sync::Arc::new(EventHub::new(RING_CAPACITY));
        hub.publish(batch((0..3).map(event).collect()));
        let mut s = hub.stream(2, true);
        let first = s.next().await.unwrap();
        assert_eq!(first.events.len(), 2);
        assert_eq!(first.events[0].source[3], 1);
        hub.publish(pb::EventBatch {
            events: vec![event(9)],
            suppressed: 4,
        });
        let next = s.next().await.unwrap();
        assert_eq!((next.events.len(), next.suppressed), (1, 4));
        hub.close();
        assert!(s.next().await.is_none(), "close ends the stream");
        // without follow the stream ends after the recent events
        let mut once = hub.stream(1000, false);
        assert_eq!(once.next().await.unwrap().events.len(), 4);
        assert!(once.next().await.is_none());
    }

    #[tokio::test]
    async fn a_lagging_follower_learns_how_many_it_missed() {
        let hub = std::sync::Arc::new(EventHub::new(RING_CAPACITY));
        let mut s = hub.stream(0, true);
        // never read while BROADCAST_CAPACITY + 10 batches of 2 are published
        let n = BROADCAST_CAPACITY + 10;
        for _ in 0..n {
            hub.publish(batch(vec![event(1), event(2)]));
        }
        let mut seen = 0u64;
        let mut missed = 0u64;
        while seen + missed < 2 * n as u64 {
            let b = s.next().await.unwrap();
            seen += b.events.len() as u64;
            missed += b.suppressed;
        }
        assert_eq!(seen + missed, 2 * n as u64);
        assert!(missed > 0, "some were missed");
    }
}
