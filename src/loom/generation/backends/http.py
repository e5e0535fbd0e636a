"""HTTP plumbing shared by the provider backends: client, retries, SSE, error lines, fan-out.

httpx2 is imported lazily (inside functions) so that importing this module, and
anything that only needs the SSE decoder or the error helpers, stays cheap.
"""

from __future__ import annotations

import asyncio
import codecs
import datetime
import http
import logging
import random
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from loom.errors import BackendError, StreamCut
from loom.generation.backends.base import Chunk
from loom.generation.events import report_retry
from loom.redact import redact, safe_url

if TYPE_CHECKING:
    import httpx2

__all__ = [
    "RETRYABLE_ERROR_TYPES",
    "Endpoint",
    "EventTooLarge",
    "HttpOptions",
    "SSEDecoder",
    "ServerEvent",
    "as_cut",
    "backoff_delay",
    "fan_out",
    "make_client",
    "parse_retry_after",
    "provider_message",
    "redact",
    "safe_url",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Statuses worth another try: timeouts, conflicts (OpenAI's lock timeouts), rate limits,
# and server-side failures except the ones that will never change (501, 505).
_RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})
# Error types a provider reports inside a 200 stream that a new attempt may not hit.
RETRYABLE_ERROR_TYPES = frozenset(
    {"server_error", "api_error", "overloaded_error", "rate_limit_error", "rate_limit_exceeded"}
)
_MAX_ERROR_BODY = 64 * 1024
_MAX_EVENT_BYTES = 16 * 1024 * 1024
_MAX_MESSAGE = 300


@dataclass(frozen=True)
class HttpOptions:
    """Timeouts and retry policy for one endpoint. Seconds throughout."""

    connect_timeout: float = 10.0
    # Longest silence while reading: between SSE events when streaming, the whole
    # generation when not. Generous because slow local models stream slowly; the whole
    # call has its own deadline (GenerationRequest.timeout) on top of this.
    read_timeout: float = 90.0
    write_timeout: float = 30.0
    # Waiting for a pooled connection is not a provider failure, so no limit by default.
    pool_timeout: float | None = None
    max_retries: int = 3  # retries after the first attempt
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    # A Retry-After longer than this is not waited out: the error is raised at once.
    max_retry_after: float = 60.0
    max_connections: int = 64


def make_client(
    options: HttpOptions | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    tls: bool = True,
) -> httpx2.AsyncClient:
    """An AsyncClient with explicit timeouts, a bounded pool and no redirects.

    Redirects are refused so that credentials in custom headers (x-api-key) never
    follow a POST to another host; the error names the new location instead.
    `tls=False` (a plain-http endpoint, e.g. a local server) skips loading the CA
    bundle, which costs ~50 ms per process and would never be used.
    """
    import httpx2

    options = options or HttpOptions()
    return httpx2.AsyncClient(
        verify=tls,
        timeout=httpx2.Timeout(
            connect=options.connect_timeout,
            read=options.read_timeout,
            write=options.write_timeout,
            pool=options.pool_timeout,
        ),
        limits=httpx2.Limits(
            max_connections=options.max_connections,
            max_keepalive_connections=min(options.max_connections, 32),
            keepalive_expiry=30.0,
        ),
        headers={"user-agent": _user_agent(), **(headers or {})},
        follow_redirects=False,
    )


def _user_agent() -> str:
    import loom

    version = getattr(loom, "__version__", None)
    return f"loom/{version}" if version else "loom"


# ---------------------------------------------------------------------------
# Retry timing


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: delta-seconds or an HTTP-date."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        import email.utils  # rare path; keeps the module import light

        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": RFC 9110 dates are GMT regardless
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    # retry-after-ms is what OpenAI and Anthropic send for sub-second waits.
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"))


