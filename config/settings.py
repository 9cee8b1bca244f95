"""All configuration, from ``SRSTORE_*`` environment variables, declared once with defaults."""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from config.durations import parse_duration
from imaging.formats import PILLOW_MAX_PIXELS, FullCodecName, StoredCodecName
from models import SHIPPED_WEIGHTS_DIR
from policy.receipts import Floor, StoragePolicy

if TYPE_CHECKING:
    from cache.base import TtlBySize
    from imaging import OutputEncoding, StoredCodec
    from ledger.costs import Prices


class Settings(BaseSettings):
    """Built once at start-up and passed to what needs it; nothing else reads the environment."""

    model_config = SettingsConfigDict(env_prefix="SRSTORE_", frozen=True, extra="ignore")

    data_dir: Path = Field(Path("data"), description="Local object store root (embedded mode).")
    s3_bucket: str | None = Field(None, description="S3 bucket; setting it selects the S3 store.")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint, e.g. SeaweedFS.")
    s3_region: str = Field("us-east-1", description="Region passed to boto3.")
    s3_prefix: str = Field("", description="Key prefix inside the bucket.")
    redis_url: str | None = Field(
        None,
        description="Redis URL; setting it selects the Redis cache (with SRSTORE_REDIS_CLUSTER:"
        " any node of the cluster).",
    )
    redis_wait_replicas: int = Field(
        0,
        ge=0,
        le=5,
        description="Replicas a DELETE's mark must reach (Redis WAIT, up to 0.25 s) before the"
        " DELETE answers, else 503: with 1 on a cluster, a failover cannot bring a deleted"
        " image's cached renditions back.",
    )
    redis_cluster: bool = Field(
        False,
        description="SRSTORE_REDIS_URL names a node of a Redis Cluster: use the cluster client,"
        " which finds every master and follows failovers.",
    )
    cache_ttl_seconds: int = Field(86_400, ge=1, description="Sliding TTL of a cached HR image.")
    memory_cache_max_bytes: int = Field(
        256 * 2**20, ge=0, description="Bound of the in-process cache (embedded mode)."
    )
    cache_large_entry_bytes: int = Field(
        128 * 1024,
        ge=0,
        description="Renditions larger than this are kept unread for at most"
        " SRSTORE_CACHE_LARGE_TTL_SECONDS and, in Redis, admitted once asked for twice (0: off).",
    )
    cache_large_ttl_seconds: int = Field(
        7200,
        ge=0,
        description="TTL of a large rendition: about when its cache rent reaches the cost of"
        " rendering it again at the default prices (see README).",
    )
    cache_admit_after: int = Field(
        2,
        ge=1,
        description="Requests within its TTL before Redis admits a large rendition; before"
        " that it is kept only SRSTORE_CACHE_PROBATION_SECONDS (1: admit at once).",
    )
    cache_probation_seconds: int = Field(
        10,
        ge=1,
        description="How long Redis keeps a large rendition not admitted yet (long enough for"
        " the API to read what a worker rendered).",
    )
    cache_retry_seconds: float = Field(
        2.0, ge=0, description="After a cache failure, serve uncached this long before retrying."
    )
    cache_timeout_seconds: float = Field(
        0.5,
        gt=0,
        description="A Redis connect or command of the HR cache slower than this is a cache"
        " failure: the read is served uncached (BYPASS) rather than kept waiting on a hung Redis."
        " Raise it on hosts whose CPU is saturated, where a healthy Redis can take this long.",
    )

    model: Literal["espcn", "srcnn"] = Field(
        "espcn", description="Network activated on first start (later: the admin API)."
    )
    model_version: int | None = Field(
        None, description="Version activated on first start; newest shipped when unset."
    )
    weights_dir: Path = Field(SHIPPED_WEIGHTS_DIR, description="Where weight files are found.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Inference device.")
    torch_threads: int | None = Field(
        None, ge=1, description="CPU threads for inference, all lanes together; unset: all cores."
    )
    inference_lanes: int | None = Field(
        None,
        ge=1,
        description="Forward passes run at once on the CPU, each on torch_threads / lanes"
        " threads; unset: one a thread (a CUDA device always has one).",
    )
    heap_keep_mb: int = Field(
        256,
        ge=0,
        le=2047,
        description="Freed heap (MiB) a rendering process (the worker; the API unless it"
        " queues its renders) keeps for its next renders instead of handing it back to the"
        " OS, every thread in one glibc arena; 0: glibc's defaults.",
    )
    tile_size: int = Field(128, ge=16, le=1024, description="Low-resolution tile side.")
    cuda_dtype: Literal["float16", "bfloat16", "float32"] = Field(
        "float16", description="Precision of the network on CUDA (the CPU always runs float32)."
    )
    compile: Literal["off", "background"] = Field(
        "background",
        description="torch.compile the networks where it pays (ESPCN on the CPU) on a"
        " background thread after loading; eager serves until the compiled one is warm.",
    )
    int8: Literal["auto", "all", "off"] = Field(
        "auto",
        description="With SRSTORE_COMPILE=background and a CPU with VNNI, networks run in int8"
        " (last layer float32): `auto` where it stayed within 0.05 dB of float32 on every"
        " held-out photo (SRCNN), `all` ESPCN too (0.059 dB on the worst), `off` none.",
    )
    batch_window_ms: float = Field(
        5.0,
        ge=0,
        description="How long the batcher waits for more tiles before a forward pass (one"
        " lane only: several take only the tiles already waiting).",
    )
    max_tiles_per_batch: int | None = Field(
        None,
        ge=1,
        description="Most tiles in one forward pass; unset: 1 for a CPU lane of one thread,"
        " 4 for a pass on several threads or a GPU (raise it there).",
    )
    render_threads: int = Field(
        2,
        ge=1,
        description="Images rendered at once per process (API in local mode, or worker).",
    )

    inference: Literal["local", "queue"] = Field(
        "local", description="Render misses in this process, or hand them to `srstore worker`."
    )
    queue_stream: str = Field(
        "srstore:render",
        pattern=r"^[^{}]+$",
        description="Name of the render queue's Redis streams (no braces: srstore adds the"
        " shard's hash tag).",
    )
    queue_shards: int = Field(
        1,
        ge=1,
        le=1024,
        description="Streams the render queue is spread over, by image id; on a Redis Cluster"
        " at least the number of masters, so no one master carries the queue.",
    )
    queue_max_length: int = Field(
        256,
        ge=1,
        description="Misses waiting to be rendered (local: for a render slot; queue: unfinished"
        " jobs in the stream) beyond which a new miss gets 503 at once.",
    )
    request_deadline_seconds: float = Field(
        20.0,
        gt=0,
        description="How long a miss waits (local: for a render slot; queue: for a worker)"
        " before it gets 503.",
    )
    claim_idle_seconds: float = Field(
        5.0, gt=0, description="A job idle this long (its worker died) is claimed by another."
    )
    compaction_threads: int = Field(
        1,
        ge=1,
        description="Uploads compacted at once per process (API in local mode, or worker), at a"
        " lower CPU priority than renders.",
    )
    compaction_queue_max: int = Field(
        1024,
        ge=1,
        description="Uploads waiting for compaction (local: in this process; queue: in the"
        " stream) beyond which a new upload gets 503 at once.",
    )
    compaction_memory_bytes: int = Field(
        2 * 2**30,
        ge=0,
        description="Memory this process's compactions may hold while they score (about 120"
        " bytes a pixel each); an upload too large to score within it keeps its x4 copy with a"
        " failed receipt.",
    )
    compaction_sweep_seconds: float = Field(
        30.0,
        gt=0,
        description="How often the store is searched for pending compactions (after a restart, a"
        " lost job, or a dependency outage).",
    )
    compaction_lease_seconds: float = Field(
        30.0,
        ge=1,
        description="With Redis: how long a process's claim on one compaction lasts unrenewed"
        " (it renews it every third of that while it works); a claimer that died leaves the"
        " compaction to another after at most this long. Without Redis the claim is a file"
        " lock, free the moment its process ends.",
    )
    worker_metrics_port: int = Field(
        9100, ge=0, le=65535, description="Port of a worker's /metrics (0: none)."
    )

    max_upload_bytes: int = Field(50 * 2**20, ge=1, description="Largest accepted upload body.")
    max_pixels: int = Field(
        50_000_000, ge=1, le=PILLOW_MAX_PIXELS, description="Largest accepted image, in pixels."
    )
    decode_threads: int = Field(
        2, ge=1, description="Uploads decoded at once per process, on a pool of their own."
    )
    decode_memory_budget_bytes: int = Field(
        768 * 2**20,
        ge=1,
        description="Memory uploads being decoded may hold at once per process (estimated "
        "from each header); an upload waits for room, then gets 503.",
    )
    decode_wait_seconds: float = Field(
        10.0, ge=0, description="How long an upload waits for decode budget before 503."
    )
    http_header_timeout_seconds: float = Field(
        10.0, gt=0, description="A request's head must arrive within this (slowloris)."
    )
    http_body_timeout_seconds: float = Field(
        15.0, gt=0, description="A request body may pause at most this long between chunks."
    )
    io_threads: int = Field(
        32,
        ge=2,
        description="Threads for object-store and ledger calls and the readiness pings (the "
        "default executor); CPU work never runs there.",
    )
    cpu_threads: int = Field(
        2,
        ge=1,
        description="CPU work a request starts (renditions made from a stored copy, upload "
        "scoring) at once per process, on a pool of its own.",
    )
    cpu_backlog_seconds: float = Field(
        10.0,
        gt=0,
        description="Estimated CPU-seconds of work per CPU thread admitted at once; more is "
        "refused with 503 cpu_busy and a Retry-After.",
    )
    cpu_client_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of the admitted CPU work one client (its address) may hold; more "
        "is refused with 429 client_busy.",
    )
    heavy_work_seconds: float = Field(
        1.0,
        gt=0,
        description="A rendition estimated to cost more CPU-seconds than this (a large "
        "enlargement, a big AVIF) runs on a thread of its own at a lower OS priority, so "
        "thumbnails, ordinary misses and uploads get the cores first.",
    )
    max_output_pixels: int = Field(
        2**24,
        ge=1,
        description="Largest enlargement (enlarge=true) in pixels, unless the image itself "
        "is larger; beyond: 422 invalid_size.",
    )
    quality_steps: Annotated[frozenset[int], NoDecode] = Field(
        frozenset({30, 45, 60, 75, 85, 90, 95}),
        description="Qualities an unsigned URL may get: any other is snapped to the nearest "
        "(comma-separated; empty: any).",
    )
    max_renditions_per_image: int = Field(
        48,
        ge=1,
        description="Distinct renditions of one image an unsigned URL may create per hour and "
        "process; beyond: 429 rendition_limit.",
    )
    max_header_bytes: int = Field(
        8 * 1024,
        ge=256,
        description="Longest value of any one request header (nginx's line limit); a longer "
        "one gets 431 before anything parses it.",
    )
    dependency_check_seconds: float = Field(
        1.0, gt=0, description="How often the object store and cache are pinged for the probes."
    )
    dependency_timeout_seconds: float = Field(
        1.0, gt=0, description="A ping (or ledger read for /metrics) slower than this is down."
    )
    local_min_free_bytes: int = Field(
        64 * 2**20,
        ge=0,
        description="The local store is unready (and refuses uploads) below this free space.",
    )
    max_model_upload_bytes: int = Field(
        32 * 2**20, ge=1, description="Largest body of an admin model upload (weights + card)."
    )
    stored_codec: StoredCodecName = Field("webp", description="Codec of the stored copy.")
    stored_quality: int = Field(90, ge=1, le=100, description="Quality of a lossy stored codec.")
    storage_policy: StoragePolicy = Field(
        "downscale",
        description="downscale: always the x4 copy; guarded: the x4 copy unless it scores below"
        " the floor; smallest: the fewest bytes that meet the floor; full: the full-size copy"
        " at the floor; original: the upload as it came (see README).",
    )
    quality_floor: str = Field(
        "ssim:0.9",
        description="metric:value (psnr:<dB> or ssim:<0..1>) a served image must meet against"
        " its upload under the guarded and smallest policies.",
    )
    tiering: bool = Field(
        False,
        description="on: keep each upload as it came while it is read, and compact it by"
        " SRSTORE_COLD_POLICY once unread for SRSTORE_COMPACT_AFTER_IDLE (see README).",
    )
    cold_policy: StoragePolicy = Field(
        "downscale",
        description="Tiering: what an idle image is compacted to (downscale: the x4 copy).",
    )
    cold_floor: str | None = Field(
        None,
        description="Tiering: the floor of SRSTORE_COLD_POLICY (SRSTORE_QUALITY_FLOOR if unset).",
    )
    compact_after_idle: Annotated[float, BeforeValidator(parse_duration)] = Field(
        7 * 86_400,
        description="Tiering: unread this long, an image is compacted (seconds, or 30m, 12h, 7d).",
    )
    cold_horizon: Annotated[float, BeforeValidator(parse_duration)] = Field(
        365 * 86_400,
        description="Tiering: how long an image that went cold is expected to stay stored; it is"
        " compacted only if the storage saved over this pays for the compaction's CPU at the"
        " price settings (seconds, or 90d, 365d).",
    )
    compaction_cpu_seconds_per_megapixel: float = Field(
        0.25,
        ge=0,
        description="Tiering: the CPU seconds a cold compaction takes per megapixel, for the rule"
        " above (bench.trace's cost ledger: 3.2 s for 13.5 MP of JPEG uploads, 2-core VM).",
    )
    access_flush_seconds: float = Field(
        10.0,
        gt=0,
        description="Tiering: how often a process writes the reads it saw to the ledger.",
    )
    full_codec: FullCodecName = Field(
        "avif", description="Codec of a full-size copy kept when the x4 copy fails the floor."
    )
    output_jpeg_quality: int = Field(90, ge=1, le=100)
    output_webp_quality: int = Field(85, ge=1, le=100)
    output_png_compress_level: int = Field(1, ge=0, le=9)
    output_avif_quality: int = Field(60, ge=1, le=100)
    output_avif_speed: int = Field(
        8, ge=0, le=10, description="AVIF encoder speed (0 slowest, 10 fastest); see bench."
    )
    output_avif: bool = Field(
        True, description="Offer AVIF to clients whose Accept names image/avif."
    )
    http_max_age_seconds: int = Field(86_400, ge=0, description="Cache-Control max-age.")
    http_degraded_max_age_seconds: int = Field(
        60, ge=0, description="max-age of an image served by bicubic because no model serves."
    )
    url_signing_key: SecretStr | None = Field(
        None, description="HMAC-SHA256 key; when set, URLs with rendition options need `sig`."
    )
    allowed_widths: Annotated[frozenset[int], NoDecode] = Field(
        frozenset(), description="Comma-separated widths unsigned URLs may ask for (empty: any)."
    )

    price_storage_gb_month: float = Field(
        0.023, ge=0, description="Dollars per GB-month stored (S3 Standard, us-east-1)."
    )
    price_cpu_hour: float = Field(
        0.0446, ge=0, description="Dollars per vCPU-hour (c7i.large on demand / 2 vCPU)."
    )
    price_gpu_hour: float = Field(
        1.006, ge=0, description="Dollars per accelerator-hour (g5.xlarge on demand, A10G)."
    )
    price_cache_gb_hour: float = Field(
        0.0168,
        ge=0,
        description="Dollars per GB-hour of cache RAM (ElastiCache cache.r7g.large / 13 GB).",
    )
    cost_flush_seconds: float = Field(
        10.0, gt=0, description="How often a process adds what it spent to the shared ledger."
    )
    cost_window_seconds: float = Field(
        30 * 86_400,
        gt=0,
        description="Time constant of the recent spending that the net saving per month"
        " subtracts (30 days: about the last month).",
    )

    admin_token: SecretStr | None = Field(
        None, description="Bearer token of the admin API; the admin API is off without one."
    )
    public_read: bool = Field(
        True,
        description="Anyone may fetch an image by id (signed URLs only, with a signing key);"
        " off, reads need a key with the read scope.",
    )
    anonymous_costly_options: bool = Field(
        False,
        description="Callers without a key (loopback clients while no key exists) may ask an"
        " upload for ?policy= or ?floor= (a quality search each: minutes of CPU); off, 403.",
    )
    trusted_proxies: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(),
        description="Comma-separated addresses or networks whose X-Forwarded-For is believed"
        " (empty: none; the peer address decides who is loopback).",
    )
    key_cache_seconds: float = Field(
        2.0,
        gt=0,
        le=5,
        description="How long a process trusts its last lookup of a key: a revocation takes"
        " effect on every process within this.",
    )
    quota_uploads_per_minute: int = Field(
        120, ge=0, description="Uploads one API key may make per minute (0: no limit)."
    )
    quota_upload_bytes_per_day: int = Field(
        10 * 2**30, ge=0, description="Bytes one API key may upload per UTC day (0: no limit)."
    )
    quota_cpu_seconds_per_hour: float = Field(
        900.0,
        ge=0,
        description="CPU seconds one API key's upload requests (decode and reduction; scoring"
        " runs later, in compaction) may cost per hour; past it, its uploads get 429 until the"
        " hour ends (0: no limit).",
    )
    key: SecretStr | None = Field(
        None, description="The API key the srstore CLI sends (the CLI's --key overrides it)."
    )
    model_poll_seconds: float = Field(
        2.0, gt=0, description="How often a process re-reads the active model pointer."
    )

    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text for a terminal, or one JSON object per line."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="The least severe log level written."
    )

    host: str = Field("127.0.0.1", description="Bind address of `srstore serve`.")
    port: int = Field(8000, ge=1, le=65535, description="Port of `srstore serve`.")

    @field_validator("admin_token", mode="before")
    @classmethod
    def _no_blank_or_short_token(cls, value: object) -> object:
        """An empty token means the admin API is off; a short one is refused outright."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        secret = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        if len(secret) < 16:
            raise ValueError("SRSTORE_ADMIN_TOKEN must be at least 16 characters")
        _refuse_placeholder("SRSTORE_ADMIN_TOKEN", secret)
        return value

    @field_validator("quality_floor")
    @classmethod
    def _floor_parses(cls, value: str) -> str:
        Floor.parse(value)
        return value

    @field_validator("cold_floor")
    @classmethod
    def _cold_floor_parses(cls, value: str | None) -> str | None:
        if value is not None:
            Floor.parse(value)
        return value

    @field_validator("url_signing_key", mode="before")
    @classmethod
    def _no_blank_or_short_signing_key(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        secret = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        if len(secret) < 16:
            raise ValueError("SRSTORE_URL_SIGNING_KEY must be at least 16 characters")
        _refuse_placeholder("SRSTORE_URL_SIGNING_KEY", secret)
        return value

    @field_validator("allowed_widths", "quality_steps", mode="before")
    @classmethod
    def _comma_separated_widths(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(int(part) for part in value.split(",") if part.strip())
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated_networks(cls, value: object) -> object:
        if isinstance(value, str):
            value = frozenset(part.strip() for part in value.split(",") if part.strip())
        for network in value if isinstance(value, (set, frozenset, list, tuple)) else ():
            try:
                ipaddress.ip_network(str(network), strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not an IP address or network") from None
        return value

    @field_validator("quality_steps")
    @classmethod
    def _qualities(cls, value: frozenset[int]) -> frozenset[int]:
        if any(not 1 <= quality <= 100 for quality in value):
            raise ValueError("every quality step must be 1 to 100")
        return value

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> Settings:
        if self.s3_endpoint_url and not self.s3_bucket:
            raise ValueError("SRSTORE_S3_ENDPOINT_URL is set but SRSTORE_S3_BUCKET is not")
        return self

    @model_validator(mode="after")
    def _cluster_needs_redis(self) -> Settings:
        if self.redis_cluster and not self.redis_url:
            raise ValueError("SRSTORE_REDIS_CLUSTER is set but SRSTORE_REDIS_URL is not")
        return self

    @model_validator(mode="after")
    def _queue_needs_redis(self) -> Settings:
        if self.inference == "queue" and not self.redis_url:
            raise ValueError("SRSTORE_INFERENCE=queue needs SRSTORE_REDIS_URL")
        return self

    @cached_property
    def codec(self) -> StoredCodec:
        from imaging import StoredCodec  # the pipeline (NumPy): not for every CLI command

        return StoredCodec(self.stored_codec, self.stored_quality)

    @cached_property
    def floor(self) -> Floor:
        return Floor.parse(self.quality_floor)

    @cached_property
    def cold(self) -> Floor:
        """The floor tiering compacts an idle image to."""
        return Floor.parse(self.cold_floor) if self.cold_floor else self.floor

    @cached_property
    def ttl_by_size(self) -> TtlBySize:
        from cache.base import TtlBySize  # the cache package imports redis: not for the CLI

        return TtlBySize(self.cache_large_entry_bytes, self.cache_large_ttl_seconds)

    @cached_property
    def prices(self) -> Prices:
        from ledger.costs import Prices  # the ledger package imports redis: not for the CLI

        return Prices(
            storage_gb_month=self.price_storage_gb_month,
            cpu_hour=self.price_cpu_hour,
            gpu_hour=self.price_gpu_hour,
            cache_gb_hour=self.price_cache_gb_hour,
        )

    @cached_property
    def output_encoding(self) -> OutputEncoding:
        from imaging import OutputEncoding

        return OutputEncoding(
            jpeg_quality=self.output_jpeg_quality,
            webp_quality=self.output_webp_quality,
            png_compress_level=self.output_png_compress_level,
            avif_quality=self.output_avif_quality,
            avif_speed=self.output_avif_speed,
        )


PREFIX = "SRSTORE_"

# Words of the placeholders that manifests, examples and tutorials ship in place of a secret: a
# token copied from one of them is public, and would open the admin API to anyone.
_PLACEHOLDER = re.compile(r"replace[_-]?me|change[_-]?me|placeholder|your[_-]?(token|key)", re.I)


def _refuse_placeholder(name: str, secret: str) -> None:
    if _PLACEHOLDER.search(secret):
        raise ValueError(
            f"{name} is a placeholder: generate one (openssl rand -hex 16) and set that"
        )


class SettingsError(ValueError):
    """The environment names settings wrongly; one line per bad variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems

    def report(self) -> str:
        return "srstore: bad configuration:\n" + "\n".join(f"  {p}" for p in self.problems)


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Settings from ``environ``, or a SettingsError that names each bad variable and why."""
    try:
        return Settings(**_env_values(environ))  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError([_problem(error, environ) for error in exc.errors()]) from None


def _env_values(environ: Mapping[str, str]) -> dict[str, str]:
    """The SRSTORE_* variables as field values (pydantic-settings reads the same names)."""
    fields = set(Settings.model_fields)
    values = {}
    for name, value in environ.items():
        field = name.removeprefix(PREFIX).lower()
        if name.upper().startswith(PREFIX) and field in fields:
            values[field] = value
    return values


def _problem(error: object, environ: Mapping[str, str]) -> str:
    assert isinstance(error, dict)
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a rule across settings: its message names the variables
        return message
    variable = PREFIX + str(error["loc"][0]).upper()
    value = environ.get(variable, "")
    hidden = ("SRSTORE_ADMIN_TOKEN", "SRSTORE_URL_SIGNING_KEY", "SRSTORE_KEY")
    shown = "(hidden)" if variable in hidden else repr(value)
    return f"{variable}={shown}: {message}"


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """An SRSTORE_* variable that is no setting, with the setting it may be a typo of."""
    known = [PREFIX + name.upper() for name in Settings.model_fields]
    problems = []
    for name in sorted(environ):
        if name.upper().startswith(PREFIX) and name.upper() not in known:
            close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.8)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{name} is not an srstore setting{hint}")
    return problems
