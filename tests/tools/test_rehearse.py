"""`mixer rehearse`: a short recording replayed pass after pass into real Redis, through a real merge stage, to the
real app's /ws and /events clients in worker processes, judged; and its usage errors, on loopback only."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from mixer.cli import main
from mixer.keys import Keys
from mixer.settings import Settings
from mixer.tools.loadtest.rehearse import (
    Thresholds,
    add_rehearse_parser,
    judge,
    not_judged,
    rehearse_command,
    ws_url_of,
)
from tests.helpers import make_post
from tests.servers import running_deployment, settings_for


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mixer")
    add_rehearse_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["rehearse", *argv])


def _recording(path: Path) -> Path:
    """Six posts in two chats over one recorded second: at x10, a pass takes 0.1 s (and at least 1 s, looping)."""
    chats = ("smbiz", "edchat")
    posts = [
        make_post(
            f"x:{n}",
            (chats[n % 2],),
            1_700_000_000_000 + 200 * n,
            f"rehearsal post {n} of the night, long enough to fold",
        )
        for n in range(6)
    ]
    path.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in posts))
    return path


async def test_a_rehearsal_that_keeps_up_passes_with_every_pass_delivered_to_ws_and_sse_clients(
    redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    settings = settings_for(keys.prefix, redis_url=redis_url, window_ms=50)
    out, plot = tmp_path / "rehearsal.json", tmp_path / "rehearsal.png"
    async with running_deployment(settings, redis_url) as srv:
        args = _args(
            str(_recording(tmp_path / "night.jsonl")),
            *("--url", srv.url, "--speed", "10", "--duration", "2.5", "--ramp", "0.2", "--drain", "5"),
            *("--ws-clients", "4", "--sse-clients", "2", "--processes", "1", "--sample", "2"),
            *("--max-p99-ms", "5000", "--json", str(out), "--plot", str(plot)),
        )
        code = await asyncio.to_thread(rehearse_command, settings, args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(out.read_text())
    no_pid = {"max_bytes_per_conn": "no --server-pid, so the server's memory was not read"}
    assert result["verdict"] == {"pass": True, "failures": [], "not_judged": no_pid}
    rehearsal = result["rehearsal"]
    assert rehearsal["passes"] >= 2 and len(result["pass_starts_s"]) == rehearsal["passes"]
    assert result["pass_starts_s"] == sorted(result["pass_starts_s"])
    assert any("pass_starts" in row for row in result["timeline"])
    assert rehearsal["published"] >= 12  # two passes of six posts, each pass under keys of its own
    assert rehearsal["in_feed"] >= 12 and result["expected"] == rehearsal["in_feed"]
    assert result["loss"]["worst_missing"] == 0 and result["loss"]["sampled_clients"] == 4  # 2 ws + 2 sse
    assert result["by_kind"]["ws"]["connected_peak"] == 4 and result["by_kind"]["sse"]["connected_peak"] == 2
    assert result["by_kind"]["sse"]["deliveries"] >= 2 * rehearsal["in_feed"]  # the SSE clients counted every post
    assert result["closes"] == 0 and result["lag_frames"] == 0
    assert "verdict      PASS" in captured.out and "thresholds   p99 <= 5000 ms" in captured.out
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


async def test_an_impossible_threshold_fails_the_rehearsal_with_exit_1_and_the_reason(
    redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(keys.prefix, redis_url=redis_url, window_ms=50)
    async with running_deployment(settings, redis_url) as srv:
        args = _args(
            str(_recording(tmp_path / "night.jsonl")),
            *("--url", srv.url, "--speed", "10", "--duration", "1", "--ramp", "0", "--drain", "3"),
            *("--ws-clients", "2", "--processes", "1", "--sample", "1", "--max-p99-ms", "0"),
        )
        code = await asyncio.to_thread(rehearse_command, settings, args)
    captured = capsys.readouterr()
    assert code == 1
    assert "verdict      FAIL" in captured.out
    assert "mixer rehearse: FAILED: latency p99 " in captured.err and "> --max-p99-ms 0" in captured.err


async def test_memory_per_connection_not_measured_is_not_judged_and_says_so_without_failing_the_rehearsal(
    redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A server whose RSS does not grow as clients connect (one that reuses memory earlier clients freed reads so):
    # here a process that is no server at all, so it grows by 0 B and the figure is null ("not measured").
    idle = await asyncio.create_subprocess_exec("sleep", "60")
    settings = settings_for(keys.prefix, redis_url=redis_url, window_ms=50)
    out = tmp_path / "rehearsal.json"
    try:
        async with running_deployment(settings, redis_url) as srv:
            args = _args(
                str(_recording(tmp_path / "night.jsonl")),
                *("--url", srv.url, "--speed", "10", "--duration", "1", "--ramp", "0", "--drain", "3"),
                *("--ws-clients", "2", "--processes", "1", "--sample", "2", "--max-p99-ms", "5000"),
                *("--server-pid", str(idle.pid), "--max-bytes-per-conn", "1", "--json", str(out)),
            )
            code = await asyncio.to_thread(rehearse_command, settings, args)
    finally:
        idle.kill()
        await idle.wait()
    captured = capsys.readouterr()
    assert code == 0, captured.err  # 1 B per connection would fail any measured server: this one was not judged
    result = json.loads(out.read_text())
    assert result["server"]["bytes_per_connection"] is None
    why = "memory per connection not measured (RSS grew 0 B per connection: the server reused memory"
    assert result["verdict"]["pass"] and result["verdict"]["failures"] == []
    assert result["verdict"]["not_judged"]["max_bytes_per_conn"].startswith(why)
    assert result["thresholds"]["judged_bytes_per_conn"] is False
    assert "thresholds   p99 <= 5000 ms, loss <= 0%, lag frames <= 0, closes <= 0, 1 bytes/connection (not judged)" in (
        captured.out
    )
    assert "verdict      PASS (not judged, no figure: --max-bytes-per-conn)" in captured.out
    assert f"mixer rehearse: not judged: --max-bytes-per-conn: {why}" in captured.err


def test_only_a_missing_memory_figure_goes_unjudged() -> None:
    measured = {"bytes_per_connection": 2_000, "rss_before": 10_000_000, "rss_connected": 10_020_000, "connected": 10}
    assert not_judged(_result(server=measured)) == {}
    assert not_judged(_result()) == {"max_bytes_per_conn": "no --server-pid, so the server's memory was not read"}
    reused = measured | {"bytes_per_connection": None, "rss_connected": 10_001_000}
    assert not_judged(_result(server=reused)) == {
        "max_bytes_per_conn": "memory per connection not measured (RSS grew 100 B per connection: the server reused "
        "memory its earlier clients freed; measure on a freshly started server)"
    }


async def test_a_rehearsal_run_again_right_after_the_last_still_gets_every_post_as_a_new_card(
    redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(keys.prefix, redis_url=redis_url, window_ms=50)
    night = _recording(tmp_path / "night.jsonl")
    results = []
    async with running_deployment(settings, redis_url) as srv:
        for run in range(2):  # the same recording twice within the merge stage's 10-minute text dedupe
            out = tmp_path / f"run{run}.json"
            args = _args(
                str(night),
                *("--url", srv.url, "--speed", "10", "--duration", "1", "--ramp", "0", "--drain", "3"),
                *("--ws-clients", "2", "--processes", "1", "--sample", "1", "--json", str(out)),
            )
            assert await asyncio.to_thread(rehearse_command, settings, args) == 0, capsys.readouterr().err
            results.append(json.loads(out.read_text())["rehearsal"])
    for rehearsal in results:
        assert rehearsal["published"] >= 6 and rehearsal["in_feed"] == rehearsal["published"]  # none folded


def _result(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "url": "ws://127.0.0.1:8080/ws",
        "clients": 10,
        "connected_peak": 10,
        "failed": 0,
        "published": 100,
        "expected": 90,
        "loss": {"published": 90, "worst_missing": 0},
        "latency_ms": {"p50": 600.0, "p99": 900.0},
        "lag_frames": 0,
        "closes": 0,
        "close_codes": {},
        "server": None,
    }
    return base | changes


def test_each_threshold_fails_on_its_own_line() -> None:
    limits = Thresholds(max_p99_ms=1000, max_loss=1, max_lag_frames=0, max_closes=1, max_bytes_per_conn=50_000)
    assert judge(_result(), limits) == []
    assert judge(_result(latency_ms={"p99": 1500.0}), limits) == ["latency p99 1500 ms > --max-p99-ms 1000"]
    assert judge(_result(lag_frames=3), limits) == ["3 lag frames > --max-lag-frames 0"]
    assert judge(_result(closes=2, close_codes={"4008": 2}), limits) == [
        "2 connections closed by the server (4008: 2) > --max-closes 1"
    ]
    assert judge(_result(server={"bytes_per_connection": 60_000}), limits) == [
        "server memory 60,000 bytes per connection > --max-bytes-per-conn 50,000"
    ]
    assert judge(_result(loss={"published": 90, "worst_missing": 9}), limits) == [
        "a sampled client missed 9 of 90 driven posts (10.00% > --max-loss 1%)"
    ]
    assert judge(_result(published=0, expected=0, loss={"published": 0, "worst_missing": 0}), limits) == [
        "nothing was published: no post of the recording is in a chat the config lists (--config)"
    ]
    dropped = judge(_result(expected=0, loss={"published": 0, "worst_missing": 0}, latency_ms=None), limits)
    assert dropped == [
        "none of the 100 replayed posts reached the feed (the merge stage dropped all)",
        "no post reached a sampled client: no latency to judge",
    ]


def test_the_deployment_url_gives_its_websocket_url() -> None:
    assert ws_url_of("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/ws"
    assert (
        ws_url_of("https://staging.example.org/mixer/?chats=smbiz") == "wss://staging.example.org/mixer/ws?chats=smbiz"
    )
    with pytest.raises(ValueError, match="--url must be the deployment's address"):
        ws_url_of("ws://127.0.0.1:8080/ws")


async def test_a_chats_filter_in_the_url_expects_only_the_cards_of_those_chats(
    redis: aioredis.Redis, keys: Keys, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(keys.prefix, redis_url=redis_url, window_ms=50)
    out = tmp_path / "rehearsal.json"
    async with running_deployment(settings, redis_url) as srv:
        args = _args(
            str(_recording(tmp_path / "night.jsonl")),
            *("--url", srv.url + "/?chats=edchat", "--speed", "10", "--duration", "1.5", "--ramp", "0.2"),
            *("--ws-clients", "2", "--sse-clients", "1", "--processes", "1", "--sample", "2", "--drain", "5"),
            *("--max-p99-ms", "5000", "--json", str(out)),
        )
        code = await asyncio.to_thread(rehearse_command, settings, args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(out.read_text())
    in_feed = result["rehearsal"]["in_feed"]
    assert in_feed >= 6 and result["expected"] == in_feed // 2  # every other post of the recording is in edchat
    assert result["loss"]["worst_missing"] == 0 and result["loss"]["sampled_clients"] == 3


def test_a_chats_filter_no_replayed_post_can_pass_is_refused_before_the_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    settings = settings_for("never:", redis_url="redis://127.0.0.1:1/0")  # Redis never reached
    night = str(_recording(tmp_path / "night.jsonl"))
    assert rehearse_command(settings, _args(night, "--url", "http://127.0.0.1:1/?chats=JournChat")) == 2
    assert capsys.readouterr().err == (
        "mixer rehearse: --url asks for chats=journchat but the driven posts are in edchat, smbiz: no driven post "
        "would reach a client; filter on a driven chat or leave chats= out of --url\n"
    )
    assert rehearse_command(settings, _args("--synth", "--url", "http://127.0.0.1:1/?chats=nochat")) == 2
    assert "the driven posts are in edchat, journchat, smbiz: no driven" in capsys.readouterr().err


def test_usage_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    redis = ("--redis", "redis://127.0.0.1:1/0")  # never reached: every case stops before connecting
    assert main(["rehearse", *redis, "--url", "http://192.0.2.7:8080"]) == 2
    assert "add --allow-remote to load-test another host" in capsys.readouterr().err
    # with the flag the address passes (checked, never connected to): the next problem is the one reported
    assert main(["rehearse", *redis, "--url", "http://192.0.2.7:8080", "--allow-remote", "--speed", "0"]) == 2
    err = capsys.readouterr().err
    assert "--speed must be a positive" in err and "allow-remote" not in err
    assert main(["rehearse", *redis, "--url", "http://127.0.0.1:8080/?format=msgpack"]) == 2
    assert "--url asks for format=msgpack: the load test's clients read JSON frames only" in capsys.readouterr().err
    assert main(["rehearse", *redis, "--max-bytes-per-conn", "1000"]) == 2
    assert "--max-bytes-per-conn needs --server-pid" in capsys.readouterr().err
    assert main(["rehearse", *redis, str(tmp_path / "missing.jsonl")]) == 2
    assert "recording not found" in capsys.readouterr().err
    assert main(["rehearse", *redis, "--max-p99-ms", "-1"]) == 2
    assert "--max-p99-ms must be 0 or more" in capsys.readouterr().err
    assert main(["rehearse", *redis, "--duration", "0"]) == 2  # replaying nothing, then judging it, is no rehearsal
    assert "--duration must be more than 0 seconds of replay, got 0" in capsys.readouterr().err
    assert main(["rehearse", *redis, "--json", str(tmp_path / "nowhere" / "r.json")]) == 2
    assert f"--json {tmp_path / 'nowhere' / 'r.json'}: no such directory" in capsys.readouterr().err
    assert main(["rehearse", *redis, "--max-p99-ms", "-1"]) == 2
    assert "--max-p99-ms must be 0 or more" in capsys.readouterr().err
    assert rehearse_command(Settings(), _args()) == 2
    assert "--redis" in capsys.readouterr().err
    assert main(["rehearse", *redis, "--sample", "0"]) == 2  # no client would parse a post: nothing to judge
    assert "--sample 0 leaves no client that parses what it gets" in capsys.readouterr().err
    assert main(["rehearse", *redis, "--sample", "0", "--sse-clients", "1", "--json", "/nonexistent/r.json"]) == 2
    assert "--sample 0" not in capsys.readouterr().err  # an /events client parses every event: that one measures


def test_the_summary_speaks_of_dedupe_only_when_it_folded_posts() -> None:
    # it said "(the rest folded by dedupe)" when every post made a card, and when none was published at all
    from mixer.tools.loadtest.rehearse import folded

    assert folded(0) == "" and folded(-1) == ""
    assert folded(1_234) == " (1,234 folded by dedupe)"
