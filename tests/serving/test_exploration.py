"""The exploration policy on its own: what it approves, how often, and the propensity
it states for each decision."""

from __future__ import annotations

import math

import pytest

from serving.exploration import Exploration

IDS = [f"tx-{i}" for i in range(20_000)]


@pytest.mark.parametrize("share", [0.02, 0.1, 0.3])
def test_the_share_approved_is_the_setting_within_sampling_error(share: float) -> None:
    answers = [Exploration(share).apply(tx, "decline") for tx in IDS]
    approved = sum(decision == "approve" for decision, _ in answers)
    sd = math.sqrt(share * (1 - share) * len(IDS))
    assert abs(approved - share * len(IDS)) < 4 * sd
    # Each payment's propensity is the probability of what it got: they add up to one
    # over the two outcomes, and weighting by their inverse recovers the volume.
    assert {p for d, p in answers if d == "approve"} == {share}
    assert {p for d, p in answers if d == "decline"} == {1 - share}
    assert sum(1 / p for d, p in answers if d == "approve") == pytest.approx(len(IDS), rel=0.1)


def test_approvals_are_untouched_and_a_zero_share_never_explores() -> None:
    assert {Exploration(0.3).apply(tx, "approve") for tx in IDS[:500]} == {("approve", 1.0)}
    assert {Exploration(0.0).apply(tx, "review") for tx in IDS[:500]} == {("review", 1.0)}


def test_the_same_payment_is_always_decided_the_same_way() -> None:
    first = [Exploration(0.3).apply(tx, "review") for tx in IDS[:1_000]]
    assert [Exploration(0.3).apply(tx, "review") for tx in IDS[:1_000]] == first
    # ... and a review and a decline of one payment are explored alike.
    assert [d == "approve" for d, _ in first] == [
        Exploration(0.3).apply(tx, "decline")[0] == "approve" for tx in IDS[:1_000]
    ]
