"""Reading and writing OCI image layouts, as a directory or as a tar file.

An OCI image layout (image-spec ``image-layout.md``) is the air-gap transfer format::

    oci-layout          {"imageLayoutVersion": "1.0.0"}
    index.json          an image index; an entry names itself with the
                        org.opencontainers.image.ref.name annotation (its tag)
    blobs/<alg>/<hex>   every manifest, config and layer, by digest

:class:`LayoutWriter` exports one and :class:`LayoutReader` imports one. Both do plain
synchronous file I/O in constant memory; async callers run them in a thread.

The package is split along those seams: :mod:`~ocimirror.layout.index` parses
``index.json`` and ``oci-layout``, :mod:`~ocimirror.layout.sources` finds files in a
directory or tar archive, and :mod:`~ocimirror.layout.reader` and
:mod:`~ocimirror.layout.writer` hold the two classes. Import from ``ocimirror.layout``.
"""

from __future__ import annotations

from ocimirror.layout.index import (
    CONTAINERD_NAME_ANNOTATION,
    INDEX_FILE,
    INDEX_MEDIA_TYPE,
    LAYOUT_FILE,
    LAYOUT_VERSION,
    MAX_INDEX_SIZE,
    REF_NAME_ANNOTATION,
    LayoutRef,
    blob_path,
)
from ocimirror.layout.reader import LayoutReader
from ocimirror.layout.writer import LayoutWriter

__all__ = [
    "CONTAINERD_NAME_ANNOTATION",
    "INDEX_FILE",
    "INDEX_MEDIA_TYPE",
    "LAYOUT_FILE",
    "LAYOUT_VERSION",
    "MAX_INDEX_SIZE",
    "REF_NAME_ANNOTATION",
    "LayoutReader",
    "LayoutRef",
    "LayoutWriter",
    "blob_path",
]
