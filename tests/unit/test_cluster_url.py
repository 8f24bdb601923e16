"""``READSIDE_REDIS_URL`` for a Redis Cluster: ``redis+cluster://host:port[,host:port...]``."""

from __future__ import annotations

import pytest

from readside.shared.cluster import cluster_nodes, node_url
from readside.shared.errors import ConfigError
from readside.shared.settings import Settings


def test_a_cluster_url_names_its_nodes_and_a_plain_url_is_one_server() -> None:
    url = "redis+cluster://user:s%40cret@10.0.0.1:6379,10.0.0.2:6380,[::1]:7000"
    assert cluster_nodes(url) == [("10.0.0.1", 6379), ("10.0.0.2", 6380), ("::1", 7000)]
    assert node_url(url) == "redis://user:s%40cret@10.0.0.1:6379"
    assert node_url(url, 2) == "redis://user:s%40cret@[::1]:7000"
    assert node_url("rediss+cluster://h:1") == "rediss://h:1"
    assert cluster_nodes("redis://127.0.0.1:6379/0") is None
    assert node_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_a_cluster_url_without_ports_is_refused_at_startup() -> None:
    assert Settings.from_env({"READSIDE_REDIS_URL": "redis+cluster://a:1,b:2"}).redis_url == "redis+cluster://a:1,b:2"
    with pytest.raises(ConfigError, match="READSIDE_REDIS_URL"):
        Settings.from_env({"READSIDE_REDIS_URL": "redis+cluster://a:1,b"})
