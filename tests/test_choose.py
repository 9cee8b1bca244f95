"""What each storage policy keeps of an upload, and the quality search it rests on.

``policy.choose`` on a small crop of a real photo (scored whole, so every candidate is read at
full size), through a read path without the service: a full-size copy decoded, an x4 copy
enlarged bicubically. Fast enough to run against every mutant of ``policy/choose.py``; the
12 MP searches on the mosaic are in ``test_quality.py``.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import policy.choose as policy_choose
from imaging import FullCodecName, downscale, encode_full
from imaging.quality import Reference
from policy import Decision, Floor, Representation, Score, StoragePolicy
from policy.choose import (
    LOWEST_QUALITY,
    X4_OPTIONS,
    Reconstruct,
    _lowest_quality,
    _next_guess,
    choose,
    score,
)
from tests.test_quality import codec_read

SIZE = (160, 120)


@pytest.fixture(scope="module")
def original(photo: Image.Image) -> bytes:
    """The upload: a JPEG q95 of the photo at ``SIZE``."""
    buffer = io.BytesIO()
    photo.resize(SIZE, Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def small(original: bytes) -> Image.Image:
    """The upload decoded: what every candidate is scored against."""
    return Image.open(io.BytesIO(original)).convert("RGB")


@pytest.fixture(scope="module")
def x4(small: Image.Image) -> bytes:
    return encode_full(downscale(small), "webp", 90)  # the default stored copy


def decide(
    small: Image.Image,
    original: bytes,
    x4: bytes,
    policy: StoragePolicy,
    floor: str,
    reconstruct: Reconstruct | None = None,
) -> Decision:
    """``policy``'s decision in AVIF, read through ``reconstruct`` (the codec read path)."""
    return choose(
        image=small,
        original=original,
        x4=x4,
        policy=policy,
        floor=Floor.parse(floor),
        codec="avif",
        reconstruct=reconstruct or codec_read(*small.size),
        model="bicubic",
    )


def scored(small: Image.Image, data: bytes, representation: str) -> Score:
    read = codec_read(*small.size)(data, representation)  # type: ignore[arg-type]
    psnr, ssim = Reference(small).score(read)
    return Score(psnr=psnr, ssim=ssim)


def x4_ssim(small: Image.Image, x4: bytes) -> float:
    return scored(small, x4, "x4").ssim


def test_a_score_is_the_y_psnr_and_ssim_of_the_read_against_the_upload(
    small: Image.Image, x4: bytes
) -> None:
    served = codec_read(*small.size)(x4, "x4")

    assert score(small, served) == scored(small, x4, "x4")
    itself = score(small, small)
    assert (itself.psnr, itself.ssim) == (math.inf, pytest.approx(1.0))


def test_downscale_keeps_the_x4_copy_and_says_when_it_misses_the_floor(
    small: Image.Image, original: bytes, x4: bytes
) -> None:
    decision = decide(small, original, x4, "downscale", "ssim:0.999")

    assert (decision.representation, decision.data) == ("x4", x4)
    receipt = decision.receipt
    assert Score(psnr=receipt.psnr, ssim=receipt.ssim) == scored(small, x4, "x4")
    assert receipt.meets_floor is False
    assert receipt.x4 is None  # the kept copy is the x4 copy: no second score
    assert (receipt.policy, receipt.floor, receipt.model) == ("downscale", "ssim:0.999", "bicubic")
    assert receipt.stored_bytes == len(x4)


def test_guarded_keeps_an_x4_copy_that_meets_the_floor(
    small: Image.Image, original: bytes, x4: bytes
) -> None:
    floor = f"ssim:{math.floor(x4_ssim(small, x4) * 1000) / 1000}"  # met, just
    decision = decide(small, original, x4, "guarded", floor)

    assert (decision.representation, decision.data) == ("x4", x4)
    assert decision.receipt.meets_floor is True
    assert decision.receipt.x4 is None


