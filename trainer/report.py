"""What a training run leaves beside its weights: curves, a comparison sheet, a model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from torch import nn

from imaging import StoredCodec, bicubic_upscale, degrade
from models.engine import Upscaler
from trainer.data import image_paths
from trainer.evaluate import Evaluation, crop_to_scale
from trainer.train import History, TrainConfig


def plot_curves(history: History, path: Path) -> None:
    import matplotlib  # the train extra, imported only when a run draws its curves

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, psnr_axis) = plt.subplots(1, 2, figsize=(11, 4))
    window = max(1, len(history.losses) // 200)
    smoothed = [
        sum(history.losses[i : i + window]) / window
        for i in range(0, len(history.losses) - window + 1, window)
    ]
    loss_axis.plot(history.steps[window - 1 :: window][: len(smoothed)], smoothed)
    loss_axis.set(title="training loss", xlabel="step", ylabel="loss", yscale="log")
    psnr_axis.plot(history.val_steps, history.val_psnr, marker=".", label="model")
    psnr_axis.axhline(history.bicubic_val_psnr, color="grey", linestyle="--", label="bicubic")
    psnr_axis.set(title="validation PSNR (luma, centre crops)", xlabel="step", ylabel="dB")
    values = [*history.val_psnr, history.bicubic_val_psnr]
    psnr_axis.set_ylim(min(values) - 0.2, max(values) + 0.2)
    psnr_axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def comparison_sheet(
    upscaler: Upscaler, folder: Path, codec: StoredCodec, path: Path, crop: int = 160
) -> None:
    """Rows of bicubic | model | original, centre crops of validation photos, as JPEG."""
    rows = []
    for photo_path in image_paths(folder)[:4]:
        photo = crop_to_scale(Image.open(photo_path).convert("RGB"))
        stored = degrade(photo, codec)
        left, top = (photo.width - crop) // 2 // 4 * 4, (photo.height - crop) // 2 // 4 * 4
        box = (left, top, left + crop, top + crop)
        low = stored.crop((left // 4, top // 4, (left + crop) // 4, (top + crop) // 4))
        rows.append([bicubic_upscale(low), upscaler.upscale(low), photo.crop(box)])
    scale, label_height = 2, 18
    sheet = Image.new("RGB", (3 * crop * scale, label_height + len(rows) * crop * scale), "white")
    draw = ImageDraw.Draw(sheet)
    for column, title in enumerate(("bicubic", upscaler.label, "original")):
        draw.text((column * crop * scale + 4, 3), title, fill="black")
    for row, images in enumerate(rows):
        for column, image in enumerate(images):
            enlarged = image.resize((crop * scale, crop * scale), Image.Resampling.NEAREST)
            sheet.paste(enlarged, (column * crop * scale, label_height + row * crop * scale))
    sheet.save(path, "JPEG", quality=85)


def macs_per_output_pixel(model: nn.Module, low_side: int = 16) -> float:
    """Convolution multiply-adds per output pixel, counted from the layer shapes."""
    total = 0

    def count(module: nn.Module, _: object, output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        kernel = module.kernel_size[0] * module.kernel_size[1]
        per_output = module.in_channels // module.groups * kernel
        total += output.numel() * per_output

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        out = model(torch.zeros(1, 1, low_side, low_side))
    for hook in hooks:
        hook.remove()
    return total / (out.shape[-1] * out.shape[-2])


def model_card(
    name: str,
    version: int,
    model: nn.Module,
    config: TrainConfig,
    history: History,
    evaluation: Evaluation,
    manifest: Path | None,
) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "scale": 4,
        "architecture": _ARCHITECTURES[name],
        "parameters": sum(p.numel() for p in model.parameters()),
        "macs_per_output_pixel": round(macs_per_output_pixel(model), 1),
        "stored_codec": {"name": config.codec.name, "quality": config.codec.quality},
        "training": {
            "data": str(config.data),
            "validation": str(config.val),
            "manifest": str(manifest) if manifest else None,
            "init_weights": str(config.init_weights) if config.init_weights else None,
            "steps": config.steps,
            "batch": config.batch,
            "patch": config.patch,
            "lr": config.lr,
            "loss": config.loss,
            "schedule": config.schedule,
            "seed": config.seed,
            "threads": config.threads,
            "device": str(next(model.parameters()).device),
            "wall_clock_seconds": round(history.seconds, 1),
            "torch": torch.__version__,
        },
        "evaluation": evaluation.to_json(),
    }


def write_card(card: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(card, indent=2) + "\n")


_ARCHITECTURES = {
    "espcn": (
        "ESPCN (Shi et al. 2016): conv 5x5x64, PReLU, conv 3x3x32, PReLU, conv 3x3x16, "
        "pixel shuffle x4, on the Y channel, plus a global bicubic skip (the network learns "
        "the residual over bicubic); chroma is upscaled bicubically. The paper's tanh is "
        "replaced by PReLU, as in FSRCNN (Dong et al. 2016)."
    ),
    "srcnn": (
        "SRCNN 9-1-5 (Dong et al. 2014): conv 9x9x64, ReLU, conv 1x1x32, ReLU, conv 5x5x1 on "
        "the bicubic-upscaled Y channel, plus a global skip (the network learns the residual "
        "over bicubic); chroma is upscaled bicubically."
    ),
}
