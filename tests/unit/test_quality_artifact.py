"""The artifact-check API every backend's stages judge their networks and checkpoints with."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgepack.errors import BadInputError, QualityGateError
from edgepack.quality.artifact import (
    ARTIFACT_LIMITS,
    artifact_class,
    judge_artifact,
    logit_figures,
    require_artifact,
    tensor_figure,
)

STEPS = ["prefill", *(f"decode {i}" for i in range(1, 9))]


def _logits(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 3, (len(STEPS), 1000))


def test_identical_logits_pass_every_class() -> None:
    ref = _logits()
    for klass in ARTIFACT_LIMITS:
        verdict = judge_artifact("net", klass, logit_figures(ref, ref.copy(), STEPS))
        assert verdict.passed, verdict.summary()
        names = {c.name for c in verdict.checks}
        assert names >= {"artifact_top1_agreement", "artifact_kl_divergence", "artifact_finite"}
        # max |Δlogit| is judged where rounding noise bounds it (full, half), recorded elsewhere.
        judged = ARTIFACT_LIMITS[klass].max_abs_logit_diff_max is not None
        assert ("artifact_max_abs_logit_diff" in names) == judged


def test_kl_divergence_matches_its_definition() -> None:
    ref, got = _logits(1), _logits(2)
    [first, *_] = logit_figures(ref, got, STEPS)
    p = np.exp(ref[0]) / np.exp(ref[0]).sum()
    q = np.exp(got[0]) / np.exp(got[0]).sum()
    assert first.kl_divergence == pytest.approx(float((p * np.log(p / q)).sum()))
    assert first.max_abs_logit_diff == pytest.approx(float(np.abs(ref[0] - got[0]).max()))


def test_one_broken_step_fails_and_is_named() -> None:
    ref = _logits()
    got = ref + np.random.default_rng(3).normal(0, 0.05, ref.shape)
    assert judge_artifact("the int4 network", "int4", logit_figures(ref, got, STEPS)).passed
    got[4:] = got[4:] * 100  # from decode 4 on, as one layer's scale ×100 in the cache does
    verdict = judge_artifact("the int4 network", "int4", logit_figures(ref, got, STEPS))
    assert not verdict.passed
    failed = {c.name: c for c in verdict.checks if not c.passed}
    assert "artifact_kl_divergence" in failed
    assert "worst at decode " in failed["artifact_kl_divergence"].detail
    assert "the int4 network fails its 4bit artifact check" in verdict.summary()
    half = judge_artifact("the fp16 network", "fp16", logit_figures(ref, got, STEPS))
    [diff] = [c for c in half.checks if c.name == "artifact_max_abs_logit_diff"]
    assert not diff.passed and "largest |Δlogit| at decode " in diff.detail
    with pytest.raises(QualityGateError, match="artifact_kl_divergence") as raised:
        require_artifact(verdict, hint="requantize")
    assert raised.value.exit_code == 9


def test_top1_flips_name_their_steps() -> None:
    ref = _logits()
    got = ref.copy()
    for step in (1, 2, 3):
        got[step, int(ref[step].argmin())] = ref[step].max() + 1
    verdict = judge_artifact("net", "fp8", logit_figures(ref, got, STEPS))
    [top1] = [c for c in verdict.checks if c.name == "artifact_top1_agreement"]
    assert not top1.passed and top1.value == pytest.approx(6 / 9)
    assert "decode 1, decode 2, decode 3" in top1.detail


def test_nan_logits_fail() -> None:
    ref = _logits()
    got = ref.copy()
    got[2, 7] = math.nan
    verdict = judge_artifact("net", "4bit", logit_figures(ref, got, STEPS))
    assert [c.name for c in verdict.checks if not c.passed] == ["artifact_finite"]
    assert "decode 2" in verdict.checks[-1].detail


def test_scaled_tensor_is_named() -> None:
    rng = np.random.default_rng(0)
    weights = {f"layers.{i}.mlp.weight": rng.normal(0, 0.02, (64, 64)) for i in range(4)}
    noisy = {name: w + rng.normal(0, 0.002, w.shape) for name, w in weights.items()}
    figures = [tensor_figure(n, weights[n], noisy[n]) for n in weights]
    assert judge_artifact("ckpt", "int4_awq", tensors=figures).passed
    noisy["layers.2.mlp.weight"] = noisy["layers.2.mlp.weight"] * 100
    figures = [tensor_figure(n, weights[n], noisy[n]) for n in weights]
    verdict = judge_artifact("ckpt", "int4_awq", tensors=figures)
    [check] = verdict.checks
    assert not check.passed and check.value > 90
    assert "layers.2.mlp.weight" in check.detail


def test_round_to_nearest_int4_and_int8_fit_their_limits() -> None:
    """The theory in the docstring, on Gaussian weights: RTN errors sit inside the limits."""
    w = np.random.default_rng(5).normal(0, 1, (256, 4096))
    for bits, klass in ((4, "4bit"), (8, "8bit")):
        levels = 2 ** (bits - 1) - 1
        scale = np.abs(w).max(axis=1, keepdims=True) / levels
        error = tensor_figure("w", w, np.round(w / scale) * scale).relative_error
        assert error < ARTIFACT_LIMITS[klass].tensor_relative_error_max / 1.5


def test_classes_and_stricter_limits() -> None:
    assert artifact_class("int4_awq") == "4bit"
    assert artifact_class("fp16") == "half"
    assert artifact_class("fp8") == "8bit"
    assert artifact_class("full") == "full"
    with pytest.raises(BadInputError):
        artifact_class("int3")
    with pytest.raises(BadInputError):
        judge_artifact("net", "fp16")
    ref = _logits()
    got = ref + 0.02
    figures = logit_figures(ref, got + np.linspace(0, 0.02, 1000), STEPS)
    assert judge_artifact("net", "fp16", figures).passed
    strict = ARTIFACT_LIMITS["half"].model_copy(update={"max_abs_logit_diff_max": 0.01})
    assert not judge_artifact("net", "fp16", figures, limits=strict).passed


def test_limits_tighten_with_precision() -> None:
    order = ["full", "half", "8bit", "4bit"]
    for field in ("kl_divergence_max", "tensor_relative_error_max"):
        values = [getattr(ARTIFACT_LIMITS[k], field) for k in order]
        assert values == sorted(values), field
    top1 = [ARTIFACT_LIMITS[k].top1_agreement_min for k in order]
    assert top1 == sorted(top1, reverse=True)
