"""Start-up time of the ``joindet`` command line (issue target: at most 1.5 s per command).

Times, in fresh interpreters, ``python -m joindet --help``, one sub-command's ``--help``, and on a
small run directory made here (a store of two versions, an index of 8 images, one saved
checkpoint) ``priors ls``, ``priors show`` and ``runs status``, and ``runs status`` of a finetune
run. Each command runs ``--repeats``
times; the median wall time is reported, against ``python -c pass`` as the floor of the machine.
Also lists which heavy libraries each command imported (from ``-X importtime``). Prints one JSON
line, with the load average before and after.

    OMP_NUM_THREADS=1 python3 benchmarks/bench_cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 1.5
HEAVY = ("torch", "torchvision", "prefect", "scipy.optimize", "zarr", "matplotlib", "pandas")


def make_run(root: Path) -> Path:
    """A run directory with an index, two prior versions and one checkpoint with its marker."""
    import numpy as np
    import torch

    from joindet.pipeline.checkpoints import save_checkpoint
    from joindet.pipeline.config import make_config
    from joindet.pipeline.data.synthetic import generate_synthetic
    from joindet.pipeline.run_dir import RunDir
    from joindet.priors import BoxSet

    data = generate_synthetic(root / "data", num_images=8, size=64, val_images=2)
    cfg = make_config("tiny", "synthetic", [f"data.root={data}", "schedule.epochs=3", "schedule.update_every=1"])
    run = RunDir.create(root / "run", cfg)
    ids = run.image_ids()
    rng = np.random.default_rng(0)
    xy = rng.random((len(ids) * 4, 2)) * 0.5
    boxes = BoxSet.from_arrays(np.repeat(ids, 4), np.concatenate([xy, xy + 0.3], 1), rng.random(len(ids) * 4))
    run.store.commit(0, {"smoothed": boxes})
    save_checkpoint(run.checkpoint_path(0), model=torch.nn.Linear(2, 2), epoch=0, config_digest=cfg.digest())
    run.store.commit(1, {"smoothed": boxes}, parent=0)
    return run.path


def make_finetune_run(root: Path) -> Path:
    """A finetune run directory (``finetune.json``) of 3 epochs with its first checkpoint."""
    import torch

    from joindet.pipeline.checkpoints import save_checkpoint
    from joindet.pipeline.config import make_config
    from joindet.pipeline.run_dir import RunDir

    cfg = make_config("tiny", "synthetic", [f"data.root={root / 'data'}", "finetune.epochs=3"])
    run = RunDir.create(root / "ft", cfg)
    (run.path / "finetune.json").write_text(json.dumps({"init_checkpoint": None, "fraction": 1.0}))
    save_checkpoint(run.checkpoint_path(0), model=torch.nn.Linear(2, 2), epoch=0, config_digest=cfg.digest())
    return run.path


def timed(args: list[str], repeats: int) -> tuple[float, list[str]]:
    """Median wall seconds of ``python args`` over ``repeats`` runs, and the heavy modules it loaded."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    trace = subprocess.run([sys.executable, "-X", "importtime", *args], check=True, capture_output=True, text=True)
    # A failed attempt (pandas kept out by flows/cli_light.py) is listed too, taking microseconds:
    # a module counts as loaded when its import took at least a millisecond.
    rows = [line.split("|") for line in trace.stderr.splitlines() if line.startswith("import time:")]
    loaded = {r[2].strip() for r in rows if r[1].strip().isdigit() and int(r[1]) >= 1000}
    return statistics.median(times), [m for m in HEAVY if m in loaded]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory() as tmp:
        run = str(make_run(Path(tmp)))
        ft = str(make_finetune_run(Path(tmp)))
        commands = {
            "python -c pass": ["-c", "pass"],
            "joindet --help": ["-m", "joindet", "--help"],
            "joindet flow run pretrain --help": ["-m", "joindet", "flow", "run", "pretrain", "--help"],
            "joindet priors ls RUN": ["-m", "joindet", "priors", "ls", run],
            "joindet priors show RUN": ["-m", "joindet", "priors", "show", run],
            "joindet runs status RUN": ["-m", "joindet", "runs", "status", run],
            "joindet runs status FINETUNE-RUN": ["-m", "joindet", "runs", "status", ft],
        }
        results = {}
        for name, cmd in commands.items():
            seconds, heavy = timed(cmd, args.repeats)
            results[name] = {"median_s": round(seconds, 3), "heavy_imports": heavy}
    worst = max(v["median_s"] for k, v in results.items() if k.startswith("joindet"))
    summary = {"target_s": TARGET_S, "worst_s": worst, "meets_target": worst <= TARGET_S}
    load = {"load_average_1min": [load_before, round(os.getloadavg()[0], 2)]}
    print(json.dumps({**summary, **load, "commands": results}))


if __name__ == "__main__":
    main()
