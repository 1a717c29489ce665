//! Counters and gauges behind `/status` and `/metrics`. They are
//! prometheus-client metrics (atomics inside), registered once; hot paths
//! hold cloned handles so that counting is one atomic add, never a lookup.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::protocol::CloseCode;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabel {
    pub version: &'static str,
}

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
    /// Open WebSocket connections (identified or not); also the count that
    /// `limits.max_connections` is checked against.
    pub connections: Gauge,
    /// Identified sessions.
    pub identified: Gauge,
    /// Identified sessions per service.
    pub sessions_per_service: Family<ServiceLabel, Gauge>,
    /// Groups with at least one member.
    pub groups: Gauge,
    received: [Counter; 7],
    delivered: [Counter; 7],
    dropped: [Counter; 4],
    disconnects: Vec<(CloseCode, Counter)>,
    /// Sessions evicted because their outbound queue passed the limit.
    pub slow_consumer_disconnects: Counter,
    /// Sessions closed for sending above their rate limit.
    pub rate_limit_disconnects: Counter,
    /// WebSocket upgrades refused with 503 (connection cap or connect rate).
    pub refused_upgrades: Counter,
    /// Seconds from a frame's arrival at its session to its hand-off to the
    /// recipients' queues.
    pub routing_latency: Histogram,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("socket_hub");
        let connections = Gauge::default();
        registry.register("connections", "Open WebSocket connections", connections.clone());
        let identified = Gauge::default();
        registry.register("sessions_identified", "Identified sessions", identified.clone());
        let sessions_per_service = Family::<ServiceLabel, Gauge>::default();
        registry.register(
            "service_sessions",
            "Identified sessions per service",
            sessions_per_service.clone(),
        );
        let groups = Gauge::default();
        registry.register("groups", "Groups with at least one member", groups.clone());

        let received_family = Family::<OpLabel, Counter>::default();
        registry.register(
            "frames_received",
            "Frames received from clients, by op",
            received_family.clone(),
        );
        let received = OP_NAMES.map(|op| received_family.get_or_create(&OpLabel { op }).clone());
        let delivered_family = Family::<OpLabel, Counter>::default();
        registry.register(
            "frames_delivered",
            "Frames handed to recipients' queues, by op",
            delivered_family.clone(),
        );
        let delivered = OP_NAMES.map(|op| delivered_family.get_or_create(&OpLabel { op }).clone());
        let dropped_family = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "frames_dropped",
            "Frames not delivered, by reason",
            dropped_family.clone(),
        );
        let dropped = Drop::ALL.map(|d| dropped_family.get_or_create(&ReasonLabel { reason: d.slug() }).clone());

        let disconnect_family = Family::<CodeLabel, Counter>::default();
        registry.register(
            "disconnects",
            "Closed sessions, by close code",
            disconnect_family.clone(),
        );
        let disconnects = CloseCode::ALL
            .iter()
            .map(|c| {
                (
                    *c,
                    disconnect_family
                        .get_or_create(&CodeLabel {
                            code: c.code().to_string(),
                            reason: c.slug(),
                        })
                        .clone(),
                )
            })
            .collect();
        let slow_consumer_disconnects = Counter::default();
        registry.register(
            "slow_consumer_disconnects",
            "Sessions evicted as slow consumers",
            slow_consumer_disconnects.clone(),
        );
        let rate_limit_disconnects = Counter::default();
        registry.register(
            "rate_limit_disconnects",
            "Sessions closed for exceeding their rate limit",
            rate_limit_disconnects.clone(),
        );
        let refused_upgrades = Counter::default();
        registry.register(
            "refused_upgrades",
            "WebSocket upgrades refused with 503",
            refused_upgrades.clone(),
        );
        let buckets = [
            0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
        ];
        let routing_latency = Histogram::new(buckets);
        registry.register(
            "routing_latency_seconds",
            "Time from a frame's arrival to its hand-off to recipients",
            routing_latency.clone(),
        );
        let build = Family::<BuildLabel, Gauge>::default();
        build
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "Build information", build);

        Arc::new(Metrics {
            registry,
            connections,
            identified,
            sessions_per_service,
            groups,
            received,
            delivered,
            dropped,
            disconnects,
            slow_consumer_disconnects,
            rate_limit_disconnects,
            refused_upgrades,
            routing_latency,
        })
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
        self.dropped[Drop::ALL.iter().position(|d| *d == why).unwrap_or(0)].inc_by(n);
    }

    pub fn disconnected(&self, code: CloseCode) {
        if let Some((_, c)) = self.disconnects.iter().find(|(k, _)| *k == code) {
            c.inc();
        }
        match code {
            CloseCode::SlowConsumer => {
                self.slow_consumer_disconnects.inc();
            }
            CloseCode::RateLimited => {
                self.rate_limit_disconnects.inc();
            }
            _ => {}
        }
    }

    /// Totals for `/status`: received, delivered, dropped.
    pub fn totals(&self) -> (u64, u64, u64) {
        let sum = |cs: &[Counter]| cs.iter().map(Counter::get).sum::<u64>();
        (sum(&self.received), sum(&self.delivered), sum(&self.dropped))
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
