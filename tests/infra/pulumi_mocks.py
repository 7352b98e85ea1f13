"""Pulumi mocks that record every resource the program declares, with made-up outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime.mocks import MockMonitor

REGION = "eu-west-1"
ACCOUNT = "123456789012"


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
                state["primaryEndpointAddress"] = f"master.{args.name}.cache.amazonaws.com"
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
