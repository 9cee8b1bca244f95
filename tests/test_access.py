"""Who may do what: keys with scopes, tenants that own their images, the protected default.

Full mode here uses a Redis of this module's own (beside the session's SeaweedFS): a key it
creates would otherwise end the protected default for every other test sharing the session's
Redis.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from PIL import Image

from app.main import create_app
from config.settings import Settings
from tests.conftest import SHARED_BUCKET, serving
from tests.support.process import start_api
from tests.support.servers import RedisServer, SeaweedServer, free_port, start_redis

TOKEN = "an-admin-token-for-the-access-tests"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def keys_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("keys-redis"))
    yield server
    server.stop()


def small_png(seed: int = 0) -> bytes:
    image = Image.new("RGB", (64, 48))
    image.putdata(
        [((x * 4 + seed) % 256, (y * 5) % 256, seed % 256) for y in range(48) for x in range(64)]
    )
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


Fleet = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


@pytest.fixture(params=["embedded", "full"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Settings]]:
    """Settings of one fleet (call again for another process of the same fleet)."""
    prefix = f"{uuid.uuid4().hex[:12]}/"
    if request.param == "full":
        server: RedisServer = request.getfixturevalue("keys_redis")
        seaweed: SeaweedServer = request.getfixturevalue("seaweed_server")
        client = redis.Redis.from_url(server.url)
        client.flushall()
        client.close()

        def full(**overrides: Any) -> Settings:
            return Settings(  # type: ignore[arg-type]
                data_dir=tmp_path / "data",
                s3_bucket=SHARED_BUCKET,
                s3_prefix=prefix,
                s3_endpoint_url=seaweed.endpoint_url,
                redis_url=server.url,
                admin_token=TOKEN,
                **overrides,
            )

        yield full
    else:

        def embedded(**overrides: Any) -> Settings:
            return Settings(data_dir=tmp_path / "data", admin_token=TOKEN, **overrides)  # type: ignore[arg-type]

        yield embedded


async def create_key(http: httpx.AsyncClient, scopes: list[str], **fields: Any) -> dict[str, Any]:
    response = await http.post("/v1/admin/keys", json={"scopes": scopes, **fields}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def bearer(key: dict[str, Any] | str) -> dict[str, str]:
    return {"authorization": f"Bearer {key['key'] if isinstance(key, dict) else key}"}


async def upload(http: httpx.AsyncClient, headers: dict[str, str], seed: int = 0) -> httpx.Response:
    return await http.post("/v1/images", content=small_png(seed), headers={**PNG, **headers})


# The matrix: every route, every caller. Reads are private here (SRSTORE_PUBLIC_READ off) so
# that the read scope matters; the image is tenant alpha's.
ROUTES = [
    ("upload", "upload", "POST", "/v1/images", 201),
    ("list", "list", "GET", "/v1/images", 200),
    ("fetch", "read", "GET", "/v1/images/{id}", 200),
    ("head", "read", "HEAD", "/v1/images/{id}", 200),
    ("meta", "read", "GET", "/v1/images/{id}/meta", 200),
    ("stored", "read", "GET", "/v1/images/{id}/stored", 200),
    ("delete", "delete", "DELETE", "/v1/images/{id}", 204),
    ("models", "admin", "GET", "/v1/admin/models", 200),
    ("keys", "admin", "GET", "/v1/admin/keys", 200),
]
CALLERS = ["no key", "revoked", "other tenant", "admin", "read", "upload", "list", "delete"]


def expected_status(caller: str, scope: str, path: str, success: int) -> int:
    if caller in ("no key", "revoked"):
        return 401
    if caller == "admin":
        return success
    if caller == "other tenant":  # every scope but admin, of tenant beta
        if scope == "admin":
            return 403
        return 404 if "{id}" in path else success
    return success if caller == scope else 403


async def test_every_route_answers_every_caller_as_the_table_says(
    fleet: Callable[..., Settings],
) -> None:
    async with serving(fleet(public_read=False)) as (_, http):
        keys = {
            scope: await create_key(http, [scope], tenant="alpha")
            for scope in ("read", "upload", "list", "delete")
        }
        keys["admin"] = await create_key(http, ["admin"])
        keys["other tenant"] = await create_key(
            http, ["read", "upload", "list", "delete"], tenant="beta"
        )
        keys["revoked"] = await create_key(
            http, ["read", "upload", "list", "delete"], tenant="alpha"
        )
        revoked = await http.delete(f"/v1/admin/keys/{keys['revoked']['id']}", headers=ADMIN)
        assert revoked.status_code == 204

        answers = {}
        for name, _, method, path, _ in ROUTES:
            for caller in CALLERS:
                image = (await upload(http, bearer(keys["upload"]), seed=len(answers))).json()
                headers = bearer(keys[caller]) if caller != "no key" else {}
                body = (
                    {"content": small_png(), "headers": {**PNG, **headers}}
                    if method == "POST"
                    else {"headers": headers}
                )
                response = await http.request(method, path.format(id=image["id"]), **body)
                answers[(name, caller)] = response.status_code
                if name == "list" and response.status_code == 200:
                    listed = {m["id"] for m in response.json()["images"]}
                    # alpha's image is listed for alpha and for an admin, never for beta
                    assert (image["id"] in listed) == (caller != "other tenant"), caller
                if response.status_code >= 400 and method != "HEAD":
                    assert set(response.json()["error"]) == {"code", "message"}

    wanted = {
        (name, caller): expected_status(caller, scope, path, success)
        for name, scope, _, path, success in ROUTES
        for caller in CALLERS
    }
    assert answers == wanted


async def test_uploads_belong_to_the_keys_tenant_and_only_it_lists_or_deletes_them(
    fleet: Callable[..., Settings],
) -> None:
    async with serving(fleet()) as (_, http):
        alpha = await create_key(http, ["upload", "list", "delete", "read"], tenant="alpha")
        beta = await create_key(http, ["upload", "list", "delete", "read"], tenant="beta")
        admin = await create_key(http, ["admin"])
        alphas = [(await upload(http, bearer(alpha), seed=i)).json() for i in range(2)]
        (betas,) = [(await upload(http, bearer(beta), seed=9)).json()]
        assert {m["tenant"] for m in alphas} == {"alpha"} and betas["tenant"] == "beta"

        async def listed(key: dict[str, Any]) -> set[str]:
            response = await http.get("/v1/images", headers=bearer(key))
            return {m["id"] for m in response.json()["images"]}

        assert await listed(alpha) == {m["id"] for m in alphas}
        assert await listed(beta) == {betas["id"]}
        assert await listed(admin) == {m["id"] for m in [*alphas, betas]}

        refused = await http.delete(f"/v1/images/{alphas[0]['id']}", headers=bearer(beta))
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "not_found"
        # Still there: reads are public by default, so anyone may fetch it by id.
        assert (await http.get(f"/v1/images/{alphas[0]['id']}")).status_code == 200
        assert (
            await http.delete(f"/v1/images/{alphas[0]['id']}", headers=bearer(admin))
        ).status_code == 204
        assert (await http.get(f"/v1/images/{alphas[0]['id']}")).status_code == 404


def peer(address: str) -> Callable[[FastAPI], httpx.AsyncClient]:
    def client(app: FastAPI) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://srstore")

    return client


@asynccontextmanager
async def peers(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """The same app seen from loopback and from 203.0.113.7 (the peer address faked at the
    ASGI layer; the network-namespace test below does it with real sockets)."""
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        peer("127.0.0.1")(app) as local,
        peer("203.0.113.7")(app) as remote,
    ):
        yield local, remote


async def test_without_keys_only_loopback_may_upload_list_and_delete(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", admin_token=TOKEN)  # type: ignore[arg-type]
    async with peers(settings) as (local, remote):
        ready = (await local.get("/readyz")).json()
        assert ready["access"].startswith("protected")
        image = (await upload(local, {})).json()
        for method, path in [
            ("POST", "/v1/images"),
            ("GET", "/v1/images"),
            ("DELETE", f"/v1/images/{image['id']}"),
        ]:
            body = {"content": small_png(), "headers": PNG} if method == "POST" else {}
            response = await remote.request(method, path, **body)
            assert response.status_code == 401, (method, path)
            assert "srstore keys create" in response.json()["error"]["message"]
            assert response.headers["www-authenticate"] == "Bearer"
        assert (await remote.get(f"/v1/images/{image['id']}")).status_code == 200  # public read
        assert (await local.get("/v1/images")).json()["images"][0]["id"] == image["id"]

        key = await create_key(local, ["upload", "list", "delete"])
        # The first key ends the protected default: loopback needs a key too.
        assert (await local.get("/v1/images")).status_code == 401
        assert (await local.delete(f"/v1/images/{image['id']}")).status_code == 401
        assert (await remote.get("/v1/images", headers=bearer(key))).status_code == 200
        assert (await local.get("/readyz")).json()["access"].startswith("keys")
        # The default tenant's key sees the anonymous upload (it was the default tenant's).
        assert (
            await remote.delete(f"/v1/images/{image['id']}", headers=bearer(key))
        ).status_code == 204


async def test_forwarded_addresses_are_believed_only_from_configured_proxies(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data", trusted_proxies="127.0.0.1")  # type: ignore[arg-type]
    async with peers(settings) as (local, remote):
        proxied_remote = await local.get("/v1/images", headers={"x-forwarded-for": "203.0.113.7"})
        proxied_local = await local.get("/v1/images", headers={"x-forwarded-for": "127.0.0.1"})
        spoofed = await remote.get("/v1/images", headers={"x-forwarded-for": "127.0.0.1"})
        chain = await local.get("/v1/images", headers={"x-forwarded-for": "127.0.0.1, 203.0.113.7"})
    assert (proxied_remote.status_code, proxied_local.status_code) == (401, 200)
    assert (spoofed.status_code, chain.status_code) == (401, 401)

    untrusted = Settings(data_dir=tmp_path / "other")
    async with peers(untrusted) as (local, _):
        # A reverse proxy on this host, not configured as trusted: its clients are not local.
        via_proxy = await local.get("/v1/images", headers={"x-forwarded-for": "203.0.113.7"})
        direct = await local.get("/v1/images")
    assert (via_proxy.status_code, direct.status_code) == (401, 200)


async def test_a_revoked_key_is_refused_by_every_process_within_five_seconds(
    fleet: Callable[..., Settings],
) -> None:
    settings = fleet()
    async with serving(settings) as (_, first), serving(settings) as (_, second):
        key = await create_key(first, ["list"])
        assert (await second.get("/v1/images", headers=bearer(key))).status_code == 200  # cached
        revoked_at = time.monotonic()
        assert (await first.delete(f"/v1/admin/keys/{key['id']}", headers=ADMIN)).status_code == 204
        assert (await first.get("/v1/images", headers=bearer(key))).status_code == 401
        while (await second.get("/v1/images", headers=bearer(key))).status_code == 200:
            assert time.monotonic() - revoked_at < 5, "still accepted 5 s after its revocation"
            await asyncio.sleep(0.05)
        assert (await second.get("/v1/images", headers=bearer(key))).status_code == 401


def stored_redis_bytes(url: str) -> bytes:
    """Every key and value in Redis, whatever its type, as one blob to search."""
    client = redis.Redis.from_url(url)
    blob = bytearray()
    for name in client.scan_iter(count=1000):
        blob += name
        kind = client.type(name).decode()
        if kind == "string":
            blob += client.get(name) or b""
        elif kind == "hash":
            for field, value in client.hgetall(name).items():
                blob += field + value
        elif kind == "list":
            blob += b"".join(client.lrange(name, 0, -1))
        elif kind in ("set", "zset"):
            members = client.smembers(name) if kind == "set" else client.zrange(name, 0, -1)
            blob += b"".join(members)
        elif kind == "stream":
            for _, fields in client.xrange(name):
                blob += b"".join(k + v for k, v in fields.items())
    client.close()
    return bytes(blob)


async def test_the_secret_is_never_stored_or_logged(
    fleet: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = fleet()
    caplog.set_level(logging.DEBUG)
    async with serving(settings) as (_, http):
        key = await create_key(http, ["upload", "list", "delete", "read"], name="ci")
        image = (await upload(http, bearer(key))).json()
        await http.get("/v1/images", headers=bearer(key))
        await http.get(f"/v1/images/{image['id']}", headers=bearer(key))
        await http.delete(f"/v1/images/{image['id']}", headers=bearer(key))
        await http.get("/v1/images", headers=bearer(key["key"][:-1] + "x"))  # a wrong one
        await http.delete(f"/v1/admin/keys/{key['id']}", headers=ADMIN)
        await http.get("/v1/images", headers=bearer(key))  # a revoked one
    secret = key["key"].encode()
    hidden = secret.split(b"_", 2)[2]  # the random part alone
    if settings.redis_url:
        kept = stored_redis_bytes(settings.redis_url)
    else:
        kept = b"".join(p.read_bytes() for p in (settings.data_dir).rglob("ledger.sqlite3*"))
    assert key["id"].encode() in kept  # the record is there, so the search looked at it
    assert secret not in kept and hidden not in kept
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert key["id"] in logged  # the audit lines name the key by its id
    assert hidden.decode() not in logged


async def test_deletes_and_key_changes_write_a_json_audit_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="srstore.audit")
    async with serving(Settings(data_dir=tmp_path / "data", admin_token=TOKEN)) as (_, http):  # type: ignore[arg-type]
        key = await create_key(http, ["upload", "delete"], tenant="alpha")
        image = (await upload(http, bearer(key))).json()
        deleted = await http.delete(
            f"/v1/images/{image['id']}", headers={**bearer(key), "x-request-id": "req-42"}
        )
        await http.delete(f"/v1/admin/keys/{key['id']}", headers=ADMIN)
    assert deleted.status_code == 204
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "srstore.audit"]
    assert [line["audit"] for line in lines] == ["key.create", "image.delete", "key.revoke"]
    assert lines[1] == {
        "audit": "image.delete",
        "key_id": key["id"],
        "tenant": "alpha",
        "image_id": image["id"],
        "request_id": "req-42",
    }
    assert lines[0]["key_id"] == lines[2]["key_id"] == "admin-token"
    assert lines[2]["target_key_id"] == key["id"]


async def test_a_public_read_without_credentials_looks_up_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(Settings(data_dir=tmp_path / "data")) as (app, http):
        image = (await upload(http, {})).json()
        lookups: list[str] = []
        resolve = app.state.access.principal

        async def counted(*args: Any, **kwargs: Any) -> Any:
            lookups.append(args[0])
            return await resolve(*args, **kwargs)

        monkeypatch.setattr(app.state.access, "principal", counted)
        for _ in range(3):
            assert (await http.get(f"/v1/images/{image['id']}")).status_code == 200
        assert lookups == []
        with_key = await http.get(
            f"/v1/images/{image['id']}", headers=bearer("srk_0000000000_" + "a" * 43)
        )
        assert with_key.status_code == 401 and lookups == ["read"]


async def test_with_public_reads_off_a_read_needs_a_key_of_the_tenant_or_a_signed_url(
    tmp_path: Path,
) -> None:
    from app.services.renditions import sign

    signing = "a-url-signing-key-of-some-length"
    settings = Settings(  # type: ignore[arg-type]
        data_dir=tmp_path / "data", admin_token=TOKEN, public_read=False, url_signing_key=signing
    )
    async with serving(settings) as (_, http):
        alpha = await create_key(http, ["upload", "read"], tenant="alpha")
        beta = await create_key(http, ["read"], tenant="beta")
        image = (await upload(http, bearer(alpha))).json()["id"]
        path = f"/v1/images/{image}"
        assert (await http.get(path)).status_code == 401
        assert (await http.get(path, headers=bearer(alpha))).status_code == 200
        assert (await http.get(path, headers=bearer(beta))).status_code == 404
        assert (await http.get(f"{path}?sig={sign(signing, image, [])}")).status_code == 200
        assert (await http.get(f"{path}?sig={sign(signing, 'B' * 22, [])}")).status_code == 403
        signed_size = sign(signing, image, [("w", "16")])
        assert (await http.get(f"{path}?w=16&sig={signed_size}")).status_code == 200
        assert (await http.get(f"{path}/meta?sig={sign(signing, image, [])}")).status_code == 200


async def test_costly_upload_options_need_a_key_that_allows_them(tmp_path: Path) -> None:
    async with serving(Settings(data_dir=tmp_path / "data", admin_token=TOKEN)) as (_, http):  # type: ignore[arg-type]
        plain = await create_key(http, ["upload"])
        costly = await create_key(http, ["upload"], costly_options=True)
        refused = await http.post(
            "/v1/images?policy=smallest", content=small_png(), headers={**PNG, **bearer(plain)}
        )
        allowed = await http.post(
            "/v1/images?floor=psnr:20", content=small_png(), headers={**PNG, **bearer(costly)}
        )
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert allowed.status_code == 201


async def test_costly_upload_options_without_a_key_are_refused_unless_a_setting_allows_them(
    tmp_path: Path,
) -> None:
    """The protected default's loopback client: plain uploads go on, quality searches 403."""
    answers: dict[bool, list[httpx.Response]] = {}
    for allowed in (False, True):
        settings = Settings(data_dir=tmp_path / str(allowed), anonymous_costly_options=allowed)  # type: ignore[arg-type]
        async with serving(settings) as (_, http):
            answers[allowed] = [
                await http.post(f"/v1/images{query}", content=small_png(), headers=PNG)
                for query in ("", "?policy=smallest", "?floor=psnr:20", "?policy=downscale")
            ]
            stored = (await http.get("/v1/images")).json()["images"]
        assert len(stored) == sum(answer.status_code == 201 for answer in answers[allowed])

    plain, *costly = answers[False]
    assert plain.status_code == 201
    for refused in costly:
        assert refused.status_code == 403
        error = refused.json()["error"]
        assert error["code"] == "forbidden"
        assert "SRSTORE_ANONYMOUS_COSTLY_OPTIONS" in error["message"]
    assert [answer.status_code for answer in answers[True]] == [201] * 4


