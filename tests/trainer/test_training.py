"""The offline trainer: a smoke run learns, resumes, and yields weights the service loads."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import trainer.corpus
import trainer.train
from models.archs import ESPCN, build_model
from models.engine import NeuralUpscaler
from models.validation import load_checked
from models.weights import SHIPPED_WEIGHTS_DIR, load_model, weights_path
from trainer.cli import build_parser
from trainer.cli import main as train_cli
from trainer.corpus import PHOTOGRAPHS, VALIDATION_IMAGES, validation_set
from trainer.evaluate import Evaluation, ImageScore
from trainer.metrics import luma_psnr, luma_ssim
from trainer.report import macs_per_output_pixel, model_card
from trainer.train import TrainConfig, train

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small folders cut from the test photographs."""
    root = tmp_path_factory.mktemp("photos")
    for split, name in (("train", "flower.jpg"), ("val", "storm.jpg")):
        (root / split).mkdir()
        image = Image.open(DATA / name).convert("RGB")
        for index, box in enumerate([(0, 0, 200, 160), (300, 200, 500, 360)]):
            image.crop(box).save(root / split / f"{index}.png")
    return root


def smoke_config(photos: Path, run_dir: Path, steps: int) -> TrainConfig:
    return TrainConfig(
        model="espcn",
        data=photos / "train",
        val=photos / "val",
        run_dir=run_dir,
        steps=steps,
        batch=4,
        patch=48,
        lr=2e-3,
        threads=1,
        validate_every=10,
        checkpoint_every=10,
    )


@pytest.mark.slow
def test_a_smoke_training_lowers_the_loss(photos: Path, tmp_path: Path) -> None:
    _, history = train(smoke_config(photos, tmp_path, steps=40))

    assert np.mean(history.losses[-5:]) < np.mean(history.losses[:5])
    assert history.val_steps == [10, 20, 30, 40]
    assert (tmp_path / "checkpoint.pt").exists()


def test_a_patch_no_wider_than_the_networks_rim_is_refused(photos: Path, tmp_path: Path) -> None:
    config = dataclasses.replace(smoke_config(photos, tmp_path, steps=1), patch=32)

    with pytest.raises(ValueError, match="patch must be wider than 32"):
        train(config)


