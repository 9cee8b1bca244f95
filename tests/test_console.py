"""The console at /console, driven in a real headless Chromium against a running ``srstore serve``.

Each test does what a person would do in the page and asserts on what the page shows, checked
against what the API itself answers. The browser can reach 127.0.0.1 only: names resolve to
nothing and every other request goes to a proxy that refuses it. Screenshots of each view are
written to ``runs/console/<time>/`` (the README's come from there).
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from selenium.webdriver import ActionChains, Chrome, Keys
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from imaging import bicubic_upscale, crop_to
from tests.support.browser import RefusingProxy, chromium, requested_urls
from tests.support.compaction import compacted_sync
from tests.support.process import ApiProcess, start_api
from tests.support.weights import noisy, to_bytes

pytestmark = pytest.mark.slow  # one server and one browser for the module, a minute to start

REPO = Path(__file__).resolve().parent.parent
PHOTOS = [
    REPO / "tests/data/flower.jpg",
    REPO / "tests/data/storm.jpg",
    *sorted((REPO / "models/canary").glob("*.jpg")),
]
TOKEN = "console-admin-token-for-tests"
BY = "\N{MULTIPLICATION SIGN}"  # how the page writes sizes, as in 602 BY 402

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    """``srstore serve`` in the embedded default with the shipped model versions."""
    data = tmp_path_factory.mktemp("console")
    env = {"SRSTORE_DATA_DIR": str(data / "data"), "SRSTORE_ADMIN_TOKEN": TOKEN}
    api = start_api(env, log_path=data / "serve.log")
    yield api
    api.stop()


@pytest.fixture(scope="module")
def proxy() -> Iterator[RefusingProxy]:
    refusing = RefusingProxy()
    yield refusing
    refusing.stop()


@pytest.fixture(scope="module")
def browser(proxy: RefusingProxy) -> Iterator[Chrome]:
    with chromium(proxy) as driver:
        yield driver


@pytest.fixture(autouse=True)
def no_script_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """A script error in the page fails the test that caused it, whatever it asserted.

    Failed requests (a 401 or 404 the test asked for) are logged too; only those are allowed.
    """
    if "browser" not in request.fixturenames:
        yield
        return
    browser: Chrome = request.getfixturevalue("browser")
    browser.get_log("browser")
    yield
    errors = [
        e["message"]
        for e in browser.get_log("browser")
        if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
    ]
    assert errors == []


@pytest.fixture(scope="module")
def api(service: ApiProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def screenshots() -> Path:
    folder = REPO / "runs" / "console" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait(driver: Chrome, timeout: float = 60) -> WebDriverWait[Chrome]:
    return WebDriverWait(driver, timeout)


def by_id(driver: Chrome, element_id: str) -> WebElement:
    return driver.find_element(By.ID, element_id)


def open_view(driver: Chrome, service: ApiProcess, route: str) -> None:
    """A fresh load of the page at ``route`` (a hash change alone would keep the old page)."""
    driver.get("about:blank")
    driver.get(f"{service.url}/console/#{route}")
    wait(driver).until(lambda d: by_id(d, f"view-{route.split('/')[0]}").is_displayed())


def screenshot(driver: Chrome, path: Path) -> None:
    """The whole page, not only the window: DevTools' capture beyond the viewport."""
    width, height = driver.execute_script(
        "const e = document.documentElement; return [e.scrollWidth, e.scrollHeight];"
    )
    clip = {"x": 0, "y": 0, "width": width, "height": min(height, 2400), "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.write_bytes(base64.b64decode(shot["data"]))


def upload_via_api(api: httpx.Client, path: Path) -> dict:
    """The upload's metadata once compaction has recorded its receipt."""
    response = api.post("/v1/images", files={"file": (path.name, path.read_bytes(), "image/jpeg")})
    assert response.status_code == 201, response.text
    return dict(compacted_sync(api, response.json()["id"]))


def percent(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"


def test_the_root_redirects_to_a_console_that_loads_with_the_network_blocked(
    browser: Chrome, service: ApiProcess, api: httpx.Client
) -> None:
    upload_via_api(api, PHOTOS[0])
    requested_urls(browser)  # drop what the browser did before

    browser.get(f"{service.url}/")
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery-grid li"))
    for view in ("upload", "compare", "admin", "gallery"):
        browser.find_element(By.CSS_SELECTOR, f'nav a[data-view="{view}"]').click()
        wait(browser).until(lambda d, v=view: by_id(d, f"view-{v}").is_displayed())
    expected = {f"{service.url}/console/js/main.js", f"{service.url}/v1/images?limit=24"}
    urls: list[str] = []

    def settled(driver: Chrome) -> bool:  # the log is drained by each read: keep what it held
        urls.extend(requested_urls(driver))
        return expected <= set(urls) and (
            driver.execute_script("return document.readyState") == "complete"
        )

    wait(browser).until(settled)

    assert browser.current_url.startswith(f"{service.url}/console/")
    assert browser.title == "srstore console"
    assert [u for u in urls if not u.startswith((service.url + "/", "blob:", "data:"))] == []
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_the_console_is_served_with_a_policy_that_allows_its_own_origin_only(
    api: httpx.Client,
) -> None:
    root = api.get("/")
    page = api.get("/console/")
    script = api.get("/console/js/main.js")

    assert (root.status_code, root.headers["location"]) == (307, "/console/")
    assert page.status_code == script.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "javascript" in script.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    assert "http" not in policy
    assert api.get("/console/nothing.js").status_code == 404


def test_no_console_file_names_another_origin() -> None:
    files = [p for p in (REPO / "app/console").rglob("*") if p.is_file()]

    absolute = re.compile(r"""https?:|wss?:|["'(=]\s*//""")  # a scheme, or protocol-relative

    assert {p.suffix for p in files} == {".html", ".css", ".js"}
    assert [p.name for p in files if absolute.search(p.read_text())] == []


def test_the_network_check_would_see_an_external_request(
    browser: Chrome, proxy: RefusingProxy
) -> None:
    """The control for the test above: a page that does reach out is noticed, and refused."""
    requested_urls(browser)

    browser.get("data:text/html,<img src='http://cdn.example.com/font.png'>")
    wait(browser, 10).until(lambda _: any("cdn.example.com" in r for r in proxy.requests))

    assert "http://cdn.example.com/font.png" in requested_urls(browser)


def test_several_files_upload_with_a_progress_bar_each_and_the_answer_in_words(
    browser: Chrome, service: ApiProcess, api: httpx.Client, screenshots: Path
) -> None:
    open_view(browser, service, "upload")

    by_id(browser, "file-input").send_keys("\n".join(str(p) for p in PHOTOS))
    wait(browser).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".upload-item[data-id]")) == len(PHOTOS)
    )

    items = browser.find_elements(By.CSS_SELECTOR, ".upload-item")
    assert sorted(i.find_element(By.CLASS_NAME, "upload-name").text for i in items) == sorted(
        p.name for p in PHOTOS
    )
    for item in items:
        meta = api.get(f"/v1/images/{item.get_attribute('data-id')}/meta").json()
        name = item.find_element(By.CLASS_NAME, "upload-name").text
        assert (
            meta["original_bytes"]
            == (REPO / next(str(p) for p in PHOTOS if p.name == name)).stat().st_size
        )
        progress = item.find_element(By.TAG_NAME, "progress")
        assert progress.get_attribute("value") == "100"
        assert progress.get_attribute("aria-label") == f"Upload progress of {name}"
        saved = meta["original_bytes"] - meta["stored_bytes"]
        text = item.find_element(By.CLASS_NAME, "upload-result").text
        assert f"saved ({percent(saved / meta['original_bytes'])}," in text
        ratio = meta["original_bytes"] / meta["stored_bytes"]
        assert f"{ratio:.1f}x smaller" in text
        assert f"{meta['width']}{BY}{meta['height']} JPEG, stored as " in text
        assert f"stored as {meta['stored_width']}{BY}{meta['stored_height']}" in text
        # The list shows the upload's answer: its receipt is pending until compaction.
        receipt = meta["receipt"]
        assert (
            f"Quality receipt: pending (policy {receipt['policy']}, floor {receipt['floor']})"
            in text
        )
        thumbnail = item.find_element(By.TAG_NAME, "img")
        wait(browser).until(lambda _, t=thumbnail: t.get_property("naturalWidth"))
        assert thumbnail.get_property("naturalWidth") == meta["stored_width"]
    screenshot(browser, screenshots / "upload.png")


