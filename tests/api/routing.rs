use std::time::Duration;

use serde_json::{json, Value};
use socket_hub::client::Client;

use crate::helpers::*;

const QUIET: Duration = Duration::from_millis(300);

#[actix_web::test]
async fn global_reaches_every_identified_session_but_the_sender() {
    let app = spawn_app().await;
    let (mut a, a_id) = app.identified(&[]).await;
    let (mut b, _) = app.identified(&[]).await;
    let (mut c, _) = app.identified(&["x"]).await;
    let mut unidentified = app.connect().await;
    a.send_json(&json!({"op": 0, "id": "g", "event": "HELLO", "data": 1}))
        .await
        .unwrap();
    for client in [&mut b, &mut c] {
        let f = client.recv_frame().await.unwrap();
        assert_eq!(
            f,
            json!({"id": "g", "op": 0, "event": "HELLO", "data": 1, "source": {"session": a_id, "service": "any"}})
        );
    }
    assert_silent(&mut a, QUIET).await;
    assert_silent(&mut unidentified, Duration::from_millis(50)).await;
}

#[actix_web::test]
async fn global_alone_is_not_an_error() {
    let app = spawn_app().await;
    let (mut a, _) = app.identified(&[]).await;
    a.send_json(&json!({"op": 0, "event": "E", "intent": {"target": "GLOBAL", "identifier": null}}))
        .await
        .unwrap();
    assert_silent(&mut a, QUIET).await;
}

#[actix_web::test]
async fn group_reaches_its_members_but_the_sender_who_need_not_be_a_member() {
    let app = spawn_app().await;
    let (mut a, a_id) = app.identified(&["damon"]).await;
    let (mut b, _) = app.identified(&["damon"]).await;
    let (mut outsider, out_id) = app.identified(&["other"]).await;
    let intent = json!({"target": "GROUP", "identifier": "damon"});
    a.send_json(&json!({"op": 0, "id": "1", "event": "INFO", "intent": intent}))
        .await
        .unwrap();
    let f = b.recv_frame().await.unwrap();
    assert_eq!(
        (f["id"].as_str(), f["intent"].clone(), f["source"]["session"].as_str()),
        (Some("1"), intent.clone(), Some(a_id.as_str()))
    );
    assert_silent(&mut a, QUIET).await;
    outsider
        .send_json(&json!({"op": 0, "id": "2", "event": "INFO", "intent": intent}))
        .await
        .unwrap();
    for member in [&mut a, &mut b] {
        let f = member.recv_frame().await.unwrap();
        assert_eq!(
            (f["id"].as_str(), f["source"]["session"].as_str()),
            (Some("2"), Some(out_id.as_str()))
        );
    }
    assert_silent(&mut outsider, QUIET).await;
}

#[actix_web::test]
async fn direct_reaches_one_session_and_may_target_the_sender() {
    let app = spawn_app().await;
    let (mut a, a_id) = app.identified(&[]).await;
    let (mut b, b_id) = app.identified(&[]).await;
    let (mut c, _) = app.identified(&[]).await;
    a.send_json(&json!({"op": 0, "id": "d", "event": "E", "intent": {"target": "DIRECT", "identifier": b_id}}))
        .await
        .unwrap();
    assert_eq!(b.recv_frame().await.unwrap()["id"], "d");
    a.send_json(&json!({"op": 0, "id": "self", "event": "E", "intent": {"target": "DIRECT", "identifier": a_id}}))
        .await
        .unwrap();
    assert_eq!(a.recv_frame().await.unwrap()["id"], "self");
    assert_silent(&mut c, QUIET).await;
}

#[actix_web::test]
async fn no_recipient_is_unknown_target_with_the_frame_id() {
    let app = spawn_app().await;
    let (mut a, _) = app.identified(&[]).await;
    let (b, b_id) = app.identified(&[]).await;
    a.send_json(&json!({"op": 0, "id": "nobody", "event": "E", "intent": {"target": "GROUP", "identifier": "empty"}}))
        .await
        .unwrap();
    assert_error(&a.recv_frame().await.unwrap(), "unknown_target", Some("nobody"));
    b.close().await.unwrap();
    app.wait_connections("total", 1).await;
    a.send_json(&json!({"op": 0, "id": "gone", "event": "E", "intent": {"target": "DIRECT", "identifier": b_id}}))
        .await
        .unwrap();
    let last = a.recv_frame().await.unwrap();
    assert_error(&last, "unknown_target", Some("gone"));
    a.send_json(
        &json!({"op": 0, "id": "nouuid", "event": "E", "intent": {"target": "DIRECT", "identifier": "not-a-session"}}),
    )
    .await
    .unwrap();
    assert_error(&a.recv_frame().await.unwrap(), "unknown_target", Some("nouuid"));
}

