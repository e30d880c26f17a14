"""Signature formats (sigstore lookaside, Docker signature API, cosign, OCI referrers)."""
