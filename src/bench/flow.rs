//! `fanout` and `direct`: senders stream stamped `EVENT`s to their
//! receivers, at a fixed rate or as fast as a bounded in-flight window
//! allows, and every receiver reads in its own task.
//!
//! Both are the same machine: a *flow* is one sender and the receivers its
//! frames reach. `fanout` is one flow with N receivers (a GROUP intent),
//! `direct` is P flows with one receiver each (a DIRECT intent).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::cli::{DirectArgs, FanoutArgs, Traffic};
use super::meter::Meter;
use super::payload::{self, Other};
use super::report::{Histogram, Report};
use super::sessions::{self, Opened};
use super::Ctx;
use crate::client::{Client, ClientSink, ClientStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Frames a sender feeds before it flushes when sending as fast as it can.
const FLUSH_EVERY: u64 = 32;
/// How often a blocked sender looks again even without a wake-up.
const WINDOW_POLL: Duration = Duration::from_millis(5);

/// One sender, its intent, and its receivers, connected and identified.
struct Flow {
    sender: Client,
    intent: String,
    receivers: Vec<Client>,
}

/// A counter alone on its cache line, so that receivers running on
/// different threads do not slow each other down by sharing one.
#[repr(align(128))]
#[derive(Default)]
struct Counter {
    received: AtomicU64,
    /// The receiver's socket closed (e.g. the hub evicted it): the window
    /// no longer waits for it, and what it misses counts as lost.
    gone: AtomicBool,
}

/// What a sender and its receivers share: how far each receiver got.
struct Progress {
    received: Vec<Counter>,
    /// The sender waits for the window to open.
    waiting: AtomicBool,
    wake: Notify,
}

impl Progress {
    /// Frames received by the slowest receiver still there; `None` when
    /// none is.
    fn slowest(&self) -> Option<u64> {
        self.received
            .iter()
            .filter(|c| !c.gone.load(Ordering::SeqCst))
            .map(|c| c.received.load(Ordering::SeqCst))
            .min()
    }
}

/// What one receiver saw.
#[derive(Default)]
struct Seen {
    latency: Histogram,
    received: u64,
    out_of_order: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Seen {
    fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }
}

pub async fn fanout(ctx: &Ctx, args: &FanoutArgs, report: Report) -> Report {
    let group = format!("bench-{}", ctx.run_id);
    let subscribers = sessions::open(ctx, Some(vec![group.clone()]), args.subscribers).await;
    let publisher = sessions::open(ctx, Some(Vec::new()), 1).await;
    let sessions = (subscribers.sessions.len() + publisher.sessions.len()) as u64;
    let ready = subscribers.check(args.subscribers).and(publisher.check(1));
    let mut report = opened_into(report, &[&subscribers], sessions);
    if let Err(e) = ready {
        report.error = Some(e);
        return report;
    }
    let flow = Flow {
        sender: publisher.sessions.into_iter().next().map(|(c, _)| c).expect("checked"),
        intent: payload::intent("GROUP", &group),
        receivers: subscribers.sessions.into_iter().map(|(c, _)| c).collect(),
    };
    run(ctx, vec![flow], &args.traffic, report).await
}

pub async fn direct(ctx: &Ctx, args: &DirectArgs, report: Report) -> Report {
    let opened = sessions::open(ctx, Some(Vec::new()), 2 * args.pairs).await;
    let ready = opened.check(2 * args.pairs);
    let mut report = opened_into(report, &[&opened], opened.sessions.len() as u64);
    if let Err(e) = ready {
        report.error = Some(e);
        return report;
    }
    let mut all = opened.sessions.into_iter();
    let mut flows = Vec::with_capacity(args.pairs);
    while let (Some((sender, _)), Some((receiver, id))) = (all.next(), all.next()) {
        flows.push(Flow {
            sender,
            intent: payload::intent("DIRECT", &id),
            receivers: vec![receiver],
        });
    }
    run(ctx, flows, &args.traffic, report).await
}

/// Counts what opening the sessions took into the report.
fn opened_into(mut report: Report, measured: &[&Opened], sessions: u64) -> Report {
    report.sessions += sessions;
    report.connect_failed += measured.iter().map(|o| o.failed).sum::<u64>();
    if report.connect_identify_per_sec.is_none() {
        report.connect_identify_per_sec = measured.first().and_then(|o| o.rate()).map(|r| r.round());
    }
    report
}

async fn run(ctx: &Ctx, flows: Vec<Flow>, traffic: &Traffic, mut report: Report) -> Report {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut receivers: Vec<JoinHandle<Seen>> = Vec::new();
    let mut senders = Vec::new();
    let mut progress_all = Vec::new();
    let mut plans = Vec::new();
    for (n, flow) in flows.into_iter().enumerate() {
        let progress = Arc::new(Progress {
            received: flow.receivers.iter().map(|_| Counter::default()).collect(),
            waiting: AtomicBool::new(false),
            wake: Notify::new(),
        });
        for (i, client) in flow.receivers.into_iter().enumerate() {
            receivers.push(tokio::spawn(receive(
                client.into_inner(),
                progress.clone(),
                i,
                stop_rx.clone(),
            )));
        }
        progress_all.push(progress.clone());
        plans.push((n, flow.sender, flow.intent, progress));
    }

    let meter = Meter::start(ctx.pid);
    let start = Instant::now();
    for (n, sender, intent, progress) in plans {
        let (sink, stream) = sender.split();
        let errors = tokio::spawn(sender_errors(stream, stop_rx.clone()));
        let traffic = traffic.clone();
        senders.push((
            tokio::spawn(send(sink, n, intent, traffic, progress.clone(), start)),
            errors,
            progress,
        ));
    }
    let mut sent_total = 0;
    let mut sent_per_flow = Vec::new();
    let mut expected = 0;
    let mut sinks = Vec::new();
    for (task, errors, progress) in senders {
        if let Ok((sent, sink)) = task.await {
            sent_total += sent;
            sent_per_flow.push(sent);
            expected += sent * progress.received.len() as u64;
            sinks.push(sink);
        } else {
            sent_per_flow.push(0);
        }
        report.frames_sent = sent_total;
        receivers.push(errors);
    }
    // Drain: until every frame sent has arrived, or the drain time is over.
    let drain_end = Instant::now() + Duration::from_secs_f64(traffic.drain);
    let drained = || {
        progress_all
            .iter()
            .zip(&sent_per_flow)
            .all(|(p, &sent)| p.slowest().map_or(true, |got| got >= sent))
    };
    while !drained() && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let usage = meter.stop();
    let _ = stop_tx.send(true);

    let mut seen = Seen::default();
    for task in receivers {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(s)) => {
                seen.latency.merge(&s.latency);
                seen.received += s.received;
                seen.out_of_order += s.out_of_order;
                seen.errors += s.errors;
                if seen.first_error.is_none() {
                    seen.first_error = s.first_error;
                }
            }
            _ => seen.error("a receiver did not stop".into()),
        }
    }
    drop(sinks);
    report.deliveries_expected = expected;
    report.deliveries_received = seen.received;
    report.lost = expected as i64 - seen.received as i64;
    report.out_of_order = seen.out_of_order;
    report.errors = seen.errors;
    report.first_error = seen.first_error;
    report.latency_us = seen.latency.summary();
    let rate_met = traffic.rate.map(|rate| {
        let planned = (rate * traffic.duration).floor() as u64;
        let planned = traffic.frames.map_or(planned, |f| f.min(planned));
        let flows = progress_all.len() as u64;
        sent_total as f64 >= 0.99 * (planned * flows) as f64 && report.lost == 0
    });
    usage.fill(&mut report, seen.received, rate_met);
    report
}

