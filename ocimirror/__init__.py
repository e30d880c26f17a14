"""ocimirror: mirror and host container images from Python."""
