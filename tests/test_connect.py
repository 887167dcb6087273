"""``mixer.connect``: which Redis URLs are accepted and what they mean (pure), and that a one-server URL still
gives a plain redis-py client. Cluster and Sentinel against real servers: tests/test_cluster.py,
tests/test_sentinel.py."""

from __future__ import annotations

import pytest

from mixer import connect
from mixer.config_schema import SCHEMA, check_value
from mixer.runtime import redis_url_problem


@pytest.mark.parametrize(
    ("url", "kind", "nodes", "master", "db"),
    [
        ("redis+cluster://a:7000,b:7001", "cluster", (("a", 7000), ("b", 7001)), "", 0),
        ("rediss+cluster://u:p@a,[::1]:7001/", "cluster", (("a", 6379), ("::1", 7001)), "", 0),
        ("redis+sentinel://s1,s2:5000/mymaster", "sentinel", (("s1", 26379), ("s2", 5000)), "mymaster", 0),
        ("rediss+sentinel://:pw@s1:26379/mymaster/4?socket_timeout=3", "sentinel", (("s1", 26379),), "mymaster", 4),
    ],
)
def test_cluster_and_sentinel_urls_name_their_nodes_master_and_database(
    url: str, kind: str, nodes: tuple[tuple[str, int], ...], master: str, db: int
) -> None:
    target = connect.parse(url)
    assert (target.kind, target.nodes, target.master, target.db) == (kind, nodes, master, db)
    assert target.tls == url.startswith("rediss")
    assert redis_url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:6379", "is not a redis://"),
        ("redis+cluster://a:7000/2", "names a database"),
        ("redis+sentinel://s1:26379", "/<master-name>"),
        ("redis+sentinel://s1:26379/m/x", "names database 'x'"),
        ("redis+cluster://a:0", "out of range"),
        ("redis+cluster://a:b:c", "not host:port"),
        ("redis+cluster://a?socket_timeout=soon", "bad option"),
        ("redis://127.0.0.1:6379/abc", "names database 'abc', not a number"),  # redis-py would use database 0
        ("rediss://db.example/0/1", "names database '0/1'"),
        ("redis://:ab/cd@127.0.0.1:6379/0", "percent-encode it"),  # redis-py would read 'ab' as the port
        ("redis://:ab cd@127.0.0.1:6379/0", "percent-encode it"),
        ("redis+cluster://:a#b@h:7000", "percent-encode it"),
    ],
)
def test_a_bad_url_is_refused_with_what_is_wrong(url: str, says: str) -> None:
    problem = redis_url_problem(url)
    assert problem is not None and says in problem


def test_credentials_never_appear_in_the_refusal() -> None:
    for url in ("redis+cluster://user:hunter2@a:7000/5", "redis://:hun/ter2@a/0", "redis://:hun ter2@a/0"):
        problem = redis_url_problem(url)
        assert problem is not None and "hun" not in problem and "ter2" not in problem, problem


@pytest.mark.parametrize(
    "url",
    ["redis://h:6379", "redis://h:6379/", "redis://h/15", "redis://u:p%2Fq@h/1", "redis://h/0?password=p@ss",
     "unix:///run/redis.sock?db=2&password=p@ss", "unix://u:pw@/run/redis.sock"],
)  # fmt: skip
def test_good_urls_stay_accepted(url: str) -> None:
    assert redis_url_problem(url) is None


def test_the_config_accepts_cluster_and_sentinel_urls() -> None:
    field = SCHEMA["redis"]["url"]
    for url in ("redis+cluster://a:7000,b:7001", "redis+sentinel://s:26379/m", ""):
        assert check_value(field, url) == url
    assert check_value(field, "redis+sentinel://s:26379") is None


def test_sentinel_credentials_go_to_the_sentinels_and_the_url_ones_to_the_data_nodes() -> None:
    target = connect.parse("redis+sentinel://me:data@s1:26379/m/2?sentinel_password=watch&socket_timeout=3")
    assert target.node_url(("s1", 26379), sentinel=True) == "redis://:watch@s1:26379/0?socket_timeout=3"
    assert target.node_url(("10.0.0.5", 6380)) == "redis://me:data@10.0.0.5:6380/2?socket_timeout=3"


async def test_a_plain_url_still_makes_a_plain_client(redis_url: str) -> None:
    client = connect.client(redis_url)
    try:
        assert await client.ping()
        assert "locator" not in client.connection_pool.connection_kwargs
    finally:
        await client.aclose()