/// Sends until the duration or the frame count is reached; returns how many
/// frames went out, and the sink (dropping it early would not close the
/// socket, but keeping it makes the end explicit).
async fn send(
    mut sink: ClientSink,
    flow: usize,
    intent: String,
    traffic: Traffic,
    progress: Arc<Progress>,
    start: Instant,
) -> (u64, ClientSink) {
    let end = start + Duration::from_secs_f64(traffic.duration);
    let limit = traffic.frames.unwrap_or(u64::MAX);
    let mut seq = 0u64;
    let mut unflushed = 0u64;
    let mut slowest = 0u64;
    while seq < limit && Instant::now() < end {
        if let Some(rate) = traffic.rate {
            let due = start + Duration::from_secs_f64(seq as f64 / rate);
            if due >= end {
                break;
            }
            if due > Instant::now() {
                if unflushed > 0 && sink.flush().await.is_err() {
                    break;
                }
                unflushed = 0;
                tokio::time::sleep_until(due.into()).await;
            }
        }
        if seq - slowest >= traffic.window {
            // Every receiver gone (evicted, closed): nothing left to measure.
            let Some(now) = progress.slowest() else { break };
            slowest = now;
            if seq - slowest >= traffic.window {
                if unflushed > 0 && sink.flush().await.is_err() {
                    break;
                }
                unflushed = 0;
                match wait_window(&progress, seq, traffic.window, end).await {
                    Some(now) => slowest = now,
                    None => break,
                }
                continue;
            }
        }
        let mut frame = String::with_capacity(traffic.size + 128);
        payload::event(
            &mut frame,
            &format!("f{flow}-{seq}"),
            &intent,
            payload::now_ns(),
            seq,
            traffic.size,
        );
        if sink.feed(Message::text(frame)).await.is_err() {
            break;
        }
        seq += 1;
        unflushed += 1;
        if traffic.rate.is_some() || unflushed >= FLUSH_EVERY {
            if sink.flush().await.is_err() {
                break;
            }
            unflushed = 0;
        }
    }
    let _ = sink.flush().await;
    (seq, sink)
}

