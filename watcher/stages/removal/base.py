"""The contract every background-removal backend keeps."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from PIL import Image


@runtime_checkable
class Remover(Protocol):
    """Turns a photo into a mask of its product.

    Contract:
    - ``mask(image)`` takes an 8-bit sRGB ``RGB`` image (already oriented, at working scale) and
      returns an ``L`` image of exactly ``image.size``: 255 where the product is, 0 where the
      background is, soft values on the edge.
    - It raises ``RejectedImage`` only when the backend itself says this input can never be
      processed, ``RemovalUnavailable`` when the backend cannot serve now (the file then waits),
      and any other exception for bugs.
    - It is safe to call from several threads at once.
    - ``cpu_bound`` tells the pipeline whether the call needs one of the ``WORKERS`` CPU slots
      (local inference) or only waits on the network (remote).
    """

    name: str
    cpu_bound: bool

    def mask(self, image: Image.Image) -> Image.Image: ...

    def close(self) -> None: ...
