"""Self-supervised pretraining of the detector's backbone on a dataset's own images.

- ``train``: ``pretrain_backbone`` trains one method and writes a weights file that
  ``model.backbone_weights`` loads (resumable per epoch).
- ``methods``: SimCLR and DINO on lightly's losses, heads and augmentations (the optional
  extra ``ssl``; only this module imports lightly).
- ``stage``: the pretrain flow's first step with ``model.backbone_pretrain=true``.

Nothing is imported here, so that importing the flow driver does not import torch.
"""
