"""Quality floors as a client writes them (``?floor=psnr:38``, ``SRSTORE_QUALITY_FLOOR``), when
a score meets one, and how a receipt's scores read back.

The API tests upload through these rules; here each is stated at its edge, fast enough for
mutmut to run against every mutant of ``policy.receipts``.
"""

from __future__ import annotations

import json
import math

import pytest

from policy import Floor, InvalidFloor, Receipt, Score


@pytest.mark.parametrize(
    ("text", "metric", "value"),
    [
        ("psnr:38", "psnr", 38.0),
        ("  psnr:38.5 ", "psnr", 38.5),
        ("ssim:0.97", "ssim", 0.97),
        ("ssim:1", "ssim", 1.0),
        ("ssim:1e-9", "ssim", 1e-9),
    ],
)
def test_a_floor_is_a_metric_and_a_number(text: str, metric: str, value: float) -> None:
    floor = Floor.parse(text)

    assert (floor.metric, floor.value) == (metric, value)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "psnr",
        "psnr:",
        "psnr:high",
        "psnr:nan",
        "psnr:inf",
        "ssim:-inf",
        "PSNR:38",
        "butteraugli:2",
        "psnr;38",
        ":38",
    ],
)
def test_a_floor_not_written_metric_colon_number_is_refused_naming_the_forms(text: str) -> None:
    with pytest.raises(InvalidFloor) as refused:
        Floor.parse(text)

    assert str(refused.value) == f"a floor is psnr:<dB> or ssim:<0..1>, not {text!r}"


@pytest.mark.parametrize(
    ("text", "shown"), [("ssim:0", "0"), ("ssim:1.5", "1.5"), ("ssim:-0.2", "-0.2")]
)
def test_an_ssim_floor_outside_zero_to_one_is_refused(text: str, shown: str) -> None:
    with pytest.raises(InvalidFloor) as refused:
        Floor.parse(text)

    assert str(refused.value) == f"an SSIM floor lies in (0, 1], not {shown}"


def test_a_score_meets_a_floor_at_or_above_it_in_the_floors_metric() -> None:
    psnr, ssim = Floor.parse("psnr:38"), Floor.parse("ssim:0.95")

    assert psnr.met_by(Score(psnr=38.0, ssim=0.1))
    assert psnr.met_by(Score(psnr=math.inf, ssim=0.1))
    assert not psnr.met_by(Score(psnr=37.99, ssim=1.0))
    assert ssim.met_by(Score(psnr=0.0, ssim=0.95))
    assert not ssim.met_by(Score(psnr=99.0, ssim=0.9499))


def test_a_floor_reads_back_as_written_in_its_shortest_form() -> None:
    assert str(Floor.parse("psnr:38.0")) == "psnr:38"
    assert str(Floor.parse(" ssim:0.970 ")) == "ssim:0.97"
    assert Floor.parse(str(Floor.parse("psnr:36.25"))) == Floor.parse("psnr:36.25")


def test_an_identical_copy_scores_infinity_and_the_receipt_says_so_in_json() -> None:
    receipt = Receipt(
        policy="guarded",
        floor="psnr:38",
        representation="original",
        stored_bytes=10,
        model="none",
        psnr=math.inf,
        ssim=1.0,
        meets_floor=True,
        x4=Score(psnr=math.inf, ssim=1.0),
    )

    body = json.loads(receipt.model_dump_json())
    assert body["psnr"] == "Infinity"
    assert body["x4"] == {"psnr": "Infinity", "ssim": 1.0}
    assert body["state"] == "done"
    assert Receipt.model_validate_json(receipt.model_dump_json()) == receipt
