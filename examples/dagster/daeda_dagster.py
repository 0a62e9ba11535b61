"""daeda feature services as Dagster assets.

One asset per approved feature service (`daeda/<service>`). Materializing it
runs, through the `daeda` CLI and its `--json` output:

1. `daeda materialize --online --service S --json`: the latest row per entity
   into a new Redis generation, flipped live only when whole;
2. `daeda skew check --service S --json`: the online rows against the offline
   source, as the live generation read it.

Both JSON summaries become the asset's metadata (plus the figures a UI charts:
entities, rows and bytes written, seconds, mismatch rate). The asset fails
(`dagster.Failure`, with the summaries attached) when the materialization
fails or the skew check finds more skew than `max_mismatch_rate`; a failed
check is not retried (the data will not change by retrying).

Overlapping runs need no Dagster-side locking: the materializer takes a
per-service lease in Redis, and a run that finds it held fails with "another
run (...) is materializing ..." and writes nothing.

Every run is also recorded in daeda's own MetadataStore (`daeda runs list`);
the metadata carries both run ids to find them there.
"""

import json
import subprocess
from typing import Any, Optional, Sequence

import dagster as dg

#: The asset key prefix and group of every daeda asset.
KEY_PREFIX = "daeda"


class Daeda(dg.ConfigurableResource):
    """How to call the `daeda` CLI. Unset fields fall back to daeda's own
    resolution: `daeda.toml` in `cwd`, then the `DAEDA_*` environment."""

    binary: str = "daeda"
    cwd: Optional[str] = None
    config: Optional[str] = None
    catalog: Optional[str] = None
    redis_url: Optional[str] = None
    run_root: Optional[str] = None
    #: How long a run interrupted by Dagster has to stop cleanly before SIGKILL.
    stop_timeout_s: float = 60.0

    def run(self, *args: str) -> tuple[int, Any, str]:
        """Runs `daeda ARGS`; returns (exit code, parsed stdout JSON or None, stderr)."""
        cmd = [self.binary]
        for flag, value in (("--config", self.config), ("--catalog", self.catalog),
                            ("--redis", self.redis_url), ("--run-root", self.run_root)):
            if value:
                cmd += [flag, value]
        cmd += list(args)
        with subprocess.Popen(cmd, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as p:
            try:
                stdout, stderr = p.communicate()
            except BaseException:
                # The Dagster run was terminated: SIGTERM lets daeda stop cleanly
                # (its unfinished generation removed, its lease released), where
                # subprocess.run's SIGKILL would leave both to expire.
                p.terminate()
                try:
                    p.communicate(timeout=self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    p.kill()
                raise
        try:
            out = json.loads(stdout) if stdout.strip() else None
        except json.JSONDecodeError:
            out = None
        return p.returncode, out, stderr.strip()

    def approved_services(self) -> list[str]:
        """The services whose serving is allowed (`daeda services --json`)."""
        code, out, err = self.run("services", "--json")
        if code != 0 or not isinstance(out, list):
            raise RuntimeError(f"`daeda services --json` failed (exit {code}): {err}")
        return [s["name"] for s in out if s["serving"]["allowed"]]


class DaedaRunConfig(dg.Config):
    """Per-run settings (launchpad, or `run_config` in tests)."""

    #: `full` rebuilds a generation; `incremental` writes newer entities into the live one.
    mode: str = "full"
    #: Event-time bound (RFC 3339 or YYYY-MM-DD); default now.
    as_of: Optional[str] = None
    #: Compare every entity (and extra online ones) instead of a sample.
    skew_all: bool = False
    skew_sample: int = 1000
    float_tolerance: float = 0.0
    #: The asset fails above this share of bad entities.
    max_mismatch_rate: float = 0.0


def _failure(description: str, metadata: dict[str, Any], retry: bool) -> dg.Failure:
    return dg.Failure(description=description, metadata=metadata, allow_retries=retry)


def daeda_asset(service: str, deps: Sequence[Any] = ()) -> dg.AssetsDefinition:
    """The asset of one feature service. `deps` names the upstream assets (the
    pipeline that writes the service's source) so Dagster runs it after them."""

    @dg.asset(
        name=service,
        key_prefix=[KEY_PREFIX],
        group_name=KEY_PREFIX,
        deps=list(deps),
        kinds={"redis"},
        description=f"`{service}` materialized into Redis by daeda, then skew-checked against its source.",
    )
    def _asset(context: dg.AssetExecutionContext, config: DaedaRunConfig, daeda: Daeda) -> dg.MaterializeResult:
        args = ["materialize", "--online", "--service", service, "--mode", config.mode, "--json"]
        if config.as_of:
            args += ["--as-of", config.as_of]
        code, out, err = daeda.run(*args)
        if err:
            context.log.info(err)
        runs = (out or {}).get("runs") or []
        if code != 0 or len(runs) != 1:
            failed = (out or {}).get("failed") or []
            why = failed[0]["error"] if failed else err or f"exit {code}"
            meta = {"materialize": dg.MetadataValue.json(out)} if out else {}
            # A held lease or a Redis blip may pass: let a retry policy retry.
            raise _failure(f"daeda materialize {service} failed (exit {code}): {why}", meta, retry=True)
        run = runs[0]
        context.log.info(f"{service}: generation {run['generation']} live, {run['entities']} entities, run {run['run_id']}")

        args = ["skew", "check", "--service", service, "--json",
                "--float-tolerance", str(config.float_tolerance),
                "--max-mismatch-rate", str(config.max_mismatch_rate)]
        args += ["--all"] if config.skew_all else ["--sample", str(config.skew_sample)]
        code, report, err = daeda.run(*args)
        if err:
            context.log.info(err)
        metadata: dict[str, Any] = {
            "run_id": run["run_id"],
            "generation": run["generation"],
            "entities": dg.MetadataValue.int(run["entities"]),
            "rows_written": dg.MetadataValue.int(run["rows_written"]),
            "bytes_written": dg.MetadataValue.int(run["bytes_written"]),
            "seconds": dg.MetadataValue.float(run["seconds"]),
            "materialize": dg.MetadataValue.json(run),
        }
        if not isinstance(report, dict):
            raise _failure(f"daeda skew check {service} did not run (exit {code}): {err}", metadata, retry=True)
        metadata.update({
            "skew_run_id": report["run_id"],
            "mismatch_rate": dg.MetadataValue.float(report["mismatch_rate"]),
            "entities_compared": dg.MetadataValue.int(report["entities_compared"]),
            "skew_check": dg.MetadataValue.json(report),
        })
        if code != 0 or not report["passed"]:
            columns = ", ".join(f"{c} ({v['mismatches']})" for c, v in report["columns"].items()) or "none"
            raise _failure(
                f"skew in {service} generation {report['generation']}: mismatch rate {report['mismatch_rate']} over "
                f"{report['max_mismatch_rate']} ({report['mismatched']} mismatched, {report['missing_online']} missing "
                f"online, {report.get('extra_online') or 0} extra online; columns: {columns})",
                metadata,
                retry=False,
            )
        return dg.MaterializeResult(metadata=metadata)

    return _asset


def daeda_assets(services: Sequence[str]) -> list[dg.AssetsDefinition]:
    """One asset per service, e.g. `daeda_assets(Daeda(...).approved_services())`."""
    return [daeda_asset(s) for s in services]


def definitions(daeda: Daeda, cron: str = "17 * * * *") -> dg.Definitions:
    """Every approved service as an asset, one job for them all, and a schedule."""
    assets = daeda_assets(daeda.approved_services())
    job = dg.define_asset_job("daeda_materialize", selection=dg.AssetSelection.groups(KEY_PREFIX))
    return dg.Definitions(
        assets=assets,
        jobs=[job],
        schedules=[dg.ScheduleDefinition(job=job, cron_schedule=cron, execution_timezone="UTC")],
        resources={"daeda": daeda},
    )
