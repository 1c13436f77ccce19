"""The bench's processor rows: every built-in measured through the chain a worker runs, and
the plugin call's overhead on a trivial processor within its target (docs/processors.md)."""

from __future__ import annotations

from framepipe.bench.processors import OVERHEAD_TARGET_MS, measure
from framepipe.processing.registry import BUILTINS


def test_every_builtin_has_a_kernel_row_and_the_plugin_call_is_cheap() -> None:
    result = measure(64, "uint16", 0.1)
    names = {row["processor"].split(" ")[0] for row in result["kernels"]}
    assert set(BUILTINS) <= names
    assert all(row["fps"] > 0 and row["frames"] > 0 for row in result["kernels"])
    overhead = result["overhead"]
    assert overhead["chain_ms"] >= overhead["direct_ms"] > 0
    assert overhead["overhead_ms"] < OVERHEAD_TARGET_MS, overhead