def test_a_file_dropped_on_the_page_is_uploaded(
    browser: Chrome, service: ApiProcess, api: httpx.Client
) -> None:
    open_view(browser, service, "upload")

    browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const canvas = document.createElement("canvas");
        canvas.width = 40; canvas.height = 24;
        const context = canvas.getContext("2d");
        context.fillStyle = "#3a7"; context.fillRect(0, 0, 40, 24);
        canvas.toBlob((blob) => {
          const transfer = new DataTransfer();
          transfer.items.add(new File([blob], "dropped.png", { type: "image/png" }));
          const zone = document.getElementById("drop-zone");
          const drop = { dataTransfer: transfer, bubbles: true, cancelable: true };
          zone.dispatchEvent(new DragEvent("drop", drop));
          done();
        }, "image/png");
        """
    )
    item = wait(browser).until(
        lambda d: d.find_element(By.CSS_SELECTOR, ".upload-item:first-child[data-id]")
    )

    assert item.find_element(By.CLASS_NAME, "upload-name").text == "dropped.png"
    meta = api.get(f"/v1/images/{item.get_attribute('data-id')}/meta").json()
    assert (meta["width"], meta["height"], meta["content_type"]) == (40, 24, "image/png")
    assert f"40{BY}24 PNG, stored as 10{BY}6" in item.text


def test_a_refused_upload_says_why(browser: Chrome, service: ApiProcess, tmp_path: Path) -> None:
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("not an image")
    open_view(browser, service, "upload")

    by_id(browser, "file-input").send_keys(str(not_an_image))
    result = wait(browser).until(
        lambda d: d.find_element(By.CSS_SELECTOR, ".upload-item:first-child .upload-result.error")
    )

    assert result.text.startswith("Not stored: ")
    assert "(unsupported_media_type)" in result.text


def gallery_ids(driver: Chrome) -> list[str]:
    """Read in one script, so a page being re-rendered cannot go stale halfway."""
    script = "return [...document.querySelectorAll('#gallery-grid li')].map((li) => li.dataset.id)"
    return list(driver.execute_script(script))


def test_the_gallery_pages_through_every_image_with_thumbnails(
    browser: Chrome, service: ApiProcess, api: httpx.Client, screenshots: Path
) -> None:
    for n in range(25):
        photo = Image.open(PHOTOS[n % 2]).convert("RGB")
        left, top = (n * 37) % (photo.width - 240), (n * 23) % (photo.height - 160)
        crop = photo.crop((left, top, left + 240, top + 160))
        data = io.BytesIO()
        crop.save(data, "JPEG", quality=90)
        response = api.post(
            "/v1/images", content=data.getvalue(), headers={"content-type": "image/jpeg"}
        )
        assert response.status_code == 201
    first = api.get("/v1/images", params={"limit": 24}).json()
    second = api.get("/v1/images", params={"limit": 24, "cursor": first["next_cursor"]}).json()

    open_view(browser, service, "gallery")
    wait(browser).until(lambda d: len(gallery_ids(d)) == 24)
    page_one = gallery_ids(browser)
    wait(browser).until(
        lambda d: all(
            img.get_property("complete") and img.get_property("naturalWidth")
            for img in d.find_elements(By.CSS_SELECTOR, "#gallery-grid img")
        )
    )
    screenshot(browser, screenshots / "gallery.png")
    cards = browser.find_elements(By.CSS_SELECTOR, "#gallery-grid li")
    for card, meta in zip(cards, first["images"], strict=True):
        thumbnail = card.find_element(By.TAG_NAME, "img")
        assert thumbnail.get_property("naturalWidth") == min(320, meta["width"] // 4)
        made = api.get(str(thumbnail.get_property("src")))  # sized on read from the stored copy
        assert made.headers["x-model-version"] == "none"
        assert thumbnail.get_attribute("alt").startswith(f"{meta['width']}{BY}{meta['height']} ")
        assert percent(meta["stored_bytes"] / meta["original_bytes"]) in card.text
    assert by_id(browser, "gallery-prev").get_property("disabled") is True

    by_id(browser, "gallery-next").click()
    wait(browser).until(lambda d: by_id(d, "gallery-page").text == "Page 2")
    wait(browser).until(lambda d: gallery_ids(d) and gallery_ids(d)[0] != page_one[0])

    assert page_one == [image["id"] for image in first["images"]]
    assert gallery_ids(browser) == [image["id"] for image in second["images"]]
    by_id(browser, "gallery-prev").click()
    wait(browser).until(lambda d: gallery_ids(d) == page_one)


def canvas_pixels(driver: Chrome, element_id: str) -> np.ndarray:
    url = driver.execute_script(f"return document.getElementById('{element_id}').toDataURL()")
    png = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def test_compare_shows_the_served_image_against_bicubic_with_the_stored_copy_and_model(
    browser: Chrome, service: ApiProcess, api: httpx.Client, screenshots: Path
) -> None:
    meta = upload_via_api(api, PHOTOS[0])
    stored = api.get(f"/v1/images/{meta['id']}/stored").content
    served = api.get(f"/v1/images/{meta['id']}")

    open_view(browser, service, f"compare/{meta['id']}")
    wait(browser).until(lambda d: by_id(d, "compare-body").is_displayed())
    wait(browser).until(lambda d: by_id(d, "compare-served").get_property("naturalWidth"))

    facts = by_id(browser, "compare-served-facts").text
    assert f"Model version\n{served.headers['x-model-version']}" in facts
    assert f"Size\n602{BY}402 px" in facts
    stored_facts = by_id(browser, "compare-stored-facts").text
    assert f"({len(stored)} bytes)" in stored_facts
    assert f"Size\n151{BY}101 px" in stored_facts
    assert by_id(browser, "compare-stored").get_property("naturalWidth") == 151
    assert by_id(browser, "compare-served").get_property("naturalWidth") == 602
    assert by_id(browser, "compare-tag-left").text == "bicubic"
    receipt = by_id(browser, "compare-receipt").text
    assert "Receipt\ndone" in receipt
    assert f"Y-PSNR vs upload\n{meta['receipt']['psnr']:.2f} dB" in receipt
    # The left side is Pillow's bicubic upscale of the stored copy, the service's baseline:
    # identical here (Chromium and Pillow decode the WebP with the same libwebp); one level of
    # rounding is allowed for another decoder.
    expected = crop_to(bicubic_upscale(Image.open(io.BytesIO(stored)).convert("RGB")), 602, 402)
    shown = canvas_pixels(browser, "compare-bicubic")
    difference = np.abs(shown - np.asarray(expected, dtype=np.int16))
    assert shown.shape == (402, 602, 3)
    assert difference.max() <= 1
    screenshot(browser, screenshots / "compare.png")


def clip_of_served(driver: Chrome) -> str:
    return str(by_id(driver, "compare-served").value_of_css_property("clip-path"))


def test_the_split_follows_the_keyboard_and_a_drag_and_zooms_to_one_to_one(
    browser: Chrome, service: ApiProcess, api: httpx.Client, screenshots: Path
) -> None:
    meta = upload_via_api(api, PHOTOS[1])
    open_view(browser, service, f"compare/{meta['id']}")
    wait(browser).until(lambda d: by_id(d, "compare-body").is_displayed())
    split = by_id(browser, "split")

    split.send_keys(Keys.HOME, *[Keys.ARROW_RIGHT] * 30)
    assert clip_of_served(browser) == "inset(0px 0px 0px 30%)"

    stage = by_id(browser, "compare-stage")
    width = stage.size["width"]
    ActionChains(browser).move_to_element_with_offset(
        stage, -width // 4, 0
    ).click_and_hold().move_by_offset(width // 2, 0).release().perform()
    assert abs(int(split.get_attribute("value") or 0) - 75) <= 1
    assert clip_of_served(browser) == f"inset(0px 0px 0px {split.get_attribute('value')}%)"

    browser.find_element(By.CSS_SELECTOR, 'input[name="zoom"][value="actual"]').click()
    assert (stage.size["width"], stage.size["height"]) == (meta["width"], meta["height"])
    screenshot(browser, screenshots / "compare-1to1.png")
    browser.find_element(By.CSS_SELECTOR, 'input[name="zoom"][value="fit"]').click()
    assert stage.size["width"] < meta["width"] or meta["width"] <= 1200


def first_card(driver: Chrome) -> str | None:
    """The id of the gallery's first card, read in one step (the grid is redrawn per page)."""
    return driver.execute_script(  # type: ignore[no-any-return]
        "return document.querySelector('#gallery-grid li')?.dataset.id ?? null"
    )


