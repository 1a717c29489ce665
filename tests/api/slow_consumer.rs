//! Slow consumers (PROTOCOL §9): a subscriber that never reads while a
//! publisher floods its group with 50 MiB is evicted with 4007 and counted,
//! the hub's memory stays flat, and every other subscriber gets every frame in
//! order; a reader that only pauses, with its queue under
//! `limits.max_outbound_bytes`, is not evicted.
//!
//! The hub runs as its own process (the built `socket-hub` binary) so that its
//! resident memory can be read from `/proc/<pid>/status` without the test's
//! own buffers mixing in. Readers run on their own threads and runtimes so
//! that they read while the publisher sends.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use socket_hub::client::{Client, ClientError, Received, WAIT};
use tokio::sync::{oneshot, Notify};

use crate::helpers::*;
use crate::process::*;

const GROUP: &str = "flood";
const TO_GROUP: &str = r#"{"target":"GROUP","identifier":"flood"}"#;
/// Bytes of `data` in each published frame (about 1180 bytes routed).
const DATA_BYTES: usize = 1024;
/// 50 MiB of `data` in all.
const FRAMES: u64 = 50 * 1024 * 1024 / DATA_BYTES as u64;
const READERS: usize = 3;
/// How far the publisher may run ahead of the slowest reader: 128 frames,
/// about 150 KB, far under limits.max_outbound_bytes (1 MiB). A debug-build
/// reader on a busy 2-core machine cannot keep up with a publisher that never
/// waits for it, and would rightly be evicted too; within this window a
/// reader that keeps reading never has 1 MiB queued.
const WINDOW: u64 = 128;
/// How much the hub's RSS may grow while 50 MiB go through it.
const RSS_BOUND_KIB: u64 = 16 * 1024;
/// How much more the peak may be in the second half of the flood than in
/// the first: memory must not grow with the volume sent.
const RSS_SECOND_HALF_KIB: u64 = 4 * 1024;
/// Longest wait for any one frame (a debug build on a busy 2-core machine).
const FRAME_WAIT: Duration = Duration::from_secs(20);
/// Longest the whole flood may take.
const FLOOD_WAIT: Duration = Duration::from_secs(90);

/// The peak `VmRSS` in each half of the flood.
struct RssPeaks {
    first_half: u64,
    second_half: u64,
    samples: u32,
}

