"""chatmixer on a Sentinel-managed Redis (a primary, a replica, 3 sentinels on loopback, started once for this
module): a ``redis+sentinel://`` client finds the master and its database, and the whole split deployment
survives ``kill -9`` of the primary while the sentinels promote the replica."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mixer import connect
from mixer.keys import Keys
from tests.redis_topologies import SentinelGroup, through_failover


@pytest.fixture(scope="module")
def sentinels() -> Iterator[SentinelGroup]:
    topology = SentinelGroup()
    try:
        yield topology.start()
    finally:
        topology.close()


async def test_a_sentinel_url_reaches_the_master_and_its_database(sentinels: SentinelGroup, keys: Keys) -> None:
    client = connect.client(f"{sentinels.url}/3", keys.feed, socket_timeout=5)
    try:
        await client.xadd(keys.feed, {"p": b"x"})
        info = await client.info("replication")
        assert info["role"] == "master"
        assert int((await client.client_info())["db"]) == 3
        assert client.connection_pool.connection_kwargs["locator"].address == ("127.0.0.1", sentinels.master())
        await client.delete(keys.feed)
    finally:
        await client.aclose()


async def test_a_sentinel_url_naming_an_unknown_master_is_a_connection_error(sentinels: SentinelGroup) -> None:
    url = sentinels.url.rsplit("/", 1)[0] + "/nosuchmaster"
    client = connect.client(url, socket_timeout=5)
    try:
        with pytest.raises(Exception, match="no master named 'nosuchmaster'"):
            await client.ping()
    finally:
        await client.aclose()


async def test_the_split_deployment_survives_killing_the_primary(sentinels: SentinelGroup, tmp_path: Path) -> None:
    outcome = await through_failover(tmp_path, sentinels.url, "sentinel-failover", sentinels.kill_master)
    print(outcome.line("redis sentinel"))
    assert outcome.deaths == []
    assert outcome.gaps == [0, 0], "a screen missed posts without being told reset"
    assert outcome.lost == [] and outcome.twice == []
