"""The container engine (docker, or podman through its Docker-compatible API), driven through the
Docker SDK: one client (``client``), the images built from the top-level Dockerfile (``image``),
containers that own their whole life (``run``). Nothing here parses an engine's CLI output.

edgepack builds the C++ runtime in the ``cross`` image of the Dockerfile (built on first use, and
again when the Dockerfile changes) in a container with no network, and runs the engine builders'
tools in their release images with the host's GPUs passed through.
"""

from edgepack.container.client import API_HINT, api_client, api_endpoints, engine_kind
from edgepack.container.image import (
    CROSS_IMAGE,
    CROSS_TARGET,
    DOCKERFILE_LABEL,
    IMAGE_HINT,
    api_has_image,
    base_image_hint,
    build_image,
    debian_release,
    default_dockerfile,
    dockerfile_digest,
    ensure_image,
    image_labels,
    stage_base_image,
)
from edgepack.container.run import (
    LABEL,
    OCIContainer,
    containers_with_label,
    remove_container,
    run_in_container,
)

__all__ = [
    "API_HINT",
    "CROSS_IMAGE",
    "CROSS_TARGET",
    "DOCKERFILE_LABEL",
    "IMAGE_HINT",
    "LABEL",
    "OCIContainer",
    "api_client",
    "api_endpoints",
    "api_has_image",
    "base_image_hint",
    "build_image",
    "containers_with_label",
    "debian_release",
    "default_dockerfile",
    "dockerfile_digest",
    "engine_kind",
    "ensure_image",
    "image_labels",
    "remove_container",
    "run_in_container",
    "stage_base_image",
]
