"""The Socket.IO gateways: ECS Fargate behind an ALB that keeps WebSockets open."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.ecs import container, fargate_service, fargate_task, task_execution_role
from infra.network import GATEWAY_PORT, Network

HEALTH_PATH = "/healthz"


@dataclass(frozen=True, slots=True)
class GatewayArgs:
    """Image, sizes, counts and what the gateways are configured with."""

    network: Network
    cluster_arn: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    image: str
    ecr_repository_arn: str | None
    cpu: int
    memory_mb: int
    min_tasks: int
    max_tasks: int
    cpu_target: int
    idle_timeout_s: int
    certificate_arn: str | None
    environment: Mapping[str, pulumi.Input[str]]
    secrets: Mapping[str, pulumi.Input[str]]
    log_retention_days: int
    # The service starts only after these (provisioning: migrations, topics, the app role).
    after: Sequence[pulumi.Resource] = ()


class Gateway(pulumi.ComponentResource):
    """Gateways in the app subnets; only the ALB reaches them; CPU-driven autoscaling."""

    def __init__(
        self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("chat:infra:Gateway", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        net = args.network
        self.alb = aws.lb.LoadBalancer(
            name,
            load_balancer_type="application",
            internal=False,
            subnets=[s.id for s in net.public_subnets],
            security_groups=[net.alb_sg.id],
            # A WebSocket is idle between messages and pings; the ALB must not cut it.
            idle_timeout=args.idle_timeout_s,
            drop_invalid_header_fields=True,
            opts=child,
        )
        self.target_group = aws.lb.TargetGroup(
            name,
            port=GATEWAY_PORT,
            protocol="HTTP",
            target_type="ip",
            vpc_id=net.vpc.id,
            deregistration_delay=30,
            health_check={
                "path": HEALTH_PATH,
                "matcher": "200",
                "interval": 10,
                "timeout": 5,
                "healthy_threshold": 2,
                "unhealthy_threshold": 3,
            },
            # Socket.IO long-polling needs every request of a session on one task;
            # the WebSocket transport does not care.
            stickiness={"type": "lb_cookie", "enabled": True, "cookie_duration": 86_400},
            opts=child,
        )
        forward = [
            aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=self.target_group.arn)
        ]
        if args.certificate_arn:
            listener = aws.lb.Listener(
                f"{name}-https",
                load_balancer_arn=self.alb.arn,
                port=443,
                protocol="HTTPS",
                ssl_policy="ELBSecurityPolicy-TLS13-1-2-2021-06",
                certificate_arn=args.certificate_arn,
                default_actions=forward,
                opts=child,
            )
            redirect = aws.lb.Listener(
                f"{name}-http",
                load_balancer_arn=self.alb.arn,
                port=80,
                protocol="HTTP",
                default_actions=[
                    aws.lb.ListenerDefaultActionArgs(
                        type="redirect",
                        redirect=aws.lb.ListenerDefaultActionRedirectArgs(
                            port="443", protocol="HTTPS", status_code="HTTP_301"
                        ),
                    )
                ],
                opts=child,
            )
            self.listeners = [listener, redirect]
            scheme = "https"
        else:
            listener = aws.lb.Listener(
                f"{name}-http",
                load_balancer_arn=self.alb.arn,
                port=80,
                protocol="HTTP",
                default_actions=forward,
                opts=child,
            )
            self.listeners = [listener]
            scheme = "http"

        log_group = aws.cloudwatch.LogGroup(
            name, name=f"/ecs/{name}", retention_in_days=args.log_retention_days, opts=child
        )
        execution = task_execution_role(
            name, log_group, list(args.secrets.values()), args.ecr_repository_arn, self
        )
        task = fargate_task(
            name,
            cpu=args.cpu,
            memory_mb=args.memory_mb,
            execution=execution,
            parent=self,
            container_definitions=container(
                "gateway",
                args.image,
                ["python", "-m", "realtime", "--host", "0.0.0.0", "--port", str(GATEWAY_PORT)],
                args.environment,
                args.secrets,
                log_group,
                port=GATEWAY_PORT,
            ),
        )
        self.service = fargate_service(
            name,
            cluster_arn=args.cluster_arn,
            task=task,
            desired_count=args.min_tasks,
            subnets=net.app_subnets,
            security_group=net.gateway_sg,
            load_balancers=[
                {
                    "target_group_arn": self.target_group.arn,
                    "container_name": "gateway",
                    "container_port": GATEWAY_PORT,
                }
            ],
            health_check_grace_period_seconds=30,
            # ECS refuses a service whose target group no listener forwards to yet.
            opts=pulumi.ResourceOptions(
                parent=self,
                ignore_changes=["desiredCount"],
                depends_on=[*self.listeners, *args.after],
            ),
        )
        target = aws.appautoscaling.Target(
            name,
            service_namespace="ecs",
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=pulumi.Output.concat("service/", args.cluster_name, "/", self.service.name),
            min_capacity=args.min_tasks,
            max_capacity=args.max_tasks,
            opts=child,
        )
        aws.appautoscaling.Policy(
            f"{name}-cpu",
            policy_type="TargetTrackingScaling",
            service_namespace=target.service_namespace,
            scalable_dimension=target.scalable_dimension,
            resource_id=target.resource_id,
            target_tracking_scaling_policy_configuration={
                "target_value": args.cpu_target,
                "predefined_metric_specification": {
                    "predefined_metric_type": "ECSServiceAverageCPUUtilization"
                },
                "scale_out_cooldown": 60,
                # Scaling in drops sockets (clients reconnect): do it slowly.
                "scale_in_cooldown": 600,
            },
            opts=child,
        )
        host = self.alb.dns_name
        self.entry_url: pulumi.Output[str] = pulumi.Output.concat(f"{scheme}://", host)
        self.websocket_url: pulumi.Output[str] = pulumi.Output.concat(
            "wss://" if scheme == "https" else "ws://", host, "/socket.io/"
        )
        self.register_outputs({"entry_url": self.entry_url, "websocket_url": self.websocket_url})
