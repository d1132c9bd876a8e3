"""The ``candor`` command line and the local process stack."""

from candor_cli.processes import StackError
from candor_cli.stack import LocalStack, StackState
from candor_client import GatewayClient

__all__ = ["GatewayClient", "LocalStack", "StackError", "StackState"]
