"""Where an engine stage runs: this machine, a container, or a host over SSH.

One mechanism for every toolchain whose engine must be built where its GPU is (TensorRT-LLM's
``trtllm-build`` on a workstation, Edge-LLM's ``llm_build`` on a Jetson):

``--builder local|container|ssh:HOST``
    :func:`~edgepack.builders.choice.plan_builder` turns the option (or its absence) into the
    plan's builder and its problems: without the option, ``local`` where the tool runs here, else
    ``container`` where a Docker/Podman engine has the toolchain's image, else a plan problem
    naming all three ways to get one. An ssh host is not contacted at plan time;
    :func:`~edgepack.builders.choice.require_tool` probes the tool where it will run (missing,
    wrong version: one line) before any stage works.

A job (:class:`~edgepack.builders.job.BuildJob`)
    names the tool (:class:`~edgepack.builders.job.ToolSpec`: program, image, version probe and
    check), its argument vector with :class:`~edgepack.builders.job.InputPath` /
    :class:`~edgepack.builders.job.OutputPath` placeholders, the local input directories, and
    whether the outputs come back (``fetch_outputs``).

``open_builder(text, logs_dir, image).run(job, output_dir, log)`` → :class:`BuildOutcome`
    ``local`` runs the tool here on the directories themselves; ``container`` runs it in the
    image through the engine's API (Docker SDK; podman through its Docker-compatible socket),
    inputs mounted read-only and the GPUs passed through; ``ssh:HOST[:ROOT]`` ships each input
    with the deploy machinery (verified by sha256 on the host, resumable, never sent twice) into
    ``ROOT/builds/releases/<content id>``, runs the tool in ``ROOT/builds/jobs/<job>`` through
    ``connector.shell``, lists the outputs with sha256 and size computed there, and fetches and
    verifies them (or leaves them there, recorded). The tool's whole log is kept in a file here;
    a failure is one line (the job's ``explain_failure`` of that log) naming the file.
"""

from edgepack.builders.choice import (
    BuilderChoice,
    open_builder,
    parse_builder,
    plan_builder,
    require_tool,
)
from edgepack.builders.job import (
    BuildJob,
    BuildOutcome,
    EngineBuilder,
    InputPath,
    OutputFile,
    OutputPath,
    ToolProbe,
    ToolSpec,
)

__all__ = [
    "BuildJob",
    "BuildOutcome",
    "BuilderChoice",
    "EngineBuilder",
    "InputPath",
    "OutputFile",
    "OutputPath",
    "ToolProbe",
    "ToolSpec",
    "open_builder",
    "parse_builder",
    "plan_builder",
    "require_tool",
]
