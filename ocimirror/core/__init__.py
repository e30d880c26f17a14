"""The pure domain: digests, media types, descriptors, references, manifests.

Nothing in this package does I/O or imports an I/O library (httpx, fsspec, SQLAlchemy, a server);
``tests/test_architecture.py`` enforces it.
"""