def test_delete_asks_first_and_cancel_keeps_the_image(
    browser: Chrome, service: ApiProcess, api: httpx.Client, screenshots: Path
) -> None:
    meta = upload_via_api(api, PHOTOS[2])
    open_view(browser, service, "gallery")
    card = f'#gallery-grid li[data-id="{meta["id"]}"]'
    while not browser.find_elements(By.CSS_SELECTOR, card):
        shown = first_card(browser)
        by_id(browser, "gallery-next").click()
        wait(browser).until(lambda d, s=shown: first_card(d) not in (s, None))

    browser.find_element(By.CSS_SELECTOR, f"{card} button.danger").click()
    dialog = by_id(browser, "confirm-dialog")
    wait(browser).until(lambda _: dialog.get_property("open"))
    assert meta["id"] in by_id(browser, "confirm-text").text
    screenshot(browser, screenshots / "delete-confirm.png")
    by_id(browser, "confirm-cancel").click()
    wait(browser).until(lambda _: not dialog.get_property("open"))
    assert api.get(f"/v1/images/{meta['id']}/meta").status_code == 200
    assert browser.find_elements(By.CSS_SELECTOR, card)

    browser.find_element(By.CSS_SELECTOR, f"{card} button.danger").click()
    wait(browser).until(lambda _: dialog.get_property("open"))
    by_id(browser, "confirm-ok").click()
    wait(browser).until(lambda d: by_id(d, "gallery-status").text == f"Deleted image {meta['id']}.")

    assert not browser.find_elements(By.CSS_SELECTOR, card)
    assert api.get(f"/v1/images/{meta['id']}/meta").status_code == 404
    assert api.get(f"/v1/images/{meta['id']}/stored").status_code == 404


