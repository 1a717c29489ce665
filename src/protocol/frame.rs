//! Frames on the wire: parse one inbound text message into a typed
//! [`Inbound`], and write each outbound frame once into shared bytes.
//!
//! `data` and `intent` are kept as raw JSON slices of the message: the hub
//! never looks inside `data`, so it is forwarded exactly as it came (numbers
//! of any size or precision included), and `intent` goes out as the sender
//! wrote it while a typed copy decides the routing.

use std::borrow::Cow;

use bytestring::ByteString;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::codes::{CloseCode, ErrorCode};
use crate::GroupName;

/// The opcode numbers of §3.
pub mod op {
    pub const EVENT: u8 = 0;
    pub const IDENTIFY: u8 = 1;
    pub const DISCONNECT: u8 = 2;
    pub const PING: u8 = 3;
    pub const PONG: u8 = 4;
    pub const REPLY: u8 = 5;
}

/// Longest `id` and `event`, in characters.
const MAX_NAME_CHARS: usize = 128;

/// Where an `EVENT` goes (§4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Every identified session but the sender.
    Global,
    /// Every member of the group but the sender.
    Group(GroupName),
    /// One session, named by its id as the client wrote it.
    Direct(String),
}

/// One parsed client frame. Borrowed slices point into the message text.
#[derive(Debug)]
pub enum Inbound<'a> {
    Event(EventFrame<'a>),
    Identify {
        id: Option<Cow<'a, str>>,
        token: String,
        groups: Option<Vec<String>>,
    },
    Disconnect,
    Ping {
        id: Option<Cow<'a, str>>,
        data: Option<&'a RawValue>,
    },
    Pong,
    Reply(ReplyFrame<'a>),
}

/// An `EVENT` as the client sent it.
#[derive(Debug)]
pub struct EventFrame<'a> {
    pub id: Option<Cow<'a, str>>,
    pub event: Cow<'a, str>,
    pub data: Option<&'a RawValue>,
    pub intent: Intent,
    /// The intent exactly as sent (`null` included), forwarded unchanged;
    /// `None` when omitted.
    pub intent_raw: Option<&'a RawValue>,
}

/// A `REPLY` as the client sent it.
#[derive(Debug)]
pub struct ReplyFrame<'a> {
    pub id: Cow<'a, str>,
    pub event: Option<Cow<'a, str>>,
    pub data: Option<&'a RawValue>,
}

/// Why a frame was refused; answered with `ERROR` and the frame's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub id: Option<String>,
    /// The frame's op, when it had a valid one: a session that may not send
    /// that op at all is told so before what else is wrong with the frame.
    pub op: Option<u8>,
    pub code: ErrorCode,
    pub message: String,
}

impl FrameError {
    fn new(id: Option<&str>, code: ErrorCode, message: impl Into<String>) -> Self {
        FrameError {
            id: id.map(str::to_owned),
            op: None,
            code,
            message: message.into(),
        }
    }

    fn of_op(mut self, op: u8) -> Self {
        self.op = Some(op);
        self
    }
}

/// Captures a present field as raw JSON, `null` included, so that "absent"
/// and "null" stay apart.
fn raw_present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(default, borrow, deserialize_with = "raw_present")]
    op: Option<&'a RawValue>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "raw_present")]
    data: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw_present")]
    intent: Option<&'a RawValue>,
}

/// Only the id, to answer a frame that failed to parse with its id.
#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireIntent<'a> {
    #[serde(default, borrow)]
    target: Option<Cow<'a, str>>,
    /// Any JSON: read as a string only where the target needs one, and
    /// ignored for `GLOBAL`.
    #[serde(default, borrow)]
    identifier: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireIdentify {
    token: String,
    #[serde(default)]
    groups: Option<Vec<String>>,
}

/// Whether JSON text is an object. serde reads a struct from an array too,
/// field by field in order, so this is checked before every struct is read
/// from a client's JSON.
pub fn is_json_object(json: impl AsRef<[u8]>) -> bool {
    json.as_ref()
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        == Some(&b'{')
}

