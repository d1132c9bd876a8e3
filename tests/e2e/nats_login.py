"""Logging in to a local stack's nats-server as one of its users, for tests that act on the bus."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client

from candor_cli import LocalStack


async def connect_as(stack: LocalStack, role: str, **options: Any) -> Client:
    """A NATS connection as ``role``'s user (a key of ``subjects.ROLES``): the stack's nats-server
    has no anonymous access, and each user its least permissions."""
    login = stack.nats_login(role)
    password = (await asyncio.to_thread(Path(login.password_file).read_text)).strip()
    return await nats.connect(login.url, user=login.user, password=password, inbox_prefix=login.inbox_prefix, **options)
