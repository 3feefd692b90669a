"""The C++ self-test's manifest checks, compiled for real (g++) from cpp_runtime/: hostile paths,
a symlink and a FIFO fail the files check; an honest bundle passes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edgepack.resources import data_dir
from tests.integration.conftest import HOSTILE_KINDS, make_bundle, make_hostile_bundle, require

pytestmark = pytest.mark.integration

HARNESS = r"""
#include <cstdio>
#include <iostream>
#include "edgepack/selftest.hpp"
int main(int argc, char** argv) {
  if (argc > 2) {  // path rule mode: "ok" or "bad" for each argument
    for (int i = 2; i < argc; ++i) {
      std::cout << (edgepack::path_problem(argv[i]).empty() ? "ok" : "bad") << "\n";
    }
    return 0;
  }
  const edgepack::Check check = edgepack::check_files(edgepack::read_bundle(argv[1]));
  std::cout << check.detail << "\n";
  return check.ok ? 0 : check.failure_code;
}
"""


@pytest.fixture(scope="module")
def checker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(shutil.which("g++") is not None, "g++ is missing (apt-get install g++)")
    source = data_dir("cpp_runtime")
    work = tmp_path_factory.mktemp("selftest")
    (work / "harness.cpp").write_text(HARNESS)
    # Every shared source but the command line's (a generated runtime has its own main).
    sources = [str(p) for p in sorted((source / "src").glob("*.cpp")) if p.stem != "args"]
    binary = work / "check"
    built = subprocess.run(
        ["g++", "-std=c++17", "-O0", "-I", str(source / "include"), str(work / "harness.cpp"),
         *sources, "-o", str(binary)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, f"the self-test sources do not build: {built.stderr[-2000:]}"
    return binary


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_the_self_test_refuses_a_hostile_bundle(checker: Path, tmp_path: Path, kind: str) -> None:
    victim = tmp_path / "x"
    victim.write_bytes(b"outside")
    bundle = make_hostile_bundle(tmp_path / "deep" / "er" / "bundle", kind, victim)
    done = subprocess.run([str(checker), str(bundle)], capture_output=True, text=True)
    assert done.returncode == 3, done.stdout
    reason = {"symlink": "a symlink", "fifo": "not a regular file"}.get(kind, "unsafe path")
    assert reason in done.stdout


def test_an_honest_bundle_passes_and_the_rule_matches_pythons(
    checker: Path, tmp_path: Path
) -> None:
    from edgepack.bundle import path_problem

    bundle = make_bundle(tmp_path / "bundle", {"model.onnx": b"m", "sub/dir/w.bin": b"w"})
    done = subprocess.run([str(checker), str(bundle)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
    paths = ["a", "a/b", "/etc/x", "a/../b", "..", "./a", "a//b", "a/", "a\\b", "a\nb", "é/x y"]
    rule = subprocess.run([str(checker), "-", *paths], capture_output=True, text=True)
    assert rule.stdout.split() == ["ok" if path_problem(p) is None else "bad" for p in paths]
