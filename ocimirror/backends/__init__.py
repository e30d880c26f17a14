"""Storage backends: metadata (SQLAlchemy) and blobs (fsspec), each behind a small protocol."""
