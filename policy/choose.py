"""Choosing what to keep of an upload, by policy and floor, from scored candidates.

Every candidate is scored as a read would serve it: ``reconstruct`` is the service's own read
path (the active model, its tiles and chroma path, the default output encoding), so a receipt
is the quality of what ``GET`` returns, not of an approximation of it.

Scoring is kept cheap. The upload's luma and its half of the SSIM windows are computed once
(``imaging.quality.Reference``), and an image over 2.5 MP is scored on a fixed sample of
tiles. A codec quality is searched from a prediction (two probes, then the secant between
the nearest passing and failing ones) down to the floor, not bisected blindly. Given
``sample_read`` (the read path of an image of another size), a large upload's candidates are
first tried on a mosaic of its sampled tiles (about a tenth of its pixels), and only the
candidates those trials favour are read at full size: a receipt is always the score of the
full-size read of what is kept.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property

from PIL import Image

from imaging import FullCodecName, decode_stored, downscale, encodable, encode_full
from imaging.quality import Box, Reference, mosaic_boxes, tile_mosaic
from policy.receipts import (
    Floor,
    Metric,
    Receipt,
    Representation,
    Score,
    StoragePolicy,
)

Reconstruct = Callable[[bytes, Representation], Image.Image]
"""The default read of bytes stored as a representation, decoded as a client decodes it."""
SampleRead = Callable[[int, int], Reconstruct]
"""The same read path for an image of another width and height (a mosaic of sampled tiles)."""

LOWEST_QUALITY = 5  # the codec quality search runs over LOWEST_QUALITY..100
FIRST_PROBES = (30, 70)  # the two qualities a search starts from
FULL_SIZE_READS = 3  # at most this many full-size reads check a quality found on the mosaic
# A trial on the mosaic this far below the floor settles that an x4 copy fails without its
# full-size read (a trial is within 0.005 SSIM of that read on the held-out photos). Not for
# a PSNR floor: the tiles' PSNR ran 1.2-7.9 dB under the whole read's on those photos.
CLEAR_FAILURE: dict[Metric, float] = {"ssim": 0.02}
COARSE_STRIDE = 3  # a codec quality is first searched on every third sampled tile
# Lower-quality x4 copies ``smallest`` also weighs: a rate-distortion study of the held-out
# photos found the default (WebP q90) past the knee of its curve.
X4_OPTIONS: tuple[tuple[FullCodecName, int], ...] = (
    ("webp", 70),
    ("webp", 80),
    ("avif", 55),
    ("avif", 70),
    ("avif", 85),
)
FULL_SIZE_OPTIONS: tuple[FullCodecName, ...] = ("avif", "webp")  # what ``smallest`` searches
# A full-size codec's bytes estimated on the mosaic ran up to 8% over its bytes once read
# (AVIF on a captioned sampled image), and stopping at the estimate kept that image's WebP,
# 3% over the AVIF ``guarded`` kept. ``smallest`` reads a candidate unless its estimate is
# this fraction over the fewest bytes read: a captioned 12 MP upload then took 24 CPU s, not
# 16, for the same bytes (the AVIF search it read), the price of not keeping more than
# ``guarded`` would.
ESTIMATE_MARGIN = 0.15


@dataclass(frozen=True)
class Candidate:
    representation: Representation
    data: bytes
    score: Score
    quality: int | None = None  # the codec quality of a copy ``choose`` encoded
    codec: FullCodecName | None = None  # the codec of an x4 copy ``choose`` encoded


@dataclass(frozen=True)
class Decision:
    representation: Representation
    data: bytes
    receipt: Receipt


def score(reference: Image.Image, served: Image.Image) -> Score:
    """Y-PSNR and SSIM of a served image: a floor promises every pixel, so unlike the
    trainer's protocol no border is shaved (see ``Reference`` for the sample of tiles)."""
    psnr, ssim = Reference(reference).score(served)
    return Score(psnr=psnr, ssim=ssim)


