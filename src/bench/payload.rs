//! The frames the benchmark sends and how it reads them back.
//!
//! Every sent `data` is `{"t":<ns>,"s":<seq>,"p":"xxx…"}`: `t` is the send
//! time in nanoseconds since the tool's own epoch (sender and receivers are
//! in the same process, so one monotonic clock serves both), `s` the
//! sender's sequence number, `p` padding up to the requested size. The hub
//! forwards `data` verbatim, so a receiver finds the stamp with a substring
//! scan instead of parsing every frame: at full speed the tool must not be
//! what it measures. Anything else (heartbeat `PING`s, `ERROR`s) falls back
//! to a real parse.

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::{LazyLock, OnceLock};
use std::time::Instant;

use memchr::memmem;
use serde::Deserialize;
use serde_json::value::RawValue;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the first call in this process.
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Appends a `data` value of `size` bytes (or the stamp alone when `size`
/// is smaller than it).
pub fn write_data(out: &mut String, t: u64, seq: u64, size: usize) {
    let start = out.len();
    let _ = write!(out, "{{\"t\":{t},\"s\":{seq}");
    // `,"p":""}` takes 8 bytes.
    let used = out.len() - start + 8;
    if size > used {
        out.push_str(",\"p\":\"");
        (used..size).for_each(|_| out.push('x'));
        out.push_str("\"}");
    } else {
        out.push('}');
    }
}

/// An `EVENT` frame with the stamp in `data`. `intent` is raw JSON.
pub fn event(out: &mut String, id: &str, intent: &str, t: u64, seq: u64, size: usize) {
    out.clear();
    let _ = write!(
        out,
        "{{\"op\":0,\"id\":\"{id}\",\"event\":\"bench\",\"intent\":{intent},\"data\":"
    );
    write_data(out, t, seq, size);
    out.push('}');
}

/// `{"target":"GROUP","identifier":"<group>"}` or the DIRECT equivalent.
pub fn intent(target: &str, identifier: &str) -> String {
    format!("{{\"target\":\"{target}\",\"identifier\":\"{identifier}\"}}")
}

/// The stamp a sender put in `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub t: u64,
    pub seq: u64,
}

/// Finds the stamp in a routed frame without parsing it, or `None` when
/// the frame has no stamp written the way [`write_data`] writes it.
pub fn find_stamp(frame: &str) -> Option<Stamp> {
    static MARK: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"\"data\":{\"t\":"));
    let bytes = frame.as_bytes();
    let at = MARK.find(bytes)? + MARK.needle().len();
    let (t, rest) = digits(&bytes[at..])?;
    let rest = rest.strip_prefix(b",\"s\":")?;
    let (seq, _) = digits(rest)?;
    Some(Stamp { t, seq })
}

/// A decimal `u64` at the start of `s`, and what follows it.
fn digits(s: &[u8]) -> Option<(u64, &[u8])> {
    let end = s.iter().position(|b| !b.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 || end > 19 {
        return None; // none, or more than a u64 surely holds
    }
    let value = s[..end].iter().fold(0u64, |v, &d| v * 10 + u64::from(d - b'0'));
    Some((value, &s[end..]))
}

/// A frame as the tool needs to see it when the fast path does not apply.
#[derive(Debug, Deserialize)]
pub struct Seen<'a> {
    pub op: u8,
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub event: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub data: Option<&'a RawValue>,
}

/// What a receiver does with a frame that has no fast-path stamp.
#[derive(Debug, PartialEq, Eq)]
pub enum Other {
    /// A stamp after all (the hub rewrote the whitespace of `data`).
    Stamp(Stamp),
    /// The hub's heartbeat: answer with this `PONG`.
    Ping(String),
    /// An `ERROR` reply or anything unexpected, described.
    Error(String),
}

