use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;
use socket_hub::client::{Client, Received, WAIT};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

const INTERVAL_MS: u64 = 100;
const TIMEOUT_MS: u64 = 400;

async fn spawn_fast_heartbeats() -> TestApp {
    spawn_app_with(|s| {
        s.heartbeat.interval_ms = INTERVAL_MS;
        s.heartbeat.timeout_ms = TIMEOUT_MS;
    })
    .await
}

/// Reads frames until the `PONG` answering `id`, skipping the hub's `PING`s.
async fn recv_pong(c: &mut Client, id: &str) {
    loop {
        let f = c.recv_frame().await.unwrap();
        if f["op"] == 3 && f.get("source").is_none() {
            continue;
        }
        assert_eq!(f, json!({"op": 4, "id": id}));
        return;
    }
}

#[actix_web::test]
async fn the_hub_sends_pings_with_distinct_string_ids_every_interval() {
    // A long timeout: this test is about the PINGs, not about missing them.
    let app = spawn_app_with(|s| {
        s.heartbeat.interval_ms = INTERVAL_MS;
        s.heartbeat.timeout_ms = 10_000;
    })
    .await;
    let (mut c, _) = app.identified(&[]).await;
    c.auto_pong = false;
    let mut ids = Vec::new();
    let mut first_at = None;
    while ids.len() < 4 {
        let f = c.recv_frame().await.unwrap();
        let id = f["id"]
            .as_str()
            .unwrap_or_else(|| panic!("expected a PING with a string id, got {f}"))
            .to_owned();
        assert_eq!(f, json!({"op": 3, "id": id}));
        first_at.get_or_insert_with(Instant::now);
        // Answer by hand so that the session stays.
        c.send_json(&json!({"op": 4, "id": id})).await.unwrap();
        ids.push(id);
    }
    let spread = first_at.unwrap().elapsed();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 4, "{ids:?}");
    // Three intervals separate four pings: no faster than the interval.
    assert!(spread >= Duration::from_millis(3 * INTERVAL_MS - 50), "{spread:?}");
}

#[actix_web::test]
async fn pings_come_every_interval_also_when_the_timeout_is_under_four_intervals() {
    // The defaults (15000 / 45000) scaled down a hundred times.
    let app = spawn_app_with(|s| {
        s.heartbeat.interval_ms = 150;
        s.heartbeat.timeout_ms = 450;
    })
    .await;
    let (mut c, _) = app.identified(&[]).await;
    c.auto_pong = false;
    let mut arrivals = Vec::new();
    while arrivals.len() < 9 {
        let f = c.recv_frame().await.unwrap();
        assert_eq!(f["op"], 3, "expected a PING, got {f}");
        arrivals.push(Instant::now());
        c.send_json(&json!({"op": 4, "id": f["id"]})).await.unwrap();
    }
    let mut gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    // The median gap shrugs off a late PING or two; it is 150 ms, not a
    // multiple of some internal tick.
    let median = gaps[gaps.len() / 2];
    assert!(
        median >= Duration::from_millis(120) && median < Duration::from_millis(190),
        "median gap between PINGs {median:?} (all: {gaps:?})"
    );
}

#[actix_web::test]
async fn a_client_that_answers_pongs_stays_connected() {
    let app = spawn_fast_heartbeats().await;
    let (mut c, _) = app.identified(&[]).await;
    assert!(c.auto_pong);
    // `recv` answers every PING for a second, well past the timeout.
    assert_silent(&mut c, Duration::from_millis(1000)).await;
    c.send_json(&json!({"op": 3, "id": "still"})).await.unwrap();
    assert_eq!(c.recv_frame().await.unwrap(), json!({"op": 4, "id": "still"}));
    assert_eq!(app.status().await["connections"]["identified"], 1);
}

