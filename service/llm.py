"""One call to an OpenAI-compatible chat server (`POST {url}/chat/completions`), nothing more.

Why the standard library: the wire format is one JSON request and one JSON reply; Xinference,
vLLM, Ollama and llama.cpp's server all speak it, and a client SDK would add a dependency that
pins its own HTTP stack. Every way the call can go wrong becomes a `ChatError` whose reason is
an i18n key, so the user reads it in English or Chinese (minutes.py retries it later).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from . import i18n
from .config import is_loopback

log = logging.getLogger(__name__)

MAX_REPLY_BYTES = 4 * 1024 * 1024

__all__ = ["ChatError", "chat"]


class ChatError(Exception):
    """The server could not be reached, failed, timed out or answered nonsense."""

    def __init__(self, key: str, **kw: Any) -> None:
        super().__init__(i18n.t(key, "en", **kw))
        self.key, self.kw = key, kw

    def message(self, lang: str | None) -> str:
        return i18n.t(self.key, lang, **self.kw)


def _opener(url: str) -> urllib.request.OpenerDirector:
    # A server on this machine is never reached through the office proxy (HTTP_PROXY).
    host = urlsplit(url).hostname or ""
    handlers = [urllib.request.ProxyHandler({})] if is_loopback(host) else []
    return urllib.request.build_opener(*handlers)


def chat(url: str, model: str, messages: list[dict[str, str]], *, api_key: str | None,
         timeout: float, max_tokens: int) -> str:
    """The assistant's reply text to `messages`; ChatError on any failure."""
    endpoint = f"{url.rstrip('/')}/chat/completions"
    body = {"model": model, "messages": messages, "temperature": 0.2,
            "max_tokens": max_tokens, "stream": False}
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(endpoint, json.dumps(body, ensure_ascii=False).encode(),
                                     headers, method="POST")
    try:
        with _opener(url).open(request, timeout=timeout) as reply:
            raw = reply.read(MAX_REPLY_BYTES + 1)
    except urllib.error.HTTPError as err:
        detail = err.read(500).decode("utf-8", "replace").strip() if err.fp else ""
        raise ChatError("llm.http_error", url=endpoint, code=err.code,
                        detail=detail[:300] or err.reason) from None
    except TimeoutError:  # socket.timeout is TimeoutError since 3.10
        raise ChatError("llm.timeout", url=endpoint, seconds=f"{timeout:g}") from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, TimeoutError):
            raise ChatError("llm.timeout", url=endpoint, seconds=f"{timeout:g}") from None
        raise ChatError("llm.unreachable", url=endpoint, error=err.reason) from None
    except OSError as err:  # reset by peer, a reply cut short
        raise ChatError("llm.unreachable", url=endpoint, error=err) from None
    if len(raw) > MAX_REPLY_BYTES:
        raise ChatError("llm.malformed", url=endpoint, problem="the reply is larger than 4 MB")
    return _content(raw, endpoint)


def _content(raw: bytes, endpoint: str) -> str:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ChatError("llm.malformed", url=endpoint,
                        problem=f"not JSON: {raw[:80].decode('utf-8', 'replace')!r}") from None
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ChatError("llm.malformed", url=endpoint,
                        problem="no choices[0].message.content in it") from None
    if not isinstance(content, str) or not content.strip():
        raise ChatError("llm.malformed", url=endpoint, problem="the answer is empty")
    if (data["choices"][0].get("finish_reason") or "") == "length":
        log.warning("the LLM's answer was cut at max_tokens; the minutes may be incomplete")
    return content.strip()
