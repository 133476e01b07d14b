"""Exact learning coefficients (RLCTs) of deep linear networks.

A deep linear network with layer widths ``H_1, ..., H_{L+1}`` (input width first,
output width last) computes ``x -> W_L ... W_1 x`` with ``W_s`` of shape
``H_{s+1} x H_s`` and no biases.  Its parameter count is
``d = sum_s H_s * H_{s+1}``.  For a realisable teacher whose end-to-end matrix has
rank ``r``, the learning coefficient (real log canonical threshold) ``lambda`` was
computed in closed form by M. Aoyagi, "Consideration on the learning efficiency of
multiple-layered neural networks with linear units", Neural Networks (2024); the
statement is repeated in Lau, Furman, Wang, Murfet & Wei, "The Local Learning
Coefficient: A Singularity-Aware Complexity Measure" (appendix on deep linear
networks).

Statement used here (notation of those papers):

* put ``M_s = H_s - r`` for every width (all ``M_s >= 0`` since ``r <= min H``);
* pick a set ``Sigma`` of width indices, of size ``ell + 1``, such that

  1. ``max_{s in Sigma} M_s < min_{k not in Sigma} M_k``,
  2. ``sum_{s in Sigma} M_s >= ell * max_{s in Sigma} M_s``,
  3. ``sum_{s in Sigma} M_s < ell * min_{k not in Sigma} M_k``

  (conditions 1 and 3 hold vacuously when ``Sigma`` contains every index);
* with ``S = sum_{s in Sigma} M_s`` and ``a = S - (ceil(S / ell) - 1) * ell``
  (the remainder of ``S`` modulo ``ell``, taken in ``1..ell``),

  ``lambda = (r * (H_1 + H_{L+1}) - r**2) / 2
            + a * (ell - a) / (4 * ell)
            - ell * (ell - 1) / 4 * (S / ell) ** 2
            + 1/2 * sum_{i < j in Sigma} M_i * M_j``.

The first term is half the dimension of the manifold of rank-``r`` matrices of shape
``H_{L+1} x H_1``; the remaining terms form a non-negative correction.

Selecting ``Sigma``: condition 1 forces ``Sigma`` to be a block of smallest ``M``
values that does not split a tie.  Sort the ``M`` values increasingly as
``m_1 <= ... <= m_n`` and let ``g(k) = m_1 + ... + m_{k-1} - (k - 2) * m_k`` for
``k >= 2``; condition 2 for the ``k`` smallest values reads ``g(k) >= 0`` and
condition 3 reads ``g(k + 1) < 0``.  Since ``g(k + 1) - g(k) = (k - 1)(m_k -
m_{k+1}) <= 0``, ``g`` never increases, ``g(2) = m_1 >= 0`` and a size-one set
always violates condition 3.  Hence exactly one ``Sigma`` qualifies: the ``K``
smallest values, with ``K`` the largest ``k`` for which ``g(k) >= 0`` (and no tie is
split there, because a tie gives ``g(k + 1) = g(k)``).

``rrr_lambda`` gives the older, independently derived answer for one hidden layer
(reduced rank regression, Aoyagi & Watanabe, Neural Networks 2005) and serves as a
cross-check of ``dln_lambda``.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from itertools import combinations

__all__ = ["dln_lambda", "regular_lambda", "rrr_lambda"]


def _check_int(value: object, name: str) -> int:
    """Return ``value`` as an int, or raise TypeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


def _validate_widths_and_rank(widths: Sequence[int], rank: int) -> tuple[int, ...]:
    """Check ``widths`` and ``rank`` for ``dln_lambda``; return widths as a tuple."""
    if isinstance(widths, str | bytes) or not isinstance(widths, Sequence):
        raise TypeError("widths must be a sequence of ints")
    hs = tuple(_check_int(h, f"widths[{i}]") for i, h in enumerate(widths))
    if len(hs) < 2:
        raise ValueError(
            f"widths must list at least 2 widths (input and output), got {len(hs)}"
        )
    for i, h in enumerate(hs):
        if h < 1:
            raise ValueError(f"widths must all be >= 1, but widths[{i}] = {h}")
    r = _check_int(rank, "rank")
    if r < 0:
        raise ValueError(f"rank must be >= 0, got {r}")
    if r > min(hs):
        raise ValueError(f"rank must be <= min(widths) = {min(hs)}, got {r}")
    return hs


def _select_sigma(deficits: Sequence[int]) -> tuple[int, ...]:
    """Return the sorted indices of the unique set Sigma meeting Aoyagi's conditions.

    Args:
        deficits: the values ``M_s = H_s - r``, all non-negative, at least two.
    """
    n = len(deficits)
    order = sorted(range(n), key=lambda s: deficits[s])
    ms = [deficits[s] for s in order]
    chosen = 0
    for k in range(2, n + 1):
        ell = k - 1
        total = sum(ms[:k])
        if total < ell * ms[k - 1]:
            # g(k) < 0, and g never increases, so no larger block qualifies.
            break
        chosen = k
    if chosen == 0:  # pragma: no cover - impossible: k = 2 always passes
        raise RuntimeError(f"no admissible index set for deficits {list(deficits)}")
    return tuple(sorted(order[:chosen]))


