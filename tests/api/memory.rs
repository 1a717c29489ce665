//! What an identified session costs the hub, idle and after many small
//! frames (one at a time, and in bursts), and the HTTP/1 dispatcher's small
//! starting buffers (vendor/README.md) growing for whatever a connection
//! carries: a large upgrade request, frames of every size around the
//! buffers' edges, and request heads up to actix-http's 128 KiB limit.

use std::time::Duration;

use serde_json::{json, Value};
use socket_hub::client::{Client, WAIT};
use tokio::task::JoinSet;

use crate::helpers::*;
use crate::process::*;

/// Sessions held for the memory check, where the open-file limit allows
/// (the test holds one descriptor per session, the hub another)...
const SESSIONS: usize = 1_500;
/// ... and where it is under 4,096 (a hard limit of 1,024 is common).
const SESSIONS_LOW_LIMIT: usize = 500;
/// Small `PING`s each session sends after the idle check, one at a time,
/// then again in bursts of `BURST`.
const PINGS: usize = 100;
const BURST: usize = 20;
/// Sessions opened at once.
const CONCURRENCY: usize = 16;
/// The most hub RSS one identified session may cost, idle or after small
/// frames (the issue's target for idle sessions: 13 KiB; about 9.5 idle
/// with the patched dispatcher, 14.6 without it).
const KIB_PER_SESSION: f64 = 13.0;

/// Opens `n` identified sessions, `CONCURRENCY` at a time.
async fn open_identified(url: &str, n: usize) -> Vec<Client> {
    let mut clients = Vec::with_capacity(n);
    let mut opening = JoinSet::new();
    for i in 0..n {
        if opening.len() == CONCURRENCY {
            clients.push(opening.join_next().await.expect("a task").expect("task ends"));
        }
        let url = url.to_owned();
        opening.spawn(async move {
            let mut client = Client::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("session {i} connects: {e}"));
            client
                .identify(TOKEN, Some(&[]))
                .await
                .unwrap_or_else(|e| panic!("session {i} identifies: {e}"));
            client
        });
    }
    while let Some(client) = opening.join_next().await {
        clients.push(client.expect("task ends"));
    }
    clients
}

/// Has every client send `PINGS` small `PING`s (about 70 bytes each on the
/// wire) in bursts of `burst`, each burst written at once and its `PONG`s
/// read before the next: many small reads (`burst` 1), or reads of about
/// 1.4 KiB (`burst` 20), through the session's read buffer.
async fn ping_each(clients: Vec<Client>, burst: usize) -> Vec<Client> {
    let mut done = Vec::with_capacity(clients.len());
    let mut pinging = JoinSet::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        if pinging.len() == CONCURRENCY {
            done.push(pinging.join_next().await.expect("a task").expect("task ends"));
        }
        pinging.spawn(async move {
            for first in (0..PINGS).step_by(burst) {
                let ids: Vec<String> = (first..(first + burst).min(PINGS))
                    .map(|n| format!("{i}-{n}-{}", "p".repeat(40)))
                    .collect();
                let frames: Vec<String> = ids.iter().map(|id| json!({"op": 3, "id": id}).to_string()).collect();
                client
                    .send_texts(frames)
                    .await
                    .unwrap_or_else(|e| panic!("session {i} sends PINGs from {first}: {e}"));
                for id in ids {
                    let pong = client
                        .recv_frame()
                        .await
                        .unwrap_or_else(|e| panic!("session {i} gets the PONG to {id}: {e}"));
                    assert_eq!(pong, json!({"op": 4, "id": id}), "session {i}");
                }
            }
            client
        });
    }
    while let Some(client) = pinging.join_next().await {
        done.push(client.expect("task ends"));
    }
    done
}

/// RSS per session of `sessions` since `before`, printed, and checked
/// against the bound.
fn assert_per_session(hub: &HubProcess, before: u64, sessions: usize, what: &str) {
    let after = proc_kib(hub.pid(), "VmRSS");
    let per_session = after.saturating_sub(before) as f64 / sessions as f64;
    println!("{sessions} {what}: hub RSS {before} -> {after} KiB, {per_session:.2} KiB each");
    assert!(
        per_session <= KIB_PER_SESSION,
        "{what}: {per_session:.2} KiB of hub RSS each (RSS {before} -> {after} KiB for {sessions})"
    );
}