#[actix_web::test]
async fn a_client_that_never_answers_gets_disconnect_4006_after_the_timeout() {
    let app = spawn_fast_heartbeats().await;
    let mut c = app.connect().await;
    // The identify is the session's last sign of life.
    let since = Instant::now();
    c.identify(ANY_TOKEN, None).await.unwrap();
    c.auto_pong = false;
    // Made last, so that it starts answering at once.
    let (mut alive, _) = app.identified(&[]).await;
    let silent = async {
        let mut pings = 0;
        let outcome = loop {
            match c.recv(WAIT).await.unwrap() {
                Received::Frame(f) if f["op"] == 3 => pings += 1,
                Received::Frame(f) if f["op"] == 2 => {
                    assert_eq!(f["data"], json!({"code": 4006, "reason": "heartbeat_timeout"}));
                    break (Some(4006), c.recv_close(WAIT).await.unwrap().1);
                }
                Received::Closed(close) => break (None, close.map(|(code, _)| code)),
                other => panic!("unexpected {other:?}"),
            }
        };
        (outcome, pings, since.elapsed())
    };
    // Meanwhile a session that answers its PINGs is not affected.
    let answering = assert_silent(&mut alive, Duration::from_millis(3 * TIMEOUT_MS));
    let (((disconnect, close), pings, elapsed), ()) = tokio::join!(silent, answering);
    assert_eq!((disconnect, close), (Some(4006), Some(4006)));
    assert!(
        elapsed >= Duration::from_millis(TIMEOUT_MS),
        "closed early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(TIMEOUT_MS + 2500),
        "closed late: {elapsed:?}"
    );
    assert!(pings >= 2, "only {pings} pings before the timeout");
    alive.send_json(&json!({"op": 3, "id": "alive"})).await.unwrap();
    assert_eq!(alive.recv_frame().await.unwrap(), json!({"op": 4, "id": "alive"}));
}

#[actix_web::test]
async fn any_client_frame_counts_as_alive() {
    let app = spawn_fast_heartbeats().await;
    let (mut c, _) = app.identified(&[]).await;
    c.auto_pong = false;
    // Its own PINGs instead of PONGs, for well past the timeout.
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_millis(3 * TIMEOUT_MS) {
        let id = format!("mine-{n}");
        c.send_json(&json!({"op": 3, "id": id})).await.unwrap();
        recv_pong(&mut c, &id).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(INTERVAL_MS)).await;
    }
    assert!(n >= 5, "{n}");
    assert_eq!(app.status().await["connections"]["identified"], 1);
}

#[actix_web::test]
async fn a_websocket_pong_counts_as_alive() {
    let app = spawn_fast_heartbeats().await;
    let (mut c, _) = app.identified(&[]).await;
    c.auto_pong = false;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3 * TIMEOUT_MS) {
        c.send_raw(Message::Pong(b"beat".to_vec().into())).await.unwrap();
        // Drain the hub's PINGs (unanswered) while waiting for the next beat.
        match c.recv(Duration::from_millis(INTERVAL_MS)).await {
            Ok(Received::Frame(f)) => assert_eq!(f["op"], 3, "{f}"),
            Err(socket_hub::client::ClientError::Timeout(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    c.send_json(&json!({"op": 3, "id": "still"})).await.unwrap();
    recv_pong(&mut c, "still").await;
}

#[actix_web::test]
async fn a_client_ping_gets_a_pong_with_the_same_id_and_data() {
    let app = spawn_app().await;
    let (mut c, _) = app.identified(&[]).await;
    let data = json!({"t": 1234, "nested": [1, 2.5, "x", null, {"k": true}]});
    c.send_json(&json!({"op": 3, "id": "rtt-1", "data": data}))
        .await
        .unwrap();
    assert_eq!(
        c.recv_frame().await.unwrap(),
        json!({"op": 4, "id": "rtt-1", "data": data})
    );
    c.send_json(&json!({"op": 3, "id": "bare"})).await.unwrap();
    assert_eq!(c.recv_frame().await.unwrap(), json!({"op": 4, "id": "bare"}));
    // The data is returned verbatim, beyond what f64 can hold.
    c.send_text(r#"{"op": 3, "id": "big", "data": {"n": 123456789012345678901234567890, "d": 0.1000000000000000055511151231257827}}"#)
        .await
        .unwrap();
    let text = c.recv_text(WAIT).await.unwrap();
    assert!(
        text.contains("123456789012345678901234567890") && text.contains("0.1000000000000000055511151231257827"),
        "{text}"
    );
    let pong: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!((pong["op"].as_u64(), pong["id"].as_str()), (Some(4), Some("big")));
}
