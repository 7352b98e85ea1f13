"""The Redis-stream event source of a function on AWS: an ECS service invoking its Lambda."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from chat.settings import env_name
from functions.registry import Function
from infra import policies
from infra.ecs import container, fargate_service, fargate_task, task_execution_role
from infra.network import Network


@dataclass(frozen=True, slots=True)
class BridgeArgs:
    """Where stream bridges run and what they start from."""

    cluster_arn: pulumi.Input[str]
    image: str
    ecr_repository_arn: str | None
    tasks: int
    environment: Mapping[str, pulumi.Input[str]]
    redis_url_secret_arn: pulumi.Input[str]
    log_retention_days: int
    network: Network


class StreamBridge(pulumi.ComponentResource):
    """The Redis-stream event source of one function: an ECS service invoking its Lambda."""

    def __init__(
        self,
        name: str,
        fn: Function,
        target: aws.lambda_.Function,
        args: BridgeArgs,
        opts: pulumi.ResourceOptions | None = None,
        after: Sequence[pulumi.Resource] = (),
    ) -> None:
        super().__init__("chat:infra:StreamBridge", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        log_group = aws.cloudwatch.LogGroup(
            name, name=f"/ecs/{name}", retention_in_days=args.log_retention_days, opts=child
        )
        execution = task_execution_role(
            name, log_group, [args.redis_url_secret_arn], args.ecr_repository_arn, self
        )
        self.task_role = aws.iam.Role(
            name, assume_role_policy=policies.assume_role("ecs-tasks.amazonaws.com"), opts=child
        )
        # The bridge may invoke its own function and nothing else.
        self.task_policy = aws.iam.RolePolicy(
            name,
            role=self.task_role.id,
            policy=policies.document([policies.allow(["lambda:InvokeFunction"], [target.arn])]),
            opts=child,
        )
        task = fargate_task(
            name,
            cpu=256,
            memory_mb=512,
            execution=execution,
            task_role_arn=self.task_role.arn,
            parent=self,
            container_definitions=container(
                "bridge",
                args.image,
                ["python", "-m", "functions.aws.bridge", "--function", fn.name],
                {**args.environment, env_name("bridge_lambda"): target.name},
                {env_name("redis_url"): args.redis_url_secret_arn},
                log_group,
            ),
        )
        self.service = fargate_service(
            name,
            cluster_arn=args.cluster_arn,
            task=task,
            desired_count=args.tasks,
            subnets=args.network.app_subnets,
            security_group=args.network.bridge_sg,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)),
        )
        self.register_outputs({"service": self.service.name})
