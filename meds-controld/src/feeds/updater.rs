//! `feeds::updater`: keeps every enabled feed's list fresh, and never lets a bad download
//! weaken protection.
//!
//! [`Feeds`] owns the feeds' run-time state. Its life:
//! 1. [`Feeds::load_persisted`] (at start, before the dataplane is served): every enabled
//!    feed's last good copy is read from the store, parsed again and put in force through
//!    [`Controller::replace_feed`], so a restart without network enforces every feed at once.
//! 2. [`Feeds::run`]: a round at once, then one every [`FeedsConfig::interval`] until stopped.
//!    A round fetches every enabled feed concurrently ([`Feeds::update`] does the same on
//!    demand).
//!
//! One update of one feed: fetch (conditional when we hold a copy from the same URL) → parse →
//! validate → put in force → save the body as the new last good copy. The update is refused,
//! and the last good copy stays in force, when the fetch fails (status other than 200/304,
//! timeout, cut body, over the size limit), the parser refuses the body (empty, HTML, binary,
//! no entry), or the feed would shrink by more than [`FeedsConfig::max_shrink`] compared with
//! the last good copy from the same URL. Each refusal is logged (warn, with the feed and the
//! reason) and counted in the feed's status (`failures`, `last_error`).
//!
//! A list filled by several feeds (Spamhaus v4 + v6) holds the union of its enabled feeds'
//! copies; their entries are kept apart in memory for that. A single-source list's entries
//! live only in the controller's view.
//!
//! Settings: a feed is enabled unless `--disable-feed` names it (or `all`), and fetched from
//! `--feed-url NAME=URL` or its default URL. [`Feeds::configure`] changes either at run time;
//! such a setting is persisted and wins over the flags, also after a restart, until it is
//! cleared (an empty URL clears the URL override). Disabling a feed takes its entries out of
//! force at once (its copy is kept); enabling it puts its copy back in force and fetches it.
//!
//! Must not: hold a lock across an `.await` (except the async apply lock, which orders list
//! replacements), block the async runtime with parsing (done on blocking threads), or change
//! a list other than through [`Controller::replace_feed`].

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meds_proto::{Entry, ListKind};
use serde::Serialize;
use tracing::Instrument;

use super::fetch::{FeedUrl, FeedUrlError, FetchError, FetchOptions, Fetched, Fetcher, Validators};
use super::parse::{Limits, ParseError};
use super::registry::{self, FEEDS, FeedSpec, ParsedFeed};
use crate::core::{Controller, CoreError, public_name};
use crate::store::{FeedCopy, FeedRow};

/// Validated feed settings (from the flags; see `config`).
#[derive(Debug, Clone, PartialEq)]
pub struct FeedsConfig {
    /// Time between two rounds.
    pub interval: Duration,
    /// Largest fraction of its entries a feed may lose in one update (0.0: none; 1.0: any).
    pub max_shrink: f64,
    /// URL overrides from `--feed-url`.
    pub urls: BTreeMap<&'static str, FeedUrl>,
    /// Feeds disabled by `--disable-feed`.
    pub disabled: BTreeSet<&'static str>,
    /// Parser limits.
    pub limits: Limits,
    /// Fetch timeout (per feed and round), size limit, retries.
    pub fetch: FetchOptions,
}

impl Default for FeedsConfig {
    /// 4 h interval, 50 % shrink, every feed enabled at its default URL, 1 min timeout.
    fn default() -> FeedsConfig {
        let limits = Limits::default();
        FeedsConfig {
            interval: Duration::from_secs(4 * 3600),
            max_shrink: 0.5,
            urls: BTreeMap::new(),
            disabled: BTreeSet::new(),
            limits,
            fetch: FetchOptions {
                max_body_bytes: limits.max_body_bytes,
                ..FetchOptions::default()
            },
        }
    }
}

/// Why a feed flag value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedFlagError {
    #[error("unknown feed {name:?}; valid names: {valid}")]
    UnknownFeed { name: String, valid: String },
    #[error("{0:?} is not NAME=URL")]
    NotNameUrl(String),
    #[error("feed {name}: {source}")]
    Url {
        name: &'static str,
        #[source]
        source: FeedUrlError,
    },
}

