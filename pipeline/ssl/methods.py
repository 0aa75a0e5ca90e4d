"""Self-supervised methods for the detector's ResNet backbone, built on lightly's losses, heads,
augmentations and momentum update (``pip install -e ".[ssl]"``).

A method is an ``nn.Module`` holding a torchvision ResNet with ordinary (trainable) BatchNorm,
whose ``body`` keys are exactly those of ``detector.backbone.Backbone.body`` (``conv1.weight``,
``layer1.0.bn1.running_mean``, ...; no ``fc``), plus the method's projection head (and, for DINO,
a momentum teacher). ``loss(views, step, total_steps)`` takes the list of augmented views of one
batch (each float ``[B, 3, s, s]``, ImageNet-normalised like the detector's input) and returns
the scalar loss; ``after_step`` updates what the optimiser does not (the teacher).

- ``simclr``: NT-Xent over two views (SimCLR), projection head 512-512-128.
- ``dino``: self-distillation with a momentum teacher (DINO), two global and ``local_views``
  local crops; the teacher's backbone is the one saved (as DINO recommends).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torchvision
from lightly.loss import DINOLoss, NTXentLoss
from lightly.models.modules import DINOProjectionHead, SimCLRProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import DINOTransform, SimCLRTransform
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor, nn

from joindet.detector.presets import RESNET_CHANNELS


@dataclass(frozen=True)
class MethodDefaults:
    """Optimiser defaults of one method (AdamW): learning rate and weight decay."""

    lr: float
    weight_decay: float


#: method name -> its optimiser defaults. The methods themselves are built by :func:`build_method`.
METHODS: dict[str, MethodDefaults] = {
    "simclr": MethodDefaults(lr=1e-3, weight_decay=1e-6),
    "dino": MethodDefaults(lr=5e-4, weight_decay=0.04),
}

#: DINO at CPU scale: teacher momentum rises from this to 1 along a cosine (DINO uses 0.996 over
#: hundreds of thousands of steps; a few hundred steps need a faster teacher).
DINO_MOMENTUM = 0.99
#: DINO head: hidden width, bottleneck and prototypes (DINO uses 2048/256/65536 on ImageNet).
DINO_HEAD = (1024, 128, 4096)


def resnet_body(arch: str) -> nn.Module:
    """torchvision ``arch`` (resnet18/34/50), random init, BatchNorm2d, without ``fc``/``avgpool``:
    the key layout of the detector backbone's ``body``."""
    if arch not in RESNET_CHANNELS:
        raise ValueError(f"backbone arch {arch!r} is not supported; use one of {', '.join(sorted(RESNET_CHANNELS))}.")
    body = getattr(torchvision.models, arch)(weights=None)
    del body.fc, body.avgpool
    return body


def pooled(body: nn.Module, images: Tensor) -> Tensor:
    """Global average of C5: images ``[B, 3, H, W]`` -> ``[B, C5]``."""
    b = body
    x = b.maxpool(b.relu(b.bn1(b.conv1(images))))
    x = b.layer4(b.layer3(b.layer2(b.layer1(x))))
    return x.mean(dim=(2, 3))


class SimCLR(nn.Module):
    """SimCLR: NT-Xent loss between the projections of two views of each image."""

    def __init__(self, arch: str, temperature: float = 0.5) -> None:
        super().__init__()
        dim = RESNET_CHANNELS[arch][-1]
        self.body = resnet_body(arch)
        self.head = SimCLRProjectionHead(dim, dim, 128)
        self.criterion = NTXentLoss(temperature=temperature)

    def loss(self, views: list[Tensor], step: int, total_steps: int) -> Tensor:
        z0, z1 = (self.head(pooled(self.body, v)) for v in views[:2])
        return self.criterion(z0, z1)

    def after_step(self, step: int, total_steps: int) -> None:
        pass

    def saved_body(self) -> nn.Module:
        return self.body


class DINO(nn.Module):
    """DINO: the student matches the centred, sharpened teacher outputs of the global views from
    every view; the teacher is an exponential moving average of the student."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        dim = RESNET_CHANNELS[arch][-1]
        hidden, bottleneck, out = DINO_HEAD
        self.body = resnet_body(arch)
        self.head = DINOProjectionHead(dim, hidden, bottleneck, out)
        self.teacher_body = copy.deepcopy(self.body)
        self.teacher_head = DINOProjectionHead(dim, hidden, bottleneck, out)
        self.teacher_head.load_state_dict(self.head.state_dict())
        deactivate_requires_grad(self.teacher_body)
        deactivate_requires_grad(self.teacher_head)
        self.criterion = DINOLoss(output_dim=out, warmup_teacher_temp=0.04, teacher_temp=0.04)

    def loss(self, views: list[Tensor], step: int, total_steps: int) -> Tensor:
        with torch.no_grad():
            teacher = [self.teacher_head(pooled(self.teacher_body, v)) for v in views[:2]]
        student = [self.head(pooled(self.body, v)) for v in views]
        return self.criterion(teacher, student)

    def after_step(self, step: int, total_steps: int) -> None:
        m = cosine_schedule(step, max(total_steps, 1), DINO_MOMENTUM, 1.0)
        update_momentum(self.body, self.teacher_body, m)
        update_momentum(self.head, self.teacher_head, m)

    def saved_body(self) -> nn.Module:
        return self.teacher_body


def build_method(method: str, arch: str) -> SimCLR | DINO:
    """The SSL module of ``method`` (a key of :data:`METHODS`) around a random ``arch`` ResNet."""
    if method == "simclr":
        return SimCLR(arch)
    if method == "dino":
        return DINO(arch)
    raise ValueError(f"self-supervised method {method!r} is not supported; use one of {', '.join(METHODS)}.")


def views_transform(method: str, size: int, local_views: int = 2):
    """lightly's augmentation of ``method``: PIL image -> list of float ``[3, s, s]`` views.

    ``size``: side in pixels of the (global) crops; DINO's local crops are ``size // 2`` (at least
    32 px, so that C5 keeps one cell).
    """
    if method == "simclr":
        return SimCLRTransform(input_size=size, min_scale=0.2)
    if method == "dino":
        return DINOTransform(
            global_crop_size=size,
            local_crop_size=max(32, size // 2),
            n_local_views=local_views,
        )
    raise ValueError(f"self-supervised method {method!r} is not supported; use one of {', '.join(METHODS)}.")