def choose(
    *,
    image: Image.Image,
    original: bytes,
    x4: bytes,
    policy: StoragePolicy,
    floor: Floor,
    codec: FullCodecName,
    reconstruct: Reconstruct,
    model: str,
    sample_read: SampleRead | None = None,
) -> Decision:
    """``downscale`` keeps the x4 copy; ``guarded`` keeps it unless it fails the floor, then
    the fewest bytes that meet it (a full-size copy in ``codec`` or the original);
    ``smallest`` the fewest bytes that meet the floor among the x4 copy, lower-quality x4
    copies (``X4_OPTIONS``), full-size AVIF and WebP, and the original. The original always
    qualifies, so neither stores more than the upload. An x4 copy whose trial on the mosaic
    falls ``CLEAR_FAILURE`` below the floor is not read at full size: the receipt's ``x4`` is
    then that trial's estimate. ``full`` keeps the full-size copy in
    ``codec`` at the lowest quality that meets the floor (the original when none does);
    ``original`` keeps the upload as it came, unscored: a plain read serves its very bytes,
    so there is nothing to score."""
    if policy == "original":
        return _as_uploaded(original, policy, floor, model)
    trials = _Trials(image, reconstruct, sample_read, floor)
    if policy == "full":
        full = trials.lowest_passing(codec)
        if full is None:
            return _as_uploaded(original, policy, floor, model)
        return _decision(full, None, policy, floor, model)
    if policy == "smallest":
        kept, reduced = trials.smallest(x4, original)
        return _decision(kept, reduced, policy, floor, model)
    if policy == "guarded" and trials.fails_clearly(x4):
        reduced = trials.x4_estimate(x4)
    else:
        reduced = trials.full_size_read("x4", x4)
        if policy == "downscale" or floor.met_by(reduced.score):
            return _decision(reduced, reduced, policy, floor, model)
    full = trials.lowest_passing(codec)
    if full is not None and len(full.data) < len(original):
        return _decision(full, reduced, policy, floor, model)
    return _decision(trials.full_size_read("original", original), reduced, policy, floor, model)


