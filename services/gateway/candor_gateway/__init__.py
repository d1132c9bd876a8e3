"""Candor's gateway: the public gRPC API, authentication, policy and orchestration."""

from candor_gateway.access import (
    ROLES,
    RPC_ROLES,
    Permission,
    Principal,
    TokenVerifier,
    issue_token,
    load_private_key,
)
from candor_gateway.policy import DEFAULT_POLICY_YAML, LEAD_NOTICE, Policy, PolicyHolder, load_policy, parse_policy
from candor_gateway.service import GatewaySettings, serve
from candor_gateway.workflow import Workflow
from candor_kit.keys import generate_token_keys

__all__ = [
    "DEFAULT_POLICY_YAML",
    "LEAD_NOTICE",
    "ROLES",
    "RPC_ROLES",
    "GatewaySettings",
    "Permission",
    "Policy",
    "PolicyHolder",
    "Principal",
    "TokenVerifier",
    "Workflow",
    "generate_token_keys",
    "issue_token",
    "load_policy",
    "load_private_key",
    "parse_policy",
    "serve",
]