/// Sends an `EVENT` with each intent, and asserts `invalid_intent` for each.
async fn assert_invalid_intents(a: &mut Client, intents: &[Value]) {
    for (i, intent) in intents.iter().enumerate() {
        a.send_json(&json!({"op": 0, "id": i.to_string(), "event": "E", "intent": intent}))
            .await
            .unwrap();
        assert_error(&a.recv_frame().await.unwrap(), "invalid_intent", Some(&i.to_string()));
    }
}

#[actix_web::test]
async fn bad_intents_are_invalid_intent() {
    let app = spawn_app().await;
    let (mut a, _) = app.identified(&[]).await;
    let intents = [
        json!({"target": "GROUP"}),
        json!({"target": "DIRECT", "identifier": null}),
        json!({"target": "SOMEONE", "identifier": "x"}),
    ];
    assert_invalid_intents(&mut a, &intents).await;
}

#[actix_web::test]
async fn an_intent_without_a_target_is_invalid_intent_and_reaches_no_one() {
    let app = spawn_app().await;
    let (mut a, a_id) = app.identified(&[]).await;
    let (mut b, _) = app.identified(&[]).await;
    let intents = [
        json!({"identifier": "g1"}),
        json!({"target": null, "identifier": "g1"}),
        json!({}),
        json!({"target": "GROUP", "identifier": 5}),
    ];
    assert_invalid_intents(&mut a, &intents).await;
    // B's next frame is the one sent after them: none of them reached it.
    a.send_json(&json!({"op": 0, "id": "after", "event": "E"}))
        .await
        .unwrap();
    let f = b.recv_frame().await.unwrap();
    assert_eq!(f["id"], "after", "{f}");
    assert_eq!(f["source"]["session"], a_id.as_str());
}

#[actix_web::test]
async fn a_global_intent_ignores_its_identifier_and_arrives_as_sent() {
    let app = spawn_app().await;
    let (mut a, a_id) = app.identified(&[]).await;
    let (mut b, _) = app.identified(&[]).await;
    let source = json!({"session": a_id, "service": "any"});
    for (id, intent) in [
        ("num", json!({"target": "GLOBAL", "identifier": 5})),
        ("obj", json!({"target": "GLOBAL", "identifier": {"x": [1]}})),
        ("null", json!(null)),
    ] {
        a.send_json(&json!({"op": 0, "id": id, "event": "E", "intent": intent}))
            .await
            .unwrap();
        assert_eq!(
            b.recv_frame().await.unwrap(),
            json!({"id": id, "op": 0, "event": "E", "intent": intent, "source": source})
        );
    }
    assert_silent(&mut a, QUIET).await;
}

#[actix_web::test]
async fn a_forged_source_is_overwritten_and_a_missing_id_is_assigned() {
    let app = spawn_app().await;
    let (mut a, a_id) = app.identified(&[]).await;
    let (mut b, _) = app.identified(&[]).await;
    a.send_json(&json!({"op": 0, "event": "E", "source": {"session": "forged", "service": "admin"}, "extra": true}))
        .await
        .unwrap();
    let f = b.recv_frame().await.unwrap();
    assert_eq!(f["source"], json!({"session": a_id, "service": "any"}));
    assert_eq!(
        uuid::Uuid::parse_str(f["id"].as_str().unwrap())
            .unwrap()
            .get_version_num(),
        4
    );
    assert!(f.get("extra").is_none());
}