class _Trials:
    """The candidates of one upload, encoded and scored at most once each.

    ``full_size_read`` scores the read of the upload itself: what a receipt records. ``trial``
    estimates it: on the mosaic of sampled tiles when there is one, else by that same read.
    """

    def __init__(
        self,
        image: Image.Image,
        reconstruct: Reconstruct,
        sample_read: SampleRead | None,
        floor: Floor,
    ) -> None:
        self.image = image
        self.reconstruct = reconstruct
        self.floor = floor
        self.reference = Reference(image)
        self._reads: dict[bytes, Candidate] = {}
        self._copies: dict[tuple[FullCodecName, int], bytes] = {}
        self._levels: dict[FullCodecName, dict[int, float]] = {}  # trials by codec, quality
        self._coarse_levels: dict[FullCodecName, dict[int, float]] = {}  # on ``_coarse``
        self._trials: dict[tuple[Representation, FullCodecName | None, int | None], float] = {}
        self._x4_estimates: dict[bytes, Score] = {}
        self.sample_read = sample_read

    @cached_property
    def _mosaic(self) -> Mosaic | None:
        """Built on the first trial: ``downscale`` and a passing ``guarded`` make none."""
        if self.sample_read is None or self.reference.whole:
            return None
        return Mosaic(self.image, self.reference, self.sample_read)

    @cached_property
    def _coarse(self) -> Mosaic | None:
        """Every ``COARSE_STRIDE``-th sampled tile: a third of the mosaic's cost per trial,
        biased by its fewer tiles, so it only seeds the search on the mosaic."""
        if self.sample_read is None or self._mosaic is None:
            return None
        if len(self.reference.boxes) < 2 * COARSE_STRIDE:
            return None
        boxes = self.reference.boxes[::COARSE_STRIDE]
        return Mosaic(self.image, self.reference, self.sample_read, boxes)

    @cached_property
    def low_res(self) -> Image.Image:
        return downscale(self.image)

    def metric(self, candidate: Candidate) -> float:
        return float(getattr(candidate.score, self.floor.metric))

    def full_size_read(
        self,
        representation: Representation,
        data: bytes,
        quality: int | None = None,
        codec: FullCodecName | None = None,
    ) -> Candidate:
        known = self._reads.get(data)
        if known is None:
            psnr, ssim = self.reference.score(self.reconstruct(data, representation))
            self._reads[data] = Candidate(
                representation, data, Score(psnr=psnr, ssim=ssim), quality, codec
            )
        elif quality is not None and known.quality is not None and quality < known.quality:
            # a codec encodes neighbouring qualities alike: the lowest one is the receipt's
            self._reads[data] = replace(known, quality=quality)
        return self._reads[data]

    def full_size_copy(self, codec: FullCodecName, quality: int) -> bytes:
        if (codec, quality) not in self._copies:
            self._copies[codec, quality] = encode_full(self.image, codec, quality)
        return self._copies[codec, quality]

    def x4_copy(self, codec: FullCodecName, quality: int) -> bytes:
        return encode_full(self.low_res, codec, quality)

    def trial_x4(self, codec: FullCodecName | None, quality: int | None, data: bytes) -> float:
        """The estimated score of the x4 copy ``data`` (``codec`` None: the upload's own)."""
        key: tuple[Representation, FullCodecName | None, int | None] = ("x4", codec, quality)
        if key not in self._trials:
            if self._mosaic is None:
                self._trials[key] = self.metric(self.full_size_read("x4", data, quality, codec))
            else:
                if data not in self._x4_estimates:
                    self._x4_estimates[data] = self._mosaic.x4(data)
                self._trials[key] = float(getattr(self._x4_estimates[data], self.floor.metric))
        return self._trials[key]

    def fails_clearly(self, x4: bytes) -> bool:
        """Whether the upload's x4 copy's trial on the mosaic is ``CLEAR_FAILURE`` below the
        floor: its full-size read (a render of the whole image) is then skipped. Never under
        a PSNR floor (see ``CLEAR_FAILURE``), nor without a mosaic (the trial is that read)."""
        if self.floor.metric not in CLEAR_FAILURE or self._mosaic is None:
            return False
        margin = CLEAR_FAILURE[self.floor.metric]
        return self.trial_x4(None, None, x4) < self.floor.value - margin

    def x4_estimate(self, x4: bytes) -> Candidate:
        """The upload's x4 copy, scored by its trial on the mosaic (see ``fails_clearly``)."""
        self.trial_x4(None, None, x4)
        return Candidate("x4", x4, self._x4_estimates[x4])

    def trial_full_size(self, codec: FullCodecName, quality: int) -> float:
        key: tuple[Representation, FullCodecName | None, int | None] = (codec, None, quality)
        if key not in self._trials:
            if self._mosaic is None:
                data = self.full_size_copy(codec, quality)
                self._trials[key] = self.metric(self.full_size_read(codec, data, quality))
            else:
                self._trials[key] = self._mosaic.full_size(codec, quality, self.floor)
        return self._trials[key]

    def _lowest_trial(self, codec: FullCodecName, target: float) -> int | None:
        """The lowest quality whose trial reaches ``target``.

        On a mosaic the search starts on ``_coarse`` (a third of the cost per trial): its
        answer is tried on the mosaic with the quality under it, and the difference between
        the two trials at that quality corrects the next coarse answer, until a passing
        quality is one step above a failing one (usually two trials on the mosaic, where a
        blind start took five to eight); after three rounds the search goes on from the
        trials made.
        """
        known = self._levels.setdefault(codec, {})
        coarse = self._coarse
        if coarse is not None and len(known) < 2:
            levels = self._coarse_levels.setdefault(codec, {})
            offset = 0.0
            for _ in range(3):
                guess = _lowest_quality(
                    lambda q: coarse.full_size(codec, q, self.floor),
                    target - offset,
                    levels,
                    transform=self._transform,
                )
                if guess is None or guess in known:
                    break
                known[guess] = value = self.trial_full_size(codec, guess)
                offset = value - levels[guess]
                if value < target:
                    continue
                under = guess - 1  # walked down while it encodes alike (a codec's plateau)
                while under >= LOWEST_QUALITY:
                    known[under] = self.trial_full_size(codec, under)
                    if known[under] != value:
                        break
                    under -= 1
                if under < LOWEST_QUALITY or known[under] < target:
                    return under + 1
                if under not in levels:
                    levels[under] = coarse.full_size(codec, under, self.floor)
                offset = known[under] - levels[under]
        return _lowest_quality(
            lambda q: self.trial_full_size(codec, q), target, known, transform=self._transform
        )

    def _transform(self, value: float) -> float:
        """Where the secant between two trials is drawn: SSIM approaches 1 ever more slowly
        as quality rises, and ``-log(1 - SSIM)`` is close to straight in it (on the held-out
        photos and the captioned one: a first guess 3 steps off instead of 9)."""
        if self.floor.metric == "ssim":
            return -math.log(max(1.0 - value, 1e-9))
        return value

    def lowest_passing(self, codec: FullCodecName) -> Candidate | None:
        """The full-size copy in ``codec`` at the lowest quality whose read meets the floor.

        The quality is found on the trials, then read at full size; the difference between
        that read and its trial corrects the next prediction (a mosaic's codec sees a little
        less context than the whole image's), until a passing quality is one step above a
        failing one, the corrected prediction puts the floor at or above a passing read, or
        ``FULL_SIZE_READS`` reads were made. Trusting the prediction can keep a quality a few
        steps high (AVIF q47 on a captioned sampled image where q45 passes, 5% more bytes);
        reading the step under instead cost a captioned 12 MP upload 45% more CPU for the
        same bytes. Quality is close to, not strictly, monotonic in it; every kept value was
        measured.
        """
        if not encodable(codec, *self.image.size):
            return None
        quality = self._lowest_trial(codec, self.floor.value)
        read: dict[int, Candidate] = {}
        for _ in range(FULL_SIZE_READS):
            if quality is None or quality in read:
                break
            data = self.full_size_copy(codec, quality)
            read[quality] = found = self.full_size_read(codec, data, quality)
            offset = self.metric(found) - self.trial_full_size(codec, quality)
            passes = self.floor.met_by(found.score)
            target = self.floor.value - offset
            quality = self._lowest_trial(codec, target)
            if passes and (quality is None or quality >= min(read)):
                break  # the corrected prediction puts the floor just under this quality
            if not passes and (quality is None or quality <= max(read)):
                quality = max(read) + 1 if max(read) < 100 else None
        passing = [c for q, c in sorted(read.items()) if self.floor.met_by(c.score)]
        return passing[0] if passing else None

    def smallest(self, x4: bytes, original: bytes) -> tuple[Candidate, Candidate | None]:
        """The fewest bytes that meet the floor, and the upload's x4 copy when it was read.

        The cheapest x4 copy whose trial passes stands for them all (none is encoded when the
        upload's own fails clearly: ``fails_clearly``); a full-size codec is searched only
        when its lowest quality can undercut it and what came before (WebP, after AVIF, only
        when it meets the floor within AVIF's bytes).
        Candidates are then read at full size, fewest (estimated) bytes first, until the
        next estimate is ``ESTIMATE_MARGIN`` over the fewest bytes read that meet the floor;
        the original is always the last resort.
        """
        copies: list[tuple[bytes, FullCodecName | None, int | None]] = [(x4, None, None)]
        clear_failure = self.fails_clearly(x4)  # then lower-quality copies fail too
        for option, level in X4_OPTIONS:
            if not clear_failure and encodable(option, *self.low_res.size):
                copies.append((self.x4_copy(option, level), option, level))
        ranked: list[tuple[int, Callable[[], Candidate | None]]] = []
        cheapest = None
        if not clear_failure:
            cheapest = self._cheapest_passing_x4([c for c in copies if len(c[0]) < len(original)])
        if cheapest is not None:
            ranked.append((len(cheapest[0]), _x4_reader(self, *cheapest)))
        bound = min([len(original)] + [size for size, _ in ranked])
        for index, codec in enumerate(FULL_SIZE_OPTIONS):
            if not encodable(codec, *self.image.size) or self._least_bytes(codec) >= bound:
                continue
            if index and not self._fits_and_passes(codec, bound):
                continue  # searched only when it can meet the floor in fewer bytes
            estimate = self._estimated_bytes(codec)
            ranked.append((estimate, _full_size_reader(self, codec)))
            bound = min(bound, estimate)
        best: Candidate | None = None
        for estimate, read in sorted(ranked, key=lambda r: r[0]):
            if best is not None and estimate >= len(best.data) * (1 + ESTIMATE_MARGIN):
                break
            found = read()
            if (
                found is not None
                and self.floor.met_by(found.score)
                and len(found.data) < len(best.data if best else original)
            ):
                best = found
        kept = best or self.full_size_read("original", original)
        return kept, self.x4_estimate(x4) if clear_failure else self._reads.get(x4)

    def _cheapest_passing_x4(
        self, copies: list[tuple[bytes, FullCodecName | None, int | None]]
    ) -> tuple[bytes, FullCodecName | None, int | None] | None:
        """The x4 copy with the fewest bytes whose trial passes, taking the score to grow
        with the bytes: the cheapest first (a photo's usually passes), then the dearest
        (none passes when it fails), then halving between them."""
        ordered = sorted(copies, key=lambda c: len(c[0]))
        if not ordered:
            return None

        def passes(index: int) -> bool:
            data, codec, quality = ordered[index]
            return self.trial_x4(codec, quality, data) >= self.floor.value

        if passes(0):
            return ordered[0]
        failing, passing = 0, len(ordered) - 1
        if not passes(passing):
            return None
        while passing - failing > 1:
            middle = (failing + passing) // 2
            if passes(middle):
                passing = middle
            else:
                failing = middle
        return ordered[passing]

    def _fits_and_passes(self, codec: FullCodecName, bound: int) -> bool:
        """Whether the trial of ``codec`` at the highest quality whose (estimated) bytes stay
        under ``bound`` meets the floor: bytes grow with quality, so when it fails no
        quality of ``codec`` can undercut ``bound``. Costs encodes (a secant on the log of
        the bytes: four or five, where bisection took seven), and one trial."""
        sizes: dict[int, float] = {LOWEST_QUALITY: self._bytes_at(codec, LOWEST_QUALITY)}
        over = _lowest_quality(
            lambda q: self._bytes_at(codec, q), bound, sizes, first=(30,), transform=math.log
        )
        fitting = 100 if over is None else over - 1
        return (
            fitting >= LOWEST_QUALITY and self.trial_full_size(codec, fitting) >= self.floor.value
        )

    def _bytes_at(self, codec: FullCodecName, quality: int) -> int:
        if self._mosaic is None:
            return len(self.full_size_copy(codec, quality))
        return self._mosaic.estimated_bytes(codec, quality)

    def _least_bytes(self, codec: FullCodecName) -> int:
        """The bytes of the lowest quality: no quality of ``codec`` can do with fewer."""
        return self._bytes_at(codec, LOWEST_QUALITY)

    def _estimated_bytes(self, codec: FullCodecName) -> int:
        quality = self._lowest_trial(codec, self.floor.value)
        if quality is None:
            return 2**62  # read last: the original comes first
        return self._bytes_at(codec, quality)


