//! Sending one batch until every item in it has a final outcome.
//!
//! [`BulkSink::deliver`] owns a batch for its whole life and follows the decision table in
//! [`super::retry`]. What it shares between the deliveries in flight: the hold
//! ([`super::hold`]), the documents with a write waiting for its retry ([`super::waiting`]),
//! and the count of lone documents refused in a row by a whole-request 400.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use elasticsearch::Elasticsearch;

use super::answer::{describe, read_answer, Attempt, ItemResult};
use super::hold::Hold;
use super::request::{Batch, BatchItem, OpKind, Tracked};
use super::retry::{
    classify_item, classify_request, ItemDecision, RequestDecision, LONE_REFUSALS_FATAL,
};
use super::transport::{Http, Transport};
use super::waiting::{Turn, Waiting};
use crate::backoff::{backoff, jitter};
use crate::dlq::letter::{ErrorClass, Refusal};

/// Requests of one batch that got no answer within the timeout, in a row, after which the batch
/// is sent in halves: a body that is always too slow to index would otherwise be resent forever.
const SPLIT_AFTER_TIMEOUTS: u32 = 2;

/// How retries are paced and bounded.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per page read (backfill); bulk writes are bounded by time, not attempts.
    pub max_attempts: u32,
    /// How long one document's write may keep failing with a 5xx before it is dead-lettered.
    /// Cluster conditions (blocks, overload, no answer) are retried without limit instead.
    pub item_retry_for: Duration,
    /// Backoff before the first retry.
    pub base: Duration,
    /// Ceiling of one backoff.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            item_retry_for: Duration::from_secs(600),
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

/// The final outcome of one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Indexed or deleted.
    Applied(OpKind),
    /// A newer or equal version was already there (409), or a newer write of the document was
    /// applied while this one waited for its retry.
    AlreadyApplied,
    /// Refused for good; goes to the dead-letter topic.
    DeadLetter(Refusal),
    /// Not sent again: its partition was revoked, and the partition's next owner applies it.
    Revoked,
}

/// The items of an answered request to send again, and the backoff to wait first.
struct RetryLater<T> {
    items: Vec<BatchItem<T>>,
    wait: Duration,
    /// Whether any of them waits for a cluster condition (a block, an overload) to pass.
    held: bool,
}

/// What a delivery tells its caller before it ends, while some items of its batch wait for a
/// retry: the outcomes final so far, and whether the delivery gave back its request slot.
///
/// A slot is given back when the items left wait only for their own retry (a 5xx of their
/// shard): the batch's other outcomes are final, and the next batch should not wait through the
/// backoff. It is kept while an item waits for a cluster condition: a cluster that refuses
/// writes is not sent more of them at once.
#[derive(Debug)]
pub struct Early<T> {
    /// Final outcomes not reported before.
    pub outcomes: Vec<(T, ItemOutcome)>,
    /// Whether the delivery now runs without its slot (true at most once per delivery).
    pub slot_freed: bool,
}

/// Where a delivery sends its [`Early`] reports.
pub type Report<T> = Box<dyn FnMut(Early<T>) + Send>;

/// An error that retrying cannot fix: the pipeline stops and commits nothing past it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

/// Which of a batch's items are still wanted (the pipeline's: is its partition still assigned).
pub type Wanted<T> = Arc<dyn Fn(T) -> bool + Send + Sync>;

/// Sends batches to one index of one cluster.
#[derive(Clone)]
pub struct BulkSink<T> {
    transport: Arc<dyn Transport>,
    index: String,
    policy: RetryPolicy,
    shared: Arc<Shared>,
    wanted: Option<Wanted<T>>,
    /// Bounds the requests of deliveries that gave back their slot (see [`Early`]).
    resends: Option<Arc<tokio::sync::Semaphore>>,
}

#[derive(Default)]
struct Shared {
    hold: Hold,
    waiting: Arc<Waiting>,
    lone_refusals: AtomicU32,
}