def dln_lambda(widths: Sequence[int], rank: int) -> Fraction:
    """Exact learning coefficient of a bias-free deep linear network (Aoyagi 2024).

    Args:
        widths: layer widths ``(H_1, ..., H_{L+1})``, input width first and output
            width last; at least two entries, each ``>= 1``.
        rank: rank ``r`` of the teacher's end-to-end matrix, with
            ``0 <= r <= min(widths)``.

    Returns:
        ``lambda`` as an exact fraction.

    Raises:
        ValueError: if ``widths`` is too short or holds a width below 1, or if
            ``rank`` is negative or exceeds ``min(widths)``.
        TypeError: if a width or the rank is not an int.
    """
    hs = _validate_widths_and_rank(widths, rank)
    r = int(rank)
    deficits = [h - r for h in hs]
    sigma = _select_sigma(deficits)
    ell = len(sigma) - 1
    chosen = [deficits[s] for s in sigma]
    total = sum(chosen)

    # a = S - (ceil(S / ell) - 1) * ell, computed with integer ceiling division.
    ceil_ratio = -(-total // ell)
    a = total - (ceil_ratio - 1) * ell
    pair_sum = sum(x * y for x, y in combinations(chosen, 2))

    manifold_half_dim = Fraction(r * (hs[0] + hs[-1]) - r * r, 2)
    return (
        manifold_half_dim
        + Fraction(a * (ell - a), 4 * ell)
        - Fraction(ell * (ell - 1), 4) * Fraction(total, ell) ** 2
        + Fraction(pair_sum, 2)
    )


def rrr_lambda(n_in: int, n_hidden: int, n_out: int, rank: int) -> Fraction:
    """Exact learning coefficient of reduced rank regression (Aoyagi & Watanabe 2005).

    The model is ``x -> B A x`` with ``A`` of shape ``n_hidden x n_in`` and ``B`` of
    shape ``n_out x n_hidden``, i.e. a deep linear network with widths
    ``(n_in, n_hidden, n_out)``.

    Args:
        n_in: input width, ``>= 1``.
        n_hidden: hidden width, ``>= 1``.
        n_out: output width, ``>= 1``.
        rank: rank of the teacher matrix, ``0 <= rank <= min(n_in, n_hidden, n_out)``.

    Returns:
        ``lambda`` as an exact fraction.

    Raises:
        ValueError: if a width is below 1, or ``rank`` is negative or too large.
        TypeError: if an argument is not an int.
    """
    sizes = {
        "n_in": _check_int(n_in, "n_in"),
        "n_hidden": _check_int(n_hidden, "n_hidden"),
        "n_out": _check_int(n_out, "n_out"),
    }
    for name, value in sizes.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    r = _check_int(rank, "rank")
    if r < 0:
        raise ValueError(f"rank must be >= 0, got {r}")
    smallest = min(sizes.values())
    if r > smallest:
        raise ValueError(
            f"rank must be <= min(n_in, n_hidden, n_out) = {smallest}, got {r}"
        )

    m, h, n = sizes["n_in"], sizes["n_hidden"], sizes["n_out"]
    # At most one of the three "unbalanced" inequalities can hold: any two of them
    # together would force r to exceed one of the widths.
    if n + r > m + h:
        # Output side dominates: the answer is linear in the widths.
        return Fraction(h * m - h * r + n * r, 2)
    if m + r > n + h:
        # Input side dominates (mirror image of the previous case).
        return Fraction(h * n - h * r + m * r, 2)
    if h + r > m + n:
        # Hidden layer wide enough that the product fills all n_out x n_in matrices.
        return Fraction(m * n, 2)
    # Balanced regime: quadratic formula with a parity correction.
    numerator = 2 * (h + r) * (m + n) - (m - n) ** 2 - (h + r) ** 2
    if (m + n + h + r) % 2 == 1:
        numerator += 1
    return Fraction(numerator, 8)


def regular_lambda(d: int) -> Fraction:
    """Learning coefficient ``d / 2`` of a regular (identifiable) model.

    Args:
        d: number of parameters, ``>= 0``.

    Returns:
        ``d / 2`` as an exact fraction.

    Raises:
        ValueError: if ``d`` is negative.
        TypeError: if ``d`` is not an int.
    """
    dim = _check_int(d, "d")
    if dim < 0:
        raise ValueError(f"d must be >= 0, got {dim}")
    return Fraction(dim, 2)