#[actix_web::test]
async fn an_identified_session_costs_the_hub_under_13_kib_of_rss_idle_and_after_small_frames_and_bursts() {
    // The harness sets a 60 s heartbeat, so the sessions do only what the
    // test has them do; connect rate limit raised for 1,500.
    let sessions = if socket_hub::bench::hub::raise_nofile(8192) >= 4096 {
        SESSIONS
    } else {
        SESSIONS_LOW_LIMIT
    };
    let mut hub = HubProcess::start(&[("RUST_LOG", "warn"), ("HUB__LIMITS__CONNECT_RATE_PER_SEC", "100000")]);
    hub.ready().await;
    let url = hub.ws_url();

    // The first sessions warm up the runtime and the allocator's caches.
    let warm = open_identified(&url, 2 * CONCURRENCY).await;
    let before = proc_kib(hub.pid(), "VmRSS");
    let clients = tokio::time::timeout(Duration::from_secs(120), open_identified(&url, sessions))
        .await
        .expect("every session opens within 120 s");
    let status = hub.status().await;
    assert_eq!(
        status["connections"]["identified"],
        json!(sessions + warm.len()),
        "{status}"
    );
    assert_per_session(&hub, before, sessions, "idle identified sessions");

    // About 7 KiB of small frames each way per session, one at a time, then
    // in bursts: a buffer that grew for them, or kept moving on through its
    // pages, would show here.
    let clients = tokio::time::timeout(Duration::from_secs(120), ping_each(clients, 1))
        .await
        .expect("every PING is answered within 120 s");
    assert_per_session(&hub, before, sessions, &format!("sessions after {PINGS} PINGs each"));
    let clients = tokio::time::timeout(Duration::from_secs(120), ping_each(clients, BURST))
        .await
        .expect("every PING is answered within 120 s");
    assert_per_session(
        &hub,
        before,
        sessions,
        &format!("sessions after {PINGS} more PINGs each, in bursts of {BURST}"),
    );
    drop(clients);
    drop(warm);
}

/// The data of `bytes` bytes exactly: a JSON string.
fn data_of(bytes: usize) -> Value {
    Value::String("x".repeat(bytes - 2))
}

#[actix_web::test]
async fn an_upgrade_request_larger_than_the_first_read_buffer_still_opens_a_session() {
    let app = spawn_app().await;
    // 6 KiB of headers: more than the 2 KiB a connection starts with.
    let cookie = format!("session={}", "c".repeat(6 * 1024));
    let mut client = Client::connect_with_headers(&app.ws_url, &[("Cookie", cookie.as_str())])
        .await
        .expect("the upgrade succeeds");
    let welcome = client.identify(ANY_TOKEN, Some(&["big"])).await.expect("identifies");
    assert_eq!(welcome["groups"], json!(["big"]), "{welcome}");
    client.send_text(r#"{"op":3,"id":"p"}"#).await.expect("sends PING");
    let pong = client.recv_frame().await.expect("PONG");
    assert_eq!(pong, json!({"op": 4, "id": "p"}));
}

#[actix_web::test]
async fn frames_of_every_size_around_the_buffers_edges_arrive_whole_and_in_order() {
    let app = spawn_app().await;
    let (mut sender, _) = app.identified(&["edges"]).await;
    let (mut receiver, _) = app.identified(&["edges"]).await;

    // Around 1 KiB (the write buffer's start and the read's top-up mark), 2 KiB
    // (the read buffer's start) and 8 KiB (its growth step), then larger.
    let sizes: Vec<usize> = [
        2, 100, 900, 1000, 1024, 1100, 2000, 2048, 2100, 4096, 8000, 8192, 8300, 20_000, 60_000, 3,
    ]
    .into_iter()
    .flat_map(|n| [n, n + 1])
    .collect();
    for (i, &size) in sizes.iter().enumerate() {
        let frame = json!({
            "op": 0, "id": i.to_string(), "event": "EDGE",
            "intent": {"target": "GROUP", "identifier": "edges"},
            "data": data_of(size),
        });
        sender.send_json(&frame).await.expect("sends");
    }
    for (i, &size) in sizes.iter().enumerate() {
        let got = receiver.recv_frame_within(WAIT).await.expect("receives");
        assert_eq!(got["id"], i.to_string(), "frame {i} of {size} bytes of data, in order");
        assert_eq!(got["data"], data_of(size), "frame {i}: {size} bytes of data, whole");
    }
}

/// Sends `head` in one write on a fresh connection and returns the status
/// line of the answer.
async fn status_line_for(port: u16, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects");
    tcp.write_all(head.as_bytes()).await.expect("writes the request");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .expect("an answer within WAIT")
            .expect("reads");
        assert!(
            n > 0,
            "connection closed without an answer: {:?}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    text.split("\r\n").next().unwrap_or_default().to_owned()
}

#[actix_web::test]
async fn request_heads_up_to_the_http_layers_limit_are_read_and_larger_ones_get_431() {
    let app = spawn_app().await;
    // actix-http reads at most 128 KiB of a request head.
    let head = |header_bytes: usize| {
        format!(
            "GET /healthz HTTP/1.1\r\nHost: hub\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "b".repeat(header_bytes)
        )
    };
    for kib in [3, 100, 127] {
        assert_eq!(
            status_line_for(app.port, &head(kib * 1024)).await,
            "HTTP/1.1 200 OK",
            "a {kib} KiB header"
        );
    }
    for kib in [129, 140, 160, 200] {
        assert_eq!(
            status_line_for(app.port, &head(kib * 1024)).await,
            "HTTP/1.1 431 Request Header Fields Too Large",
            "a {kib} KiB header"
        );
    }
}
