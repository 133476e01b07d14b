"""Tests for exact deep-linear-network learning coefficients in lambda_hat.aoyagi."""

from __future__ import annotations

from fractions import Fraction
from itertools import combinations, product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lambda_hat.aoyagi import dln_lambda, regular_lambda, rrr_lambda

# ---------------------------------------------------------------------------
# Independent brute force: try every index subset against Aoyagi's conditions.
# ---------------------------------------------------------------------------


def _qualifies(deficits: list[int], subset: tuple[int, ...]) -> bool:
    """True when ``subset`` satisfies all three of Aoyagi's conditions."""
    inside = [deficits[i] for i in subset]
    outside = [deficits[i] for i in range(len(deficits)) if i not in subset]
    ell = len(subset) - 1
    total = sum(inside)
    if total < ell * max(inside):
        return False
    if outside:
        low_out = min(outside)
        if max(inside) >= low_out:
            return False
        if total >= ell * low_out:
            return False
    return True


def _formula(widths: tuple[int, ...], rank: int, subset: tuple[int, ...]) -> Fraction:
    """Evaluate Aoyagi's closed form for a given (qualifying) index subset."""
    inside = [widths[i] - rank for i in subset]
    ell = len(inside) - 1
    total = sum(inside)
    # Remainder of total modulo ell, moved from 0 to ell (same as S - (ceil - 1) ell).
    a = total % ell or ell
    # sum_{i<j} M_i M_j written through the square of the sum.
    pairs = Fraction(total * total - sum(x * x for x in inside), 2)
    return (
        Fraction(rank * (widths[0] + widths[-1]) - rank * rank, 2)
        + Fraction(a * (ell - a), 4 * ell)
        - Fraction(ell * (ell - 1), 4) * Fraction(total, ell) ** 2
        + pairs / 2
    )


def _brute_force(widths: tuple[int, ...], rank: int) -> tuple[Fraction, int]:
    """Return (the common value over all qualifying subsets, how many qualified)."""
    deficits = [h - rank for h in widths]
    n = len(widths)
    values = set()
    count = 0
    for size in range(1, n + 1):
        for subset in combinations(range(n), size):
            if _qualifies(deficits, subset):
                count += 1
                values.add(_formula(widths, rank, subset))
    assert count >= 1, f"no subset qualifies for widths={widths}, rank={rank}"
    assert len(values) == 1, f"qualifying subsets disagree: {sorted(values)}"
    return values.pop(), count


def _n_params(widths: tuple[int, ...]) -> int:
    return sum(a * b for a, b in zip(widths, widths[1:], strict=False))


def _manifold_half_dim(widths: tuple[int, ...], rank: int) -> Fraction:
    # Rank-r matrices of shape H_out x H_in form a manifold of dimension
    # r * (H_in + H_out - r); half of it is the regular count for that manifold.
    return Fraction(rank * (widths[0] + widths[-1] - rank), 2)


# ---------------------------------------------------------------------------
# Hand-checked values.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("widths", "rank", "expected"),
    [
        # M = (5, 4, 5); Sigma = all, ell = 2, S = 14, a = 2 so a(ell - a) = 0:
        # 0 + 0 - (1/2) * 7**2 + (20 + 25 + 20) / 2 = -49/2 + 65/2 = 8.
        ((5, 4, 5), 0, Fraction(8)),
        # M = (5, 3, 5); Sigma = all, ell = 2, S = 13, a = 1:
        # 1/8 - (1/2) * (13/2)**2 + (15 + 25 + 15) / 2 = (1 - 169 + 220) / 8 = 13/2.
        ((5, 3, 5), 0, Fraction(13, 2)),
        # M = (2, 1, 1, 2); Sigma = all, ell = 3, S = 6, a = 3 so a(ell - a) = 0:
        # (6 - 1)/2 - (3*2/4) * 2**2 + 13/2 = 5/2 - 6 + 13/2 = 3.
        ((3, 2, 2, 3), 1, Fraction(3)),
        # Full rank r = 3 through a square 3 -> 3 -> 3 net: (A, B) -> BA is a
        # submersion onto the invertible 3x3 matrices, so lambda is half the
        # dimension of that 9-dimensional set: r(H_in + H_out - r)/2 = 3*3/2 = 9/2.
        # (The Aoyagi correction vanishes: M = (0, 0, 0), S = 0.)
        ((3, 3, 3), 3, Fraction(9, 2)),
        # Rank 2 through 2 -> 4 -> 3: every 3x2 matrix near the teacher has rank 2
        # and is reached by a submersion, so lambda = 2 * (2 + 3 - 2) / 2 = 3.
        ((2, 4, 3), 2, Fraction(3)),
        # Constant width 2, four layers, rank 0: M = (2,2,2,2,2), ell = 4, S = 10,
        # a = 2: 4/16 - 3 * (5/2)**2 + 10 * 4 / 2 = 1/4 - 75/4 + 20 = 3/2.
        ((2, 2, 2, 2, 2), 0, Fraction(3, 2)),
    ],
)
def test_hand_checked_values(widths, rank, expected):
    assert dln_lambda(widths, rank) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # Balanced regime, even parity: (2*4*10 - 0 - 16) / 8 = 8.
        ((5, 4, 5, 0), Fraction(8)),
        # Balanced regime, odd parity: (2*3*10 - 0 - 9 + 1) / 8 = 13/2.
        ((5, 3, 5, 0), Fraction(13, 2)),
        # Output-dominated regime (5 + 0 > 1 + 1): (1*1 - 0 + 0) / 2 = 1/2.
        ((1, 1, 5, 0), Fraction(1, 2)),
        # Input-dominated regime (6 + 1 > 2 + 3): (3*2 - 3*1 + 6*1) / 2 = 9/2.
        ((6, 3, 2, 1), Fraction(9, 2)),
        # Wide hidden layer (5 + 0 > 2 + 2): all 2x2 products, 4/2 = 2.
        ((2, 5, 2, 0), Fraction(2)),
    ],
)
def test_rrr_hand_checked_values(args, expected):
    assert rrr_lambda(*args) == expected


