//! A reference point for `socket-hub-bench`: the hub's frames served by a
//! plain tokio + tungstenite server with none of the hub's guarantees (no
//! tokens checked, no limits, no heartbeats, no HTTP endpoints, unbounded
//! queues). Run both in the same hour to tell what the hub and its stack add
//! from what the machine costs that hour (see BENCHMARKS.md, "The same
//! frames through a plain tokio server"). It is not a lower bound: its
//! work-stealing runtime moves a connection's tasks between cores.
//!
//! ```sh
//! cargo build --release --examples
//! target/release/examples/lean_baseline 127.0.0.1:9100 &
//! target/release/socket-hub-bench --url ws://127.0.0.1:9100/ws --pid $! fanout --subscribers 100 --rate 1000 --duration 10
//! ```
//!
//! It speaks what the tool uses: `IDENTIFY` (any token; `groups` joined),
//! `EVENT` to `GROUP` or `DIRECT` (the routed frame serialized once with
//! `source` and shared by every recipient), `REPLY` to the sender of the
//! original, `PING` → `PONG`. Anything else is ignored.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

type Tx = mpsc::UnboundedSender<Utf8Bytes>;

#[derive(Default)]
struct Routes {
    sessions: HashMap<String, Tx>,
    groups: HashMap<String, Vec<(String, Tx)>>,
    /// Who sent each `EVENT` id, for `REPLY`s (forgotten all at once at 100,000).
    pending: HashMap<String, Tx>,
}

#[derive(Deserialize)]
struct Incoming<'a> {
    op: u8,
    #[serde(borrow, default)]
    id: Option<&'a str>,
    #[serde(borrow, default)]
    event: Option<&'a str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    intent: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Intent<'a> {
    #[serde(borrow)]
    target: &'a str,
    #[serde(borrow, default)]
    identifier: Option<&'a str>,
}

#[derive(Deserialize, Default)]
struct IdentifyData {
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Serialize)]
struct Outgoing<'a> {
    id: &'a str,
    op: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    intent: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<Source<'a>>,
}

#[derive(Serialize)]
struct Source<'a> {
    session: &'a str,
    service: &'a str,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9100".to_string());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("lean_baseline listening on {}", listener.local_addr()?);
    let routes = Arc::new(RwLock::new(Routes::default()));
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(serve(tcp, routes.clone()));
    }
}

async fn serve(tcp: TcpStream, routes: Arc<RwLock<Routes>>) {
    let _ = tcp.set_nodelay(true);
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Utf8Bytes>();
    // The writer sends everything queued, then flushes once.
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            sink.feed(Message::Text(text)).await?;
            while let Ok(text) = rx.try_recv() {
                sink.feed(Message::Text(text)).await?;
            }
            sink.flush().await?;
        }
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    });

    let mut me: Option<(String, Vec<String>)> = None;
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else { continue };
        let Ok(frame) = serde_json::from_str::<Incoming>(&text) else {
            continue;
        };
        match (frame.op, &me) {
            (1, None) => {
                let data: IdentifyData = frame
                    .data
                    .and_then(|d| serde_json::from_str(d.get()).ok())
                    .unwrap_or_default();
                let session = uuid::Uuid::new_v4().to_string();
                let mut table = write(&routes);
                table.sessions.insert(session.clone(), tx.clone());
                for group in &data.groups {
                    table
                        .groups
                        .entry(group.clone())
                        .or_default()
                        .push((session.clone(), tx.clone()));
                }
                drop(table);
                let answer = serde_json::json!({"session": session, "service": "baseline", "groups": data.groups,
                    "heartbeat_interval_ms": 3_600_000, "node": "baseline"});
                let reply = serde_json::json!({"op": 5, "id": frame.id, "event": "IDENTIFY", "data": answer});
                let _ = tx.send(reply.to_string().into());
                me = Some((session, data.groups));
            }
            (3, _) => {
                let pong = Outgoing {
                    id: frame.id.unwrap_or(""),
                    op: 4,
                    event: None,
                    data: frame.data,
                    intent: None,
                    source: None,
                };
                if let Ok(text) = serde_json::to_string(&pong) {
                    let _ = tx.send(text.into());
                }
            }
            (0, Some((session, _))) => route_event(&routes, &frame, session, &tx),
            (5, Some((session, _))) => {
                let Some(id) = frame.id else { continue };
                let Some(to) = read(&routes).pending.get(id).cloned() else {
                    continue;
                };
                let source = Some(Source {
                    session,
                    service: "baseline",
                });
                let out = Outgoing {
                    id,
                    op: 5,
                    event: frame.event,
                    data: frame.data,
                    intent: None,
                    source,
                };
                if let Ok(text) = serde_json::to_string(&out) {
                    let _ = to.send(text.into());
                }
            }
            _ => {}
        }
    }

    if let Some((session, groups)) = me {
        let mut table = write(&routes);
        table.sessions.remove(&session);
        for group in groups {
            if let Some(members) = table.groups.get_mut(&group) {
                members.retain(|(member, _)| *member != session);
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

fn route_event(routes: &RwLock<Routes>, frame: &Incoming, session: &str, tx: &Tx) {
    let Some(intent) = frame.intent.and_then(|i| serde_json::from_str::<Intent>(i.get()).ok()) else {
        return;
    };
    let assigned;
    let id = match frame.id {
        Some(id) => id,
        None => {
            assigned = uuid::Uuid::new_v4().to_string();
            &assigned
        }
    };
    let out = Outgoing {
        id,
        op: 0,
        event: frame.event,
        data: frame.data,
        intent: frame.intent,
        source: Some(Source {
            session,
            service: "baseline",
        }),
    };
    let Ok(text) = serde_json::to_string(&out) else { return };
    let text = Utf8Bytes::from(text);
    if frame.id.is_some() {
        let mut table = write(routes);
        if table.pending.len() >= 100_000 {
            table.pending.clear();
        }
        table.pending.insert(id.to_string(), tx.clone());
    }
    let table = read(routes);
    match (intent.target, intent.identifier) {
        ("GROUP", Some(group)) => {
            for (member, to) in table.groups.get(group).into_iter().flatten() {
                if member != session {
                    let _ = to.send(text.clone());
                }
            }
        }
        ("DIRECT", Some(to)) => {
            if let Some(to) = table.sessions.get(to) {
                let _ = to.send(text);
            }
        }
        _ => {}
    }
}

fn read(routes: &RwLock<Routes>) -> std::sync::RwLockReadGuard<'_, Routes> {
    routes.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write(routes: &RwLock<Routes>) -> std::sync::RwLockWriteGuard<'_, Routes> {
    routes.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}
