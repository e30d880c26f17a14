"""The upstream registry client."""