def admin_status(driver: Chrome) -> str:
    return by_id(driver, "admin-status").text


def active_model(api: httpx.Client) -> dict:
    listing = api.get("/v1/admin/models", headers={"Authorization": f"Bearer {TOKEN}"})
    return listing.json()["active"]  # type: ignore[no-any-return]


def test_an_admin_activates_past_the_canary_verdict_and_rolls_back(
    browser: Chrome, service: ApiProcess, api: httpx.Client, screenshots: Path
) -> None:
    image = upload_via_api(api, PHOTOS[0])
    open_view(browser, service, "admin")
    wait(browser).until(lambda d: "Images" in by_id(d, "fleet-facts").text)

    by_id(browser, "admin-token").send_keys("wrong-token-wrong-token", Keys.ENTER)
    wait(browser).until(lambda d: "401 unauthorized" in admin_status(d))
    assert not by_id(browser, "admin-body").is_displayed()

    by_id(browser, "admin-token").send_keys(TOKEN, Keys.ENTER)
    wait(browser).until(lambda d: admin_status(d) == "Active model: espcn:2.")
    assert browser.execute_script("return sessionStorage.getItem('srstore.adminToken')") == TOKEN
    assert browser.execute_script("return localStorage.length + document.cookie.length") == 0
    cards = {
        c.get_attribute("data-model"): c
        for c in browser.find_elements(By.CSS_SELECTOR, "#model-cards li")
    }
    assert set(cards) == {"espcn:1", "espcn:2", "srcnn:1", "srcnn:2"}
    assert "active" in cards["espcn:2"].get_attribute("class")
    srcnn = cards["srcnn:2"]
    assert "worse than the active version" in srcnn.find_element(By.CLASS_NAME, "verdict").text

    srcnn.find_element(By.TAG_NAME, "button").click()
    wait(browser).until(lambda d: by_id(d, "confirm-dialog").get_property("open"))
    assert "below espcn:2" in by_id(browser, "confirm-text").text
    assert admin_status(browser).startswith("Refused by the canary check: srcnn:2 scores")
    screenshot(browser, screenshots / "admin-canary-refusal.png")
    by_id(browser, "confirm-ok").click()
    wait(browser).until(lambda d: admin_status(d).startswith("Activated srcnn:2 (forced)"))
    assert active_model(api) == {"name": "srcnn", "version": 2}
    wait(browser, 30).until(
        lambda _: api.get(f"/v1/images/{image['id']}").headers["x-model-version"] == "srcnn:2"
    )

    by_id(browser, "rollback").click()
    wait(browser).until(lambda d: by_id(d, "confirm-dialog").get_property("open"))
    by_id(browser, "confirm-ok").click()
    wait(browser).until(lambda d: admin_status(d) == "Rolled back: srcnn:2 → espcn:2.")

    assert active_model(api) == {"name": "espcn", "version": 2}
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#history tbody tr")]
    assert rows[0].endswith("rollback srcnn:2 espcn:2 no")
    assert rows[1].endswith("activate espcn:2 srcnn:2 yes")
    active_card = browser.find_element(By.CSS_SELECTOR, '#model-cards li[data-model="espcn:2"]')
    assert "active" in active_card.get_attribute("class")
    # One name and one definition per figure, as `srstore models list` prints them.
    shipped = json.loads((REPO / "models/weights/espcn-x4-v2.json").read_text())
    held_out = shipped["evaluation"]["mean"]["gain_db"]
    assert card_facts(active_card)["Held-out gain"] == f"{held_out:+.2f} dB"
    screenshot(browser, screenshots / "admin.png")


