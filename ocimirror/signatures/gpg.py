"""Verifying GPG ("atomic") signatures with the ``gpg`` program.

An atomic signature is an OpenPGP signed message (``gpg --sign``: binary, not detached, not
armored) whose literal data is a simple-signing payload. Rather than reimplement OpenPGP,
:class:`GPGVerifier` runs GnuPG with a throwaway home directory that holds only the trusted
public keys, and decides from gpg's machine-readable status lines, never from its exit status
or its messages alone:

* exactly one ``VALIDSIG``, whose primary-key fingerprint is one of the imported keys;
* no ``BADSIG``, ``ERRSIG``, ``NO_PUBKEY``, ``EXPKEYSIG``, ``REVKEYSIG`` or ``EXPSIG``.

gpg runs without a shell, without an agent (``--no-autostart``: checking a signature needs
none), without fetching keys, and with ``--max-output`` so a compressed message cannot
unpack into more than :data:`MAX_PAYLOAD_SIZE` bytes. Each call is its own gpg process: the
keyring is only read after :meth:`GPGVerifier.create`, so calls may run concurrently.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import attrs

from ocimirror.errors import Conflict, InvalidError, SignatureInvalid
from ocimirror.signatures.payload import MAX_PAYLOAD_SIZE

__all__ = ["MAX_SIGNATURE_SIZE", "GPGVerifier", "find_gpg", "gpg_available"]

#: Atomic signatures are well under a kilobyte; anything above this is refused unread.
MAX_SIGNATURE_SIZE = 4 * 1024 * 1024
#: How long one gpg run may take before it is killed.
DEFAULT_TIMEOUT = 30.0

_STATUS_PREFIX = "[GNUPG:] "
# Options for every run: no prompts, no agent, no network, status lines on stdout.
_COMMON = (
    "--batch",
    "--no-tty",
    "--no-autostart",
    "--no-auto-key-retrieve",
    "--no-permission-warning",
    "--status-fd",
    "1",
)
# ERRSIG's return code for "no public key" (GPG_ERR_NO_PUBKEY).
_ERRSIG_NO_PUBKEY = "9"


def find_gpg(program: str | None = None) -> str:
    """The path of the gpg program (``program``, else ``gpg`` on ``PATH``); raise
    :class:`InvalidError` saying how to install it when there is none."""
    found = shutil.which(program or "gpg")
    if found is None:
        raise InvalidError(
            f"verifying GPG signatures needs the gpg program, and {program or 'gpg'!r} "
            "was not found (install GnuPG: the Debian package gnupg)"
        )
    return found


def gpg_available(program: str | None = None) -> bool:
    """Whether the gpg program can be found (so atomic signatures can be verified)."""
    try:
        find_gpg(program)
    except InvalidError:
        return False
    return True


@attrs.frozen
class _Run:
    """What one gpg run said: exit status, status lines split into words, last message."""

    returncode: int
    status: tuple[tuple[str, ...], ...]
    message: str

    def lines(self, keyword: str) -> list[tuple[str, ...]]:
        """The arguments of every status line with ``keyword``."""
        return [line[1:] for line in self.status if line and line[0] == keyword]


def _environment() -> dict[str, str]:
    """This environment with English messages and no other GnuPG home or agent."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GNUPG", "GPG_"))}
    env.update(LC_ALL="C", LANGUAGE="C")
    return env


async def _run_gpg(
    program: str, home: str, args: Sequence[str], stdin: bytes, timeout: float
) -> _Run:
    """Run gpg on ``stdin``; raise :class:`TimeoutError` (after killing it) past ``timeout``."""
    process = await asyncio.create_subprocess_exec(
        program,
        "--homedir",
        home,
        *_COMMON,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_environment(),
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    finally:
        if process.returncode is None:  # timed out or cancelled: leave no process behind
            process.kill()
            await process.wait()
    status = tuple(
        tuple(line[len(_STATUS_PREFIX) :].split())
        for line in out.decode("utf-8", "replace").splitlines()
        if line.startswith(_STATUS_PREFIX)
    )
    messages = [m for m in err.decode("utf-8", "replace").splitlines() if m.strip()]
    return _Run(
        returncode=process.returncode or 0,
        status=status,
        message=messages[-1].removeprefix("gpg: ") if messages else "",
    )


def _key_bytes(key: bytes | str, index: int) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, bytes | bytearray | memoryview):
        return bytes(key)
    raise InvalidError(
        f"public key {index}: expected bytes or armored text, got {type(key).__name__}"
    )


def _reason(run: _Run) -> str | None:
    """Why the status lines of a verification reject it, or None when they do not."""
    for keyword, words in (
        ("BADSIG", "bad signature: the signed content does not match it (key {})"),
        ("EXPKEYSIG", "signed by key {}, which has expired"),
        ("REVKEYSIG", "signed by key {}, which was revoked"),
        ("EXPSIG", "the signature made by key {} has expired"),
        ("NO_PUBKEY", "signed by key {}, which is not trusted"),
    ):
        found = run.lines(keyword)
        if found:
            return words.format(found[0][0] if found[0] else "?")
    errors = run.lines("ERRSIG")
    if errors:
        args = errors[0]
        key = args[-1] if len(args) > 6 else (args[0] if args else "?")
        if len(args) > 5 and args[5] == _ERRSIG_NO_PUBKEY:
            return f"signed by key {key}, which is not trusted"
        code = args[5] if len(args) > 5 else "?"
        return f"the signature by key {key} cannot be checked (gpg error {code})"
    return None


