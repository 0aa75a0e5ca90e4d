"""Errors a user can hit while opening a dataset or reading an image; each message is one sentence
naming the file or field at fault and the fix."""

from __future__ import annotations

from pathlib import Path


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where joindet looked; the message lists where it looked."""


class AnnotationError(ValueError):
    """An annotation file (COCO JSON, VOC XML, class list) is malformed or unsafe."""


class ImageLoadError(ValueError):
    """One image could not be decoded; the stages quarantine it (image_id, file, reason) and go on.

    Attributes:
        image_id: the image's id in the dataset index.
        file: its path relative to the dataset root.
        reason: a short human-readable cause (``"empty file (0 bytes)"``, ``"truncated JPEG ..."``).
    """

    def __init__(self, image_id: int, file: str | Path, reason: str) -> None:
        self.image_id = int(image_id)
        self.file = str(file)
        self.reason = reason
        super().__init__(f"image {self.image_id} ({self.file}) could not be loaded: {reason}")

    def __reduce__(self):  # keeps the three fields when the error crosses a process boundary
        return (type(self), (self.image_id, self.file, self.reason))
