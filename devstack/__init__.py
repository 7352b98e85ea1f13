"""The local stack: private Redis, PostgreSQL, Kafka, gateways and function hosts; no docker."""

from devstack.components import Component, StackError
from devstack.ports import Ports
from devstack.stack import Stack

__all__ = ["Component", "Ports", "Stack", "StackError"]
