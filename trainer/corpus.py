"""A reproducible corpus of real photographs from Debian's wallpaper packages.

Packages are fetched with ``apt-get download`` and unpacked with ``dpkg -x``; a fixed list of
photographs is taken from them, and whole images are split into train and validation by a
hash of their path, so the validation photos are never trained on.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

PACKAGES = (
    "plasma-workspace-wallpapers",
    "mate-backgrounds",
    "ukui-wallpapers",
    "lomiri-wallpapers-20.04",
    "lomiri-wallpapers-16.04",
)
SUFFIXES = {".jpg", ".jpeg", ".png"}
MAX_PIXELS = 2_000_000
VALIDATION_IMAGES = 8
# Chosen by eye from a contact sheet of every image in the packages: camera photographs only.
# The packages' renders, gradients and illustrations are left out, since they would teach the
# network flat colour and hard synthetic edges rather than photographic texture.
PHOTOGRAPHS = (
    "usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg",
    "usr/share/backgrounds/Dragonfly_by_Bolly.jpg",
    "usr/share/backgrounds/Infinite-Sea_by_Aury88.jpg",
    "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg",
    "usr/share/backgrounds/Picture_0B_by_freespace.jpg",
    "usr/share/backgrounds/Picture_1A_by_freespace.jpg",
    "usr/share/backgrounds/Wine_by_Jakkub_Mede.jpg",
    "usr/share/backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg",
    "usr/share/backgrounds/analogpattern_by_Peter_Nerlich.jpg",
    "usr/share/backgrounds/free_by_Peter_Nerlich.jpg",
    "usr/share/backgrounds/friends_by_Aitzol_Berasategi.jpg",
    "usr/share/backgrounds/greentock_by_Peter_Nerlich.jpg",
    "usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg",
    "usr/share/backgrounds/mate/nature/Aqua.jpg",
    "usr/share/backgrounds/mate/nature/Blinds.jpg",
    "usr/share/backgrounds/mate/nature/Dune.jpg",
    "usr/share/backgrounds/mate/nature/FreshFlower.jpg",
    "usr/share/backgrounds/mate/nature/Garden.jpg",
    "usr/share/backgrounds/mate/nature/GreenMeadow.jpg",
    "usr/share/backgrounds/mate/nature/LadyBird.jpg",
    "usr/share/backgrounds/mate/nature/RainDrops.jpg",
    "usr/share/backgrounds/mate/nature/Storm.jpg",
    "usr/share/backgrounds/mate/nature/TwoWings.jpg",
    "usr/share/backgrounds/mate/nature/Wood.jpg",
    "usr/share/backgrounds/mate/nature/YellowFlower.jpg",
    "usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg",
    "usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg",
    "usr/share/backgrounds/sunset_by_Aitzol_Berasategi.jpg",
    "usr/share/wallpapers/BytheWater/contents/images/1280x1024.jpg",
    "usr/share/wallpapers/ColdRipple/contents/images/1280x1024.jpg",
    "usr/share/wallpapers/ColorfulCups/contents/images/2560x1600.jpg",
    "usr/share/wallpapers/DarkestHour/contents/images/1280x1024.jpg",
    "usr/share/wallpapers/EveningGlow/contents/images/1280x1024.jpg",
    "usr/share/wallpapers/FallenLeaf/contents/images/1280x1024.jpg",
    "usr/share/wallpapers/Grey/contents/images/1280x1024.jpg",
    "usr/share/wallpapers/Kite/contents/images/1280x1024.jpg",
    "usr/share/wallpapers/OneStandsOut/contents/images/1280x1024.jpg",
    "usr/share/wallpapers/Path/contents/images/1280x1024.jpg",
)


@dataclass(frozen=True)
class CorpusImage:
    package: str
    path: str
    sha256: str
    split: str
    width: int
    height: int


def fetch_packages(cache: Path, packages: tuple[str, ...] = PACKAGES) -> Path:
    """Download and unpack the packages into ``cache/root`` (skipped when already there)."""
    root = cache / "root"
    cache.mkdir(parents=True, exist_ok=True)
    for package in packages:
        if not list(cache.glob(f"{package}_*.deb")):
            subprocess.run(["apt-get", "download", "-q", package], cwd=cache, check=True)
        (deb,) = cache.glob(f"{package}_*.deb")
        marker = cache / f".{deb.name}.unpacked"
        if not marker.exists():
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
            marker.touch()
    return root


def validation_set(paths: tuple[str, ...] = PHOTOGRAPHS) -> set[str]:
    """The same whole photos every time: the first few by a hash of their path."""
    ranked = sorted(paths, key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    return set(ranked[:VALIDATION_IMAGES])


def build(cache: Path, out: Path) -> list[CorpusImage]:
    """Write ``out/train`` and ``out/val`` as PNG (at most 2 MP) and return the manifest."""
    root = fetch_packages(cache)
    validation = validation_set()
    entries = []
    for relative in PHOTOGRAPHS:
        path = root / relative
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        image = Image.open(path).convert("RGB")
        if image.width * image.height > MAX_PIXELS:
            scale = (MAX_PIXELS / (image.width * image.height)) ** 0.5
            size = (round(image.width * scale), round(image.height * scale))
            image = image.resize(size, Image.Resampling.LANCZOS)
        split = "val" if relative in validation else "train"
        target = out / split / f"{Path(relative).stem}-{digest[:8]}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, compress_level=1)
        entries.append(CorpusImage(_package_of(relative), relative, digest, split, *image.size))
    return entries


def _package_of(relative: str) -> str:
    if relative.startswith("usr/share/backgrounds/mate"):
        return "mate-backgrounds"
    if relative.startswith("usr/share/wallpapers"):
        return "plasma-workspace-wallpapers"
    return "ukui-wallpapers or lomiri-wallpapers"


def write_manifest(entries: list[CorpusImage], path: Path) -> None:
    path.write_text(json.dumps([asdict(e) for e in entries], indent=1) + "\n")