def test_the_fleet_panel_shows_the_ledger_and_hit_rate_from_metrics(
    browser: Chrome, service: ApiProcess, api: httpx.Client
) -> None:
    image = upload_via_api(api, PHOTOS[3])
    for _ in range(3):
        assert api.get(f"/v1/images/{image['id']}").status_code == 200
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in api.get("/metrics").text.splitlines()
        if line.startswith(("srstore_fleet_", "srstore_cache_requests_total"))
    }
    lookups = sum(v for k, v in samples.items() if k.startswith("srstore_cache_requests_total"))
    hits = samples['srstore_cache_requests_total{result="hit"}']

    open_view(browser, service, "admin")
    wait(browser).until(lambda d: "Images" in by_id(d, "fleet-facts").text)

    facts = by_id(browser, "fleet-facts").text
    assert f"Images\n{int(samples['srstore_fleet_images'])}" in facts
    assert f"Saved\n{percent(samples['srstore_fleet_savings_ratio'])}" in facts
    assert f"Cache hit rate\n{percent(hits / lookups)} of {int(lookups)} reads" in facts


CONTRAST = """
function luminance(color) {
  const [r, g, b] = color.match(/[\\d.]+/g).slice(0, 3).map(Number).map((c) => {
    c /= 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
function background(element) {
  for (let e = element; e; e = e.parentElement) {
    const color = getComputedStyle(e).backgroundColor;
    if (color !== "rgba(0, 0, 0, 0)" && color !== "transparent") return color;
  }
  return "rgb(255, 255, 255)";
}
const worst = [];
for (const element of document.querySelectorAll(arguments[0])) {
  if (!element.offsetParent || !element.textContent.trim()) continue;
  const a = luminance(getComputedStyle(element).color), b = luminance(background(element));
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < 4.5) worst.push([element.textContent.trim().slice(0, 30), ratio]);
}
return worst;
"""