def test_guarded_swaps_a_failing_x4_copy_for_the_lowest_passing_full_size_quality(
    small: Image.Image, original: bytes, x4: bytes
) -> None:
    floor = Floor.parse("ssim:0.97")
    assert x4_ssim(small, x4) < floor.value
    decision = decide(small, original, x4, "guarded", str(floor))

    quality = decision.receipt.quality
    assert decision.representation == "avif" and quality is not None
    assert decision.data == encode_full(small, "avif", quality)
    assert floor.met_by(scored(small, decision.data, "avif"))
    below = encode_full(small, "avif", quality - 1)
    assert below == decision.data or not floor.met_by(scored(small, below, "avif"))
    assert len(decision.data) < len(original)
    receipt = decision.receipt
    assert receipt.meets_floor is True
    assert receipt.x4 is not None and receipt.x4.ssim == pytest.approx(x4_ssim(small, x4))
    assert receipt.stored_bytes == len(decision.data)


@pytest.mark.parametrize("policy", ["guarded", "smallest", "full"])
def test_a_floor_no_copy_meets_keeps_the_upload_itself(
    small: Image.Image, original: bytes, x4: bytes, policy: StoragePolicy
) -> None:
    """Only the upload's own bytes read back unchanged: a PSNR of 99 dB is theirs alone."""
    decision = decide(small, original, x4, policy, "psnr:99")

    assert (decision.representation, decision.data) == ("original", original)
    receipt = decision.receipt
    assert (receipt.policy, receipt.floor, receipt.meets_floor) == (policy, "psnr:99", True)
    assert receipt.stored_bytes == len(original)
    if policy == "guarded":  # the x4 copy it turned down is on the receipt
        assert receipt.x4 == scored(small, x4, "x4")


def test_original_keeps_the_upload_unscored(small: Image.Image, original: bytes, x4: bytes) -> None:
    decision = decide(small, original, x4, "original", "ssim:0.9")

    assert (decision.representation, decision.data) == ("original", original)
    receipt = decision.receipt
    assert (receipt.policy, receipt.floor) == ("original", "ssim:0.9")
    assert (receipt.psnr, receipt.ssim, receipt.x4) == (None, None, None)
    assert (receipt.meets_floor, receipt.stored_bytes) == (True, len(original))


def test_full_keeps_the_full_size_copy_even_where_the_x4_copy_would_do(
    small: Image.Image, original: bytes, x4: bytes
) -> None:
    decision = decide(small, original, x4, "full", "ssim:0.5")

    assert decision.representation == "avif"
    assert decision.receipt.quality == LOWEST_QUALITY  # the floor is met at the lowest
    assert decision.receipt.x4 is None


def test_a_full_size_codec_that_cannot_encode_the_size_is_never_tried(
    small: Image.Image,
) -> None:
    """WebP writes at most 16383 pixels a side: a wider upload never gets a WebP copy, and
    ``full`` in WebP keeps the upload itself."""
    wide = small.resize((16400, 16))
    buffer = io.BytesIO()
    wide.save(buffer, "JPEG", quality=95)
    x4 = encode_full(downscale(wide), "webp", 90)
    cases: tuple[tuple[StoragePolicy, FullCodecName], ...] = (
        ("full", "webp"),
        ("smallest", "avif"),
    )
    decisions = {
        (policy, codec): choose(
            image=wide,
            original=buffer.getvalue(),
            x4=x4,
            policy=policy,
            floor=Floor.parse("ssim:0.95"),
            codec=codec,
            reconstruct=codec_read(*wide.size),
            model="bicubic",
        )
        for policy, codec in cases
    }

    assert decisions["full", "webp"].representation == "original"
    assert decisions["smallest", "avif"].representation != "webp"


