//! Graceful drain on SIGTERM/SIGINT (PROTOCOL.md §12, last bullet).

use std::time::{Duration, Instant};

use serde_json::json;
use socket_hub::client::{Client, Received, WAIT};

use crate::helpers::*;
use crate::settings::{hub_command, serve};

/// Reads the `DISCONNECT` frame and the close frame that must follow it.
async fn assert_shutdown_disconnect(client: &mut Client) {
    assert_eq!(
        client.recv_frame().await.unwrap(),
        json!({"op": 2, "data": {"code": 1001, "reason": "shutdown"}})
    );
    assert_eq!(
        client.recv(WAIT).await.unwrap(),
        Received::Closed(Some((1001, "shutdown".to_owned())))
    );
}

#[actix_web::test]
async fn shutdown_turns_readyz_503_disconnects_every_session_with_1001_and_stops_the_server() {
    // Long enough that the checks on new connections below run while the
    // drain lasts, even on a loaded machine.
    let app = spawn_app_with(|s| s.shutdown.drain_ms = 1500).await;
    let (mut a, _) = app.identified(&["g"]).await;
    let (mut b, _) = app.identified(&[]).await;
    let mut unidentified = app.connect().await;
    // A PONG proves the unidentified session is up before the drain starts.
    unidentified.send_json(&json!({"op": 3, "id": "up"})).await.unwrap();
    assert_eq!(unidentified.recv_frame().await.unwrap(), json!({"op": 4, "id": "up"}));

    // One keep-alive HTTP connection, opened while serving.
    let http = awc::Client::new();
    let readyz = format!("{}/readyz", app.http_url);
    let first = tokio::time::timeout(WAIT, http.get(&readyz).send())
        .await
        .expect("answers in time")
        .expect("request succeeds");
    assert_eq!(first.status().as_u16(), 200);

    app.shutdown.trigger();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last = None;
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), http.get(&readyz).send()).await {
            Ok(Ok(resp)) => {
                last = Some(resp.status().as_u16());
                if last == Some(503) {
                    break;
                }
            }
            other => panic!("/readyz did not answer while draining: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(last, Some(503), "/readyz while draining");
    // A new connection is answered too, not left in the listen backlog: a
    // probe gets 503 and an upgrade 503 with Retry-After.
    let probe = app.send("GET", "/readyz", None).await;
    assert_eq!(probe.0, 503, "/readyz on a new connection while draining");
    let upgrade = Client::connect(&app.ws_url).await.err().map(|e| e.to_string());
    assert!(
        upgrade.as_deref().is_some_and(|e| e.contains("503")),
        "an upgrade while draining: {upgrade:?}"
    );

    for client in [&mut a, &mut b, &mut unidentified] {
        assert_shutdown_disconnect(client).await;
    }
    let stopped = tokio::time::timeout(Duration::from_secs(5), app.server)
        .await
        .expect("the server stops within 5 s");
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
}

#[actix_web::test]
async fn sigterm_disconnects_the_sessions_of_the_real_binary_with_1001_and_it_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = hub_command(dir.path());
    cmd.env("HUB__SHUTDOWN__DRAIN_MS", "300");
    let (mut hub, port) = serve(cmd).await;
    let mut client = Client::connect(&format!("ws://127.0.0.1:{port}/ws"))
        .await
        .expect("connects");
    let data = client.identify("demo-token", None).await.expect("identifies");
    assert_eq!(data["service"], "demo");

    // SAFETY: kill only sends a signal to our own child.
    assert_eq!(unsafe { libc::kill(hub.pid(), libc::SIGTERM) }, 0);
    assert_shutdown_disconnect(&mut client).await;
    let status = hub.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", hub.stderr());
}

#[actix_web::test]
async fn the_disconnects_are_spread_over_drain_ms() {
    const DRAIN_MS: u64 = 500;
    const SESSIONS: usize = 10;
    let app = spawn_app_with(|s| s.shutdown.drain_ms = DRAIN_MS).await;
    let mut clients = Vec::new();
    for _ in 0..SESSIONS {
        clients.push(app.identified(&[]).await.0);
    }
    let started = Instant::now();
    app.shutdown.trigger();
    let waiters: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            actix_web::rt::spawn(async move {
                let frame = client.recv_frame().await.unwrap();
                let at = Instant::now();
                assert_eq!(frame, json!({"op": 2, "data": {"code": 1001, "reason": "shutdown"}}));
                assert_eq!(client.recv_close(WAIT).await.unwrap(), (None, Some(1001)));
                at
            })
        })
        .collect();
    let mut arrivals = Vec::new();
    for waiter in waiters {
        arrivals.push(waiter.await.expect("every session gets DISCONNECT 1001"));
    }
    let first = *arrivals.iter().min().unwrap();
    let last = *arrivals.iter().max().unwrap();
    let spread = last - first;
    // Spread evenly, 10 sessions over 500 ms leave about 450 ms between the
    // first and the last; 200 ms leaves room for scheduling either way.
    assert!(
        spread >= Duration::from_millis(200),
        "{SESSIONS} DISCONNECTs over drain_ms = {DRAIN_MS} all came within {spread:?}"
    );
    assert!(
        last - started <= Duration::from_millis(DRAIN_MS + 1500),
        "the last DISCONNECT came {:?} after the trigger",
        last - started
    );
}
