"""int8 networks on CPUs with VNNI: PyTorch's PT2E quantization, lowered by inductor to oneDNN.

Quantizing every layer cost 0.07 dB of Y-PSNR on the held-out photos and 0.1 dB on the canary
set (a third of ESPCN's gain over bicubic there): the last convolution's output is the
residual added to bicubic, and 8 bits are too coarse for it, so that layer (and the bicubic
skip) stays float32. Activations are calibrated on the canary crops, which ship with the
weights. An int8 ESPCN tile costs 30% less CPU than the compiled float32 one on the Intel
Xeon, but on the worst held-out photo it loses 0.059 dB (0.050 calibrated on 60 training
tiles, which do not ship), past the 0.05 dB a quality receipt may move, so ESPCN's int8 is
opt-in (``SRSTORE_INT8=all``; bench/RESULTS.md, issue 27). The result must agree with
float32 to :data:`MIN_AGREEMENT_DB` on the calibration tiles before it serves. The
quantized graph has a fixed batch of one tile (a dynamic batch does not lower with frozen
weights in this torch), so a batch runs tile by tile: on the CPU batching saves little per
tile anyway. SRCNN, its last layer in float32 too, stays within 0.03 dB on every photo and
is served in int8 by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from models.compiling import Forward

INT8_PAYS: dict[str, tuple[str, ...]] = {"espcn": ("body.4", "skip"), "srcnn": ("body.4",)}
"""Architectures that have an int8 form, with the layers kept in float32."""

INT8_BY_DEFAULT = frozenset({"srcnn"})
"""Those whose int8 form stayed within 0.05 dB of float32 on every held-out photo: SRCNN
(1.8x less CPU per tile; 0.006 dB less on average, 0.025 dB on the worst photo)."""

MIN_AGREEMENT_DB = 45.0
"""Least PSNR of the int8 network's output against float32's, on [0, 1] pixel values."""


def has_vnni() -> bool:
    """Whether the CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX)."""
    check = getattr(torch.cpu, "_is_vnni_supported", None)
    return bool(check is not None and check())


class QuantizationMismatch(RuntimeError):
    """The int8 network strays further from float32 than :data:`MIN_AGREEMENT_DB` allows."""


def quantize_forward(
    model: nn.Module,
    name: str,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    calibration: list[torch.Tensor],
) -> Forward:
    """``model`` in int8 (bar :data:`INT8_PAYS`'s float layers), calibrated and compiled; a
    forward over any batch, run one tile at a time. Raises if it strays from float32."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    for layer in INT8_PAYS[name]:
        quantizer.set_module_name_qconfig(layer, None)
    samples = [prepare(tile) for tile in calibration]
    exported = torch.export.export(model, (samples[0],)).module()
    observed = prepare_pt2e(exported, quantizer)  # type: ignore[arg-type]
    with torch.no_grad():
        for sample in samples:
            observed(sample)
    compiled = torch.compile(convert_pt2e(observed))

    def forward(batch: torch.Tensor) -> torch.Tensor:
        # Inductor lowers int8 convolutions to oneDNN only with frozen weights. Its settings
        # are per thread and guarded (a call under other settings recompiles), so every call
        # of this graph, on whichever thread, runs with them; float networks never see them.
        with torch._inductor.config.patch(freezing=True):
            return torch.cat([compiled(tile) for tile in batch.split(1)])

    with torch.inference_mode():  # on inference tensors, as the engine's: guards check it
        served = [sample.clone() for sample in samples]
        agreement = _psnr(
            torch.cat([forward(s) for s in served]), torch.cat([model(s) for s in served])
        )
    if not agreement >= MIN_AGREEMENT_DB:
        raise QuantizationMismatch(f"int8 output is {agreement:.1f} dB from float32's")
    return forward


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    error = torch.mean((a - b) ** 2).item()
    return math.inf if error == 0 else 10 * math.log10(1 / error)