/// Parses one text message into a typed frame.
pub fn parse(text: &str) -> Result<Inbound<'_>, FrameError> {
    if !is_json_object(text) {
        let message = match serde_json::from_str::<&RawValue>(text) {
            Ok(_) => "a frame must be a JSON object".to_owned(),
            Err(e) => e.to_string(),
        };
        return Err(FrameError::new(None, ErrorCode::InvalidFrame, message));
    }
    let wire: Wire<'_> = serde_json::from_str(text)
        .map_err(|e| FrameError::new(readable_id(text).as_deref(), ErrorCode::InvalidFrame, e.to_string()))?;
    let id = wire.id;
    let id_ok = id.as_deref().map_or(true, |id| check_name("id", id).is_ok());
    // Echoed in an error only when valid.
    let id_str = id.as_deref().filter(|_| id_ok);
    let op = match wire.op {
        None => return Err(FrameError::new(id_str, ErrorCode::InvalidFrame, "op is required")),
        Some(raw) => parse_op(raw).map_err(|code| FrameError::new(id_str, code, code.message()))?,
    };
    let refuse = |code: ErrorCode, message: String| FrameError::new(id_str, code, message).of_op(op);
    if let Some(id) = id.as_deref().filter(|_| !id_ok) {
        check_name("id", id).map_err(|e| refuse(e.code, e.message))?;
    }
    if let Some(event) = &wire.event {
        check_name("event", event).map_err(|e| refuse(e.code, e.message))?;
    }
    match op {
        op::EVENT => {
            let Some(event) = wire.event else {
                return Err(refuse(ErrorCode::InvalidFrame, "event is required on EVENT".into()));
            };
            let intent = parse_intent(wire.intent).map_err(|(code, msg)| match code {
                // An intent of the wrong type: not a frame at all.
                ErrorCode::InvalidFrame => FrameError::new(id_str, code, msg),
                _ => refuse(code, msg),
            })?;
            Ok(Inbound::Event(EventFrame {
                id,
                event,
                data: wire.data,
                intent,
                intent_raw: wire.intent,
            }))
        }
        op::IDENTIFY => {
            let data = wire.data.map(RawValue::get).unwrap_or("null");
            if !is_json_object(data) {
                return Err(refuse(
                    ErrorCode::InvalidFrame,
                    "IDENTIFY data must be an object with a token".into(),
                ));
            }
            let ident: WireIdentify = serde_json::from_str(data)
                .map_err(|e| refuse(ErrorCode::InvalidFrame, format!("IDENTIFY data: {e}")))?;
            Ok(Inbound::Identify {
                id,
                token: ident.token,
                groups: ident.groups,
            })
        }
        op::DISCONNECT => Ok(Inbound::Disconnect),
        op::PING => Ok(Inbound::Ping { id, data: wire.data }),
        op::PONG => Ok(Inbound::Pong),
        _ => {
            let Some(id) = id else {
                return Err(refuse(ErrorCode::InvalidFrame, "id is required on REPLY".into()));
            };
            Ok(Inbound::Reply(ReplyFrame {
                id,
                event: wire.event,
                data: wire.data,
            }))
        }
    }
}

/// The id of a frame, if it has a valid one (a string of 1 to 128
/// characters); used to answer a frame that is dropped before it is parsed
/// (rate limit) or that could not be parsed.
pub fn parse_id(text: &str) -> Option<String> {
    readable_id(text).map(Cow::into_owned)
}

fn readable_id(text: &str) -> Option<Cow<'_, str>> {
    if !is_json_object(text) {
        return None;
    }
    serde_json::from_str::<IdOnly<'_>>(text)
        .ok()
        .and_then(|f| f.id)
        .filter(|id| check_name("id", id).is_ok())
}

