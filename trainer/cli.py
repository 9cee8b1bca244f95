"""``srstore train`` / ``python -m trainer``: corpus, train, evaluate."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from imaging import StoredCodec
from models.engine import NeuralUpscaler
from models.weights import SHIPPED_WEIGHTS_DIR, load_model, weights_path
from trainer import corpus, report
from trainer.evaluate import evaluate, write_json
from trainer.train import TrainConfig, train

DEFAULT_MANIFEST = Path("trainer/corpus_manifest.json")
_DEFAULTS = TrainConfig(model="espcn", data=Path(), val=Path(), run_dir=Path())


def _codec_arguments(parser: argparse.ArgumentParser) -> None:
    default = StoredCodec()
    parser.add_argument(
        "--stored-codec",
        default=default.name,
        choices=["jpeg", "webp", "webp-lossless", "png"],
        help="the service's SRSTORE_STORED_CODEC (train on what it stores)",
    )
    parser.add_argument("--stored-quality", type=int, default=default.quality)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srstore train", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("corpus", help="assemble photos from Debian wallpaper packages")
    build.add_argument("--cache", type=Path, default=Path("corpus/.debs"))
    build.add_argument("--out", type=Path, default=Path("corpus"))
    build.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)

    fit = commands.add_parser("train", help="train a model and write weights, card and plots")
    fit.add_argument("--model", choices=["espcn", "srcnn"], default="espcn")
    fit.add_argument(
        "--data",
        type=Path,
        default=Path("corpus/train"),
        help="a folder of high-resolution images (any photos: DIV2K, your own)",
    )
    fit.add_argument("--val", type=Path, default=Path("corpus/val"))
    fit.add_argument("--run-dir", type=Path, help="checkpoints and plots (default runs/MODEL)")
    fit.add_argument("--weights-dir", type=Path, default=SHIPPED_WEIGHTS_DIR)
    fit.add_argument(
        "--report-dir",
        type=Path,
        default=Path("docs/training"),
        help="where the curves PNG and the comparison sheet go",
    )
    fit.add_argument("--version", type=int, default=1)
    fit.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    fit.add_argument(
        "--init-weights", type=Path, help="fine-tune from a weight file (a shipped version, say)"
    )
    for name in (
        "steps",
        "batch",
        "patch",
        "seed",
        "threads",
        "validate_every",
        "checkpoint_every",
    ):
        fit.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(_DEFAULTS, name))
    fit.add_argument("--lr", type=float, default=_DEFAULTS.lr)
    fit.add_argument("--loss", choices=["l1", "mse"], default=_DEFAULTS.loss)
    fit.add_argument("--schedule", choices=["cosine", "step"], default=_DEFAULTS.schedule)
    _codec_arguments(fit)

    check = commands.add_parser("evaluate", help="PSNR/SSIM of a model and of bicubic")
    check.add_argument("--model", choices=["espcn", "srcnn"], required=True)
    check.add_argument("--weights", type=Path, required=True)
    check.add_argument("--data", type=Path, default=Path("corpus/val"))
    check.add_argument("--json", type=Path, help="also write the table as JSON")
    _codec_arguments(check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "corpus":
        entries = corpus.build(args.cache, args.out)
        corpus.write_manifest(entries, args.manifest)
        print(f"{len(entries)} photos in {args.out} (manifest {args.manifest})")
        return 0
    codec = StoredCodec(args.stored_codec, args.stored_quality)
    if args.command == "evaluate":
        upscaler = NeuralUpscaler(
            load_model(args.model, args.weights), args.model, 0, torch.device("cpu")
        )
        evaluation = evaluate(upscaler, args.data, codec)
        print(evaluation.table())
        if args.json:
            write_json(evaluation, args.json)
        return 0
    return _train(args, codec)


def _train(args: argparse.Namespace, codec: StoredCodec) -> int:
    run_dir = args.run_dir or Path("runs") / args.model
    config = TrainConfig(
        model=args.model,
        data=args.data,
        val=args.val,
        run_dir=run_dir,
        steps=args.steps,
        batch=args.batch,
        patch=args.patch,
        lr=args.lr,
        loss=args.loss,
        schedule=args.schedule,
        seed=args.seed,
        threads=args.threads,
        validate_every=args.validate_every,
        checkpoint_every=args.checkpoint_every,
        codec=codec,
        init_weights=args.init_weights,
    )
    checkpoint = run_dir / "checkpoint.pt"
    model, history = train(config, checkpoint if args.resume and checkpoint.exists() else None)
    upscaler = NeuralUpscaler(model, args.model, args.version, torch.device("cpu"))
    evaluation = evaluate(upscaler, args.val, codec)
    print(evaluation.table())
    args.report_dir.mkdir(parents=True, exist_ok=True)
    report.plot_curves(history, args.report_dir / f"{args.model}-curves.png")
    report.comparison_sheet(upscaler, args.val, codec, args.report_dir / f"{args.model}-sheet.jpg")
    args.weights_dir.mkdir(parents=True, exist_ok=True)
    target = weights_path(args.weights_dir, args.model, args.version)
    torch.save(model.state_dict(), target)
    manifest = DEFAULT_MANIFEST if args.data == Path("corpus/train") else None
    card = report.model_card(args.model, args.version, model, config, history, evaluation, manifest)
    report.write_card(card, target.with_suffix(".json"))
    print(f"wrote {target} and its card")
    return 0
