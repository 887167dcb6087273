"""The wheel as a user gets it: built from the checkout, installed into a fresh virtualenv (not editable), and
`mixer run` started from there, away from the checkout, serving every page and the live feed."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import ROOT
from tests.processes import free_port, read_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# What a build may print that is not about our configuration (distutils says so whenever pip builds).
_BENIGN = re.compile(r"warning: (build_py|install_lib): byte-compiling is disabled")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    build_log: str
    venv: Path

    @property
    def mixer(self) -> Path:
        return self.venv / "bin" / "mixer"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """The wheel built by pip (verbose, so the build backend's warnings show) from a copy of what the Dockerfile
    copies (a build in the checkout would reuse its build/ folder, and stale files there would hide missing
    ones), and installed with its dependencies into a new virtualenv. That virtualenv has no pip of its own (this
    pip installs into it with ``--python``: ensurepip took ~4 s) and pip does not byte-compile what it installs
    (``--no-compile``: compiling numpy, matplotlib and fontTools was ~2/3 of a 21 s install); Python compiles what
    it imports, so nothing the tests run differs."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    for name in ("mixer", "web"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(work / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (work / "dist").glob("chatmixer-*.whl")
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=False)
    into = ("--python", str(env_dir / "bin" / "python"))
    pip = subprocess.run(
        [sys.executable, "-m", "pip", *into, "install", "-q", "--no-compile", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    yield Installed(wheel, built.stdout + built.stderr, env_dir)


def test_building_the_wheel_prints_no_setuptools_warning(installed: Installed) -> None:
    noise = [
        line
        for line in installed.build_log.splitlines()
        if re.search(r"(?i)warning|deprecat|!!", line) and not _BENIGN.search(line)
    ]
    assert noise == []


def test_the_wheel_holds_every_module_and_every_asset(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    package = {p.relative_to(ROOT).as_posix() for p in (ROOT / "mixer").rglob("*") if p.is_file()}
    package = {name for name in package if "__pycache__" not in name}
    assets = {"mixer/web/" + p.name for p in (ROOT / "web").iterdir() if p.is_file()}
    assert package - names == set()
    assert assets - names == set()
    assert "mixer/web/index.html" in names and "mixer/data/pstweetchat.jsonl" in names


def test_the_installed_package_is_the_wheels_not_the_checkout(installed: Installed, tmp_path: Path) -> None:
    where = subprocess.run(
        [
            str(installed.venv / "bin" / "python"),
            "-c",
            "import mixer, mixer.web; print(mixer.__file__, mixer.web.__file__)",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_clean_env(),
        timeout=60,
        check=True,
    ).stdout.split()
    assert all(Path(path).is_relative_to(installed.venv) for path in where), where


async def test_mixer_run_from_the_wheel_serves_every_page_and_live_posts(installed: Installed, tmp_path: Path) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        str(installed.mixer),
        "run",
        "--port",
        str(port),
        cwd=tmp_path,  # away from the checkout: nothing may be found relative to it
        env=_clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await read_until(proc, "live at", timeout=60)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            for path in (
                "/",
                "/embed.js",
                "/mod",
                "/embed/builder",
                "/static/wall.js",
                "/static/mod.css",
                "/api/chats",
            ):
                async with http.get(base + path) as resp:
                    assert resp.status == 200, path
                    assert len(await resp.read()) > 100, path
            async with http.get(base + "/static/__init__.py") as resp:
                assert resp.status == 404  # web/ is a package for the installer, not a file to serve
            async with http.ws_connect(base + "/ws") as ws:
                assert (await ws.receive_json(timeout=10))["type"] == "hello"
                while (frame := await ws.receive_json(timeout=30))["type"] != "posts":
                    pass
                assert frame["items"][0]["chats"]
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, output.decode(errors="replace")


def _clean_env() -> dict[str, str]:
    """The environment without our settings or the checkout on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIXER_", "PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env