/// What a delivery remembers of an item waiting to be sent again.
#[derive(Default)]
struct Retrying {
    /// When its bounded retries (5xx) started, if they have.
    since: Option<Instant>,
    /// Its quoted `_id`, while the sink watches for a newer write of the document.
    watched: Option<Vec<u8>>,
}

impl<T: Tracked> BulkSink<T> {
    /// A sink writing to `index` (an index or a write alias) through `client`.
    pub fn new(client: Elasticsearch, index: &str, policy: RetryPolicy, timeout: Duration) -> Self {
        Self::with_transport(Arc::new(Http::new(client, index, timeout)), index, policy)
    }

    /// A sink writing to `index` through `transport`.
    pub fn with_transport(transport: Arc<dyn Transport>, index: &str, policy: RetryPolicy) -> Self {
        Self {
            transport,
            index: index.to_owned(),
            policy,
            shared: Arc::default(),
            wanted: None,
            resends: None,
        }
    }

    /// Deliveries that gave back their request slot send at most `slots` requests at once
    /// between them.
    pub fn with_resend_slots(mut self, slots: usize) -> Self {
        self.resends = Some(Arc::new(tokio::sync::Semaphore::new(slots.max(1))));
        self
    }

    /// Before every retry, drop the items `wanted` refuses (as [`ItemOutcome::Revoked`]).
    pub fn with_wanted(mut self, wanted: Wanted<T>) -> Self {
        self.wanted = Some(wanted);
        self
    }

    /// The target index or alias.
    pub fn index(&self) -> &str {
        &self.index
    }

    /// Why writes are held now, if they are: the cluster condition and for how long.
    pub fn holding(&self) -> Option<String> {
        self.shared.hold.reason()
    }

    /// Sends `batch` until every item is applied, already applied, to be dead-lettered or no
    /// longer wanted, and returns each item's ticket with its final outcome.
    ///
    /// The delivery takes its turn when this is called, not when it is first polled: call it
    /// in the order the batches were sealed.
    pub fn deliver(
        &self,
        batch: Batch<T>,
    ) -> impl std::future::Future<Output = Result<Vec<(T, ItemOutcome)>, Fatal>> + Send + 'static
    {
        self.deliver_reporting(batch, Box::new(|_| {}))
    }

    /// [`Self::deliver`], telling `report` the outcomes that are final while some items wait
    /// for a retry (see [`Early`]). What was reported is not returned again at the end.
    pub fn deliver_reporting(
        &self,
        batch: Batch<T>,
        report: Report<T>,
    ) -> impl std::future::Future<Output = Result<Vec<(T, ItemOutcome)>, Fatal>> + Send + 'static
    {
        let sink = self.clone();
        let turn = self.shared.waiting.begin();
        async move { sink.deliver_in_turn(batch, turn, report).await }
    }

