"""Wire models of ``/v1/workspace``: an agent's workspace files in Mission Control, so the
instance that starts it next — on its failover host too — begins with its files."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated

from pydantic import Base64Bytes, BaseModel, ConfigDict, Field

from mcos.domain.workspace_sync import (
    MAX_BATCH_BLOBS,
    MAX_FILES,
    MAX_PATH,
    WorkspaceManifest,
)

MAX_BLOB_REQUEST = 12 * 1024 * 1024
"""The body limit of ``/v1/workspace`` requests: an 8 MiB file in base64, or a manifest of
10,000 files, with room to spare."""


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BlobIn(_Wire):
    """A file's bytes, base64; stored under the sha256 its URL names (which must match)."""

    content: Base64Bytes


class BlobOut(_Wire):
    sha256: str
    size: int
    new: bool = False
    """Whether Mission Control did not hold it before (upload)."""
    content: str | None = None
    """The bytes, base64 (download)."""

    def data(self) -> bytes:
        """The downloaded bytes."""
        return base64.b64decode(self.content or "", validate=True)


class FileIn(_Wire):
    """One file of a manifest: its path in the workspace, its content's hash and size."""

    path: str = Field(min_length=1, max_length=MAX_PATH)
    sha256: str = Field(min_length=1, max_length=100)
    size: int = Field(ge=0, le=2**40)


class ManifestIn(_Wire):
    """Every file of the workspace now (a file left out is deleted from the latest version)."""

    files: list[FileIn] = Field(max_length=MAX_FILES)


class ManifestOut(_Wire):
    """An agent's latest workspace version (0: nothing pushed yet)."""

    agent: str
    version: int
    fence: int | None
    updated_at: datetime | None
    bytes: int
    files: list[FileIn]

    @classmethod
    def of(cls, m: WorkspaceManifest) -> ManifestOut:
        return cls(
            agent=m.agent, version=m.version, fence=m.fence, updated_at=m.updated_at,
            bytes=m.bytes, files=[FileIn(path=f.path, sha256=f.sha256, size=f.size)
                                  for f in m.files],
        )  # fmt: skip


# --- batched blob transfer ---------------------------------------------------------------------
class BlobUpload(_Wire):
    """One file's bytes in a batched upload, stored under the sha256 they must hash to."""

    sha256: str = Field(min_length=1, max_length=100)
    content: str
    """The bytes, base64 (standard alphabet, padded; anything else is refused)."""
    path: str | None = Field(default=None, max_length=MAX_PATH)
    """Where the file is in the workspace: named in a refusal, not stored (a blob is content
    only; the manifest says where it goes)."""

    @classmethod
    def of(cls, sha256: str, content: bytes, path: str | None = None) -> BlobUpload:
        return cls(sha256=sha256, content=base64.b64encode(content).decode(), path=path)


class BlobsIn(_Wire):
    """Up to 1,000 blobs and 4 MiB of file bytes (one larger file alone) in one request."""

    blobs: list[BlobUpload] = Field(min_length=1, max_length=MAX_BATCH_BLOBS)


class BlobsOut(_Wire):
    """Each blob uploaded, in order: its hash, size and whether Mission Control lacked it."""

    blobs: list[BlobOut]


Sha256 = Annotated[str, Field(min_length=1, max_length=100)]


class FetchIn(_Wire):
    """The hashes of the blobs wanted (up to 1,000)."""

    sha256: list[Sha256] = Field(min_length=1, max_length=MAX_BATCH_BLOBS)


class FetchOut(_Wire):
    """The first blobs asked that fit one batch (4 MiB of file bytes; a larger blob alone),
    in the order asked, and the hashes asked after them: ask again for those."""

    blobs: list[BlobOut]
    left: list[str] = Field(default_factory=list)
