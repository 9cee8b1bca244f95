"""The bounded form of ``python -m bench.hostile_soak``: the issue-23 attacks beside normal
traffic against a real ``srstore serve`` for a few seconds. The latency ratios are the
benchmark's to measure; here what must hold whatever the machine's load: the server stays
ready, answers no 500, serves the normal clients, and stays under the RSS bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.hostile_soak import RSS_BOUND_MIB, soak


@pytest.mark.slow
def test_attacks_beside_normal_traffic_leave_the_server_ready_and_serving(
    tmp_path: Path,
) -> None:
    quiet, attacked = soak(tmp_path, duration=6)

    assert attacked.probes >= 5
    assert attacked.not_ready == 0
    assert attacked.server_errors() == 0
    assert attacked.uploads and attacked.misses
    assert not attacked.normal_failures
    assert attacked.rss_mib < RSS_BOUND_MIB
    refused = {what for what in attacked.attacks if what.split()[-1] in {"429", "431", "422"}}
    assert refused  # the attacks were refused, not merely absorbed
    assert quiet.not_ready == 0
