"""The fixture most cluster tests share: three `jq serve` nodes over their etcd members, started
for one test and stopped after it (`Cluster` in test_cluster_serve.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.test_cluster_serve import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
