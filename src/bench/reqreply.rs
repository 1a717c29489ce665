//! `reqreply`: each requester sends stamped `EVENT`s to its responder
//! (DIRECT, or a group whose only member is the responder), keeping
//! `--inflight` outstanding; the responder answers each with an op 5 `REPLY`
//! echoing `data`, which the hub routes back. Latency is the round trip.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::cli::{ReqReplyArgs, ReqTarget};
use super::meter::Meter;
use super::payload::{self, Other, Seen};
use super::report::{Histogram, Report};
use super::sessions;
use super::Ctx;
use crate::client::Client;

/// What one requester or responder counted.
#[derive(Default)]
struct Counts {
    latency: Histogram,
    sent: u64,
    replies: u64,
    answered: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Counts {
    fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }
}

pub async fn reqreply(ctx: &Ctx, args: &ReqReplyArgs, mut report: Report) -> Report {
    let groups: Vec<String> = (0..args.pairs).map(|i| format!("rr-{}-{i}", ctx.run_id)).collect();
    let requesters = sessions::open(ctx, Some(Vec::new()), args.pairs).await;
    let mut responders = Vec::with_capacity(args.pairs);
    let mut failed = requesters.check(args.pairs).err();
    // Responders one by one, so that each is known to own its group.
    for group in &groups {
        let joins = match args.target {
            ReqTarget::Group => vec![group.clone()],
            ReqTarget::Direct => Vec::new(),
        };
        let one = sessions::open(ctx, Some(joins), 1).await;
        failed = failed.or(one.check(1).err());
        responders.extend(one.sessions);
    }
    report.sessions += (requesters.sessions.len() + responders.len()) as u64;
    report.connect_failed += requesters.failed;
    report.connect_identify_per_sec = report.connect_identify_per_sec.or(requesters.rate().map(f64::round));
    if let Some(e) = failed {
        report.error = Some(e);
        return report;
    }

    let (responders, responder_ids): (Vec<Client>, Vec<String>) = responders.into_iter().unzip();
    let intents: Vec<String> = (0..args.pairs)
        .map(|i| match args.target {
            ReqTarget::Direct => payload::intent("DIRECT", &responder_ids[i]),
            ReqTarget::Group => payload::intent("GROUP", &groups[i]),
        })
        .collect();

    let (stop_tx, stop_rx) = watch::channel(false);
    let answering: Vec<_> = responders
        .into_iter()
        .map(|client| tokio::spawn(respond(client, stop_rx.clone())))
        .collect();
    let meter = Meter::start(ctx.pid);
    let start = Instant::now();
    let tasks: Vec<_> = requesters
        .sessions
        .into_iter()
        .zip(intents)
        .enumerate()
        .map(|(i, ((client, _), intent))| tokio::spawn(request(client, i, intent, args.clone(), start)))
        .collect();
    let mut total = Counts::default();
    for task in tasks {
        let wait = Duration::from_secs_f64(args.duration + args.drain + 5.0);
        match tokio::time::timeout(wait, task).await {
            Ok(Ok(c)) => merge(&mut total, c),
            _ => total.error("a requester did not finish".into()),
        }
    }
    let usage = meter.stop();
    let _ = stop_tx.send(true);
    for task in answering {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(c)) => merge(&mut total, c),
            _ => total.error("a responder did not stop".into()),
        }
    }
    let received = total.answered + total.replies;
    report.frames_sent = total.sent;
    report.deliveries_expected = 2 * total.sent;
    report.deliveries_received = received;
    report.lost = 2 * total.sent as i64 - received as i64;
    report.errors = total.errors;
    report.first_error = total.first_error;
    report.latency_us = total.latency.summary();
    usage.fill(&mut report, received, None);
    report.round_trips_per_sec = Some((total.replies as f64 / usage.wall.as_secs_f64().max(1e-9)).round());
    report
}

fn merge(total: &mut Counts, c: Counts) {
    total.latency.merge(&c.latency);
    total.sent += c.sent;
    total.replies += c.replies;
    total.answered += c.answered;
    total.errors += c.errors;
    if total.first_error.is_none() {
        total.first_error = c.first_error;
    }
}

