//! Counters and gauges behind `/status` and `/metrics`, kept in the
//! `prometheus` crate's metrics (atomics inside) and exposed in the classic
//! Prometheus text format that every scraper and `promtool` read. Hot paths
//! hold resolved handles, so counting is one atomic add, never a lookup.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::protocol::CloseCode;

/// Op names, indexed by opcode, for the per-op counters; the last one counts
/// messages that had no valid op (malformed JSON, binary messages).
pub const OP_NAMES: [&str; 7] = ["event", "identify", "disconnect", "ping", "pong", "reply", "invalid"];

/// The index of "invalid" in [`OP_NAMES`].
pub const OP_INVALID: u8 = 6;

/// Why a frame was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Refused by parsing or by the rules (`invalid_frame`, `not_identified`, ...).
    Invalid,
    /// Over the sender's rate limit.
    RateLimited,
    /// No recipient (`unknown_target`, `unknown_request`).
    NoRecipient,
    /// Queued for a session that was then evicted as a slow consumer.
    SlowConsumer,
}

impl Drop {
    const ALL: [Drop; 4] = [Drop::Invalid, Drop::RateLimited, Drop::NoRecipient, Drop::SlowConsumer];

    fn slug(self) -> &'static str {
        match self {
            Drop::Invalid => "invalid",
            Drop::RateLimited => "rate_limited",
            Drop::NoRecipient => "no_recipient",
            Drop::SlowConsumer => "slow_consumer",
        }
    }
}

/// Every metric of the hub. Shared as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections; also what `limits.max_connections` is
    /// checked against (the gauge mirrors it for scrapes).
    open: AtomicI64,
    connections: IntGauge,
    /// Identified sessions.
    pub identified: IntGauge,
    sessions_per_service: IntGaugeVec,
    /// Groups with at least one member.
    pub groups: IntGauge,
    received: Vec<IntCounter>,
    delivered: Vec<IntCounter>,
    dropped: Vec<IntCounter>,
    disconnects: Vec<(CloseCode, IntCounter)>,
    /// Connections that ended without a close frame (1006, which no peer sends).
    connections_lost: IntCounter,
    /// Sessions evicted because their outbound queue passed the limit.
    pub slow_consumer_disconnects: IntCounter,
    /// Sessions closed for sending above their rate limit.
    pub rate_limit_disconnects: IntCounter,
    /// WebSocket upgrades refused with 503 (connection cap or connect rate).
    pub refused_upgrades: IntCounter,
    /// Seconds from a frame's arrival at its session to its hand-off to the
    /// recipients' queues.
    pub routing_latency: Histogram,
}

/// Registers a metric; names are fixed and distinct, so this cannot fail
/// unless the code itself is wrong.
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    if let Err(e) = registry.register(Box::new(metric.clone())) {
        log::error!("metric registration failed: {e}");
    }
    metric
}