#[actix_web::test]
async fn data_arrives_verbatim_even_numbers_beyond_64_bits() {
    let app = spawn_app().await;
    let (mut a, _) = app.identified(&[]).await;
    let (mut b, _) = app.identified(&[]).await;
    let data = r#"{"big":123456789012345678901234567890,"dec":3.14159265358979323846264338327950288,"neg":-1e400,"s":"\u00e9\n"}"#;
    a.send_text(format!(r#"{{"op":0,"id":"v","event":"E","data":{data}}}"#))
        .await
        .unwrap();
    let text = b.recv_text(socket_hub::client::WAIT).await.unwrap();
    assert!(text.contains(&format!(r#""data":{data}"#)), "{text}");
}

#[actix_web::test]
async fn frames_from_one_sender_arrive_in_order() {
    let app = spawn_app().await;
    let (mut a, _) = app.identified(&[]).await;
    let (mut b, b_id) = app.identified(&[]).await;
    for i in 0..1000 {
        a.send_json(&json!({"op": 0, "event": "SEQ", "data": i, "intent": {"target": "DIRECT", "identifier": b_id}}))
            .await
            .unwrap();
    }
    for i in 0..1000 {
        assert_eq!(b.recv_frame().await.unwrap()["data"], i);
    }
}

/// Frames bound for different sets of sessions, small and large, interleaved:
/// each recipient gets exactly its own, whole and in the order sent, whether
/// the hub hands it a slice of the buffer it frames every routed frame into
/// or a copy of its own frames, and however the socket writes are cut.
#[actix_web::test]
async fn interleaved_group_and_direct_frames_of_any_size_reach_each_recipient_whole_and_in_order() {
    interleaved_frames_reach_each_recipient_whole_and_in_order(false).await;
}

#[actix_web::test]
async fn with_compact_write_buffers_frames_of_any_size_still_arrive_whole_and_in_order() {
    interleaved_frames_reach_each_recipient_whole_and_in_order(true).await;
}

/// 300 frames, some of 150 KB, to a group and to two sessions, then a
/// 150 KB `PING` answered by its `PONG`: each recipient gets its frames whole
/// and in order, and nothing else.
async fn interleaved_frames_reach_each_recipient_whole_and_in_order(compact_write_buffers: bool) {
    let app = spawn_app_with(|s| {
        s.limits.max_frame_bytes = 256 * 1024;
        s.limits.max_outbound_bytes = 16 << 20;
        s.server.compact_write_buffers = compact_write_buffers;
    })
    .await;
    let (mut publisher, _) = app.identified(&[]).await;
    let (mut both, both_id) = app.identified(&["mix"]).await;
    let (mut group_only, _) = app.identified(&["mix"]).await;
    let (mut direct_only, direct_id) = app.identified(&[]).await;
    let big = "x".repeat(150_000);
    let (mut want_both, mut want_group, mut want_direct) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..300 {
        let (intent, data) = if i % 10 == 0 {
            want_both.push(i);
            (json!({"target": "DIRECT", "identifier": both_id}), json!([i, big]))
        } else if i % 7 == 0 {
            want_direct.push(i);
            (json!({"target": "DIRECT", "identifier": direct_id}), json!([i]))
        } else {
            want_both.push(i);
            want_group.push(i);
            (json!({"target": "GROUP", "identifier": "mix"}), json!([i]))
        };
        publisher
            .send_json(&json!({"op": 0, "event": "MIX", "data": data, "intent": intent}))
            .await
            .unwrap();
    }
    for (client, want) in [
        (&mut both, want_both),
        (&mut group_only, want_group),
        (&mut direct_only, want_direct),
    ] {
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let f = client.recv_frame().await.unwrap();
            let i = f["data"][0].as_u64().unwrap();
            if i % 10 == 0 {
                assert_eq!(f["data"][1].as_str().map(str::len), Some(big.len()), "frame {i} whole");
            }
            got.push(i);
        }
        assert_eq!(got, want);
        assert_silent(client, Duration::from_millis(100)).await;
    }
    assert_silent(&mut publisher, Duration::from_millis(50)).await;
    both.send_json(&json!({"op": 3, "id": "big", "data": big}))
        .await
        .unwrap();
    assert_eq!(
        both.recv_frame().await.unwrap(),
        json!({"op": 4, "id": "big", "data": big})
    );
    // The HTTP endpoints answer whole too (the write buffer setting is the
    // server's).
    assert_eq!(app.status().await["connections"]["identified"], 4);
    let metrics = app.metrics().await;
    assert!(metrics.contains("socket_hub_frames_delivered_total"), "{metrics}");
    assert_eq!(app.get("/nope", None).await.0, 404);
}
