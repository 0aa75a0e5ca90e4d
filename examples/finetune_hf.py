"""Finetune a joindet export in Hugging Face transformers on a COCO-format dataset.

    joindet export model RUN --format hf -o /tmp/hf
    python examples/finetune_hf.py --export /tmp/hf --data-root /tmp/syn

Loads ``DeformableDetrForObjectDetection`` from the export (no download), replaces its class head
for the K categories of ``DATA_ROOT/annotations/instances_<split>.json`` (images in
``DATA_ROOT/<split>/``: the layout of ``joindet data synth``), and runs a few optimisation steps
with transformers' own image processor, matcher and loss (``outputs.loss``). A plain PyTorch loop
keeps the example free of ``accelerate``; the same model, processor and ``collate`` plug into
``transformers.Trainer`` where ``accelerate`` is installed.

Prints one JSON line: steps, K, mean loss of the first and last ``--window`` steps, seconds. Exits
with status 1 when the loss did not decrease.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image


def load_coco(data_root: Path, split: str) -> tuple[list[dict[str, Any]], dict[int, list[dict]], list[dict]]:
    """(images, annotations per image id, categories) of ``instances_<split>.json``."""
    coco = json.loads((data_root / "annotations" / f"instances_{split}.json").read_text())
    per_image: dict[int, list[dict]] = {im["id"]: [] for im in coco["images"]}
    for ann in coco["annotations"]:
        per_image[ann["image_id"]].append(ann)
    return coco["images"], per_image, coco["categories"]


def encode(
    processor: Any, data_root: Path, split: str, image: dict, anns: list[dict], label_of: dict[int, int]
) -> dict:
    """One image through the export's image processor: pixel_values, pixel_mask, labels
    (class_labels 0..K-1, boxes normalised cxcywh), as transformers' loss expects them."""
    pil = Image.open(data_root / split / image["file_name"]).convert("RGB")
    target = {
        "image_id": image["id"],
        "annotations": [
            {"bbox": a["bbox"], "category_id": label_of[a["category_id"]], "area": a["area"], "iscrowd": 0}
            for a in anns
        ],
    }
    enc = processor(images=pil, annotations=target, return_tensors="pt")
    return {"pixel_values": enc["pixel_values"][0], "labels": enc["labels"][0]}


def collate(items: list[dict]) -> dict:
    """Pad a batch bottom/right to its largest image; pixel_mask 1 on real pixels, 0 on padding
    (boxes stay normalised to each image's own size, as the processor wrote them)."""
    h = max(it["pixel_values"].shape[1] for it in items)
    w = max(it["pixel_values"].shape[2] for it in items)
    pixels = torch.zeros(len(items), 3, h, w)
    mask = torch.zeros(len(items), h, w, dtype=torch.long)
    for i, it in enumerate(items):
        _, ih, iw = it["pixel_values"].shape
        pixels[i, :, :ih, :iw] = it["pixel_values"]
        mask[i, :ih, :iw] = 1
    return {"pixel_values": pixels, "pixel_mask": mask, "labels": [it["labels"] for it in items]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--export", required=True, type=Path, help="directory written by `joindet export model --format hf`"
    )
    parser.add_argument("--data-root", required=True, type=Path, help="COCO-format dataset (joindet data synth layout)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--images", type=int, default=16, help="images used (the first N of the split)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--window", type=int, default=8, help="steps averaged at the start and at the end")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)

    from transformers import AutoImageProcessor, DeformableDetrForObjectDetection

    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    images, per_image, categories = load_coco(args.data_root, args.split)
    label_of = {c["id"]: i for i, c in enumerate(categories)}
    id2label = {i: c["name"] for i, c in enumerate(categories)}
    processor = AutoImageProcessor.from_pretrained(args.export)
    # A new K-class head: transformers re-initialises the mismatched class_embed and says so.
    model = DeformableDetrForObjectDetection.from_pretrained(
        args.export,
        num_labels=len(categories),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        ignore_mismatched_sizes=True,
    )
    model.train()
    items = [
        encode(processor, args.data_root, args.split, im, per_image[im["id"]], label_of) for im in images[: args.images]
    ]
    # The backbone stays frozen as in pretraining; the transformer and heads are finetuned.
    params = [p for n, p in model.named_parameters() if p.requires_grad and ".backbone." not in n]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)

    losses: list[float] = []
    t0 = time.perf_counter()
    order: list[int] = []
    for _ in range(args.steps):
        if len(order) < args.batch_size:
            order += random.sample(range(len(items)), len(items))
        batch = collate([items[order.pop()] for _ in range(args.batch_size)])
        out = model(**batch)
        optimizer.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.1)
        optimizer.step()
        losses.append(float(out.loss.detach()))
    w = min(args.window, len(losses) // 2) or 1
    first, last = sum(losses[:w]) / w, sum(losses[-w:]) / w
    report = {
        "steps": len(losses),
        "num_labels": len(categories),
        "images": len(items),
        "first_loss": round(first, 4),
        "last_loss": round(last, 4),
        "decreased": last < first,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(report, sort_keys=True))
    return 0 if last < first else 1


if __name__ == "__main__":
    sys.exit(main())
