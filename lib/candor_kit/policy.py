"""The search policy: one YAML file, validated at start-up, that every search is checked against.

The gateway enforces it (and rereads it, candor_gateway.policy); the CLI writes the developer
stack's default; the review desk checks case numbers with its rules.

It names the allowed purposes, whether an authorisation reference is required, the candidate-list
size, a threshold per model, the minimum probe quality, the daily search quota per user, how long
probe photos are kept (until reviewed, plus 30 days, by default) and how many reviewers must
confirm a lead. A bad file stops the gateway with a message naming each problem; each refusal
names the rule it broke.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from candor.common.v1 import common_pb2
from candor_kit.errors import ConfigError, InvalidInput, PolicyViolation

#: A case number: 2-64 characters, "/"-separated parts that each start with a letter or digit (so
#: no "..", no empty part and nothing a file name or a terminal would read specially).
MAX_CASE_CHARS = 64
CASE_NUMBER = re.compile(r"^(?=.{2,64}$)[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
PURPOSE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
LEAD_NOTICE = "investigative lead only: not a basis for arrest"
#: The largest authorisation reference accepted (a warrant number, a court order's citation).
MAX_AUTHORISATION_CHARS = 200


class Rule:
    """The names refusals give for the rule they broke (also the report's categories)."""

    ROLE = "role"
    CASE = "case_number"
    PURPOSE = "purpose"
    AUTHORISATION = "authorisation_reference"
    CANDIDATES = "max_candidates"
    PROBE_QUALITY = "probe_quality"
    QUOTA = "quota"
    OWN_SEARCH = "own_search"
    REVIEW = "review"

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every rule's name."""
        return tuple(value for key, value in vars(cls).items() if key.isupper())


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Candidates(_Strict):
    """How many candidates a search returns when it asks none, and the most it may ask."""

    default: Annotated[int, Field(ge=1, le=200)] = 10
    max: Annotated[int, Field(ge=1, le=200)] = 20

    @model_validator(mode="after")
    def _default_within_max(self) -> Candidates:
        if self.default > self.max:
            raise ValueError(f"default ({self.default}) exceeds max ({self.max})")
        return self


class ProbeQuality(_Strict):
    """The least a probe's face must offer: its width in pixels and its sharpness (variance of
    the Laplacian of the aligned chip)."""

    min_face_px: Annotated[int, Field(ge=0, le=4096)] = 40
    min_blur: Annotated[float, Field(ge=0)] = 0.0


class Quotas(_Strict):
    """Searches one user may make per UTC day; 0 means no quota."""

    searches_per_user_per_day: Annotated[int, Field(ge=0, le=100_000)] = 0
    #: A service account's own quota (a case system files for many investigators); unset: the
    #: per-user quota applies to it as to a person.
    searches_per_service_account_per_day: Annotated[int, Field(ge=0, le=1_000_000)] | None = None

    def daily_searches(self, service_account: bool) -> int:
        """The day's quota of a person, or of a service account; 0 means none."""
        if service_account and self.searches_per_service_account_per_day is not None:
            return self.searches_per_service_account_per_day
        return self.searches_per_user_per_day


class Retention(_Strict):
    """Whether a search's probe photo is kept, encrypted, for the people who review its
    candidates, and for how many days after the last of them is decided. A search whose candidates
    are never all decided counts as decided when its review window closes; one with no candidates,
    when it is made."""

    keep_probes: bool = True
    probe_days_after_decision: Annotated[int, Field(ge=0, le=3650)] = 30


class Reviews(_Strict):
    """Different reviewers who must confirm a candidate before it is a lead, and how far back
    pending reviews are listed."""

    needed: Annotated[int, Field(ge=2, le=5)] = 2
    window_days: Annotated[int, Field(ge=1, le=365)] = 30
    #: Hide distances and the search's order from reviewers (supervisors and auditors still see
    #: both): each reviewer gets the candidates in an order of their own, without scores.
    score_blind: bool = False


class Policy(_Strict):
    """The validated contents of policy.yaml."""

    version: Literal[1]
    purposes: Annotated[list[str], Field(min_length=1)]
    authorisation_reference: Literal["required", "optional"] = "required"
    candidates: Candidates = Candidates()
    #: Per model id: the largest distance shown as a candidate. It can only tighten the model's
    #: calibrated threshold, never loosen it.
    thresholds: dict[str, Annotated[float, Field(gt=0, le=4)]] = {}
    probe_quality: ProbeQuality = ProbeQuality()
    quotas: Quotas = Quotas()
    retention: Retention = Retention()
    reviews: Reviews = Reviews()

    @field_validator("purposes")
    @classmethod
    def _purposes_are_names(cls, purposes: list[str]) -> list[str]:
        bad = [p for p in purposes if not PURPOSE.match(p)]
        if bad:
            raise ValueError(f"purposes must be lower-case words joined by '-': {bad}")
        if len(set(purposes)) != len(purposes):
            raise ValueError("purposes are listed twice")
        return purposes

    def check_search(self, case_number: str, purpose: str, authorisation: str, requested: int) -> int:
        """Validate a search's case, purpose, authorisation and list size; returns the list size."""
        if not case_number:
            raise InvalidInput("a case number is required", rule=Rule.CASE)
        if not CASE_NUMBER.match(case_number):
            raise InvalidInput(
                "the case number must be 2-64 letters, digits or ._- in parts separated by /, each part "
                "starting with a letter or digit",
                rule=Rule.CASE,
            )
        if not purpose:
            raise InvalidInput("a purpose is required", rule=Rule.PURPOSE)
        if purpose not in self.purposes:
            # Named back only when it is a purpose's shape: the refusal's message travels in a gRPC
            # trailer, and a 10 KB "purpose" would overflow it.
            named = f"purpose {purpose!r}" if PURPOSE.match(purpose) else "the purpose"
            raise PolicyViolation(
                f"{named} is not allowed; allowed: {', '.join(sorted(self.purposes))}", rule=Rule.PURPOSE
            )
        if len(authorisation) > MAX_AUTHORISATION_CHARS:
            raise InvalidInput(f"the authorisation reference exceeds {MAX_AUTHORISATION_CHARS} characters")
        if not is_printable(authorisation):
            raise InvalidInput(
                "the authorisation reference holds control or formatting characters", rule=Rule.AUTHORISATION
            )
        if self.authorisation_reference == "required" and not authorisation.strip():
            raise PolicyViolation(
                "the policy requires an authorisation reference (warrant, order or approval)", rule=Rule.AUTHORISATION
            )
        if requested < 0:
            raise InvalidInput("max_candidates cannot be negative", rule=Rule.CANDIDATES)
        if requested > self.candidates.max:
            # Refused, not quietly cut: the requester learns the rule and the refusal is audited.
            raise PolicyViolation(
                f"max_candidates {requested} exceeds the policy's limit of {self.candidates.max}", rule=Rule.CANDIDATES
            )
        return requested or self.candidates.default

    def check_probe(self, quality: common_pb2.FaceQuality) -> None:
        """Refuse a probe face that is smaller or blurrier than the policy allows."""
        wanted = self.probe_quality
        if quality.face_size_px < wanted.min_face_px:
            raise PolicyViolation(
                f"the probe face is {quality.face_size_px} px wide; the policy needs {wanted.min_face_px}",
                rule=Rule.PROBE_QUALITY,
            )
        if quality.blur < wanted.min_blur:
            raise PolicyViolation(
                f"the probe face is too blurry ({quality.blur:.1f}); the policy needs {wanted.min_blur:g}",
                rule=Rule.PROBE_QUALITY,
            )

    def threshold(self, model: common_pb2.ModelRef) -> common_pb2.ModelRef:
        """The model reference with the policy's threshold applied where it is stricter."""
        limit = self.thresholds.get(model.id)
        if limit is None or (model.threshold and limit >= model.threshold):
            return model
        tightened = common_pb2.ModelRef()
        tightened.CopyFrom(model)
        tightened.threshold = limit
        return tightened


@dataclass(frozen=True)
class LoadedPolicy:
    """A policy with the file it came from and the SHA-256 of the file's bytes."""

    policy: Policy
    path: Path
    sha256: str


def parse_policy(text: bytes, source: str = "policy") -> Policy:
    """Validate a policy document; ConfigError lists every problem with its place in the file."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: must be a mapping of settings")
    try:
        return Policy.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(top)'}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from exc


def read_policy_file(path: Path) -> bytes:
    """The policy file's bytes; ConfigError when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"policy file {path}: {exc.strerror or exc}") from exc


def load_policy(path: Path) -> LoadedPolicy:
    """Read and validate the policy file."""
    text = read_policy_file(path)
    return LoadedPolicy(parse_policy(text, str(path)), path, hashlib.sha256(text).hexdigest())


#: The policy a developer's stack starts with (`candor stack up` writes it when none is given).
DEFAULT_POLICY_YAML = """\
# Candor search policy. The gateway validates this file at start-up and refuses to start on a bad
# one; while running it rereads the file when it changes (a change is audited with its SHA-256).
version: 1
# Offence categories a search may be made for.
purposes: [investigation, missing-person, victim-identification]
# "required": every search names the warrant, court order or approval it rests on.
authorisation_reference: required
candidates:
  default: 10
  max: 20
# Per model id, the largest distance shown as a candidate; may only tighten the calibration.
thresholds: {}
probe_quality:
  min_face_px: 40
  min_blur: 0
quotas:
  searches_per_user_per_day: 200
# Probes are kept, encrypted, for their reviewers: until every candidate is decided (or the
# review window closes), then this many days more; every deletion is audited.
retention:
  keep_probes: true
  probe_days_after_decision: 30
# A candidate is a lead when this many different reviewers (never the searcher) conclude "same
# person"; score_blind hides distances and the search's order from reviewers.
reviews:
  needed: 2
  window_days: 30
  score_blind: false
"""


def is_printable(text: str) -> bool:
    """True when ``text`` holds no control, formatting (bidi overrides, zero-width) or separator
    characters other than the plain space: nothing that rewrites a terminal or a page."""
    return all(ch == " " or unicodedata.category(ch)[0] not in "CZ" for ch in text)
