"""``edgepack bench``: measure a bundle, keep every raw sample, print the spread."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgepack.cli.options import (
    CacheDirOption,
    GateConfigOption,
    JsonOption,
    ReferenceModelHelp,
)
from edgepack.cli.output import console, human_bytes, print_json

if TYPE_CHECKING:
    from rich.progress import TaskID

    from edgepack.bench.gating import GateSubject
    from edgepack.bench.result import RunResult
    from edgepack.bench.stats import Spread
    from edgepack.bundle import Manifest


def bench(
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="Bundle directory \\[default: the newest build]."),
    ] = None,
    runs: Annotated[int, typer.Option("--runs", help="Measured repetitions.")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", help="Unmeasured generations first.")] = 1,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Batch for the batched decode figure.")
    ] = 3,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Tokens per answer.")
    ] = 128,
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help="Prompt set JSON \\[default: the bundle's].")
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json-out", help="Where to write the run result \\[default: runs/…json]."),
    ] = None,
    cache_dir: CacheDirOption = None,
    json_output: JsonOption = False,
    remote: Annotated[
        bool, typer.Option("--remote", help="Run on the device (the newest deploy's host).")
    ] = False,
    host: Annotated[
        str | None, typer.Option("--host", help="Device to run on (implies --remote).")
    ] = None,
    root: Annotated[str | None, typer.Option("--root", help="Deploy root on the device.")] = None,
    remote_python: Annotated[
        str | None, typer.Option("--remote-python", help="Python on the device to run with.")
    ] = None,
    runner: Annotated[
        str | None,
        typer.Option(
            "--runner",
            help="What runs on the device with --remote: python (edgepack's ORT runner; needs "
            "a Python with onnxruntime-genai and edgepack there: <root>/venv from a bundle built "
            "with --device-python, or --remote-python) or runtime (the bundle's C++ runtime; needs "
            "no Python, only a bundle built with a runtime for the device's arch) \\[default: "
            "the first of these that can run there, printed and recorded in the result].",
        ),
    ] = None,
    no_gate: Annotated[
        bool,
        typer.Option("--no-gate", help="Skip the quality gate (the result records that it did)."),
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="bundle (an edgepack bundle), or a baseline in the same format: llamacpp "
            "(--gguf FILE) or ollama (--ollama-model NAME).",
        ),
    ] = "bundle",
    gguf: Annotated[Path | None, typer.Option("--gguf", help="GGUF file for llamacpp.")] = None,
    ollama_model: Annotated[
        str | None, typer.Option("--ollama-model", help="Model tag served by Ollama.")
    ] = None,
    ollama_url: Annotated[
        str, typer.Option("--ollama-url", help="Ollama server URL.")
    ] = "http://127.0.0.1:11434",
    reference_model: Annotated[
        str | None,
        typer.Option(
            "--reference-model",
            help="For baselines: the source model whose answers the gate compares with "
            f"{ReferenceModelHelp}.",
        ),
    ] = None,
    gate_config: GateConfigOption = None,
) -> None:
    """Benchmark a bundle on this machine: load, TTFT, prefill/decode tok/s, memory, texts.

    With --remote (or --host) the deployed release runs on the device, with telemetry sampled
    there (/proc; nvidia-smi or tegrastats where present), and the result comes back. There,
    --runner picks edgepack's Python runner or the bundle's C++ runtime; without it, the Python
    runner runs where the device's Python has onnxruntime-genai and edgepack, else the C++ runtime
    where it is built for the device's arch (the choice is printed and recorded in the result).

    Every figure is the median of --runs runs with min, max and coefficient of variation; the raw
    samples and the generated texts are kept in the result JSON.

    Every run is judged by the quality gate against the source model's reference answers
    (computed once per model with transformers); a failed gate exits with status 9.
    """
    from edgepack.backends import engine_loader_for
    from edgepack.bench.gating import apply_gate, enforce
    from edgepack.bench.local import BenchOptions, bench_bundle
    from edgepack.bundle import latest_bundle, read_manifest
    from edgepack.cache import default_cache_root
    from edgepack.errors import BadInputError
    from edgepack.quality.thresholds import GateConfig

    _check_runner(runner, remote or host is not None, remote_python)
    if json_out is not None and json_out.is_dir():
        raise BadInputError(
            f"--json-out {json_out} is a directory, not a file",
            hint=f"give a file name, e.g. {json_out}/run.json",
        )
    options = BenchOptions(runs, warmup, batch_size, max_new_tokens, prompts)
    cache_root = cache_dir or default_cache_root()
    config = GateConfig.load(gate_config)
    with _progress(disabled=json_output) as report:
        if engine != "bundle":
            from edgepack.bench.baselines import BaselineRequest, bench_baseline

            if reference_model is None:
                raise BadInputError(
                    f"--engine {engine} needs --reference-model (the gate judges against it)",
                    hint="e.g. --reference-model demo:smollm2-135m",
                )
            request = BaselineRequest(engine, reference_model, gguf, ollama_model, ollama_url)
            result, subject = bench_baseline(request, options, cache_root, report)
            judged_as: GateSubject | Manifest = subject
            prompts_file = Path(result.settings.prompts_file)
        elif remote or host:
            from edgepack.remote.bench import bench_remote_command

            measured = bench_remote_command(
                host, root, remote_python, options, cache_root, runner, _say
            )
            result, judged_as, prompts_file = measured
        else:
            bundle_dir = bundle or latest_bundle(cache_root)
            result = bench_bundle(bundle_dir, options, engine_loader_for, report)
            judged_as = read_manifest(bundle_dir)
            prompts_file = Path(result.settings.prompts_file)
        if no_gate:
            result.gate_enforced = False
        else:
            result = apply_gate(result, judged_as, prompts_file, cache_root, config, report)
    destination = json_out or Path("runs") / (
        f"{result.bundle.get('model')}-{result.bundle.get('precision')}-{result.run_id}.json"
    )
    result.save(destination)
    if json_output:
        print_json(result.model_dump(mode="json"))
    else:
        print_result(result)
        console.print(f"result written to [bold]{destination}[/]")
    enforce(result)


def _say(line: str) -> None:
    """One line on stderr (stdout holds only JSON with --json)."""
    from edgepack.cli.output import err_console

    err_console.print(line, highlight=False, markup=False, soft_wrap=True)


def _check_runner(runner: str | None, remote: bool, remote_python: str | None) -> None:
    from edgepack.errors import BadInputError, did_you_mean
    from edgepack.remote.bench import RUNNERS

    if runner is not None and runner not in RUNNERS:
        raise BadInputError(
            f"unknown --runner {runner!r}{did_you_mean(runner, RUNNERS)}",
            hint="choose one of " + ", ".join(RUNNERS),
        )
    if runner == "runtime" and not remote:
        raise BadInputError(
            "--runner runtime benches a deployed bundle on its device",
            hint="add --remote or --host HOST (here, `runtime/bin/edgepack-runtime` of the "
            "bundle runs by hand)",
        )
    if runner == "runtime" and remote_python:
        raise BadInputError(
            "--remote-python is for --runner python; the C++ runtime needs no Python"
        )


class _progress:  # noqa: N801 - used as a context manager like a function
    def __init__(self, disabled: bool) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
            disable=disabled,
            # Third-party progress bars write to stderr; with --json, stdout must hold only JSON.
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> _progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def __call__(self, phase: str, done: int, total: int) -> None:
        phase_key = phase.split()[0]
        if phase_key not in self.tasks:
            self.tasks[phase_key] = self.progress.add_task(phase, total=total)
        self.progress.update(
            self.tasks[phase_key],
            description=phase,
            completed=done,
            total=total,
        )


def print_result(result: RunResult) -> None:
    from rich.table import Table

    metrics = result.metrics
    table = Table(
        title=f"{result.bundle.get('model')} {result.bundle.get('precision')} on "
        f"{result.machine.get('cpu_model')} ({result.settings.runs} runs)",
        header_style="bold",
    )
    for column in ("metric", "median", "min", "max", "CV"):
        table.add_column(column, justify="right" if column != "metric" else "left")
    rows: list[tuple[str, Spread | None, str]] = [
        ("warm load (s)", result.load.warm, "{:.3f}"),
        ("TTFT (s)", metrics.ttft_s, "{:.4f}"),
        ("prefill tok/s", metrics.prefill_tok_s, "{:.1f}"),
        ("decode tok/s, batch 1", metrics.decode_tok_s, "{:.1f}"),
        (
            f"decode tok/s, batch {result.settings.batch_size}",
            metrics.decode_tok_s_batched,
            "{:.1f}",
        ),
        ("end-to-end per prompt (s)", metrics.e2e_s, "{:.2f}"),
    ]
    for label, spread, fmt in rows:
        if spread is not None:
            table.add_row(
                label,
                fmt.format(spread.median),
                fmt.format(spread.min),
                fmt.format(spread.max),
                f"{spread.cv:.1%}",
            )
    console.print(table)
    console.print(
        f"first load {result.load.first_s:.3f} s (page cache {result.load.first_page_cache}), "
        f"peak RSS {human_bytes(metrics.peak_rss_bytes)}"
    )
    print_verdict(result)
    for output in result.outputs:
        text = " ".join(output.text.split())
        shown = text[:110] + ("…" if len(text) > 110 else "")
        console.print(f"{output.id}: {shown}", highlight=False, markup=False)


def print_verdict(result: RunResult, every_check: bool = False) -> None:
    """The verdict in a line or two, what the reference is, and (``every_check``) each check."""
    if not result.gate_enforced:
        console.print("[yellow]quality gate skipped (--no-gate): this is not a result[/]")
        return
    verdict = result.quality
    if verdict is None:
        return
    colour = "green" if verdict.passed else "bold red"
    console.print(f"[{colour}]quality {verdict.summary()}[/]", highlight=False)
    metrics = verdict.metrics
    if verdict.reference_usable:
        console.print(
            f"  chrF {metrics['chrf']:.1f}, exact match {metrics['exact_match_rate']:.0%}, "
            f"prefix {metrics['prefix_fraction']:.0%}"
            + (
                f", perplexity ratio {metrics['perplexity_ratio']:.3f}"
                if "perplexity_ratio" in metrics
                else ""
            ),
            highlight=False,
        )
    provenance = verdict.reference.get("provenance") or "not recorded"
    console.print(f"  reference: {provenance}", highlight=False, markup=False)
    if every_check:
        for check in verdict.checks:
            console.print(f"  {check.describe()}", highlight=False, markup=False)
