"""Generated requests over the whole HTTP surface: never a 5xx, every 4xx a JSON error.

Hypothesis drives the in-process ASGI app with paths, ids, query values, headers and bodies
drawn from the OpenAPI routes and well beyond them, in the embedded default and in full mode
(real Redis and SeaweedFS).
"""

from __future__ import annotations

import io
import string
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.main import create_app
from config.settings import Settings
from tests.conftest import unique_bucket
from tests.support.servers import RedisServer, SeaweedServer

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module", params=["embedded", "full"])
def http(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    settings = Settings(data_dir=data_dir, max_upload_bytes=256 * 1024)
    if request.param == "full":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        seaweed_server: SeaweedServer = request.getfixturevalue("seaweed_server")
        settings = settings.model_copy(
            update={
                "redis_url": redis_server.url,
                "s3_bucket": unique_bucket(),
                "s3_endpoint_url": seaweed_server.endpoint_url,
            }
        )
    app = create_app(settings)
    # A loopback peer: with no API key, the protected default lets loopback upload and delete.
    with TestClient(app, raise_server_exceptions=True, client=("127.0.0.1", 50000)) as client:
        yield client


@pytest.fixture(scope="module")
def known_id(http: TestClient) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 8), (1, 2, 3)).save(buffer, "PNG")
    created = http.post(
        "/v1/images", content=buffer.getvalue(), headers={"content-type": "image/png"}
    )
    assert created.status_code == 201
    return str(created.json()["id"])


def assert_well_behaved(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    assert response.headers["x-content-type-options"] == "nosniff"
    if response.status_code >= 400 and response.request.method != "HEAD":
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert error["code"] and error["message"]


ids = st.one_of(
    st.text(min_size=0, max_size=40),
    st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=22, max_size=22),
    st.sampled_from(["..", "../..", "%00", "a/b", "\\", "AAAAAAAAAAAAAAAAAAAAAA", " " * 22]),
    st.text(min_size=200, max_size=3000),
)  # fmt: skip
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
query_values = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["jpeg", "png", "webp", "gif", "bmp", "tiff", "JPEG", ""]),
    st.integers(-(2**70), 2**70).map(str),
)
suffixes = st.sampled_from(["", "/stored", "/meta", "/", "/x", "/meta/x"])


@FUZZ
@given(
    method=st.sampled_from(["GET", "HEAD", "DELETE", "PUT", "PATCH", "OPTIONS"]),
    image_id=ids,
    suffix=suffixes,
    query=st.dictionaries(st.sampled_from(["format", "quality", "x", "width"]), query_values),
    if_none_match=st.one_of(st.none(), header_text),
    use_known=st.booleans(),
)
def test_reads_and_deletes_never_fail_on_the_server(
    http: TestClient,
    known_id: str,
    method: str,
    image_id: str,
    suffix: str,
    query: dict[str, str],
    if_none_match: str | None,
    use_known: bool,
) -> None:
    target = known_id if use_known and method != "DELETE" else quote(image_id, safe="")
    headers = {"if-none-match": if_none_match} if if_none_match else {}
    response = http.request(
        method,
        f"/v1/images/{target}{suffix}",
        params=query,
        headers=headers,
        follow_redirects=False,
    )

    assert_well_behaved(response)
    if response.status_code == 200 and method == "GET" and suffix == "":
        assert Image.open(io.BytesIO(response.content)).size == (12, 8)


image_bytes = st.sampled_from(
    [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"RIFF\0\0\0\0WEBP", b"BM", b"II*\0", b""]
)
content_types = st.one_of(
    st.sampled_from(
        [
            "image/png",
            "image/jpeg",
            "image/svg+xml",
            "image/",
            "IMAGE/PNG",
            "text/plain",
            "application/json",
            "multipart/form-data",
            "multipart/form-data; boundary=b",
            "",
        ]
    ),
    header_text,
)


@FUZZ
@given(
    prefix=image_bytes,
    tail=st.binary(max_size=2048),
    content_type=content_types,
    as_multipart=st.booleans(),
    filename=st.text(max_size=80),
    field=st.sampled_from(["file", "File", "other", ""]),
)
def test_uploads_never_fail_on_the_server(
    http: TestClient,
    prefix: bytes,
    tail: bytes,
    content_type: str,
    as_multipart: bool,
    filename: str,
    field: str,
) -> None:
    body = prefix + tail
    if as_multipart:
        response = http.post("/v1/images", files={field: (filename, body, content_type)})
    else:
        headers = {"content-type": content_type}
        response = http.post("/v1/images", content=body, headers=headers)

    assert_well_behaved(response)


@FUZZ
@given(
    image=st.builds(
        Image.new,
        st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "1", "I;16", "CMYK"]),
        st.tuples(st.integers(1, 40), st.integers(1, 40)),
    ),
    fmt=st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]),
    cut=st.one_of(st.none(), st.integers(0, 400)),
)
def test_real_images_of_every_mode_and_size_round_trip_or_are_refused_cleanly(
    http: TestClient, image: Image.Image, fmt: str, cut: int | None
) -> None:
    buffer = io.BytesIO()
    try:
        image.save(buffer, fmt)
    except (OSError, ValueError, KeyError):
        return  # Pillow cannot write this mode in this format; nothing to send
    data = buffer.getvalue() if cut is None else buffer.getvalue()[:cut]

    created = http.post("/v1/images", files={"file": ("i", data, "application/octet-stream")})

    assert_well_behaved(created)
    if created.status_code == 201:
        served = http.get(f"/v1/images/{created.json()['id']}")
        assert served.status_code == 200
        assert Image.open(io.BytesIO(served.content)).size == image.size


def test_the_openapi_schema_is_served_and_names_every_route(http: TestClient) -> None:
    schema = http.get("/openapi.json").json()

    assert {"/v1/images", "/v1/images/{image_id}", "/v1/images/{image_id}/stored"} <= set(
        schema["paths"]
    )