@attrs.define(eq=False, kw_only=True)
class GPGVerifier:
    """Checks atomic signatures against a fixed set of trusted GPG public keys.

    Build one with :meth:`create` (it imports the keys into a private GnuPG home); close it
    with :meth:`aclose` or ``async with``, which removes that home.
    """

    _program: str
    _home: str = attrs.field(repr=False)
    _fingerprints: tuple[str, ...]
    _timeout: float = DEFAULT_TIMEOUT
    _closed: bool = attrs.field(default=False, init=False)

    @classmethod
    async def create(
        cls,
        public_keys: Sequence[bytes | str],
        *,
        program: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> GPGVerifier:
        """Import ``public_keys`` (armored text, or armored or binary bytes) into a new home.

        Raise :class:`InvalidError` when gpg is missing, no key is given, or a key cannot be
        read (naming its index in ``public_keys``).
        """
        if isinstance(public_keys, str | bytes) or not public_keys:
            raise InvalidError("GPG verification needs a list of at least one public key")
        found = find_gpg(program)
        keys = [_key_bytes(key, i) for i, key in enumerate(public_keys)]
        home = tempfile.mkdtemp(prefix="ocimirror-gpg-")
        os.chmod(home, 0o700)
        try:
            fingerprints: list[str] = []
            for index, key in enumerate(keys):
                for fingerprint in await _import(found, home, key, index, timeout):
                    if fingerprint not in fingerprints:
                        fingerprints.append(fingerprint)
        except BaseException:
            shutil.rmtree(home, ignore_errors=True)
            raise
        return cls(program=found, home=home, fingerprints=tuple(fingerprints), timeout=timeout)

    @property
    def fingerprints(self) -> tuple[str, ...]:
        """The primary-key fingerprints of the trusted keys (upper-case hex), in import order."""
        return self._fingerprints

    async def verify(self, signature: bytes) -> tuple[bytes, str]:
        """The signed payload and the fingerprint of the trusted key that signed it.

        Raise :class:`SignatureInvalid` saying why otherwise: garbage, a changed message,
        a key that is not trusted, expired or revoked, or more than one signature.
        The payload is returned unparsed; read it with
        :func:`~ocimirror.signatures.payload.parse_payload`.
        """
        if self._closed:
            raise Conflict("the GPG verifier is closed")
        if not isinstance(signature, bytes | bytearray | memoryview):
            raise SignatureInvalid(f"a signature must be bytes, got {type(signature).__name__}")
        if len(signature) > MAX_SIGNATURE_SIZE:
            raise SignatureInvalid(
                f"signature is {len(signature)} bytes; the limit is {MAX_SIGNATURE_SIZE}"
            )
        output = Path(self._home, f"payload-{secrets.token_hex(8)}")
        args = (
            "--trust-model",
            "always",
            "--max-output",
            str(MAX_PAYLOAD_SIZE),
            "--yes",
            "--output",
            str(output),
            "--decrypt",
        )
        try:
            try:
                run = await _run_gpg(
                    self._program, self._home, args, bytes(signature), self._timeout
                )
            except TimeoutError:
                raise SignatureInvalid(f"gpg did not finish in {self._timeout:g} s") from None
            fingerprint = self._signer(run)
            return output.read_bytes(), fingerprint
        finally:
            output.unlink(missing_ok=True)

    def _signer(self, run: _Run) -> str:
        """The trusted fingerprint the status lines vouch for; raise :class:`SignatureInvalid`."""
        reason = _reason(run)
        if reason is not None:
            raise SignatureInvalid(reason)
        valid = run.lines("VALIDSIG")
        if not valid:
            said = f": {run.message}" if run.message else ""
            raise SignatureInvalid(f"not a valid GPG-signed message{said}")
        if len(valid) != 1:
            raise SignatureInvalid(f"the message carries {len(valid)} signatures; one is expected")
        args = valid[0]
        fingerprint = (args[9] if len(args) > 9 else args[0]).upper()
        if fingerprint not in self._fingerprints:
            raise SignatureInvalid(f"signed by key {fingerprint}, which is not trusted")
        if run.returncode != 0:
            raise SignatureInvalid(f"gpg failed (exit status {run.returncode}): {run.message}")
        return fingerprint

    async def aclose(self) -> None:
        """Remove the private GnuPG home; the verifier cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(shutil.rmtree, self._home, True)

    async def __aenter__(self) -> GPGVerifier:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def _import(program: str, home: str, key: bytes, index: int, timeout: float) -> list[str]:
    """Import one key (block) into ``home``; the primary fingerprints it brought in."""
    try:
        run = await _run_gpg(program, home, ("--import",), key, timeout)
    except TimeoutError:
        raise InvalidError(f"public key {index}: gpg did not finish in {timeout:g} s") from None
    fingerprints = [args[1].upper() for args in run.lines("IMPORT_OK") if len(args) > 1]
    if not fingerprints:
        said = f" ({run.message})" if run.message else ""
        raise InvalidError(f"public key {index} is not an OpenPGP public key gpg can read{said}")
    return fingerprints
