"""VPC in three tiers and the security groups that allow only the traffic the system needs."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

GATEWAY_PORT = 8000
REDIS_PORT = 6379
POSTGRES_PORT = 5432
# MSK listeners: plaintext 9092, TLS 9094, SASL/SCRAM 9096, IAM 9098.
KAFKA_PORTS = (9094, 9098)
ANYWHERE = "0.0.0.0/0"


@dataclass(frozen=True, slots=True)
class NetworkArgs:
    """Address space and how many zones and NAT gateways to spread over."""

    cidr: str
    az_count: int
    nat_gateways: int


def _in(
    ports: tuple[int, int],
    *,
    cidr_blocks: list[str] | None = None,
    security_groups: list[pulumi.Input[str]] | None = None,
    self_: bool | None = None,
) -> aws.ec2.SecurityGroupIngressArgs:
    return aws.ec2.SecurityGroupIngressArgs(
        protocol="tcp",
        from_port=ports[0],
        to_port=ports[1],
        cidr_blocks=cidr_blocks,
        security_groups=security_groups,
        self=self_,
    )


def _out(
    ports: tuple[int, int], cidr: str, protocol: str = "tcp"
) -> aws.ec2.SecurityGroupEgressArgs:
    return aws.ec2.SecurityGroupEgressArgs(
        protocol=protocol, from_port=ports[0], to_port=ports[1], cidr_blocks=[cidr]
    )


_ALL_OUT = [_out((0, 0), ANYWHERE, protocol="-1")]


class Network(pulumi.ComponentResource):
    """Public subnets (ALB, NAT), app subnets (tasks, Lambdas) and data subnets (no route out)."""

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("chat:infra:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        zones = aws.get_availability_zones(state="available").names[: args.az_count]
        blocks = list(ipaddress.ip_network(args.cidr).subnets(prefixlen_diff=4))

        self.vpc = aws.ec2.Vpc(
            name,
            cidr_block=args.cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": name},
            opts=child,
        )
        igw = aws.ec2.InternetGateway(name, vpc_id=self.vpc.id, opts=child)
        public_rt = aws.ec2.RouteTable(
            f"{name}-public",
            vpc_id=self.vpc.id,
            routes=[{"cidr_block": ANYWHERE, "gateway_id": igw.id}],
            opts=child,
        )
        # The data tier has no route out at all: Redis, Kafka and PostgreSQL never need one.
        data_rt = aws.ec2.RouteTable(f"{name}-data", vpc_id=self.vpc.id, opts=child)

        self.public_subnets: list[aws.ec2.Subnet] = []
        self.app_subnets: list[aws.ec2.Subnet] = []
        self.data_subnets: list[aws.ec2.Subnet] = []
        nats: list[aws.ec2.NatGateway] = []
        for i, zone in enumerate(zones):
            public = self._subnet(f"{name}-public-{i}", str(blocks[i]), zone, True, public_rt)
            self.public_subnets.append(public)
            if i < args.nat_gateways:
                eip = aws.ec2.Eip(f"{name}-nat-{i}", domain="vpc", opts=child)
                nats.append(
                    aws.ec2.NatGateway(
                        f"{name}-nat-{i}", subnet_id=public.id, allocation_id=eip.id, opts=child
                    )
                )
        for i, zone in enumerate(zones):
            nat = nats[i % len(nats)]
            app_rt = aws.ec2.RouteTable(
                f"{name}-app-{i}",
                vpc_id=self.vpc.id,
                routes=[{"cidr_block": ANYWHERE, "nat_gateway_id": nat.id}],
                opts=child,
            )
            self.app_subnets.append(
                self._subnet(f"{name}-app-{i}", str(blocks[4 + i]), zone, False, app_rt)
            )
            self.data_subnets.append(
                self._subnet(f"{name}-data-{i}", str(blocks[8 + i]), zone, False, data_rt)
            )

        self.alb_sg = self._group(
            f"{name}-alb",
            "Internet to the gateway load balancer",
            ingress=[
                _in((80, 80), cidr_blocks=[ANYWHERE]),
                _in((443, 443), cidr_blocks=[ANYWHERE]),
            ],
            egress=[_out((GATEWAY_PORT, GATEWAY_PORT), args.cidr)],
        )
        self.gateway_sg = self._group(
            f"{name}-gateway",
            "Gateways: only the load balancer reaches them",
            ingress=[_in((GATEWAY_PORT, GATEWAY_PORT), security_groups=[self.alb_sg.id])],
            egress=_ALL_OUT,
        )
        self.functions_sg = self._group(
            f"{name}-functions", "Function Lambdas: nothing reaches them", egress=_ALL_OUT
        )
        self.bridge_sg = self._group(
            f"{name}-bridge", "Stream bridges: nothing reaches them", egress=_ALL_OUT
        )
        clients: list[pulumi.Input[str]] = [
            self.gateway_sg.id,
            self.functions_sg.id,
            self.bridge_sg.id,
        ]
        self.redis_sg = self._group(
            f"{name}-redis",
            "Redis: gateways, functions and bridges only",
            ingress=[_in((REDIS_PORT, REDIS_PORT), security_groups=clients)],
        )
        self.kafka_sg = self._group(
            f"{name}-kafka",
            "Kafka: functions, and the event source pollers that share this group",
            ingress=[
                _in(KAFKA_PORTS, security_groups=[self.functions_sg.id]),
                _in(KAFKA_PORTS, self_=True),
            ],
            # Lambda's Kafka pollers run with this group and must reach Lambda and STS.
            egress=_ALL_OUT,
        )
        self.database_sg = self._group(
            f"{name}-database",
            "PostgreSQL: functions only",
            ingress=[_in((POSTGRES_PORT, POSTGRES_PORT), security_groups=[self.functions_sg.id])],
        )
        self.register_outputs(
            {
                "vpc_id": self.vpc.id,
                "public_subnet_ids": [s.id for s in self.public_subnets],
                "app_subnet_ids": [s.id for s in self.app_subnets],
                "data_subnet_ids": [s.id for s in self.data_subnets],
            }
        )

    def _subnet(
        self, name: str, cidr: str, zone: str, public: bool, table: aws.ec2.RouteTable
    ) -> aws.ec2.Subnet:
        child = pulumi.ResourceOptions(parent=self)
        subnet = aws.ec2.Subnet(
            name,
            vpc_id=self.vpc.id,
            cidr_block=cidr,
            availability_zone=zone,
            map_public_ip_on_launch=public,
            tags={"Name": name, "tier": name.rsplit("-", 2)[-2]},
            opts=child,
        )
        aws.ec2.RouteTableAssociation(
            name, subnet_id=subnet.id, route_table_id=table.id, opts=child
        )
        return subnet

    def _group(
        self,
        name: str,
        description: str,
        ingress: list[aws.ec2.SecurityGroupIngressArgs] | None = None,
        egress: list[aws.ec2.SecurityGroupEgressArgs] | None = None,
    ) -> aws.ec2.SecurityGroup:
        # Listing no egress removes AWS's default allow-all rule: data stores send nothing out.
        return aws.ec2.SecurityGroup(
            name,
            vpc_id=self.vpc.id,
            description=description,
            ingress=ingress or [],
            egress=egress or [],
            tags={"Name": name},
            # On teardown Lambda releases its VPC network interfaces minutes after the functions
            # are gone; until then the group cannot be deleted.
            opts=pulumi.ResourceOptions(
                parent=self, custom_timeouts=pulumi.CustomTimeouts(delete="45m")
            ),
        )