fn known(name: &str) -> Result<&'static FeedSpec, FeedFlagError> {
    registry::find(name.trim()).ok_or_else(|| FeedFlagError::UnknownFeed {
        name: name.chars().take(64).collect(),
        valid: registry::names(),
    })
}

impl FeedsConfig {
    /// Apply `--feed-url NAME=URL` values (later ones win) and `--disable-feed NAME` values
    /// (`all` disables every feed).
    pub fn with_flags(
        mut self,
        feed_urls: &[String],
        disable: &[String],
    ) -> Result<FeedsConfig, FeedFlagError> {
        for value in feed_urls {
            let (name, url) = value
                .split_once('=')
                .ok_or_else(|| FeedFlagError::NotNameUrl(value.chars().take(200).collect()))?;
            let spec = known(name)?;
            let url = FeedUrl::parse(url.trim()).map_err(|source| FeedFlagError::Url {
                name: spec.name,
                source,
            })?;
            self.urls.insert(spec.name, url);
        }
        for name in disable {
            if name.trim() == registry::ALL {
                self.disabled.extend(FEEDS.iter().map(|f| f.name));
            } else {
                self.disabled.insert(known(name)?.name);
            }
        }
        Ok(self)
    }
}

/// A feed's state as the API shows it (`GET /v1/feeds`, `medsctl feeds list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeedStatus {
    pub name: String,
    /// Public name of the list it fills.
    pub list: String,
    pub enabled: bool,
    /// The URL it is fetched from (a password in it is shown as `***`).
    pub url: String,
    /// Entries of the last good copy.
    pub entries: u64,
    /// Unix seconds; 0: never.
    pub last_success_unix: u64,
    pub last_attempt_unix: u64,
    /// When the next scheduled round starts; 0 when disabled or none is scheduled.
    pub next_update_unix: u64,
    /// Empty when the last attempt succeeded.
    pub last_error: String,
    /// Failed attempts since the controller started.
    pub failures: u64,
    /// Lines the parser rejected in the last good copy.
    pub rejected_lines: u64,
}

