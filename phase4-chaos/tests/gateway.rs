//! The gateway in front of phase 2's real order API (PostgreSQL, Kafka) with its rate
//! limits in the real Redis (`cargo xtask up` starts all three).

mod support;

use common::shutdown::CancellationToken;
use phase2_events::fault_proxy::FaultProxy;
use phase2_events::testing::TestSystem;
use phase4_chaos::gateway::auth::{DEVELOPMENT_KEY, Keys};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use support::{Door, metrics, order_api, token, unique};

async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "a {status} is a problem+json"
    );
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_decide_who_gets_in_and_the_customer_comes_from_the_token() {
    let system = order_api().await;
    let door = Door::open(&system.order_url, &[]).await;
    let http = reqwest::Client::new();
    let order = json!({"customer_id": "mallory", "items": [{"sku": "pizza-margherita", "qty": 1}]});

    // No token, a token from another key, an expired one, a malformed header: 401.
    let other_key = Keys::hs256(b"not-the-gateway-key-32-bytes-lon")
        .unwrap()
        .mint("alice", Duration::from_secs(60))
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = Keys::hs256(DEVELOPMENT_KEY.as_bytes())
        .unwrap()
        .mint_at("alice", now - 600, now - 60)
        .unwrap();
    for (authorization, reason) in [
        (None, "no Authorization header"),
        (
            Some(format!("Bearer {other_key}")),
            "signature does not match",
        ),
        (Some(format!("Bearer {expired}")), "expired"),
        (
            Some("Basic YWxpY2U6c2VjcmV0".to_owned()),
            "not `Bearer <token>`",
        ),
    ] {
        let mut request = http.post(format!("{}/orders", door.url)).json(&order);
        if let Some(value) = &authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert!(response.headers().contains_key("www-authenticate"));
        let (status, body) = problem(response).await;
        assert_eq!(status, 401, "{authorization:?}");
        assert!(
            body["detail"].as_str().unwrap().contains(reason),
            "{authorization:?}: {body}"
        );
    }

    // Alice's token: the order is hers, whatever the body claimed.
    let alice = unique("alice");
    let placed = http
        .post(format!("{}/orders", door.url))
        .bearer_auth(token(&alice))
        .header("idempotency-key", unique("key"))
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 202);
    assert!(placed.headers().contains_key("ratelimit"));
    let location = placed.headers()["location"].to_str().unwrap().to_owned();
    let stored: Value = http
        .get(format!("{}{location}", system.order_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stored["customer_id"],
        alice.as_str(),
        "from the token, not the body"
    );

    // Alice reads it; Bob gets exactly what a missing order gets.
    let mine = http
        .get(format!("{}{location}", door.url))
        .bearer_auth(token(&alice))
        .send()
        .await
        .unwrap();
    assert_eq!(mine.status(), 200);
    let theirs = http
        .get(format!("{}{location}", door.url))
        .bearer_auth(token(&unique("bob")))
        .send()
        .await
        .unwrap();
    let (status, _) = problem(theirs).await;
    assert_eq!(status, 404);

    // The menu is public; with a token it counts against the customer's limit, and a
    // token that does not verify is refused there too.
    let menu = http.get(format!("{}/menu", door.url)).send().await.unwrap();
    assert_eq!(menu.status(), 200);
    assert_eq!(menu.headers()["ratelimit-policy"], "\"ip\";q=100;w=2");
    let signed_in = http
        .get(format!("{}/menu", door.url))
        .bearer_auth(token(&alice))
        .send()
        .await
        .unwrap();
    assert_eq!(
        signed_in.headers()["ratelimit-policy"],
        "\"customer\";q=40;w=2"
    );
    let forged = http
        .get(format!("{}/menu", door.url))
        .bearer_auth(&other_key)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(forged).await.0, 401);

    door.close().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_limit_through_redis() {
    let system = order_api().await;
    let limits = ["--customer-rate", "0.5", "--customer-burst", "5"];
    let (a, b) = (
        Door::open(&system.order_url, &limits).await,
        Door::open(&system.order_url, &limits).await,
    );
    let http = reqwest::Client::new();
    let carol = token(&unique("carol"));
    let missing = format!("/orders/{}", uuid::Uuid::now_v7());
    let mut statuses = Vec::new();
    let mut refused = None;
    for i in 0..8 {
        let door = if i % 2 == 0 { &a } else { &b };
        let response = http
            .get(format!("{}{missing}", door.url))
            .bearer_auth(&carol)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 && refused.is_none() {
            refused = Some(response);
        }
    }
    // Five in all, not five per gateway: the buckets are one, in Redis.
    assert_eq!(statuses, [404, 404, 404, 404, 404, 429, 429, 429]);
    let refused = refused.unwrap();
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=2).contains(&retry_after),
        "one request every 2 s: {retry_after}"
    );
    assert_eq!(
        refused.headers()["ratelimit-policy"],
        "\"customer\";q=5;w=10"
    );
    assert!(
        refused.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"customer\";r=0;t="),
        "{:?}",
        refused.headers()["ratelimit"]
    );
    let (status, body) = problem(refused).await;
    assert_eq!(
        (
            status,
            body["type"].as_str().unwrap().ends_with("rate-limited")
        ),
        (429, true)
    );

    // Another customer has a bucket of their own.
    let dave = http
        .get(format!("{}{missing}", a.url))
        .bearer_auth(token(&unique("dave")))
        .send()
        .await
        .unwrap();
    assert_eq!(dave.status(), 404);

    let metrics = metrics(&http, &a).await;
    assert!(
        metrics.contains("gateway_requests_total{route=\"/orders/{id}\",outcome=\"rate_limited\"}"),
        "{metrics}"
    );
    a.close().await;
    b.close().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_gateway_fails_open_by_default_and_closed_when_told() {
    let system = order_api().await;
    let redis_url = std::env::var("REDIS_URL").unwrap_or("redis://127.0.0.1:6379".into());
    let redis: SocketAddr = redis_url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .expect("REDIS_URL as redis://HOST:PORT");
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], 0)), redis)
        .await
        .unwrap();
    let through_proxy = format!("redis://{}", proxy.addr());
    let open = Door::open(&system.order_url, &["--redis-url", &through_proxy]).await;
    let closed = Door::open(
        &system.order_url,
        &["--redis-url", &through_proxy, "--on-redis-error", "closed"],
    )
    .await;
    let http = reqwest::Client::new();
    let erin = token(&unique("erin"));
    let missing = format!("/orders/{}", uuid::Uuid::now_v7());
    let get = |door: &Door| {
        http.get(format!("{}{missing}", door.url))
            .bearer_auth(&erin)
            .send()
    };
    assert_eq!(
        get(&open).await.unwrap().status(),
        404,
        "Redis up: limited and forwarded"
    );

    proxy.faults().set_down(true);
    let response = get(&open).await.unwrap();
    assert_eq!(
        response.status(),
        404,
        "fails open: forwarded without a limit"
    );
    assert!(!response.headers().contains_key("ratelimit"));
    let response = get(&closed).await.unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, body) = problem(response).await;
    assert_eq!(status, 503, "fails closed: {body}");

    let metrics = metrics(&http, &open).await;
    assert!(
        metrics.contains("gateway_rate_limiter_failing 1"),
        "{metrics}"
    );

    // Redis back: limits (and their headers) again, without a restart.
    proxy.faults().set_down(false);
    let mut healed = false;
    for _ in 0..50 {
        let response = get(&open).await.unwrap();
        if response.headers().contains_key("ratelimit") {
            healed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healed, "the limiter reconnects to Redis by itself");
    open.close().await;
    closed.close().await;
    proxy.stop().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_orders_are_admitted_at_the_pace_the_pipeline_finishes_them_and_reads_are_still_served()
{
    // The order API alone: nothing moves an order on, so every order admitted stays
    // under way and nothing finishes — the pipeline's throughput is 0, and Little's
    // law leaves room for `--min-open-orders` orders, no more.
    let system = order_api().await;
    let door = Door::open(
        &system.order_url,
        &[
            "--min-open-orders",
            "3",
            "--admission-interval",
            "100ms",
            "--no-rate-limit",
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let frank_id = unique("frank");
    let frank = token(&frank_id);
    let order = json!({"items": [{"sku": "cola", "qty": 1}]});
    let post = || {
        http.post(format!("{}/orders", door.url))
            .bearer_auth(&frank)
            .json(&order)
            .send()
    };
    let mut locations = Vec::new();
    let mut shed = None;
    for _ in 0..10 {
        let response = post().await.unwrap();
        if response.status() == 503 {
            shed = Some(response);
            break;
        }
        assert_eq!(response.status(), 202);
        locations.push(response.headers()["location"].to_str().unwrap().to_owned());
        tokio::time::sleep(Duration::from_millis(150)).await; // a reading in between
    }
    assert_eq!(
        locations.len(),
        3,
        "three orders under way fill a pipeline that finishes none"
    );
    let shed = shed.expect("the fourth order is shed");
    assert_eq!(shed.headers()["retry-after"], "1");
    let (_, body) = problem(shed).await;
    assert_eq!(body["reason"], "pipeline", "{body}");

    // …while reads are served.
    let status = http
        .get(format!("{}{}", door.url, locations[0]))
        .bearer_auth(&frank)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    let menu = http.get(format!("{}/menu", door.url)).send().await.unwrap();
    assert_eq!(menu.status(), 200);
    let metrics_now = metrics(&http, &door).await;
    assert!(
        metrics_now.contains("gateway_admitting_orders 0"),
        "{metrics_now}"
    );

    // The pipeline finishes them (here the test stands in for the consumers this
    // system does not run): room again at the next reading, without a human.
    let updated = sqlx::query("UPDATE orders SET status = 'delivered' WHERE customer_id = $1")
        .bind(&frank_id)
        .execute(&system.orders_db)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 3);
    let mut admitted = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if post().await.unwrap().status() == 202 {
            admitted = true;
            break;
        }
    }
    assert!(admitted, "new orders admitted again once orders finished");
    let metrics = metrics(&http, &door).await;
    assert!(
        metrics.contains("gateway_shed_total{reason=\"pipeline\"}"),
        "{metrics}"
    );
    door.close().await;
    system.stop().await;
}

/// A second order API replica over the same databases and topics.
async fn replica(
    system: &TestSystem,
    addr: SocketAddr,
) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    let mut settings = system.settings.clone();
    settings.addr = addr;
    let service = phase2_events::services::order::OrderService::build(&settings)
        .await
        .unwrap();
    let addr = service.addr();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { service.run(stop).await.unwrap() }
    });
    (addr, stop, task)
}