def backoff_delay(attempt: int, options: HttpOptions, retry_after: float | None = None) -> float:
    """Delay before retry number `attempt` (0-based).

    The server's Retry-After wins when given; otherwise exponential backoff with
    equal jitter, so concurrent clients spread out but never retry immediately.
    """
    if retry_after is not None:
        return retry_after + random.uniform(0.0, min(retry_after, 1.0) * 0.1)
    cap = min(options.backoff_max, options.backoff_base * (2**attempt))
    return cap / 2 + random.uniform(0.0, cap / 2)


# ---------------------------------------------------------------------------
# Error lines


def _one_line(text: str, limit: int = _MAX_MESSAGE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def provider_message(body: bytes | str | Any) -> tuple[str | None, str | None]:
    """(message, error type) from a provider's error body, in any of the common shapes.

    OpenAI `{"error": {"message", "type", "code"}}`, Anthropic
    `{"type": "error", "error": {"type", "message"}}`, vLLM `{"message", "type"}`,
    FastAPI `{"detail": ...}`, llama.cpp `{"error": {"code", "message"}}`, or plain text.
    """
    data: Any = body
    if isinstance(body, bytes | str):
        raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            data = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            text = raw.strip()
            if not text or text.lstrip().startswith("<"):  # an HTML error page says nothing useful
                return None, None
            return _one_line(text), None
    if not isinstance(data, dict):
        return None, None
    err = data.get("error", data)
    if isinstance(err, str):
        return _one_line(err), None
    if not isinstance(err, dict):
        return None, None
    kind = err.get("type") or err.get("code")
    kind_s = str(kind) if isinstance(kind, str | int) and kind != "" else None
    message = err.get("message")
    if message is None:
        message = err.get("detail")
    if isinstance(message, list):  # FastAPI validation errors
        message = "; ".join(
            str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in message
        )
    if message is None or message == "":
        return None, kind_s
    return _one_line(str(message)), kind_s


def _reason(status: int, phrase: str) -> str:
    if phrase:
        return phrase
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


# ---------------------------------------------------------------------------
# Server-sent events


@dataclass(frozen=True, slots=True)
class ServerEvent:
    event: str
    data: str
    id: str = ""


_LINE_END = re.compile(r"\r\n|\r|\n")


class EventTooLarge(ValueError):
    pass


class SSEDecoder:
    """Incremental text/event-stream decoder (WHATWG rules): feed text, get complete events.

    Lines end in CRLF, LF or CR; `:` lines are comments; several `data:` lines join
    with newlines; an event is dispatched at a blank line. `[DONE]` is ordinary data:
    the caller decides what it means.
    """

    def __init__(self, max_event_bytes: int = _MAX_EVENT_BYTES) -> None:
        self._buffer = ""
        self._event = ""
        self._data: list[str] = []
        self._size = 0
        self._last_id = ""
        self._max = max_event_bytes

    def feed(self, text: str) -> list[ServerEvent]:
        buffer = self._buffer + text
        events: list[ServerEvent] = []
        pos = 0
        for match in _LINE_END.finditer(buffer):
            if match.group() == "\r" and match.end() == len(buffer):
                break  # may be the first half of a CRLF split across reads
            event = self._line(buffer[pos : match.start()])
            pos = match.end()
            if event is not None:
                events.append(event)
        self._buffer = buffer[pos:]
        if len(self._buffer) + self._size > self._max:
            raise EventTooLarge(f"server-sent event larger than {self._max} bytes")
        return events

    def close(self) -> list[ServerEvent]:
        """End of stream. A complete last line still counts; a partial one is a cut."""
        events: list[ServerEvent] = []
        if self._buffer.endswith("\r"):
            event = self._line(self._buffer[:-1])
            if event is not None:
                events.append(event)
        self._buffer = ""
        # Lenient: servers that close right after a final data line without the blank
        # line still meant that event.
        event = self._line("")
        if event is not None:
            events.append(event)
        return events

    def _line(self, line: str) -> ServerEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = ServerEvent(self._event or "message", "\n".join(self._data), self._last_id)
            self._event, self._data, self._size = "", [], 0
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._size += len(value) + 1
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        return None


# ---------------------------------------------------------------------------
# The endpoint


class Endpoint:
    """One provider base URL with its headers, retry policy and a lazily made client.

    Every failure becomes a one-line BackendError naming the provider, the status and
    the provider's own message; the API key never appears in a message or detail.
    """

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        options: HttpOptions | None = None,
        secrets: Iterable[str | None] = (),
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.display_url = safe_url(self.base_url)
        self.options = options or HttpOptions()
        self._headers = dict(headers or {})
        self._secrets = tuple(s for s in secrets if s)
        self._client: httpx2.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx2.AsyncClient:
        # Connections belong to the event loop that opened them; a library caller may
        # run several asyncio.run() in turn, so each loop gets its own client.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop or self._client.is_closed:
            tls = not self.base_url.startswith("http://")
            self._client = make_client(self.options, headers=self._headers, tls=tls)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()
        self._loop = None

    # -- errors --------------------------------------------------------------

    def error(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        details: Mapping[str, object] | None = None,
        cls: type[BackendError] = BackendError,
    ) -> BackendError:
        """A BackendError with the provider prefix and secrets scrubbed from every field."""
        clean: dict[str, object] = {"provider": self.provider, "url": self.display_url}
        for key, value in (details or {}).items():
            if value is not None:
                clean[key] = redact(value, self._secrets) if isinstance(value, str) else value
        return cls(
            redact(f"{self.provider}: {message}", self._secrets),
            status=status,
            retryable=retryable,
            retry_after=retry_after,
            **clean,
        )

    def _status_error(
        self, status: int, phrase: str, headers: Mapping[str, str], body: bytes
    ) -> BackendError:
        message, kind = provider_message(body)
        head = f"{status} {_reason(status, phrase)}".rstrip()
        if 300 <= status < 400:
            where = headers.get("location")
            message = f"redirected to {safe_url(where)}" if where else "redirected"
        should = headers.get("x-should-retry")  # OpenAI and Anthropic say so explicitly
        retryable = should == "true" or (should != "false" and status in _RETRY_STATUSES)
        return self.error(
            f"{head} from {self.display_url}" + (f": {message}" if message else ""),
            status=status,
            retryable=retryable,
            retry_after=_retry_after(headers),
            details={
                "error_type": kind,
                "request_id": headers.get("x-request-id") or headers.get("request-id"),
            },
        )

    def _transport_error(self, exc: Exception, *, streaming: bool = False) -> BackendError:
        import httpx2

        detail = str(exc) or type(exc).__name__
        opts = self.options
        if isinstance(exc, httpx2.UnsupportedProtocol | httpx2.InvalidURL):
            # The configured URL is wrong: asking again cannot help.
            return self.error(
                _one_line(f"invalid URL {self.display_url}: {detail}"),
                details={"error_type": type(exc).__name__},
            )
        if isinstance(exc, httpx2.ConnectTimeout):
            message = f"timed out connecting to {self.display_url} after {opts.connect_timeout:g}s"
        elif isinstance(exc, httpx2.ReadTimeout):
            message = f"no data from {self.display_url} for {opts.read_timeout:g}s"
        elif isinstance(exc, httpx2.WriteTimeout):
            message = f"timed out sending the request to {self.display_url}"
        elif isinstance(exc, httpx2.PoolTimeout):
            message = f"no free connection to {self.display_url} (pool timeout)"
        elif isinstance(exc, httpx2.ConnectError):
            message = f"cannot connect to {self.display_url}: {detail}"
        elif streaming:
            message = f"connection to {self.display_url} lost mid-response: {detail}"
        elif isinstance(exc, httpx2.TransportError):
            message = f"connection to {self.display_url} failed: {detail}"
        else:  # DecodingError, TooManyRedirects: a broken response, not a flaky network
            return self.error(
                f"bad response from {self.display_url}: {detail}",
                details={"error_type": type(exc).__name__},
            )
        return self.error(
            _one_line(message), retryable=True, details={"error_type": type(exc).__name__}
        )

    def malformed(self, what: str, exc: Exception | str) -> BackendError:
        return self.error(f"malformed JSON in {what} from {self.display_url}: {exc}")

    def parse_event(self, event: ServerEvent) -> dict[str, Any]:
        """The JSON object an event carries; anything else is a malformed stream."""
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError as exc:
            raise self.malformed("the event stream", exc) from None
        if not isinstance(data, dict):
            raise self.malformed("the event stream", f"expected an object, got {event.data[:80]!r}")
        return data

    def inband_error(self, payload: Any) -> BackendError:
        """An error the provider reported inside a successful response or stream."""
        message, kind = provider_message(payload)
        return self.error(
            f"{kind or 'error'} from {self.display_url}: {message or 'no message'}",
            retryable=kind in RETRYABLE_ERROR_TYPES,
            details={"error_type": kind},
        )

    # -- requests (one attempt each; see `retrying`) --------------------------

    def _url(self, path: str) -> str:
        return self.base_url + path

    @staticmethod
    def _encode(body: Mapping[str, Any]) -> bytes:
        # Token ids as int keys are normal in logit_bias.
        return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)

    async def post_json(self, path: str, body: Mapping[str, Any]) -> Any:
        """POST a JSON body and return the parsed JSON answer."""
        import httpx2

        try:
            response = await self._http().post(
                self._url(path),
                content=self._encode(body),
                headers={"content-type": "application/json", "accept": "application/json"},
            )
        except (httpx2.RequestError, httpx2.InvalidURL) as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 300:
            raise self._status_error(
                response.status_code, response.reason_phrase, response.headers, response.content
            )
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise self.malformed("the response", exc) from None

    async def events(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        last: Callable[[ServerEvent], bool] | None = None,
    ) -> AsyncGenerator[ServerEvent, None]:
        """POST a JSON body and yield the server-sent events of the answer. An event for
        which `last` is true ends the answer: what little the body has left is read first,
        so its connection goes back to the pool instead of being closed."""
        import httpx2

        started = False  # any event handed out: failures past this point are cuts
        try:
            async with self._http().stream(
                "POST",
                self._url(path),
                content=self._encode(body),
                headers={"content-type": "application/json", "accept": "text/event-stream"},
            ) as response:
                if response.status_code >= 300:
                    raw = await _read_capped(response)
                    raise self._status_error(
                        response.status_code, response.reason_phrase, response.headers, raw
                    )
                ctype = response.headers.get("content-type", "")
                if "json" in ctype and "event-stream" not in ctype:
                    raw = await _read_capped(response)
                    message, _ = provider_message(raw)
                    raise self.error(
                        f"expected an event stream from {self.display_url}, got {ctype}"
                        + (f": {message}" if message else "")
                    )
                decoder = SSEDecoder()
                text = codecs.getincrementaldecoder("utf-8")("replace")
                body_parts = response.aiter_bytes()
                async for raw in body_parts:
                    for event in decoder.feed(text.decode(raw)):
                        started = True
                        if last is not None and last(event):
                            await _drain(body_parts)
                            yield event
                            return
                        yield event
                for event in decoder.feed(text.decode(b"", final=True)) + decoder.close():
                    yield event
        except (httpx2.RequestError, httpx2.InvalidURL) as exc:
            raise self._transport_error(exc, streaming=started) from None
        except EventTooLarge as exc:
            raise self.error(f"bad event stream from {self.display_url}: {exc}") from None

    # -- retries ----------------------------------------------------------------

    async def retrying(
        self, attempt: Callable[[], AsyncGenerator[T, None]]
    ) -> AsyncGenerator[T, None]:
        """Run `attempt` again on retryable failures, but only while it has yielded nothing.

        Once an item went out, a failure can no longer be hidden by a retry: it is
        re-raised as a StreamCut, so the caller keeps what it received.
        """
        opts = self.options
        timeouts = 0
        for number in range(opts.max_retries + 1):
            yielded = False
            try:
                async with aclosing(attempt()) as items:
                    async for item in items:
                        yielded = True
                        yield item
                return
            except BackendError as exc:
                if yielded:
                    if isinstance(exc, StreamCut):
                        raise
                    raise as_cut(exc) from None
                last = number == opts.max_retries
                too_long = exc.retry_after is not None and exc.retry_after > opts.max_retry_after
                # A server that accepted the request and went silent is asked once more, not
                # max_retries times: each wait is a whole read timeout.
                silent = exc.details.get("error_type") == "ReadTimeout"
                timeouts += silent
                if not exc.retryable or last or too_long or timeouts > 1:
                    if number > 0:
                        exc.message = f"{exc.message} (gave up after {number + 1} attempts)"
                        exc.args = (exc.message,)
                        exc.details["attempts"] = number + 1
                    raise
                delay = backoff_delay(number, opts, exc.retry_after)
                report_retry(exc.message, delay, number + 1)
                log.info(
                    "%s; retrying in %.2fs (retry %d of %d)",
                    exc.message,
                    delay,
                    number + 1,
                    opts.max_retries,
                )
            await asyncio.sleep(delay)