/// Waits until the slowest receiver is less than `window` frames behind
/// `seq`, or `end`; returns the slowest receiver's count, `None` when every
/// receiver is gone.
async fn wait_window(progress: &Progress, seq: u64, window: u64, end: Instant) -> Option<u64> {
    loop {
        progress.waiting.store(true, Ordering::SeqCst);
        let slowest = progress.slowest();
        if slowest.map_or(true, |s| seq - s < window) || Instant::now() >= end {
            progress.waiting.store(false, Ordering::SeqCst);
            return slowest;
        }
        let _ = tokio::time::timeout(WINDOW_POLL, progress.wake.notified()).await;
    }
}

/// Reads the sender's own socket: anything the hub says to a sender in this
/// scenario is an error (`rate_limited`, `unknown_target`, a close).
async fn sender_errors(mut stream: ClientStream, mut stop: watch::Receiver<bool>) -> Seen {
    let mut seen = Seen::default();
    loop {
        let msg = tokio::select! {
            _ = stop.changed() => break,
            msg = stream.next() => msg,
        };
        match msg {
            Some(Ok(Message::Text(text))) => match payload::classify(&text) {
                Other::Ping(_) => {} // the hub's heartbeat is relaxed in a run
                other => seen.error(format!("to the sender: {other:?}")),
            },
            Some(Ok(Message::Close(c))) => {
                seen.error(format!("the sender's socket closed: {c:?}"));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                seen.error(format!("the sender's socket: {e}"));
                break;
            }
            None => break,
        }
    }
    seen
}

/// One receiver: records each frame's latency and sequence, counts it for
/// the sender's window, answers heartbeats.
async fn receive(mut ws: Ws, progress: Arc<Progress>, me: usize, mut stop: watch::Receiver<bool>) -> Seen {
    let mut seen = Seen::default();
    let mut last_seq = None;
    let mut stopped = false;
    // Made once and polled only when no frame is ready: the stop comes after
    // the senders are done, when frames no longer flow.
    let stopping = stop.changed();
    tokio::pin!(stopping);
    loop {
        let msg = tokio::select! {
            biased;
            msg = ws.next() => msg,
            _ = &mut stopping => {
                stopped = true;
                break;
            }
        };
        let text = match msg {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(c))) => {
                seen.error(format!("a receiver's socket closed: {c:?}"));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                seen.error(format!("a receiver's socket: {e}"));
                break;
            }
            None => break,
        };
        let now = payload::now_ns();
        let stamp = match payload::find_stamp(&text) {
            Some(stamp) => stamp,
            None => match payload::classify(&text) {
                Other::Stamp(stamp) => stamp,
                Other::Ping(pong) => {
                    let _ = ws.send(Message::text(pong)).await;
                    continue;
                }
                Other::Error(e) => {
                    seen.error(format!("to a receiver: {e}"));
                    continue;
                }
            },
        };
        seen.latency.record(now.saturating_sub(stamp.t));
        seen.received += 1;
        if last_seq.is_some_and(|last| stamp.seq <= last) {
            seen.out_of_order += 1;
        }
        last_seq = Some(stamp.seq);
        progress.received[me].received.fetch_add(1, Ordering::SeqCst);
        if progress.waiting.load(Ordering::SeqCst) {
            progress.wake.notify_one();
        }
    }
    if !stopped {
        progress.received[me].gone.store(true, Ordering::SeqCst);
        progress.wake.notify_one();
    }
    seen
}
