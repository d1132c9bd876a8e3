"""The ``candor`` command line and the local process stack."""

from candor_cli.client import GatewayClient
from candor_cli.processes import StackError
from candor_cli.stack import LocalStack, StackState

__all__ = ["GatewayClient", "LocalStack", "StackError", "StackState"]
