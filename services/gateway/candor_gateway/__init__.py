"""Candor's gateway: the public gRPC API, authentication, policy and orchestration."""

from candor_gateway.access import Permission, Principal, TokenRegistry, token_digest
from candor_gateway.policy import LEAD_NOTICE, SearchPolicy
from candor_gateway.service import GatewaySettings, serve
from candor_gateway.workflow import Workflow

__all__ = [
    "LEAD_NOTICE",
    "GatewaySettings",
    "Permission",
    "Principal",
    "SearchPolicy",
    "TokenRegistry",
    "Workflow",
    "serve",
    "token_digest",
]
