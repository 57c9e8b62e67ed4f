"""Device choice and batched prediction of tiles. Nothing else.

The predictor turns RGB uint8 tiles into per-class probabilities with any
segmenter that follows :mod:`smearscan.models.base`. On CUDA it runs under
``torch.inference_mode`` with automatic mixed precision (fp16/bf16 autocast)
and pinned, non-blocking host-to-device copies; on CPU in float32, with
convolutional networks in the channels-last memory layout (measured 1.4-2x
faster on this project's U-Nets with the oneDNN kernels of the CPU build).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from smearscan.errors import ConfigError, ModelError
from smearscan.models.base import ModelSpec

log = logging.getLogger(__name__)


def choose_device(requested: str) -> torch.device:
    """Resolve ``auto|cpu|cuda`` to a torch device.

    Raises:
        ConfigError: ``cuda`` was asked for and no CUDA device is usable.
    """
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was given but no CUDA device is available; use --device cpu or auto"
        )
    if requested not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {requested!r}; use auto, cpu or cuda")
    return torch.device(requested)


def input_affine(spec: ModelSpec, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)``, float32 ``(1, 3, 1, 1)``: ``x * scale + shift == (x/255-mean)/std``.

    This is the normalisation of :class:`ModelSpec` as one fused multiply-add on
    uint8 RGB values (training and inference share it).
    """
    std = torch.tensor(spec.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return 1.0 / (255.0 * std), -mean / std


class TilePredictor:
    """Run a segmenter on batches of tiles.

    Args:
        model: A segmenter module with a ``spec`` (:class:`ModelSpec`).
        device: Where to run it.
        batch_size: Tiles per forward pass.
        amp: Use autocast on CUDA (bf16 where supported, else fp16).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        *,
        batch_size: int = 8,
        amp: bool = True,
    ) -> None:
        spec = getattr(model, "spec", None)
        if not isinstance(spec, ModelSpec):
            raise ModelError(f"{type(model).__name__} has no ModelSpec attribute 'spec'")
        self.spec: ModelSpec = spec
        self.device = device
        self.batch_size = batch_size
        self.amp = amp and device.type == "cuda"
        self.model = model.to(device).eval()
        self.channels_last = device.type == "cpu" and any(
            isinstance(m, torch.nn.Conv2d) for m in self.model.modules()
        )
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._scale, self._shift = input_affine(spec, device)
        self._amp_dtype = (
            torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        )

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        """Predict class probabilities for tiles.

        Args:
            tiles: RGB uint8 array ``(N, Th, Tw, 3)`` at the model's input scale.

        Returns:
            float32 array ``(N, C, Th, Tw)``: probabilities summing to 1 over ``C``.
        """
        if tiles.ndim != 4 or tiles.shape[-1] != 3 or tiles.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 (N, Th, Tw, 3) tiles, got {tiles.dtype} {tiles.shape}"
            )
        out = [
            self._predict_batch(tiles[i : i + self.batch_size])
            for i in range(0, len(tiles), self.batch_size)
        ]
        if len(out) == 1:  # the usual case: one batch, no copy
            return out[0]
        if not out:
            return np.zeros((0, self.spec.n_classes, *tiles.shape[1:3]), dtype=np.float32)
        return np.concatenate(out, axis=0)

    def _predict_batch(self, batch: np.ndarray) -> np.ndarray:
        host = torch.from_numpy(np.ascontiguousarray(batch))
        if self.device.type == "cuda":
            host = host.pin_memory()
        with torch.inference_mode():
            x = host.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
            if self.spec.input == "normalized":
                x = torch.addcmul(self._shift, x.float(), self._scale)
            layout = torch.channels_last if self.channels_last else torch.contiguous_format
            x = x.contiguous(memory_format=layout)
            with torch.autocast(
                device_type=self.device.type, dtype=self._amp_dtype, enabled=self.amp
            ):
                y = self.model(x)
            y = y.float()
            if y.shape[1] != self.spec.n_classes or y.shape[2:] != x.shape[2:]:
                raise ModelError(
                    f"model {self.spec.name} returned shape {tuple(y.shape)} for input "
                    f"{tuple(x.shape)}; expected (N, {self.spec.n_classes}, H, W)"
                )
            if self.spec.output == "logits":
                y = torch.softmax(y, dim=1)
            return y.cpu().contiguous().numpy()