    async fn deliver_in_turn(
        &self,
        batch: Batch<T>,
        turn: Turn,
        mut report: Report<T>,
    ) -> Result<Vec<(T, ItemOutcome)>, Fatal> {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut queue = vec![(batch, 0u32)];
        let mut request_failures = 0u32;
        // Items waiting to be sent again, kept aside so that the common path carries nothing.
        // (A fatal error ends the run, so the documents it still watches need no unwatching.)
        let mut retrying: HashMap<T, Retrying> = HashMap::new();
        let mut sent_before = false;
        let mut slot_freed = false;
        while let Some((mut batch, timeouts)) = queue.pop() {
            self.drop_unwanted(
                &mut batch,
                turn.number,
                sent_before,
                &mut retrying,
                &mut outcomes,
            );
            sent_before = true;
            if batch.is_empty() {
                continue;
            }
            for item in &mut batch.items {
                item.attempts += 1;
            }
            let resend_permit = match (&self.resends, slot_freed) {
                (Some(resends), true) => resends.clone().acquire_owned().await.ok(),
                _ => None,
            };
            let started = Instant::now();
            let attempt = read_answer(self.transport.send(batch.to_send()).await);
            drop(resend_permit);
            let took = started.elapsed();
            metrics::histogram!("bulk.latency_ms").record(took.as_secs_f64() * 1e3);
            tracing::debug!(index = %self.index, docs = batch.len(), took_ms = took.as_millis() as u64, "bulk request answered");
            let (status, error, detail, timed_out) = match attempt {
                Attempt::Items(results) if results.len() == batch.len() => {
                    metrics::counter!("bulk.requests", "result" => "ok").increment(1);
                    request_failures = 0;
                    self.shared.lone_refusals.store(0, Ordering::SeqCst);
                    if let Some(retry) = self.read_items(&batch, turn.number, results, &mut retrying, &mut outcomes)? {
                        let free_slot = !retry.held && !slot_freed;
                        if free_slot || !outcomes.is_empty() {
                            slot_freed |= free_slot;
                            report(Early { outcomes: std::mem::take(&mut outcomes), slot_freed: free_slot });
                        }
                        let again = batch.subset(retry.items);
                        drop(batch);
                        tokio::time::sleep(retry.wait).await;
                        queue.push((again, 0));
                    }
                    continue;
                }
                Attempt::Items(results) => (
                    None,
                    None,
                    format!(
                        "the answer has {} items for the {} documents sent; each document needs its own answer",
                        results.len(),
                        batch.len()
                    ),
                    false,
                ),
                Attempt::NoItems(detail) => (None, None, detail, false),
                Attempt::Failed {
                    status,
                    error,
                    detail,
                    timed_out,
                } => (status, error, detail, timed_out),
            };
            // A request that never got item answers does not count against its items.
            for item in &mut batch.items {
                item.attempts -= 1;
            }
            let (kind, reason) = match &error {
                Some(e) => (Some(e.kind.as_str()), e.reason.as_deref()),
                None => (None, None),
            };
            match classify_request(status, kind, reason) {
                RequestDecision::Hold
                    if timed_out && timeouts + 1 >= SPLIT_AFTER_TIMEOUTS && batch.len() > 1 =>
                {
                    metrics::counter!("bulk.requests", "result" => "split_after_timeouts")
                        .increment(1);
                    tracing::warn!(index = %self.index, docs = batch.len(), timeouts = timeouts + 1, "bulk request timed out again; sending it in halves");
                    queue.extend(halves(&batch).into_iter().map(|b| (b, 0)));
                }
                RequestDecision::Hold => {
                    metrics::counter!("bulk.requests", "result" => "retry").increment(1);
                    let what = match status {
                        Some(s) => format!("HTTP {s}: {detail}"),
                        None => detail,
                    };
                    self.shared.hold.hold(&self.index, &what);
                    let wait = backoff(
                        request_failures,
                        self.policy.base,
                        self.policy.max,
                        jitter(),
                    );
                    tracing::debug!(index = %self.index, docs = batch.len(), reason = %what, retry_in_ms = wait.as_millis() as u64, "bulk request failed; retrying the whole request");
                    request_failures = request_failures.saturating_add(1);
                    tokio::time::sleep(wait).await;
                    queue.push((batch, timeouts + u32::from(timed_out)));
                }
                RequestDecision::Split | RequestDecision::Isolate if batch.len() > 1 => {
                    queue.extend(halves(&batch).into_iter().map(|b| (b, 0)));
                }
                RequestDecision::Split => {
                    let item = &batch.items[0];
                    outcomes.push((item.ticket, ItemOutcome::DeadLetter(Refusal {
                        class: ErrorClass::Mapping,
                        reason: format!("the document alone is too large for one bulk request (HTTP 413): {detail}"),
                        es_type: None,
                        attempts: item.attempts + 1,
                        original: batch.original(item),
                    })));
                }
                RequestDecision::Isolate => {
                    let refused = self.shared.lone_refusals.fetch_add(1, Ordering::SeqCst) + 1;
                    let item = &batch.items[0];
                    if refused >= LONE_REFUSALS_FATAL {
                        metrics::counter!("bulk.requests", "result" => "fatal").increment(1);
                        return Err(Fatal(format!(
                            "{} refused {refused} documents in a row, each alone in its bulk request, with nothing accepted between them (last: document {}, HTTP 400: {detail}); this is a configuration or compatibility problem, not bad documents",
                            self.index,
                            batch.document_id(item)
                        )));
                    }
                    metrics::counter!("bulk.requests", "result" => "refused").increment(1);
                    outcomes.push((item.ticket, ItemOutcome::DeadLetter(Refusal {
                        class: ErrorClass::RequestRefused,
                        reason: format!("Elasticsearch refused the whole bulk request with this document alone in it (HTTP 400): {detail}"),
                        es_type: kind.map(str::to_owned),
                        attempts: item.attempts + 1,
                        original: batch.original(item),
                    })));
                }
                RequestDecision::ReadItems | RequestDecision::Fatal => {
                    metrics::counter!("bulk.requests", "result" => "fatal").increment(1);
                    return Err(Fatal(format!(
                        "bulk request to {} was refused with HTTP {}: {detail}",
                        self.index,
                        status.map_or("?".into(), |s| s.to_string())
                    )));
                }
            }
        }
        Ok(outcomes)
    }

