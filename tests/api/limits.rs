use std::time::Duration;

use serde_json::json;
use socket_hub::client::Client;
use tokio_tungstenite::tungstenite::Error as WsError;

use crate::helpers::*;

/// Asserts a refusal with 503 and a `Retry-After` of whole seconds.
fn assert_refused(outcome: Result<Client, (u16, Option<String>)>) {
    match outcome {
        Ok(_) => panic!("expected 503, the upgrade succeeded"),
        Err((status, retry_after)) => {
            assert_eq!(status, 503);
            let secs: u64 = retry_after
                .as_deref()
                .expect("a Retry-After header")
                .parse()
                .expect("Retry-After in seconds");
            assert!(secs >= 1, "Retry-After {secs}");
        }
    }
}

/// Tries a WebSocket upgrade; `Err` holds the HTTP status and `Retry-After`.
async fn upgrade(app: &TestApp) -> Result<Client, (u16, Option<String>)> {
    match Client::connect(&app.ws_url).await {
        Ok(c) => Ok(c),
        Err(socket_hub::client::ClientError::Ws(WsError::Http(response))) => Err((
            response.status().as_u16(),
            response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().expect("ascii Retry-After").to_owned()),
        )),
        Err(e) => panic!("upgrade failed otherwise: {e}"),
    }
}

#[actix_web::test]
async fn an_upgrade_beyond_max_connections_gets_503_with_retry_after_until_one_closes() {
    let app = spawn_app_with(|s| s.limits.max_connections = 2).await;
    let (mut a, _) = app.identified(&[]).await;
    let b = app.connect().await;
    assert_refused(upgrade(&app).await);
    // The refused upgrade made no session.
    assert_eq!(app.status().await["connections"]["total"], 2);
    b.close().await.unwrap();
    let mut c = None;
    for _ in 0..100 {
        match upgrade(&app).await {
            Ok(client) => {
                c = Some(client);
                break;
            }
            Err((503, _)) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
    }
    let mut c = c.expect("a place frees up once a session closes");
    // Full again.
    assert_refused(upgrade(&app).await);
    for (client, id) in [(&mut a, "a"), (&mut c, "c")] {
        client.send_json(&json!({"op": 3, "id": id})).await.unwrap();
        assert_eq!(client.recv_frame().await.unwrap(), json!({"op": 4, "id": id}));
    }
}

#[actix_web::test]
async fn upgrades_faster_than_connect_rate_per_sec_get_503_with_retry_after() {
    let app = spawn_app_with(|s| s.limits.connect_rate_per_sec = 3).await;
    // Six upgrades at once: the bucket starts with 3 tokens and refills 3 a
    // second, so 3 get in (one or two more on a slow machine), the rest 503.
    let attempts = futures_util::future::join_all((0..6).map(|_| upgrade(&app))).await;
    let mut clients = Vec::new();
    let mut refused = 0;
    for attempt in attempts {
        match attempt {
            Ok(client) => clients.push(client),
            Err(_) => {
                assert_refused(attempt);
                refused += 1;
            }
        }
    }
    assert!((3..=5).contains(&clients.len()), "{} admitted", clients.len());
    assert_eq!(clients.len() + refused, 6);
    assert_eq!(app.status().await["connections"]["total"], clients.len());
    // The bucket refills: within a little over a second one more gets in.
    let mut admitted = None;
    for _ in 0..150 {
        match upgrade(&app).await {
            Ok(client) => {
                admitted = Some(client);
                break;
            }
            Err((503, _)) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
    }
    let mut d = admitted.expect("the connect rate refills");
    d.send_json(&json!({"op": 3, "id": "d"})).await.unwrap();
    assert_eq!(d.recv_frame().await.unwrap(), json!({"op": 4, "id": "d"}));
}

#[actix_web::test]
async fn a_plain_get_of_the_ws_path_is_400_with_a_json_error() {
    let app = spawn_app().await;
    let (status, body) = app.get("/ws", None).await;
    assert_eq!(status, 400, "{body}");
    let code = body["code"].as_str().expect("a code");
    assert!(
        !code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
        "{body}"
    );
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    // It made no session.
    assert_eq!(app.status().await["connections"]["total"], 0);
}
