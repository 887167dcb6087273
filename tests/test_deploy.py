"""docker-compose.yml, k8s/ and the Dockerfile: every `mixer` command they run is one the CLI accepts, and the image
installs the built wheel."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from mixer.cli import build_parser
from tests.helpers import ROOT


def _commands() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        if isinstance(service.get("command"), list) and service["command"][0] == "mixer":
            found.append((f"compose:{name}", service["command"]))
    for path in sorted((ROOT / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            spec: Any = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
            for container in spec.get("containers", []):
                if container.get("args", [""])[0] == "mixer":
                    found.append((f"{path.name}:{container['name']}", container["args"]))
    return found


def test_deployments_run_every_part_of_the_product() -> None:
    roles = {args[1] for _, args in _commands()}
    assert {"ingest", "merge", "serve"} <= roles


@pytest.mark.parametrize(("where", "args"), _commands())
def test_every_deployed_mixer_command_parses(where: str, args: list[str]) -> None:
    build_parser().parse_args(args[1:])  # SystemExit (a failure) on anything the CLI does not accept


def test_the_image_installs_the_built_wheel_not_the_checkout() -> None:
    stages = (ROOT / "Dockerfile").read_text().split("\nFROM ")
    build, final = stages[1], stages[-1]
    assert "pip wheel" in build and "COPY web" in build  # the wheel is built from the sources, assets included
    assert "COPY --from=wheel /dist" in final and "pip install --no-cache-dir /dist/*.whl" in final
    assert "COPY mixer" not in final and "-e ." not in "".join(stages)  # never the checkout, never editable
