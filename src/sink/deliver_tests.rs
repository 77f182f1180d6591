//! The delivery's branches against a scripted cluster: a [`Transport`] whose answers the test
//! decides from each request body, so that splitting, isolating, holding, retrying and giving up
//! are checked without a network, exactly and quickly (the clock is paused, so backoffs cost
//! nothing).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use super::transport::{Exchange, Pending, Transport};
use super::{Batch, BulkSink, Early, ItemOutcome, OpKind, Provenance, RetryPolicy, Tracked};
use crate::dlq::ErrorClass;
use crate::transform::{Op, Write};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Doc(i64);

impl Tracked for Doc {
    fn position(&self) -> (i32, i64) {
        (0, self.0)
    }
}

/// A cluster that answers each request with `answer(body, request number)`.
struct Scripted<F> {
    answer: F,
    requests: AtomicUsize,
}

impl<F> Transport for Scripted<F>
where
    F: Fn(&str, usize) -> Exchange + Send + Sync + 'static,
{
    fn send(&self, body: Bytes) -> Pending<'_> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        let exchange = (self.answer)(std::str::from_utf8(&body).unwrap(), n);
        Box::pin(async move { exchange })
    }
}

fn sink<F>(answer: F) -> (BulkSink<Doc>, Arc<Scripted<F>>)
where
    F: Fn(&str, usize) -> Exchange + Send + Sync + 'static,
{
    let transport = Arc::new(Scripted {
        answer,
        requests: AtomicUsize::new(0),
    });
    let sink = BulkSink::with_transport(transport.clone(), "tags", RetryPolicy::default());
    (sink, transport)
}

/// `docs` upserts; the source of document `bad` (if any) carries the text `BAD`.
fn batch(docs: i64, bad: Option<i64>) -> Batch<Doc> {
    let mut batch = Batch::default();
    for n in 0..docs {
        let title = if Some(n) == bad { "BAD" } else { "fine" };
        let source = serde_json::to_vec(&json!({ "title": title })).unwrap();
        let id = format!("doc-{n}");
        let write = Write {
            id: id.as_str().into(),
            routing: None,
            version: n as u64,
            op: Op::Index(source.into()),
        };
        let payload = format!("payload {n}");
        batch.push(
            write,
            Provenance {
                ticket: Doc(n),
                key: None,
                payload: payload.as_bytes(),
            },
        );
    }
    batch
}

fn answered(status: u16, body: Value) -> Exchange {
    Exchange::Answered {
        status,
        body: Bytes::from(body.to_string()),
    }
}

/// A 200 answer with one item per action line of `body`, each answered by `item(document id)`.
fn items(body: &str, item: impl Fn(&str) -> Value) -> Exchange {
    let items: Vec<Value> = body
        .lines()
        .filter(|line| line.starts_with("{\"index\"") || line.starts_with("{\"delete\""))
        .map(|line| {
            let action: Value = serde_json::from_str(line).unwrap();
            let (op, meta) = action.as_object().unwrap().iter().next().unwrap();
            json!({ op: item(meta["_id"].as_str().unwrap()) })
        })
        .collect();
    answered(200, json!({ "errors": false, "items": items }))
}

fn created(_: &str) -> Value {
    json!({"status": 201})
}

