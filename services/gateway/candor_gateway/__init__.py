"""Candor's gateway: the public gRPC API, authentication, policy and orchestration."""

from candor_gateway.access import (
    ROLES,
    RPC_ROLES,
    Permission,
    Principal,
    TokenVerifier,
    generate_token_keys,
    issue_token,
    load_private_key,
)
from candor_gateway.policy import LEAD_NOTICE, SearchPolicy
from candor_gateway.service import GatewaySettings, serve
from candor_gateway.workflow import Workflow

__all__ = [
    "LEAD_NOTICE",
    "ROLES",
    "RPC_ROLES",
    "GatewaySettings",
    "Permission",
    "Principal",
    "SearchPolicy",
    "TokenVerifier",
    "Workflow",
    "generate_token_keys",
    "issue_token",
    "load_private_key",
    "serve",
]
