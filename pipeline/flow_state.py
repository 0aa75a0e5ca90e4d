"""Which step of the last flow run failed: ``RUN/logs/flow-state.json``.

The store says what is done and what is staged; only the flow knows that a step raised. The
record names the step as ``RunPlan.status()`` (pipeline/schedule.py) names its entries (``init v0000``, ``train epochs
0-1``, ``mine v0002``, ``smooth v0002``, or ``evaluate v0002``), so ``joindet runs status`` can
mark it failed. A successful flow run clears it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STATE_FILE = Path("logs") / "flow-state.json"


def _write(run_path: Path, record: dict[str, Any]) -> None:
    path = run_path / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def read_failure(run_path: str | Path) -> dict[str, Any] | None:
    """``{"step", "error", "when"}`` of the last flow run's failed step, or None."""
    try:
        record = json.loads((Path(run_path) / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("step") else None


#: When the last flow run began its work (after the orchestrator, e.g. Prefect's temporary server, started).
FLOW_START_FILE = Path("logs") / "flow-start.json"


def record_flow_start(run_path: str | Path, orchestrator: str) -> None:
    """Write ``{"started": <UTC ISO time>, "orchestrator": ...}`` to ``RUN/logs/flow-start.json``."""
    path = Path(run_path) / FLOW_START_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"started": when, "orchestrator": orchestrator}), encoding="utf-8")
    os.replace(tmp, path)


def read_flow_start(run_path: str | Path) -> str | None:
    """The ``started`` time of the last flow run, or None."""
    try:
        record = json.loads((Path(run_path) / FLOW_START_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return record.get("started") if isinstance(record, dict) else None


def clear_failure(run_path: str | Path) -> None:
    if (Path(run_path) / STATE_FILE).exists():
        _write(Path(run_path), {"step": None})


@contextlib.contextmanager
def step(run_path: str | Path, name: str) -> Iterator[None]:
    """Record ``name`` as the failed step when the body raises (the exception propagates)."""
    try:
        yield
    except Exception as exc:
        when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        _write(Path(run_path), {"step": name, "error": f"{type(exc).__name__}: {exc}", "when": when})
        raise
