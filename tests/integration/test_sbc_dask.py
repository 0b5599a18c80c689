"""`lanternpk sbc` end to end on Dask: a local cluster, a scheduler reached by address, resume,
and a worker killed mid-run (no finished fit lost). Tiny, seeded settings: a smoke test of the
machinery, not a calibration check (that is bench/sbc.md)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import warnings

import pytest

from lanternpk.cli import main
from lanternpk.errors import EXIT_DIAGNOSTICS, EXIT_OK

pytestmark = pytest.mark.slow

TINY = ["--chains", "2", "--tune", "60", "--draws", "40", "--thin-to", "19", "--seed", "7",
        "--timeout", "600", "--quiet"]


def _args(root, out, n):
    return ["sbc", str(root / "models/muse_vs_msc.toml"), "--truth-design",
            str(root / "data/designs/sbc_small.toml"), "--n", str(n), "--out", str(out), *TINY]


def _records(out):
    return {p.name: p.read_bytes() for p in sorted((out / "fits").glob("*.json"))}


def test_local_cluster_smoke_run_and_resume(root, tmp_path, capsys):
    out = tmp_path / "sbc"
    rc = main([*_args(root, out, 2), "--workers", "2"])
    assert rc in (EXIT_OK, EXIT_DIAGNOSTICS)  # 2 fits cannot establish calibration
    summary = json.loads((out / "sbc.json").read_text())
    assert summary["n_ok"] + summary["n_failed"] == 2 and summary["n_missing"] == 0
    assert summary["n_draws"] == 19
    names = {q["name"] for q in summary["quantities"]}
    assert {"first_pass[muse,spinal_cord]", "residual_sd", "homing_fraction[msc,femur]",
            "engrafted_fraction[muse,lung,7d]",
            "time_to_undetectable_d[muse,whole_body,in_vivo]"} <= names
    assert all(0 <= q["chi_square_p"] <= 1 and 0 < q["ecdf_p"] <= 1
               for q in summary["quantities"])
    assert (out / "sbc_ecdf.png").stat().st_size > 10_000
    ranks = (out / "ranks.csv").read_text().splitlines()
    assert len(ranks) == 1 + summary["n_ok"]
    record = json.loads((out / "fits/0000.json").read_text())
    assert record["status"] == "ok" and all(0 <= r <= 19 for r in record["ranks"].values())
    assert record["attempts"][0]["status"] == "ok"

    # re-running the same command resumes: nothing is refit, every record is untouched
    before = _records(out)
    capsys.readouterr()
    assert main([*_args(root, out, 2), "--workers", "2"]) == rc
    assert _records(out) == before
    assert json.loads((out / "sbc.json").read_text())["campaign"]["resumed_fits"] == 2


def test_scheduler_by_address_survives_a_killed_worker(root, tmp_path):
    from distributed import Client, LocalCluster

    n = 4
    out = tmp_path / "sbc"
    with warnings.catch_warnings():
        # a nanny restarting the killed worker, and the cluster's shutdown while a worker
        # restarts, may warn about the lost worker process; that loss is what is tested
        warnings.filterwarnings("ignore", category=ResourceWarning)
        warnings.filterwarnings("ignore", message=".*[Ww]orker.*", category=UserWarning)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            result = {}
            runner = threading.Thread(target=lambda: result.setdefault(
                "rc", main([*_args(root, out, n), "--scheduler", cluster.scheduler_address])))
            runner.start()
            deadline = time.monotonic() + 400
            while not _records(out) and time.monotonic() < deadline and runner.is_alive():
                time.sleep(0.5)
            finished_before = _records(out)
            assert finished_before, "no fit finished before the deadline"
            # with n = 4 fits on 2 workers, the second round is running now
            assert runner.is_alive() and len(finished_before) < n
            pids = client.run(os.getpid)
            busy = sorted(address for address, keys in client.processing().items()
                          if any(str(key).startswith("sbc-fit-") for key in keys))
            assert busy, "no worker is running a fit to kill"
            os.kill(pids[busy[0]], signal.SIGKILL)  # a worker this test started, mid-fit
            runner.join(timeout=600)
            assert not runner.is_alive()

    assert result["rc"] in (EXIT_OK, EXIT_DIAGNOSTICS)
    after = _records(out)
    # no finished fit lost or rewritten, and every index is done or recorded as failed
    assert all(after[name] == data for name, data in finished_before.items())
    assert sorted(after) == [f"{i:04d}.json" for i in range(n)]
    summary = json.loads((out / "sbc.json").read_text())
    assert summary["n_ok"] + summary["n_failed"] == n
    assert summary["campaign"]["scheduler"] == cluster.scheduler_address
