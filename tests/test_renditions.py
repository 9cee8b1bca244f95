"""How a read's options become one rendition: its cache key and ETag, the format a client's
Accept gets, which URLs must be signed, which sizes an unsigned URL may ask for, and how many
distinct renditions one image may be made to render.

These are the rules the API tests reach through HTTP, stated one at a time at their edges
(fast enough for mutmut to run against every mutant of ``app.services.renditions``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.services.renditions import (
    InvalidSignature,
    RenditionBudget,
    RenditionLimit,
    RenditionPlan,
    RenditionRequest,
    SizeNotAllowed,
    check_access,
    etag_of,
    negotiate,
    plan_rendition,
    sign,
    snap_quality,
    verify_signature,
)
from config.settings import Settings
from imaging import InvalidSize, UnencodableFormat

KEY = "a-signing-key-long-enough"
IMAGE = "img1"


def settings(**overrides: object) -> Settings:
    return Settings(data_dir=Path("unused"), **overrides)  # type: ignore[arg-type]


def request(**options: object) -> RenditionRequest:
    """A request whose raw query names exactly the options given (as the route builds it)."""
    names = {"width": "w", "height": "h", "fmt": "format", "signature": "sig"}
    query = tuple(
        (names.get(name, name), str(value).lower())
        for name, value in options.items()
        if name != "accept"
    )
    return RenditionRequest(**options, query=query)  # type: ignore[arg-type]


def plan(
    req: RenditionRequest | None = None,
    size: tuple[int, int] = (800, 400),
    model: str = "espcn-v1",
    **overrides: object,
) -> RenditionPlan:
    """The plan for a read of an 800x400 JPEG upload (by default) served by ``model``."""
    width, height = size
    request = req or RenditionRequest()
    return plan_rendition(IMAGE, width, height, "jpeg", request, model, settings(**overrides))


# Signatures -------------------------------------------------------------------------------


def test_a_signature_is_the_documented_hmac_of_the_id_and_sorted_options() -> None:
    message = f"{IMAGE}?format=webp&w=300".encode()
    digest = hmac.new(KEY.encode(), message, hashlib.sha256).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    assert sign(KEY, IMAGE, [("w", "300"), ("format", "webp")]) == expected
    assert sign(KEY, IMAGE, [("sig", "old"), ("format", "webp"), ("w", "300")]) == expected
    assert "=" not in expected


def test_a_signature_verifies_only_with_its_key_image_and_options() -> None:
    query = [("w", "300"), ("format", "webp")]
    signed = settings(url_signing_key=SecretStr(KEY))
    good = sign(KEY, IMAGE, query)

    verify_signature(signed, IMAGE, [*query, ("sig", good)])
    for image_id, pairs in (
        ("img2", [*query, ("sig", good)]),
        (IMAGE, [("w", "301"), ("format", "webp"), ("sig", good)]),
        (IMAGE, [*query, ("sig", sign("another-key-long-enough", IMAGE, query))]),
    ):
        with pytest.raises(InvalidSignature) as mismatch:
            verify_signature(signed, image_id, pairs)
        assert str(mismatch.value) == "the URL's signature does not match its options"
    for unsigned, pairs in ((signed, query), (settings(), [*query, ("sig", good)])):
        with pytest.raises(InvalidSignature) as refused:
            verify_signature(unsigned, IMAGE, pairs)
        assert str(refused.value) == "this URL must be signed (sig=)"


def test_with_a_signing_key_every_option_needs_a_valid_signature() -> None:
    signed = settings(url_signing_key=SecretStr(KEY))
    for option in (
        {"width": 300},
        {"height": 300},
        {"fit": "cover"},
        {"dpr": 2.0},
        {"enlarge": True},
        {"fmt": "webp"},
        {"quality": 50},
    ):
        with pytest.raises(InvalidSignature) as unsigned:
            check_access(IMAGE, request(**option), signed)
        assert str(unsigned.value) == "this URL has rendition options and must be signed (sig=)"
        bad = request(**option, signature="not-the-signature")
        with pytest.raises(InvalidSignature, match=r"^the URL's signature does not match"):
            check_access(IMAGE, bad, signed)


def test_a_signed_url_may_ask_for_any_size_and_a_plain_url_needs_no_signature() -> None:
    signed = settings(url_signing_key=SecretStr(KEY), allowed_widths=frozenset({320}))
    options = (("w", "999"), ("h", "10"))
    sig = sign(KEY, IMAGE, options)
    good = RenditionRequest(width=999, height=10, signature=sig, query=(*options, ("sig", sig)))

    check_access(IMAGE, good, signed)
    check_access(IMAGE, RenditionRequest(query=(("download", "1"),)), signed)
    check_access(IMAGE, RenditionRequest(), signed)


def test_without_a_signing_key_a_signature_is_not_asked_for() -> None:
    check_access(IMAGE, request(width=300, fmt="webp"), settings())


# The allow-list of widths -----------------------------------------------------------------


def test_unsigned_sizes_must_be_an_allowed_width_times_dpr_without_a_height() -> None:
    listed = settings(allowed_widths=frozenset({640, 320}))

    check_access(IMAGE, request(width=320), listed)
    check_access(IMAGE, request(width=320, dpr=2.0), listed)  # 640 pixels
    check_access(IMAGE, request(fmt="webp"), listed)  # not sized
    for refused in (
        request(width=321),
        request(width=640, dpr=2.0),  # 1280 pixels
        request(width=320, height=200),
        request(height=320),
    ):
        with pytest.raises(SizeNotAllowed) as raised:
            check_access(IMAGE, refused, listed)
        assert str(raised.value) == "ask for w= (times dpr) one of 320, 640, without h="


def test_without_an_allow_list_any_size_is_served_unsigned() -> None:
    check_access(IMAGE, request(width=321, height=17, dpr=3.0), settings())


def test_the_requested_box_is_css_pixels_times_dpr() -> None:
    assert request(width=100, height=50, dpr=1.5).box() == (150, 75)
    assert request(width=100).box() == (100, None)
    assert request(height=100).box() == (None, 100)
    assert request().box() == (None, None)


# Format negotiation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "avif", "expected"),
    [
        ("image/avif,image/webp,*/*", True, "avif"),
        ("image/avif,image/webp,*/*", False, "webp"),
        ("image/avif,*/*", False, "jpeg"),
        ("image/webp", True, "webp"),
        ("IMAGE/WEBP", True, "webp"),
        ("image/avif;q=0, image/webp;q=0.5", True, "webp"),
        ("image/avif;q=0.1, image/webp", True, "avif"),
        ("image/avif; Q=0 , image/webp ;q=0", True, "jpeg"),
        ("image/avif;q=zero,image/webp;q=oops", True, "jpeg"),  # an unreadable q refuses
        ("image/avif;q=0=1", True, "jpeg"),
        ("image/avif;level=1;q=0.2", True, "avif"),
        ("*/*", True, "jpeg"),
        ("image/*", True, "jpeg"),
        ("", True, "jpeg"),
        (",,;q=1,", True, "jpeg"),
    ],
)
def test_accept_picks_avif_then_webp_then_the_uploads_own_format(
    accept: str, avif: bool, expected: str
) -> None:
    assert negotiate(accept, "jpeg", avif) == expected


# Plans: one key and one ETag per distinct picture -----------------------------------------


def test_a_plain_read_is_the_models_own_size_in_the_uploads_format() -> None:
    plain = plan()

    assert str(plain.key) == "hr:{img1}:espcn-v1:jpeg:90::"
    assert plain.etag == etag_of(str(plain.key))
    assert plain.fmt == "jpeg"
    assert plain.geometry.scaled == plain.geometry.canvas == (800, 400)
    assert not plain.from_stored_copy
    assert plain.negotiated
    assert not plain.degraded


def test_asking_explicitly_for_what_a_plain_read_gets_is_the_same_rendition() -> None:
    plain = plan()
    for same in (
        request(fmt="jpeg"),
        request(quality=90),
        request(width=800),
        request(height=400),
        request(width=800, height=400, fit="fill"),
        request(width=400, dpr=2.0),
    ):
        assert plan(same).key == plain.key, same
    assert not plan(request(fmt="jpeg")).negotiated


def test_a_rendition_is_keyed_to_the_stored_copy_it_is_made_from() -> None:
    """Compaction may replace an image's stored copy: what was made from the old one is
    another rendition, under another ETag."""
    plain = RenditionRequest()
    made = [
        plan_rendition(IMAGE, 800, 400, "jpeg", plain, "espcn-v1", settings(), source)
        for source in ("", "9f2c41d07ab3", "0e8a5b6c1d24")
    ]

    assert str(made[1].key) == "hr:{img1}:espcn-v1:jpeg:90:::9f2c41d07ab3"
    assert len({plan.key for plan in made}) == len({plan.etag for plan in made}) == 3


def test_a_size_at_or_below_the_stored_copy_is_served_from_it_without_a_model() -> None:
    at_stored = plan(request(width=200))  # the stored copy is 800/4 x 400/4
    above = plan(request(width=201))
    tall = plan(request(height=101))

    assert at_stored.from_stored_copy
    assert str(at_stored.key) == "hr:{img1}:none:jpeg:90:200x100:"
    assert not above.from_stored_copy
    assert above.key.model == "espcn-v1"
    assert above.key.variant == "201x100"
    assert not tall.from_stored_copy
    stretched = plan(request(width=200, height=400, fit="fill"))  # taller than the stored copy
    assert not stretched.from_stored_copy


def test_sizes_name_their_fit_and_default_to_inside() -> None:
    inside = plan(request(width=400, height=400))
    cover = plan(request(width=400, height=400, fit="cover"))

    assert inside.geometry.scaled == (400, 200)
    assert plan(request(width=400, height=400, fit="inside")).key == inside.key
    assert cover.geometry.canvas == (400, 400)
    assert cover.key.variant == "800x400:400x400:-200:0"


def test_the_bicubic_fallback_is_marked_degraded_and_keyed_apart() -> None:
    fallback = plan(model="bicubic")

    assert fallback.degraded
    assert fallback.key.model == "bicubic"
    assert fallback.etag != plan().etag


def test_a_negotiated_format_keys_its_encoder_settings_and_default_quality() -> None:
    webp = plan(request(accept="image/webp"))
    avif = plan(request(accept="image/avif"))
    png = plan(request(fmt="png"))

    assert webp.fmt == "webp" and webp.negotiated
    assert str(webp.key) == "hr:{img1}:espcn-v1:webp:85::m2"
    assert str(avif.key) == "hr:{img1}:espcn-v1:avif:60::s8"
    assert str(png.key) == "hr:{img1}:espcn-v1:png:0::z1"
    assert plan(request(accept="image/avif"), output_avif=False).fmt == "jpeg"


def test_a_format_that_cannot_encode_the_size_falls_back_to_png_unless_named() -> None:
    wide = (20_000, 10)  # WebP stops at 16383 pixels a side

    assert plan(request(accept="image/webp"), size=wide).fmt == "png"
    assert plan(request(accept="image/webp", width=16_383), size=wide).fmt == "webp"
    with pytest.raises(UnencodableFormat) as refused:
        plan(request(fmt="webp"), size=wide)
    assert str(refused.value) == "webp cannot encode a 20000x10 image; ask for png"


def test_unsigned_qualities_snap_to_a_step_and_signed_ones_are_exact() -> None:
    signed = {"url_signing_key": SecretStr(KEY)}

    assert plan(request(quality=88)).key.quality == 90
    assert plan(request(quality=88, signature="checked-by-the-route"), **signed).key.quality == 88
    assert plan(request(quality=88, signature="ignored without a key")).key.quality == 90
    assert plan(request(quality=88), quality_steps=frozenset()).key.quality == 88
    assert plan(request(quality=88, fmt="png")).key.quality is None


def test_qualities_snap_to_the_nearest_step_and_up_on_a_tie() -> None:
    steps = frozenset({80, 90})

    assert snap_quality(84, steps) == 80
    assert snap_quality(85, steps) == 90
    assert snap_quality(86, steps) == 90
    assert snap_quality(1, steps) == 80


def test_an_enlargement_is_bounded_by_the_output_limit_unless_the_image_is_larger() -> None:
    small = (500, 500)

    grown = plan(request(width=1000, enlarge=True), size=small, max_output_pixels=1_000_000)
    assert grown.geometry.scaled == (1000, 1000)
    with pytest.raises(InvalidSize):
        plan(request(width=1001, enlarge=True), size=small, max_output_pixels=1_000_000)
    own = plan(request(width=1000, enlarge=True), size=(1000, 1000), max_output_pixels=10)
    assert own.geometry.scaled == (1000, 1000)
    with pytest.raises(InvalidSize):  # and never past the image limit
        plan(request(width=1001, enlarge=True), size=small, max_pixels=1_000_000)
    unenlarged = plan(request(width=1000), size=small, max_output_pixels=10)
    assert unenlarged.geometry.scaled == small


def test_an_etag_is_a_strong_tag_of_the_name() -> None:
    tag = etag_of("hr:{a}:x")

    assert tag.startswith('"') and tag.endswith('"')
    assert len(tag) == 34
    assert tag == '"' + hashlib.sha256(b"hr:{a}:x").hexdigest()[:32] + '"'
    assert etag_of("hr:{b}:x") != tag


# The per-image quota of renditions from unsigned URLs -------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_past_its_quota_an_image_refuses_new_renditions_with_the_time_left() -> None:
    clock = Clock()
    budget = RenditionBudget(per_image=2, window_seconds=100, clock=clock)
    budget.admit("a", "k1")
    budget.admit("a", "k2")
    clock.now = 10.5

    with pytest.raises(RenditionLimit) as refused:
        budget.admit("a", "k3")
    assert refused.value.retry_after == 90  # 89.5 s left, rounded up
    assert str(refused.value) == (
        "this image already has 2 renditions made by unsigned URLs "
        "(SRSTORE_MAX_RENDITIONS_PER_IMAGE); ask for one of those, or sign the URL"
    )
    budget.admit("a", "k1")
    budget.admit("a", "k2")
    budget.admit("b", "k3")  # another image has its own quota


def test_the_time_to_wait_is_between_one_second_and_five_minutes() -> None:
    clock = Clock()
    budget = RenditionBudget(per_image=1, window_seconds=3600, clock=clock)
    budget.admit("a", "k1")
    with pytest.raises(RenditionLimit) as early:
        budget.admit("a", "k2")
    clock.now = 3599.9
    with pytest.raises(RenditionLimit) as late:
        budget.admit("a", "k2")

    assert early.value.retry_after == 300
    assert late.value.retry_after == 1


def test_the_quota_starts_again_exactly_one_window_after_the_first_rendition() -> None:
    clock = Clock()
    clock.now = 1000.0
    budget = RenditionBudget(per_image=1, window_seconds=60, clock=clock)
    budget.admit("a", "k1")
    clock.now = 1059.0
    with pytest.raises(RenditionLimit):
        budget.admit("a", "k2")
    clock.now = 1060.0
    budget.admit("a", "k2")
    with pytest.raises(RenditionLimit):
        budget.admit("a", "k1")  # the new window holds k2 only


def test_by_default_the_quota_is_per_hour_for_the_last_ten_thousand_images() -> None:
    clock = Clock()
    budget = RenditionBudget(per_image=1, clock=clock)
    budget.admit("a", "k1")
    clock.now = 3599.0
    with pytest.raises(RenditionLimit):
        budget.admit("a", "k2")
    clock.now = 3600.0
    budget.admit("a", "k2")
    for other in range(9_999):
        budget.admit(f"other-{other}", "k1")
    with pytest.raises(RenditionLimit):
        budget.admit("a", "k3")  # still remembered: 10,000 images in all
    budget.admit("one-more", "k1")
    budget.admit("other-0", "k2")  # the oldest was forgotten


def test_only_the_most_recently_used_images_are_remembered() -> None:
    clock = Clock()
    budget = RenditionBudget(per_image=1, images=2, clock=clock)
    budget.admit("a", "k1")
    budget.admit("b", "k1")
    budget.admit("a", "k1")  # a is used again: b is now the oldest
    budget.admit("c", "k1")  # b is forgotten

    with pytest.raises(RenditionLimit):
        budget.admit("a", "k2")
    with pytest.raises(RenditionLimit):
        budget.admit("c", "k2")
    budget.admit("b", "k2")
