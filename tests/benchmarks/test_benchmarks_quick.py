"""The benchmark scripts in their ``--quick`` mode, run as the user runs them (a subprocess, a
real ``talker serve`` for the latency one), so that they cannot rot: exit 0, the JSON has the
expected keys and sane values, the plot exists. Numbers are not judged here; the scripts are."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.common import format_table, percentiles
from benchmarks.latency import read_proc

pytestmark = pytest.mark.slow  # ~40 s together; part of `make test`, never skipped

REPO = Path(__file__).resolve().parents[2]


def run_quick(module: str, out: Path, timeout_s: float = 150.0) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--quick", "--threads", "1", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    assert proc.returncode == 0, f"{module} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "p50" in proc.stdout and "torch threads: 1" in proc.stdout, proc.stdout
    assert out.is_file() and out.with_suffix(".png").stat().st_size > 10_000
    return dict(json.loads(out.read_text()))


def check_percentiles(p: dict[str, Any]) -> None:
    assert set(p) == {"p50", "p95", "p99"}
    assert all(isinstance(p[q], float) and math.isfinite(p[q]) for q in p), p
    assert 0 < p["p50"] <= p["p95"] <= p["p99"], p


def check_machine(m: dict[str, Any]) -> None:
    for key in ("date", "cpu", "cores", "torch", "device", "torch_threads", "commit"):
        assert m.get(key) not in (None, ""), key
    assert m["device"] == "cpu" and m["torch_threads"] == 1


@pytest.fixture(scope="module")
def latency(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_quick("benchmarks.latency", tmp_path_factory.mktemp("latency") / "latency.json")


@pytest.fixture(scope="module")
def sampler(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_quick("benchmarks.sampler", tmp_path_factory.mktemp("sampler") / "sampler.json")


def test_latency_quick_streams_the_ladder_over_websockets(latency):
    assert latency["benchmark"] == "latency" and latency["quick"] is True
    check_machine(latency["machine"])
    assert "tiny" in latency["model"]
    assert latency["stopped"] is None
    assert [s["streams"] for s in latency["steps"]] == [1, 2]
    for step in latency["steps"]:
        assert step["transport"] == "ws" and step["errors"] == []
        assert step["sessions_ok"] == step["streams"]
        check_percentiles(step["server_latency_ms"])
        check_percentiles(step["client_latency_ms"])
        # the client sees a frame after the server sent it, on the same clock
        assert step["client_latency_ms"]["p50"] >= step["server_latency_ms"]["p50"] - 5.0
        assert step["frames"]["expected"] == step["streams"] * math.ceil(3.0 * 30)
        assert step["real_time_factor"] > 0 and step["engine"]["hops"] > 0
        proc = step["server_process"]
        assert proc["cpu_percent_mean"] > 0 and proc["rss_mb_max"] > 50
    one = latency["steps"][0]
    assert one["frames"]["delivered"] == one["frames"]["expected"] == 90
    assert one["gaps"] == 0 and one["dropped_reported"] == 0


def test_latency_quick_also_runs_webrtc(latency):
    [step] = latency["webrtc"]
    assert step["transport"] == "webrtc" and step["streams"] == 1 and step["errors"] == []
    check_percentiles(step["server_latency_ms"])
    check_percentiles(step["client_latency_ms"])
    # Opus priming and the first packets before the track is wired up: a few frames either way
    assert abs(step["frames"]["delivered"] - step["frames"]["expected"]) <= 6


def test_sampler_quick_times_every_row_and_scores_it(sampler):
    assert sampler["benchmark"] == "sampler" and sampler["quick"] is True
    check_machine(sampler["machine"])
    assert sampler["config"]["batch"] == [1, 8]
    rows = {r["label"]: r for r in sampler["rows"]}
    assert list(rows) == ["random-tiny ddpm500", "random-tiny ddim8", "random-tiny ddim4"]
    for row in rows.values():
        assert set(row["timing"]) == {"1", "8"}
        for cell in row["timing"].values():
            check_percentiles({q: cell[q] for q in ("p50", "p95", "p99")})
            assert cell["repeats"] >= 1 and cell["ms_per_stream_s"] > 0
        q = row["quality"]
        assert q["split"] == "test" and q["n_utterances"] >= 1
        assert all(math.isfinite(q[k]) and q[k] > 0 for k in ("lve", "fdd", "mve"))
        assert row["lve_vs_all_steps"] > 0
    # 500 network calls cost far more than 8 or 4 (same batch, same model)
    p50 = {label: r["timing"]["1"]["p50"] for label, r in rows.items()}
    assert p50["random-tiny ddpm500"] > 5 * max(p50["random-tiny ddim8"], p50["random-tiny ddim4"])


def test_percentiles_and_table_helpers():
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None}
    p = percentiles([float(x) for x in range(101)])
    assert p == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    text = format_table(["a", "bb"], [[1, 2.5], ["xyz", None]])
    assert text.splitlines() == ["  a   bb", "---  ---", "  1  2.5", "xyz    -"]


def test_read_proc_reads_this_process():
    cpu_s, rss, threads = read_proc(os.getpid())
    assert cpu_s > 0 and rss > 10 * 2**20 and threads >= 1


def test_soak_quick_holds_sessions_and_reports_slopes(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.soak", "--quick", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, f"soak failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(out.read_text())
    summary, samples = result["summary"], result["samples"]
    assert result["errors"] == [] and summary["sessions"] == 2
    assert summary["frames"]["delivered"] == summary["frames"]["expected"] == 2 * 30 * 30
    assert summary["frames"]["gaps"] == 0
    assert len(samples) >= 5 and all(s["rss_mb"] > 50 and s["threads"] >= 2 for s in samples)
    assert isinstance(summary["rss_mb"]["slope_mb_per_min"], float)
    check_percentiles(samples[1]["latency_ms"])
    assert summary["p95_ms"]["first_fifth"] and summary["p95_ms"]["last_fifth"]