fn check_name(field: &str, value: &str) -> Result<(), FrameError> {
    let n = value.chars().count();
    if n == 0 || n > MAX_NAME_CHARS {
        return Err(FrameError::new(
            None,
            ErrorCode::InvalidFrame,
            format!("{field} must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(())
}

/// `0`..`5` is an op; any other number is `unknown_op`; anything else has the
/// wrong type.
fn parse_op(raw: &RawValue) -> Result<u8, ErrorCode> {
    match raw.get() {
        "0" => Ok(op::EVENT),
        "1" => Ok(op::IDENTIFY),
        "2" => Ok(op::DISCONNECT),
        "3" => Ok(op::PING),
        "4" => Ok(op::PONG),
        "5" => Ok(op::REPLY),
        other if other.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => Err(ErrorCode::UnknownOp),
        _ => Err(ErrorCode::InvalidFrame),
    }
}

fn parse_intent(raw: Option<&RawValue>) -> Result<Intent, (ErrorCode, String)> {
    let Some(raw) = raw.filter(|raw| raw.get() != "null") else {
        return Ok(Intent::Global);
    };
    if !raw.get().starts_with('{') {
        return Err((ErrorCode::InvalidFrame, "intent must be an object or null".to_owned()));
    }
    let wire: WireIntent<'_> =
        serde_json::from_str(raw.get()).map_err(|e| (ErrorCode::InvalidIntent, format!("intent: {e}")))?;
    let invalid = |msg: &str| (ErrorCode::InvalidIntent, msg.to_owned());
    // The identifier a GROUP or DIRECT needs: a string.
    let identifier = |target: &str| -> Result<Cow<'_, str>, (ErrorCode, String)> {
        let raw = wire
            .identifier
            .ok_or_else(|| invalid(&format!("{target} needs intent.identifier")))?;
        serde_json::from_str::<Cow<'_, str>>(raw.get()).map_err(|_| invalid("intent.identifier must be a string"))
    };
    match wire.target.as_deref() {
        Some("GLOBAL") => Ok(Intent::Global),
        Some("GROUP") => GroupName::parse(&identifier("GROUP")?)
            .map(Intent::Group)
            .map_err(|e| (ErrorCode::InvalidIntent, format!("intent.identifier: {e}"))),
        Some("DIRECT") => Ok(Intent::Direct(identifier("DIRECT")?.into_owned())),
        None => Err(invalid(
            "intent.target is required (GLOBAL, GROUP or DIRECT); omit intent or send null for GLOBAL",
        )),
        Some(_) => Err(invalid("intent.target must be GLOBAL, GROUP or DIRECT")),
    }
}

/// The shape of every outbound frame; absent fields are left out.
#[derive(Serialize, Default)]
struct Out<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    op: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    intent: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a RawValue>,
}

fn encode<T: Serialize>(value: &T) -> ByteString {
    // Serializing strings and raw JSON into a Vec cannot fail.
    ByteString::from(serde_json::to_string(value).unwrap_or_default())
}

fn to_raw<T: Serialize>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// The `source` object the hub stamps on a session's frames, made once per
/// session.
pub fn source(session: Option<&str>, service: &str) -> Box<RawValue> {
    #[derive(Serialize)]
    struct Source<'a> {
        session: Option<&'a str>,
        service: &'a str,
    }
    to_raw(&Source { session, service })
}

/// An `EVENT` as routed: the sender's fields unchanged, `source` stamped.
pub fn routed_event(
    id: &str,
    event: &str,
    data: Option<&RawValue>,
    intent: Option<&RawValue>,
    source: &RawValue,
) -> ByteString {
    encode(&Out {
        id: Some(id),
        op: op::EVENT,
        event: Some(event),
        data,
        intent,
        source: Some(source),
    })
}

/// A `REPLY` as routed back to the original sender, `source` = the replier.
pub fn routed_reply(id: &str, event: Option<&str>, data: Option<&RawValue>, source: &RawValue) -> ByteString {
    encode(&Out {
        id: Some(id),
        op: op::REPLY,
        event,
        data,
        source: Some(source),
        ..Out::default()
    })
}

/// `ERROR` reply (§8).
pub fn error(id: Option<&str>, code: ErrorCode, message: &str) -> ByteString {
    #[derive(Serialize)]
    struct Data<'a> {
        code: &'a str,
        message: &'a str,
    }
    let data = to_raw(&Data {
        code: code.slug(),
        message,
    });
    encode(&Out {
        id,
        op: op::REPLY,
        event: Some("ERROR"),
        data: Some(&data),
        ..Out::default()
    })
}

