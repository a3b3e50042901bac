"""The contract between a remote cut-out service and the layer that makes it dependable.

A ``RemoteBackend`` makes exactly one attempt and says, by the exception it raises, what should
happen next; ``resilient.RemoteRemover`` decides about retries, the breaker, the fallback and
waiting. Keeping the two apart lets the Gradio client code stay about Gradio.
"""

from __future__ import annotations

from typing import Protocol

from PIL import Image

from watcher.masking import mask_text


class RemoteError(Exception):
    """One attempt failed. ``kind`` labels the metric; ``retryable`` says if trying again soon
    can help (a timeout, a dropped connection, a full queue) or not (bad token, bad answer).

    The message is masked (``masking.mask_text``): it is shown in the log, in ``/health`` and
    in the note beside a refused photo, and the client's own texts often hold the whole URL."""

    retryable = False

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(mask_text(message))


class TransientError(RemoteError):
    """The service could not answer this time; the same request may well succeed later."""

    retryable = True


class RefusedInput(RemoteError):
    """The service answered, and its answer was that it cannot process this input."""

    def __init__(self, message: str) -> None:
        super().__init__("refused", message)


class RemoteBackend(Protocol):
    """One remote cut-out service.

    - ``cutout(image)`` takes an ``RGB`` image and returns an ``L`` mask of ``image.size``, or
      raises ``TransientError``, ``RefusedInput`` or another ``RemoteError``. It makes one
      attempt, never retries, and is safe to call from several threads at once.
    - ``endpoint`` names what answers (URL or Space, and API name), with no secret in it
      (``masking.mask_url``): it is shown in logs, ``/health`` and notes, and it is part of
      cache keys, so a change of service never serves another service's cut-outs.
    - ``max_side``: the longest side a photo is sent at (``REMOTE_MAX_SIDE``); also part of
      cache keys: a mask made from a smaller copy is not served once more detail is asked for.
    """

    name: str
    endpoint: str
    max_side: int

    def cutout(self, image: Image.Image) -> Image.Image: ...

    def close(self) -> None: ...
