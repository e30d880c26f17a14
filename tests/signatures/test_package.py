"""The signatures package: every export resolves, and importing it stays light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fixtures.signing import CosignKey

import ocimirror.signatures as signatures


def test_every_name_in_all_resolves_to_a_documented_object() -> None:
    """``__all__`` lists what the package gives, the lazily loaded names included."""
    assert {"GPGVerifier", "CosignVerifier", "parse_payload", "decode_extension"} <= set(
        signatures.__all__
    )
    for name in signatures.__all__:
        value = getattr(signatures, name)
        if callable(value):
            assert value.__doc__, name


def test_importing_the_package_loads_neither_asyncio_nor_cryptography(
    tmp_path: Path, cosign_key: CosignKey
) -> None:
    """The GPG verifier and cosign's key handling load when they are first used."""
    script = (
        "import json, sys, ocimirror.signatures as s\n"
        "before = sorted(sys.modules)\n"
        "s.GPGVerifier, s.CosignVerifier([open(sys.argv[1]).read()])\n"
        "print(json.dumps([before, sorted(sys.modules)]))\n"
    )
    pem = tmp_path / "cosign.pub"
    pem.write_bytes(cosign_key.public_pem())
    done = subprocess.run(
        [sys.executable, "-c", script, str(pem)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    before, after = (set(names) for names in json.loads(done.stdout))
    tops = {name.partition(".")[0] for name in before}
    assert not tops & {"asyncio", "cryptography"}
    assert {"asyncio", "cryptography"} <= {name.partition(".")[0] for name in after}