/// Samples the hub's `VmRSS` every 50 ms until `stop` (at most 3 minutes),
/// keeping the peak before and after `half` is set.
fn sample_rss(pid: u32, half: Arc<AtomicBool>, stop: Arc<AtomicBool>) -> JoinHandle<RssPeaks> {
    std::thread::spawn(move || {
        let mut peaks = RssPeaks {
            first_half: 0,
            second_half: 0,
            samples: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
            let Some(rss) = try_proc_kib(pid, "VmRSS") else { break };
            let peak = if half.load(Ordering::Acquire) {
                &mut peaks.second_half
            } else {
                &mut peaks.first_half
            };
            *peak = (*peak).max(rss);
            peaks.samples += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        peaks
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------
// The frames.

/// A flood of `frames` EVENTs with `intent`, from `publisher`. Frame `seq`
/// has id `seq` and data `{"seq":<seq>,"pad":"xx…"}` of exactly `data_bytes`.
struct Flood {
    frames: u64,
    data_bytes: usize,
    intent: &'static str,
    publisher: String,
}

impl Flood {
    fn data(&self, seq: u64) -> String {
        let pad = self.data_bytes - r#"{"seq":,"pad":""}"#.len() - seq.to_string().len();
        let data = format!(r#"{{"seq":{seq},"pad":"{}"}}"#, "x".repeat(pad));
        debug_assert_eq!(data.len(), self.data_bytes);
        data
    }

    /// Frame `seq` as the publisher sends it.
    fn event(&self, seq: u64) -> String {
        format!(
            r#"{{"op":0,"id":"{seq}","event":"FLOOD","intent":{},"data":{}}}"#,
            self.intent,
            self.data(seq)
        )
    }

    /// Frame `seq` exactly as a recipient must get it.
    fn routed(&self, seq: u64) -> Value {
        json!({
            "op": 0,
            "id": seq.to_string(),
            "event": "FLOOD",
            "intent": serde_json::from_str::<Value>(self.intent).unwrap(),
            "data": serde_json::from_str::<Value>(&self.data(seq)).unwrap(),
            "source": {"session": self.publisher, "service": "flood"},
        })
    }

    /// Checks that `f` is frame `seq`.
    fn check_frame(&self, f: &Value, seq: u64) -> Result<(), String> {
        if *f == self.routed(seq) {
            Ok(())
        } else {
            let mut shown = f.to_string();
            shown.truncate(300);
            Err(format!("expected frame {seq}, got {shown}"))
        }
    }

    /// Checks that the text `t` is frame `seq`: every 1024th and the last in
    /// full, the others (to spare a debug-build JSON parser 50 MiB) by their
    /// id, op, event, sender and exact data, which the hub forwards verbatim.
    fn check_text(&self, t: &str, seq: u64) -> Result<(), String> {
        if seq % 1024 == 0 || seq == self.frames - 1 {
            let f: Value = serde_json::from_str(t).map_err(|e| format!("frame {seq} is not JSON ({e}): {t}"))?;
            return self.check_frame(&f, seq);
        }
        let ok = t.starts_with('{')
            && t.contains(&format!(r#""id":"{seq}""#))
            && t.contains(r#""op":0"#)
            && t.contains(r#""event":"FLOOD""#)
            && t.contains(&format!(r#""data":{}"#, self.data(seq)))
            && t.contains(&format!(r#""session":"{}""#, self.publisher));
        if ok {
            Ok(())
        } else {
            let mut shown = t.to_owned();
            shown.truncate(300);
            Err(format!("expected frame {seq}, got {shown}"))
        }
    }
}

// ---------------------------------------------------------------------------
// The reading subscribers, each on its own thread and runtime.

/// How far each reader has got, so that the publisher stays within WINDOW
/// frames of the slowest one.
#[derive(Default)]
struct Progress {
    received: [AtomicU64; READERS],
    failed: AtomicBool,
    changed: Notify,
}

impl Progress {
    fn slowest(&self) -> u64 {
        self.received
            .iter()
            .map(|r| r.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }

    fn all(&self) -> Vec<u64> {
        self.received.iter().map(|r| r.load(Ordering::Acquire)).collect()
    }

    /// Waits until frame `seq` may be sent; false if a reader failed or none
    /// moved for FRAME_WAIT.
    async fn may_send(&self, seq: u64) -> bool {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if self.failed.load(Ordering::Acquire) {
                return false;
            }
            if seq < self.slowest() + WINDOW {
                return true;
            }
            if tokio::time::timeout(FRAME_WAIT, changed).await.is_err() {
                return false;
            }
        }
    }
}

/// A reading subscriber on its own thread: its report comes on `result`; it
/// stays connected until `release` is sent or dropped.
struct Reader {
    result: oneshot::Receiver<Result<Duration, String>>,
    release: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// Starts reader `n`: it connects and identifies into the group, reports
/// `ready`, reads every frame of the flood in order and checks that it is
/// still connected. Its result is the time from its first frame to its last.
fn spawn_reader(
    n: usize,
    url: String,
    flood: Arc<Flood>,
    progress: Arc<Progress>,
    ready: std::sync::mpsc::Sender<usize>,
) -> Reader {
    let (result_tx, result) = oneshot::channel();
    let (release, release_rx) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("reader runtime");
        rt.block_on(async {
            let mut client = None;
            let report = read_flood(n, &url, &flood, &progress, ready, &mut client).await;
            if report.is_err() {
                progress.failed.store(true, Ordering::Release);
            }
            progress.changed.notify_waiters();
            let _ = result_tx.send(report);
            // Stay connected (bounded) while the test checks /status.
            let _ = tokio::time::timeout(Duration::from_secs(120), release_rx).await;
            drop(client);
        });
    });
    Reader {
        result,
        release,
        thread,
    }
}

async fn read_flood(
    n: usize,
    url: &str,
    flood: &Flood,
    progress: &Progress,
    ready: std::sync::mpsc::Sender<usize>,
    client: &mut Option<Client>,
) -> Result<Duration, String> {
    let c = client.insert(Client::connect(url).await.map_err(|e| format!("reader {n}: {e}"))?);
    c.identify(TOKEN, Some(&[GROUP]))
        .await
        .map_err(|e| format!("reader {n}: identify: {e}"))?;
    let _ = ready.send(n);
    let mut first = None;
    for seq in 0..flood.frames {
        let t = c
            .recv_text(FRAME_WAIT)
            .await
            .map_err(|e| format!("reader {n}: waiting for frame {seq}: {e}"))?;
        first.get_or_insert_with(Instant::now);
        flood.check_text(&t, seq).map_err(|e| format!("reader {n}: {e}"))?;
        progress.received[n].store(seq + 1, Ordering::Release);
        if (seq + 1) % 32 == 0 {
            progress.changed.notify_waiters();
        }
    }
    let elapsed = first.map(|t| t.elapsed()).unwrap_or_default();
    // Never disconnected: nothing else came, and it still answers.
    let ping = json!({"op": 3, "id": format!("after-{n}")});
    c.send_json(&ping).await.map_err(|e| format!("reader {n}: ping: {e}"))?;
    let pong = c.recv_frame().await.map_err(|e| format!("reader {n}: pong: {e}"))?;
    if pong != json!({"op": 4, "id": format!("after-{n}")}) {
        return Err(format!(
            "reader {n}: expected only its PONG after the flood, got {pong}"
        ));
    }
    Ok(elapsed)
}

/// How the slow subscriber's connection ended when it finally read.
#[derive(Debug)]
struct SlowEnd {
    /// Frames of the flood it had received, all in order from 0.
    frames: u64,
    /// The `DISCONNECT` frame's `data`, if one came.
    disconnect: Option<Value>,
    /// The close frame's code and reason, if one came.
    close: Option<(u16, String)>,
    /// The error that ended it instead of a close frame (a reset).
    reset: Option<String>,
}

/// Reads what the slow subscriber was sent, until its connection ends.
async fn drain_slow(slow: &mut Client, flood: &Flood) -> SlowEnd {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut end = SlowEnd {
        frames: 0,
        disconnect: None,
        close: None,
        reset: None,
    };
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match slow.recv(left).await {
            Ok(Received::Frame(f)) if f["op"] == 2 => {
                assert!(end.disconnect.is_none(), "a second DISCONNECT: {f}");
                end.disconnect = Some(f["data"].clone());
            }
            Ok(Received::Frame(f)) => {
                assert!(end.disconnect.is_none(), "a frame after DISCONNECT: {f}");
                if let Err(e) = flood.check_frame(&f, end.frames) {
                    panic!("the slow subscriber's frames are not the flood's first ones in order: {e}");
                }
                end.frames += 1;
            }
            Ok(Received::Closed(close)) => {
                end.close = close;
                return end;
            }
            Ok(Received::Binary(b)) => panic!("a binary message ({} bytes)", b.len()),
            Err(ClientError::Ws(e)) => {
                end.reset = Some(e.to_string());
                return end;
            }
            Err(e) => panic!(
                "the slow subscriber's connection did not end: {e} (after {} frames)",
                end.frames
            ),
        }
    }
}

/// The publisher: identified, in no group, so that nothing of a flood to a
/// group comes back to it; and its session id.
async fn publisher(url: &str) -> (Client, String) {
    let mut publisher = Client::connect(url).await.expect("publisher connects");
    let identified = publisher
        .identify(TOKEN, Some(&[]))
        .await
        .expect("publisher identifies");
    let id = identified["session"].as_str().expect("session id").to_owned();
    (publisher, id)
}

/// The publisher was never disconnected: nothing came back to it (no ERROR,
/// no DISCONNECT), and it still answers.
async fn assert_publisher_still_connected(publisher: &mut Client) {
    assert_silent(publisher, Duration::from_millis(300)).await;
    publisher
        .send_json(&json!({"op": 3, "id": "after-publisher"}))
        .await
        .unwrap();
    assert_eq!(
        publisher.recv_frame().await.unwrap(),
        json!({"op": 4, "id": "after-publisher"})
    );
}

// ---------------------------------------------------------------------------
// The tests.

#[actix_web::test]
async fn a_subscriber_that_never_reads_is_evicted_without_growing_the_hub_or_delaying_the_others() {
    // Every EVENT with an id is remembered for replies (up to
    // max_pending_replies, ~130 B each): bounded by its own setting, and not
    // what this test is about, so keep that table small.
    let mut hub = HubProcess::start(&[("HUB__LIMITS__MAX_PENDING_REPLIES", "1000")]);
    hub.ready().await;
    let pid = hub.pid();
    let url = hub.ws_url();

    let (mut publisher, publisher_id) = publisher(&url).await;
    let flood = Arc::new(Flood {
        frames: FRAMES,
        data_bytes: DATA_BYTES,
        intent: TO_GROUP,
        publisher: publisher_id,
    });
    let progress = Arc::new(Progress::default());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut readers: Vec<_> = (0..READERS)
        .map(|n| spawn_reader(n, url.clone(), flood.clone(), progress.clone(), ready_tx.clone()))
        .collect();
    drop(ready_tx);
    for _ in 0..READERS {
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("every reader identifies within 10 s");
    }

    // Identifies into the group, then never reads until the end.
    let mut slow = Client::connect(&url).await.expect("slow subscriber connects");
    slow.identify(TOKEN, Some(&[GROUP]))
        .await
        .expect("slow subscriber identifies");

    let before = hub.status().await;
    assert_eq!(before["connections"], json!({"total": 5, "identified": 5}), "{before}");
    assert_eq!(before["groups"], json!({GROUP: READERS + 1}), "{before}");
    assert_eq!(before["messages"]["dropped"], 0, "{before}");

    // The baseline once every client is in; the peak from here on.
    let baseline = proc_kib(pid, "VmRSS");
    let hwm_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    let (half, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let sampler = sample_rss(pid, half.clone(), stop.clone());

    let started = Instant::now();
    let publish = async {
        for seq in 0..FRAMES {
            if seq == FRAMES / 2 {
                half.store(true, Ordering::Release);
            }
            if !progress.may_send(seq).await {
                return Err(format!(
                    "the readers stopped at {:?} of {FRAMES} frames",
                    progress.all()
                ));
            }
            publisher
                .send_text(flood.event(seq))
                .await
                .map_err(|e| format!("the publisher could not send frame {seq}: {e}"))?;
        }
        Ok(())
    };
    let published = tokio::time::timeout(FLOOD_WAIT, publish)
        .await
        .unwrap_or_else(|_| Err(format!("the publisher could not send 50 MiB within {FLOOD_WAIT:?}")));
    let publish_time = started.elapsed();

    // Every reader got every frame, in order, and is still connected.
    let mut reader_times = Vec::new();
    for reader in readers.iter_mut() {
        match tokio::time::timeout(FLOOD_WAIT, &mut reader.result).await {
            Ok(Ok(Ok(elapsed))) => reader_times.push(elapsed),
            Ok(Ok(Err(e))) => panic!("{e}"),
            Ok(Err(_)) => panic!("a reader panicked"),
            Err(_) => panic!("a reader did not finish within {FLOOD_WAIT:?}"),
        }
    }
    if let Err(e) = published {
        panic!("{e}");
    }
    let all_read = started.elapsed();
    stop.store(true, Ordering::Release);
    let rss = tokio::task::spawn_blocking(move || sampler.join().expect("sampler"))
        .await
        .expect("join task");
    let hwm = proc_kib(pid, "VmHWM");
    let after = proc_kib(pid, "VmRSS");

    assert_publisher_still_connected(&mut publisher).await;

    // The slow subscriber is out of routing and counted; the others are in.
    let status = hub.status().await;
    assert_eq!(status["connections"], json!({"total": 4, "identified": 4}), "{status}");
    assert_eq!(status["groups"], json!({GROUP: READERS}), "{status}");
    assert_eq!(status["services"], json!({"flood": 4}), "{status}");
    let messages = &status["messages"];
    // 5 IDENTIFYs, the flood, and the 4 PINGs after it.
    assert_eq!(messages["received"], 5 + FRAMES + 4, "{status}");
    let dropped = messages["dropped"].as_u64().expect("dropped");
    assert!(dropped > 0, "the eviction is counted in messages.dropped: {status}");
    let routed = messages["delivered"].as_u64().expect("delivered");
    let to_slow = routed.checked_sub(READERS as u64 * FRAMES);
    assert!(
        to_slow.is_some_and(|n| n >= dropped && n < FRAMES),
        "each reader got the whole flood and the slow one part of it: {status}"
    );

    // When the slow subscriber finally reads: the first frames of the flood in
    // order, then DISCONNECT 4007 and the close, or a reset (§9).
    let end = drain_slow(&mut slow, &flood).await;
    assert!(end.frames < FRAMES, "{end:?}");
    match (&end.disconnect, &end.close, &end.reset) {
        (Some(d), Some(close), None) => {
            assert_eq!(*d, json!({"code": 4007, "reason": "slow_consumer"}));
            assert_eq!(*close, (4007, "slow_consumer".to_owned()));
        }
        (None, None, Some(_)) => {}
        _ => panic!("expected DISCONNECT 4007 and close 4007, or a reset: {end:?}"),
    }

    let peak = if hwm_reset {
        hwm.max(rss.first_half).max(rss.second_half)
    } else {
        rss.first_half.max(rss.second_half)
    };
    let growth = peak.saturating_sub(baseline);
    let to_slow = to_slow.unwrap_or_default();
    println!(
        "slow consumer: {FRAMES} frames of {DATA_BYTES} B data ({:.1} MiB) to {READERS} readers + 1 that never reads",
        mib(FRAMES * DATA_BYTES as u64 / 1024)
    );
    println!(
        "  published in {publish_time:.2?}; all read in {all_read:.2?} (slowest reader {:.2?} first to last frame)",
        reader_times.iter().max().copied().unwrap_or_default()
    );
    println!(
        "  hub RSS: baseline {:.1} MiB; peak {:.1} MiB in the 1st half, {:.1} MiB in the 2nd ({} samples); \
         VmHWM {:.1} MiB{}; after {:.1} MiB; growth {:.1} MiB (bound {:.0} MiB)",
        mib(baseline),
        mib(rss.first_half),
        mib(rss.second_half),
        rss.samples,
        mib(hwm),
        if hwm_reset { "" } else { " (since start)" },
        mib(after),
        mib(growth),
        mib(RSS_BOUND_KIB)
    );
    println!(
        "  slow subscriber: received {} frames, then {}; /status: dropped {dropped}, delivered {routed} \
         ({to_slow} routed to the slow one, {} of them neither received nor counted as dropped)",
        end.frames,
        match (&end.close, &end.reset) {
            (Some((code, reason)), _) => format!("DISCONNECT + close {code} {reason}"),
            (None, Some(e)) => format!("reset ({e})"),
            (None, None) => "EOF".to_owned(),
        },
        to_slow.saturating_sub(dropped + end.frames),
    );
    assert!(
        growth <= RSS_BOUND_KIB,
        "the hub's RSS grew by {:.1} MiB while 50 MiB went through it (baseline {:.1} MiB)",
        mib(growth),
        mib(baseline)
    );
    assert!(
        rss.second_half <= rss.first_half + RSS_SECOND_HALF_KIB,
        "the hub's RSS kept growing with the flood: peak {:.1} MiB in the first half, {:.1} MiB in the second",
        mib(rss.first_half),
        mib(rss.second_half)
    );

    for reader in readers {
        let _ = reader.release.send(());
        tokio::task::spawn_blocking(move || reader.thread.join())
            .await
            .expect("join task")
            .expect("reader thread ends");
    }
}

/// §9: 4007 is for a session whose outbound queue passed
/// `limits.max_outbound_bytes`. Here that limit is 64 MiB and a reader pauses
/// while 16 MiB are sent to its group, so it must not be evicted, and it gets
/// everything once it reads again. The publisher sends each frame only once
/// a second member has it, so the hub routes the frames one at a time.
#[actix_web::test]
async fn a_reader_that_pauses_with_less_than_max_outbound_bytes_queued_is_not_evicted() {
    const FRAMES: u64 = 2048;
    const DATA_BYTES: usize = 8 * 1024;
    let mut hub = HubProcess::start(&[("HUB__LIMITS__MAX_OUTBOUND_BYTES", "67108864")]);
    hub.ready().await;
    let url = hub.ws_url();
    let (mut publisher, publisher_id) = publisher(&url).await;
    let flood = Flood {
        frames: FRAMES,
        data_bytes: DATA_BYTES,
        intent: TO_GROUP,
        publisher: publisher_id,
    };
    let mut pacer = Client::connect(&url).await.expect("pacer connects");
    pacer.identify(TOKEN, Some(&[GROUP])).await.expect("pacer identifies");
    let mut paused = Client::connect(&url).await.expect("reader connects");
    paused.identify(TOKEN, Some(&[GROUP])).await.expect("reader identifies");

    let started = Instant::now();
    let publish = async {
        for seq in 0..FRAMES {
            publisher
                .send_text(flood.event(seq))
                .await
                .expect("the publisher sends");
            let t = pacer.recv_text(FRAME_WAIT).await.expect("the pacer gets each frame");
            flood.check_text(&t, seq).expect("the pacer gets each frame in order");
        }
    };
    tokio::time::timeout(FLOOD_WAIT, publish)
        .await
        .expect("16 MiB are published in time");
    let publish_time = started.elapsed();

    let resumed = Instant::now();
    for seq in 0..FRAMES {
        let t = match paused.recv_text(FRAME_WAIT).await {
            Ok(t) => t,
            Err(e) => panic!(
                "the paused reader lost its connection at frame {seq} of {FRAMES} (16 MiB sent, \
                 limits.max_outbound_bytes 64 MiB): {e}\n/status: {}",
                hub.status().await
            ),
        };
        if let Err(e) = flood.check_text(&t, seq) {
            panic!(
                "the paused reader, with less than limits.max_outbound_bytes queued: {e}\n/status: {}",
                hub.status().await
            );
        }
    }
    println!(
        "paused reader: {FRAMES} frames of {DATA_BYTES} B data published one by one in {publish_time:.2?}, \
         read after the pause in {:.2?}",
        resumed.elapsed()
    );
    paused.send_json(&json!({"op": 3, "id": "after"})).await.unwrap();
    assert_eq!(paused.recv_frame().await.unwrap(), json!({"op": 4, "id": "after"}));
    assert_publisher_still_connected(&mut publisher).await;
    let status = hub.status().await;
    assert_eq!(status["connections"], json!({"total": 3, "identified": 3}), "{status}");
    assert_eq!(status["messages"]["dropped"], 0, "{status}");
    assert_eq!(status["messages"]["delivered"], 2 * FRAMES, "{status}");
}

/// Frames in the error flood (about 34 MB).
const ERROR_FLOOD_FRAMES: u64 = 200_000;
/// How much the hub's RSS may grow while the error flood arrives.
const ERROR_FLOOD_RSS_BOUND_KIB: u64 = 16 * 1024;

/// A client's WebSocket text frame, masked with the all-zero key (so the
/// payload goes as is). The error flood is written as raw bytes: a
/// debug-build WebSocket client cannot send faster than the hub reads.
fn masked_text(payload: &str) -> Vec<u8> {
    let n = payload.len();
    let mut frame = vec![0x81];
    if n < 126 {
        frame.push(0x80 | n as u8);
    } else if n < 65536 {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(n as u64).to_be_bytes());
    }
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(payload.as_bytes());
    frame
}

/// Takes the whole server frames (unmasked) off the front of `buf`:
/// (opcode, payload).
fn take_server_frames(buf: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        if rest.len() < 2 {
            break;
        }
        let (len, header) = match rest[1] & 0x7f {
            126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
            127 if rest.len() >= 10 => {
                let mut b = [0; 8];
                b.copy_from_slice(&rest[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            126 | 127 => break,
            n => (n as usize, 2),
        };
        if rest.len() < header + len {
            break;
        }
        frames.push((rest[0] & 0x0f, rest[header..header + len].to_vec()));
        at += header + len;
    }
    buf.drain(..at);
    frames
}

/// Reads what the socket has into `buf`, within `wait`.
async fn read_more<R: tokio::io::AsyncRead + Unpin>(rd: &mut R, buf: &mut Vec<u8>, wait: Duration, during: &str) {
    use tokio::io::AsyncReadExt;
    let mut chunk = vec![0u8; 64 * 1024];
    let n = tokio::time::timeout(wait, rd.read(&mut chunk))
        .await
        .unwrap_or_else(|_| panic!("nothing to read within {wait:?} during {during}"))
        .expect("read");
    assert!(n > 0, "the hub closed the connection during {during}");
    buf.extend_from_slice(&chunk[..n]);
}

/// A raw TCP connection upgraded and identified (in no group), and what it
/// has read past the `IDENTIFY` answer.
async fn raw_identified(port: u16) -> (tokio::net::TcpStream, Vec<u8>) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("client connects");
    raw_identify(tcp, port, "[]").await
}

/// Upgrades `tcp` and identifies it in `groups` (a JSON list).
async fn raw_identify(tcp: tokio::net::TcpStream, port: u16, groups: &str) -> (tokio::net::TcpStream, Vec<u8>) {
    use tokio::io::AsyncWriteExt;
    let (mut tcp, mut buf) = raw_upgrade(tcp, port).await;
    let identify = format!(r#"{{"op":1,"id":"i","data":{{"token":"{TOKEN}","groups":{groups}}}}}"#);
    tcp.write_all(&masked_text(&identify)).await.expect("identify");
    loop {
        if let Some((_, payload)) = take_server_frames(&mut buf).first() {
            let f: Value = serde_json::from_slice(payload).expect("JSON");
            assert_eq!(f["event"], "IDENTIFY", "{f}");
            return (tcp, buf);
        }
        read_more(&mut tcp, &mut buf, WAIT, "the identify").await;
    }
}

/// Upgrades `tcp` to a WebSocket; what it has read past the response head.
async fn raw_upgrade(mut tcp: tokio::net::TcpStream, port: u16) -> (tokio::net::TcpStream, Vec<u8>) {
    use tokio::io::AsyncWriteExt;
    let upgrade = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(upgrade.as_bytes()).await.expect("upgrade request");
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        read_more(&mut tcp, &mut buf, WAIT, "the upgrade").await;
    };
    assert!(buf.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&buf));
    buf.drain(..head_end);
    (tcp, buf)
}

/// A client socket with a small receive buffer, connected to the hub.
async fn small_buffered(port: u16) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("small receive buffer");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    socket.connect(addr).await.expect("client connects")
}

/// Reads 8 KiB every 20 ms (about 400 KB/s) to the end of the stream, which
/// must not be a reset; the `DISCONNECT` data and the close code it saw
/// (nothing may follow them but the close frame and the end).
async fn read_slowly_to_the_end<R: tokio::io::AsyncRead + Unpin>(
    tcp: &mut R,
    buf: &mut Vec<u8>,
) -> (Option<Value>, Option<u16>) {
    use tokio::io::AsyncReadExt;
    let deadline = Instant::now() + FLOOD_WAIT;
    let mut chunk = vec![0u8; 8 * 1024];
    let mut disconnect = None;
    let mut close = None;
    loop {
        assert!(Instant::now() < deadline, "no end of the stream within {FLOOD_WAIT:?}");
        let n = match tokio::time::timeout(FRAME_WAIT, tcp.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => panic!("the socket failed before the close (DISCONNECT {disconnect:?}): {e}"),
            Err(_) => panic!("nothing to read within {FRAME_WAIT:?}"),
        };
        if n == 0 {
            return (disconnect, close);
        }
        buf.extend_from_slice(&chunk[..n]);
        for (opcode, payload) in take_server_frames(buf) {
            assert!(close.is_none(), "a frame after the close frame");
            if opcode == 8 {
                close = Some(u16::from_be_bytes([payload[0], payload[1]]));
                continue;
            }
            assert!(disconnect.is_none(), "a frame after the DISCONNECT");
            if opcode == 1 {
                let f: Value = serde_json::from_slice(&payload).expect("JSON");
                if f["op"] == 2 {
                    disconnect = Some(f["data"].clone());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn a_client_writing_faster_than_its_session_handles_frames_is_slowed_by_tcp_not_buffered() {
    // A client sends 200,000 frames into an empty group as fast as its
    // socket takes them, and reads the ERROR unknown_target each one gets.
    // The session handles them more slowly than they arrive: what it has not
    // handled yet must wait in the client's socket, not in the hub (the
    // WebSocket decoder used to drain the socket into its own buffer as fast
    // as TCP delivered, about 100 MB/s of hub memory for one such client).
    use tokio::io::AsyncWriteExt;

    let mut hub = HubProcess::start(&[]);
    hub.ready().await;
    let pid = hub.pid();
    let (tcp, mut buf) = raw_identified(hub.port).await;
    let (mut rd, mut wr) = tcp.into_split();

    let baseline = proc_kib(pid, "VmRSS");
    let hwm_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();

    let reader = tokio::spawn(async move {
        let mut errors = 0u64;
        while errors < ERROR_FLOOD_FRAMES {
            read_more(
                &mut rd,
                &mut buf,
                FRAME_WAIT,
                &format!("the flood, after {errors} errors"),
            )
            .await;
            for (opcode, payload) in take_server_frames(&mut buf) {
                assert_eq!(opcode, 1, "a text frame");
                // Every thousandth in full; the others by their code.
                if errors % 1000 == 0 || errors + 1 == ERROR_FLOOD_FRAMES {
                    let f: Value = serde_json::from_slice(&payload).expect("JSON");
                    assert_error(&f, "unknown_target", Some(&format!("f{errors}")));
                } else {
                    assert!(
                        payload.windows(16).any(|w| w == b"\"unknown_target\""),
                        "{}",
                        String::from_utf8_lossy(&payload)
                    );
                }
                errors += 1;
            }
        }
        errors
    });

    let send = async {
        let mut seq = 0u64;
        while seq < ERROR_FLOOD_FRAMES {
            let mut batch = Vec::with_capacity(256 * 1024);
            for _ in 0..1000.min(ERROR_FLOOD_FRAMES - seq) {
                let frame = format!(
                    r#"{{"op":0,"id":"f{seq}","event":"flood","data":{{"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}},"intent":{{"target":"GROUP","identifier":"nobody"}}}}"#
                );
                batch.extend_from_slice(&masked_text(&frame));
                seq += 1;
            }
            wr.write_all(&batch).await.expect("send");
        }
    };
    tokio::time::timeout(FLOOD_WAIT, send)
        .await
        .expect("the flood is sent within its deadline");
    let errors = tokio::time::timeout(FLOOD_WAIT, reader)
        .await
        .expect("every answer arrives within the deadline")
        .expect("reader");
    assert_eq!(errors, ERROR_FLOOD_FRAMES);

    let peak = if hwm_reset {
        proc_kib(pid, "VmHWM")
    } else {
        proc_kib(pid, "VmRSS")
    };
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "error flood: {ERROR_FLOOD_FRAMES} frames; hub RSS {:.1} MiB before, peak {:.1} MiB{}",
        mib(baseline),
        mib(peak),
        if hwm_reset { "" } else { " (at the end)" },
    );
    assert!(
        growth < ERROR_FLOOD_RSS_BOUND_KIB,
        "the hub grew {:.1} MiB while one client flooded it (bound {:.0} MiB)",
        mib(growth),
        mib(ERROR_FLOOD_RSS_BOUND_KIB)
    );
    let status = hub.status().await;
    assert_eq!(status["connections"]["total"], 1, "{status}");
}

#[actix_web::test]
async fn a_frame_announcing_more_than_max_frame_bytes_is_refused_at_its_header() {
    // A frame's header gives its length. One announcing 256 MiB gets
    // DISCONNECT 1009 and the close as soon as its header is in: the hub
    // does not wait for (and hold) a payload larger than it would accept.
    use tokio::io::AsyncWriteExt;

    let mut hub = HubProcess::start(&[]);
    hub.ready().await;
    let (mut tcp, mut buf) = raw_identified(hub.port).await;
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(256u64 << 20).to_be_bytes());
    header.extend_from_slice(&[0; 4]);
    header.extend_from_slice(br#"{"op":3,"id":"#);
    tcp.write_all(&header).await.expect("the header");

    let mut frames = Vec::new();
    while frames.len() < 2 {
        read_more(&mut tcp, &mut buf, WAIT, "the answer to the header").await;
        frames.extend(take_server_frames(&mut buf));
    }
    let (opcode, payload) = &frames[0];
    assert_eq!(*opcode, 1, "a text frame first");
    let f: Value = serde_json::from_slice(payload).expect("JSON");
    assert_eq!(f["op"], 2, "{f}");
    assert_eq!(f["data"], json!({"code": 1009, "reason": "too_big"}), "{f}");
    let (opcode, payload) = &frames[1];
    assert_eq!(*opcode, 8, "then the close frame");
    assert_eq!(&payload[..2], &1009u16.to_be_bytes());
}

#[actix_web::test]
async fn a_slow_consumer_that_still_reads_gets_disconnect_4007_then_the_close() {
    // A member reads, but more slowly than a publisher sends to its group:
    // once its queue passes max_outbound_bytes it is closed, and what was
    // still queued for it is dropped so that its DISCONNECT comes next. It
    // reads on, through what the sockets already hold, to the DISCONNECT,
    // the close frame and the end of the stream: the socket is not reset
    // while the client is still taking bytes in. (This covers the grace
    // that a reading client gets again and again; that the backlog is
    // dropped and the DISCONNECT comes next is covered by outbox.rs's unit
    // tests, as the sockets here hold more than the backlog.) A close grace
    // of a second, so that a test thread held up on a busy machine is not
    // taken for a client that stopped reading.
    let mut hub = HubProcess::start(&[
        ("HUB__LIMITS__MAX_OUTBOUND_BYTES", "262144"),
        ("HUB__LIMITS__CLOSE_GRACE_MS", "1000"),
    ]);
    hub.ready().await;
    let tcp = small_buffered(hub.port).await;
    let (mut tcp, mut buf) = raw_identify(tcp, hub.port, &format!("[\"{GROUP}\"]")).await;

    let publisher = {
        let url = hub.ws_url();
        tokio::spawn(async move {
            let mut c = Client::connect(&url).await.expect("publisher connects");
            c.identify(TOKEN, Some(&[])).await.expect("publisher identifies");
            let data = "x".repeat(DATA_BYTES);
            let frames: Vec<String> = (0..64)
                .map(|i| format!(r#"{{"op":0,"id":"f{i}","event":"E","data":"{data}","intent":{TO_GROUP}}}"#))
                .collect();
            // At most 100 MB, far past the member's limit.
            for _ in 0..1600 {
                if c.send_texts(frames.iter().cloned()).await.is_err() {
                    break;
                }
            }
        })
    };
    let (disconnect, close) = read_slowly_to_the_end(&mut tcp, &mut buf).await;
    // The publisher, which reads none of its own ERRORs once the group is
    // empty, may be held up by TCP: it is stopped, not awaited.
    publisher.abort();
    assert_eq!(disconnect, Some(json!({"code": 4007, "reason": "slow_consumer"})));
    assert_eq!(close, Some(4007));
}

#[actix_web::test]
async fn a_client_that_never_identifies_is_closed_at_the_deadline_even_while_it_reads_too_slowly_to_catch_up() {
    // Unidentified, it sends PINGs with 60 KB of data each and takes in the
    // PONGs at 16 KB/s. Its session has a backlog to hand on all the while,
    // and a session with a backlog does not run (nor does its own timer),
    // so the hub closes it at the identify deadline (plus the close grace).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut hub = HubProcess::start(&[("HUB__LIMITS__IDENTIFY_TIMEOUT_MS", "1000")]);
    hub.ready().await;
    let tcp = small_buffered(hub.port).await;
    let (tcp, _) = raw_upgrade(tcp, hub.port).await;
    let connected = Instant::now();
    let (mut rd, mut wr) = tcp.into_split();
    let writer = tokio::spawn(async move {
        let ping = masked_text(&format!(r#"{{"op":3,"id":"p","data":"{}"}}"#, "x".repeat(60_000)));
        for _ in 0..150 {
            if wr.write_all(&ping).await.is_err() {
                break; // closed
            }
        }
        wr
    });
    let reader = tokio::spawn(async move {
        let mut chunk = vec![0u8; 8 * 1024];
        while let Ok(n) = rd.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    loop {
        let status = hub.status().await;
        if status["connections"]["total"] == 0 {
            break;
        }
        assert!(
            connected.elapsed() < Duration::from_secs(10),
            "still connected after 10 s: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = hub.metrics().await;
    let series = "socket_hub_disconnects_total{code=\"4005\",reason=\"identify_timeout\"} 1\n";
    assert!(metrics.contains(series), "{metrics}");
    writer.abort();
    reader.abort();
}
