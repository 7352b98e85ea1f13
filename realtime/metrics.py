"""Prometheus metrics of a gateway node."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONNECTIONS = Gauge("chat_gateway_connections", "Open Socket.IO connections on this node")
EVENTS_IN = Counter("chat_gateway_events_in_total", "Client events received", ["event"])
ACKS = Counter("chat_gateway_acks_total", "Acks sent by event and outcome", ["event", "outcome"])
