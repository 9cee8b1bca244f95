"""The CLI's HTTP client: one-line errors instead of tracebacks, and tables or JSON out."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from tabulate import tabulate


class CommandFailed(Exception):
    """What went wrong, in one line for the user; the command exits non-zero."""


class ApiClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 120) -> None:
        self.url = url
        self.timeout = timeout
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        """The answer, or CommandFailed naming the error code the API gave or the network's."""
        try:
            response = self._http.request(method, path, **options)
        except httpx.ConnectError:
            raise CommandFailed(
                f"cannot reach the srstore API at {self.url}: is `srstore serve` running? "
                "(--url names another address)"
            ) from None
        except httpx.TimeoutException:
            raise CommandFailed(
                f"the srstore API at {self.url} did not answer within {self.timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise CommandFailed(f"talking to {self.url} failed: {exc}") from None
        if response.is_error:
            raise CommandFailed(describe_error(response))
        return response

    def close(self) -> None:
        self._http.close()


def describe_error(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} {response.reason_phrase} from {response.request.url}"


def add_client_arguments(parser: argparse.ArgumentParser, *, inherited: bool = False) -> None:
    """--url and --json, before the action (``models --url U list``) or after it.

    After the action they default to nothing, so that they do not undo values given before.
    """
    unset: dict[str, Any] = {"default": argparse.SUPPRESS} if inherited else {}
    parser.add_argument(
        "--url", help="the srstore API (default: http://SRSTORE_HOST:SRSTORE_PORT)", **unset
    )
    parser.add_argument(
        "--json", action="store_true", help="print the API's JSON, for scripts", **unset
    )
    parser.add_argument(
        "--key",
        help="the API key to send (default: SRSTORE_KEY, else SRSTORE_ADMIN_TOKEN)",
        **unset,
    )


def client_arguments() -> argparse.ArgumentParser:
    """The parent parser of every action that talks to the API."""
    common = argparse.ArgumentParser(add_help=False)
    add_client_arguments(common, inherited=True)
    return common


def api_url(args: argparse.Namespace, host: str, port: int) -> str:
    if args.url:
        return str(args.url)
    reachable = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{reachable}:{port}"


def emit(args: argparse.Namespace, data: Any, human: Callable[[Any], str]) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else human(data))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    return tabulate(rows, headers=list(headers), tablefmt="simple", disable_numparse=True)
