"""CloudWatch alarms: dead letters, consumer lag, Lambda errors, ALB 5xx, into one SNS topic."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from functions.aws.gauges import DEAD_LETTERS, STREAM_LAG


@dataclass(frozen=True, slots=True)
class AlarmsArgs:
    """What is watched and who hears about it."""

    lambdas: Mapping[str, pulumi.Input[str]]  # registry name -> Lambda function name
    kafka_functions: Sequence[str]  # registry names with an MSK event source mapping
    stream_functions: Sequence[str]  # registry names fed by a Redis-stream bridge
    dead_letters: Sequence[str]  # dead-letter streams and topics
    gauges_namespace: str
    load_balancer_suffix: pulumi.Input[str]
    email: str | None = None
    # A consumer this far behind is not keeping up (records / entries).
    lag_threshold: int = 10_000


class Alarms(pulumi.ComponentResource):
    """The stack's alarms; each notifies ``topic`` when it fires and when it clears."""

    def __init__(
        self, name: str, args: AlarmsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("chat:infra:Alarms", name, None, opts)
        self.prefix = name
        child = pulumi.ResourceOptions(parent=self)
        self.topic = aws.sns.Topic(name, opts=child)
        if args.email:
            aws.sns.TopicSubscription(
                f"{name}-email",
                topic=self.topic.arn,
                protocol="email",
                endpoint=args.email,
                opts=child,
            )
        self.alarms: dict[str, aws.cloudwatch.MetricAlarm] = {}

        for source in args.dead_letters:
            # Anything dead-lettered needs a person; a silent gauge does too.
            self._alarm(
                f"dead-letters-{source}",
                f"records in the dead letter {source}",
                namespace=args.gauges_namespace,
                metric=DEAD_LETTERS,
                dimensions={"Source": source},
                statistic="Maximum",
                threshold=0,
                missing="breaching",
            )
        # Kafka consumers: Lambda's own OffsetLag; Redis-stream ones: the gauges' StreamLag.
        lagging = [
            (fn, "Kafka topic", "AWS/Lambda", "OffsetLag", {"FunctionName": args.lambdas[fn]})
            for fn in args.kafka_functions
        ] + [
            (fn, "Redis stream", args.gauges_namespace, STREAM_LAG, {"Function": fn})
            for fn in args.stream_functions
        ]
        for fn, source, namespace, metric, dimensions in lagging:
            self._alarm(
                f"lag-{fn}",
                f"{fn} is over {args.lag_threshold} records behind its {source}",
                namespace=namespace,
                metric=metric,
                dimensions=dimensions,
                statistic="Maximum",
                threshold=args.lag_threshold,
                periods=3,
                missing="breaching" if namespace == args.gauges_namespace else "notBreaching",
            )
        for fn, function_name in sorted(args.lambdas.items()):
            self._alarm(
                f"errors-{fn}",
                f"the {fn} Lambda failed invocations",
                namespace="AWS/Lambda",
                metric="Errors",
                dimensions={"FunctionName": function_name},
                statistic="Sum",
                threshold=0,
            )
        for metric, what in (
            ("HTTPCode_ELB_5XX_Count", "the load balancer answered 5xx (no healthy gateway?)"),
            ("HTTPCode_Target_5XX_Count", "gateways answered 5xx"),
        ):
            self._alarm(
                f"alb-{metric.split('_')[1].lower()}-5xx",
                what,
                namespace="AWS/ApplicationELB",
                metric=metric,
                dimensions={"LoadBalancer": args.load_balancer_suffix},
                statistic="Sum",
                threshold=10,
            )
        self.register_outputs({"topic": self.topic.arn, "alarms": sorted(self.alarms)})

    def _alarm(
        self,
        key: str,
        description: str,
        *,
        namespace: str,
        metric: str,
        dimensions: Mapping[str, pulumi.Input[str]],
        statistic: str,
        threshold: float,
        periods: int = 1,
        missing: str = "notBreaching",
    ) -> None:
        name = f"{self.prefix}-{key.replace(':', '-').replace('.', '-')}"
        self.alarms[key] = aws.cloudwatch.MetricAlarm(
            name,
            alarm_description=description,
            namespace=namespace,
            metric_name=metric,
            dimensions=dict(dimensions),
            statistic=statistic,
            period=300,
            evaluation_periods=periods,
            comparison_operator="GreaterThanThreshold",
            threshold=threshold,
            treat_missing_data=missing,
            alarm_actions=[self.topic.arn],
            ok_actions=[self.topic.arn],
            opts=pulumi.ResourceOptions(parent=self),
        )
