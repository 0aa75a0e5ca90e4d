"""torchrun entry point of the train stage: ``python -m torch.distributed.run --nproc-per-node G
-m joindet.pipeline.stages.train_worker --run-dir RUN --end-epoch E``.

Use ``--run-dir`` under torchrun: its own parser rejects ``--run`` as an ambiguous abbreviation of
``--run-path`` before handing the remaining arguments to this module.

Every process opens the run and calls :func:`pipeline.stages.train.train`, which joins the
process group torchrun describes (gloo on CPU, nccl on CUDA); rank 0 writes checkpoints and logs
and prints the stage summary as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.stages.train import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="joindet.pipeline.stages.train_worker", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run-dir", "--run", dest="run", required=True, help="run directory (created by the pretrain flow)"
    )
    parser.add_argument("--end-epoch", type=int, required=True, help="train up to this epoch (exclusive)")
    args = parser.parse_args(argv)
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        torch.set_num_threads(int(threads))  # G processes share the cores
    result = train(RunDir.open(args.run), args.end_epoch)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result.to_dict(), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through torchrun in the tests
    sys.exit(main())