fn applied(outcomes: &[(Doc, ItemOutcome)]) -> usize {
    outcomes
        .iter()
        .filter(|(_, o)| *o == ItemOutcome::Applied(OpKind::Index))
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_document_that_makes_the_whole_request_refused_is_isolated_and_dead_lettered_alone() {
    let (sink, transport) = sink(|body, _| {
        if body.contains("BAD") {
            answered(
                400,
                json!({"error": {"type": "illegal_argument_exception", "reason": "Malformed action/metadata line"}, "status": 400}),
            )
        } else {
            items(body, created)
        }
    });
    let outcomes = sink.deliver(batch(8, Some(5))).await.unwrap();
    assert_eq!(outcomes.len(), 8, "one outcome per document");
    assert_eq!(applied(&outcomes), 7);
    let (doc, refused) = outcomes
        .iter()
        .find(|(_, o)| matches!(o, ItemOutcome::DeadLetter(_)))
        .unwrap();
    assert_eq!(*doc, Doc(5));
    let ItemOutcome::DeadLetter(refusal) = refused else {
        unreachable!()
    };
    assert_eq!(refusal.class, ErrorClass::RequestRefused);
    assert_eq!(
        refusal.es_type.as_deref(),
        Some("illegal_argument_exception")
    );
    assert_eq!(refusal.original.payload, b"payload 5");
    // 8 → 4 → 2 → 1 on the refused side, and each accepted half once.
    assert_eq!(transport.requests.load(Ordering::SeqCst), 7);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_of_every_document_alone_is_fatal_not_a_dead_letter_each() {
    let (sink, _) = sink(|_, _| {
        answered(
            400,
            json!({"error": {"type": "illegal_argument_exception", "reason": "no"}, "status": 400}),
        )
    });
    let error = sink.deliver(batch(8, None)).await.unwrap_err();
    assert!(
        error.0.contains("documents in a row, each alone"),
        "{}",
        error.0
    );
}

#[tokio::test(start_paused = true)]
async fn an_answer_without_items_is_not_taken_for_success() {
    let (sink, transport) = sink(|body, n| {
        if n == 0 {
            answered(200, json!({}))
        } else {
            items(body, created)
        }
    });
    let outcomes = sink.deliver(batch(4, None)).await.unwrap();
    assert_eq!(applied(&outcomes), 4);
    assert_eq!(transport.requests.load(Ordering::SeqCst), 2, "sent again");
}

#[tokio::test(start_paused = true)]
async fn an_answer_with_too_few_items_is_not_taken_for_success() {
    let (sink, transport) = sink(|body, n| {
        if n == 0 {
            answered(
                200,
                json!({"errors": false, "items": [{"index": {"status": 201}}]}),
            )
        } else {
            items(body, created)
        }
    });
    let outcomes = sink.deliver(batch(4, None)).await.unwrap();
    assert_eq!(applied(&outcomes), 4);
    assert_eq!(transport.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_batch_that_never_gets_an_answer_is_split_until_it_does() {
    // Bodies of more than two documents always time out.
    let (sink, transport) = sink(|body, _| {
        if body.matches("{\"index\"").count() > 2 {
            Exchange::Failed {
                timed_out: true,
                detail: "operation timed out".into(),
            }
        } else {
            items(body, created)
        }
    });
    let outcomes = sink.deliver(batch(8, None)).await.unwrap();
    assert_eq!(applied(&outcomes), 8);
    // 8 twice, then each 4 twice, then four bodies of 2.
    assert_eq!(transport.requests.load(Ordering::SeqCst), 2 + 4 + 4);
}

#[tokio::test(start_paused = true)]
async fn item_answers_decide_each_document() {
    let (sink, _) = sink(|body, _| {
        items(body, |id| match id {
            "doc-1" => {
                json!({"status": 409, "error": {"type": "version_conflict_engine_exception", "reason": "newer"}})
            }
            "doc-2" => {
                json!({"status": 400, "error": {"type": "strict_dynamic_mapping_exception", "reason": "no such field"}})
            }
            _ => json!({"status": 201}),
        })
    });
    let outcomes = sink.deliver(batch(4, None)).await.unwrap();
    let of = |n| &outcomes.iter().find(|(d, _)| *d == Doc(n)).unwrap().1;
    assert_eq!(*of(0), ItemOutcome::Applied(OpKind::Index));
    assert_eq!(*of(1), ItemOutcome::AlreadyApplied);
    let ItemOutcome::DeadLetter(refusal) = of(2) else {
        panic!("{:?}", of(2))
    };
    assert_eq!(refusal.class, ErrorClass::Mapping);
    assert_eq!(
        refusal.es_type.as_deref(),
        Some("strict_dynamic_mapping_exception")
    );
    assert_eq!(*of(3), ItemOutcome::Applied(OpKind::Index));
}

#[tokio::test(start_paused = true)]
async fn a_write_block_holds_the_documents_until_it_lifts_and_never_dead_letters_them() {
    let (sink, transport) = sink(|body, n| {
        if n < 3 {
            items(
                body,
                |_| json!({"status": 429, "error": {"type": "cluster_block_exception", "reason": "index [tags] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, index has read-only-allow-delete block];"}}),
            )
        } else {
            items(body, created)
        }
    });
    let delivery = tokio::spawn({
        let sink = sink.clone();
        async move { sink.deliver(batch(4, None)).await }
    });
    while transport.requests.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        sink.holding()
            .is_some_and(|why| why.contains("cluster_block_exception")),
        "{:?}",
        sink.holding()
    );
    let outcomes = delivery.await.unwrap().unwrap();
    assert_eq!(applied(&outcomes), 4);
    assert_eq!(sink.holding(), None, "the hold ends with the block");
}

/// Delivers `batch` through `sink`, collecting what the delivery reports before it ends.
async fn deliver_collecting(
    sink: &BulkSink<Doc>,
    batch: Batch<Doc>,
) -> (Vec<(Doc, ItemOutcome)>, Vec<Early<Doc>>) {
    let reports = Arc::new(std::sync::Mutex::new(Vec::new()));
    let collected = Arc::clone(&reports);
    let report = Box::new(move |early| collected.lock().unwrap().push(early));
    let outcomes = sink.deliver_reporting(batch, report).await.unwrap();
    let reports = std::mem::take(&mut *reports.lock().unwrap());
    (outcomes, reports)
}

#[tokio::test(start_paused = true)]
async fn a_retried_item_gives_back_the_slot_and_lets_the_batchs_other_outcomes_go_first() {
    // doc-2's shard fails its write twice; the three others are written at once.
    let (sink, transport) = sink(|body, n| {
        items(body, |id| match (id, n) {
            ("doc-2", 0 | 1) => {
                json!({"status": 503, "error": {"type": "unavailable_shards_exception", "reason": "primary shard is not active"}})
            }
            _ => json!({"status": 201}),
        })
    });
    let (last, reports) = deliver_collecting(&sink, batch(4, None)).await;
    assert_eq!(transport.requests.load(Ordering::SeqCst), 3);
    assert_eq!(reports.len(), 1, "{reports:?}");
    let early = &reports[0];
    assert!(early.slot_freed, "a retry of its own does not hold a slot");
    let mut first: Vec<Doc> = early.outcomes.iter().map(|(d, _)| *d).collect();
    first.sort_by_key(|d| d.0);
    assert_eq!(first, [Doc(0), Doc(1), Doc(3)]);
    assert_eq!(applied(&early.outcomes), 3);
    assert_eq!(
        last,
        [(Doc(2), ItemOutcome::Applied(OpKind::Index))],
        "only the retried item is left for the end, and nothing twice"
    );
}

#[tokio::test(start_paused = true)]
async fn an_item_held_by_an_overload_reports_the_others_but_keeps_the_slot() {
    let (sink, _) = sink(|body, n| {
        items(body, |id| match (id, n) {
            ("doc-0", 0) => {
                json!({"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution"}})
            }
            _ => json!({"status": 201}),
        })
    });
    let (last, reports) = deliver_collecting(&sink, batch(3, None)).await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(
        !reports[0].slot_freed,
        "an overloaded cluster is not sent more at once"
    );
    assert_eq!(applied(&reports[0].outcomes), 2);
    assert_eq!(last, [(Doc(0), ItemOutcome::Applied(OpKind::Index))]);
}