/// Why an API request about feeds failed.
#[derive(Debug, thiserror::Error)]
pub enum FeedsError {
    #[error("unknown feed {name:?}; valid names: {valid}")]
    UnknownFeed { name: String, valid: String },
    #[error("feed {0} is disabled; enable it first")]
    Disabled(&'static str),
    #[error(transparent)]
    Url(#[from] FeedUrlError),
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

/// Why one update of one feed was refused (becomes `last_error`).
#[derive(Debug, thiserror::Error)]
enum UpdateError {
    #[error("fetch failed: {0}")]
    Fetch(#[from] FetchError),
    #[error("body refused: {0}")]
    Parse(#[from] ParseError),
    #[error(
        "refused: {now} entries instead of {previous}, a shrink of more than {percent}% (--feed-max-shrink)",
        percent = max_shrink * 100.0
    )]
    Shrink {
        previous: u64,
        now: u64,
        max_shrink: f64,
    },
    #[error(
        "refused: {rejected} of {lines} data lines do not parse (more than accepted: not this feed's format)"
    )]
    MostlyRejected { rejected: u64, lines: u64 },
    #[error("applying the update failed: {0}")]
    Apply(#[from] CoreError),
    #[error("parser task failed: {0}")]
    Task(String),
}

/// True when going from `previous` to `now` entries loses more than `max_shrink` of them.
pub fn shrinks_too_much(previous: u64, now: u64, max_shrink: f64) -> bool {
    previous > 0 && (now as f64) < (previous as f64) * (1.0 - max_shrink.clamp(0.0, 1.0))
}

/// What we know about the last good copy (its body is in the store).
#[derive(Debug, Clone)]
struct CopyInfo {
    source_url: String,
    validators: Validators,
    fetched_at: u64,
    entries: u64,
    rejected: u64,
}

#[derive(Debug)]
struct FeedState {
    spec: &'static FeedSpec,
    default_url: FeedUrl,
    runtime_enabled: Option<bool>,
    runtime_url: Option<FeedUrl>,
    copy: Option<CopyInfo>,
    /// The copy's entries, kept only for lists with several feeds.
    entries: Option<Arc<BTreeSet<Entry>>>,
    last_attempt: u64,
    last_error: String,
    failures: u64,
}

/// The feeds of one controller. Share it as `Arc<Feeds>`.
pub struct Feeds {
    controller: Arc<Controller>,
    config: FeedsConfig,
    fetcher: Fetcher,
    state: Mutex<BTreeMap<&'static str, FeedState>>,
    /// One update at a time per feed.
    fetching: BTreeMap<&'static str, tokio::sync::Mutex<()>>,
    /// Orders the changes of what is in force (list replacements and settings).
    apply: tokio::sync::Mutex<()>,
    /// Unix time of the next scheduled round; 0: none.
    next_round: AtomicU64,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Feeds {
    /// Feeds with the flag settings of `config`; nothing is loaded or fetched yet.
    pub fn new(controller: Arc<Controller>, config: FeedsConfig) -> Result<Arc<Feeds>, FeedsError> {
        let fetcher = Fetcher::new(config.fetch.clone())?;
        let state = FEEDS
            .iter()
            .map(|spec| {
                Ok((
                    spec.name,
                    FeedState {
                        spec,
                        default_url: FeedUrl::parse(spec.default_url)?,
                        runtime_enabled: None,
                        runtime_url: None,
                        copy: None,
                        entries: None,
                        last_attempt: 0,
                        last_error: String::new(),
                        failures: 0,
                    },
                ))
            })
            .collect::<Result<_, FeedsError>>()?;
        Ok(Arc::new(Feeds {
            controller,
            fetcher,
            state: Mutex::new(state),
            fetching: FEEDS
                .iter()
                .map(|f| (f.name, tokio::sync::Mutex::new(())))
                .collect(),
            apply: tokio::sync::Mutex::new(()),
            next_round: AtomicU64::new(0),
            config,
        }))
    }

    fn state(&self) -> MutexGuard<'_, BTreeMap<&'static str, FeedState>> {
        // Plain data replaced field by field; a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enabled(&self, st: &FeedState) -> bool {
        st.runtime_enabled.unwrap_or_else(|| {
            st.spec.enabled_by_default && !self.config.disabled.contains(st.spec.name)
        })
    }

    fn url(&self, st: &FeedState) -> FeedUrl {
        if let Some(url) = &st.runtime_url {
            return url.clone();
        }
        if let Some(url) = self.config.urls.get(st.spec.name) {
            return url.clone();
        }
        st.default_url.clone()
    }

    fn spec(name: &str) -> Result<&'static FeedSpec, FeedsError> {
        registry::find(name).ok_or_else(|| FeedsError::UnknownFeed {
            name: name.chars().take(64).collect(),
            valid: registry::names(),
        })
    }

    fn status_of(&self, st: &FeedState) -> FeedStatus {
        let enabled = self.enabled(st);
        let next = self.next_round.load(Ordering::Relaxed);
        FeedStatus {
            name: st.spec.name.to_string(),
            list: public_name(st.spec.list).to_string(),
            enabled,
            url: self.url(st).to_string(),
            entries: st.copy.as_ref().map_or(0, |c| c.entries),
            last_success_unix: st.copy.as_ref().map_or(0, |c| c.fetched_at),
            last_attempt_unix: st.last_attempt,
            next_update_unix: if enabled { next } else { 0 },
            last_error: st.last_error.clone(),
            failures: st.failures,
            rejected_lines: st.copy.as_ref().map_or(0, |c| c.rejected),
        }
    }

    /// Every feed's status, in registry order.
    pub fn statuses(&self) -> Vec<FeedStatus> {
        let state = self.state();
        FEEDS
            .iter()
            .filter_map(|f| state.get(f.name))
            .map(|st| self.status_of(st))
            .collect()
    }

    /// The status of feed `name`.
    pub fn status(&self, name: &str) -> Result<FeedStatus, FeedsError> {
        let spec = Feeds::spec(name)?;
        let state = self.state();
        state
            .get(spec.name)
            .map(|st| self.status_of(st))
            .ok_or_else(|| FeedsError::UnknownFeed {
                name: spec.name.to_string(),
                valid: registry::names(),
            })
    }

    /// Read the run-time settings and last good copies from the store and put every enabled
    /// feed's copy in force. A copy the parser refuses now is left out (and reported in the
    /// feed's `last_error`); a store that cannot be read is an error.
    pub async fn load_persisted(&self) -> Result<(), FeedsError> {
        let rows = self.controller.with_store(|s| s.load_feed_states()).await?;
        let _apply = self.apply.lock().await;
        let mut bodies = Vec::new();
        {
            let mut state = self.state();
            for row in rows {
                let FeedRow {
                    name,
                    enabled,
                    url_override,
                    copy,
                } = row;
                let Some(st) = registry::find(&name).and_then(|s| state.get_mut(s.name)) else {
                    tracing::warn!(feed = %name, "stored state of an unknown feed ignored");
                    continue;
                };
                st.runtime_enabled = enabled;
                st.runtime_url = match url_override.as_deref().map(FeedUrl::parse) {
                    None => None,
                    Some(Ok(url)) => Some(url),
                    Some(Err(e)) => {
                        tracing::warn!(feed = st.spec.name, error = %e, "stored URL override ignored");
                        None
                    }
                };
                if let Some(copy) = copy {
                    st.copy = Some(CopyInfo {
                        source_url: copy.source_url,
                        validators: Validators {
                            etag: copy.etag,
                            last_modified: copy.last_modified,
                        },
                        fetched_at: copy.fetched_at,
                        entries: copy.entries,
                        rejected: copy.rejected,
                    });
                    if self.enabled(st) {
                        bodies.push((st.spec, copy.body));
                    }
                }
            }
        }
        let mut lists: BTreeMap<ListKind, BTreeSet<Entry>> = BTreeMap::new();
        for (spec, body) in bodies {
            match self.parse(spec, body).await {
                Ok((_, parsed)) => {
                    tracing::info!(
                        feed = spec.name,
                        entries = parsed.entries.len(),
                        "last good copy loaded"
                    );
                    let list = lists.entry(spec.list).or_default();
                    if registry::is_shared(spec.list) {
                        list.extend(parsed.entries.iter().cloned());
                        self.with_feed(spec, |st| st.entries = Some(Arc::new(parsed.entries)));
                    } else if list.is_empty() {
                        *list = parsed.entries;
                    } else {
                        list.extend(parsed.entries);
                    }
                }
                Err(e) => {
                    tracing::warn!(feed = spec.name, error = %e, "stored copy refused; the feed is empty until its next update");
                    self.with_feed(spec, |st| {
                        st.copy = None;
                        st.last_error = format!("stored copy refused: {e}");
                    });
                }
            }
        }
        for (list, entries) in lists {
            self.controller.replace_feed(list, entries).await?;
        }
        Ok(())
    }

    fn with_feed<T>(&self, spec: &FeedSpec, f: impl FnOnce(&mut FeedState) -> T) -> Option<T> {
        self.state().get_mut(spec.name).map(f)
    }

    /// Parse on a blocking thread; gives the body back.
    async fn parse(
        &self,
        spec: &'static FeedSpec,
        body: Vec<u8>,
    ) -> Result<(Vec<u8>, ParsedFeed), UpdateError> {
        let limits = self.config.limits;
        let (body, parsed) = tokio::task::spawn_blocking(move || {
            let parsed = spec.format.parse(&body, &limits);
            (body, parsed)
        })
        .await
        .map_err(|e| UpdateError::Task(e.to_string()))?;
        Ok((body, parsed?))
    }

    /// Run update rounds until `stop` completes: one at once, then one every interval.
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let interval = self.config.interval;
        loop {
            let next = tokio::time::Instant::now() + interval;
            self.next_round.store(
                now_unix().saturating_add(interval.as_secs()),
                Ordering::Relaxed,
            );
            tokio::select! {
                _ = self.update(&[]) => {}
                () = &mut stop => break,
            }
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = &mut stop => break,
            }
        }
        self.next_round.store(0, Ordering::Relaxed);
        tracing::info!("feed updates stopped");
    }

