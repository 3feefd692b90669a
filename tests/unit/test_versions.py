"""The fast version lookup agrees with importlib.metadata on every installed distribution."""

from __future__ import annotations

import importlib.metadata

from edgepack.versions import distribution_version


def test_every_installed_distribution_has_the_version_importlib_reports() -> None:
    names = {dist.metadata["Name"] for dist in importlib.metadata.distributions()}
    assert len(names) > 10
    for name in sorted(names):
        assert distribution_version(name) == importlib.metadata.version(name), name
        assert distribution_version(name.upper().replace("-", "_")) == importlib.metadata.version(
            name
        ), name


def test_a_missing_distribution_is_none() -> None:
    assert distribution_version("edgepack-no-such-distribution") is None
