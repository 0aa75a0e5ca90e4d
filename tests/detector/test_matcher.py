"""Hungarian matcher: optimality against brute force, batching, empty targets."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from joindet.detector import HungarianMatcher, build_matcher, get_preset


def _random_problem(seed: int, sizes: list[int], q: int = 5, c: int = 2):
    g = torch.Generator().manual_seed(seed)
    b = len(sizes)
    outputs = {
        "pred_logits": torch.randn(b, q, c, generator=g),
        "pred_boxes": torch.rand(b, q, 2, generator=g).mul(0.6).add(0.2).repeat(1, 1, 2)
        * torch.tensor([1.0, 1.0, 0.5, 0.5]),
    }
    targets = []
    for n in sizes:
        centre = torch.rand(n, 2, generator=g) * 0.6 + 0.2
        size = torch.rand(n, 2, generator=g) * 0.3 + 0.05
        targets.append({"boxes": torch.cat([centre, size], 1), "labels": torch.randint(1, c, (n,), generator=g)})
    return outputs, targets


def _brute_force(cost: torch.Tensor) -> float:
    q, n = cost.shape
    return min(sum(cost[r, j].item() for j, r in enumerate(rows)) for rows in itertools.permutations(range(q), n))


@pytest.mark.parametrize("loss", ["focal", "ce"])
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), sizes=st.lists(st.integers(0, 4), min_size=1, max_size=3))
def test_matches_brute_force_optimum(loss: str, seed: int, sizes: list[int]) -> None:
    outputs, targets = _random_problem(seed, sizes)
    matcher = HungarianMatcher(loss=loss)
    cost = matcher.cost_matrix(outputs, targets) if sum(sizes) else None
    offset = 0
    for i, (rows, cols) in enumerate(matcher(outputs, targets)):
        n = sizes[i]
        assert len(rows) == len(cols) == min(5, n)
        assert len(set(rows.tolist())) == len(rows) and sorted(cols.tolist()) == list(range(n))
        if n:
            block = cost[i, :, offset : offset + n]
            assert block[rows, cols].sum().item() == pytest.approx(_brute_force(block), abs=1e-4)
        offset += n


def test_batched_equals_per_image() -> None:
    outputs, targets = _random_problem(7, [3, 0, 4, 1])
    matcher = HungarianMatcher()
    batched = matcher(outputs, targets)
    for i, target in enumerate(targets):
        single = matcher({k: v[i : i + 1] for k, v in outputs.items()}, [target])[0]
        assert torch.equal(batched[i][0], single[0]) and torch.equal(batched[i][1], single[1])


def test_empty_targets_give_empty_matches() -> None:
    outputs, targets = _random_problem(1, [0, 0])
    for rows, cols in HungarianMatcher()(outputs, targets):
        assert rows.dtype == cols.dtype == torch.long and rows.numel() == cols.numel() == 0


def test_more_targets_than_queries_matches_every_query() -> None:
    outputs, targets = _random_problem(2, [8])
    rows, cols = HungarianMatcher()(outputs, targets)[0]
    assert sorted(rows.tolist()) == list(range(5)) and len(set(cols.tolist())) == 5


def test_obvious_assignment_is_found() -> None:
    boxes = torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.8, 0.8, 0.2, 0.2], [0.5, 0.5, 0.3, 0.3]])
    outputs = {"pred_logits": torch.zeros(1, 3, 2), "pred_boxes": boxes[None]}
    targets = [{"boxes": boxes[[2, 0]], "labels": torch.ones(2, dtype=torch.long)}]
    rows, cols = build_matcher(get_preset("tiny"))(outputs, targets)[0]
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 1, 2: 0}


def test_non_finite_boxes_raise_a_clear_error() -> None:
    outputs, targets = _random_problem(0, [2])
    targets[0]["boxes"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        HungarianMatcher()(outputs, targets)
