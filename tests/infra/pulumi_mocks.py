"""Pulumi mocks that record every resource the program declares, with made-up outputs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime.mocks import MockMonitor

from functions.registry import FUNCTIONS, Function
from functions.triggers import Schedule

REGION = "eu-west-1"
ACCOUNT = "123456789012"
JWT = "jwt-secret-that-must-never-leak-0123456789"
TOKEN = "redis-token-that-must-never-leak-0123456789"
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/chat:0123abc"
# A scheduled function too, so every trigger kind is exercised whatever the registry holds.
EXTRA = Function(name="sweep", handler="functions.message:handle", trigger=Schedule(every_s=300))
DEPLOYED_FUNCTIONS = (*FUNCTIONS, EXTRA)


@dataclass(frozen=True, slots=True)
class Declared:
    """One declared resource: type token, logical name, inputs."""

    type: str
    name: str
    inputs: dict[str, Any]


@dataclass(slots=True)
class RecordingMocks(pulumi.runtime.Mocks):
    """Answers the engine's questions the way AWS would, and remembers each resource."""

    resources: list[Declared] = field(default_factory=list)
    # (type, name) -> URN, and URN -> the URNs it waits for (depends_on and inputs).
    urns: dict[tuple[str, str], str] = field(default_factory=dict)
    dependencies: dict[str, frozenset[str]] = field(default_factory=dict)

    def waits_for(self, resource: tuple[str, str], other: tuple[str, str]) -> bool:
        """Whether the engine creates ``other`` before ``resource``, directly or through others."""
        target, seen = self.urns[other], set()
        pending = [self.urns[resource]]
        while pending:
            urn = pending.pop()
            for dep in self.dependencies.get(urn, frozenset()):
                if dep == target:
                    return True
                if dep not in seen:
                    seen.add(dep)
                    pending.append(dep)
        return False

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(Declared(args.typ, args.name, dict(args.inputs)))
        module = args.typ.split(":")[1].split("/")[0]
        state: dict[str, Any] = {
            "arn": f"arn:aws:{module}:{REGION}:{ACCOUNT}:{args.name}",
            "name": args.inputs.get("name", args.name),
            **args.inputs,
        }
        match args.typ:
            case "aws:lb/loadBalancer:LoadBalancer":
                state["dnsName"] = f"{args.name}.{REGION}.elb.amazonaws.com"
            case "aws:apigatewayv2/api:Api":
                state["apiEndpoint"] = f"https://{args.name}.execute-api.{REGION}.amazonaws.com"
                state["executionArn"] = f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{args.name}"
            case "aws:rds/instance:Instance":
                state["address"] = f"{args.name}.rds.amazonaws.com"
                state["masterUserSecrets"] = [
                    {"secretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!db-1"}
                ]
            case "aws:elasticache/replicationGroup:ReplicationGroup":
                # Like ElastiCache: a primary endpoint, or in cluster mode a configuration one.
                clustered = args.inputs.get("clusterMode") == "enabled"
                endpoint = "configurationEndpointAddress" if clustered else "primaryEndpointAddress"
                host = "clustercfg" if clustered else "master"
                state[endpoint] = f"{host}.{args.name}.cache.amazonaws.com"
            case "aws:msk/cluster:Cluster":
                state["bootstrapBrokersTls"] = "b-1.kafka:9094,b-2.kafka:9094"
            case "aws:msk/configuration:Configuration":
                state["latestRevision"] = 1
            case "aws:lambda/function:Function":
                state["invokeArn"] = f"arn:aws:apigateway:{REGION}:lambda:path/{args.name}"
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        match args.token:
            case "aws:index/getAvailabilityZones:getAvailabilityZones":
                zones = [f"{REGION}{z}" for z in "abc"]
                return {"names": zones, "zoneIds": zones}
            case "aws:index/getRegion:getRegion":
                return {"name": REGION, "region": REGION, "id": REGION}
        return {}

    def of_type(self, token: str) -> list[Declared]:
        """Every declared resource of one type."""
        return [r for r in self.resources if r.type == token]


class RecordingMonitor(MockMonitor):
    """The mock engine, also recording what each registered resource depends on."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.recording = mocks

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        deps = set(request.dependencies)
        for property_deps in request.propertyDependencies.values():
            deps.update(property_deps.urns)
        self.recording.urns[(request.type, request.name)] = response.urn
        self.recording.dependencies[response.urn] = frozenset(deps)
        return response


@dataclass(slots=True)
class Deployed:
    """What the program declared and exported."""

    mocks: RecordingMocks
    outputs: dict[str, Any]

    def of_type(self, token: str) -> list[Declared]:
        """Declared resources of one type."""
        return self.mocks.of_type(token)

    def named(self, token: str, name: str) -> Declared:
        """The one resource of ``token`` called ``name``."""
        found = [r for r in self.of_type(token) if r.name == name]
        assert len(found) == 1, f"{len(found)} {token} named {name}"
        return found[0]


@contextmanager
def running(artifacts: Path, stack: str = "test", **settings: Any) -> Iterator[Deployed]:
    """Run the whole program once under mocks, the stack configured with ``settings``."""
    from infra.config import StackConfig
    from infra.stack import build

    # The program runs on this thread's loop: its own, whatever earlier tests left current.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(
        mocks, project="chat", stack=stack, preview=False, monitor=RecordingMonitor(mocks)
    )
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        cfg = StackConfig(
            name=f"chat-{stack}",
            image=IMAGE,
            jwt_secret=pulumi.Output.secret(JWT),
            redis_auth_token=pulumi.Output.secret(TOKEN),
            artifacts_dir=artifacts,
            **settings,
        )
        d = build(cfg, DEPLOYED_FUNCTIONS)
        return pulumi.Output.all(
            websocket_url=d.websocket_url,
            entry_url=d.entry_url,
            history_url=d.history_url,
            functions=d.functions,
            image=d.image,
            alarm_topic=d.alarm_topic,
        ).apply(outputs.update)

    try:
        program()
        yield Deployed(mocks, outputs)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