    /// Classifies the items of an answered request: final outcomes go to `outcomes`, and the
    /// items to send again are returned with the backoff to wait first.
    fn read_items(
        &self,
        batch: &Batch<T>,
        turn: u64,
        results: Vec<ItemResult>,
        retrying: &mut HashMap<T, Retrying>,
        outcomes: &mut Vec<(T, ItemOutcome)>,
    ) -> Result<Option<RetryLater<T>>, Fatal> {
        let decisions: Vec<ItemDecision> = batch
            .items
            .iter()
            .zip(&results)
            .map(|(item, result)| {
                let error = result.error.as_ref();
                classify_item(
                    item.op,
                    result.status,
                    error.map(|e| e.kind.as_str()),
                    error.and_then(|e| e.reason.as_deref()),
                )
            })
            .collect();
        let now = Instant::now();
        let mut retry = Vec::new();
        let mut sent_again = Vec::with_capacity(batch.len());
        let mut held = None;
        // Items to send again are watched before this answer's applied writes are noted, so a
        // newer write of the same document in the same answer overtakes them.
        for ((item, result), decision) in batch.items.iter().zip(&results).zip(&decisions) {
            let since = retrying
                .get(&item.ticket)
                .and_then(|s| s.since)
                .unwrap_or(now);
            let again = match decision {
                ItemDecision::Hold => {
                    held.get_or_insert_with(|| describe(result));
                    true
                }
                ItemDecision::Retry => now.duration_since(since) < self.policy.item_retry_for,
                _ => false,
            };
            sent_again.push(again);
            if again {
                let state = retrying.entry(item.ticket).or_default();
                if *decision == ItemDecision::Retry {
                    state.since = Some(since);
                }
                if state.watched.is_none() {
                    let id = batch.quoted_id(item).to_vec();
                    self.shared.waiting.watch(&id);
                    state.watched = Some(id);
                }
                retry.push(item.clone());
            }
        }
        let answered = batch.items.iter().zip(&results).zip(decisions);
        for (((item, result), decision), again) in answered.zip(sent_again) {
            let outcome = match decision {
                ItemDecision::Applied => ItemOutcome::Applied(item.op),
                ItemDecision::AlreadyApplied => ItemOutcome::AlreadyApplied,
                ItemDecision::Hold => continue,
                ItemDecision::Retry if again => continue,
                ItemDecision::Retry => {
                    dead_letter(ErrorClass::RetriesExhausted, result, item, batch)
                }
                ItemDecision::DeadLetter => dead_letter(ErrorClass::Mapping, result, item, batch),
                ItemDecision::Fatal => {
                    return Err(Fatal(format!(
                        "{} answered {} for document {}: {}",
                        self.index,
                        result.status,
                        batch.document_id(item),
                        describe(result)
                    )))
                }
            };
            let waiting = &self.shared.waiting;
            if matches!(
                outcome,
                ItemOutcome::Applied(_) | ItemOutcome::AlreadyApplied
            ) && waiting.any()
            {
                waiting.applied(batch.quoted_id(item), batch.version(item));
            }
            if outcome == ItemOutcome::Applied(OpKind::Delete) {
                waiting.delete_applied(turn, batch.quoted_id(item), batch.version(item));
            }
            if let Some(id) = retrying.remove(&item.ticket).and_then(|s| s.watched) {
                self.shared.waiting.unwatch(&id);
            }
            outcomes.push((item.ticket, outcome));
        }
        let held_any = held.is_some();
        match held {
            Some(reason) => self.shared.hold.hold(&self.index, &reason),
            None => self.shared.hold.lift(&self.index),
        }
        if retry.is_empty() {
            return Ok(None);
        }
        metrics::counter!("bulk.items.retried").increment(retry.len() as u64);
        let attempts = retry.iter().map(|i| i.attempts).max().unwrap_or(1);
        let wait = backoff(attempts - 1, self.policy.base, self.policy.max, jitter());
        tracing::debug!(index = %self.index, items = retry.len(), retry_in_ms = wait.as_millis() as u64, "retrying items");
        Ok(Some(RetryLater {
            items: retry,
            wait,
            held: held_any,
        }))
    }

