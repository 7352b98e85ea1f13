"""ECS Fargate building blocks: a task's execution role, its container and its definition."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_aws as aws

from infra import policies


def task_execution_role(
    name: str,
    log_group: aws.cloudwatch.LogGroup,
    secret_arns: Sequence[pulumi.Input[str]],
    ecr_repository_arn: str | None,
    parent: pulumi.Resource,
) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
    """The role ECS starts a task with: pull its image, write its logs, read its secrets."""
    child = pulumi.ResourceOptions(parent=parent)
    role = aws.iam.Role(
        f"{name}-exec",
        assume_role_policy=policies.assume_role("ecs-tasks.amazonaws.com"),
        opts=child,
    )
    statements = [policies.logs(log_group.arn), policies.read_secrets(secret_arns)]
    if ecr_repository_arn:
        statements += [
            policies.allow(policies.ECR_TOKEN_ACTIONS, ["*"]),
            policies.allow(
                [
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                [ecr_repository_arn],
            ),
        ]
    policy = aws.iam.RolePolicy(
        f"{name}-exec", role=role.id, policy=policies.document(statements), opts=child
    )
    return role, policy


def container(
    name: str,
    image: str,
    command: Sequence[str],
    environment: Mapping[str, pulumi.Input[str]],
    secrets: Mapping[str, pulumi.Input[str]],
    log_group: aws.cloudwatch.LogGroup,
    port: int | None = None,
) -> pulumi.Output[str]:
    """An ECS container definition list with one container, as JSON."""
    region = aws.get_region_output().region
    definition: dict[str, object] = {
        "name": name,
        "image": image,
        "essential": True,
        "command": list(command),
        "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
        "secrets": [{"name": k, "valueFrom": v} for k, v in sorted(secrets.items())],
        "stopTimeout": 30,
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": log_group.name,
                "awslogs-region": region,
                "awslogs-stream-prefix": name,
            },
        },
    }
    if port is not None:
        definition["portMappings"] = [{"containerPort": port, "protocol": "tcp"}]
    return pulumi.Output.json_dumps([definition])


def fargate_task(
    name: str,
    *,
    cpu: int,
    memory_mb: int,
    execution: tuple[aws.iam.Role, aws.iam.RolePolicy],
    container_definitions: pulumi.Output[str],
    parent: pulumi.Resource,
    task_role_arn: pulumi.Input[str] | None = None,
) -> aws.ecs.TaskDefinition:
    """A Fargate task definition on the platform the image is built for (Linux, ARM64)."""
    exec_role, exec_policy = execution
    return aws.ecs.TaskDefinition(
        name,
        family=name,
        cpu=str(cpu),
        memory=str(memory_mb),
        network_mode="awsvpc",
        requires_compatibilities=["FARGATE"],
        runtime_platform={"cpu_architecture": "ARM64", "operating_system_family": "LINUX"},
        execution_role_arn=exec_role.arn,
        task_role_arn=task_role_arn,
        container_definitions=container_definitions,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[exec_policy]),
    )


def fargate_service(
    name: str,
    *,
    cluster_arn: pulumi.Input[str],
    task: aws.ecs.TaskDefinition,
    desired_count: int,
    subnets: Sequence[aws.ec2.Subnet],
    security_group: aws.ec2.SecurityGroup,
    opts: pulumi.ResourceOptions,
    **extra: Any,
) -> aws.ecs.Service:
    """A Fargate service without public IPs, rolled back when a deployment does not settle."""
    return aws.ecs.Service(
        name,
        name=name,
        cluster=cluster_arn,
        task_definition=task.arn,
        desired_count=desired_count,
        launch_type="FARGATE",
        network_configuration={
            "subnets": [s.id for s in subnets],
            "security_groups": [security_group.id],
            "assign_public_ip": False,
        },
        deployment_circuit_breaker={"enable": True, "rollback": True},
        opts=opts,
        **extra,
    )
