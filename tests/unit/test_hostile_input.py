"""Hostile input, generated (hypothesis): manifest paths, prompt files, target profiles and host
strings either load as something safe or are refused with edgepack's own error, never a crash."""

from __future__ import annotations

import json
import math
import posixpath
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edgepack.bundle import FileRecord, Manifest, path_problem
from edgepack.errors import BadInputError, EdgepackError, ProfileError
from edgepack.quality.prompts import PromptSet
from edgepack.remote.hosts import parse_host
from edgepack.resources import data_dir
from edgepack.targets import load_profile

SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SHA = "0" * 64
# Path-like text: the characters that matter to a path, plus anything at all.
PATH_TEXT = st.text(
    alphabet=st.sampled_from(["a", "b", ".", "/", "\\", "\x00", "\n", " ", "~", "é"]), max_size=12
) | st.text(max_size=12)


def _manifest(paths: list[str]) -> Manifest:
    records = [{"path": p, "size": 1, "sha256": SHA} for p in paths]
    return Manifest.model_validate(
        {"edgepack_version": "t", "model": {}, "recipe": {}, "target": {}, "tools": {},
         "plan": {}, "stages": [], "files": records}
    )  # fmt: skip


@SETTINGS
@given(st.lists(PATH_TEXT, min_size=1, max_size=4))
def test_a_manifest_holds_only_paths_that_stay_inside_the_bundle(paths: list[str]) -> None:
    try:
        manifest = _manifest(paths)
    except ValidationError:
        return
    names = [record.path for record in manifest.files]
    assert len(set(names)) == len(names)
    for name in names:
        joined = posixpath.normpath(posixpath.join("/release", name))
        assert joined.startswith("/release/") and joined == f"/release/{name}"
        assert not any(ord(c) < 0x20 for c in name) and "\\" not in name
        assert not any(other.startswith(name + "/") for other in names)


@SETTINGS
@given(PATH_TEXT)
def test_the_model_and_the_validator_agree(path: str) -> None:
    try:
        FileRecord(path=path, size=0, sha256=SHA)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == (path_problem(path) is None)


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=8) | st.integers(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


@SETTINGS
@given(
    st.one_of(
        st.binary(max_size=64),
        JSON.map(lambda value: json.dumps(value).encode()),
        st.fixed_dictionaries(
            {"name": st.text(max_size=5), "prompts": st.lists(JSON, max_size=3)}
        ).map(lambda value: json.dumps(value).encode()),
    )
)
def test_a_prompt_file_loads_or_is_refused_with_a_hint(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "prompts.json"
    path.write_bytes(content)
    try:
        prompts = PromptSet.load(path)
    except BadInputError as error:
        assert str(path) in error.message
        return
    assert prompts.prompts and all(isinstance(p.text, str) for p in prompts.prompts)


PROFILE = data_dir("targets") / "ada-sm89.toml"
NUMBERS = st.sampled_from(["inf", "-inf", "nan", "+nan", "0", "-1", "1e400", "3.5", '"960"', "[]"])


@SETTINGS
@given(
    st.sampled_from(["bandwidth_gbps = 960", "size_gb = 48", "max_w = 300"]),
    NUMBERS | st.floats().map(repr) | st.text(max_size=6),
)
def test_a_profile_number_is_finite_and_positive_or_refused(
    tmp_path: Path, line: str, value: str
) -> None:
    key = line.split(" = ")[0]
    text = PROFILE.read_text(encoding="utf-8").replace(line, f"{key} = {value}")
    path = tmp_path / "ada-sm89.toml"
    path.write_text(text, encoding="utf-8")
    try:
        profile = load_profile(path)
    except ProfileError:
        return
    numbers = [profile.memory.bandwidth_gbps, profile.memory.size_gb, profile.power.max_w]
    assert all(math.isfinite(n) and n > 0 for n in numbers)


@SETTINGS
@given(
    st.text(max_size=30)
    | st.builds(
        lambda user, host, port, root: f"ssh://{user}@{host}:{port}/{root}",
        st.text(max_size=4),
        st.text(max_size=6),
        st.text(max_size=6),
        st.text(max_size=6),
    )
)
def test_a_host_string_parses_or_is_refused(text: str) -> None:
    try:
        spec = parse_host(text)
    except BadInputError:
        return
    assert spec.host and spec.kind in ("local", "ssh")
    assert not any(c.isspace() for c in spec.host) and not spec.host.startswith("-")
    assert spec.port is None or 0 <= spec.port <= 65535
    assert isinstance(spec.label, str)


@pytest.mark.parametrize(
    "text", ["ssh://h:99999/x", "ssh://h:-1", "ssh://:22", "", "u@:root", "ssh://[", "-oProxy=x"]
)
def test_bad_host_strings_are_bad_input(text: str) -> None:
    with pytest.raises(EdgepackError):
        parse_host(text)
