"""The training loop: seeded, checkpointed, resumable, with a progress bar and validation."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from imaging import SCALE, StoredCodec
from models.archs import build_model
from models.engine import resolve_device
from trainer.data import Pair, PatchSampler, load_pairs
from trainer.metrics import plane_psnr

VALIDATION_CROP = 64  # low-resolution pixels per side of each validation crop


@dataclass(frozen=True)
class TrainConfig:
    model: str
    data: Path
    val: Path
    run_dir: Path
    steps: int = 20_000
    batch: int = 16
    patch: int = 96
    lr: float = 1e-3
    loss: Literal["l1", "mse"] = "l1"
    schedule: Literal["cosine", "step"] = "cosine"
    seed: int = 0
    threads: int = 2
    validate_every: int = 500
    checkpoint_every: int = 1000
    codec: StoredCodec = field(default_factory=StoredCodec)
    init_weights: Path | None = None  # fine-tune from these weights instead of from scratch


@dataclass
class History:
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_psnr: list[float] = field(default_factory=list)
    bicubic_val_psnr: float = 0.0  # the same crops upscaled bicubically: the line to beat
    seconds: float = 0.0


def validation_crops(pairs: list[Pair]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A centre crop of every validation photo: fast to score, the same every time."""
    crops = []
    for pair in pairs:
        h, w = pair.low.shape
        size = min(VALIDATION_CROP, h, w)
        y, x = (h - size) // 2, (w - size) // 2
        low = pair.low[y : y + size, x : x + size]
        high = pair.high[SCALE * y : SCALE * (y + size), SCALE * x : SCALE * (x + size)]
        crops.append((_plane(low), _plane(high)))
    return crops


def _plane(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.float32) / 255.0)[None, None]


def bicubic_baseline(crops: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    scores = [
        plane_psnr(
            F.interpolate(low, scale_factor=SCALE, mode="bicubic", align_corners=False), high
        )
        for low, high in crops
    ]
    return float(np.mean(scores))


@torch.inference_mode()
def validate(model: nn.Module, crops: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean PSNR of the crops, each edge-padded as production pads a tile."""
    model.eval()
    device = next(model.parameters()).device
    margin = int(getattr(model, "receptive_radius", 0))
    scores = []
    for low, high in crops:
        padded = F.pad(low, (margin,) * 4, mode="replicate").to(device)
        scores.append(plane_psnr(_interior(model(padded), SCALE * margin).cpu(), high))
    model.train()
    return float(np.mean(scores))


def _scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps, config.lr / 100)
    return torch.optim.lr_scheduler.StepLR(optimizer, max(1, config.steps // 3), 0.1)


def train(config: TrainConfig, resume: Path | None = None) -> tuple[nn.Module, History]:
    """Train from scratch, or from ``resume``; checkpoints land in ``config.run_dir``."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    device = resolve_device("auto")
    sampler = PatchSampler(load_pairs(config.data, config.codec), config.patch, config.seed)
    crops = validation_crops(load_pairs(config.val, config.codec))
    model = _initial_model(config).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = _scheduler(optimizer, config)
    criterion = nn.L1Loss() if config.loss == "l1" else nn.MSELoss()
    history, start = History(), 0
    if resume is not None:
        start, history = _restore(resume, model, optimizer, scheduler, sampler)
    history.bicubic_val_psnr = bicubic_baseline(crops)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm  # the train extra; `srstore train --help` works without it

    clock = time.perf_counter()
    progress = tqdm(
        range(start, config.steps), initial=start, total=config.steps, desc=config.model
    )
    margin = SCALE * int(getattr(model, "receptive_radius", 0))
    if config.patch <= 2 * margin:
        raise ValueError(f"the patch must be wider than {2 * margin}, the {config.model} rim")
    for step in progress:
        low, high = sampler.batch(config.batch)
        loss = criterion(
            _interior(model(low.to(device)), margin), _interior(high, margin).to(device)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        history.steps.append(step + 1)
        history.losses.append(loss.item())
        if (step + 1) % config.validate_every == 0 or step + 1 == config.steps:
            history.val_steps.append(step + 1)
            history.val_psnr.append(validate(model, crops))
            progress.set_postfix(
                loss=f"{history.losses[-1]:.4f}", val_psnr=f"{history.val_psnr[-1]:.2f}"
            )
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            now = time.perf_counter()
            history.seconds, clock = history.seconds + now - clock, now
            _checkpoint(
                config.run_dir / "checkpoint.pt",
                step + 1,
                model,
                optimizer,
                scheduler,
                sampler,
                history,
            )
    return model.cpu().eval(), history


def _initial_model(config: TrainConfig) -> nn.Module:
    if config.init_weights is None:
        return build_model(config.model)
    state = torch.load(config.init_weights, map_location="cpu", weights_only=True)
    model = build_model(config.model, state)
    model.load_state_dict(state)
    return model


def _interior(batch: torch.Tensor, margin: int) -> torch.Tensor:
    """Drop the rim whose receptive field reaches past the patch into zero padding.

    Production never sees that rim (tiles carry margins), so training on it would spend the
    small network's capacity on a case that does not occur.
    """
    return batch[..., margin:-margin, margin:-margin] if margin else batch


def _checkpoint(
    path: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    sampler: PatchSampler,
    history: History,
) -> None:
    torch.save(
        {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "sampler_rng": json.dumps(sampler.rng.bit_generator.state),
            "history": json.dumps(asdict(history)),
        },
        path,
    )


def _restore(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    sampler: PatchSampler,
) -> tuple[int, History]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    sampler.rng.bit_generator.state = json.loads(state["sampler_rng"])
    return int(state["step"]), History(**json.loads(state["history"]))
