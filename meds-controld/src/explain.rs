//! The explain broker: asks the connected dataplane how its live chain decides a hypothetical
//! packet.
//!
//! [`Query::parse`] validates what a user typed (`ip`, `port` ≤ 65535, `sni` and `dns` with
//! `DomainName`'s user rules, `ja3` 32 hex digits, `ja4` `a_b_c`); an error names the field.
//! [`Explainer::explain`] gives the request an id, hands it to the enforcing dataplane's sync
//! stream ([`Explainer::attach`], called by the sync service for a non-observer stream; the
//! stream's writer sends it between whole updates, so update order is untouched) and waits
//! for the `ExplainResponse` with that id ([`Explainer::resolve`], called by the stream's
//! reader) for at most [`EXPLAIN_TIMEOUT`]. A pending entry is removed when the wait ends,
//! however it ends.
//!
//! Must not: evaluate policy itself (only the dataplane's live rule set is the truth), or
//! trust a response beyond its id (the caller sees its text, nothing is acted on).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meds_proto::{Cidr, DomainName, Ja3Hash, Ja4, pb};
use tokio::sync::{mpsc, oneshot};

/// How long an explain waits for the dataplane.
pub const EXPLAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Most DNS names in one query.
pub const MAX_DNS_NAMES: usize = 16;
/// Most explain requests waiting at once.
const MAX_PENDING: usize = 256;
/// Explain requests queued per dataplane stream.
pub const STREAM_QUEUE: usize = 16;

/// Why an explain failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("no enforcing dataplane is connected (observers do not count)")]
    NoDataplane,
    #[error("too many explain requests in flight; try again")]
    Busy,
    #[error("the dataplane did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("the dataplane refused the request: {0}")]
    Refused(String),
}

fn invalid(field: impl Into<String>, message: impl ToString) -> ExplainError {
    ExplainError::Invalid {
        field: field.into(),
        message: message.to_string(),
    }
}

/// A validated explain query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub ip: IpAddr,
    /// 0: unspecified.
    pub port: u16,
    pub sni: Option<DomainName>,
    pub dns: Vec<DomainName>,
    pub ja3: Option<Ja3Hash>,
    pub ja4: Option<Ja4>,
}

impl Query {
    /// Validate a query as typed (empty strings: not given).
    pub fn parse(q: &pb::ExplainQuery) -> Result<Query, ExplainError> {
        let ip = match q.ip.trim().parse::<Cidr>() {
            Ok(c) if c == Cidr::host(c.addr()) => c.addr(),
            Ok(_) => {
                return Err(invalid(
                    "ip",
                    format!("{:?} is a prefix: give one IPv4 or IPv6 address", q.ip),
                ));
            }
            Err(e) => return Err(invalid("ip", e)),
        };
        let port = u16::try_from(q.port)
            .map_err(|_| invalid("port", format!("{} is not a port (0..=65535)", q.port)))?;
        let sni = match q.sni.trim() {
            "" => None,
            s => Some(DomainName::parse_user(s).map_err(|e| invalid("sni", e))?),
        };
        if q.dns.len() > MAX_DNS_NAMES {
            return Err(invalid(
                "dns",
                format!("{} names, at most {MAX_DNS_NAMES}", q.dns.len()),
            ));
        }
        let dns = q
            .dns
            .iter()
            .enumerate()
            .map(|(i, d)| DomainName::parse_user(d).map_err(|e| invalid(format!("dns[{i}]"), e)))
            .collect::<Result<Vec<_>, _>>()?;
        let ja3 = match q.ja3.trim() {
            "" => None,
            s => Some(s.parse::<Ja3Hash>().map_err(|e| invalid("ja3", e))?),
        };
        let ja4 = match q.ja4.trim() {
            "" => None,
            s => Some(s.parse::<Ja4>().map_err(|e| invalid("ja4", e))?),
        };
        Ok(Query {
            ip,
            port,
            sni,
            dns,
            ja3,
            ja4,
        })
    }

    /// The request for the dataplane.
    pub fn to_request(&self, id: u64) -> pb::ExplainRequest {
        pb::ExplainRequest {
            id,
            source: match self.ip {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            },
            port: self.port.into(),
            sni: self.sni.as_ref().map(|d| d.to_string()).unwrap_or_default(),
            dns: self.dns.iter().map(ToString::to_string).collect(),
            ja3: self.ja3.map(|h| h.digest().to_vec()).unwrap_or_default(),
            ja4: self.ja4.map(|j| j.to_string()).unwrap_or_default(),
        }
    }
}

