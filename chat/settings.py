"""Settings, read once from the environment (prefix ``CHAT_``); explicit arguments win."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from difflib import get_close_matches
from types import MappingProxyType
from typing import Any, get_type_hints


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
    # Browser origins allowed to open sockets (comma-separated in the environment:
    # https://a.example,https://b.example). Empty (the default): no page of another site can use
    # a visitor's session. "*" is for dev only: it accepts every origin.
    cors_origins: tuple[str, ...] = ()
    kafka_messages_partitions: int = 12
    # Rooms matching these globs (comma-separated in the environment) need a ``rooms`` token
    # claim granting them.
    private_rooms: tuple[str, ...] = ("private:*",)
    # Each gateway re-announces its sockets' presence this often; a member unseen for the TTL
    # (a crashed node's) is dropped, so the TTL plus one heartbeat bounds how long it lingers.
    presence_heartbeat_s: int = 3
    presence_ttl_s: int = 10
    # A node announces a room's presence at most once per this interval (later changes in it
    # become one announcement at its end); 0 announces every change.
    presence_coalesce_ms: int = 250
    # Limits held in Redis across nodes, comma-separated "<event>.<user|socket>=<per s>:<burst>"
    # (one text: chat.ratelimit.parse_limits reads it where a limiter is built). "http.user"
    # limits each caller of the HTTP functions (429 with retry_after_ms).
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
        for name in _TUPLES:
            if not isinstance(value := getattr(self, name), tuple):
                raise TypeError(
                    f"{name} takes a tuple of strings such as ('a', 'b'), not {value!r} "
                    f"(in the environment: {env_name(name)}=a,b)"
                )
        _one_of(self, "environment", "dev", "test", "prod")
        _one_of(self, "redis_mode", "standalone", "cluster")
        _one_of(self, "kafka_security_protocol", "PLAINTEXT", "SSL")
        if self.environment == "prod" and self.dev_auth:
            raise ValueError("CHAT_DEV_AUTH must be off in prod: set CHAT_DEV_AUTH=false")
        if self.environment == "prod" and self.jwt_secret and len(self.jwt_secret) < 32:
            raise ValueError("CHAT_JWT_SECRET must hold at least 32 bytes for HS256 (RFC 7518)")
        for name in _POSITIVE:
            if (value := getattr(self, name)) <= 0:
                raise ValueError(f"{env_name(name)} must be positive, not {value}")
        for name, zero in _NOT_NEGATIVE.items():
            if (value := getattr(self, name)) < 0:
                raise ValueError(f"{env_name(name)} must be >= 0 ({zero}), not {value}")
        if not 0 < 2 * self.presence_heartbeat_s < self.presence_ttl_s:
            raise ValueError(
                "CHAT_PRESENCE_TTL_S must exceed two presence heartbeats "
                "(CHAT_PRESENCE_HEARTBEAT_S), both positive"
            )
        if self.environment != "dev" and any("*" in origin for origin in self.cors_origins):
            raise ValueError(
                "CHAT_CORS_ORIGINS='*' is for dev only: list the chat page's origins, "
                "comma-separated (e.g. https://chat.example.com)"
            )

    def require_auth(self) -> None:
        """Fail fast where clients must authenticate but no way to do so is configured."""
        if not self.dev_auth and not self.jwt_secret:
            raise ValueError("set CHAT_JWT_SECRET (or CHAT_DEV_AUTH=true outside prod)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build from the ``CHAT_*`` variables of ``environ`` (or the process); keywords win.

        Each value is cast to its field's type (one that does not cast raises an error naming
        its variable); a ``CHAT_*`` variable that is neither a setting nor a process variable
        is refused, since a misspelt one would otherwise leave its setting at the default.
        """
        source = os.environ if environ is None else environ
        unknown = sorted(k for k in source if k.startswith(PREFIX) and k not in _KNOWN)
        if unknown:
            raise ValueError(_unknown(unknown))
        values: dict[str, Any] = {}
        for name, cast in _CASTS.items():
            raw = source.get(env_name(name))
            if raw is None:
                continue
            try:
                values[name] = cast(raw)
            except ValueError as exc:
                raise ValueError(f"{env_name(name)}: {exc}") from None
        values.update(overrides)
        return cls(**values)


