"""Prometheus metrics of a gateway node."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge("chat_gateway_connections", "Open Socket.IO connections on this node")
ROOMS = Gauge("chat_gateway_rooms", "Chat rooms with at least one socket on this node")
MEMBERSHIPS = Gauge("chat_gateway_memberships", "Socket-in-room memberships on this node")
EVENTS_IN = Counter("chat_gateway_events_in_total", "Client events received", ["event"])
EVENTS_OUT = Counter(
    "chat_gateway_events_out_total", "Server events delivered to this node's sockets", ["event"]
)
ACKS = Counter("chat_gateway_acks_total", "Acks sent by event and outcome", ["event", "outcome"])
ERRORS = Counter("chat_gateway_errors_total", "Error acks and refusals by code", ["code"])
FANOUT_LATENCY = Histogram(
    "chat_gateway_fanout_latency_seconds",
    "From a send's acceptance to its delivery to this node's sockets",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
PRESENCE_CHANGES = Counter(
    "chat_gateway_presence_changes_total", "Presence changes this node announced", ["cause"]
)
HEARTBEAT_FAILURES = Counter(
    "chat_gateway_presence_heartbeat_failures_total", "Presence heartbeats that failed"
)
FANOUT_RECONNECTS = Counter(
    "chat_gateway_fanout_reconnects_total", "Room subscription connections lost and restored"
)
FANOUT_REPAIRED = Counter(
    "chat_gateway_fanout_repaired_total",
    "Messages delivered from the recent log to repair a gap in a room's frames",
)
SLOW_CONSUMERS = Counter(
    "chat_gateway_slow_consumers_total",
    "Sockets cut off because their outgoing queue reached CHAT_MAX_OUTBOUND_PACKETS",
)
BINARY_REFUSED = Counter(
    "chat_gateway_binary_refused_total", "Socket.IO binary packets and frames refused"
)
UNAUTHENTICATED_CLOSED = Counter(
    "chat_gateway_unauthenticated_closed_total",
    "Engine.IO sessions closed for not completing the Socket.IO connect in time",
)
PRESENCE_COALESCED = Counter(
    "chat_gateway_presence_coalesced_total",
    "Presence changes folded into a later announcement of their room",
)
