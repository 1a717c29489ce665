use serde_json::json;
use socket_hub::client::WAIT;

use crate::helpers::*;

#[actix_web::test]
async fn identify_with_a_valid_token_answers_with_session_service_groups_and_node() {
    let app = spawn_app().await;
    let mut c = app.connect().await;
    c.send_json(&json!({"op": 1, "id": "x1", "data": {"token": SVC_TOKEN, "groups": ["g1"]}}))
        .await
        .unwrap();
    let reply = c.recv_frame().await.unwrap();
    assert_eq!(
        (reply["op"].as_u64(), reply["id"].as_str(), reply["event"].as_str()),
        (Some(5), Some("x1"), Some("IDENTIFY"))
    );
    let data = &reply["data"];
    assert_eq!(
        uuid::Uuid::parse_str(data["session"].as_str().unwrap())
            .unwrap()
            .get_version_num(),
        4
    );
    assert_eq!(data["service"], "svc");
    assert_eq!(data["groups"], json!(["g1"]));
    assert_eq!(data["heartbeat_interval_ms"], 60_000);
    assert!(data["node"].as_str().is_some_and(|n| !n.is_empty()));
}

#[actix_web::test]
async fn identify_without_groups_joins_all_configured_groups() {
    let app = spawn_app().await;
    let mut c = app.connect().await;
    let data = c.identify(SVC_TOKEN, None).await.unwrap();
    assert_eq!(data["groups"], json!(["g1", "g2"]));
    let mut star = app.connect().await;
    assert_eq!(star.identify(ANY_TOKEN, None).await.unwrap()["groups"], json!([]));
}

#[actix_web::test]
async fn a_bad_token_gets_auth_failed_then_disconnect_4004() {
    let app = spawn_app().await;
    let mut c = app.connect().await;
    c.send_json(&json!({"op": 1, "id": "x1", "data": {"token": "wrong"}}))
        .await
        .unwrap();
    assert_error(&c.recv_frame().await.unwrap(), "auth_failed", Some("x1"));
    assert_eq!(c.recv_close(WAIT).await.unwrap(), (Some(4004), Some(4004)));
}

#[actix_web::test]
async fn identify_data_that_is_not_an_object_is_invalid_frame_and_identify_can_follow() {
    let app = spawn_app().await;
    let mut c = app.connect().await;
    // An array would be read as the token and the groups, in order.
    for data in [json!([SVC_TOKEN, ["g1"]]), json!(SVC_TOKEN), json!(null)] {
        c.send_json(&json!({"op": 1, "id": "x1", "data": data})).await.unwrap();
        assert_error(&c.recv_frame().await.unwrap(), "invalid_frame", Some("x1"));
    }
    let data = c.identify(SVC_TOKEN, Some(&["g1"])).await.unwrap();
    assert_eq!(data["groups"], json!(["g1"]));
}

#[actix_web::test]
async fn more_groups_than_max_groups_per_session_is_invalid_frame_and_identify_can_follow() {
    let app = spawn_app_with(|s| s.limits.max_groups_per_session = 1).await;
    let mut c = app.connect().await;
    // Counted as asked for, duplicates included.
    for groups in [json!(["a", "b"]), json!(["a", "a"])] {
        c.send_json(&json!({"op": 1, "id": "x1", "data": {"token": ANY_TOKEN, "groups": groups}}))
            .await
            .unwrap();
        let error = c.recv_frame().await.unwrap();
        assert_error(&error, "invalid_frame", Some("x1"));
        let message = error["data"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("max_groups_per_session"), "{error}");
    }
    // Within the limit; a service's configured groups are not counted.
    let data = c.identify(ANY_TOKEN, Some(&["a"])).await.unwrap();
    assert_eq!(data["groups"], json!(["a"]));
    let mut configured = app.connect().await;
    let data = configured.identify(SVC_TOKEN, None).await.unwrap();
    assert_eq!(data["groups"], json!(["g1", "g2"]));
}

#[actix_web::test]
async fn a_group_not_allowed_gets_forbidden_group_then_disconnect_4004() {
    let app = spawn_app().await;
    let mut c = app.connect().await;
    c.send_json(&json!({"op": 1, "id": "x1", "data": {"token": SVC_TOKEN, "groups": ["g1", "other"]}}))
        .await
        .unwrap();
    assert_error(&c.recv_frame().await.unwrap(), "forbidden_group", Some("x1"));
    assert_eq!(c.recv_close(WAIT).await.unwrap(), (Some(4004), Some(4004)));
}

#[actix_web::test]
async fn a_second_identify_is_refused_and_the_connection_stays() {
    let app = spawn_app().await;
    let (mut c, _) = app.identified(&["a"]).await;
    c.send_json(&json!({"op": 1, "id": "again", "data": {"token": ANY_TOKEN}}))
        .await
        .unwrap();
    assert_error(&c.recv_frame().await.unwrap(), "already_identified", Some("again"));
    c.send_json(&json!({"op": 3, "id": "still"})).await.unwrap();
    assert_eq!(c.recv_frame().await.unwrap(), json!({"op": 4, "id": "still"}));
}