/// Whether `/metrics` shows `line` within 3 s.
async fn shows_soon(http: &reqwest::Client, door: &Door, line: &str) -> bool {
    for _ in 0..30 {
        if metrics(http, door).await.lines().any(|l| l == line) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_is_taken_out_and_put_back_without_clients_noticing() {
    let system = order_api().await;
    let (b_addr, b_stop, b_task) = replica(&system, SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let b_url = format!("http://{b_addr}");
    let upstreams = format!("{},{b_url}", system.order_url);
    let door = Door::open(
        &upstreams,
        &["--health-interval", "100ms", "--no-rate-limit"],
    )
    .await;
    let http = reqwest::Client::new();
    let grace = token(&unique("grace"));
    let traffic = |n: usize| {
        let (http, url, grace) = (http.clone(), door.url.clone(), grace.clone());
        async move {
            let mut statuses = Vec::new();
            for i in 0..n {
                let response = if i % 2 == 0 {
                    http.get(format!("{url}/menu")).send().await.unwrap()
                } else {
                    http.post(format!("{url}/orders"))
                        .bearer_auth(&grace)
                        .json(&json!({"items": [{"sku": "cola", "qty": 1}]}))
                        .send()
                        .await
                        .unwrap()
                };
                statuses.push(response.status().as_u16());
            }
            statuses
        }
    };
    let up = |url: &str, value: u8| format!("gateway_upstream_up{{upstream=\"{url}\"}} {value}");
    assert!(traffic(10).await.iter().all(|s| (200..300).contains(s)));

    // B stops: clients see nothing but answers from A.
    b_stop.cancel();
    b_task.await.unwrap();
    let during = traffic(20).await;
    assert!(
        during.iter().all(|s| (200..300).contains(s)),
        "a refused connection goes to the other replica: {during:?}"
    );
    assert!(
        shows_soon(&http, &door, &up(&b_url, 0)).await,
        "the health check took B out of the rotation"
    );

    // B comes back on its address: back in the rotation, with nobody touching the gateway.
    let (_, b_stop, b_task) = replica(&system, b_addr).await;
    assert!(
        shows_soon(&http, &door, &up(&b_url, 1)).await,
        "B is back in the rotation"
    );
    assert!(traffic(10).await.iter().all(|s| (200..300).contains(s)));

    door.close().await;
    b_stop.cancel();
    b_task.await.unwrap();
    system.stop().await;
}
