"""Configuration files of the third-party servers, rendered from the stack's ports and paths."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def kafka_server(*, port: int, controller_port: int, data: Path) -> str:
    """A single-node KRaft broker that is its own controller, reachable on loopback only."""
    return f"""\
process.roles=broker,controller
node.id=1
# A static voter set: the quorum keeps working if the ports of this state dir ever change.
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data}
num.partitions=1
# One broker: internal topics cannot have more replicas than that.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
# Idempotent producers get their id from the transaction coordinator: a small state topic
# makes the first produce after a cold start take milliseconds, not seconds.
transaction.state.log.num.partitions=4
share.coordinator.state.topic.min.isr=1
# Fewer offset partitions than the default 50: the first consumer group joins faster on 2 cores.
offsets.topic.num.partitions=8
# Consumers join at once instead of waiting for peers that a single-machine stack never has.
group.initial.rebalance.delay.ms=0
# Topics are created by provisioning with their partition counts, never by a typo in a client.
auto.create.topics.enable=false
# Sized for one machine that runs everything: a handful of clients need few threads, and
# every idle thread still wakes up on its own timers.
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
"""


def kafka_log4j2() -> str:
    """Broker logging to stdout (the component's log file), without per-request chatter."""
    return """\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
"""


def haproxy(*, entry_port: int, gateways: Sequence[tuple[str, int]], maxconn: int) -> str:
    """Round-robin over health-checked gateways; a cookie keeps long-polling sticky."""
    servers = "\n".join(
        f"    server {name} 127.0.0.1:{port} check cookie {name}" for name, port in gateways
    )
    return f"""\
global
    log stdout format raw local0 info
    maxconn {maxconn}

defaults
    mode http
    log global
    option httplog
    option dontlognull
    timeout connect 5s
    timeout http-request 10s
    # Above Socket.IO's ping interval (25 s), so an idle long-poll is not cut.
    timeout client 60s
    timeout server 60s
    # An upgraded WebSocket lives on this timeout, not on client/server.
    timeout tunnel 1h
    timeout client-fin 5s
    option redispatch
    retries 2

frontend entry
    bind 127.0.0.1:{entry_port}
    # /metrics is for scrapers on each node's own address, never for the public entry
    # (url_dec: "/%6detrics" reaches the same route).
    http-request deny deny_status 404 if {{ path,url_dec -m beg /metrics }}
    default_backend gateways

backend gateways
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    # Socket.IO long-polling needs every request of a session on one node; WebSocket does not care.
    cookie chat_gateway insert indirect nocache httponly
    # Healthy nodes are checked every 2 s; a node that is down or changing state, every 0.5 s.
    default-server inter 2s fastinter 500ms downinter 500ms fall 2 rise 1
{servers}
"""
