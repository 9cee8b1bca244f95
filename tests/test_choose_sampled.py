"""``policy.choose`` on a sampled image: where each search ends, what it costs, what it records.

An image over ``WHOLE_IMAGE_PIXELS`` is scored on a sample of tiles, and its candidates are
first tried on a mosaic of those tiles; only what the trials favour is read at full size (see
``policy.choose``). At the service's geometry (256-px tiles above 2.5 MP) a case takes seconds
to minutes, and ``test_quality.py`` runs a few. Here the geometry is shrunk (64-px tiles with
16 px of context, above 0.5 MP), so a 960x720 photo is sampled on 20 tiles and a case takes
about a second: fast enough to run against every mutant of ``policy/choose.py``. The read
path is ``test_choose.py``'s: a full-size copy decoded, an x4 copy enlarged bicubically.

The costs are today's, exactly: a change to what a search costs, dearer or cheaper, fails
here, so it is made on purpose and its figures are changed with it.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field

import pytest
from PIL import Image

import imaging.quality
import policy.choose
from imaging import downscale, encode_full
from imaging.quality import Reference, tile_mosaic
from policy import Decision, Floor, Representation, StoragePolicy
from policy.choose import (
    CLEAR_FAILURE,
    COARSE_STRIDE,
    FULL_SIZE_READS,
    LOWEST_QUALITY,
    Mosaic,
    choose,
)
from tests.test_choose import scored
from tests.test_quality import DATA, captioned, codec_read

SIZE = (960, 720)
TILES = 20  # what the shrunk geometry samples of SIZE
MOSAIC_PIXELS = 480 * 384  # their mosaic: 5 x 4 tiles of 64 px, each with 16 px of context


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imaging.quality, "WHOLE_IMAGE_PIXELS", 500_000)
    monkeypatch.setattr(imaging.quality, "TILE", 64)
    monkeypatch.setattr(imaging.quality, "TILE_MARGIN", 16)


@dataclass(frozen=True)
class Upload:
    image: Image.Image  # the upload decoded
    original: bytes  # a JPEG q95

    @classmethod
    def of(cls, image: Image.Image) -> Upload:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=95)
        original = buffer.getvalue()
        return cls(Image.open(io.BytesIO(original)).convert("RGB"), original)

    @property
    def x4(self) -> bytes:
        return encode_full(downscale(self.image), "webp", 90)  # the default stored copy


@pytest.fixture(scope="module")
def photo() -> Upload:
    image = Image.open(DATA / "garden.jpg").convert("RGB")
    return Upload.of(image.resize(SIZE, Image.Resampling.LANCZOS))


@pytest.fixture(scope="module")
def text() -> Upload:
    """Lines of small text over the photo: its x4 copy fails any useful floor clearly."""
    image = Image.open(DATA / "garden.jpg").convert("RGB")
    return Upload.of(captioned(image.resize(SIZE, Image.Resampling.LANCZOS)))


@dataclass
class Costs:
    """What a decision read: full-size reads and trials on a mosaic, by representation, and
    the pixels of those trials (a trial on the coarse mosaic reads fewer than on the whole)."""

    reads: Counter[str] = field(default_factory=Counter)
    trials: Counter[str] = field(default_factory=Counter)
    trial_pixels: int = 0


def decide(
    upload: Upload, policy: StoragePolicy, floor: str, codec: str = "avif"
) -> tuple[Decision, Costs]:
    costs = Costs()
    read = codec_read(*upload.image.size)

    def reconstruct(data: bytes, representation: Representation) -> Image.Image:
        costs.reads[representation] += 1
        return read(data, representation)

    def sample_read(width: int, height: int) -> object:
        tried = codec_read(width, height)

        def trial(data: bytes, representation: Representation) -> Image.Image:
            costs.trials[representation] += 1
            costs.trial_pixels += width * height
            return tried(data, representation)

        return trial

    decision = choose(
        image=upload.image,
        original=upload.original,
        x4=upload.x4,
        policy=policy,
        floor=Floor.parse(floor),
        codec=codec,  # type: ignore[arg-type]
        reconstruct=reconstruct,
        model="none",
        sample_read=sample_read,  # type: ignore[arg-type]
    )
    return decision, costs


def assert_passing_quality(upload: Upload, decision: Decision, floor: str) -> int:
    """The kept full-size copy is what the receipt says and meets the floor at full size."""
    receipt, wanted = decision.receipt, Floor.parse(floor)
    codec, quality = decision.representation, receipt.quality
    assert codec in ("avif", "webp") and quality is not None
    assert decision.data == encode_full(upload.image, codec, quality)
    kept = scored(upload.image, decision.data, codec)
    assert (receipt.psnr, receipt.ssim) == (kept.psnr, kept.ssim)
    assert wanted.met_by(kept) and receipt.meets_floor is True
    return quality


def assert_lowest_passing_quality(upload: Upload, decision: Decision, floor: str) -> None:
    """As ``assert_passing_quality``, and one quality lower encodes other bytes that fail the
    floor: the receipt names the lowest quality."""
    quality, codec, wanted = (
        assert_passing_quality(upload, decision, floor),
        decision.representation,
        Floor.parse(floor),
    )
    below = encode_full(upload.image, codec, quality - 1)  # type: ignore[arg-type]
    assert below != decision.data and not wanted.met_by(scored(upload.image, below, codec))


def test_the_photo_is_sampled_and_its_mosaic_is_a_fraction_of_it(photo: Upload) -> None:
    reference = Reference(photo.image)
    mosaic = Mosaic(photo.image, reference, codec_read)

    assert not reference.whole and len(reference.boxes) == TILES
    assert mosaic.image.width * mosaic.image.height == MOSAIC_PIXELS
    assert photo.image.width * photo.image.height / 3 > MOSAIC_PIXELS


@pytest.mark.parametrize(
    ("codec", "floor", "reads", "trials", "pixels"),
    [
        ("avif", "ssim:0.99", 2, 8, 967_680),
        ("avif", "psnr:46", 3, 16, 2_036_736),
        ("webp", "ssim:0.99", 1, 12, 1_299_456),
        ("webp", "psnr:42", 3, 15, 2_156_544),
    ],
)
def test_full_finds_the_lowest_passing_quality_in_a_few_full_size_reads(
    photo: Upload, codec: str, floor: str, reads: int, trials: int, pixels: int
) -> None:
    decision, costs = decide(photo, "full", floor, codec)

    assert_lowest_passing_quality(photo, decision, floor)
    assert decision.receipt.x4 is None
    assert costs.reads == {codec: reads} and reads <= FULL_SIZE_READS
    assert costs.trials == {codec: trials} and costs.trial_pixels == pixels


def test_trials_that_flatter_every_quality_cost_no_more_reads_and_keep_no_failing_copy(
    photo: Upload,
) -> None:
    """A mosaic whose reads return its own pixels passes every quality, so the trials put
    the floor at the lowest. Each full-size read then fails, the corrected prediction finds
    no quality, and the search steps up one quality a read until ``FULL_SIZE_READS`` were
    made; ``full`` then keeps the original, not a copy it never saw pass."""
    boxes = Reference(photo.image).boxes
    mosaics = (tile_mosaic(photo.image, boxes), tile_mosaic(photo.image, boxes[::COARSE_STRIDE]))
    own = {mosaic.size: mosaic for mosaic in mosaics}  # the mosaic, and the coarse one
    read_at: list[int] = []
    copies = {encode_full(photo.image, "webp", q): q for q in range(LOWEST_QUALITY, 12)}

    def reconstruct(data: bytes, representation: Representation) -> Image.Image:
        read_at.append(copies[data])
        return codec_read(*photo.image.size)(data, representation)

    decision = choose(
        image=photo.image,
        original=photo.original,
        x4=photo.x4,
        policy="full",
        floor=Floor.parse("ssim:0.99"),
        codec="webp",
        reconstruct=reconstruct,
        model="none",
        sample_read=lambda width, height: lambda data, representation: own[width, height],
    )

    assert read_at == [LOWEST_QUALITY, LOWEST_QUALITY + 1, LOWEST_QUALITY + 2]
    assert len(read_at) == FULL_SIZE_READS
    assert (decision.representation, decision.data) == ("original", photo.original)


def test_guarded_keeps_an_x4_copy_that_meets_the_floor_after_one_trial_and_one_read(
    photo: Upload,
) -> None:
    decision, costs = decide(photo, "guarded", "ssim:0.97")

    assert (decision.representation, decision.data) == ("x4", photo.x4)
    kept = scored(photo.image, photo.x4, "x4")
    assert (decision.receipt.psnr, decision.receipt.ssim) == (kept.psnr, kept.ssim)
    assert decision.receipt.x4 is None
    assert costs.reads == {"x4": 1} and costs.trials == {"x4": 1}
    assert costs.trial_pixels == MOSAIC_PIXELS


@pytest.mark.parametrize(
    ("floor", "reads", "trials", "pixels"),
    [
        ("ssim:0.99", {"x4": 1, "avif": 2}, {"x4": 1, "avif": 8}, 1_152_000),
        ("psnr:44", {"x4": 1, "avif": 3}, {"avif": 15}, 2_156_544),  # PSNR: no x4 trial
    ],
)
def test_guarded_reads_an_x4_copy_that_does_not_fail_clearly_before_turning_it_down(
    photo: Upload, floor: str, reads: dict[str, int], trials: dict[str, int], pixels: int
) -> None:
    decision, costs = decide(photo, "guarded", floor)

    assert_lowest_passing_quality(photo, decision, floor)
    assert decision.receipt.x4 == scored(photo.image, photo.x4, "x4")
    assert (costs.reads, costs.trials, costs.trial_pixels) == (reads, trials, pixels)


def test_guarded_never_rebuilds_an_x4_copy_whose_trial_fails_clearly(text: Upload) -> None:
    """The receipt's ``x4`` is then the trial itself: no render of the whole image for it.
    The search trusts its corrected prediction after one read here and keeps AVIF q47,
    where q45 passes with 5% fewer bytes (see ``lowest_passing``)."""
    decision, costs = decide(text, "guarded", "ssim:0.9")
    trial = Mosaic(text.image, Reference(text.image), codec_read).x4(text.x4)

    assert assert_passing_quality(text, decision, "ssim:0.9") == 47
    assert trial.ssim < 0.9 - CLEAR_FAILURE["ssim"]
    assert decision.receipt.x4 == trial
    assert costs.reads == {"avif": 1} and costs.trials == {"x4": 1, "avif": 11}
    assert costs.trial_pixels == 1_502_208


def test_smallest_tries_no_other_x4_copy_when_the_uploads_own_fails_clearly(
    text: Upload, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lower-quality copy of an x4 copy that fails clearly fails too: none is encoded, and
    the receipt's ``x4`` is the trial, as ``guarded``'s is."""
    encoded: list[tuple[int, int]] = []

    def counted_encode(image: Image.Image, codec: str, quality: int) -> bytes:
        encoded.append(image.size)
        return encode_full(image, codec, quality)  # type: ignore[arg-type]

    monkeypatch.setattr(policy.choose, "encode_full", counted_encode)
    decision, _ = decide(text, "smallest", "ssim:0.9")
    trial = Mosaic(text.image, Reference(text.image), codec_read).x4(text.x4)

    assert decision.representation in ("avif", "webp")
    assert decision.receipt.x4 == trial
    assert encoded and downscale(text.image).size not in encoded