@pytest.mark.parametrize("floor", ["ssim:0.9", "ssim:0.97", "psnr:30"])
def test_smallest_keeps_the_fewest_bytes_of_every_candidate_that_meets_the_floor(
    small: Image.Image, original: bytes, x4: bytes, floor: str
) -> None:
    """Against an exhaustive search: every x4 option, and each full-size codec at every
    quality. The search takes the score to grow with the quality, which holds only roughly
    (at ssim:0.97 here WebP q68 passes, q69 fails, q70 passes: it keeps q70, 2% more bytes),
    so it is held to within 3% of the fewest bytes."""
    wanted = Floor.parse(floor)
    decision = decide(small, original, x4, "smallest", floor)
    low_res = downscale(small)
    candidates = [("x4", x4), ("original", original)]
    candidates += [("x4", encode_full(low_res, codec, q)) for codec, q in X4_OPTIONS]
    for codec in ("avif", "webp"):
        candidates += [(codec, encode_full(small, codec, q)) for q in range(LOWEST_QUALITY, 101)]
    passing = [
        len(data)
        for representation, data in candidates
        if representation == "original" or wanted.met_by(scored(small, data, representation))
    ]
    guarded = decide(small, original, x4, "guarded", floor)

    assert decision.receipt.meets_floor is True
    assert wanted.met_by(scored(small, decision.data, decision.representation))
    assert len(decision.data) <= len(guarded.data)
    receipt = decision.receipt
    if decision.representation == "x4" and decision.data != x4:  # a lower-quality x4 copy
        assert receipt.codec is not None and receipt.quality is not None
        assert decision.data == encode_full(low_res, receipt.codec, receipt.quality)
    assert min(passing) <= len(decision.data) <= 1.03 * min(passing)


@pytest.mark.parametrize(
    ("policy", "floor", "kept", "reads", "encodes"),
    [
        ("guarded", "ssim:0.97", ("avif", None, 45), {"x4": 1, "avif": 5}, {"avif": 6}),
        ("guarded", "psnr:36", ("avif", None, 8), {"x4": 1, "avif": 6}, {"avif": 7}),
        ("full", "ssim:0.9", ("avif", None, 5), {"avif": 6}, {"avif": 6}),
        ("full", "psnr:36", ("avif", None, 8), {"avif": 6}, {"avif": 7}),
        (
            "smallest",
            "ssim:0.9",
            ("x4", "webp", 70),
            {"x4": 1},
            {"x4 webp": 2, "x4 avif": 3, "avif": 1, "webp": 1},
        ),
        (
            "smallest",
            "ssim:0.97",
            ("webp", None, 70),
            {"x4": 2, "avif": 5, "webp": 4},
            {"x4 webp": 2, "x4 avif": 3, "avif": 7, "webp": 10},
        ),
        (
            "smallest",
            "psnr:36",
            ("webp", None, 5),
            {"x4": 2, "avif": 6, "webp": 7},
            {"x4 webp": 2, "x4 avif": 3, "avif": 8, "webp": 10},
        ),
    ],
)
def test_each_search_costs_todays_reads_and_encodes(
    small: Image.Image,
    original: bytes,
    x4: bytes,
    monkeypatch: pytest.MonkeyPatch,
    policy: StoragePolicy,
    floor: str,
    kept: tuple[str, str | None, int],
    reads: dict[str, int],
    encodes: dict[str, int],
) -> None:
    """Exactly today's figures: full-size reads by representation, and encodes by codec (an
    x4 copy's apart). A change to what a search costs, dearer or cheaper, fails here and is
    made on purpose, with these figures."""
    counted_reads: Counter[str] = Counter()
    counted_encodes: Counter[str] = Counter()
    read = codec_read(*small.size)

    def reconstruct(data: bytes, representation: Representation) -> Image.Image:
        counted_reads[representation] += 1
        return read(data, representation)

    def counted_encode(image: Image.Image, codec: FullCodecName, quality: int) -> bytes:
        counted_encodes[codec if image.size == small.size else f"x4 {codec}"] += 1
        return encode_full(image, codec, quality)

    monkeypatch.setattr(policy_choose, "encode_full", counted_encode)
    decision = decide(small, original, x4, policy, floor, reconstruct)

    receipt = decision.receipt
    assert (decision.representation, receipt.codec, receipt.quality) == kept
    assert (counted_reads, counted_encodes) == (reads, encodes)


