"""The Hugging Face hub as this process's environment sets it up: a file from its cache, or downloaded.

huggingface_hub reads HF_HUB_OFFLINE, HF_ENDPOINT and its cache folder once, when first imported; they
are read here each time, so a variable set later counts as well. Its HTTP client honours HTTP_PROXY,
HTTPS_PROXY, ALL_PROXY and NO_PROXY, read when huggingface_hub makes it.
"""

from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from data_pipeline.errors import UserInputError

HUB_TIMEOUT_S = 3.0  # for the first answer; HF_HUB_ETAG_TIMEOUT overrides it, as in huggingface_hub
TRUE_VALUES = ("1", "ON", "YES", "TRUE")  # huggingface_hub's spellings of a set flag


class HubUnavailable(Exception):
    """The hub could not provide a file; the message says why, in one line."""


@dataclass(frozen=True)
class HubSettings:
    """Where the hub is, whether it may be asked, and where its downloads are cached."""

    endpoint: str
    offline: bool
    cache_dir: Path
    timeout_s: float
    proxy: str | None

    @classmethod
    def from_environment(cls) -> HubSettings:
        """The settings huggingface_hub's documented variables give now."""
        from huggingface_hub import constants

        env = os.environ
        endpoint = (env.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
        flag = env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE") or ""
        home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
        cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
        timeout = env.get("HF_HUB_ETAG_TIMEOUT")
        return cls(
            endpoint=endpoint,
            # huggingface_hub refuses every request when the flag was set at its import, whatever it is now.
            offline=flag.upper() in TRUE_VALUES or constants.HF_HUB_OFFLINE,
            cache_dir=Path(os.path.expandvars(os.path.expanduser(cache))),
            timeout_s=_seconds(timeout) if timeout else HUB_TIMEOUT_S,
            proxy=_proxy_for(endpoint),
        )

    def where(self) -> str:
        """The endpoint, and the proxy that requests to it go through."""
        return f"{self.endpoint} (proxy {self.proxy})" if self.proxy else self.endpoint


def cached_hub_file(repo_id: str, filenames: tuple[str, ...], settings: HubSettings) -> Path | None:
    """The first of `filenames` that this machine's hub cache holds for `repo_id`, if any."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        cached = try_to_load_from_cache(repo_id, filename, cache_dir=settings.cache_dir)
        if isinstance(cached, str):
            return Path(cached)
    return None


def download_hub_file(repo_id: str, filename: str, settings: HubSettings) -> Path:
    """`filename` of `repo_id`, downloaded into the hub cache; HubUnavailable says why it could not be."""
    if settings.offline:
        raise HubUnavailable("HF_HUB_OFFLINE is set, so the hub was not asked")
    import httpx2
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    url = hf_hub_url(repo_id, filename, endpoint=settings.endpoint)
    try:
        # One look without retries first: where the hub cannot be reached, hf_hub_download would try
        # again for up to a minute before it gives up.
        metadata = get_hf_file_metadata(url, timeout=settings.timeout_s, endpoint=settings.endpoint)
        if metadata.commit_hash is None:
            raise HubUnavailable(f"{url} did not answer as a Hugging Face hub (no X-Repo-Commit header)")
        path = hf_hub_download(
            repo_id,
            filename,
            cache_dir=settings.cache_dir,
            endpoint=settings.endpoint,
            etag_timeout=settings.timeout_s,
        )
    except OfflineModeIsEnabled as error:
        raise HubUnavailable("HF_HUB_OFFLINE is set, so the hub was not asked") from error
    except HfHubHTTPError as error:
        raise HubUnavailable(f"{url} answered HTTP {error.response.status_code}") from error
    except httpx2.ProxyError as error:
        raise HubUnavailable(
            f"proxy {settings.proxy} failed for {settings.endpoint}: {_line(error)}"
        ) from error
    except httpx2.TimeoutException as error:
        raise HubUnavailable(f"{settings.where()} did not answer within {settings.timeout_s:g} s") from error
    except (httpx2.TransportError, LocalEntryNotFoundError) as error:
        raise HubUnavailable(f"{settings.where()} unreachable: {_line(error)}") from error
    return Path(str(path))


def _proxy_for(url: str) -> str | None:
    # The proxy httpx takes from the environment for this url: <scheme>_proxy, else all_proxy.
    proxies = urllib.request.getproxies_environment()
    host = urlparse(url).hostname or ""
    if urllib.request.proxy_bypass_environment(host, proxies):
        return None
    return proxies.get(urlparse(url).scheme) or proxies.get("all")


def _line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserInputError(f"HF_HUB_ETAG_TIMEOUT must be a number of seconds, not {text!r}") from None