def test_every_control_is_labelled_reachable_by_keyboard_and_legible(
    browser: Chrome, service: ApiProcess, api: httpx.Client
) -> None:
    image = upload_via_api(api, PHOTOS[0])
    for view in ("upload", "gallery", f"compare/{image['id']}", "admin"):
        open_view(browser, service, view)
        if view.startswith("compare"):
            wait(browser).until(lambda d: by_id(d, "compare-body").is_displayed())
        unlabelled = browser.execute_script(
            """
            return [...document.querySelectorAll("input, button, progress, canvas, img")]
              .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label")
                && !e.textContent.trim() && e.getAttribute("alt") === null && e.type !== "radio")
              .map((e) => e.outerHTML.slice(0, 80));
            """
        )
        assert unlabelled == []
        low_contrast = browser.execute_script(
            CONTRAST, "p, a, button, label, dt, dd, h1, h2, h3, span, li, td, th"
        )
        assert low_contrast == []

    open_view(browser, service, "gallery")
    reached = []
    for _ in range(5):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        reached.append(browser.switch_to.active_element.text)
    assert reached == ["Skip to content", "Upload", "Gallery", "Compare", "Administer"]
    ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.TAB * 3).key_up(Keys.SHIFT).perform()
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait(browser).until(lambda d: by_id(d, "view-upload").is_displayed())


