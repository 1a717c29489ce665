use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use socket_hub::client::{Client, Received, WAIT};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

use crate::helpers::*;

/// A session that does nothing wrong, watching group `watch`.
async fn witness(app: &TestApp) -> Client {
    app.identified(&["watch"]).await.0
}

/// A fresh session sends a `GROUP` frame to `watch`; the witness gets it as
/// the very next thing, so nothing the bad client did leaked to it.
async fn assert_witness_still_served(app: &TestApp, witness: &mut Client) {
    let (mut probe, probe_id) = app.identified(&[]).await;
    probe
        .send_json(
            &json!({"op": 0, "id": "probe", "event": "PROBE", "intent": {"target": "GROUP", "identifier": "watch"}}),
        )
        .await
        .unwrap();
    let f = witness.recv_frame().await.unwrap();
    assert_eq!(
        (
            f["op"].as_u64(),
            f["id"].as_str(),
            f["event"].as_str(),
            f["source"]["session"].as_str()
        ),
        (Some(0), Some("probe"), Some("PROBE"), Some(probe_id.as_str())),
        "{f}"
    );
}

/// The connection still answers: a `PING` gets its `PONG`.
async fn assert_still_open(c: &mut Client, id: &str) {
    c.send_json(&json!({"op": 3, "id": id})).await.unwrap();
    assert_eq!(c.recv_frame().await.unwrap(), json!({"op": 4, "id": id}));
}

/// An `ERROR` that carries no id (the frame had no readable one).
fn assert_error_without_id(frame: &Value, code: &str) {
    assert_error(frame, code, None);
    assert!(frame["id"].is_null(), "{frame}");
}

#[actix_web::test]
async fn malformed_json_is_invalid_frame_and_the_connection_stays() {
    let app = spawn_app().await;
    let mut w = witness(&app).await;
    let (mut c, _) = app.identified(&[]).await;
    for text in ["{not json", "{\"op\": 3, \"id\": \"x\"", ""] {
        c.send_text(text).await.unwrap();
        assert_error_without_id(&c.recv_frame().await.unwrap(), "invalid_frame");
    }
    assert_still_open(&mut c, "after").await;
    assert_witness_still_served(&app, &mut w).await;
}

#[actix_web::test]
async fn a_frame_that_is_not_an_object_is_invalid_frame() {
    let app = spawn_app().await;
    let mut w = witness(&app).await;
    let (mut c, _) = app.identified(&[]).await;
    // serde would read a struct from an array, field by field in order: a
    // positional EVENT, PING and DISCONNECT must not be taken as frames.
    for text in [
        r#"[{"op": 3, "id": "a"}]"#,
        r#"[0, "arr1", "HELLO", {"k": 1}]"#,
        r#"[3, "p9", null, {"x": 1}]"#,
        r#" [2]"#,
        r#"["id-only"]"#,
        r#""op""#,
        "42",
        "null",
        "true",
    ] {
        c.send_text(text).await.unwrap();
        assert_error_without_id(&c.recv_frame().await.unwrap(), "invalid_frame");
    }
    assert_still_open(&mut c, "after").await;
    assert_witness_still_served(&app, &mut w).await;
}

#[actix_web::test]
async fn fields_of_the_wrong_type_are_invalid_frame_with_the_id_when_it_is_readable() {
    let app = spawn_app().await;
    let mut w = witness(&app).await;
    let (mut c, _) = app.identified(&[]).await;
    // An id that is not a string cannot be echoed.
    c.send_json(&json!({"op": 0, "id": 7, "event": "E"})).await.unwrap();
    assert_error_without_id(&c.recv_frame().await.unwrap(), "invalid_frame");
    for (id, frame) in [
        ("ev", json!({"op": 0, "id": "ev", "event": 5})),
        ("in", json!({"op": 0, "id": "in", "event": "E", "intent": "GROUP"})),
        (
            "in2",
            json!({"op": 0, "id": "in2", "event": "E", "intent": ["GROUP", "watch"]}),
        ),
        ("op", json!({"op": "0", "id": "op", "event": "E"})),
        ("noop", json!({"id": "noop", "event": "E"})),
    ] {
        c.send_json(&frame).await.unwrap();
        assert_error(&c.recv_frame().await.unwrap(), "invalid_frame", Some(id));
    }
    assert_still_open(&mut c, "after").await;
    assert_witness_still_served(&app, &mut w).await;
}