def _x4_reader(
    trials: _Trials, data: bytes, codec: FullCodecName | None, quality: int | None
) -> Callable[[], Candidate | None]:
    return lambda: trials.full_size_read("x4", data, quality, codec)


def _full_size_reader(trials: _Trials, codec: FullCodecName) -> Callable[[], Candidate | None]:
    return lambda: trials.lowest_passing(codec)


class Mosaic:
    """The sampled tiles of a large upload side by side, read through the same path: each
    trial costs about a tenth of a full-size read. An x4 copy is tried on its own decoded
    pixels (cut from the whole copy, stored losslessly), so only the network's context at
    the tiles' edges differs; a full-size codec encodes the mosaic itself."""

    def __init__(
        self,
        image: Image.Image,
        reference: Reference,
        sample_read: SampleRead,
        boxes: tuple[Box, ...] | None = None,
    ):
        """``boxes``: a subset of ``reference.boxes`` (all of them by default)."""
        self.boxes = reference.boxes if boxes is None else boxes
        self.image = tile_mosaic(image, self.boxes)
        self.reference = Reference(self.image, mosaic_boxes(self.boxes))
        self.read = sample_read(*self.image.size)
        self.scale = image.width * image.height / (self.image.width * self.image.height)
        self._bytes: dict[tuple[FullCodecName, int], int] = {}
        self._scores: dict[bytes, Score] = {}  # a codec's neighbouring qualities may encode alike

    def score(self, data: bytes, representation: Representation) -> Score:
        if data not in self._scores:
            psnr, ssim = self.reference.score(self.read(data, representation))
            self._scores[data] = Score(psnr=psnr, ssim=ssim)
        return self._scores[data]

    def x4(self, data: bytes) -> Score:
        low_res = tile_mosaic(decode_stored(data), self.boxes, scale=4)
        buffer = io.BytesIO()
        low_res.save(buffer, "PNG", compress_level=1)
        return self.score(buffer.getvalue(), "x4")

    def full_size(self, codec: FullCodecName, quality: int, floor: Floor) -> float:
        data = encode_full(self.image, codec, quality)
        self._bytes[codec, quality] = len(data)
        return float(getattr(self.score(data, codec), floor.metric))

    def estimated_bytes(self, codec: FullCodecName, quality: int) -> int:
        if (codec, quality) not in self._bytes:
            self._bytes[codec, quality] = len(encode_full(self.image, codec, quality))
        return round(self._bytes[codec, quality] * self.scale)


