"""multipart/form-data read as it arrives: file parts stream into the blob store, never into memory.

python-multipart's push parser calls back with each piece of a part; file bytes go to a
``BlobWriter`` (in a worker thread, off the event loop) with its own size limit, and a file's first
bytes are sniffed as soon as they are in, so a wrong type is refused before the rest is read.
Text fields are kept in memory up to ``field_limit`` bytes. Unknown parts are refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

import python_multipart
from python_multipart.multipart import parse_options_header

from roadie.blobs import BlobTooLargeError, BlobWriter
from roadie.jobs.intake import IntakeError, field_error

#: A file part's first bytes are checked by this; it raises IntakeError to refuse the part.
Sniffer = Callable[[str, bytes], None]


@dataclass
class FilePart:
    name: str
    filename: str | None
    blob: BlobWriter
    sniffed: bool = False
    complete: bool = False


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    file: FilePart | None = None


class StreamingForm:
    """The parts of one request; file parts are uncommitted blobs that vanish unless committed."""

    def __init__(
        self,
        *,
        file_limits: dict[str, int],
        field_limit: int,
        fields: set[str],
        sniff: Sniffer,
        sniff_bytes: int,
    ) -> None:
        self.file_limits, self.field_limit, self.allowed_fields = file_limits, field_limit, fields
        self.sniff, self.sniff_bytes = sniff, sniff_bytes
        self.fields: dict[str, bytes] = {}
        self.files: dict[str, FilePart] = {}
        self._blobs = ExitStack()
        self._part = _Part()
        self._header_name, self._header_value = b"", b""
        self._writes: list[tuple[FilePart, bytes]] = []
        self._ended: list[FilePart] = []

    # python-multipart callbacks: record what arrived; the writing happens in ``_drain``.
    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._part.headers[self._header_name.lower()] = self._header_value
        self._header_name, self._header_value = b"", b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._part.headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode(errors="replace")
        part = self._part
        part.name = name
        if name in self.fields or name in self.files:
            raise IntakeError(
                422, "validation_error", f"part {name!r} is sent twice", [field_error(name, "sent twice")]
            )
        if name in self.file_limits:
            raw = options.get(b"filename")
            part.filename = raw.decode(errors="replace")[:255] if raw is not None else None
            blob = self._blobs.enter_context(BlobWriter(self.file_limits[name]))
            part.file = FilePart(name, part.filename, blob)
            self.files[name] = part.file
        elif name not in self.allowed_fields:
            known = ", ".join(sorted([*self.file_limits, *self.allowed_fields]))
            raise IntakeError(
                422,
                "validation_error",
                f"unknown part {name!r}",
                [field_error(name or "body", f"expected one of {known}")],
            )

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part.file is not None:
            self._writes.append((self._part.file, data[start:end]))
            return
        self._part.data += data[start:end]
        if len(self._part.data) > self.field_limit:
            raise IntakeError(
                413,
                "body_too_large",
                f"part {self._part.name!r} exceeds {self.field_limit} bytes",
                [field_error(self._part.name, "too large")],
            )

    def _on_part_end(self) -> None:
        if self._part.file is not None:
            self._ended.append(self._part.file)
        else:
            self.fields[self._part.name] = bytes(self._part.data)

    def _drain(self) -> None:
        """Write what the last chunk carried (in a worker thread) and sniff files whose head is in."""
        writes, ended = self._writes, self._ended
        self._writes, self._ended = [], []
        for part, data in writes:
            try:
                part.blob.write(data)
            except BlobTooLargeError as exc:
                raise IntakeError(
                    413,
                    "file_too_large",
                    f"{part.name} exceeds {exc.limit} bytes",
                    [field_error(part.name, "too large")],
                ) from exc
            if not part.sniffed and len(part.blob.head) >= self.sniff_bytes:
                part.sniffed = True
                self.sniff(part.name, part.blob.head)
        for part in ended:
            part.blob.sync()  # the disk work of keeping it happens here, off the event loop
            part.complete = True
            if not part.sniffed:
                part.sniffed = True
                self.sniff(part.name, part.blob.head)

    async def read(self, content_type: str, stream: AsyncIterator[bytes]) -> None:
        """Consume the body; on any refusal every blob of the request is already gone."""
        kind, options = parse_options_header(content_type)
        if kind != b"multipart/form-data" or b"boundary" not in options:
            raise IntakeError(
                415,
                "unsupported_media_type",
                "send the upload as multipart/form-data",
                [field_error("Content-Type", "not multipart/form-data")],
            )
        parser = python_multipart.MultipartParser(
            options[b"boundary"],
            {
                "on_part_begin": self._on_part_begin,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
            },
        )
        try:
            async for chunk in stream:
                parser.write(chunk)
                await asyncio.to_thread(self._drain)
            parser.finalize()
            await asyncio.to_thread(self._drain)
            unfinished = [part.name for part in self.files.values() if not part.complete]
            if unfinished:
                raise IntakeError(400, "malformed_multipart", f"the body ends inside part {unfinished[0]!r}")
        except python_multipart.exceptions.MultipartParseError as exc:
            self.discard()
            raise IntakeError(400, "malformed_multipart", f"the multipart body is malformed: {exc}") from exc
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Delete every uncommitted blob of this request."""
        self._blobs.close()