/// Parses a frame [`find_stamp`] could not read.
pub fn classify(frame: &str) -> Other {
    #[derive(Deserialize)]
    struct Data {
        t: u64,
        s: u64,
    }
    let Ok(seen) = serde_json::from_str::<Seen>(frame) else {
        return Other::Error(format!("not a frame: {}", clip(frame)));
    };
    if seen.op == 3 {
        let id = serde_json::to_string(&seen.id).unwrap_or_else(|_| "null".into());
        return Other::Ping(format!("{{\"op\":4,\"id\":{id}}}"));
    }
    if seen.event.as_deref() != Some("ERROR") {
        if let Some(d) = seen.data.and_then(|d| serde_json::from_str::<Data>(d.get()).ok()) {
            return Other::Stamp(Stamp { t: d.t, seq: d.s });
        }
    }
    Other::Error(clip(frame).to_string())
}

/// The first 200 bytes of a frame, for error messages.
pub fn clip(s: &str) -> &str {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_padded_to_the_requested_size() {
        for size in [40, 100, 1000] {
            let mut s = String::new();
            write_data(&mut s, 123_456_789_012, 77, size);
            assert_eq!(s.len(), size, "{s}");
            let v: serde_json::Value = serde_json::from_str(&s).unwrap();
            assert_eq!((v["t"].as_u64(), v["s"].as_u64()), (Some(123_456_789_012), Some(77)));
        }
    }

    #[test]
    fn data_smaller_than_the_stamp_is_the_stamp_alone() {
        let mut s = String::new();
        write_data(&mut s, 5, 6, 1);
        assert_eq!(s, r#"{"t":5,"s":6}"#);
    }

    #[test]
    fn the_stamp_is_found_in_a_routed_frame() {
        let mut sent = String::new();
        event(&mut sent, "f9", &intent("GROUP", "bench"), 42, 9, 100);
        assert!(serde_json::from_str::<serde_json::Value>(&sent).is_ok());
        // What the hub makes of it: fields reordered, `source` added.
        let routed = format!(
            r#"{{"id":"f9","op":0,"event":"bench","data":{},"intent":{{"target":"GROUP","identifier":"bench"}},"source":{{"session":"a","service":"demo"}}}}"#,
            &sent[sent.find("{\"t\"").unwrap()..sent.len() - 1]
        );
        assert_eq!(find_stamp(&routed), Some(Stamp { t: 42, seq: 9 }));
    }

    #[test]
    fn a_frame_without_the_mark_or_with_bad_numbers_has_no_stamp() {
        assert_eq!(find_stamp(r#"{"op":3,"id":"1"}"#), None);
        assert_eq!(find_stamp(r#"{"data":{"t":,"s":1}}"#), None);
        assert_eq!(find_stamp(r#"{"data":{"t":12,"x":1}}"#), None);
        assert_eq!(find_stamp(r#"{"data":{"t":99999999999999999999,"s":1}}"#), None);
        assert_eq!(
            find_stamp(r#"{"data":{"t":18446744073709551,"s":0}"#),
            Some(Stamp {
                t: 18446744073709551,
                seq: 0
            })
        );
        assert_eq!(find_stamp("\"data\":{\"t\":5,\"s\":"), None);
    }

    #[test]
    fn frames_without_a_plain_stamp_fall_back_to_a_parse() {
        let spaced = r#"{"op":0,"id":"x","event":"bench","data":{ "t": 7, "s": 8, "p": "xx" }}"#;
        assert_eq!(find_stamp(spaced), None);
        assert_eq!(classify(spaced), Other::Stamp(Stamp { t: 7, seq: 8 }));
        assert_eq!(
            classify(r#"{"op":3,"id":"12"}"#),
            Other::Ping(r#"{"op":4,"id":"12"}"#.into())
        );
        let error = r#"{"id":"f1","op":5,"event":"ERROR","data":{"code":"rate_limited","message":"m"}}"#;
        assert_eq!(classify(error), Other::Error(error.into()));
        assert_eq!(classify("nonsense"), Other::Error("not a frame: nonsense".into()));
    }
}