def test_an_admin_adds_a_model_version_that_the_service_scores_first(
    browser: Chrome, service: ApiProcess, api: httpx.Client, tmp_path: Path
) -> None:
    weights = tmp_path / "espcn-x4-v3.pt"
    weights.write_bytes(to_bytes(noisy("espcn")))
    card = tmp_path / "espcn-x4-v3.json"
    card.write_text(json.dumps({"name": "espcn", "version": 3}))
    wrong_card = tmp_path / "srcnn-x4-v3.json"
    wrong_card.write_text(json.dumps({"name": "srcnn", "version": 3}))
    open_view(browser, service, "admin")
    by_id(browser, "admin-token").send_keys(TOKEN, Keys.ENTER)
    wait(browser).until(lambda d: by_id(d, "admin-body").is_displayed())

    by_id(browser, "model-weights").send_keys(str(weights))
    by_id(browser, "model-card").send_keys(str(wrong_card))
    by_id(browser, "model-form").submit()
    wait(browser).until(lambda d: admin_status(d).startswith("Not registered: "))
    assert "(422 invalid_weights)" in admin_status(browser)

    by_id(browser, "model-weights").send_keys(str(weights))
    by_id(browser, "model-card").send_keys(str(card))
    by_id(browser, "model-form").submit()
    wait(browser).until(lambda d: admin_status(d).startswith("Registered espcn:3: "))

    listing = api.get("/v1/admin/models", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    added = next(m for m in listing["models"] if (m["name"], m["version"]) == ("espcn", 3))
    canary = added["card"]["canary"]
    assert f"canary Y-PSNR {canary['model_psnr']:.2f} dB" in admin_status(browser)
    assert not added["active"] and listing["active"] == {"name": "espcn", "version": 2}
    new_card = browser.find_element(By.CSS_SELECTOR, '#model-cards li[data-model="espcn:3"]')
    assert "worse than the active version" in new_card.text
    facts = card_facts(new_card)
    assert facts["Canary Y-PSNR"].startswith(f"{canary['model_psnr']:.2f} dB (bicubic ")
    assert facts["Canary gain"] == f"{canary['gain_db']:+.2f} dB"
    assert "Held-out gain" not in facts, "its card has no trainer evaluation"


def card_facts(card: WebElement) -> dict[str, str]:
    """A model card's facts, term to description."""
    terms = [term.text for term in card.find_elements(By.CSS_SELECTOR, "dt")]
    return dict(
        zip(terms, [d.text for d in card.find_elements(By.CSS_SELECTOR, "dd")], strict=True)
    )


def test_an_image_deleted_from_compare_is_gone(
    browser: Chrome, service: ApiProcess, api: httpx.Client
) -> None:
    meta = upload_via_api(api, PHOTOS[4])
    open_view(browser, service, f"compare/{meta['id']}")
    wait(browser).until(lambda d: by_id(d, "compare-body").is_displayed())

    by_id(browser, "compare-delete").click()
    wait(browser).until(lambda d: by_id(d, "confirm-dialog").get_property("open"))
    by_id(browser, "confirm-ok").click()
    wait(browser).until(lambda d: by_id(d, "compare-status").text == f"Deleted image {meta['id']}.")

    assert not by_id(browser, "compare-body").is_displayed()
    assert api.get(f"/v1/images/{meta['id']}").status_code == 404


def test_signed_in_with_a_key_the_views_its_scopes_do_not_allow_are_disabled_with_a_reason(
    browser: Chrome, tmp_path: Path
) -> None:
    env = {"SRSTORE_DATA_DIR": str(tmp_path / "data"), "SRSTORE_ADMIN_TOKEN": TOKEN}
    keyed = start_api(env)  # a service of its own: its keys must not reach the other tests
    try:
        made = httpx.post(
            f"{keyed.url}/v1/admin/keys",
            json={"scopes": ["read"], "tenant": "viewers"},
            headers={"authorization": f"Bearer {TOKEN}"},
        ).json()
        browser.get("about:blank")
        browser.get(f"{keyed.url}/console/#compare")
        by_id(browser, "api-key").send_keys(made["key"])
        by_id(browser, "key-form").submit()
        status = by_id(browser, "key-status")
        wait(browser).until(lambda _: made["id"] in status.text)
        links = {
            view: browser.find_element(By.CSS_SELECTOR, f'nav a[data-view="{view}"]')
            for view in ("upload", "gallery", "compare")
        }
        disabled = {v: link.get_attribute("aria-disabled") for v, link in links.items()}
        upload_reason = links["upload"].get_attribute("title")
        gallery_reason = links["gallery"].get_attribute("title")
        links["upload"].click()
        refused = by_id(browser, "view-refused")
        wait(browser).until(lambda _: refused.is_displayed())
        upload_hidden = not by_id(browser, "view-upload").is_displayed()
        refused_text = refused.text

        by_id(browser, "key-forget").click()
        wait(browser).until(lambda _: "Not signed in" in status.text)
        signed_out_reason = links["upload"].get_attribute("title")
    finally:
        keyed.stop()
    assert status.text.startswith("Not signed in")
    assert disabled == {"upload": "true", "gallery": "true", "compare": None}
    assert upload_reason == f"this key ({made['id']}) lacks the upload scope"
    assert gallery_reason == f"this key ({made['id']}) lacks the list scope"
    assert upload_hidden and refused_text == f"Upload is disabled: {upload_reason}."
    # A key exists, so without one even this machine may not upload.
    assert signed_out_reason == "sign in with an API key that has the upload scope"
