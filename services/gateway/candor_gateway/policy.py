"""The policy in force at the gateway: loaded at start-up, reread when its file changes, audited.

The policy's format and rules are candor_kit.policy's; this module holds it while the gateway runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib

import structlog

from candor_kit import AuditPublisher, CandorError
from candor_kit.errors import ConfigError
from candor_kit.policy import LoadedPolicy, Policy, parse_policy, read_policy_file

log = structlog.get_logger("candor.gateway.policy")


class PolicyHolder:
    """The policy in force. It rereads its file when the file changes: a valid new policy takes
    over and the change is audited with both hashes; an invalid one is refused (and audited), and
    the policy in force stays."""

    def __init__(self, loaded: LoadedPolicy) -> None:
        self.loaded = loaded
        #: The hash of the last file refused, so a bad file is audited once, not every round.
        self._rejected = ""

    @property
    def current(self) -> Policy:
        """The policy in force."""
        return self.loaded.policy

    async def announce(self, audit: AuditPublisher) -> None:
        """Audit the policy in force, with its hash and contents (at start-up)."""
        await audit.publish("policy.loaded", actor="system", details=self._described(self.loaded))

    async def reload(self, audit: AuditPublisher) -> bool:
        """Reread the file; True when a new policy took over."""
        path, digest = self.loaded.path, ""
        try:
            text = read_policy_file(path)
            digest = hashlib.sha256(text).hexdigest()
            if digest == self.loaded.sha256:
                return False
            fresh = LoadedPolicy(parse_policy(text, str(path)), path, digest)
        except ConfigError as problem:
            if digest == self._rejected:
                return False
            self._rejected = digest
            log.warning("policy_rejected", problem=str(problem))
            await audit.publish(
                "policy.rejected",
                actor="system",
                details={"sha256": digest, "problem": str(problem), "in_force_sha256": self.loaded.sha256},
            )
            return False
        await audit.publish(
            "policy.changed",
            actor="system",
            details={**self._described(fresh), "previous_sha256": self.loaded.sha256},
        )
        log.info("policy_changed", sha256=fresh.sha256, previous_sha256=self.loaded.sha256)
        self.loaded = fresh
        return True

    async def watch(self, audit: AuditPublisher, interval_s: float, stop: asyncio.Event) -> None:
        """Reread the file every ``interval_s`` until stopped."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
            if not stop.is_set():
                try:
                    await self.reload(audit)
                except CandorError as exc:  # the audit is unreachable: try again next round
                    log.warning("policy_reload_failed", error=exc.message)

    @staticmethod
    def _described(loaded: LoadedPolicy) -> dict[str, object]:
        return {"sha256": loaded.sha256, "file": str(loaded.path), "policy": loaded.policy.model_dump()}
