"""The Dagster example against the real thing: the daeda binary (DAEDA_BIN),
the example catalog with `daeda demo generate` data, and a redis-server this
test starts on a free port. Assets are materialized in-process with Dagster's
own test API (`dagster.materialize`). Run by scripts/dagster-example.sh.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import dagster as dg

from daeda_dagster import KEY_PREFIX, Daeda, daeda_asset, definitions

REPO = Path(__file__).resolve().parents[2]
DAEDA_BIN = os.environ.get("DAEDA_BIN", "daeda")
APPROVED = ["item_features", "user_features", "user_item_reranker"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    """A throwaway redis-server; ours, not another process on the port."""

    def __init__(self, workdir: Path):
        for _ in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(workdir)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                info = subprocess.run(["redis-cli", "-p", str(self.port), "info", "server"], capture_output=True, text=True)
                if f"process_id:{self.proc.pid}" in info.stdout.split():
                    return
                time.sleep(0.05)
            self.stop()
        raise RuntimeError("could not start redis-server")

    def cli(self, *args: str) -> str:
        p = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, check=True)
        return p.stdout.strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def materialize(assets, daeda: Daeda, ops: dict, **kwargs) -> dg.ExecuteInProcessResult:
    """`dagster.materialize` with Dagster's console log quiet: the assertions
    carry what a failure needs."""
    run_config = {"ops": ops, "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    return dg.materialize(assets, resources={"daeda": daeda}, run_config=run_config, **kwargs)


def op_config(asset: dg.AssetsDefinition, **config) -> dict:
    return {asset.op.name: {"config": config}}


def metadata_values(md: dict) -> dict:
    return {k: getattr(v, "value", v) for k, v in md.items()}


class DagsterExample(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="daeda-dagster-"))
        shutil.copytree(REPO / "feature_services", cls.tmp / "feature_services")
        # Data dated by the clock (fresh rows), where the catalog's sources point.
        subprocess.run([DAEDA_BIN, "demo", "generate", "--out", "data", "--users", "300"], cwd=cls.tmp, check=True,
                       stdout=subprocess.DEVNULL)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.work = Path(tempfile.mkdtemp(prefix="run-", dir=self.tmp))
        self.redis = Redis(self.work)
        self.addCleanup(self.redis.stop)
        self.daeda = Daeda(binary=DAEDA_BIN, cwd=str(self.tmp), catalog=str(self.tmp / "feature_services"),
                           redis_url=f"redis://127.0.0.1:{self.redis.port}/0", run_root=str(self.work / "runs"))

    def runs(self) -> list:
        code, out, err = self.daeda.run("runs", "list", "--json")
        self.assertEqual(code, 0, err)
        return out

    def test_every_approved_service_is_an_asset_that_materializes_and_passes_its_skew_check(self):
        defs = definitions(self.daeda)
        assets = [a for a in defs.assets]
        self.assertEqual(sorted(a.key.path[1] for a in assets), APPROVED, "pii_features is not approved for serving")
        job = defs.resolve_job_def("daeda_materialize")
        self.assertEqual(sorted(k.path[1] for k in job.asset_layer.executable_asset_keys), APPROVED)
        self.assertEqual([s.cron_schedule for s in defs.schedules], ["17 * * * *"])

        ops = {}
        for a in assets:
            ops.update(op_config(a, skew_all=True))
        result = materialize(assets, self.daeda, ops)
        self.assertTrue(result.success)

        records = {r["run_id"]: r for r in self.runs()}
        for a in assets:
            service = a.key.path[1]
            (mat,) = result.asset_materializations_for_node(a.op.name)
            md = metadata_values(mat.metadata)
            self.assertEqual(md["generation"], "1")
            self.assertEqual(self.redis.cli("GET", f"daeda:{{svc:{service}}}:current"), "1", "the generation is live")
            self.assertGreater(md["entities"], 0)
            self.assertEqual(md["materialize"]["entities"], md["entities"])
            self.assertEqual(md["rows_written"], md["entities"])
            skew = md["skew_check"]
            self.assertTrue(skew["passed"], skew)
            self.assertEqual(skew["mode"], "all")
            self.assertEqual(md["mismatch_rate"], 0.0)
            self.assertEqual(md["entities_compared"], md["entities"])
            # Both runs are in daeda's MetadataStore under the ids the asset shows.
            self.assertEqual(records[md["run_id"]]["status"], "succeeded")
            self.assertEqual(records[md["run_id"]]["kind"], "materialize")
            self.assertEqual(records[md["skew_run_id"]]["status"], "passed")

    def test_the_entry_point_loads_and_an_asset_can_follow_its_pipeline(self):
        env = {"DAEDA_BIN": DAEDA_BIN, "DAEDA_DIR": str(self.tmp)}
        code = ("import definitions; "
                "print(sorted('/'.join(a.key.path) for a in definitions.defs.assets))")
        p = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, env={**os.environ, **env},
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), str([f"{KEY_PREFIX}/{s}" for s in APPROVED]))
        upstream = dg.AssetKey(["training", "user_features"])
        self.assertEqual(list(daeda_asset("user_features", deps=[upstream]).dependency_keys), [upstream])

    def test_an_interrupted_run_stops_daeda_with_sigterm_not_sigkill(self):
        # A stand-in for a long materialization that records how it was stopped.
        marker = self.work / "stopped-by"
        script = self.work / "slow"
        script.write_text(f"#!/bin/sh\ntrap 'echo TERM > {marker}; kill $!; exit 1' TERM\nsleep 60 & wait\n")
        script.chmod(0o755)
        slow = Daeda(binary=str(script), stop_timeout_s=40)

        def interrupt(*_):
            raise KeyboardInterrupt

        old = signal.signal(signal.SIGALRM, interrupt)
        self.addCleanup(signal.signal, signal.SIGALRM, old)
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        started = time.monotonic()
        with self.assertRaises(KeyboardInterrupt):
            slow.run("materialize")
        self.assertLess(time.monotonic() - started, 20, "it stopped on SIGTERM, not at the timeout's SIGKILL")
        self.assertEqual(marker.read_text().strip(), "TERM")

    def test_the_asset_fails_with_the_skew_report_when_the_check_finds_skew(self):
        asset = daeda_asset("user_features")
        first = materialize([asset], self.daeda, op_config(asset, skew_all=True))
        self.assertTrue(first.success)

        # Entity 7's online row replaced by entity 8's: a corruption an
        # incremental run leaves alone (nothing newer than the watermark), so
        # only the skew check can find it.
        a, b = "daeda:row:user_features:1:8", "daeda:row:user_features:1:7"
        self.assertEqual(self.redis.cli("EXISTS", a, b), "2")
        self.redis.cli("EVAL", "return redis.call('SET', KEYS[2], redis.call('GET', KEYS[1]))", "2", a, b)

        result = materialize([asset], self.daeda, op_config(asset, mode="incremental", skew_all=True), raise_on_error=False)
        self.assertFalse(result.success)
        self.assertEqual(result.asset_materializations_for_node(asset.op.name), [], "no materialization is recorded")
        (failure,) = result.get_step_failure_events()
        data = failure.step_failure_data.user_failure_data
        self.assertIn("skew in user_features generation 1", data.description)
        md = metadata_values(data.metadata)
        skew = md["skew_check"]
        self.assertFalse(skew["passed"])
        self.assertEqual(skew["mismatched"], 1, skew)
        self.assertGreater(md["mismatch_rate"], 0.0)
        examples = [e for c in skew["columns"].values() for e in c["examples"]]
        self.assertTrue(examples and all(e["entity"] == "7" for e in examples), skew["columns"])
        self.assertEqual(md["materialize"]["mode"], "incremental", "the materialization itself went through")
        self.assertEqual(next(r for r in self.runs() if r["run_id"] == md["skew_run_id"])["status"], "skewed")

    def test_the_asset_fails_when_the_materialization_fails_and_writes_nothing(self):
        # Another run holds the service's lease: this run is refused, no flock needed.
        self.redis.cli("SET", "daeda:{svc:user_features}:lease", "other-run", "PX", "60000")
        asset = daeda_asset("user_features")
        result = materialize([asset], self.daeda, {}, raise_on_error=False)
        self.assertFalse(result.success)
        (failure,) = result.get_step_failure_events()
        data = failure.step_failure_data.user_failure_data
        self.assertIn("another run (other-run) is materializing `user_features`", data.description)
        self.assertIn("exit 1", data.description)
        failed = metadata_values(data.metadata)["materialize"]["failed"]
        self.assertEqual([f["service"] for f in failed], ["user_features"])
        self.assertEqual(self.redis.cli("EXISTS", "daeda:{svc:user_features}:current"), "0", "nothing went live")
        self.assertEqual(self.redis.cli("GET", "daeda:{svc:user_features}:lease"), "other-run", "the lease is not touched")
        self.assertEqual(self.runs()[0]["status"], "skipped")


if __name__ == "__main__":
    unittest.main()