/// The successful `IDENTIFY` reply (§6).
pub fn identified(
    id: Option<&str>,
    session: &str,
    service: &str,
    groups: &[GroupName],
    heartbeat_interval_ms: u64,
    node: &str,
) -> ByteString {
    #[derive(Serialize)]
    struct Data<'a> {
        session: &'a str,
        service: &'a str,
        groups: Vec<&'a str>,
        heartbeat_interval_ms: u64,
        node: &'a str,
    }
    let data = to_raw(&Data {
        session,
        service,
        groups: groups.iter().map(GroupName::as_str).collect(),
        heartbeat_interval_ms,
        node,
    });
    encode(&Out {
        id,
        op: op::REPLY,
        event: Some("IDENTIFY"),
        data: Some(&data),
        ..Out::default()
    })
}

/// A `PING` from the hub (heartbeat) or a `PONG` answering a client's `PING`.
pub fn ping_pong(op: u8, id: Option<&str>, data: Option<&RawValue>) -> ByteString {
    encode(&Out {
        id,
        op,
        data,
        ..Out::default()
    })
}

/// The `DISCONNECT` the hub sends before closing with `code`.
pub fn disconnect(code: CloseCode) -> ByteString {
    #[derive(Serialize)]
    struct Data {
        code: u16,
        reason: &'static str,
    }
    let data = to_raw(&Data {
        code: code.code(),
        reason: code.slug(),
    });
    encode(&Out {
        op: op::DISCONNECT,
        data: Some(&data),
        ..Out::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> FrameError {
        parse(text).expect_err("should be refused")
    }

    #[test]
    fn event_keeps_data_and_intent_verbatim() {
        let text = r#"{"op":0,"id":"a","event":"E","data":{"n":123456789012345678901234567890,"x":0.10000000000000000000001},"intent":{"target":"GROUP","identifier":"g1","extra":1}}"#;
        let Ok(Inbound::Event(ev)) = parse(text) else {
            panic!("not an event")
        };
        assert_eq!(
            ev.data.map(RawValue::get),
            Some(r#"{"n":123456789012345678901234567890,"x":0.10000000000000000000001}"#)
        );
        assert_eq!(ev.intent, Intent::Group(GroupName::parse("g1").unwrap()));
        let src = source(Some("s1"), "svc");
        let out = routed_event("a", &ev.event, ev.data, ev.intent_raw, &src);
        assert_eq!(
            &*out,
            r#"{"id":"a","op":0,"event":"E","data":{"n":123456789012345678901234567890,"x":0.10000000000000000000001},"intent":{"target":"GROUP","identifier":"g1","extra":1},"source":{"session":"s1","service":"svc"}}"#
        );
    }

    #[test]
    fn only_a_json_object_is_a_frame() {
        assert!(is_json_object(" \t\r\n{\"op\":3}"));
        assert!(!is_json_object("[3]"));
        assert!(!is_json_object(""));
        for text in [r#"[0,"a","E",{"k":1}]"#, r#"[3,"p"]"#, "[2]", r#" ["id-only"]"#] {
            let e = err(text);
            assert_eq!((e.code, e.id, e.op), (ErrorCode::InvalidFrame, None, None), "{text}");
            assert_eq!(e.message, "a frame must be a JSON object");
            assert_eq!(parse_id(text), None, "{text}");
        }
        assert!(
            err("[1,").message.contains("EOF"),
            "a syntax error keeps serde's message"
        );
        let e = err(r#"{"op":1,"id":"i","data":["tok",["g"]]}"#);
        assert_eq!((e.code, e.id.as_deref()), (ErrorCode::InvalidFrame, Some("i")));
    }

    #[test]
    fn missing_or_null_intent_is_global() {
        for text in [
            r#"{"op":0,"event":"E"}"#,
            r#"{"op":0,"event":"E","intent":null}"#,
            r#"{"op":0,"event":"E","intent":{"target":"GLOBAL","identifier":null}}"#,
            r#"{"op":0,"event":"E","intent":{"target":"GLOBAL","identifier":5}}"#,
            r#"{"op":0,"event":"E","intent":{"target":"GLOBAL","identifier":{"any":[1]}}}"#,
        ] {
            let Ok(Inbound::Event(ev)) = parse(text) else {
                panic!("{text}")
            };
            assert_eq!(ev.intent, Intent::Global, "{text}");
        }
    }

    #[test]
    fn a_null_intent_is_forwarded_as_sent() {
        let Ok(Inbound::Event(ev)) = parse(r#"{"op":0,"id":"n","event":"E","intent":null}"#) else {
            panic!("not an event")
        };
        let out = routed_event("n", &ev.event, ev.data, ev.intent_raw, &source(None, "http"));
        assert_eq!(
            &*out,
            r#"{"id":"n","op":0,"event":"E","intent":null,"source":{"session":null,"service":"http"}}"#
        );
    }

    #[test]
    fn ops_outside_the_table_are_unknown_and_other_types_invalid() {
        assert_eq!(err(r#"{"op":6}"#).code, ErrorCode::UnknownOp);
        assert_eq!(
            err(r#"{"op":-1,"id":"q"}"#),
            FrameError::new(Some("q"), ErrorCode::UnknownOp, ErrorCode::UnknownOp.message())
        );
        assert_eq!(err(r#"{"op":1.5}"#).code, ErrorCode::UnknownOp);
        assert_eq!(err(r#"{"op":"0"}"#).code, ErrorCode::InvalidFrame);
        assert_eq!(err(r#"{"op":null}"#).code, ErrorCode::InvalidFrame);
        assert_eq!(err(r#"{"id":"x"}"#).code, ErrorCode::InvalidFrame);
    }

    #[test]
    fn malformed_json_and_wrong_types_are_invalid_frame_with_the_id_when_readable() {
        assert_eq!(err("not json").code, ErrorCode::InvalidFrame);
        assert_eq!(err("[1,2]").code, ErrorCode::InvalidFrame);
        assert_eq!(err("\"str\"").code, ErrorCode::InvalidFrame);
        let e = err(r#"{"op":0,"id":"k","event":5}"#);
        assert_eq!((e.code, e.id.as_deref()), (ErrorCode::InvalidFrame, Some("k")));
        assert_eq!(err(r#"{"op":0,"id":7,"event":"E"}"#).code, ErrorCode::InvalidFrame);
        assert_eq!(err(r#"{"op":0}"#).code, ErrorCode::InvalidFrame);
        assert_eq!(err(r#"{"op":0,"event":""}"#).code, ErrorCode::InvalidFrame);
        assert_eq!(
            err(&format!(r#"{{"op":0,"event":"{}"}}"#, "e".repeat(129))).code,
            ErrorCode::InvalidFrame
        );
        assert_eq!(err(r#"{"op":0,"event":"E","intent":5}"#).code, ErrorCode::InvalidFrame);
    }

    #[test]
    fn only_a_valid_id_is_echoed_in_an_error() {
        let long = "i".repeat(129);
        for text in [
            format!(r#"{{"op":0,"id":"{long}","event":5}}"#),
            r#"{"op":0,"id":"","event":5}"#.to_owned(),
            format!(r#"{{"op":0,"id":"{long}","event":"E"}}"#),
            r#"{"op":0,"id":7,"event":"E"}"#.to_owned(),
        ] {
            assert_eq!(err(&text).id, None, "{text}");
            assert_eq!(parse_id(&text), None, "{text}");
        }
        let fine = "i".repeat(128);
        let text = format!(r#"{{"op":0,"id":"{fine}","event":5}}"#);
        assert_eq!(err(&text).id.as_deref(), Some(&*fine));
        assert_eq!(parse_id(&text).as_deref(), Some(&*fine));
    }

    #[test]
    fn an_error_after_the_op_is_read_carries_the_op() {
        assert_eq!(err(r#"{"op":0,"id":"k"}"#).op, Some(op::EVENT));
        assert_eq!(err(r#"{"op":1,"data":{"groups":[]}}"#).op, Some(op::IDENTIFY));
        assert_eq!(err(r#"{"op":5}"#).op, Some(op::REPLY));
        assert_eq!(err(r#"{"op":0,"event":"E","intent":{}}"#).op, Some(op::EVENT));
        assert_eq!(err(r#"{"op":0,"id":""}"#).op, Some(op::EVENT));
        assert_eq!(err(r#"{"op":1,"id":""}"#).op, Some(op::IDENTIFY));
        assert_eq!(err(r#"{"op":0,"event":"E","intent":5}"#).op, None);
        assert_eq!(err(r#"{"op":9}"#).op, None);
        assert_eq!(err(r#"{"id":"k","event":5}"#).op, None);
    }

    #[test]
    fn bad_intents_are_invalid_intent() {
        for text in [
            r#"{"op":0,"event":"E","intent":{"target":"GROUP"}}"#,
            r#"{"op":0,"event":"E","intent":{"target":"DIRECT","identifier":null}}"#,
            r#"{"op":0,"event":"E","intent":{"target":"EVERYONE","identifier":"x"}}"#,
            r#"{"op":0,"event":"E","intent":{"target":"GROUP","identifier":"bad name"}}"#,
            r#"{"op":0,"event":"E","intent":{"target":"GROUP","identifier":5}}"#,
            r#"{"op":0,"event":"E","intent":{"target":"DIRECT","identifier":["x"]}}"#,
            r#"{"op":0,"event":"E","intent":{}}"#,
            r#"{"op":0,"event":"E","intent":{"target":null,"identifier":"g"}}"#,
            r#"{"op":0,"event":"E","intent":{"identifier":"g"}}"#,
            r#"{"op":0,"event":"E","intent":{"target":5}}"#,
        ] {
            assert_eq!(err(text).code, ErrorCode::InvalidIntent, "{text}");
        }
    }

    #[test]
    fn identify_reads_token_and_optional_groups() {
        let Ok(Inbound::Identify { id, token, groups }) =
            parse(r#"{"op":1,"id":"x1","data":{"token":"t","groups":["a"]}}"#)
        else {
            panic!("not identify")
        };
        assert_eq!(
            (id.as_deref(), token.as_str(), groups),
            (Some("x1"), "t", Some(vec!["a".to_owned()]))
        );
        assert_eq!(err(r#"{"op":1,"data":{"groups":[]}}"#).code, ErrorCode::InvalidFrame);
        assert_eq!(err(r#"{"op":1}"#).code, ErrorCode::InvalidFrame);
    }

    #[test]
    fn reply_needs_an_id() {
        assert_eq!(err(r#"{"op":5,"event":"E"}"#).code, ErrorCode::InvalidFrame);
        let Ok(Inbound::Reply(r)) = parse(r#"{"op":5,"id":"r1","data":[1]}"#) else {
            panic!()
        };
        assert_eq!((&*r.id, r.data.map(RawValue::get)), ("r1", Some("[1]")));
    }

    #[test]
    fn outbound_frames_have_the_documented_shape() {
        assert_eq!(
            &*disconnect(CloseCode::SlowConsumer),
            r#"{"op":2,"data":{"code":4007,"reason":"slow_consumer"}}"#
        );
        assert_eq!(
            &*error(Some("i"), ErrorCode::UnknownTarget, "m"),
            r#"{"id":"i","op":5,"event":"ERROR","data":{"code":"unknown_target","message":"m"}}"#
        );
        assert_eq!(&*ping_pong(op::PING, Some("3"), None), r#"{"id":"3","op":3}"#);
        assert_eq!(
            &*source(None, "http").to_string(),
            r#"{"session":null,"service":"http"}"#
        );
    }
}
