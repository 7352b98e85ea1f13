"""Settings, read once from the environment (prefix ``CHAT_``); explicit arguments win."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {raw!r} (use true or false)")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a process of this system is configured with."""

    environment: str = "dev"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # "standalone": one Redis (or a primary with replicas) at redis_url; "cluster": a Redis
    # Cluster (ElastiCache cluster mode), redis_url being any node (a seed).
    redis_mode: str = "standalone"
    # The inbound stream is this many streams, partition = hash(room): a room's sends stay in
    # order and each partition has one consumer at a time. Fixed for a deployment's life.
    inbound_partitions: int = 8
    # An accepted send is acked only once this many replicas hold its append (Redis WAIT), so
    # a failover never loses it; 0 acks after the primary's write (no replicas).
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 200
    kafka_bootstrap: str = "127.0.0.1:9092"
    # PLAINTEXT on a private machine; SSL on MSK's TLS listener (the system CA store verifies it).
    kafka_security_protocol: str = "PLAINTEXT"
    postgres_dsn: str = "postgresql://chat@127.0.0.1:5432/chat"
    dev_auth: bool = False
    jwt_secret: str | None = None
    jwt_algorithm: str = "HS256"
    history_url: str = ""
    node_id: str = field(default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}")
    # How long a (sender, room, client_msg_id) stays deduplicated.
    dedup_ttl_s: int = 24 * 3600
    # How many recent messages each room keeps in Redis for reconnect recovery.
    recent_log_len: int = 1000
    # A 4,000-character message of 4-byte characters, JSON-escaped, still fits.
    max_payload_bytes: int = 64 * 1024
    # Where a gateway serves /metrics: 0 on its public port (the local stack's load balancer
    # hides it), else on this port of its own, which no load balancer forwards to (AWS).
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    max_rooms_per_socket: int = 100
    # A socket whose outgoing Engine.IO queue holds this many packets (a client that stopped
    # reading) is cut off as a slow consumer, so its backlog never grows without bound.
    max_outbound_packets: int = 1000
    # A join with ``since_seq`` replays at most this many messages (the newest); older ones are
    # reported as ``gap: true`` and the client pages them from history.
    max_replay_messages: int = 500
    # Distinct emojis one message may carry; a reaction with one more is refused
    # (too_many_emojis).
    max_emojis_per_message: int = 20
    # How long an edit, delete, react or reply waits for its outcome before it answers
    # unavailable (the client retries with the same client_op_id / client_msg_id).
    op_ack_timeout_s: int = 10
    # A member's read position is announced to the room at most once per this interval per
    # node (later moves in it become one announcement at its end).
    read_coalesce_ms: int = 1000
    # Sockets one user may hold on one gateway node; more are refused (too_many_sockets).
    max_sockets_per_user: int = 20
    # An Engine.IO session that has not completed the Socket.IO connect by then is closed.
    connect_timeout_s: int = 10
    # Browser origins allowed to open sockets, comma-separated (https://chat.example.com). Empty
    # (the default): none, so no page of another site can use a visitor's session. "*" is for
    # dev only: it accepts every origin.
    cors_origins: str = ""
    kafka_messages_partitions: int = 12
    # Rooms matching these comma-separated globs need a ``rooms`` token claim granting them.
    private_rooms: str = "private:*"
    # Each gateway re-announces its sockets' presence this often; a member unseen for the TTL
    # (a crashed node's) is dropped, so the TTL plus one heartbeat bounds how long it lingers.
    presence_heartbeat_s: int = 3
    presence_ttl_s: int = 10
    # A node announces a room's presence at most once per this interval (later changes in it
    # become one announcement at its end); 0 announces every change.
    presence_coalesce_ms: int = 250
    # Limits held in Redis across nodes, comma-separated "<event>.<user|socket>=<per s>:<burst>".
    # "http.user" limits each caller of the HTTP functions (429 with retry_after_ms).
    rate_limits: str = (
        "send.user=20:40,send.socket=10:20,typing.socket=2:5,join.socket=20:100,"
        "replay.user=10:200,leave.socket=20:100,connect.user=10:60,http.user=50:100,"
        "read.socket=10:50"
    )
    # HTTP function requests: bodies larger than this are refused (413) before they are read,
    # JSON bodies nested deeper than this are refused (400).
    http_max_body_bytes: int = 16 * 1024
    http_max_json_depth: int = 32
    # Every PostgreSQL statement of a pooled connection is cancelled after this long.
    postgres_statement_timeout_ms: int = 5000
    # Messages older than this many days are deleted by the retention function; 0 keeps them all.
    retention_days: int = 0
    # Rows per retention delete: short transactions, so writers and vacuum are never held up long.
    retention_batch: int = 5000

    def __post_init__(self) -> None:
        if self.environment not in {"dev", "test", "prod"}:
            raise ValueError(f"environment must be dev, test or prod, not {self.environment!r}")
        if self.environment == "prod" and self.dev_auth:
            raise ValueError("dev_auth must be off in prod: set CHAT_DEV_AUTH=false")
        if self.redis_mode not in {"standalone", "cluster"}:
            raise ValueError(f"redis_mode must be standalone or cluster, not {self.redis_mode!r}")
        if self.inbound_partitions < 1 or self.redis_wait_replicas < 0:
            raise ValueError("inbound_partitions must be >= 1 and redis_wait_replicas >= 0")
        if self.redis_wait_timeout_ms <= 0:
            raise ValueError("redis_wait_timeout_ms must be positive")
        if self.kafka_security_protocol not in {"PLAINTEXT", "SSL"}:
            raise ValueError("kafka_security_protocol must be PLAINTEXT or SSL")
        if self.environment == "prod" and self.jwt_secret and len(self.jwt_secret) < 32:
            raise ValueError("CHAT_JWT_SECRET must hold at least 32 bytes for HS256 (RFC 7518)")
        if self.dedup_ttl_s <= 0 or self.recent_log_len <= 0:
            raise ValueError("dedup_ttl_s and recent_log_len must be positive")
        if self.presence_coalesce_ms < 0:
            raise ValueError("presence_coalesce_ms must be >= 0 (0: announce every change)")
        if not 0 < 2 * self.presence_heartbeat_s < self.presence_ttl_s:
            raise ValueError("presence_ttl_s must exceed two presence heartbeats (both positive)")
        if self.environment != "dev" and "*" in self.cors_origins:
            raise ValueError(
                "CHAT_CORS_ORIGINS='*' is for dev only: list the chat page's origins, "
                "comma-separated (e.g. https://chat.example.com)"
            )
        if (
            min(
                self.http_max_body_bytes,
                self.http_max_json_depth,
                self.postgres_statement_timeout_ms,
            )
            <= 0
        ):
            raise ValueError(
                "http_max_body_bytes, http_max_json_depth and "
                "postgres_statement_timeout_ms must be positive"
            )
        if (
            min(
                self.max_outbound_packets,
                self.max_replay_messages,
                self.max_sockets_per_user,
                self.connect_timeout_s,
                self.max_emojis_per_message,
                self.op_ack_timeout_s,
            )
            <= 0
        ):
            raise ValueError(
                "max_outbound_packets, max_replay_messages, max_sockets_per_user, "
                "connect_timeout_s, max_emojis_per_message and op_ack_timeout_s must be positive"
            )
        if self.read_coalesce_ms < 0:
            raise ValueError("read_coalesce_ms must be >= 0 (0: announce every move)")
        if self.retention_days < 0 or self.retention_batch <= 0:
            raise ValueError("retention_days must be >= 0 (0: keep all), retention_batch > 0")

    def require_auth(self) -> None:
        """Fail fast where clients must authenticate but no way to do so is configured."""
        if not self.dev_auth and not self.jwt_secret:
            raise ValueError("set CHAT_JWT_SECRET (or CHAT_DEV_AUTH=true outside prod)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build from the ``CHAT_*`` variables of ``environ`` (or the process); keywords win."""
        source = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = source.get(f"CHAT_{f.name.upper()}")
            if raw is None:
                continue
            kind: type = str if f.default is MISSING else type(f.default)
            if f.name == "jwt_secret":
                values[f.name] = raw or None
            elif kind is bool:
                values[f.name] = _bool(raw)
            elif kind is int:
                values[f.name] = int(raw)
            else:
                values[f.name] = raw
        values.update(overrides)
        return cls(**values)


_FIELDS = frozenset(f.name for f in fields(Settings))


def env_name(name: str) -> str:
    """The environment variable of the setting ``name`` (``redis_url`` -> ``CHAT_REDIS_URL``)."""
    if name not in _FIELDS:
        raise KeyError(f"no setting named {name!r}: see chat/settings.py for the known ones")
    return f"CHAT_{name.upper()}"


def env_values(**values: object) -> dict[str, str]:
    """Settings as the environment spells them: ``env_values(dev_auth=True)`` is
    ``{"CHAT_DEV_AUTH": "true"}``; tuples are comma-joined, None is the empty string."""
    return {env_name(name): _env_text(value) for name, value in values.items()}


def _env_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ",".join(str(item) for item in value)
    return str(value)