def counting(measure: Callable[[int], float], counted: list[int]) -> Callable[[int], float]:
    """``measure``, noting in ``counted`` each quality it is asked for."""

    def counted_measure(quality: int) -> float:
        counted.append(quality)
        return measure(quality)

    return counted_measure


def linear(counted: list[int]) -> Callable[[int], float]:
    return counting(float, counted)


@pytest.mark.parametrize("target", [5, 6, 37, 99, 100])
def test_the_quality_search_finds_the_lowest_passing_quality_in_a_few_steps(target: int) -> None:
    counted: list[int] = []
    found = _lowest_quality(linear(counted), target, {})

    assert found == target
    assert len(counted) == len(set(counted)) <= 7  # once each; blind bisection needs 7 + 2


def test_the_quality_search_says_none_when_even_100_fails() -> None:
    counted: list[int] = []

    assert _lowest_quality(linear(counted), 100.5, {}) is None
    assert 100 in counted


def test_the_quality_search_starts_from_what_is_known() -> None:
    counted: list[int] = []
    known = {40: 40.0, 41: 41.0}

    assert _lowest_quality(linear(counted), 41, known) == 41
    assert counted == []  # a passing quality one step above a failing one: nothing to measure


def test_a_coarser_step_stops_within_it_of_the_lowest_passing_quality() -> None:
    counted: list[int] = []
    found = _lowest_quality(linear(counted), 50, {}, step=4)

    assert found is not None and 50 <= found <= 53
    assert min(counted) < found or found == 50  # bracketed by a failing quality below


def test_a_flat_or_erratic_measure_still_converges_by_halving() -> None:
    """A codec's plateaus (neighbouring qualities encoding alike) give the secant nothing."""
    counted: list[int] = []

    def plateau(quality: int) -> float:
        return 0.0 if quality < 63 else 1.0

    assert _lowest_quality(counting(plateau, counted), 0.5, {}) == 63
    assert len(counted) <= 9


def measurements(
    measure: Callable[[int], float],
    targets: list[float],
    transform: Callable[[float], float] | None = None,
) -> int:
    """How many qualities the search measures to find each target, in all."""
    counted: list[int] = []
    for target in targets:
        _lowest_quality(counting(measure, counted), target, {}, transform=transform)
    return len(counted)


def ssim_like(quality: int) -> float:
    """SSIM's shape against a codec's quality: ever slower towards 1."""
    return 1 - 0.5 * math.exp(-quality / 20)


def ssim_line(value: float) -> float:
    return -math.log(max(1 - value, 1e-9))


def test_the_search_costs_fewer_measurements_than_bisection() -> None:
    """Every target from 5 to 100 on a straight measure, and on an SSIM-like curve through
    the transform that straightens it: 521 measurements (5.4 a target) where a bisection of
    5..100 after the two probes takes about 8.6; without the transform the curve costs 691."""
    qualities = range(LOWEST_QUALITY, 101)
    straight = measurements(float, [float(q) for q in qualities])
    curved = [ssim_like(q) - 1e-9 for q in qualities]

    assert straight <= 521
    assert measurements(ssim_like, curved, ssim_line) <= 521
    assert measurements(ssim_like, curved) > measurements(ssim_like, curved, ssim_line)


@settings(deadline=None)  # a loaded machine must not fail it on time
@given(
    st.dictionaries(st.integers(LOWEST_QUALITY, 100), st.floats(0, 1), min_size=1),
    st.floats(0, 1),
    st.lists(st.booleans(), max_size=4),
)
def test_a_guess_always_lies_strictly_between_the_failing_and_passing_qualities(
    known: dict[int, float], target: float, sides: list[bool]
) -> None:
    failing = max((q for q, v in known.items() if v < target), default=LOWEST_QUALITY - 1)
    passing = min((q for q, v in known.items() if v >= target), default=101)
    if passing - failing < 2 or failing > passing:
        return  # nothing left to search, or a measure that fell: not a bracket
    guess = _next_guess(known, failing, passing, target, sides, ssim_line)

    assert isinstance(guess, int)
    assert failing < guess < passing
