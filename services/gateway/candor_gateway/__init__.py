"""Candor's gateway: the public gRPC API, authorization, the policy in force and orchestration."""

from candor_gateway.access import RPC_ROLES, Permission, require
from candor_gateway.policy import PolicyHolder
from candor_gateway.service import GatewaySettings, serve
from candor_gateway.workflow import Workflow

__all__ = ["RPC_ROLES", "GatewaySettings", "Permission", "PolicyHolder", "Workflow", "require", "serve"]
