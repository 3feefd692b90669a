"""The scaling benchmark's pure parts: the model configs it makes, their parameter count, the
log-log slope that says which cost grows faster than the bytes, and the section it renders."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks.scaling_model import SHAPES, model_config, parameter_count
from benchmarks.scaling_report import (
    FASTER,
    growth,
    loglog_slope,
    section,
    slope_lines,
    slopes,
    steps,
    table,
)

DEMO = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
    "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
    "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True,
    "rope_theta": 100000.0, "torch_dtype": "bfloat16", "head_dim": 64,
}  # fmt: skip
"""SmolLM2-135M-Instruct's shape (its config.json)."""


def test_each_size_is_the_demo_config_with_its_shape() -> None:
    demo = model_config(DEMO, "135m")
    assert {k: v for k, v in demo.items() if k != "torch_dtype"} == {
        k: v for k, v in DEMO.items() if k != "torch_dtype"
    }
    bigger = model_config(DEMO, "360m")
    assert bigger["hidden_size"] == 960 and bigger["num_key_value_heads"] == 5
    assert bigger["head_dim"] == 64  # 960 / 15 heads, not the demo's head_dim carried over
    assert bigger["rope_theta"] == DEMO["rope_theta"] and bigger["torch_dtype"] == "float32"
    assert model_config(DEMO, "1b")["head_dim"] == 2048 // 32


@pytest.mark.parametrize(
    ("size", "low", "high"), [("135m", 125e6, 145e6), ("360m", 340e6, 380e6), ("1b", 0.9e9, 1.2e9)]
)
def test_the_sizes_have_about_their_names_parameters(size: str, low: float, high: float) -> None:
    assert low < parameter_count(model_config(DEMO, size)) < high


@pytest.mark.parametrize("tied", [True, False])
def test_the_parameter_count_is_what_transformers_allocates(tied: bool) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = {**DEMO, "hidden_size": 48, "intermediate_size": 80, "num_hidden_layers": 2,
            "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 8,
            "vocab_size": 300, "tie_word_embeddings": tied}  # fmt: skip
    model = LlamaForCausalLM(LlamaConfig.from_dict(tiny))
    assert parameter_count(tiny) == sum(p.numel() for p in model.parameters())


def test_the_slope_of_a_power_law_is_its_exponent() -> None:
    xs = [1e8, 3e8, 1e9]
    assert loglog_slope(xs, [2 * x for x in xs]) == pytest.approx(1.0)
    assert loglog_slope(xs, [x**2 for x in xs]) == pytest.approx(2.0)
    assert loglog_slope(xs, [5.0, 5.0, 5.0]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="two or more"):
        loglog_slope([1e8], [1.0])
    with pytest.raises(ValueError, match="different"):
        loglog_slope([1e8, 1e8], [1.0, 2.0])


def test_growth_names_the_side_of_the_bytes() -> None:
    assert growth(1.0) == growth(FASTER - 0.01) == "with the bytes"
    assert growth(FASTER + 0.01) == "faster than the bytes"
    assert growth(1 / FASTER - 0.01) == "slower than the bytes"


def _size(name: str, nbytes: int, engine: float, load: float, tok_s: float) -> dict[str, Any]:
    return {"size": name, "params": nbytes * 1.4, "bundle_bytes": nbytes,
            "build": {"wall_s": 10 + engine, "stages": {"engine": engine}},
            "deploy": {"local directory": nbytes / 1e9},
            "bench": {"load_first_s": load, "decode_tok_s_median": tok_s}}  # fmt: skip


SIZES = [_size("135m", 10**8, 30.0, 0.5, 100.0), _size("1b", 10**9, 900.0, 5.0, 10.0)]
"""The engine stage grows as bytes squared (30 -> 900 s for 10x the bytes); load and a decode
step with the bytes; the whole build has a fixed 10 s."""


def test_slopes_are_per_cost_against_the_bundle_bytes() -> None:
    found = slopes(SIZES)
    assert found["build: engine stage"] == pytest.approx(math.log10(30))  # 1.48
    assert found["bench: first load"] == pytest.approx(1.0)
    assert found["bench: one decode step b1"] == pytest.approx(1.0)
    assert found["deploy: local directory"] == pytest.approx(1.0)
    assert found["build: end to end"] == pytest.approx(math.log10(910 / 40))
    assert found["build: outside its stages"] == pytest.approx(0.0)  # 10 s at both sizes


def test_the_table_gives_seconds_per_gb(tmp_path: Path) -> None:
    lines = table(SIZES)
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    big = [cell.strip() for cell in lines[3].strip("|").split("|")]
    assert big[header.index("bundle bytes")] == "1,000,000,000"
    assert big[header.index("build: engine stage s (s/GB)")] == "900 (900)"
    small = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert small[header.index("build: engine stage s (s/GB)")] == "30.0 (300)"
    assert small[header.index("decode tok/s b1 (median)")] == "100"


def test_the_section_names_what_grows_faster_and_draws_the_plot(tmp_path: Path) -> None:
    failed = {"size": "2b", "params": 2e9, "error": "out of memory"}
    result = {"data": {"note": "n=1.", "sizes": [*SIZES, failed]}}
    lines = section(result, tmp_path)
    summary = next(line for line in lines if line.startswith("Faster than the bytes"))
    assert "build: engine stage" in summary and "first load" not in summary
    assert "![seconds against bundle bytes](benchmarks/scaling.png)" in lines
    assert (tmp_path / "benchmarks" / "scaling.png").read_bytes().startswith(b"\x89PNG")
    assert "- 2b: failed: out of memory" in lines


def test_every_shape_is_a_valid_llama_config() -> None:
    from transformers import LlamaConfig

    for size in SHAPES:
        config = model_config(DEMO, size)
        assert LlamaConfig.from_dict(config).head_dim == config["head_dim"]
        assert config["hidden_size"] == config["num_attention_heads"] * config["head_dim"]
        assert config["num_attention_heads"] % config["num_key_value_heads"] == 0


def test_a_steep_step_is_named_where_the_fit_over_all_sizes_hides_it() -> None:
    # 135m -> 1b -> 2b: the engine stage grows with the bytes, then as their square.
    sizes = [_size("135m", 10**8, 30.0, 0.5, 100.0), _size("1b", 10**9, 300.0, 5.0, 10.0),
             _size("2b", 2 * 10**9, 1200.0, 10.0, 5.0)]  # fmt: skip
    (where, slope), (later, steeper) = steps(sizes)["build: engine stage"]
    assert (where, later) == ("135m→1b", "1b→2b")
    assert slope == pytest.approx(1.0) and steeper == pytest.approx(2.0)
    summary = slope_lines(sizes)[0]
    assert summary == (
        "Faster than the bytes: build: engine stage (1b→2b: slope 2.00); "
        "build: end to end (1b→2b: slope 1.96)."
    )  # its fixed 10 s: just under 2