fn counter_vec(registry: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), &[label]).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    register(registry, vec)
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new_custom(Some("socket_hub".into()), None).unwrap_or_default();
        let gauge = |name: &str, help: &str| {
            register(
                &registry,
                IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}")),
            )
        };
        let counter = |name: &str, help: &str| {
            register(
                &registry,
                IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}")),
            )
        };
        let connections = gauge("connections", "Open WebSocket connections");
        let identified = gauge("sessions_identified", "Identified sessions");
        let sessions_per_service = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("service_sessions", "Identified sessions per service"),
                &["service"],
            )
            .unwrap_or_else(|e| panic!("metric service_sessions: {e}")),
        );
        let groups = gauge("groups", "Groups with at least one member");

        let received_vec = counter_vec(
            &registry,
            "frames_received_total",
            "Messages received from clients, by op",
            "op",
        );
        let received = OP_NAMES
            .iter()
            .map(|op| received_vec.with_label_values(&[*op]))
            .collect();
        let delivered_vec = counter_vec(
            &registry,
            "frames_delivered_total",
            "Frames handed to recipients' queues, by op",
            "op",
        );
        let delivered = OP_NAMES
            .iter()
            .map(|op| delivered_vec.with_label_values(&[*op]))
            .collect();
        let dropped_vec = counter_vec(
            &registry,
            "frames_dropped_total",
            "Frames not delivered, by reason",
            "reason",
        );
        let dropped = Drop::ALL
            .iter()
            .map(|d| dropped_vec.with_label_values(&[d.slug()]))
            .collect();

        let disconnect_vec = register(
            &registry,
            IntCounterVec::new(
                Opts::new("disconnects_total", "Closed sessions, by close code"),
                &["code", "reason"],
            )
            .unwrap_or_else(|e| panic!("metric disconnects_total: {e}")),
        );
        let disconnects = CloseCode::ALL
            .iter()
            .map(|c| {
                (
                    *c,
                    disconnect_vec.with_label_values(&[c.code().to_string().as_str(), c.slug()]),
                )
            })
            .collect();
        let connections_lost = disconnect_vec.with_label_values(&["1006", "connection_lost"]);
        let slow_consumer_disconnects = counter(
            "slow_consumer_disconnects_total",
            "Sessions evicted as slow consumers (close code 4007)",
        );
        let rate_limit_disconnects = counter(
            "rate_limit_disconnects_total",
            "Sessions closed for exceeding their rate limit (close code 4008)",
        );
        let refused_upgrades = counter("refused_upgrades_total", "WebSocket upgrades refused with 503");
        let buckets = vec![
            0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
        ];
        let routing_latency = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "routing_latency_seconds",
                    "Time from a frame's arrival to its hand-off to recipients",
                )
                .buckets(buckets),
            )
            .unwrap_or_else(|e| panic!("metric routing_latency_seconds: {e}")),
        );
        let build = register(
            &registry,
            IntGaugeVec::new(Opts::new("build_info", "Build information"), &["version"])
                .unwrap_or_else(|e| panic!("metric build_info: {e}")),
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        Arc::new(Metrics {
            registry,
            open: AtomicI64::new(0),
            connections,
            identified,
            sessions_per_service,
            groups,
            received,
            delivered,
            dropped,
            disconnects,
            connections_lost,
            slow_consumer_disconnects,
            rate_limit_disconnects,
            refused_upgrades,
            routing_latency,
        })
    }

    /// Takes one of `max` connection places; false when all are taken.
    pub fn try_open_connection(&self, max: usize) -> bool {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before >= max as i64 {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        self.connections.set(before + 1);
        true
    }

    /// Gives back a place taken with [`Metrics::try_open_connection`].
    pub fn close_connection(&self) {
        let after = self.open.fetch_sub(1, Ordering::AcqRel) - 1;
        self.connections.set(after);
    }

    /// Open WebSocket connections.
    pub fn open_connections(&self) -> i64 {
        self.open.load(Ordering::Acquire)
    }

    pub fn service_joined(&self, service: &str) {
        self.sessions_per_service.with_label_values(&[service]).inc();
    }

    pub fn service_left(&self, service: &str) {
        self.sessions_per_service.with_label_values(&[service]).dec();
    }

    /// Counts one message received with this opcode (0..5, or [`OP_INVALID`]).
    pub fn received(&self, op: u8) {
        if let Some(c) = self.received.get(usize::from(op)) {
            c.inc();
        }
    }

    /// Counts `n` deliveries of a frame with this opcode.
    pub fn delivered(&self, op: u8, n: u64) {
        if let Some(c) = self.delivered.get(usize::from(op)) {
            c.inc_by(n);
        }
    }

    pub fn dropped(&self, why: Drop, n: u64) {
        if let Some(i) = Drop::ALL.iter().position(|d| *d == why) {
            self.dropped[i].inc_by(n);
        }
    }

    pub fn disconnected(&self, code: CloseCode) {
        if let Some((_, c)) = self.disconnects.iter().find(|(k, _)| *k == code) {
            c.inc();
        }
        match code {
            CloseCode::SlowConsumer => self.slow_consumer_disconnects.inc(),
            CloseCode::RateLimited => self.rate_limit_disconnects.inc(),
            _ => {}
        }
    }

    /// A session whose connection ended without a close handshake.
    pub fn connection_lost(&self) {
        self.connections_lost.inc();
    }

    /// Totals for `/status`: received, delivered, dropped.
    pub fn totals(&self) -> (u64, u64, u64) {
        let sum = |cs: &[IntCounter]| cs.iter().map(IntCounter::get).sum::<u64>();
        (sum(&self.received), sum(&self.delivered), sum(&self.dropped))
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("encoding metrics failed: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_family_and_counts() {
        let m = Metrics::new();
        m.received(0);
        m.delivered(0, 3);
        m.dropped(Drop::NoRecipient, 1);
        m.disconnected(CloseCode::SlowConsumer);
        m.connection_lost();
        assert!(m.try_open_connection(1));
        assert!(!m.try_open_connection(1));
        let text = m.encode();
        for line in [
            "socket_hub_frames_received_total{op=\"event\"} 1",
            "socket_hub_frames_delivered_total{op=\"event\"} 3",
            "socket_hub_frames_dropped_total{reason=\"no_recipient\"} 1",
            "socket_hub_disconnects_total{code=\"4007\",reason=\"slow_consumer\"} 1",
            "socket_hub_slow_consumer_disconnects_total 1",
            "socket_hub_disconnects_total{code=\"1006\",reason=\"connection_lost\"} 1",
            "socket_hub_connections 1",
            "socket_hub_build_info{version=",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(m.totals(), (1, 3, 1));
        m.close_connection();
        assert_eq!(m.open_connections(), 0);
    }
}