def as_cut(exc: BackendError, message: str | None = None) -> StreamCut:
    """The same failure, as a StreamCut: output was already handed out."""
    cut = StreamCut(message or exc.message, status=exc.status)
    cut.details = dict(exc.details)
    return cut


# After an answer's last event a server only ends the body: a few bytes, at once.
DRAIN_BYTES = 64 * 1024
DRAIN_SECONDS = 0.5


async def _drain(body_parts: AsyncIterator[bytes]) -> None:
    """Read the rest of a finished answer, within bounds; a server that goes on is cut."""
    size = 0
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for part in body_parts:
                size += len(part)
                if size > DRAIN_BYTES:
                    return
    except TimeoutError:
        pass


async def _read_capped(response: httpx2.Response) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for part in response.aiter_bytes():
        parts.append(part)
        size += len(part)
        if size >= _MAX_ERROR_BODY:
            break
    return b"".join(parts)[:_MAX_ERROR_BODY]


# ---------------------------------------------------------------------------
# Several requests as one stream


async def fan_out(
    branches: Sequence[Callable[[], AsyncGenerator[Chunk, None]]],
) -> AsyncGenerator[Chunk, None]:
    """Run one request per branch concurrently and interleave their chunks as they come.

    Branch i's chunks get index i. A failing branch does not stop the others (their
    output is paid for); once all have ended, the first failure is raised: as a
    StreamCut naming the failed branches if anything was yielded, else as is.
    """
    queue: asyncio.Queue[tuple[int, Chunk | BaseException | None]] = asyncio.Queue()

    async def run(index: int, make: Callable[[], AsyncGenerator[Chunk, None]]) -> None:
        try:
            async with aclosing(make()) as chunks:
                async for chunk in chunks:
                    chunk.index = index
                    queue.put_nowait((index, chunk))
        except BaseException as exc:  # handed to the consumer, which re-raises
            queue.put_nowait((index, exc))
            if not isinstance(exc, Exception):
                raise
        else:
            queue.put_nowait((index, None))

    tasks = [asyncio.create_task(run(i, make)) for i, make in enumerate(branches)]
    failures: dict[int, BackendError] = {}
    pending = len(tasks)
    yielded = False
    try:
        while pending:
            index, item = await queue.get()
            if isinstance(item, Chunk):
                yielded = True
                yield item
                continue
            pending -= 1
            if isinstance(item, BackendError):
                failures[index] = item
            elif isinstance(item, BaseException):
                raise item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if not failures:
        return
    first = failures[min(failures)]
    if not yielded:
        raise first
    failed = sorted(failures)
    names = ", ".join(map(str, failed))
    cut = as_cut(
        first, f"{first.message} (branch{'es' if len(failed) > 1 else ''} {names} of {len(tasks)})"
    )
    cut.details["failed_branches"] = failed
    raise cut from None
