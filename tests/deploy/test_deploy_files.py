"""What docs/deploy.md promises of the Dockerfile, docker-compose.yml and deploy/podman/, read from the files (the
stack itself runs in scripts/test-deploy, which tests/deploy/check_stack.py checks)."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
import yaml

from mixer.cli import build_parser
from mixer.config_schema import SCHEMA, SECRETS
from tests.helpers import ROOT

SECRET_ENV = {f"MIXER_{s}_{k}".upper() for s, fields in SCHEMA.items() for k, f in fields.items() if f.attr in SECRETS}


def services() -> dict[str, dict[str, Any]]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    found: dict[str, dict[str, Any]] = loaded["services"]
    return found


def mixer_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if s.get("command", [""])[0] == "mixer"}


def test_compose_images_come_from_variables_with_the_public_defaults() -> None:
    assert services()["redis"]["image"] == "${REDIS_IMAGE:-redis:7-alpine}"
    for name, service in mixer_services().items():
        assert service["image"] == "${MIXER_IMAGE:-chatmixer:latest}", name
        assert service["build"]["context"] == "." and "PYTHON_IMAGE" in service["build"]["args"], name


def test_every_secret_reaches_every_role_from_the_environment_only() -> None:
    for name, service in mixer_services().items():
        env = service["environment"]
        assert {v for v in env if v in SECRET_ENV} == SECRET_ENV, name  # the moderation token too
        for variable in SECRET_ENV:
            assert env[variable] == f"${{{variable}:-}}", (name, variable)  # never a value in the file


def test_redis_keeps_its_data_in_an_append_only_file_on_a_named_volume() -> None:
    redis = services()["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes" and command[command.index("--dir") + 1] == "/data"
    [volume] = redis["volumes"]
    assert volume == "redis-data:/data"
    assert "redis-data" in yaml.safe_load((ROOT / "docker-compose.yml").read_text())["volumes"]


def test_every_service_has_a_healthcheck_and_each_mixer_probe_parses() -> None:
    for name, service in services().items():
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD", name
        if test[1] == "mixer":
            build_parser().parse_args(test[2:])  # SystemExit (a failure) on anything the CLI does not accept
    assert services()["ingest"]["healthcheck"]["test"][1:] == ["mixer", "ingest", "--check"]
    assert services()["merge"]["healthcheck"]["test"][1:] == ["mixer", "merge", "--check"]


def test_two_fan_out_replicas_publish_distinct_ports_and_two_merges_run() -> None:
    published = [s["ports"][0].split(":")[0] for s in mixer_services().values() if s["command"][1] == "serve"]
    assert len(published) == 2 and len(set(published)) == 2
    assert services()["merge"]["scale"] == 2


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_the_image_takes_its_base_as_an_argument_and_runs_as_a_numeric_non_root_user(dockerfile: str) -> None:
    assert dockerfile.count("ARG PYTHON_IMAGE=python:3.11-slim") == 1
    assert re.findall(r"^FROM \$\{PYTHON_IMAGE\}", dockerfile, re.M) == ["FROM ${PYTHON_IMAGE}"] * 2
    [user] = re.findall(r"^USER (\S+)", dockerfile, re.M)
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0  # numeric, so Kubernetes' runAsNonRoot can check it
    assert re.search(r"^HEALTHCHECK .*\n?.*CMD .*/readyz", dockerfile, re.M)


def test_a_ca_bundle_only_ever_comes_in_as_a_build_secret(dockerfile: str) -> None:
    assert "--mount=type=secret,id=ca" in dockerfile and "PIP_CERT=/run/secrets/ca" in dockerfile
    copied = re.findall(r"^(?:COPY|ADD) .*", dockerfile, re.M)
    assert not [line for line in copied if re.search(r"\.(crt|pem)|cert|ca-", line)]
    assert "ENV PIP_CERT" not in dockerfile  # the bundle's path is exported inside the one RUN, not into the image


def test_podman_settings_live_in_the_repo() -> None:
    conf = tomllib.loads((ROOT / "deploy/podman/containers.conf").read_text())
    assert conf["engine"]["runtime"] == "runc" and conf["engine"]["cgroup_manager"] == "cgroupfs"
    assert conf["containers"]["default_ulimits"] == ["nofile=20000:20000", "nproc=4096:4096"]
    storage = tomllib.loads((ROOT / "deploy/podman/storage.conf").read_text())
    assert storage["storage"]["driver"] == "overlay"
    env = (ROOT / "deploy/podman/env.sh").read_text()
    assert 'CONTAINERS_CONF="$DEPLOY_PODMAN_DIR/containers.conf"' in env
    assert ". deploy/podman/env.sh" in (ROOT / "scripts/test-deploy").read_text()


def test_the_install_layer_is_rebuilt_whenever_a_wheel_changes(dockerfile: str) -> None:
    # the layer cache does not look into a stage mounted with --mount=type=bind,from=...: without the checksums copied
    # in first, a code change would build a new wheel and keep the old install layer (seen with podman 4.3)
    final = dockerfile.split("\nFROM ")[-1]
    copy = final.index("COPY --from=wheel /wheels.sha256")
    assert copy < final.index("--mount=type=bind,from=wheel,source=/dist")
    assert "sha256sum /dist/*.whl > /wheels.sha256" in dockerfile.split("\nFROM ")[1]