#[actix_web::test]
async fn a_second_identify_is_refused_whatever_its_data() {
    let app = spawn_app().await;
    let (mut c, _) = app.identified(&["a"]).await;
    for (id, data) in [
        ("n", json!({"token": 5})),
        ("m", json!(null)),
        ("g", json!({"groups": "a"})),
    ] {
        c.send_json(&json!({"op": 1, "id": id, "data": data})).await.unwrap();
        assert_error(&c.recv_frame().await.unwrap(), "already_identified", Some(id));
    }
    c.send_json(&json!({"op": 1, "id": "i".repeat(129), "data": {"token": ANY_TOKEN}}))
        .await
        .unwrap();
    let f = c.recv_frame().await.unwrap();
    assert_error(&f, "already_identified", None);
    assert!(f["id"].is_null(), "{f}");
}

#[actix_web::test]
async fn before_identify_an_event_or_reply_gets_not_identified_whatever_else_is_wrong_with_it() {
    let app = spawn_app().await;
    let mut c = app.connect().await;
    for (id, frame) in [
        ("noevent", json!({"op": 0, "id": "noevent"})),
        (
            "badintent",
            json!({"op": 0, "id": "badintent", "event": "E", "intent": {"target": "NOPE"}}),
        ),
        ("emptyevent", json!({"op": 5, "id": "emptyevent", "event": ""})),
    ] {
        c.send_json(&frame).await.unwrap();
        assert_error(&c.recv_frame().await.unwrap(), "not_identified", Some(id));
    }
    for frame in [json!({"op": 5, "event": "E"}), json!({"op": 0, "id": "", "event": "E"})] {
        c.send_json(&frame).await.unwrap();
        let f = c.recv_frame().await.unwrap();
        assert_error(&f, "not_identified", None);
        assert!(f["id"].is_null(), "{f}");
    }
    // A frame that is not one (not JSON, a field of the wrong type, no
    // valid op) is told so first.
    c.send_json(&json!({"op": 0, "id": 7})).await.unwrap();
    assert_error(&c.recv_frame().await.unwrap(), "invalid_frame", None);
    c.send_json(&json!({"op": 0, "id": "typed", "event": 7})).await.unwrap();
    assert_error(&c.recv_frame().await.unwrap(), "invalid_frame", Some("typed"));
    c.send_json(&json!({"op": 0, "id": "intent", "event": "E", "intent": "GLOBAL"}))
        .await
        .unwrap();
    assert_error(&c.recv_frame().await.unwrap(), "invalid_frame", Some("intent"));
    c.send_json(&json!({"op": 8, "id": "op8"})).await.unwrap();
    assert_error(&c.recv_frame().await.unwrap(), "unknown_op", Some("op8"));
}

#[actix_web::test]
async fn before_identify_only_ping_pong_and_disconnect_are_allowed() {
    let app = spawn_app().await;
    let mut c = app.connect().await;
    c.send_json(&json!({"op": 0, "id": "e", "event": "E"})).await.unwrap();
    assert_error(&c.recv_frame().await.unwrap(), "not_identified", Some("e"));
    c.send_json(&json!({"op": 5, "id": "r", "event": "E"})).await.unwrap();
    assert_error(&c.recv_frame().await.unwrap(), "not_identified", Some("r"));
    c.send_json(&json!({"op": 3, "id": "p", "data": {"t": 1}}))
        .await
        .unwrap();
    assert_eq!(
        c.recv_frame().await.unwrap(),
        json!({"op": 4, "id": "p", "data": {"t": 1}})
    );
    c.send_json(&json!({"op": 4, "id": "x"})).await.unwrap();
    c.send_json(&json!({"op": 2})).await.unwrap();
    assert_eq!(c.recv_close(WAIT).await.unwrap(), (None, Some(1000)));
}

#[actix_web::test]
async fn no_identify_in_time_closes_with_4005() {
    let app = spawn_app_with(|s| s.limits.identify_timeout_ms = 150).await;
    let mut c = app.connect().await;
    assert_eq!(c.recv_close(WAIT).await.unwrap(), (Some(4005), Some(4005)));
}

#[actix_web::test]
async fn a_silent_unidentified_client_gets_whichever_deadline_comes_first() {
    // The heartbeat timeout first: 4006, long before the identify deadline.
    let app = spawn_app_with(|s| {
        s.limits.identify_timeout_ms = 10_000;
        s.heartbeat.interval_ms = 100;
        s.heartbeat.timeout_ms = 300;
    })
    .await;
    let mut c = app.connect().await;
    c.auto_pong = false;
    let since = std::time::Instant::now();
    let close = loop {
        match c.recv(WAIT).await.unwrap() {
            socket_hub::client::Received::Frame(f) if f["op"] == 3 => continue,
            socket_hub::client::Received::Frame(f) => {
                assert_eq!(f["data"], json!({"code": 4006, "reason": "heartbeat_timeout"}), "{f}");
                break c.recv_close(WAIT).await.unwrap().1;
            }
            other => panic!("expected DISCONNECT 4006, got {other:?}"),
        }
    };
    assert_eq!(close, Some(4006));
    assert!(
        since.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        since.elapsed()
    );

    // The identify deadline first: 4005, with a heartbeat timeout far off.
    let app = spawn_app_with(|s| {
        s.limits.identify_timeout_ms = 150;
        s.heartbeat.timeout_ms = 120_000;
    })
    .await;
    let mut c = app.connect().await;
    assert_eq!(c.recv_close(WAIT).await.unwrap(), (Some(4005), Some(4005)));
}
