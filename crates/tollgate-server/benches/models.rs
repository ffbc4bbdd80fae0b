//! Licensing models through the real server (HTTP on 127.0.0.1, SQLite with
//! `synchronous=FULL`, group commit): a floating lease's life (checkout, heartbeat,
//! release: three durable writes), and usage recording. 64 concurrent clients; each sample is one round of all of them.
//!
//! Run: `cargo bench -p tollgate-server --bench models`. The last lines printed are
//! the figures quoted in docs/BENCHMARKS.md (medians of the samples).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Samples, median};
use criterion::{Criterion, Throughput};
use serde_json::{Value, json};

const TOKEN: &str = "bench-token-0123456789";
const CLIENTS: usize = 64;
const PER_CLIENT: usize = 10;

async fn post(client: &reqwest::Client, url: String, body: Value) -> Value {
    let r = client.post(url).bearer_auth(TOKEN).json(&body).send().await.expect("request");
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {v}");
    v
}

/// The binary's allocator, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tollgate_server::Config::new(tmp.path());
    cfg.engine.snapshot_every = 0;
    cfg.bootstrap_token = Some(TOKEN.into());
    let opened = tollgate_server::open(&cfg).unwrap();
    let (base, license, client) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(tollgate_server::serve(listener, opened.app.clone(), std::future::pending()));
        let client = reqwest::Client::new();
        post(
            &client,
            format!("{base}/v1/products"),
            json!({"key":"app","name":"App","features":[{"key":"a","name":"A"}]}),
        )
        .await;
        post(
            &client,
            format!("{base}/v1/plans"),
            json!({"key":"site","product":"app","name":"Site","features":["a"],
                "floating":{"max_leases":1_000_000,"lease_ttl_seconds":3600},
                "meters":[{"key":"calls","quota":1_000_000_000,"period":"month"}]}),
        )
        .await;
        let lic =
            post(&client, format!("{base}/v1/licenses"), json!({"product":"app","plan":"site","licensee":"bench"}))
                .await;
        (base, lic["id"].as_str().unwrap().to_string(), client)
    });

    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let lease_samples: Samples = Default::default();
    let usage_samples: Samples = Default::default();
    let mut g = c.benchmark_group("models");
    g.throughput(Throughput::Elements((CLIENTS * PER_CLIENT) as u64));
    let round = |work: fn(reqwest::Client, String, String, u64) -> tokio::task::JoinHandle<()>, samples: &Samples| {
        let start = Instant::now();
        rt.block_on(async {
            let tasks: Vec<_> = (0..CLIENTS)
                .map(|_| {
                    let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    work(client.clone(), base.clone(), license.clone(), n)
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        let took = start.elapsed();
        samples.lock().unwrap().push((CLIENTS * PER_CLIENT) as f64 / took.as_secs_f64());
        took
    };
    g.bench_function("lease_checkout_and_heartbeat", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    round(
                        |client, base, license, n| {
                            tokio::spawn(async move {
                                for i in 0..PER_CLIENT {
                                    let lease = post(
                                        &client,
                                        format!("{base}/v1/licenses/{license}/leases"),
                                        json!({"fingerprint": format!("ws-{n}-{i}")}),
                                    )
                                    .await;
                                    let id = lease["lease_id"].as_str().unwrap();
                                    post(&client, format!("{base}/v1/leases/{id}/heartbeat"), json!({})).await;
                                    // Released, so the live set stays at most 64: deciding
                                    // a checkout scans the license's live leases.
                                    let r = client.delete(format!("{base}/v1/leases/{id}")).bearer_auth(TOKEN).send();
                                    assert!(r.await.expect("request").status().is_success());
                                }
                            })
                        },
                        &lease_samples,
                    )
                })
                .sum()
        })
    });
    g.bench_function("usage_record", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    round(
                        |client, base, license, _| {
                            tokio::spawn(async move {
                                for _ in 0..PER_CLIENT {
                                    post(
                                        &client,
                                        format!("{base}/v1/licenses/{license}/usage"),
                                        json!({"meter":"calls","quantity":1}),
                                    )
                                    .await;
                                }
                            })
                        },
                        &usage_samples,
                    )
                })
                .sum()
        })
    });
    g.finish();
    println!(
        "lease checkout + heartbeat (+ release): {:.0} leases/s ({} clients, over HTTP, durable)",
        median(&lease_samples),
        CLIENTS
    );
    println!("usage recording: {:.0} records/s ({} clients, over HTTP, durable)", median(&usage_samples), CLIENTS);
}