async def test_key_requests_that_make_no_sense_are_refused_with_4xx(tmp_path: Path) -> None:
    async with serving(Settings(data_dir=tmp_path / "data", admin_token=TOKEN)) as (_, http):  # type: ignore[arg-type]
        answers = [
            await http.post("/v1/admin/keys", json={"scopes": []}, headers=ADMIN),
            await http.post("/v1/admin/keys", json={"scopes": ["root"]}, headers=ADMIN),
            await http.post(
                "/v1/admin/keys", json={"scopes": ["read"], "tenant": "Bad Tenant"}, headers=ADMIN
            ),
            await http.post(
                "/v1/admin/keys",
                content=b"{",
                headers={**ADMIN, "content-type": "application/json"},
            ),
            await http.delete("/v1/admin/keys/0123456789", headers=ADMIN),
            await http.delete("/v1/admin/keys/not-an-id", headers=ADMIN),
            await http.get("/v1/images", headers={"authorization": "Basic dXNlcjpwYXNz"}),
            await http.get("/v1/images", headers={"authorization": "Bearer " + "x" * 5000}),
        ]
    assert [a.status_code for a in answers] == [422, 422, 422, 422, 404, 422, 401, 401]
    assert all(set(a.json()["error"]) == {"code", "message"} for a in answers)