#[actix_web::test]
async fn unknown_ops_are_unknown_op_with_the_frame_id() {
    let app = spawn_app().await;
    let mut w = witness(&app).await;
    let (mut c, _) = app.identified(&[]).await;
    for (id, op) in [("seven", json!(7)), ("minus", json!(-1)), ("six", json!(6))] {
        c.send_json(&json!({"op": op, "id": id, "event": "E"})).await.unwrap();
        assert_error(&c.recv_frame().await.unwrap(), "unknown_op", Some(id));
    }
    assert_still_open(&mut c, "after").await;
    assert_witness_still_served(&app, &mut w).await;
}

#[actix_web::test]
async fn a_binary_message_is_unsupported_frame_and_the_connection_stays() {
    let app = spawn_app().await;
    let mut w = witness(&app).await;
    let (mut c, _) = app.identified(&[]).await;
    c.send_raw(Message::binary(br#"{"op": 3, "id": "bin"}"#.to_vec()))
        .await
        .unwrap();
    assert_error_without_id(&c.recv_frame().await.unwrap(), "unsupported_frame");
    assert_still_open(&mut c, "after").await;
    assert_witness_still_served(&app, &mut w).await;
}

/// A `PING` text of exactly `len` bytes.
fn ping_of_len(id: &str, len: usize) -> String {
    let bare = format!(r#"{{"op":3,"id":"{id}","data":""}}"#);
    let text = format!(r#"{{"op":3,"id":"{id}","data":"{}"}}"#, "x".repeat(len - bare.len()));
    assert_eq!(text.len(), len);
    text
}

#[actix_web::test]
async fn a_message_over_max_frame_bytes_gets_disconnect_1009_then_close_1009() {
    let app = spawn_app_with(|s| s.limits.max_frame_bytes = 1024).await;
    let mut w = witness(&app).await;
    let (mut c, _) = app.identified(&[]).await;
    // Exactly the limit is fine; one byte more is not.
    c.send_text(ping_of_len("fits", 1024)).await.unwrap();
    assert_eq!(c.recv_frame().await.unwrap()["id"], "fits");
    c.send_text(ping_of_len("big", 1025)).await.unwrap();
    assert_eq!(c.recv_close(WAIT).await.unwrap(), (Some(1009), Some(1009)));
    assert_witness_still_served(&app, &mut w).await;
}

/// Sends one fragment of a text message: the first one or a continuation,
/// final or not. `Err` when the socket is gone.
async fn send_fragment(
    c: &mut Client,
    part: &str,
    first: bool,
    fin: bool,
) -> Result<(), socket_hub::client::ClientError> {
    let opcode = OpCode::Data(if first { Data::Text } else { Data::Continue });
    c.send_raw(Message::Frame(Frame::message(part.as_bytes().to_vec(), opcode, fin)))
        .await
}

#[actix_web::test]
async fn a_websocket_protocol_error_gets_disconnect_1002_then_close_1002() {
    let app = spawn_app().await;
    let mut w = witness(&app).await;
    let (mut c, _) = app.identified(&[]).await;
    // A continuation frame with no message to continue.
    send_fragment(&mut c, "{}", false, true).await.unwrap();
    assert_eq!(c.recv_close(WAIT).await.unwrap(), (Some(1002), Some(1002)));
    app.wait_connections("identified", 1).await;
    let metrics = app.metrics().await;
    let series = "socket_hub_disconnects_total{code=\"1002\",reason=\"protocol_error\"} 1\n";
    assert!(metrics.contains(series), "{metrics}");
    assert_witness_still_served(&app, &mut w).await;
}

#[actix_web::test]
async fn a_frame_with_a_reserved_bit_set_gets_disconnect_1002_then_close_1002() {
    // RFC 6455 §5.2: RSV1-3 must be 0 unless an extension is negotiated, and
    // the hub negotiates none.
    let app = spawn_app().await;
    let (mut c, _) = app.identified(&[]).await;
    let mut frame = Frame::message(br#"{"op":3,"id":"p"}"#.to_vec(), OpCode::Data(Data::Text), true);
    frame.header_mut().rsv1 = true;
    c.send_raw(Message::Frame(frame)).await.unwrap();
    assert_eq!(c.recv_close(WAIT).await.unwrap(), (Some(1002), Some(1002)));
    app.wait_connections("identified", 0).await;
    let metrics = app.metrics().await;
    let series = "socket_hub_disconnects_total{code=\"1002\",reason=\"protocol_error\"} 1\n";
    assert!(metrics.contains(series), "{metrics}");
}

#[actix_web::test]
async fn a_connection_that_ends_without_a_close_frame_is_counted_as_1006_and_one_that_sent_it_as_1000() {
    let app = spawn_app().await;
    let (dropped, _) = app.identified(&[]).await;
    let (mut closed, _) = app.identified(&[]).await;
    let (hasty, _) = app.identified(&[]).await;
    app.wait_connections("identified", 3).await;
    drop(dropped);
    // A close frame, then the socket closed at once without waiting for the
    // answer: still a close by the client, not a lost connection. Corked, so
    // that the frame and the end of the stream arrive in one segment and
    // the hub reads both in one go.
    let mut hasty = hasty.into_inner();
    #[cfg(target_os = "linux")]
    if let MaybeTlsStream::Plain(tcp) = hasty.get_ref() {
        socket2::SockRef::from(tcp).set_cork(true).unwrap();
    }
    hasty
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await
        .unwrap();
    drop(hasty);
    let normal = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    closed.send_raw(Message::Close(Some(normal))).await.unwrap();
    assert_eq!(closed.recv_close(WAIT).await.unwrap(), (None, Some(1000)));
    app.wait_connections("total", 0).await;
    let metrics = app.metrics().await;
    for series in [
        "socket_hub_disconnects_total{code=\"1006\",reason=\"connection_lost\"} 1\n",
        "socket_hub_disconnects_total{code=\"1000\",reason=\"normal\"} 2\n",
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
}

/// A text message sent as `parts` WebSocket fragments.
async fn send_fragmented(c: &mut Client, parts: &[&str]) {
    let last = parts.len() - 1;
    for (i, part) in parts.iter().enumerate() {
        send_fragment(c, part, i == 0, i == last).await.unwrap();
    }
}

#[actix_web::test]
async fn a_fragmented_message_within_the_limit_is_handled_as_one_frame() {
    let app = spawn_app_with(|s| s.limits.max_frame_bytes = 1024).await;
    let mut w = witness(&app).await;
    let (mut c, _) = app.identified(&[]).await;
    send_fragmented(
        &mut c,
        &[r#"{"op": 3, "id": "fr"#, r#"ag", "data": {"n""#, r#": [1, 2]}}"#],
    )
    .await;
    assert_eq!(
        c.recv_frame().await.unwrap(),
        json!({"op": 4, "id": "frag", "data": {"n": [1, 2]}})
    );
    // Fragments that add up to exactly the limit are still one frame, also
    // with a WebSocket Ping between them; the EVENT put together from them
    // is routed whole.
    let bare = json!({"op": 0, "id": "pieces", "event": "E", "data": "", "intent": {"target": "GROUP", "identifier": "watch"}})
        .to_string();
    let body = "y".repeat(1024 - bare.len());
    let text = json!({"op": 0, "id": "pieces", "event": "E", "data": body, "intent": {"target": "GROUP", "identifier": "watch"}})
        .to_string();
    assert_eq!(text.len(), 1024);
    let (a, rest) = text.split_at(400);
    let (b, rest) = rest.split_at(400);
    send_fragment(&mut c, a, true, false).await.unwrap();
    c.send_raw(Message::Ping(b"between".to_vec().into())).await.unwrap();
    send_fragment(&mut c, b, false, false).await.unwrap();
    send_fragment(&mut c, rest, false, true).await.unwrap();
    let f = w.recv_frame().await.unwrap();
    assert_eq!(
        (f["id"].as_str(), f["data"].as_str()),
        (Some("pieces"), Some(body.as_str()))
    );
    assert_still_open(&mut c, "after").await;
    assert_witness_still_served(&app, &mut w).await;
}

#[actix_web::test]
async fn a_fragmented_message_over_the_limit_gets_disconnect_1009_then_close_1009() {
    let app = spawn_app_with(|s| s.limits.max_frame_bytes = 1024).await;
    let mut w = witness(&app).await;
    let (mut c, _) = app.identified(&[]).await;
    // Each fragment is under the limit; together they are one byte over.
    let text = ping_of_len("big", 1025);
    let (first, rest) = text.split_at(600);
    let (second, last) = rest.split_at(425);
    // The hub must not wait for the final fragment to refuse the message.
    send_fragment(&mut c, first, true, false).await.unwrap();
    send_fragment(&mut c, second, false, false).await.unwrap();
    // The final fragment may or may not reach a socket the hub is closing.
    let _ = send_fragment(&mut c, last, false, true).await;
    assert_eq!(c.recv_close(WAIT).await.unwrap(), (Some(1009), Some(1009)));
    assert_witness_still_served(&app, &mut w).await;
}

/// `rate_burst` in [`rate_limited_app`].
const BURST: usize = 5;

/// A hub allowing 10 frames a second with bursts of [`BURST`], a witness,
/// and a fresh session to flood it.
async fn rate_limited_app() -> (TestApp, Client, Client) {
    let app = spawn_app_with(|s| {
        s.limits.rate_per_sec = 10;
        s.limits.rate_burst = BURST as u32;
    })
    .await;
    let w = witness(&app).await;
    let c = app.connect().await;
    (app, w, c)
}

#[actix_web::test]
async fn a_flood_gets_rate_limited_errors_then_disconnect_4008() {
    let (app, mut w, mut c) = rate_limited_app().await;
    // The bucket starts full: 5 frames pass, then a flood.
    let sent = 30;
    for i in 0..sent {
        if c.send_json(&json!({"op": 3, "id": format!("p{i}")})).await.is_err() {
            break; // the hub may already have closed
        }
    }
    let mut pongs = Vec::new();
    let mut limited = Vec::new();
    // Index of each answered frame, in the order the answers came.
    let mut answered = Vec::new();
    let mut disconnect = None;
    let close = loop {
        match c.recv(WAIT).await.unwrap() {
            Received::Frame(f) if f["op"] == 4 => {
                let id = f["id"].as_str().unwrap().to_owned();
                answered.push(id[1..].parse::<usize>().unwrap());
                pongs.push(id);
            }
            Received::Frame(f) if f["event"] == "ERROR" => {
                assert_error(&f, "rate_limited", None);
                let id = f["id"].as_str().expect("rate_limited carries the frame id").to_owned();
                answered.push(id[1..].parse::<usize>().unwrap());
                limited.push(id);
            }
            Received::Frame(f) if f["op"] == 2 => disconnect = Some(f["data"].clone()),
            Received::Frame(f) => panic!("unexpected {f}"),
            Received::Closed(close) => break close.map(|(code, _)| code),
            Received::Binary(b) => panic!("unexpected binary {b:?}"),
        }
    };
    assert_eq!(disconnect, Some(json!({"code": 4008, "reason": "rate_limited"})));
    assert_eq!(close, Some(4008));
    // The burst passes, then frames are dropped with their id, each answered
    // once and in order, until more than `rate_burst` drops close it (a token
    // may refill meanwhile, letting one more through).
    assert_eq!(pongs[..BURST], ["p0", "p1", "p2", "p3", "p4"]);
    assert!(pongs.len() <= BURST + 2, "pongs {pongs:?}");
    assert!((BURST..=BURST + 1).contains(&limited.len()), "limited {limited:?}");
    assert_eq!(answered, (0..answered.len()).collect::<Vec<_>>());
    assert!(answered.len() < sent, "closed before the flood ended: {answered:?}");
    assert_witness_still_served(&app, &mut w).await;
}

#[actix_web::test]
async fn text_messages_that_are_not_utf8_count_against_the_rate_limit() {
    let (app, mut w, mut c) = rate_limited_app().await;
    for _ in 0..30 {
        let bad = Frame::message(b"{\"op\": 3, \"\xff\"}".to_vec(), OpCode::Data(Data::Text), true);
        if c.send_raw(Message::Frame(bad)).await.is_err() {
            break; // the hub may already have closed
        }
    }
    let mut codes = Vec::new();
    let mut disconnect = None;
    let close = loop {
        match c.recv(WAIT).await.unwrap() {
            Received::Frame(f) if f["event"] == "ERROR" => codes.push(f["data"]["code"].as_str().unwrap().to_owned()),
            Received::Frame(f) if f["op"] == 2 => disconnect = Some(f["data"].clone()),
            Received::Frame(f) => panic!("unexpected {f}"),
            Received::Closed(close) => break close.map(|(code, _)| code),
            Received::Binary(b) => panic!("unexpected binary {b:?}"),
        }
    };
    // The burst is answered `invalid_frame`, then frames are dropped as
    // `rate_limited` until more than `rate_burst` drops close the session
    // (a token may refill meanwhile, letting one more through).
    let invalid = codes.iter().take_while(|c| *c == "invalid_frame").count();
    assert!((BURST..=BURST + 1).contains(&invalid), "{codes:?}");
    assert!(codes[invalid..].iter().all(|c| c == "rate_limited"), "{codes:?}");
    assert_eq!(disconnect, Some(json!({"code": 4008, "reason": "rate_limited"})));
    assert_eq!(close, Some(4008));
    assert_witness_still_served(&app, &mut w).await;
}

#[actix_web::test]
async fn websocket_pings_count_against_the_rate_limit() {
    let (app, mut w, mut c) = rate_limited_app().await;
    for _ in 0..30 {
        if c.send_raw(Message::Ping(b"flood".to_vec().into())).await.is_err() {
            break; // the hub may already have closed
        }
    }
    let mut limited = 0;
    let mut disconnect = None;
    let close = loop {
        match c.recv(WAIT).await.unwrap() {
            Received::Frame(f) if f["event"] == "ERROR" => {
                assert_error(&f, "rate_limited", None);
                limited += 1;
            }
            Received::Frame(f) if f["op"] == 2 => disconnect = Some(f["data"].clone()),
            Received::Frame(f) => panic!("unexpected {f}"),
            Received::Closed(close) => break close.map(|(code, _)| code),
            Received::Binary(b) => panic!("unexpected binary {b:?}"),
        }
    };
    // The burst is answered with Pongs (which the client reads past), then
    // Pings are dropped as `rate_limited` until more than `rate_burst`
    // drops close the session.
    assert!((BURST..=BURST + 1).contains(&limited), "{limited}");
    assert_eq!(disconnect, Some(json!({"code": 4008, "reason": "rate_limited"})));
    assert_eq!(close, Some(4008));
    assert_witness_still_served(&app, &mut w).await;
}

#[actix_web::test]
async fn a_websocket_ping_gets_a_pong() {
    let app = spawn_app().await;
    let (c, _) = app.identified(&[]).await;
    let mut ws = c.into_inner();
    ws.send(Message::Ping(b"are you there".to_vec().into())).await.unwrap();
    let answer = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Pong(payload))) => return payload.to_vec(),
                Some(Ok(Message::Text(_))) => continue,
                other => panic!("expected a pong, got {other:?}"),
            }
        }
    })
    .await
    .expect("a pong in time");
    assert_eq!(answer, b"are you there");
}

#[actix_web::test]
async fn a_websocket_close_is_answered_and_the_session_leaves_status_at_once() {
    let app = spawn_app().await;
    let mut w = witness(&app).await;
    let (c, _) = app.identified(&["leaving"]).await;
    let status = app.status().await;
    assert_eq!(
        (
            status["connections"]["total"].as_u64(),
            status["groups"]["leaving"].as_u64()
        ),
        (Some(2), Some(1)),
        "{status}"
    );
    let mut ws = c.into_inner();
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    let answer = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                other => panic!("expected a close, got {other:?}"),
            }
        }
    })
    .await
    .expect("a close in time");
    assert_eq!(answer, Some(1000));
    let mut last = Value::Null;
    for _ in 0..50 {
        last = app.status().await;
        if last["connections"]["total"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        (
            last["connections"]["total"].as_u64(),
            last["connections"]["identified"].as_u64()
        ),
        (Some(1), Some(1)),
        "{last}"
    );
    assert!(last["groups"].get("leaving").is_none(), "{last}");
    assert_witness_still_served(&app, &mut w).await;
}

#[actix_web::test]
async fn a_text_message_that_is_not_utf8_is_invalid_frame_and_the_connection_stays() {
    let app = spawn_app().await;
    let mut w = witness(&app).await;
    let (mut c, _) = app.identified(&[]).await;
    let bad = b"{\"op\": 3, \"id\": \"\xff\xfe\"}".to_vec();
    c.send_raw(Message::Frame(Frame::message(
        bad.clone(),
        OpCode::Data(Data::Text),
        true,
    )))
    .await
    .unwrap();
    assert_error_without_id(&c.recv_frame().await.unwrap(), "invalid_frame");
    // The same, in two fragments.
    let (first, last) = bad.split_at(5);
    c.send_raw(Message::Frame(Frame::message(
        first.to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    c.send_raw(Message::Frame(Frame::message(
        last.to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    assert_error_without_id(&c.recv_frame().await.unwrap(), "invalid_frame");
    assert_still_open(&mut c, "after").await;
    assert_witness_still_served(&app, &mut w).await;
}
