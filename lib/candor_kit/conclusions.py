"""The words of a facial comparison review, shared by the gateway (which checks them), the review
desk and the CLI (which offer them): the graded conclusions a reviewer may reach on a candidate,
and the facial features they may say they relied on.

The conclusions follow the graded scale of facial image comparison practice (FISWG; ENFSI's best
practice manual): only "same person" supports a lead. The features are the components of FISWG's
feature list for morphological analysis.
"""

from __future__ import annotations

from candor.gateway.v1 import gateway_pb2

#: Each conclusion: its wire value, the name the audit records use, and the words a reviewer reads.
#: The first two keep the names the chain has always used ("confirm", "reject").
CONCLUSIONS: tuple[tuple[int, str, str], ...] = (
    (gateway_pb2.DECISION_CONFIRM, "confirm", "same person"),
    (gateway_pb2.DECISION_PROBABLY_SAME, "probably-same", "probably the same person"),
    (gateway_pb2.DECISION_INCONCLUSIVE, "inconclusive", "inconclusive"),
    (gateway_pb2.DECISION_PROBABLY_DIFFERENT, "probably-different", "probably different people"),
    (gateway_pb2.DECISION_REJECT, "reject", "different people"),
    (gateway_pb2.DECISION_INSUFFICIENT, "insufficient", "insufficient quality to compare"),
)
#: Conclusion names by wire value, wire values by name, and the words a page shows by name.
NAMES = {value: name for value, name, _ in CONCLUSIONS}
VALUES = {name: value for value, name, _ in CONCLUSIONS}
WORDS = {name: words for _, name, words in CONCLUSIONS}
#: The one conclusion that counts towards a lead.
SUPPORTS_LEAD = "confirm"
#: Conclusions that compare features, and so name the features they rest on.
NEED_FEATURES = frozenset({"confirm", "probably-same", "probably-different", "reject"})

#: FISWG's facial components for morphological analysis, as the reviewer ticks them.
FEATURES: tuple[str, ...] = (
    "skin",
    "face/head outline",
    "face/head composition",
    "hair",
    "forehead",
    "eyebrows",
    "eyes",
    "cheeks",
    "nose",
    "ears",
    "mouth",
    "chin/jawline",
    "neck",
    "facial hair",
    "facial lines",
    "scars",
    "facial marks",
    "tattoos",
    "alterations",
)
