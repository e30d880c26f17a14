"""The mirror-and-host workflow, offline, on the embedded default (what ``make demo`` runs).

1. A throwaway upstream: an ocimirror instance serving a few generated images (a multi-arch
   index and two single-platform images), as any registry would.
2. Pulp's workflow with the ``ocimirror`` CLI in a fresh home (SQLite + files):
   remote create -> repository create -> repository sync -> distribution create -> serve.
3. A pull back through the served registry API (skopeo when installed, else Python), checking
   that every digest equals the upstream's.

Everything listens on 127.0.0.1 and stops at the end; ``KEEP=1`` leaves the mirror serving so
you can try the printed skopeo, podman and docker commands.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ocimirror.core.digest import Digest
from ocimirror.testing import free_port, random_image, random_index, serving, write_layout

PORT = int(os.environ.get("PORT", "24817"))


def step(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def cli(home: Path, *argv: str) -> Any:
    """Run one ``ocimirror`` command, echo it, return its JSON output."""
    shown = " ".join(a if " " not in a else repr(a) for a in argv)
    print(f"$ ocimirror {shown}", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "ocimirror", "--home", str(home), *argv],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"command failed: {done.stderr.strip()}")
    return json.loads(done.stdout) if done.stdout.strip() else None


def pull(port: int, name: str, tag: str, out: Path) -> str:
    """Copy an image out of the served registry; the digest of what was pulled."""
    skopeo = shutil.which("skopeo")
    ref = f"docker://127.0.0.1:{port}/{name}:{tag}"
    if skopeo:
        print(f"$ skopeo copy --all --src-tls-verify=false {ref} oci:{out}:{tag}")
        subprocess.run(
            [
                skopeo,
                "copy",
                "--all",
                "--preserve-digests",
                "--src-tls-verify=false",
                "-q",
                ref,
                f"oci:{out}:{tag}",
            ],
            check=True,
        )
        index = json.loads((out / "index.json").read_text())
        return str(index["manifests"][0]["digest"])
    print(f"(skopeo is not installed: pulling {ref} with httpx)")
    base = f"http://127.0.0.1:{port}/v2/{name}"
    accept = ",".join(
        [
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        ]
    )
    with httpx.Client(headers={"Accept": accept}) as http:
        top = http.get(f"{base}/manifests/{tag}")
        top.raise_for_status()
        pending = [top.json()]
        while pending:
            doc = pending.pop()
            for child in doc.get("manifests", []):
                pending.append(http.get(f"{base}/manifests/{child['digest']}").json())
            for blob in [doc["config"], *doc["layers"]] if "config" in doc else []:
                data = http.get(f"{base}/blobs/{blob['digest']}").content
                assert str(Digest.of(data)) == blob["digest"], "blob digest mismatch"
        return str(Digest.of(top.content))


def main() -> int:
    keep = os.environ.get("KEEP") == "1"
    work = Path(tempfile.mkdtemp(prefix="ocimirror-demo-"))
    servers = contextlib.ExitStack()
    try:
        step("1. A throwaway upstream registry with generated images")
        base = random_image(seed="demo-base", layers=1, layer_size=64 * 1024).layers
        images = {
            "latest": random_index(seed="demo-multi", platforms=("linux/amd64", "linux/arm64/v8")),
            "1.0": random_image(seed="demo-1.0", base=base),
            "1.1": random_image(seed="demo-1.1", base=base),
            "1.1-rc1": random_image(seed="demo-rc", base=base),
        }
        write_layout(work / "layout", images)
        upstream_home = work / "upstream"
        cli(upstream_home, "repository", "create", "--name", "hello")
        cli(upstream_home, "repository", "import", "--name", "hello", "--path",
            str(work / "layout"))  # fmt: skip
        cli(upstream_home, "distribution", "create", "--name", "hello", "--base-path",
            "library/hello", "--repository", "hello")  # fmt: skip
        upstream_url = "http://" + servers.enter_context(serving(upstream_home))
        print(f"upstream serving library/hello at {upstream_url}")

        step("2. Mirror it (Pulp's workflow) into a fresh home: SQLite + files")
        home = work / "home"
        cli(home, "remote", "create", "--name", "hello", "--url", upstream_url,
            "--upstream-name", "library/hello", "--include-tags", "latest",
            "--include-tags", "1.*", "--exclude-tags", "*-rc*")  # fmt: skip
        cli(home, "repository", "create", "--name", "hello", "--remote", "hello")
        version = cli(home, "repository", "sync", "--name", "hello", "--no-progress")
        print(json.dumps({k: version[k] for k in ("number", "content_summary")}, indent=2))
        again = cli(home, "repository", "sync", "--name", "hello", "--no-progress")
        print(f"re-sync: version {again['number']}, "
              f"created={again['sync']['created']}, "
              f"manifests downloaded={again['sync']['manifests_downloaded']}")  # fmt: skip
        cli(home, "distribution", "create", "--name", "hello", "--base-path", "hello",
            "--repository", "hello")  # fmt: skip

        step("3. Host it and pull it back through the registry API")
        port = free_port(PORT)
        print(f"$ ocimirror serve --port {port}")
        servers.enter_context(serving(home, port=port))
        pulled = pull(port, "hello", "latest", work / "pulled")
        want = str(images["latest"].digest)
        print(f"pulled hello:latest {pulled}")
        if pulled != want:
            print(f"digest mismatch: upstream {want}", file=sys.stderr)
            return 1
        print("the digest equals the upstream's: byte-for-byte mirror")

        step("Next")
        print(
            f"""With KEEP=1 the mirror keeps serving http://127.0.0.1:{port} (home {home}). Try:
  skopeo inspect --tls-verify=false docker://127.0.0.1:{port}/hello:1.0
  skopeo list-tags --tls-verify=false docker://127.0.0.1:{port}/hello
  podman pull --tls-verify=false 127.0.0.1:{port}/hello:1.0
  docker pull 127.0.0.1:{port}/hello:1.0   # after adding it to "insecure-registries"
  ocimirror --home {home} repository version list --repository hello"""
        )
        if keep:
            print("\nKEEP=1: serving until you press Ctrl-C", flush=True)
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return 0
    finally:
        servers.close()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
