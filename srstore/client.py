"""The CLI's HTTP client: one-line errors instead of tracebacks, and tables or JSON out."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


class CommandFailed(Exception):
    """What went wrong, in one line for the user; the command exits non-zero."""


# What the user can do about an error, from where the CLI runs: the API's message names the
# request's terms, these the command's.
HINTS = {
    "worse_than_active": "--force activates it anyway",
}


class ApiClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 120) -> None:
        self.url = url
        self.timeout = timeout
        self.token = token
        import httpx  # a tenth of a second: only commands that talk to the API pay it

        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        """The answer, or CommandFailed naming the error code the API gave or the network's."""
        import httpx

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
            raise CommandFailed(describe_error(response, self._hint(response)))
        return response

    def _hint(self, response: httpx.Response) -> str | None:
        if response.status_code == 401:
            return (
                "SRSTORE_ADMIN_TOKEN in this shell differs from the server's"
                if self.token
                else "set SRSTORE_ADMIN_TOKEN in this shell to the server's token"
            )
        return HINTS.get(_error_code(response) or "")

    def close(self) -> None:
        self._http.close()


def describe_error(response: httpx.Response, hint: str | None = None) -> str:
    try:
        error = response.json()["error"]
        described = f"{response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        described = f"{response.status_code} {response.reason_phrase} from {response.request.url}"
    return f"{described} ({hint})" if hint else described


def _error_code(response: httpx.Response) -> str | None:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


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


def api_url(args: argparse.Namespace | None, host: str, port: int) -> str:
    """``--url`` when given, else where ``srstore serve`` listens with these settings."""
    if args is not None and getattr(args, "url", None):
        return str(args.url)
    reachable = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{reachable}:{port}"


def emit(args: argparse.Namespace, data: Any, human: Callable[[Any], str]) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else human(data))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=list(headers), tablefmt="simple", disable_numparse=True)
