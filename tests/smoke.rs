//! Smoke tests of the test bed itself: the real broker and the ES stand-in, through the
//! project's own clients, with exact numbers.

mod support;

use std::time::{Duration, Instant};

use dual_indexer::es;
use elasticsearch::http::Method;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use serde_json::json;
use support::*;

#[tokio::test]
async fn kafka_offsets_commits_and_watermarks_are_exact() {
    let stack = stack();
    let topic = unique("smoke");
    let group = unique("smoke-group");
    let config = kafka_config(&stack);
    dual_indexer::source::topics::ensure_topic(&config, &topic, 3)
        .await
        .unwrap();
    let producer: FutureProducer = config.create().unwrap();
    for i in 0..300 {
        let key = format!("k{i}");
        let payload = format!("message {i}");
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    let consumer: StreamConsumer = kafka_config(&stack)
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < 300 {
        assert!(Instant::now() < deadline, "consumed only {seen} of 300");
        let m = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await;
        if let Ok(m) = m {
            let m = m.unwrap();
            assert!(m.payload().is_some());
            consumer.store_offset_from_message(&m).ok();
            seen += 1;
        }
    }
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();

    let positions = committed_and_high(&stack, &group, &topic);
    assert_eq!(positions.len(), 3);
    assert_eq!(positions.iter().map(|(_, _, high)| high).sum::<i64>(), 300);
    for (partition, committed, high) in positions {
        assert_eq!(
            committed,
            Some(high),
            "partition {partition}: committed offset equals the high watermark"
        );
    }
}

/// The sink asks for only the parts of a bulk answer it reads (`transport::BULK_ANSWER_FILTER`):
/// each item's status and error, from the cluster's own answer.
#[tokio::test]
async fn the_sinks_bulk_answers_hold_only_each_items_status_and_error() {
    use dual_indexer::sink::transport::{Exchange, Http, Transport};
    let stack = stack();
    let index = unique("smoke-filter");
    let client = es::client(&stack.new_es, Duration::from_secs(30)).unwrap();
    es::ensure_index(&client, &index, es::NEW_INDEX_TEMPLATE)
        .await
        .unwrap();
    let source = r#"{"tags":[{"keyToValue":"n:v","value":"v"}]}"#;
    let body = format!(
        "{{\"index\":{{\"_id\":\"a\",\"version\":5,\"version_type\":\"external\"}}}}\n{source}\n\
         {{\"index\":{{\"_id\":\"a\",\"version\":3,\"version_type\":\"external\"}}}}\n{source}\n"
    );
    let transport = Http::new(client, &index, Duration::from_secs(30));
    let Exchange::Answered { status, body } = transport.send(body.into()).await else {
        panic!("no answer");
    };
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        answer.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["items"],
        "{answer}"
    );
    let items: Vec<_> = answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let result = item["index"].as_object().unwrap();
            let mut keys: Vec<_> = result.keys().map(String::as_str).collect();
            keys.sort_unstable();
            (result["status"].as_u64().unwrap(), keys.join(","))
        })
        .collect();
    assert_eq!(
        items,
        [(201, "status".into()), (409, "error,status".into())]
    );
    assert_eq!(
        answer["items"][1]["index"]["error"]["type"],
        "version_conflict_engine_exception"
    );
}

#[tokio::test]
async fn es_index_from_schema_accepts_bulk_and_refuses_unknown_fields() {
    let stack = stack();
    let index = unique("smoke-index");
    let client = es::client(&stack.new_es, Duration::from_secs(30)).unwrap();
    assert!(es::ensure_index(&client, &index, es::NEW_INDEX_TEMPLATE)
        .await
        .unwrap());
    assert!(
        !es::ensure_index(&client, &index, es::NEW_INDEX_TEMPLATE)
            .await
            .unwrap(),
        "second call finds it"
    );

    let mut body = String::new();
    for i in 0..50 {
        body.push_str(&format!("{{\"index\":{{\"_id\":\"d{i}\"}}}}\n"));
        body.push_str(
            &json!({"tags": [{"keyToValue": "n:v", "value": "v"}], "status": "open"}).to_string(),
        );
        body.push('\n');
    }
    let response = client
        .send(
            Method::Post,
            &format!("/{index}/_bulk"),
            {
                let mut h = elasticsearch::http::headers::HeaderMap::new();
                h.insert(
                    elasticsearch::http::headers::CONTENT_TYPE,
                    elasticsearch::http::headers::HeaderValue::from_static("application/x-ndjson"),
                );
                h
            },
            None::<&()>,
            Some(body.as_str()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(response.status_code().as_u16(), 200);
    es::refresh(&client, &index).await.unwrap();
    assert_eq!(es::count(&client, &index).await.unwrap(), 50);

    let (status, reply) = es::request(
        &client,
        Method::Put,
        &format!("/{index}/_doc/x"),
        Some(&json!({"colour": "red"})),
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
    assert_eq!(
        reply["error"]["type"], "strict_dynamic_mapping_exception",
        "{reply}"
    );
}
