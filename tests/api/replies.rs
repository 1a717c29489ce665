//! Request and reply, op 5 (PROTOCOL.md §5).

use std::time::Duration;

use serde_json::{json, Value};
use socket_hub::client::{Client, WAIT};

use crate::helpers::*;

const QUIET: Duration = Duration::from_millis(300);

/// A client identified as `svc` in `g1`, and its session id.
async fn svc_member(app: &TestApp) -> (Client, String) {
    let mut client = app.connect().await;
    let data = client.identify(SVC_TOKEN, Some(&["g1"])).await.expect("identifies");
    (client, data["session"].as_str().expect("session id").to_owned())
}

/// Sends an `EVENT` with `id` to group `g1`.
async fn ask_g1(client: &mut Client, id: &str) {
    client
        .send_json(&json!({"op": 0, "id": id, "event": "INFO", "data": {"q": id}, "intent": {"target": "GROUP", "identifier": "g1"}}))
        .await
        .unwrap();
}

async fn reply(client: &mut Client, id: &str, data: Value) {
    client
        .send_json(&json!({"op": 5, "id": id, "event": "INFO", "data": data}))
        .await
        .unwrap();
}

#[actix_web::test]
async fn a_reply_reaches_the_sender_of_the_event_with_its_data_verbatim_and_the_replier_as_source() {
    let app = spawn_app().await;
    let (mut a, a_id) = app.identified(&[]).await;
    let (mut b, b_id) = svc_member(&app).await;
    ask_g1(&mut a, "req-1").await;
    let asked = b.recv_frame().await.unwrap();
    assert_eq!(
        (
            asked["op"].as_u64(),
            asked["id"].as_str(),
            asked["source"]["session"].as_str()
        ),
        (Some(0), Some("req-1"), Some(a_id.as_str()))
    );
    let data =
        r#"{"channels":10240,"big":123456789012345678901234567890,"dec":0.10000000000000000000001,"s":"\u00e9"}"#;
    b.send_text(format!(
        r#"{{"op":5,"id":"req-1","event":"INFO","data":{data},"source":{{"session":"forged","service":"x"}}}}"#
    ))
    .await
    .unwrap();
    let text = a.recv_text(WAIT).await.unwrap();
    assert!(text.contains(&format!(r#""data":{data}"#)), "{text}");
    let got: Value = serde_json::from_str(&text).unwrap();
    let mut without_data = got.clone();
    without_data.as_object_mut().unwrap().remove("data");
    assert_eq!(
        without_data,
        json!({"id": "req-1", "op": 5, "event": "INFO", "source": {"session": b_id, "service": "svc"}})
    );
    assert_silent(&mut b, QUIET).await;
}

#[actix_web::test]
async fn every_member_may_reply_and_the_sender_gathers_all_replies() {
    let app = spawn_app().await;
    let (mut a, _) = app.identified(&[]).await;
    let (mut b, b_id) = svc_member(&app).await;
    let (mut c, c_id) = svc_member(&app).await;
    ask_g1(&mut a, "gather").await;
    for (member, id) in [(&mut b, &b_id), (&mut c, &c_id)] {
        assert_eq!(member.recv_frame().await.unwrap()["id"], "gather");
        reply(member, "gather", json!({"from": id})).await;
    }
    let mut replies = vec![a.recv_frame().await.unwrap(), a.recv_frame().await.unwrap()];
    replies.sort_by_key(|r| r["source"]["session"].as_str().unwrap_or_default().to_owned());
    let mut expected: Vec<Value> = [&b_id, &c_id]
        .into_iter()
        .map(|id| json!({"id": "gather", "op": 5, "event": "INFO", "data": {"from": id}, "source": {"session": id, "service": "svc"}}))
        .collect();
    expected.sort_by_key(|r| r["source"]["session"].as_str().unwrap_or_default().to_owned());
    assert_eq!(replies, expected);
    assert_silent(&mut a, QUIET).await;
}

#[actix_web::test]
async fn another_sessions_event_with_a_pending_id_cannot_take_its_replies_until_the_sender_leaves() {
    let app = spawn_app().await;
    let (mut a, _) = app.identified(&[]).await;
    let (mut b, b_id) = svc_member(&app).await;
    let (mut c, c_id) = svc_member(&app).await;
    ask_g1(&mut a, "r1").await;
    assert_eq!(b.recv_frame().await.unwrap()["id"], "r1");
    assert_eq!(c.recv_frame().await.unwrap()["id"], "r1");
    // B sends an EVENT of its own with the same id, to itself: it is routed...
    let to_self = json!({"op": 0, "id": "r1", "event": "MINE", "intent": {"target": "DIRECT", "identifier": b_id}});
    b.send_json(&to_self).await.unwrap();
    assert_eq!(b.recv_frame().await.unwrap()["event"], "MINE");
    // ...but C's reply still reaches A, who asked first.
    reply(&mut c, "r1", json!("for a")).await;
    let got = a.recv_frame().await.unwrap();
    assert_eq!(
        (got["data"].clone(), got["source"]["session"].clone()),
        (json!("for a"), json!(c_id))
    );
    assert_silent(&mut b, QUIET).await;
    // Once A has left, a further reply from C to A's request is
    // unknown_target, even after B has used the id again: B's requests
    // never reached C.
    a.close().await.unwrap();
    app.wait_connections("identified", 2).await;
    b.send_json(&to_self).await.unwrap();
    assert_eq!(b.recv_frame().await.unwrap()["event"], "MINE");
    reply(&mut c, "r1", json!("for a again")).await;
    assert_error(&c.recv_frame().await.unwrap(), "unknown_target", Some("r1"));
    assert_silent(&mut b, QUIET).await;
}

#[actix_web::test]
async fn a_member_that_replies_to_a_shared_id_never_gets_its_own_reply() {
    let app = spawn_app().await;
    let (mut a, _) = svc_member(&app).await;
    let (mut b, _) = svc_member(&app).await;
    ask_g1(&mut a, "1").await;
    assert_eq!(b.recv_frame().await.unwrap()["id"], "1");
    ask_g1(&mut b, "1").await;
    assert_eq!(a.recv_frame().await.unwrap()["id"], "1");
    // A answers B's request: A's own request never reached A.
    reply(&mut a, "1", json!("to b")).await;
    let got = b.recv_frame().await.unwrap();
    assert_eq!((got["data"].clone(), got["op"].clone()), (json!("to b"), json!(5)));
    assert_silent(&mut a, QUIET).await;
}

/// A asks `g1` and then B asks `g2`, both with the id "7"; each request has
/// reached the one member of its group. Returns A, B and the two members.
async fn seven_to_g1_then_g2(app: &TestApp) -> [Client; 4] {
    let (mut a, _) = app.identified(&[]).await;
    let (mut b, _) = app.identified(&[]).await;
    let (mut in_g1, _) = svc_member(app).await;
    let (mut in_g2, _) = app.identified(&["g2"]).await;
    ask_g1(&mut a, "7").await;
    assert_eq!(in_g1.recv_frame().await.unwrap()["id"], "7");
    b.send_json(&json!({"op": 0, "id": "7", "event": "INFO", "intent": {"target": "GROUP", "identifier": "g2"}}))
        .await
        .unwrap();
    assert_eq!(in_g2.recv_frame().await.unwrap()["id"], "7");
    [a, b, in_g1, in_g2]
}

#[actix_web::test]
async fn two_requesters_that_use_the_same_id_each_get_the_reply_to_their_own_request() {
    let app = spawn_app().await;
    // Two instances of one service, both numbering their requests from 1.
    let (mut a, a_id) = app.identified(&[]).await;
    let (mut b, b_id) = app.identified(&[]).await;
    let (mut responder, _) = svc_member(&app).await;
    ask_g1(&mut a, "1").await;
    let first = responder.recv_frame().await.unwrap();
    ask_g1(&mut b, "1").await;
    let second = responder.recv_frame().await.unwrap();
    assert_eq!(
        (
            first["source"]["session"].as_str(),
            second["source"]["session"].as_str()
        ),
        (Some(a_id.as_str()), Some(b_id.as_str()))
    );
    // The responder answers each in the order it got them.
    for asked in [&first, &second] {
        reply(&mut responder, "1", json!({"for": asked["source"]["session"]})).await;
    }
    assert_eq!(a.recv_frame().await.unwrap()["data"], json!({"for": a_id}));
    assert_eq!(b.recv_frame().await.unwrap()["data"], json!({"for": b_id}));
    assert_silent(&mut a, QUIET).await;
    assert_silent(&mut b, QUIET).await;
}

#[actix_web::test]
async fn a_second_request_with_a_used_id_after_the_first_was_answered_gets_its_own_reply() {
    let app = spawn_app().await;
    let (mut a, _) = app.identified(&[]).await;
    let (mut b, _) = app.identified(&[]).await;
    let (mut responder, _) = svc_member(&app).await;
    ask_g1(&mut a, "1").await;
    assert_eq!(responder.recv_frame().await.unwrap()["id"], "1");
    reply(&mut responder, "1", json!("to a")).await;
    assert_eq!(a.recv_frame().await.unwrap()["data"], "to a");
    ask_g1(&mut b, "1").await;
    assert_eq!(responder.recv_frame().await.unwrap()["id"], "1");
    reply(&mut responder, "1", json!("to b")).await;
    assert_eq!(b.recv_frame().await.unwrap()["data"], "to b");
    assert_silent(&mut a, QUIET).await;
}

#[actix_web::test]
async fn a_reply_to_a_request_whose_sender_left_is_unknown_target_even_if_another_used_the_id() {
    let app = spawn_app().await;
    let [a, mut b, mut in_g1, _in_g2] = seven_to_g1_then_g2(&app).await;
    a.close().await.unwrap();
    app.wait_connections("identified", 3).await;
    // The g1 member answers A's request: A is gone, and B never asked g1.
    reply(&mut in_g1, "7", json!("for a")).await;
    assert_error(&in_g1.recv_frame().await.unwrap(), "unknown_target", Some("7"));
    assert_silent(&mut b, QUIET).await;
}

#[actix_web::test]
async fn with_one_id_sent_to_different_targets_a_reply_goes_to_the_request_that_reached_the_replier() {
    let app = spawn_app().await;
    let [mut a, mut b, mut in_g1, mut in_g2] = seven_to_g1_then_g2(&app).await;
    // Only B's request reached g2, though A's is older.
    reply(&mut in_g2, "7", json!("from g2")).await;
    assert_eq!(b.recv_frame().await.unwrap()["data"], "from g2");
    reply(&mut in_g1, "7", json!("from g1")).await;
    assert_eq!(a.recv_frame().await.unwrap()["data"], "from g1");
    assert_silent(&mut a, QUIET).await;
    assert_silent(&mut b, QUIET).await;
}

#[actix_web::test]
async fn only_a_session_the_event_reached_may_reply_to_it() {
    let app = spawn_app().await;
    let (mut a, _) = app.identified(&[]).await;
    let (mut b, b_id) = app.identified(&[]).await;
    let (mut bystander, _) = app.identified(&[]).await;
    a.send_json(
        &json!({"op": 0, "id": "q-1", "event": "INFO", "data": 1, "intent": {"target": "DIRECT", "identifier": b_id}}),
    )
    .await
    .unwrap();
    assert_eq!(b.recv_frame().await.unwrap()["id"], "q-1");
    // Neither a session it did not reach nor its own sender can answer it.
    reply(&mut bystander, "q-1", json!("spoofed")).await;
    assert_error(&bystander.recv_frame().await.unwrap(), "unknown_request", Some("q-1"));
    reply(&mut a, "q-1", json!("own")).await;
    assert_error(&a.recv_frame().await.unwrap(), "unknown_request", Some("q-1"));
    reply(&mut b, "q-1", json!("answer")).await;
    let answer = a.recv_frame().await.unwrap();
    assert_eq!(
        (answer["op"].clone(), answer["data"].clone()),
        (json!(5), json!("answer")),
        "{answer}"
    );
    assert_eq!(answer["source"]["session"], b_id.as_str());
    assert_silent(&mut a, QUIET).await;
}

#[actix_web::test]
async fn a_session_that_identified_after_a_global_event_cannot_reply_to_it() {
    let app = spawn_app().await;
    let (mut a, _) = app.identified(&[]).await;
    let (mut b, _) = app.identified(&[]).await;
    a.send_json(&json!({"op": 0, "id": "late-1", "event": "INFO", "data": 1}))
        .await
        .unwrap();
    assert_eq!(b.recv_frame().await.unwrap()["id"], "late-1");
    let (mut late, _) = app.identified(&[]).await;
    reply(&mut late, "late-1", json!("spoofed")).await;
    assert_error(&late.recv_frame().await.unwrap(), "unknown_request", Some("late-1"));
    reply(&mut b, "late-1", json!("answer")).await;
    assert_eq!(a.recv_frame().await.unwrap()["data"], "answer");
    assert_silent(&mut a, QUIET).await;
}

#[actix_web::test]
async fn a_reply_with_an_unknown_id_is_unknown_request_to_the_replier() {
    let app = spawn_app().await;
    let (mut a, _) = app.identified(&[]).await;
    let (mut b, _) = svc_member(&app).await;
    reply(&mut b, "never-asked", json!(1)).await;
    assert_error(&b.recv_frame().await.unwrap(), "unknown_request", Some("never-asked"));
    assert_silent(&mut a, QUIET).await;
}

#[actix_web::test]
async fn a_reply_after_reply_ttl_is_unknown_request() {
    let app = spawn_app_with(|s| s.limits.reply_ttl_ms = 200).await;
    let (mut a, _) = app.identified(&[]).await;
    let (mut b, _) = svc_member(&app).await;
    ask_g1(&mut a, "slow").await;
    assert_eq!(b.recv_frame().await.unwrap()["id"], "slow");
    reply(&mut b, "slow", json!("in time")).await;
    assert_eq!(a.recv_frame().await.unwrap()["data"], "in time");
    // Nothing to await here: the entry must expire with time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    reply(&mut b, "slow", json!("late")).await;
    assert_error(&b.recv_frame().await.unwrap(), "unknown_request", Some("slow"));
    assert_silent(&mut a, QUIET).await;
}

#[actix_web::test]
async fn the_pending_table_is_bounded_and_the_oldest_request_goes_first() {
    let app = spawn_app_with(|s| s.limits.max_pending_replies = 2).await;
    let (mut a, _) = app.identified(&[]).await;
    let (mut b, _) = svc_member(&app).await;
    for id in ["first", "second", "third"] {
        ask_g1(&mut a, id).await;
    }
    for id in ["first", "second", "third"] {
        assert_eq!(b.recv_frame().await.unwrap()["id"], id);
    }
    reply(&mut b, "first", json!(1)).await;
    assert_error(&b.recv_frame().await.unwrap(), "unknown_request", Some("first"));
    reply(&mut b, "third", json!(3)).await;
    let got = a.recv_frame().await.unwrap();
    assert_eq!(
        (got["op"].as_u64(), got["id"].as_str(), got["data"].clone()),
        (Some(5), Some("third"), json!(3))
    );
    reply(&mut b, "second", json!(2)).await;
    assert_eq!(a.recv_frame().await.unwrap()["id"], "second");
    assert_silent(&mut a, QUIET).await;
}

#[actix_web::test]
async fn a_reply_without_an_id_is_invalid_frame() {
    let app = spawn_app().await;
    let (mut a, _) = app.identified(&[]).await;
    let (mut b, _) = svc_member(&app).await;
    ask_g1(&mut a, "q").await;
    assert_eq!(b.recv_frame().await.unwrap()["id"], "q");
    b.send_json(&json!({"op": 5, "event": "INFO", "data": 1}))
        .await
        .unwrap();
    let err = b.recv_frame().await.unwrap();
    assert_error(&err, "invalid_frame", None);
    assert!(err.get("id").is_none(), "{err}");
    assert_silent(&mut a, QUIET).await;
    // The connection stays.
    b.send_json(&json!({"op": 3, "id": "still"})).await.unwrap();
    assert_eq!(b.recv_frame().await.unwrap(), json!({"op": 4, "id": "still"}));
}
