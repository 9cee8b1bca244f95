"""Breakages that once got past the tests named for them, applied again one at a time.

Each mutation is a text substitution in a copy of the working tree (in a temporary folder;
the tree itself is never touched), then the tests named for that behaviour run against the
copy and must fail. The file is found by the snippet it holds, so the check survives a
module moving to another package. Exit status 1 if any mutation survives.

    python mutations/named.py            # every mutation
    python mutations/named.py alpha-128  # only the ones named
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    *("srstore", "app", "worker", "trainer", "render", "config", "models", "imaging"),
    *("storage", "cache", "ledger", "policy"),
)


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    original: str
    replacement: str
    tests: tuple[str, ...]


RESTORE_LINES = {
    "model": '    model.load_state_dict(state["model"])\n',
    "optimizer": '    optimizer.load_state_dict(state["optimizer"])\n',
    "scheduler": '    scheduler.load_state_dict(state["scheduler"])\n',
    "torch-rng": '    torch.set_rng_state(state["torch_rng"])\n',
    "sampler-rng": '    sampler.rng.bit_generator.state = json.loads(state["sampler_rng"])\n',
}
RESUME_TEST = (
    "tests/trainer/test_training.py::"
    "test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does"
)

MUTATIONS = [
    Mutation(
        "render-bicubic",
        "a miss is rendered by Pillow's bicubic instead of the network the key names",
        "high_res = crop_to(upscaler.upscale(low_res), meta.width, meta.height)",
        "high_res = crop_to(low_res.resize((4 * low_res.width, 4 * low_res.height), 3), "
        "meta.width, meta.height)",
        (
            "tests/test_images_api.py::test_the_pixels_served_are_those_of_the_model_the_header_names[embedded]",
            "tests/test_admin_models.py::test_a_swap_changes_what_serves_and_a_rollback_finds_the_old_entries_warm[embedded]",
        ),
    ),
    Mutation(
        "alpha-128",
        "the stored copy's alpha is a constant 128",
        "    buffer = io.BytesIO()\n    name = codec.name\n",
        "    if image.mode == 'RGBA':\n        image = image.copy()\n        image.putalpha(128)\n"
        "    buffer = io.BytesIO()\n    name = codec.name\n",
        (
            "tests/test_imaging.py",
            "tests/test_images_api.py::test_transparency_comes_back_where_it_was[embedded]",
        ),
    ),
    Mutation(
        "resume-nothing",
        "resuming restores no model, optimiser, scheduler or random state",
        "".join(RESTORE_LINES.values()),
        "",
        (RESUME_TEST,),
    ),
    # Not "resume-without-torch-rng": nothing draws from torch's generator after the network
    # is built (patches come from the sampler's numpy generator), so that mutant is equivalent.
    *(
        Mutation(
            f"resume-without-{part}", f"resuming forgets the {part} state", line, "", (RESUME_TEST,)
        )
        for part, line in RESTORE_LINES.items()
        if part != "torch-rng"
    ),
    Mutation(
        "no-retry-after",
        "a 503 no longer says when to retry (asserted inside the outage test's load threads)",
        '        headers["Retry-After"] = str(retry_after)\n',
        "        pass\n",
        (
            "tests/test_probes.py::test_a_full_local_disk_makes_the_store_unready_and_refuses_uploads",
            "tests/test_outages.py::test_an_object_store_outage_answers_503_and_loses_no_acknowledged_upload[SIGKILL]",
        ),
    ),
    # Issue 26: breakages that got past the tests of delivery, receipts, deletion and the worker.
    Mutation(
        "retry-after-value",
        "an outage asks clients to wait 60 s instead of the documented 5",
        "OUTAGE_RETRY_AFTER = 5 ",
        "OUTAGE_RETRY_AFTER = 60 ",
        (
            "tests/test_probes.py::test_a_full_local_disk_makes_the_store_unready_and_refuses_uploads",
        ),
    ),
    Mutation(
        "redis-hit-keeps-index-ttl",
        "a Redis hit renews the entry but not the image's index: DELETE then misses the entry",
        "redis.call('EXPIRE', KEYS[2], ARGV[1])\nreturn data",
        "redis.call('TTL', KEYS[2])\nreturn data",
        ("tests/contract/test_hr_caches.py::test_a_redis_hit_renews_the_ttl",),
    ),
    Mutation(
        "sweep-live-marks",
        "a sweep forgets delete marks still within their lifetime (serve --workers N)",
        "oldest = self._swept_at - self.lifetime_seconds",
        "oldest = self._swept_at",
        (
            "tests/contract/test_hr_caches.py::test_a_sweep_keeps_every_mark_younger_than_its_lifetime",
        ),
    ),
    Mutation(
        "body-read-to-end",
        "a body on a non-upload route is read to its end before the limit is checked",
        "        if len(body) > limit:\n            return None\n"
        '        if not message.get("more_body", False):\n            return bytes(body)\n',
        '        if not message.get("more_body", False):\n'
        "            return None if len(body) > limit else bytes(body)\n",
        (
            "tests/test_request_limits.py::test_a_chunked_body_is_refused_once_past_the_limit_not_read_to_its_end",
        ),
    ),
    Mutation(
        "enlarge-canvas-only",
        "the pixel limit bounds only the canvas sent, not the intermediate a cover computes",
        "largest = max(math.prod(geometry.scaled), math.prod(geometry.canvas))",
        "largest = math.prod(geometry.canvas)",
        (
            "tests/test_sizes.py::test_enlarge_is_bounded_by_the_pixels_it_computes_not_only_those_it_sends[cover]",
        ),
    ),
    Mutation(
        "quality-unsigned",
        "?quality= is served unsigned while a signing key is set",
        '"format", "quality"})',
        '"format"})',
        ("tests/test_signatures.py::test_unsigned_option_urls_are_refused_with_403",),
    ),
    Mutation(
        "worker-reads-concurrency",
        "a busy worker reads as many new jobs as its concurrency, not its free slots",
        "await self.queue.read(self.name, self._free(), READ_BLOCK_MS)",
        "await self.queue.read(self.name, self.concurrency, READ_BLOCK_MS)",
        ("tests/test_worker_claims.py",),
    ),
    Mutation(
        "smallest-without-x4",
        "smallest stops weighing the x4 copy, and may store more than guarded",
        "passing = [reduced] if floor.met_by(reduced.score) else []",
        "passing = []",
        (
            "tests/test_storage_policy.py::test_smallest_keeps_the_x4_copy_when_it_is_the_fewest_bytes_that_meet_the_floor",
        ),
    ),
    Mutation(
        "tiny-ssim-window",
        "an image under the 11-pixel SSIM window fails scoring and drops its floor",
        "    if min(a.shape) < 11:\n        return _global_ssim(a, b, peak)\n",
        "",
        (
            "tests/test_storage_policy.py::test_an_image_smaller_than_the_ssim_window_is_still_held_to_the_floor",
        ),
    ),
    Mutation(
        "grey-pads-black",
        "fit=contain pads a greyscale image black instead of white",
        '"L": (255,)',
        '"L": (0,)',
        ("tests/test_sizes.py::test_contain_pads_an_opaque_image_with_white",),
    ),
    Mutation(
        "etag-without-webp-method",
        "the ETag no longer names WebP's encoder method",
        '"webp": f"m{self.webp_method}",',
        '"webp": "",',
        ("tests/test_http_caching.py::test_encoder_settings_are_part_of_the_etag[webp-changed2]",),
    ),
    Mutation(
        "etag-without-png-level",
        "the ETag no longer names PNG's compression level",
        '"png": f"z{self.png_compress_level}",',
        '"png": "",',
        ("tests/test_http_caching.py::test_encoder_settings_are_part_of_the_etag[png-changed1]",),
    ),
    Mutation(
        "if-range-weak",
        "If-Range matches a weak tag",
        'return not value.startswith("W/") and value == etag',
        'return value.removeprefix("W/") == etag',
        (
            "tests/test_http_caching.py::test_if_range_on_the_stored_copy_takes_its_exact_date_or_strong_tag",
        ),
    ),
    Mutation(
        "if-range-later-date",
        "If-Range holds for any date at or after Last-Modified",
        "return since is not None and since == last_modified.replace(microsecond=0)",
        "return since is not None and since >= last_modified.replace(microsecond=0)",
        (
            "tests/test_http_caching.py::test_if_range_on_the_stored_copy_takes_its_exact_date_or_strong_tag",
        ),
    ),
    Mutation(
        "if-range-rendition-date",
        "a date in If-Range splices a range of the new model's render onto the old one's",
        "headers, range, if_range, None)",
        "headers, range, if_range, rendition.last_modified)",
        (
            "tests/test_admin_models.py::test_a_range_resumed_across_a_swap_is_never_spliced_from_two_renders[embedded]",
        ),
    ),
]


def tree_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [Path(name) for name in listed.split("\0") if name and (ROOT / name).is_file()]


def copy_tree(target: Path) -> None:
    for relative in tree_files():
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, destination)


def apply(mutation: Mutation, tree: Path) -> Path:
    """Substitute in the one source file holding the snippet exactly once."""
    holders = [
        path
        for package in PACKAGES
        if (tree / package).is_dir()
        for path in (tree / package).rglob("*.py")
        if mutation.original in path.read_text()
    ]
    if len(holders) != 1 or holders[0].read_text().count(mutation.original) != 1:
        raise SystemExit(f"{mutation.name}: the snippet must occur once, found in {holders}")
    path = holders[0]
    path.write_text(path.read_text().replace(mutation.original, mutation.replacement))
    return path.relative_to(tree)


def run_tests(mutation: Mutation, tree: Path) -> int:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [*command, *mutation.tests], cwd=tree, env=env, capture_output=True, text=True
    )
    if result.returncode not in (0, 1):  # not a verdict: show why
        print(result.stdout[-2000:], result.stderr[-2000:], sep="\n")
    return result.returncode


def main(names: list[str]) -> int:
    chosen = [m for m in MUTATIONS if not names or m.name in names]
    survived = []
    print(f"{'mutation':<28} {'file':<28} {'seconds':>7}  result")
    for mutation in chosen:
        with tempfile.TemporaryDirectory(prefix=f"mutation-{mutation.name}-") as folder:
            tree = Path(folder)
            copy_tree(tree)
            where = apply(mutation, tree)
            started = time.monotonic()
            code = run_tests(mutation, tree)
        # pytest: 1 = tests failed (caught); 0 = all passed (survived); others = broken run.
        result = {0: "SURVIVED", 1: "caught"}.get(code, f"error (pytest exit {code})")
        if code != 1:
            survived.append(mutation.name)
        print(f"{mutation.name:<28} {where!s:<28} {time.monotonic() - started:7.0f}  {result}")
    print(f"{len(chosen) - len(survived)} of {len(chosen)} named mutations caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