@pytest.mark.parametrize(
    ("floor", "codec", "quality", "trials"),
    [("ssim:0.9", "avif", 55, 2), ("ssim:0.97", "webp", 80, 5)],
)
def test_smallest_keeps_a_lower_quality_x4_copy_that_meets_the_floor(
    photo: Upload, floor: str, codec: str, quality: int, trials: int
) -> None:
    """The receipt names the copy's codec and quality and scores its full-size read; the
    cheapest x4 copy whose trial passes is the only one read."""
    decision, costs = decide(photo, "smallest", floor)
    receipt = decision.receipt

    assert decision.representation == "x4"
    assert (receipt.codec, receipt.quality) == (codec, quality)
    assert decision.data == encode_full(downscale(photo.image), codec, quality)  # type: ignore[arg-type]
    kept = scored(photo.image, decision.data, "x4")
    assert (receipt.psnr, receipt.ssim, receipt.meets_floor) == (kept.psnr, kept.ssim, True)
    assert costs.reads == {"x4": 1}
    assert costs.trials == {"x4": trials} and costs.trial_pixels == trials * MOSAIC_PIXELS


@pytest.mark.parametrize(
    ("upload_name", "floor", "reads", "trials", "pixels"),
    [
        ("photo", "psnr:44", {"avif": 3}, {"x4": 2, "avif": 15, "webp": 1}, 2_709_504),
        ("photo", "ssim:0.99", {"avif": 2}, {"x4": 3, "avif": 8, "webp": 1}, 1_704_960),
        ("text", "psnr:35", {"avif": 2}, {"x4": 2, "avif": 12, "webp": 1}, 1_953_792),
        ("text", "ssim:0.9", {"avif": 1, "webp": 2}, {"x4": 1, "avif": 11, "webp": 15}, 3_456_000),
    ],
)
def test_smallest_stores_no_more_than_guarded_and_keeps_a_lowest_passing_quality(
    request: pytest.FixtureRequest,
    upload_name: str,
    floor: str,
    reads: dict[str, int],
    trials: dict[str, int],
    pixels: int,
) -> None:
    """With text over it, the photo's WebP at the floor was estimated 3% cheaper on the
    mosaic than its AVIF, and read 3% dearer than the AVIF ``guarded`` keeps (8% under its
    estimate): ``smallest`` reads an estimate within ``ESTIMATE_MARGIN`` of the best read.
    Each keeps a passing quality; on the photo alone, the lowest."""
    upload: Upload = request.getfixturevalue(upload_name)
    decision, costs = decide(upload, "smallest", floor)
    guarded, _ = decide(upload, "guarded", floor)

    assert len(decision.data) <= len(guarded.data)
    if upload_name == "photo":
        assert_lowest_passing_quality(upload, decision, floor)
    assert_passing_quality(upload, decision, floor)
    assert (costs.reads, costs.trials, costs.trial_pixels) == (reads, trials, pixels)