/// The broker. Share behind an `Arc`.
#[derive(Debug)]
pub struct Explainer {
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<pb::ExplainResponse>>>,
    dataplane: Mutex<Option<(u64, mpsc::Sender<pb::ExplainRequest>)>>,
    timeout: Duration,
}

impl Default for Explainer {
    fn default() -> Explainer {
        Explainer::new(EXPLAIN_TIMEOUT)
    }
}

/// Removes a pending entry when the wait ends, however it ends.
struct PendingGuard<'a> {
    explainer: &'a Explainer,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.explainer.pending().remove(&self.id);
    }
}

impl Explainer {
    /// A broker that waits at most `timeout` for an answer.
    pub fn new(timeout: Duration) -> Explainer {
        Explainer {
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            dataplane: Mutex::new(None),
            timeout,
        }
    }

    fn pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<pb::ExplainResponse>>> {
        // Plain map; a poisoned lock leaves it consistent (single inserts and removes).
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dataplane(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<(u64, mpsc::Sender<pb::ExplainRequest>)>> {
        self.dataplane.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The enforcing dataplane of sync connection `connection` takes requests on `tx` (it
    /// replaces any earlier one).
    pub fn attach(&self, connection: u64, tx: mpsc::Sender<pb::ExplainRequest>) {
        *self.dataplane() = Some((connection, tx));
    }

    /// Connection `connection` ended (a later connection stays attached).
    pub fn detach(&self, connection: u64) {
        let mut dp = self.dataplane();
        if dp.as_ref().is_some_and(|(c, _)| *c == connection) {
            *dp = None;
        }
    }

    /// Requests waiting for an answer.
    pub fn in_flight(&self) -> usize {
        self.pending().len()
    }

    /// Hand a response from the dataplane to its waiter; false when nobody waits for its id
    /// (late, or never asked).
    pub fn resolve(&self, response: pb::ExplainResponse) -> bool {
        match self.pending().remove(&response.id) {
            Some(waiter) => waiter.send(response).is_ok(),
            None => false,
        }
    }

    /// Ask the dataplane (see the module docs).
    pub async fn explain(&self, query: &Query) -> Result<pb::ExplainResponse, ExplainError> {
        let tx = self
            .dataplane()
            .as_ref()
            .map(|(_, tx)| tx.clone())
            .ok_or(ExplainError::NoDataplane)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (waiter, answer) = oneshot::channel();
        {
            let mut pending = self.pending();
            if pending.len() >= MAX_PENDING {
                return Err(ExplainError::Busy);
            }
            pending.insert(id, waiter);
        }
        let _guard = PendingGuard {
            explainer: self,
            id,
        };
        let request = query.to_request(id);
        let exchange = async {
            tx.send(request)
                .await
                .map_err(|_| ExplainError::NoDataplane)?;
            answer.await.map_err(|_| ExplainError::NoDataplane)
        };
        let response = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ExplainError::Timeout(self.timeout))??;
        if !response.error.is_empty() {
            return Err(ExplainError::Refused(crate::events::clip(
                &response.error,
                1024,
            )));
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> pb::ExplainQuery {
        pb::ExplainQuery {
            ip: "203.0.113.7".into(),
            ..pb::ExplainQuery::default()
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(&str, pb::ExplainQuery)> = vec![
            (
                "ip",
                pb::ExplainQuery {
                    ip: "300.1.1.1".into(),
                    ..query()
                },
            ),
            (
                "ip",
                pb::ExplainQuery {
                    ip: "".into(),
                    ..query()
                },
            ),
            (
                "ip",
                pb::ExplainQuery {
                    ip: "10.0.0.0/8".into(),
                    ..query()
                },
            ),
            (
                "port",
                pb::ExplainQuery {
                    port: 65_536,
                    ..query()
                },
            ),
            (
                "sni",
                pb::ExplainQuery {
                    sni: "bad name.com".into(),
                    ..query()
                },
            ),
            (
                "dns[1]",
                pb::ExplainQuery {
                    dns: vec!["ok.example".into(), "*.example".into()],
                    ..query()
                },
            ),
            (
                "dns",
                pb::ExplainQuery {
                    dns: vec!["a.example".into(); MAX_DNS_NAMES + 1],
                    ..query()
                },
            ),
            (
                "ja3",
                pb::ExplainQuery {
                    ja3: "abc".into(),
                    ..query()
                },
            ),
            (
                "ja4",
                pb::ExplainQuery {
                    ja4: "t13d1516h2_8daaf6152771".into(),
                    ..query()
                },
            ),
        ];
        for (field, q) in cases {
            match Query::parse(&q) {
                Err(ExplainError::Invalid { field: got, .. }) => assert_eq!(got, field, "{q:?}"),
                other => panic!("{q:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn valid_queries_at_the_edges() {
        let q = Query::parse(&pb::ExplainQuery {
            ip: " 2001:db8::1 ".into(),
            port: 65_535,
            sni: "WWW.Example.COM.".into(),
            dns: vec!["a.example".into()],
            ja3: "B386946A5A44D1DDCC843BC75336DFCE".into(),
            ja4: "t13d1516h2_8daaf6152771_02713d6af862".into(),
        })
        .unwrap();
        assert_eq!(q.port, 65_535);
        let r = q.to_request(7);
        assert_eq!((r.id, r.port, r.source.len()), (7, 65_535, 16));
        assert_eq!(r.sni, "www.example.com");
        assert_eq!(r.ja3.len(), 16);
        assert_eq!(r.ja4, "t13d1516h2_8daaf6152771_02713d6af862");
        let bare = Query::parse(&query()).unwrap().to_request(1);
        assert_eq!((bare.port, bare.sni.as_str(), bare.ja3.len()), (0, "", 0));
        assert!(bare.dns.is_empty() && bare.ja4.is_empty());
        assert_eq!(bare.source, vec![203, 0, 113, 7]);
    }

    #[tokio::test]
    async fn no_dataplane_then_round_trip_then_refusal() {
        let broker = std::sync::Arc::new(Explainer::new(Duration::from_secs(5)));
        let q = Query::parse(&query()).unwrap();
        assert_eq!(broker.explain(&q).await, Err(ExplainError::NoDataplane));
        let (tx, mut rx) = mpsc::channel(4);
        broker.attach(3, tx);
        let dp = std::sync::Arc::clone(&broker);
        let answering = tokio::spawn(async move {
            let first = rx.recv().await.unwrap();
            assert!(dp.resolve(pb::ExplainResponse {
                id: first.id,
                verdict: "drop".into(),
                ..pb::ExplainResponse::default()
            }));
            let second = rx.recv().await.unwrap();
            // an unknown id is refused, the right one resolves
            assert!(!dp.resolve(pb::ExplainResponse {
                id: second.id + 100,
                ..pb::ExplainResponse::default()
            }));
            dp.resolve(pb::ExplainResponse {
                id: second.id,
                error: "bad source".into(),
                ..pb::ExplainResponse::default()
            });
        });
        assert_eq!(broker.explain(&q).await.unwrap().verdict, "drop");
        assert_eq!(
            broker.explain(&q).await,
            Err(ExplainError::Refused("bad source".into()))
        );
        answering.await.unwrap();
        assert_eq!(broker.in_flight(), 0);
        // an older connection's end does not detach a newer one; its own does
        broker.detach(2);
        assert!(broker.dataplane().is_some());
        broker.detach(3);
        assert_eq!(broker.explain(&q).await, Err(ExplainError::NoDataplane));
    }

    #[tokio::test]
    async fn an_unanswered_request_times_out_and_is_forgotten() {
        let timeout = Duration::from_millis(200);
        let broker = Explainer::new(timeout);
        let (tx, mut rx) = mpsc::channel(4);
        broker.attach(1, tx);
        let q = Query::parse(&query()).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            broker.explain(&q).await,
            Err(ExplainError::Timeout(timeout))
        );
        let took = started.elapsed();
        assert!(took >= timeout && took < Duration::from_secs(2), "{took:?}");
        assert_eq!(broker.in_flight(), 0, "the pending entry is removed");
        // the late answer finds nobody
        let late = rx.recv().await.unwrap();
        assert!(!broker.resolve(pb::ExplainResponse {
            id: late.id,
            ..pb::ExplainResponse::default()
        }));
    }
}