PREFIX = "CHAT_"
# Variables a process reads itself, before or besides its Settings: known, so never refused.
PROCESS_VARIABLES: Mapping[str, str] = MappingProxyType(
    {
        "aws_secrets": "JSON: variable -> secret ARN[#key], read on AWS (functions.aws.secrets)",
        "function": "the registry function a Lambda runs (functions.aws.lambda_handler)",
        "bridge_function": "the function a stream bridge serves (functions.aws.bridge)",
        "bridge_lambda": "the Lambda a stream bridge invokes (functions.aws.bridge)",
        "log_json": "true: log JSON lines (chat.logs)",
        "log_level": "the root log level, INFO unless set (chat.logs)",
    }
)


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"not an integer: {raw!r}") from None


def comma_items(raw: str) -> tuple[str, ...]:
    """The items of a comma-separated list, stripped, blanks dropped."""
    return tuple(item for item in (part.strip() for part in raw.split(",")) if item)


def _optional(raw: str) -> str | None:
    return raw or None


def _text(raw: str) -> str:
    return raw


# How a variable's text becomes each type a setting may have.
_CAST_BY_TYPE: dict[object, Callable[[str], Any]] = {
    str: _text,
    int: _int,
    bool: _bool,
    str | None: _optional,
    tuple[str, ...]: comma_items,
}
_HINTS = get_type_hints(Settings)
# A field of a type without a cast fails here, at import, not when its variable is first set.
_CASTS = {f.name: _CAST_BY_TYPE[_HINTS[f.name]] for f in fields(Settings)}
_TUPLES = tuple(name for name, cast in _CASTS.items() if cast is comma_items)
_KNOWN = frozenset(f"{PREFIX}{name.upper()}" for name in (*_CASTS, *PROCESS_VARIABLES))
_POSITIVE = (
    "inbound_partitions",
    "redis_wait_timeout_ms",
    "dedup_ttl_s",
    "recent_log_len",
    "http_max_body_bytes",
    "http_max_json_depth",
    "postgres_statement_timeout_ms",
    "max_outbound_packets",
    "max_replay_messages",
    "max_sockets_per_user",
    "connect_timeout_s",
    "max_emojis_per_message",
    "op_ack_timeout_s",
    "retention_batch",
)
# What 0 means, for each setting that may be 0 but not below.
_NOT_NEGATIVE = {
    "redis_wait_replicas": "0: ack after the primary's write",
    "presence_coalesce_ms": "0: announce every change",
    "read_coalesce_ms": "0: announce every move",
    "retention_days": "0: keep every message",
}


def _one_of(settings: Settings, name: str, *allowed: str) -> None:
    value = getattr(settings, name)
    if value not in allowed:
        raise ValueError(f"{env_name(name)} must be {' or '.join(allowed)}, not {value!r}")


def _unknown(variables: list[str]) -> str:
    named = []
    for variable in variables:
        close = get_close_matches(variable, sorted(_KNOWN), n=1)
        named.append(f"{variable} (did you mean {close[0]}?)" if close else variable)
    return (
        f"unknown variable {', '.join(named)}: fix or unset it; the known ones are the fields "
        "of chat.settings.Settings and its PROCESS_VARIABLES"
    )


def env_name(name: str) -> str:
    """The environment variable of the setting or process variable ``name`` (``redis_url`` ->
    ``CHAT_REDIS_URL``)."""
    variable = f"{PREFIX}{name.upper()}"
    if variable not in _KNOWN or name != name.lower():
        raise KeyError(
            f"no setting named {name!r}: the known ones are the fields of chat.settings.Settings "
            "and its PROCESS_VARIABLES"
        )
    return variable


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