/// Keeps `inflight` requests outstanding until the duration or frame count
/// is reached, then waits (within the drain time) for the last replies.
async fn request(client: Client, pair: usize, intent: String, args: ReqReplyArgs, start: Instant) -> Counts {
    let mut ws = client.into_inner();
    let mut c = Counts::default();
    let end = start + Duration::from_secs_f64(args.duration);
    let drain_end = end + Duration::from_secs_f64(args.drain);
    let limit = args.frames.unwrap_or(u64::MAX);
    let mut outstanding = 0usize;
    loop {
        while outstanding < args.inflight && c.sent < limit && Instant::now() < end {
            let mut frame = String::with_capacity(args.size + 128);
            let id = format!("q{pair}-{}", c.sent);
            payload::event(&mut frame, &id, &intent, payload::now_ns(), c.sent, args.size);
            if let Err(e) = ws.send(Message::text(frame)).await {
                c.error(format!("a requester's socket: {e}"));
                return c;
            }
            c.sent += 1;
            outstanding += 1;
        }
        if outstanding == 0 {
            return c;
        }
        let next = match tokio::time::timeout_at(drain_end.into(), ws.next()).await {
            Err(_) => return c, // the drain is over: the rest are lost
            Ok(next) => next,
        };
        let text = match next {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                c.error(format!("a requester's socket: {e}"));
                return c;
            }
            None => {
                c.error("a requester's socket closed".into());
                return c;
            }
        };
        let now = payload::now_ns();
        let stamp = match payload::find_stamp(&text) {
            Some(s) => Some(s),
            None => match payload::classify(&text) {
                Other::Ping(pong) => {
                    let _ = ws.send(Message::text(pong)).await;
                    None
                }
                Other::Stamp(s) => Some(s),
                Other::Error(e) => {
                    c.error(format!("to a requester: {e}"));
                    None
                }
            },
        };
        if let Some(stamp) = stamp {
            c.latency.record(now.saturating_sub(stamp.t));
            c.replies += 1;
            outstanding -= 1;
        }
    }
}

/// Answers every `EVENT` with a `REPLY` carrying its id and echoing `data`.
async fn respond(client: Client, mut stop: watch::Receiver<bool>) -> Counts {
    let mut ws = client.into_inner();
    let mut c = Counts::default();
    loop {
        let msg = tokio::select! {
            _ = stop.changed() => break,
            msg = ws.next() => msg,
        };
        let text = match msg {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                c.error(format!("a responder's socket: {e}"));
                break;
            }
            None => break,
        };
        let (answer, is_request) = match serde_json::from_str::<Seen>(&text) {
            Ok(Seen {
                op: 0,
                id: Some(id),
                data,
                ..
            }) => (reply(&id, data), true),
            Ok(Seen { op: 3, .. }) => match payload::classify(&text) {
                Other::Ping(pong) => (pong, false),
                _ => continue,
            },
            _ => {
                c.error(format!("to a responder: {}", payload::clip(&text)));
                continue;
            }
        };
        if let Err(e) = ws.send(Message::text(answer)).await {
            c.error(format!("a responder's socket: {e}"));
            break;
        }
        c.answered += u64::from(is_request);
    }
    c
}

/// `{"op":5,"id":<id>,"event":"bench.reply","data":<data>}`.
pub fn reply(id: &str, data: Option<&RawValue>) -> String {
    let id = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".into());
    let data = data.map_or("null", RawValue::get);
    format!("{{\"op\":5,\"id\":{id},\"event\":\"bench.reply\",\"data\":{data}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_carries_the_id_and_echoes_data() {
        let data = RawValue::from_string(r#"{"t":1,"s":2}"#.into()).unwrap();
        assert_eq!(
            reply("q0-1", Some(&data)),
            r#"{"op":5,"id":"q0-1","event":"bench.reply","data":{"t":1,"s":2}}"#
        );
        assert_eq!(
            reply("a\"b", None),
            r#"{"op":5,"id":"a\"b","event":"bench.reply","data":null}"#
        );
    }
}