    /// Update the named feeds now (every enabled feed when `names` is empty), concurrently,
    /// and answer with their statuses once every attempt has ended. Naming an unknown or a
    /// disabled feed fails the request before anything is fetched.
    pub async fn update(self: &Arc<Self>, names: &[String]) -> Result<Vec<FeedStatus>, FeedsError> {
        let specs: Vec<&'static FeedSpec> = if names.is_empty() {
            let state = self.state();
            FEEDS
                .iter()
                .filter(|f| state.get(f.name).is_some_and(|st| self.enabled(st)))
                .collect()
        } else {
            let mut specs = Vec::new();
            for name in names {
                let spec = Feeds::spec(name)?;
                let enabled = self.with_feed(spec, |st| self.enabled(st)).unwrap_or(false);
                if !enabled {
                    return Err(FeedsError::Disabled(spec.name));
                }
                if !specs.contains(&spec) {
                    specs.push(spec);
                }
            }
            specs
        };
        // Spawned, not joined in place: a caller that goes away must not cut an update short
        // between putting a copy in force and saving it.
        let handles: Vec<_> = specs
            .iter()
            .map(|spec| {
                let this = Arc::clone(self);
                let spec: &'static FeedSpec = spec;
                tokio::spawn(
                    async move { this.update_feed(spec).await }
                        .instrument(tracing::info_span!("feed_update", feed = spec.name)),
                )
            })
            .collect();
        for handle in handles {
            if let Err(e) = handle.await {
                tracing::error!(error = %e, "feed update task failed");
            }
        }
        let state = self.state();
        Ok(specs
            .iter()
            .filter_map(|spec| state.get(spec.name))
            .map(|st| self.status_of(st))
            .collect())
    }

    /// One update of one feed; the outcome lands in the feed's status.
    async fn update_feed(&self, spec: &'static FeedSpec) {
        let Some(lock) = self.fetching.get(spec.name) else {
            return;
        };
        let _one_at_a_time = lock.lock().await;
        let Some((url, validators, previous)) = self
            .with_feed(spec, |st| {
                if !self.enabled(st) {
                    return None;
                }
                st.last_attempt = now_unix();
                let url = self.url(st);
                // Validators and the shrink baseline only mean something for the same URL.
                let same = st.copy.as_ref().filter(|c| c.source_url == url.as_str());
                Some((
                    url,
                    same.map(|c| c.validators.clone()).unwrap_or_default(),
                    same.map(|c| c.entries),
                ))
            })
            .flatten()
        else {
            return;
        };
        let outcome = match self.fetcher.fetch(&url, &validators).await {
            Ok(Fetched::NotModified) => self.not_modified(spec).await,
            Ok(Fetched::Body { body, validators }) => {
                self.new_body(spec, &url, body, validators, previous).await
            }
            Err(e) => Err(e.into()),
        };
        if let Err(e) = outcome {
            let has_copy = self
                .with_feed(spec, |st| st.copy.is_some())
                .unwrap_or(false);
            if has_copy {
                tracing::warn!(feed = spec.name, url = %url, reason = %e, "feed update refused; the last good copy stays in force");
            } else {
                tracing::warn!(feed = spec.name, url = %url, reason = %e, "feed update refused; no good copy yet, the feed is not enforced");
            }
            self.with_feed(spec, |st| {
                st.failures += 1;
                st.last_error = e.to_string();
            });
        }
    }

    async fn not_modified(&self, spec: &'static FeedSpec) -> Result<(), UpdateError> {
        let now = now_unix();
        self.with_feed(spec, |st| {
            if let Some(copy) = &mut st.copy {
                copy.fetched_at = now;
            }
            st.last_error.clear();
        });
        let name = spec.name;
        if let Err(e) = self
            .controller
            .with_store(move |s| s.touch_feed(name, now))
            .await
        {
            tracing::error!(feed = name, error = %e, "could not record the fetch time");
        }
        tracing::info!(feed = name, "feed not modified");
        Ok(())
    }

    async fn new_body(
        &self,
        spec: &'static FeedSpec,
        url: &FeedUrl,
        body: Vec<u8>,
        validators: Validators,
        previous: Option<u64>,
    ) -> Result<(), UpdateError> {
        let (body, parsed) = self.parse(spec, body).await?;
        let count = parsed.entries.len() as u64;
        // A body whose data lines mostly fail to parse is not the feed (an error page, another
        // format, a corrupted mirror), even if a few lines happen to look like entries.
        let report = &parsed.report;
        if report.rejected > report.accepted {
            return Err(UpdateError::MostlyRejected {
                rejected: report.rejected,
                lines: report.rejected + report.accepted,
            });
        }
        if let Some(previous) = previous
            && shrinks_too_much(previous, count, self.config.max_shrink)
        {
            return Err(UpdateError::Shrink {
                previous,
                now: count,
                max_shrink: self.config.max_shrink,
            });
        }
        let _apply = self.apply.lock().await;
        let current = self.with_feed(spec, |st| self.enabled(st) && self.url(st) == *url);
        if current != Some(true) {
            tracing::info!(
                feed = spec.name,
                "feed disabled or moved during its update; result dropped"
            );
            return Ok(());
        }
        let rejected = parsed.report.rejected;
        let change = self.put_in_force(spec, parsed.entries).await?;
        let now = now_unix();
        let copy = FeedCopy {
            body,
            source_url: url.as_str().to_string(),
            etag: validators.etag.clone(),
            last_modified: validators.last_modified.clone(),
            fetched_at: now,
            entries: count,
            rejected,
        };
        let name = spec.name;
        let saved = self
            .controller
            .with_store(move |s| s.save_feed_body(name, &copy))
            .await;
        self.with_feed(spec, |st| {
            st.copy = Some(CopyInfo {
                source_url: url.as_str().to_string(),
                validators,
                fetched_at: now,
                entries: count,
                rejected,
            });
            st.last_error = match &saved {
                Ok(()) => String::new(),
                Err(e) => format!("in force, but the copy was not saved: {e}"),
            };
        });
        if let Err(e) = saved {
            tracing::error!(feed = name, error = %e, "feed in force but its copy was not saved");
        }
        tracing::info!(
            feed = name,
            list = %spec.list,
            entries = count,
            rejected_lines = rejected,
            changed = change.changed.len(),
            generation = change.generation,
            "feed updated"
        );
        Ok(())
    }

    /// Make `entries` the content `spec` contributes to its list (apply lock held).
    async fn put_in_force(
        &self,
        spec: &'static FeedSpec,
        entries: BTreeSet<Entry>,
    ) -> Result<crate::core::Change, CoreError> {
        let content = if registry::is_shared(spec.list) {
            self.with_feed(spec, |st| st.entries = Some(Arc::new(entries)));
            self.union(spec.list)
        } else {
            entries
        };
        self.controller.replace_feed(spec.list, content).await
    }

    /// The union of the in-memory entries of `list`'s enabled feeds.
    fn union(&self, list: ListKind) -> BTreeSet<Entry> {
        let state = self.state();
        registry::sources(list)
            .filter_map(|f| state.get(f.name))
            .filter(|st| self.enabled(st))
            .filter_map(|st| st.entries.as_deref())
            .flat_map(|set| set.iter().cloned())
            .collect()
    }

    /// Change feed `name`'s run-time settings (persisted; they win over the flags).
    /// `url`: `Some("")` clears the override. Disabling takes the feed's entries out of
    /// force now; enabling puts its last good copy back and starts an update in the
    /// background, as does a new URL.
    pub async fn configure(
        self: &Arc<Self>,
        name: &str,
        enabled: Option<bool>,
        url: Option<&str>,
    ) -> Result<FeedStatus, FeedsError> {
        let spec = Feeds::spec(name)?;
        let new_url = match url.map(str::trim) {
            None => None,
            Some("") => Some(None),
            Some(text) => Some(Some(FeedUrl::parse(text)?)),
        };
        let apply = self.apply.lock().await;
        let Some((was_enabled, old_url, runtime_enabled, runtime_url)) =
            self.with_feed(spec, |st| {
                let runtime_enabled = enabled.or(st.runtime_enabled);
                let runtime_url = match &new_url {
                    None => st.runtime_url.clone(),
                    Some(u) => u.clone(),
                };
                (self.enabled(st), self.url(st), runtime_enabled, runtime_url)
            })
        else {
            return Err(FeedsError::UnknownFeed {
                name: spec.name.to_string(),
                valid: registry::names(),
            });
        };
        let stored_url = runtime_url.as_ref().map(|u| u.as_str().to_string());
        let name = spec.name;
        self.controller
            .with_store(move |s| s.save_feed_config(name, runtime_enabled, stored_url.as_deref()))
            .await?;
        let (now_enabled, now_url) = self
            .with_feed(spec, |st| {
                st.runtime_enabled = runtime_enabled;
                st.runtime_url = runtime_url;
                (self.enabled(st), self.url(st))
            })
            .unwrap_or((false, old_url.clone()));
        tracing::info!(feed = name, enabled = now_enabled, url = %now_url, "feed settings changed");
        if was_enabled && !now_enabled {
            let content = if registry::is_shared(spec.list) {
                self.union(spec.list)
            } else {
                BTreeSet::new()
            };
            self.controller.replace_feed(spec.list, content).await?;
        } else if !was_enabled && now_enabled {
            self.restore_copy(spec).await?;
        }
        drop(apply);
        if now_enabled && (!was_enabled || now_url != old_url) {
            let this = Arc::clone(self);
            tokio::spawn(
                async move { this.update_feed(spec).await }
                    .instrument(tracing::info_span!("feed_update", feed = spec.name)),
            );
        }
        self.status(spec.name)
    }

    /// Put `spec`'s stored copy back in force (apply lock held).
    async fn restore_copy(&self, spec: &'static FeedSpec) -> Result<(), FeedsError> {
        let name = spec.name;
        let body = self
            .controller
            .with_store(move |s| {
                Ok(s.load_feed_states()?
                    .into_iter()
                    .find(|r| r.name == name)
                    .and_then(|r| r.copy)
                    .map(|c| c.body))
            })
            .await?;
        let Some(body) = body else { return Ok(()) };
        match self.parse(spec, body).await {
            Ok((_, parsed)) => {
                self.put_in_force(spec, parsed.entries).await?;
            }
            Err(e) => {
                tracing::warn!(feed = name, error = %e, "stored copy refused");
                self.with_feed(spec, |st| {
                    st.copy = None;
                    st.last_error = format!("stored copy refused: {e}");
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrink_guard_edges() {
        // (previous, now, max_shrink, refused)
        let cases = [
            (100, 50, 0.5, false),
            (100, 49, 0.5, true),
            (100, 100, 0.0, false),
            (100, 99, 0.0, true),
            (100, 1, 1.0, false),
            (100, 0, 1.0, false),
            (0, 0, 0.0, false),
            (1, 0, 0.5, true),
            (100, 500, 0.0, false),
            (3, 2, 0.5, false),
            (3, 1, 0.5, true),
        ];
        for (previous, now, max, refused) in cases {
            assert_eq!(
                shrinks_too_much(previous, now, max),
                refused,
                "{previous} -> {now} at {max}"
            );
        }
    }

    #[test]
    fn flags_name_known_feeds_only() {
        let base = FeedsConfig::default();
        let c = base
            .clone()
            .with_flags(
                &["feodo=file:///srv/mirror/feodo.txt".into()],
                &["iplocate".into()],
            )
            .unwrap();
        assert_eq!(c.urls["feodo"].as_str(), "file:///srv/mirror/feodo.txt");
        assert!(c.disabled.contains("iplocate") && c.disabled.len() == 1);
        let all = base.clone().with_flags(&[], &["all".into()]).unwrap();
        assert_eq!(all.disabled.len(), FEEDS.len());
        let bad: [(&[&str], &[&str], &str); 4] = [
            (
                &["nope=https://x.example/"],
                &[],
                "unknown feed \"nope\"; valid names: firehol_level1",
            ),
            (&["feodo"], &[], "is not NAME=URL"),
            (&["feodo=ftp://x.example/"], &[], "scheme \"ftp\""),
            (&[], &["firehol"], "unknown feed \"firehol\""),
        ];
        for (urls, disabled, want) in bad {
            let urls: Vec<String> = urls.iter().map(|s| s.to_string()).collect();
            let disabled: Vec<String> = disabled.iter().map(|s| s.to_string()).collect();
            let err = base
                .clone()
                .with_flags(&urls, &disabled)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err}");
        }
    }
}