OUTSIDE = "10.233.0.1"  # an address of the test's own network namespace, on its loopback device
ROOT = Path(__file__).parent.parent


def in_network_namespace(*command: str) -> subprocess.CompletedProcess[str]:
    """``command`` in a new network namespace whose ``lo`` also holds ``OUTSIDE``.

    A connection to ``OUTSIDE`` comes from ``OUTSIDE``: a non-loopback peer address, with no
    other machine involved.
    """
    setup = f'ip link set lo up && ip addr add {OUTSIDE}/32 dev lo && exec "$@"'
    return subprocess.run(
        ["unshare", "--net", "sh", "-c", setup, "sh", *command],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("SRSTORE_")},
    )


def namespaces_available() -> bool:
    try:
        return in_network_namespace("true").returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not namespaces_available(), reason="needs root for unshare --net")
def test_a_server_on_a_real_non_loopback_address_refuses_anonymous_writes(tmp_path: Path) -> None:
    probe = [sys.executable, "-m", "tests.support.protected_probe", str(tmp_path / "data"), OUTSIDE]
    ran = in_network_namespace(*probe)
    assert ran.returncode == 0, ran.stderr[-2000:]
    answers = json.loads(ran.stdout.splitlines()[-1])
    assert answers["outside"] == {
        "upload": 401,
        "list": 401,
        "delete": 401,
        "read": 200,  # reads stay public
        "message": answers["outside"]["message"],
    }
    assert "srstore keys create" in str(answers["outside"]["message"])
    assert answers["loopback"]["delete"] == 204  # the image survived the outside delete