def test_fine_tuning_keeps_the_start_weights_variant_and_the_card_names_them(
    photos: Path, tmp_path: Path
) -> None:
    start = ESPCN(activation="tanh").state_dict()
    torch.save(start, tmp_path / "start.pt")
    config = dataclasses.replace(
        smoke_config(photos, tmp_path, steps=2), lr=0.0, init_weights=tmp_path / "start.pt"
    )

    model, history = train(config)
    score = ImageScore("0.png", 200, 160, 30.0, 31.0, 0.90, 0.91)
    card = model_card(
        "espcn", 2, model, config, history, Evaluation("espcn:2", "webp", [score]), None
    )

    assert model.activation == "tanh"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in start.items())
    assert card["training"]["init_weights"] == str(tmp_path / "start.pt")


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Model, optimiser, schedule and both random streams all come back from the checkpoint."""
    save = trainer.train._checkpoint

    def keeping_step_20(path: Path, step: int, *args: object) -> None:
        save(path, step, *args)  # type: ignore[arg-type]
        if step == 20:
            shutil.copy(path, tmp_path / "at-20.pt")

    monkeypatch.setattr(trainer.train, "_checkpoint", keeping_step_20)
    straight, full = train(smoke_config(photos, tmp_path / "straight", steps=30))

    resumed, history = train(
        smoke_config(photos, tmp_path / "resumed", steps=30), tmp_path / "at-20.pt"
    )

    assert history.steps == list(range(1, 31))
    assert history.losses == full.losses
    assert history.val_psnr == full.val_psnr
    for name, tensor in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name


class Payload:
    """Anything but tensors and plain containers: unpickling it could run code."""


def test_resuming_refuses_a_checkpoint_that_holds_more_than_tensors(
    photos: Path, tmp_path: Path
) -> None:
    torch.save({"step": 1, "model": Payload()}, tmp_path / "hostile.pt")

    with pytest.raises(pickle.UnpicklingError):
        train(smoke_config(photos, tmp_path / "run", steps=2), tmp_path / "hostile.pt")


@pytest.mark.slow
def test_the_command_writes_weights_the_service_loads_and_a_card(
    photos: Path, tmp_path: Path
) -> None:
    weights_dir, report_dir = tmp_path / "weights", tmp_path / "report"

    code = train_cli(
        [
            "train",
            "--model",
            "espcn",
            "--data",
            str(photos / "train"),
            "--val",
            str(photos / "val"),
            "--run-dir",
            str(tmp_path / "run"),
            "--weights-dir",
            str(weights_dir),
            "--report-dir",
            str(report_dir),
            "--steps",
            "12",
            "--batch",
            "2",
            "--patch",
            "48",
            "--validate-every",
            "6",
            "--checkpoint-every",
            "6",
            "--version",
            "7",
            "--threads",
            "1",
        ]
    )

    path = weights_path(weights_dir, "espcn", 7)
    assert code == 0
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["name"] == "espcn" and card["version"] == 7
    assert card["parameters"] == sum(p.numel() for p in build_model("espcn").parameters())
    assert len(card["evaluation"]["images"]) == 2
    assert (report_dir / "espcn-curves.png").exists() and (report_dir / "espcn-sheet.jpg").exists()
    upscaler = NeuralUpscaler(load_model("espcn", path), "espcn", 7, torch.device("cpu"))
    assert upscaler.upscale(Image.new("RGB", (13, 9))).size == (52, 36)
    load_checked("espcn", path.read_bytes())


def quick_run(photos: Path, *extra: str) -> list[str]:
    """A train command line that finishes in seconds."""
    return [
        "train",
        "--data",
        str(photos / "train"),
        "--val",
        str(photos / "val"),
        "--steps",
        "2",
        "--batch",
        "2",
        "--patch",
        "48",
        "--threads",
        "1",
        *extra,
    ]


def test_a_run_writes_into_a_new_run_folder_and_leaves_the_shipped_weights_alone(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = {p.name: p.read_bytes() for p in SHIPPED_WEIGHTS_DIR.iterdir()}
    monkeypatch.chdir(tmp_path)

    assert train_cli(quick_run(photos)) == 0

    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.endswith("-espcn")
    assert {p.name for p in run.iterdir()} == {
        "checkpoint.pt",
        "espcn-x4-v1.pt",
        "espcn-x4-v1.json",
        "espcn-curves.png",
        "espcn-sheet.jpg",
    }
    assert {p.name: p.read_bytes() for p in SHIPPED_WEIGHTS_DIR.iterdir()} == shipped


def test_an_existing_weight_file_is_replaced_only_with_force(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = weights_path(tmp_path, "espcn", 1)
    target.write_bytes(b"earlier weights")
    where = ["--run-dir", str(tmp_path / "run"), "--weights-dir", str(tmp_path)]

    refused = train_cli(quick_run(photos, *where))
    error = capsys.readouterr().err

    assert refused == 2
    assert error.startswith(f"srstore train: error: {target} exists: pass --force to replace it")
    assert target.read_bytes() == b"earlier weights"
    assert not (tmp_path / "run").exists(), "refused before any training"
    assert train_cli(quick_run(photos, *where, "--force")) == 0
    load_checked("espcn", target.read_bytes())


def test_resume_needs_the_run_folder_it_continues(
    photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train_cli(quick_run(photos, "--resume")) == 2
    assert "--resume continues a run: name its folder with --run-dir" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        # docs/training.md's commands, verbatim, on a clone without corpus/ yet
        "evaluate --model espcn --weights models/weights/espcn-x4-v2.pt --json espcn.json",
        "train --model espcn --version 2 --steps 50000 --batch 16 --patch 96 --lr 1e-3",
    ],
)
def test_the_documented_commands_say_what_to_run_first_without_a_corpus(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "models").symlink_to(SHIPPED_WEIGHTS_DIR.parent)
    monkeypatch.chdir(tmp_path)
    folder = "corpus/val" if command.startswith("evaluate") else "corpus/train"

    assert train_cli(command.split()) == 2
    assert capsys.readouterr().err == (
        f"srstore train: error: {folder} does not exist: run `srstore train corpus` first, "
        "or pass --data a folder of photos\n"
    )
    assert list(tmp_path.iterdir()) == [tmp_path / "models"], "nothing written"


def test_evaluate_names_the_version_of_the_weights_it_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = SHIPPED_WEIGHTS_DIR / "espcn-x4-v2.pt"
    unnamed = tmp_path / "latest.pt"
    shutil.copy(shipped, unnamed)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.open(DATA / "flower.jpg").crop((0, 0, 160, 120)).save(photos / "crop.png")

    assert (
        train_cli(
            ["evaluate", "--model", "espcn", "--weights", str(shipped), "--data", str(photos)]
        )
        == 0
    )
    from_card = capsys.readouterr().out.splitlines()[0]
    assert (
        train_cli(
            ["evaluate", "--model", "espcn", "--weights", str(unnamed), "--data", str(photos)]
        )
        == 2
    )
    refused = capsys.readouterr().err
    assert (
        train_cli(
            [
                "evaluate",
                "--model",
                "espcn",
                "--weights",
                str(unnamed),
                "--data",
                str(photos),
                "--version",
                "7",
            ]
        )
        == 0
    )
    given = capsys.readouterr().out.splitlines()[0]

    assert from_card.startswith("| image (espcn:2, stored as webp q90) |")
    assert refused.startswith(f"srstore train: error: no card beside {unnamed} and no -vN")
    assert given.startswith("| image (espcn:7, ")


def test_help_shows_every_default() -> None:
    (commands,) = [a for a in build_parser()._actions if a.choices]
    train_parser = commands.choices["train"]
    text = " ".join(train_parser.format_help().split())

    for action in train_parser._actions:
        if action.default not in (None, False, "==SUPPRESS=="):
            assert f"(default: {action.default})" in text, action.dest
    assert "(default: 20000)" in text and "(default: a new runs/<UTC time>-<model>)" in text


def test_help_works_without_the_train_extra() -> None:
    blocked = "import sys; sys.modules['matplotlib'] = sys.modules['tqdm'] = None; "
    run = [
        sys.executable,
        "-c",
        blocked + "from srstore.cli import main; sys.exit(main(sys.argv[1:]))",
    ]

    helped = subprocess.run([*run, "train", "--help"], capture_output=True, text=True)
    training = subprocess.run(
        [*run, "train", "train", "--steps", "1"], capture_output=True, text=True
    )

    assert helped.returncode == 0, helped.stderr
    assert "corpus" in helped.stdout and "evaluate" in helped.stdout
    assert training.returncode == 2
    assert training.stderr.strip() == (
        "srstore train: error: training needs matplotlib, tqdm: pip install 'srstore[train]'"
    )


def test_psnr_and_ssim_follow_the_standard_definitions() -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(20, 200, (40, 40, 3), dtype=np.uint8))
    brighter = Image.fromarray(np.asarray(image) + np.uint8(10))

    assert luma_psnr(image, image) == math.inf
    assert luma_ssim(image, image) == pytest.approx(1.0)
    # +10 on R, G and B moves studio-swing Y by 10 * 219 / 255 everywhere.
    assert luma_psnr(image, brighter) == pytest.approx(20 * math.log10(255 / (10 * 219 / 255)))
    assert luma_ssim(image, brighter) < 1.0


def test_espcn_costs_what_its_layer_shapes_say() -> None:
    per_low_pixel = 5 * 5 * 1 * 64 + 3 * 3 * 64 * 32 + 3 * 3 * 32 * 16

    assert macs_per_output_pixel(build_model("espcn")) == per_low_pixel / 16


def test_the_validation_photos_are_fixed_and_never_trained_on() -> None:
    validation = validation_set()

    assert len(validation) == VALIDATION_IMAGES
    assert validation == validation_set()
    assert validation < set(PHOTOGRAPHS)


def test_the_corpus_build_writes_every_validation_photo_to_val_and_none_to_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each source photo is told apart by its pixels, so a misplaced one is seen in the files."""
    root = tmp_path / "root"
    colour_of: dict[str, tuple[int, int, int]] = {}
    for index, relative in enumerate(PHOTOGRAPHS):
        colour_of[relative] = (index, 255 - index, (7 * index) % 256)
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 12), colour_of[relative]).save(root / relative, "PNG")
    monkeypatch.setattr(trainer.corpus, "fetch_packages", lambda cache: root)

    entries = trainer.corpus.build(tmp_path / "cache", tmp_path / "corpus")

    def colours(split: str) -> set[tuple[int, int, int]]:
        files = (tmp_path / "corpus" / split).glob("*.png")
        return {Image.open(path).convert("RGB").getpixel((0, 0)) for path in files}

    validation = validation_set()
    assert colours("val") == {colour_of[p] for p in validation}
    assert colours("train") == {colour_of[p] for p in PHOTOGRAPHS if p not in validation}
    assert {e.path for e in entries if e.split == "val"} == validation
    assert len(entries) == len(PHOTOGRAPHS)
