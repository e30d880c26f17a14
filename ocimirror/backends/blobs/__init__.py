"""Content-addressed blob storage: a small protocol, optional capabilities, and an fsspec store.

:class:`BlobStore` is all a registry needs: stat, stream, read, write, delete. Stores may offer
more, each as its own protocol checked at run time with ``isinstance``:

* :class:`BlobLister`: list every stored digest and remove abandoned uploads (garbage collection);
* :class:`BlobPresigner`: a time-limited URL the client can fetch the bytes from directly;
* :class:`BlobLocalPath`: a real file for ``sendfile``.

:class:`FsspecBlobStore` implements all of them over any fsspec URL. Under its root::

    blobs/<algorithm>/<first 2 hex>/<hex>    one file per digest, never partial or corrupt
    uploads/<uuid>                           uploads in progress (or abandoned)

Every write is verified (size and digest) as the stream ends, and published atomically:

* local files: temp file under ``uploads/``, ``fsync``, then ``os.replace`` into place;
* object stores (s3, gcs, azure): bytes go straight to the final key when the digest is known in
  advance, otherwise to ``uploads/`` and then a server-side copy; an object is invisible until its
  upload completes, and a failed verification aborts the upload instead of completing it;
* anything else (``memory://``, sftp, ...): temp file under ``uploads/``, then a move.

The package is split along those seams:

* ``protocol``: :class:`BlobStore`, :class:`BlobWriter`, :class:`BlobReader` and the optional
  capabilities;
* ``sinks``: where a writer's bytes land and how they are published atomically;
* ``streams``: :class:`FsspecBlobWriter` and :class:`FsspecBlobReader`;
* ``fsspec_store``: :class:`FsspecBlobStore` and :func:`open_blob_store`.

Import from ``ocimirror.backends.blobs``: the submodules are an implementation detail.
"""

from __future__ import annotations

from ocimirror.backends.blobs.fsspec_store import (
    OBJECT_STORE_PROTOCOLS,
    FsspecBlobStore,
    open_blob_store,
)
from ocimirror.backends.blobs.protocol import (
    BlobLister,
    BlobLocalPath,
    BlobPresigner,
    BlobReader,
    BlobStore,
    BlobWriter,
)
from ocimirror.backends.blobs.streams import FsspecBlobReader, FsspecBlobWriter

__all__ = [
    "OBJECT_STORE_PROTOCOLS",
    "BlobLister",
    "BlobLocalPath",
    "BlobPresigner",
    "BlobReader",
    "BlobStore",
    "BlobWriter",
    "FsspecBlobReader",
    "FsspecBlobStore",
    "FsspecBlobWriter",
    "open_blob_store",
]