def srstore(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SRSTORE_")}
    return subprocess.run(
        [sys.executable, "-m", "srstore.cli", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=ROOT,
        timeout=120,
    )


def test_the_cli_creates_lists_and_revokes_keys_and_sends_one(tmp_path: Path) -> None:
    port = free_port()
    env = {"SRSTORE_DATA_DIR": str(tmp_path / "data"), "SRSTORE_PORT": str(port)}
    picture = tmp_path / "picture.png"
    picture.write_bytes(small_png())
    api = start_api(env, port=port)
    try:
        before = srstore("images", "upload", "-q", str(picture), env=env)  # protected default
        created = srstore(
            "keys", "create", "--scopes", "upload,list", "--tenant", "ci", "--json", env=env
        )
        made = json.loads(created.stdout)
        listed = json.loads(srstore("keys", "list", "--json", env=env).stdout)
        anonymous = srstore("images", "upload", str(picture), env=env)
        with_flag = srstore("images", "upload", "-q", "--key", made["key"], str(picture), env=env)
        with_env = srstore(
            "images", "upload", "-q", str(picture), env={**env, "SRSTORE_KEY": made["key"]}
        )
        revoked = srstore("keys", "revoke", made["id"], env=env)
        # The server trusts its last lookup for SRSTORE_KEY_CACHE_SECONDS: poll until refused.
        deadline = time.monotonic() + 5
        while (
            after := srstore("images", "upload", "--key", made["key"], str(picture), env=env)
        ).returncode == 0:
            assert time.monotonic() < deadline
    finally:
        api.stop()
    assert before.returncode == 0
    assert set(made) == {"id", "key", "scopes", "tenant"} and made["scopes"] == ["upload", "list"]
    assert made["key"].startswith(f"srk_{made['id']}_") and made["tenant"] == "ci"
    assert (
        [k["id"] for k in listed] == [made["id"]]
        and "key" not in listed[0]
        and "digest" not in listed[0]
    )
    assert anonymous.returncode == 1 and "401 unauthorized" in anonymous.stderr
    assert with_flag.returncode == 0 and with_env.returncode == 0
    assert revoked.returncode == 0
    assert after.returncode == 1 and "unknown or revoked API key" in after.stderr


def minute_of(moment: float) -> int:
    return int(moment // 60)


async def test_a_key_past_its_quotas_gets_429_with_the_seconds_its_window_has_left(
    fleet: Callable[..., Settings],
) -> None:
    async with serving(fleet()) as (_, http):
        for _attempt in range(2):  # a minute may turn between the uploads: then once more
            started = time.time()
            key = await create_key(http, ["upload"], limits={"uploads_per_minute": 2})
            answers = [await upload(http, bearer(key), seed=i) for i in range(3)]
            if minute_of(started) == minute_of(time.time()):
                break
        assert [a.status_code for a in answers] == [201, 201, 429]
        refused = answers[2]
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60 - int(started % 60) + 1

        size = len(small_png(0))
        thrifty = await create_key(http, ["upload"], limits={"upload_bytes_per_day": size * 3 // 2})
        first, second = [await upload(http, bearer(thrifty), seed=0) for _ in range(2)]
        assert (first.status_code, second.status_code) == (201, 429)
        until_midnight = 86_400 - time.time() % 86_400
        assert abs(int(second.headers["retry-after"]) - until_midnight) <= 2

        # Ingesting an upload costs some CPU; a budget of a microsecond an hour is spent by one.
        frugal = await create_key(http, ["upload"], limits={"cpu_seconds_per_hour": 1e-6})
        first, second = [await upload(http, bearer(frugal), seed=0) for _ in range(2)]
        assert (first.status_code, second.status_code) == (201, 429)
        assert "CPU seconds" in second.json()["error"]["message"]
        assert 1 <= int(second.headers["retry-after"]) <= 3600

        metrics = (await http.get("/metrics")).text
    assert f'srstore_key_throttled_total{{key="{key["id"]}",quota="uploads"}} 1.0' in metrics
    assert f'srstore_key_throttled_total{{key="{thrifty["id"]}",quota="bytes"}} 1.0' in metrics
    assert f'srstore_key_throttled_total{{key="{frugal["id"]}",quota="cpu"}} 1.0' in metrics
    assert f'srstore_key_uploads_total{{key="{key["id"]}"}} 2.0' in metrics


async def test_per_key_metrics_name_only_keys_that_exist(tmp_path: Path) -> None:
    async with serving(Settings(data_dir=tmp_path / "data", admin_token=TOKEN)) as (_, http):  # type: ignore[arg-type]
        key = await create_key(http, ["upload"])
        assert (await upload(http, bearer(key))).status_code == 201
        made_up = [f"srk_{i:010x}_{'b' * 43}" for i in range(50)]
        for fake in made_up:
            assert (await upload(http, bearer(fake))).status_code == 401
        metrics = (await http.get("/metrics")).text
    labelled = set(re.findall(r'srstore_key_\w+\{key="([0-9a-f]+)"', metrics))
    assert key["id"] in labelled
    assert not labelled & {fake.split("_")[1] for fake in made_up}