    /// Drops the items of a batch about to be sent that are no longer wanted (their partition
    /// was revoked) or were overtaken by a newer write of the same document.
    fn drop_unwanted(
        &self,
        batch: &mut Batch<T>,
        turn: u64,
        sent_before: bool,
        retrying: &mut HashMap<T, Retrying>,
        outcomes: &mut Vec<(T, ItemOutcome)>,
    ) {
        let waiting = &self.shared.waiting;
        // The first send follows the sealing of the batch within milliseconds: a write cannot be
        // stale by a tombstone's lifetime yet, and if a newer write of its document was applied
        // meanwhile, its external version makes Elasticsearch refuse it (409). Only what is
        // sent again later, after answers and backoffs, is looked up.
        let look_up = sent_before && waiting.any_deletes();
        let verdict = |item: &BatchItem<T>| {
            if self
                .wanted
                .as_ref()
                .is_some_and(|wanted| !wanted(item.ticket))
            {
                return Some(ItemOutcome::Revoked);
            }
            let id = match retrying.get(&item.ticket).and_then(|s| s.watched.as_ref()) {
                Some(id) => id.as_slice(),
                None if look_up => batch.quoted_id(item),
                None => return None,
            };
            waiting
                .overtaken(id, batch.version(item), turn)
                .then_some(ItemOutcome::AlreadyApplied)
        };
        // The common case, nothing to drop, costs one check per item and no allocation.
        if !batch.items.iter().any(|i| verdict(i).is_some()) {
            return;
        }
        let verdicts: Vec<Option<ItemOutcome>> = batch.items.iter().map(verdict).collect();
        let mut verdicts = verdicts.into_iter();
        batch.retain(|item| {
            let Some(outcome) = verdicts.next().flatten() else {
                return true;
            };
            if outcome == ItemOutcome::AlreadyApplied {
                metrics::counter!("bulk.items.overtaken").increment(1);
            }
            if let Some(id) = retrying.remove(&item.ticket).and_then(|s| s.watched) {
                waiting.unwatch(&id);
            }
            outcomes.push((item.ticket, outcome));
            false
        });
    }
}

/// The two halves of a batch, the first to be sent first (the queue is a stack).
fn halves<T: Tracked>(batch: &Batch<T>) -> [Batch<T>; 2] {
    let mut first = batch.items.clone();
    let second = first.split_off(first.len() / 2);
    [batch.subset(second), batch.subset(first)]
}

fn dead_letter<T: Tracked>(
    class: ErrorClass,
    result: &ItemResult,
    item: &BatchItem<T>,
    batch: &Batch<T>,
) -> ItemOutcome {
    ItemOutcome::DeadLetter(Refusal {
        class,
        reason: describe(result),
        es_type: result.error.as_ref().map(|e| e.kind.clone()),
        attempts: item.attempts,
        original: batch.original(item),
    })
}