def _lowest_quality(
    measure: Callable[[int], float],
    target: float,
    known: dict[int, float],
    first: tuple[int, ...] = FIRST_PROBES,
    transform: Callable[[float], float] | None = None,
    step: int = 1,
) -> int | None:
    """The lowest quality in LOWEST_QUALITY..100 whose ``measure`` reaches ``target``
    (assumed to grow with quality), None when 100 does not. It starts from what is
    ``known`` (the qualities measured so far, which it adds to) or from the ``first``
    probes, then measures the secant's guess (drawn through ``transform`` of the values)
    between the nearest passing and failing qualities, clamped inside that bracket (halved
    when a side moved twice running), until they are ``step`` apart (a passing quality at
    most ``step - 1`` above the lowest)."""
    passed_at = [q for q, value in known.items() if value >= target]
    failed_at = [q for q, value in known.items() if value < target]
    failing = max(failed_at, default=LOWEST_QUALITY - 1)  # the bounds: unmeasured ends
    passing = min(passed_at, default=101)
    last_side: list[bool] = []
    queue = [q for q in first if q not in known] if len(known) < 2 else []
    while passing - failing > step:
        guess = (
            None if queue else _next_guess(known, failing, passing, target, last_side, transform)
        )
        quality = queue.pop(0) if guess is None else guess
        if quality not in known:
            known[quality] = measure(quality)
        passed = known[quality] >= target
        if passed:
            passing = min(passing, quality)
        else:
            failing = max(failing, quality)
        last_side.append(passed)
    return passing if passing <= 100 else None


