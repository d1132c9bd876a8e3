"""The ``candor`` command line and the local process stack."""

from candor_cli.client import GatewayClient
from candor_cli.stack import LocalStack, StackError, StackState

__all__ = ["GatewayClient", "LocalStack", "StackError", "StackState"]
