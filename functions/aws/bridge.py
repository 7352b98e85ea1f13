"""The Redis-stream event source for Lambda: the local consumer-group loop, invoking Lambda.

Lambda has no Redis-stream trigger, so this service plays the event source mapping: it reads
the function's consumer group with ``RedisStreamRunner`` (reclaim, ack on success, retry,
dead letters, all unchanged) and hands each batch to the function's Lambda instead of calling
the handler in process.

    python -m functions.aws.bridge --function message --lambda chat-prod-message
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
from collections.abc import Sequence
from typing import Any

from chat.settings import Settings, env_name
from functions import registry
from functions.aws.events import BridgeBatch, EventError, decode_result
from functions.batch import BatchResult, StreamRecord
from functions.deps import Deps
from functions.registry import Function
from functions.runtime.invoke import TransientFailure
from functions.runtime.partitions import PartitionedRunner
from functions.runtime.redis_stream import RedisStreamRunner
from functions.triggers import RedisStream, StreamPartition

log = logging.getLogger("functions.aws.bridge")

FUNCTION_ENV = env_name("bridge_function")
LAMBDA_ENV = env_name("bridge_lambda")


class LambdaInvoker:
    """Invokes one function's Lambda synchronously with a stream batch; a runner's ``call``."""

    def __init__(self, fn: Function, lambda_name: str, client: Any) -> None:
        self.fn = fn
        self.lambda_name = lambda_name
        self.client = client

    async def __call__(self, batch: Sequence[StreamRecord]) -> BatchResult:
        """Run the batch on Lambda; raise TransientFailure when the invocation failed."""
        payload = BridgeBatch(function=self.fn.name, records=tuple(batch)).encode()
        try:
            response = await asyncio.to_thread(
                self.client.invoke,
                FunctionName=self.lambda_name,
                InvocationType="RequestResponse",
                Payload=payload,
            )
            body = response["Payload"].read()
        except Exception as exc:
            raise TransientFailure(
                f"{self.fn.name}: invoking {self.lambda_name} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if response.get("FunctionError"):
            raise TransientFailure(f"{self.fn.name} failed in Lambda: {_error_message(body)}")
        try:
            return decode_result(json.loads(body))
        except (ValueError, EventError) as exc:
            raise TransientFailure(f"{self.fn.name}: unreadable Lambda reply: {exc}") from exc


def _error_message(body: bytes) -> str:
    try:
        error = json.loads(body)
        return f"{error.get('errorType', 'Error')}: {error.get('errorMessage', '')}"
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")


def lambda_client(fn: Function) -> Any:
    """A Lambda client whose read timeout outlasts the function's own timeout."""
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    return boto3.client(
        "lambda",
        config=Config(
            connect_timeout=5,
            read_timeout=int(fn.timeout_s) + 30,
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    )


def build(
    fn: Function, lambda_name: str, deps: Deps, client: Any, consumer: str
) -> RedisStreamRunner | PartitionedRunner:
    """The runner that feeds ``fn``'s Lambda from its stream(s) as ``consumer``."""
    if not isinstance(fn.trigger, RedisStream):
        raise ValueError(f"function {fn.name} is not triggered by a Redis stream")
    invoker = LambdaInvoker(fn, lambda_name, client)
    if fn.trigger.partitioned:

        def runner(partition: StreamPartition, takeover: bool) -> RedisStreamRunner:
            return RedisStreamRunner(
                fn, deps, consumer, call=invoker, partition=partition, takeover=takeover
            )

        return PartitionedRunner(fn, deps, consumer, factory=runner)
    return RedisStreamRunner(fn, deps, consumer, call=invoker)


async def serve(fn: Function, lambda_name: str, settings: Settings) -> None:
    """Bridge until SIGTERM or SIGINT, then finish the batch in hand."""
    deps = Deps(settings)
    consumer = f"bridge-{socket.gethostname()}-{os.getpid()}"
    count = 1 if isinstance(fn.trigger, RedisStream) and fn.trigger.partitioned else fn.concurrency
    runners = [
        build(fn, lambda_name, deps, lambda_client(fn), f"{consumer}-{i}") for i in range(count)
    ]

    def stop() -> None:
        for runner in runners:
            runner.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    log.info(
        "bridging %s to Lambda %s",
        fn.name,
        lambda_name,
        extra={"function": fn.name, "consumers": len(runners)},
    )
    try:
        await asyncio.gather(*(r.run() for r in runners))
    finally:
        await deps.aclose()


def main(argv: list[str] | None = None) -> None:
    """Command line: bridge one Redis-stream function to its Lambda."""
    parser = argparse.ArgumentParser(description="Bridge a Redis-stream function to its Lambda.")
    parser.add_argument("--function", default=os.environ.get(FUNCTION_ENV), help="registry name")
    parser.add_argument("--lambda", dest="lambda_name", default=os.environ.get(LAMBDA_ENV))
    args = parser.parse_args(argv)
    if not args.function or not args.lambda_name:
        parser.error(f"--function and --lambda (or {FUNCTION_ENV}, {LAMBDA_ENV}) are required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(registry.get(args.function), args.lambda_name, Settings.from_env()))


if __name__ == "__main__":
    main()