def _next_guess(
    known: dict[int, float],
    failing: int,
    passing: int,
    target: float,
    sides: list[bool],
    transform: Callable[[float], float] | None = None,
) -> int:
    inside = range(failing + 1, passing)
    halve = len(sides) >= 2 and sides[-1] == sides[-2]
    if transform is not None:
        known = {q: transform(v) for q, v in known.items()}
        target = transform(target)
    points = sorted(known.items())
    below = [p for p in points if p[0] <= failing]
    above = [p for p in points if p[0] >= passing]
    pair = (below[-1:] + above[:1]) if below and above else (below[-2:] or above[:2])
    if halve or len(pair) < 2 or pair[1][1] == pair[0][1]:
        return (failing + passing) // 2
    (q0, v0), (q1, v1) = pair
    estimate = q0 + (target - v0) * (q1 - q0) / (v1 - v0)
    if not math.isfinite(estimate):  # an identical read (PSNR infinite) has no secant
        return (failing + passing) // 2
    guess = math.ceil(estimate)
    return min(max(guess, inside.start), inside.stop - 1)


def _as_uploaded(original: bytes, policy: StoragePolicy, floor: Floor, model: str) -> Decision:
    receipt = Receipt(
        policy=policy,
        floor=str(floor),
        representation="original",
        stored_bytes=len(original),
        model=model,
        meets_floor=True,
    )
    return Decision("original", original, receipt)


def _decision(
    kept: Candidate, reduced: Candidate | None, policy: StoragePolicy, floor: Floor, model: str
) -> Decision:
    receipt = Receipt(
        policy=policy,
        floor=str(floor),
        representation=kept.representation,
        quality=kept.quality,
        codec=kept.codec,
        stored_bytes=len(kept.data),
        model=model,
        psnr=kept.score.psnr,
        ssim=kept.score.ssim,
        meets_floor=floor.met_by(kept.score),
        x4=None if reduced is None or kept is reduced else reduced.score,
    )
    return Decision(kept.representation, kept.data, receipt)
