"""Account-type entities: which account types a text names.

The faithfulness (DIR) check uses these on any corpus, imported or synthetic; the synthetic
generator (:mod:`bankllm.synth`) draws its account-type slots from :data:`ACCOUNT_TYPES`.
"""

from __future__ import annotations

import re

ACCOUNT_TYPES: tuple[str, ...] = ("checking", "savings", "credit card")
MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
"""The account types a request can name; ``slots["account_type"]`` is one of these."""

ENTITY_PATTERNS: dict[str, re.Pattern[str]] = {
    "checking": re.compile(r"\bchecking\b", re.IGNORECASE),
    "savings": re.compile(r"\bsavings?\b", re.IGNORECASE),
    "credit card": re.compile(r"\bcredit\b", re.IGNORECASE),
}
"""Regex per account type that finds a mention of it ("credit" alone counts as credit card)."""


def mentioned_account_types(text: str) -> list[str]:
    """Return the account types ``text`` names, in :data:`ACCOUNT_TYPES` order.

    "credit card" and a bare "credit" both count as ``"credit card"``; "savings"/"saving" as
    ``"savings"``. Used by the faithfulness (DIR) check: a faithful answer names the requested
    account type and no other.
    """
    return [name for name in ACCOUNT_TYPES if ENTITY_PATTERNS[name].search(text)]
