"""Content-addressed blob storage: a small protocol, optional capabilities, and two stores.

:class:`BlobStore` is all a registry needs: stat, stream, read, write, delete. Stores may offer
more, each as its own protocol checked at run time with ``isinstance``:

* :class:`BlobLister`: list every stored digest and remove abandoned uploads (garbage collection);
* :class:`BlobPresigner`: a time-limited URL the client can fetch the bytes from directly;
* :class:`BlobLocalPath`: a real file for ``sendfile``.

:func:`open_blob_store` picks the store for a URL: :class:`S3BlobStore` for ``s3://`` and
``s3a://`` (s3fs's async API on the event loop, no worker threads), :class:`FsspecBlobStore`
for every other fsspec URL (fsspec's blocking API in worker threads; ``threaded=True`` takes it
for S3 too). Both implement every capability. Under the root::

    blobs/<algorithm>/<first 2 hex>/<hex>    one file per digest, never partial or corrupt
    uploads/<uuid>                           uploads in progress (or abandoned)

Every write is verified (size and digest) as the stream ends, and published atomically:

* local files: temp file under ``uploads/``, ``fsync``, then ``os.replace`` into place;
* S3 (:class:`S3BlobStore`): a blob smaller than a part (8 MiB) is hashed in memory and
  verified, then stored in one ``PutObject`` at its key; a larger one is a multipart upload,
  completed only after verification and aborted otherwise, straight at its key when the digest
  is known in advance, else under ``uploads/`` and then copied into place server-side. Keys are
  content addresses, so a write needs no HEAD before or after it;
* other object stores (gcs, azure, and S3 with ``threaded=True``): bytes go straight to the
  final key when the digest is known in advance, otherwise to ``uploads/`` and then a
  server-side copy; an object is invisible until its upload completes, and a failed
  verification aborts the upload instead of completing it;
* anything else (``memory://``, sftp, ...): temp file under ``uploads/``, then a move.

A crash leaves at most a temp file, a staged object or an unfinished multipart upload, which
``cleanup_uploads`` removes. The package is split along those seams:

* ``protocol``: :class:`BlobStore`, :class:`BlobWriter`, :class:`BlobReader` and the optional
  capabilities;
* ``base``: what both stores share: the layout, ``put``/``open``/``exists``, the checks of a
  read, and the writers' lifecycle;
* ``streams``: the buffering, hashing, verifying writer both stores' writers build on
  (:class:`FsspecBlobWriter`, :class:`S3BlobWriter`), and :class:`FsspecBlobReader`;
* ``sinks``: where :class:`FsspecBlobWriter`'s bytes land and how they are published atomically;
* ``fsspec_store``: :class:`FsspecBlobStore` and :func:`open_blob_store`;
* ``s3_store``: :class:`S3BlobStore`, one asynchronous s3fs filesystem per event loop.

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
from ocimirror.backends.blobs.s3_store import S3BlobStore, S3BlobWriter
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
    "S3BlobStore",
    "S3BlobWriter",
    "open_blob_store",
]
