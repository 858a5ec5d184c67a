"""The `slurm_cluster` pytest fixture: the project's one-node SLURM cluster
(`sbt.local_slurm`), started once per test session.

Make it visible with `from slurm_cluster import slurm_cluster_fixture  # noqa: F401`.
Where SLURM cannot be set up the tests that need it are skipped, except where
SBT_REQUIRE_SLURM=1 (CI), where that is an error.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from sbt.local_slurm import (  # noqa: F401  (re-exported for the tests)
    REQUIRE_ENV_VAR,
    ClusterUnavailable,
    NodeSpec,
    SlurmCluster,
    running_cluster,
)
from sbt.slurm_demo import format_job_table, job_table, rule_of  # noqa: F401


def start_or_skip(stack: contextlib.ExitStack, node: NodeSpec | None = None) -> SlurmCluster:
    """Start a cluster whose shutdown `stack` owns; skip the test (fail where
    SBT_REQUIRE_SLURM=1) when SLURM cannot be set up here. For fixtures."""
    try:
        return stack.enter_context(running_cluster(node))
    except ClusterUnavailable as exc:
        stack.close()
        if os.environ.get(REQUIRE_ENV_VAR) == "1":
            pytest.fail(f"no SLURM cluster ({REQUIRE_ENV_VAR}=1): {exc}", pytrace=False)
        pytest.skip(f"no SLURM cluster: {exc}")


_shared: dict[str, object] = {"stack": None, "cluster": None, "users": 0}


@pytest.fixture(scope="session", name="slurm_cluster")
def slurm_cluster_fixture() -> Iterator[SlurmCluster]:
    """One cluster per test session; skips the test when SLURM cannot be set up here.

    Shared through a module-level slot so that importing this fixture both in conftest.py
    and in a test module still starts only one cluster.
    """
    if _shared["cluster"] is None:
        stack = contextlib.ExitStack()
        _shared["cluster"] = start_or_skip(stack)
        _shared["stack"] = stack
    _shared["users"] += 1
    try:
        yield _shared["cluster"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            stack = _shared["stack"]
            _shared.update(stack=None, cluster=None)
            stack.close()