def test_single_layer_is_regular():
    # One weight matrix is an identifiable linear model, whatever the rank.
    for h_in, h_out in product(range(1, 7), repeat=2):
        for rank in range(min(h_in, h_out) + 1):
            got = dln_lambda((h_in, h_out), rank)
            assert got == regular_lambda(h_in * h_out)


def test_regular_lambda_values():
    assert regular_lambda(0) == 0
    assert regular_lambda(7) == Fraction(7, 2)
    assert isinstance(regular_lambda(4), Fraction)


def test_returns_fraction():
    assert isinstance(dln_lambda((3, 2, 3), 1), Fraction)
    assert isinstance(rrr_lambda(3, 2, 3, 1), Fraction)


# ---------------------------------------------------------------------------
# Cross-checks.
# ---------------------------------------------------------------------------


def test_agrees_with_reduced_rank_regression():
    checked = 0
    for h_in, h_mid, h_out in product(range(1, 7), repeat=3):
        for rank in range(min(h_in, h_mid, h_out) + 1):
            expected = rrr_lambda(h_in, h_mid, h_out, rank)
            assert dln_lambda((h_in, h_mid, h_out), rank) == expected, (
                h_in,
                h_mid,
                h_out,
                rank,
            )
            checked += 1
    # 216 width triples at rank 0, plus (7 - r) ** 3 triples for each rank r >= 1.
    assert checked == 216 + sum((7 - r) ** 3 for r in range(1, 7))


def test_brute_force_exhaustive_small():
    # Every net with 1..4 weight matrices and widths 1..4, every valid rank.
    for n_layers in range(1, 5):
        for widths in product(range(1, 5), repeat=n_layers + 1):
            for rank in range(min(widths) + 1):
                value, count = _brute_force(widths, rank)
                assert count == 1
                assert dln_lambda(widths, rank) == value


@st.composite
def _networks(draw):
    n_layers = draw(st.integers(min_value=2, max_value=5))
    widths = tuple(
        draw(st.lists(st.integers(1, 6), min_size=n_layers + 1, max_size=n_layers + 1))
    )
    rank = draw(st.integers(0, min(widths)))
    return widths, rank


@settings(max_examples=400, deadline=None)
@given(_networks())
def test_matches_brute_force(net):
    widths, rank = net
    value, count = _brute_force(widths, rank)
    # The admissible subset turns out to be unique; if several ever qualified the
    # brute force above would already have required them to give one value.
    assert count == 1
    assert dln_lambda(widths, rank) == value


@settings(max_examples=400, deadline=None)
@given(_networks())
def test_bounds_and_symmetries(net):
    widths, rank = net
    lam = dln_lambda(widths, rank)
    # Never above the regular count d/2.
    assert lam <= regular_lambda(_n_params(widths))
    # Never below half the dimension of the rank-r matrix manifold (the Aoyagi
    # correction is >= 0 because sum M^2 <= max(M) * S <= S^2 / ell on Sigma).
    assert lam >= _manifold_half_dim(widths, rank)
    # Never above half the number of entries of the end-to-end matrix (checked
    # numerically; also what subadditivity over the output entries predicts).
    assert lam <= Fraction(widths[0] * widths[-1], 2)
    # Transposing every layer reverses the widths and keeps the loss landscape.
    assert dln_lambda(widths[::-1], rank) == lam
    # A higher-rank teacher is never simpler.
    if rank > 0:
        assert dln_lambda(widths, rank - 1) <= lam


# ---------------------------------------------------------------------------
# Input validation.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("widths", "rank", "name"),
    [
        ((), 0, "widths"),
        ((3,), 0, "widths"),
        ((3, 0, 3), 0, "widths"),
        ((3, -2), 0, "widths"),
        ((3, 2, 3), -1, "rank"),
        ((3, 2, 3), 3, "rank"),
    ],
)
def test_dln_lambda_rejects_bad_input(widths, rank, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        dln_lambda(widths, rank)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((0, 2, 2, 0), "n_in"),
        ((2, 0, 2, 0), "n_hidden"),
        ((2, 2, 0, 0), "n_out"),
        ((2, 2, 2, -1), "rank"),
        ((4, 2, 5, 3), "rank"),
    ],
)
def test_rrr_lambda_rejects_bad_input(args, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        rrr_lambda(*args)


def test_regular_lambda_rejects_negative():
    with pytest.raises(ValueError, match=r"\bd\b"):
        regular_lambda(-1)


def test_non_integer_input_is_a_type_error():
    with pytest.raises(TypeError, match="widths"):
        dln_lambda((3, 2.0, 3), 1)
    with pytest.raises(TypeError, match="rank"):
        dln_lambda((3, 2, 3), 1.0)
    with pytest.raises(TypeError, match="n_hidden"):
        rrr_lambda(3, True, 3, 0)
