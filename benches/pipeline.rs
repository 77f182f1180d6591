//! The per-command CPU cost of the hot path: decode → transform → bulk-line serialization.
//!
//! Target (issue 3): at least 300k commands/s on one core for commands with 10 tags.
//! Run with `cargo bench --bench pipeline`; criterion prints the throughput in elements/s.
//! Each group also measures a naive baseline (serde_json `Value` parse and re-serialize of the
//! same payloads) so docs/benchmarks.md can quote a ratio that survives a noisy machine.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dual_indexer::generate::{self, GeneratorSpec};
use dual_indexer::sink::{Batch, Provenance};
use dual_indexer::source::offsets::Ticket;
use dual_indexer::transform::{prepare, Origin, VersionSource};

fn commands(tags: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    generate::messages(&GeneratorSpec {
        count: 1_000,
        ids: 1_000,
        tags,
        seed: 9,
        poison_every: 0,
    })
    .into_iter()
    .map(|m| (m.key.unwrap_or_default().into_bytes(), m.payload))
    .collect()
}

fn hot_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_transform_serialize");
    for tags in [10, 20] {
        let input = commands(tags);
        group.throughput(Throughput::Elements(input.len() as u64));
        group.bench_function(format!("{tags}_tags"), |b| {
            b.iter(|| {
                let mut batch = Batch::with_capacity(1 << 20, input.len());
                for (offset, (key, payload)) in input.iter().enumerate() {
                    let origin = Origin {
                        key: Some(key),
                        offset: offset as i64,
                    };
                    let write = prepare(payload, origin, VersionSource::Offset)
                        .expect("generated commands are valid");
                    let ticket = Ticket {
                        partition: 0,
                        offset: offset as i64,
                        epoch: 1,
                    };
                    batch.push(
                        write,
                        Provenance {
                            ticket,
                            key: Some(key),
                            payload,
                        },
                    );
                }
                black_box(batch.body().len())
            })
        });
        // The baseline for the ratio in docs/benchmarks.md: parse each payload into a serde_json::Value
        // and serialize it back, which is less work than the real transform. Same run, same input.
        group.bench_function(format!("{tags}_tags_baseline_serde_value_roundtrip"), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(1 << 20);
                for (_, payload) in &input {
                    let value: serde_json::Value =
                        serde_json::from_slice(payload).expect("valid JSON");
                    serde_json::to_writer(&mut out, &value).expect("in memory");
                    out.push(b'\n');
                }
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
