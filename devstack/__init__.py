"""The local stack: private Redis, PostgreSQL, Kafka, gateways and function hosts; no docker."""

from devstack.ports import Ports
from devstack.stack import Component, Stack, StackError

__all__ = ["Component", "Ports", "Stack", "StackError"]
