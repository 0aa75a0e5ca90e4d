"""eigen_attention against scipy's generalized eigensolver, padding, sign and degenerate maps."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

import joindet.priors.attention as attention
from joindet.priors import eigen_attention


def _features(b: int, h: int, w: int, c: int = 32, seed: int = 0) -> torch.Tensor:
    """Background tokens plus a few object-like patches: a clear foreground/background cut."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(b, h, w, c, generator=g) * 0.6 + torch.randn(b, 1, 1, c, generator=g)
    for i in range(b):
        y0, x0 = int(torch.randint(0, h // 2, (1,), generator=g)), int(torch.randint(0, w // 2, (1,), generator=g))
        f[i, y0 : y0 + h // 3 + 1, x0 : x0 + w // 3 + 1] += torch.randn(c, generator=g) * 1.5
    return f


def _scipy_vector(tokens: np.ndarray, tau: float = 0.2, eps: float = 1e-5) -> tuple[np.ndarray, float]:
    """Reference: (v, relative gap between the 2nd and 3rd generalized eigenvalues)."""
    x = tokens.astype(np.float32)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    w = np.where((x @ x.T) > tau, 1.0, eps)
    d = np.diag(w.sum(1))
    vals, vecs = scipy.linalg.eigh(d - w, d, subset_by_index=[0, 2])
    return vecs[:, 1], float(vals[2] - vals[1])


def _abs_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(abs(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("hw", [(6, 7), (12, 14)])  # dense path and Krylov path
def test_matches_scipy_generalized_eigh(hw: tuple[int, int]) -> None:
    f = _features(8, *hw)
    m = eigen_attention(f)
    assert m.shape == (8, *hw) and m.dtype == torch.float32
    checked = 0
    for i in range(8):
        ref, gap = _scipy_vector(f[i].reshape(-1, f.shape[-1]).numpy())
        if gap < 1e-3:  # the second eigenvector is not unique: nothing to compare
            continue
        checked += 1
        assert _abs_cos(ref, m[i].flatten().double().numpy()) >= 0.999
    assert checked >= 3


def test_scale_and_sign_follow_the_contract() -> None:
    f = _features(2, 12, 14, seed=3)
    m = eigen_attention(f).double()
    for i in range(2):
        v = m[i].flatten()
        assert v[v.abs().argmax()] > 0  # the seed side is positive
        x = torch.nn.functional.normalize(f[i].reshape(-1, f.shape[-1]), dim=-1)
        deg = torch.where(x @ x.T > 0.2, 1.0, 1e-5).double().sum(1)
        assert float((v * v * deg).sum()) == pytest.approx(1.0, rel=1e-4)  # v^T D v = 1


def test_padding_is_excluded_and_zero() -> None:
    f = _features(3, 12, 14, seed=5)
    valid = torch.zeros(3, 12, 14, dtype=torch.bool)
    valid[0] = True
    valid[1, :9, :11] = True
    valid[2, :5, :6] = True
    padded = f.clone()
    padded[~valid] = torch.randn(int((~valid).sum()), f.shape[-1]) * 10  # garbage must not matter
    m = eigen_attention(padded, valid)
    assert (m[~valid] == 0).all()
    for i, (h, w) in enumerate([(12, 14), (9, 11), (5, 6)]):
        alone = eigen_attention(f[i : i + 1, :h, :w])[0]
        assert _abs_cos(alone.flatten().double().numpy(), m[i, :h, :w].flatten().double().numpy()) >= 0.999


def test_fallback_when_krylov_does_not_converge(monkeypatch: pytest.MonkeyPatch) -> None:
    f = _features(2, 12, 14, seed=7)
    expected = eigen_attention(f)
    monkeypatch.setattr(attention, "_RESTARTS", 0)  # no Krylov work: every map falls back
    fallback = eigen_attention(f)
    for i in range(2):
        assert _abs_cos(expected[i].flatten().double().numpy(), fallback[i].flatten().double().numpy()) >= 0.999


@pytest.mark.parametrize(
    "case",
    ["constant", "zeros", "one_valid", "no_valid", "all_alike"],
)
def test_degenerate_maps_are_zero(case: str) -> None:
    f = torch.randn(1, 10, 11, 16)
    valid = torch.ones(1, 10, 11, dtype=torch.bool)
    if case == "constant":
        f = torch.ones(1, 10, 11, 16)
    elif case == "zeros":
        f = torch.zeros(1, 10, 11, 16)
    elif case == "one_valid":
        valid[:] = False
        valid[0, 0, 0] = True
    elif case == "no_valid":
        valid[:] = False
    elif case == "all_alike":
        f = torch.randn(16).expand(1, 10, 11, 16) + 0.01 * torch.randn(1, 10, 11, 16)
    m = eigen_attention(f, valid)
    assert torch.isfinite(m).all() and (m == 0).all()


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="features must have shape"):
        eigen_attention(torch.randn(4, 4, 8))
    with pytest.raises(ValueError, match="valid must have shape"):
        eigen_attention(torch.randn(1, 4, 4, 8), torch.ones(1, 4, 5, dtype=torch.bool))
    bad = torch.randn(1, 4, 4, 8)
    bad[0, 1, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        eigen_attention(bad)


def test_krylov_converges_in_float32_without_the_dense_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    dense = attention._dense_second
    monkeypatch.setattr(attention, "_dense_second", lambda *a: calls.append(1) or dense(*a))
    f = _features(4, 24, 30, seed=11)  # 720 tokens: the Krylov path
    m = eigen_attention(f)
    assert not calls  # a float32 rounding floor above _TOL would silently make every map dense
    for i in range(4):
        ref, gap = _scipy_vector(f[i].reshape(-1, f.shape[-1]).numpy())
        if gap >= 1e-3:
            assert _abs_cos(ref, m[i].flatten().double().numpy()) >= 0.999
