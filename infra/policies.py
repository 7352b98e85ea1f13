"""IAM policy documents, built as data so tests can read every statement."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pulumi

# Lambda in a VPC manages its network interfaces; these actions take no resource ARN.
ENI_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeVpcs",
)
# ECR hands out registry tokens account-wide; the pulls themselves are per repository.
ECR_TOKEN_ACTIONS = ("ecr:GetAuthorizationToken",)
# CloudWatch metrics have no ARN; the gauges' statement narrows it to one namespace instead.
METRIC_ACTIONS = ("cloudwatch:PutMetricData",)
# Actions AWS only grants on "*": the one exception the least-privilege test allows.
WILDCARD_ONLY_ACTIONS = frozenset(ENI_ACTIONS + ECR_TOKEN_ACTIONS + METRIC_ACTIONS)

Statement = dict[str, Any]


def assume_role(service: str) -> str:
    """A trust policy letting ``service`` assume the role."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )


def allow(actions: Sequence[str], resources: Sequence[pulumi.Input[str]]) -> Statement:
    """One Allow statement."""
    return {"Effect": "Allow", "Action": list(actions), "Resource": list(resources)}


def logs(log_group_arn: pulumi.Input[str]) -> Statement:
    """Write to one log group."""
    return allow(
        ["logs:CreateLogStream", "logs:PutLogEvents"],
        [pulumi.Output.concat(log_group_arn, ":*")],
    )


def read_secrets(arns: Sequence[pulumi.Input[str]]) -> Statement:
    """Read these secrets, no others."""
    return allow(["secretsmanager:GetSecretValue"], arns)


def document(statements: Sequence[Statement]) -> pulumi.Output[str]:
    """A policy document of ``statements``."""
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": list(statements)})
