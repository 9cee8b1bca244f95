"""srstore train / python -m trainer: build the corpus, train a model, evaluate weights.

A training run writes its checkpoint, weights, card and plots into a new run folder
(runs/<UTC time>-<model>) unless told otherwise, and never replaces an existing weight file
without --force: the shipped weights in models/weights change only on purpose.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

from imaging import StoredCodec
from models.engine import NeuralUpscaler
from models.weights import load_model, weights_path
from trainer import corpus
from trainer.data import image_paths
from trainer.evaluate import evaluate, write_json
from trainer.train import TrainConfig

DEFAULT_MANIFEST = Path("trainer/corpus_manifest.json")
RUNS_DIR = Path("runs")
TRAIN_EXTRA = ("matplotlib", "tqdm")  # what `pip install 'srstore[train]'` adds
_DEFAULTS = TrainConfig(model="espcn", data=Path(), val=Path(), run_dir=Path())
_HELP = {
    "steps": "optimizer steps in all",
    "batch": "patches per step",
    "patch": "high-resolution patch side, in pixels",
    "seed": "seed of the patch sampler and of the initial weights",
    "threads": "CPU threads of torch",
    "validate_every": "steps between validation passes",
    "checkpoint_every": "steps between checkpoints in the run folder",
}


class CommandError(Exception):
    """A mistake in the command line that the parser cannot see; reported in one line."""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default in --help (unless it has none), and the description's breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _codec_arguments(parser: argparse.ArgumentParser) -> None:
    default = StoredCodec()
    parser.add_argument(
        "--stored-codec",
        default=default.name,
        choices=["jpeg", "webp", "webp-lossless", "png"],
        help="the service's SRSTORE_STORED_CODEC (train on what it stores)",
    )
    parser.add_argument(
        "--stored-quality",
        type=int,
        default=default.quality,
        help="the service's SRSTORE_STORED_QUALITY (lossy codecs)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srstore train", description=__doc__, formatter_class=_Formatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser(
        "corpus",
        help="assemble photos from Debian wallpaper packages",
        formatter_class=_Formatter,
    )
    build.add_argument(
        "--cache", type=Path, default=Path("corpus/.debs"), help="where the .deb files are kept"
    )
    build.add_argument("--out", type=Path, default=Path("corpus"), help="train/ and val/ go here")
    build.add_argument(
        "--manifest", type=Path, default=DEFAULT_MANIFEST, help="the corpus manifest to write"
    )

    fit = commands.add_parser(
        "train",
        help="train a model and write weights, card and plots",
        description="Train a model; weights, card, plots and checkpoint go into the run folder.",
        formatter_class=_Formatter,
    )
    fit.add_argument(
        "--model", choices=["espcn", "srcnn"], default="espcn", help="the network to train"
    )
    fit.add_argument(
        "--data",
        type=Path,
        default=Path("corpus/train"),
        help="a folder of high-resolution images (any photos: DIV2K, your own)",
    )
    fit.add_argument(
        "--val", type=Path, default=Path("corpus/val"), help="a folder of validation images"
    )
    fit.add_argument(
        "--run-dir",
        type=Path,
        help="the run folder: checkpoint, and by default weights, card and plots "
        f"(default: a new {RUNS_DIR}/<UTC time>-<model>)",
    )
    fit.add_argument(
        "--weights-dir",
        type=Path,
        help="where the weight file and its card go (default: the run folder; "
        "models/weights to ship them, with --force to replace a version)",
    )
    fit.add_argument(
        "--report-dir",
        type=Path,
        help="where the curves PNG and the comparison sheet go (default: the run folder)",
    )
    fit.add_argument("--version", type=int, default=1, help="version number of the weights")
    fit.add_argument(
        "--force", action="store_true", help="replace an existing weight file and its card"
    )
    fit.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint in --run-dir (which must then be given)",
    )
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
        fit.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=getattr(_DEFAULTS, name),
            help=_HELP[name],
        )
    fit.add_argument("--lr", type=float, default=_DEFAULTS.lr, help="Adam's learning rate")
    fit.add_argument(
        "--loss", choices=["l1", "mse"], default=_DEFAULTS.loss, help="the training loss"
    )
    fit.add_argument(
        "--schedule",
        choices=["cosine", "step"],
        default=_DEFAULTS.schedule,
        help="the learning-rate schedule",
    )
    _codec_arguments(fit)

    check = commands.add_parser(
        "evaluate", help="PSNR/SSIM of a model and of bicubic", formatter_class=_Formatter
    )
    check.add_argument(
        "--model", choices=["espcn", "srcnn"], required=True, help="the weights' network"
    )
    check.add_argument("--weights", type=Path, required=True, help="a weight file (.pt)")
    check.add_argument(
        "--version",
        type=int,
        help="the version the table names (default: its card's, or the file name's -vN)",
    )
    check.add_argument(
        "--data", type=Path, default=Path("corpus/val"), help="a folder of validation images"
    )
    check.add_argument("--json", type=Path, help="also write the table as JSON")
    _codec_arguments(check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except CommandError as exc:
        print(f"srstore train: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "corpus":
        entries = corpus.build(args.cache, args.out)
        corpus.write_manifest(entries, args.manifest)
        print(f"{len(entries)} photos in {args.out} (manifest {args.manifest})")
        return 0
    codec = StoredCodec(args.stored_codec, args.stored_quality)
    if args.command == "evaluate":
        _photos_in(args.data, "--data")
        if not args.weights.is_file():
            raise CommandError(f"{args.weights}: no such weight file")
        version = args.version if args.version is not None else _version_of(args.weights)
        upscaler = NeuralUpscaler(
            load_model(args.model, args.weights), args.model, version, torch.device("cpu")
        )
        evaluation = evaluate(upscaler, args.data, codec)
        print(evaluation.table())
        if args.json:
            write_json(evaluation, args.json)
        return 0
    return _train(args, codec)


def _photos_in(folder: Path, option: str) -> None:
    """Stop in one line, saying what to run first, when there is nothing to read."""
    if image_paths(folder):
        return
    state = "has no images" if folder.is_dir() else "does not exist"
    first = "run `srstore train corpus` first, or " if folder.parts[:1] == ("corpus",) else ""
    raise CommandError(f"{folder} {state}: {first}pass {option} a folder of photos")


def _version_of(weights: Path) -> int:
    """The version in the card beside the weights, else in their file name (``-v2.pt``)."""
    card = weights.with_suffix(".json")
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        return int(json.loads(card.read_text())["version"])
    named = re.search(r"-v(\d+)\.pt$", weights.name)
    if named is None:
        raise CommandError(f"no card beside {weights} and no -vN in its name: pass --version")
    return int(named[1])


def _train(args: argparse.Namespace, codec: StoredCodec) -> int:
    missing = [name for name in TRAIN_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise CommandError(f"training needs {', '.join(missing)}: pip install 'srstore[train]'")
    _photos_in(args.data, "--data")
    _photos_in(args.val, "--val")
    from trainer import report
    from trainer.train import train

    if args.resume and args.run_dir is None:
        raise CommandError("--resume continues a run: name its folder with --run-dir")
    run_dir = args.run_dir or RUNS_DIR / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{args.model}"
    weights_dir = args.weights_dir or run_dir
    report_dir = args.report_dir or run_dir
    target = weights_path(weights_dir, args.model, args.version)
    if target.exists() and not args.force:
        raise CommandError(f"{target} exists: pass --force to replace it, or another --version")
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
    report_dir.mkdir(parents=True, exist_ok=True)
    report.plot_curves(history, report_dir / f"{args.model}-curves.png")
    report.comparison_sheet(upscaler, args.val, codec, report_dir / f"{args.model}-sheet.jpg")
    weights_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), target)
    manifest = DEFAULT_MANIFEST if args.data == Path("corpus/train") else None
    card = report.model_card(args.model, args.version, model, config, history, evaluation, manifest)
    report.write_card(card, target.with_suffix(".json"))
    print(f"wrote {target} and its card")
    return 0
