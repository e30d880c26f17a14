"""What a sync brings with an image besides the image: signatures, cosign companions, referrers.

After a sync has the images its filters select (:mod:`ocimirror.sync`), :class:`Attachments`
works out, for the manifests synced (the tags' manifests and everything under them):

* **Atomic ("simple signing") signatures**: from the remote's lookaside ``sigstore``
  (``<sigstore>/<name>@sha256=<hex>/signature-N`` for N = 1, 2, ... until 404), else from the
  upstream's Docker signature API extension when its ``/v2/`` says
  ``X-Registry-Supports-Signatures: 1``. A re-sync asks the sigstore only for the signatures
  after those already recorded, and the extension only adds what is new.
* **Cosign companions**: the tags ``sha256-<hex>.sig``, ``.att`` and ``.sbom`` of a synced
  manifest come with it whatever the include/exclude patterns say, and never without it.
* **OCI 1.1 referrers**: through the upstream's referrers API when it has one, otherwise
  through the referrers tag schema (the ``sha256-<hex>`` index tag, a companion like the
  others, whose index lists the referrers).
* **Trust**: with ``signed_only`` an image without any signature is skipped; with trusted keys
  an image is kept only when one of its signatures verifies against a trusted key, signs its
  digest and names its upstream repository. Refused images leave their companions behind.

Signatures are recorded in the sync's one content batch and published with the version, as
``container.signature`` content of the manifests they sign.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlsplit

import attrs

from ocimirror.backends.metadata import ContentBatch, SignatureRecord
from ocimirror.core.digest import Digest
from ocimirror.core.manifest import Manifest, parse_manifest
from ocimirror.core.mediatype import MediaType
from ocimirror.errors import OcimirrorError, SignatureInvalid
from ocimirror.ingest import atomic_signature
from ocimirror.signatures.atomic import decode_extension, lookaside_url
from ocimirror.signatures.cosign import parse_companion_tag, signature_layers
from ocimirror.signatures.payload import ATOMIC_TYPE, identity_matches, parse_payload
from ocimirror.upstream import DOCKER_HUB_HOSTS, RegistryClient, normalize_upstream, redact_text
from ocimirror.upstream.client import MAX_SIGNATURE_SIZE

if TYPE_CHECKING:
    from ocimirror.backends.blobs import BlobStore
    from ocimirror.backends.metadata import ContentStore
    from ocimirror.remote import Remote, SyncPolicy
    from ocimirror.signatures.cosign import CosignVerifier
    from ocimirror.signatures.gpg import GPGVerifier

__all__ = ["Attached", "Attachments", "companion_tags"]

log = logging.getLogger("ocimirror.sync")

#: The most atomic signatures read from a sigstore for one manifest.
MAX_SIGNATURES = 64

#: The largest cosign signature layer read to verify it.
MAX_COSIGN_LAYER = 1 << 20


def companion_tags(tags: Iterable[str]) -> dict[str, tuple[Digest, str]]:
    """The tags that belong to another manifest: ``sha256-<hex>`` (the referrers tag schema)
    and its ``.sig``, ``.att`` and ``.sbom`` forms, each with the digest it belongs to."""
    found: dict[str, tuple[Digest, str]] = {}
    for tag in tags:
        parsed = parse_companion_tag(tag)
        if parsed is not None:
            found[tag] = parsed
    return found


@attrs.define
class Attached:
    """What :meth:`Attachments.run` adds to a sync and takes away from it."""

    #: Companion tags to publish (tag -> manifest digest).
    tags: dict[str, str] = attrs.field(factory=dict)
    #: Referrers found through the referrers API, published untagged.
    untagged: list[str] = attrs.field(factory=list)
    #: Signature digest -> the manifest it signs, to publish.
    signatures: dict[str, str] = attrs.field(factory=dict)
    #: Images (tag, or digest when untagged) whose signatures do not verify, with why.
    refused: dict[str, str] = attrs.field(factory=dict)
    #: Images without any signature under ``signed_only``, with why.
    unsigned: dict[str, str] = attrs.field(factory=dict)


class JobView(Protocol):
    """What :class:`Attachments` uses of a sync job (:class:`ocimirror.sync._Job`)."""

    client: RegistryClient
    name: str
    remote: Remote
    policy: SyncPolicy
    batch: ContentBatch
    limit: asyncio.Semaphore
    capabilities: dict[tuple[str, str], bool]

    @property
    def metadata(self) -> ContentStore: ...

    @property
    def blobs(self) -> BlobStore: ...

    def resolve_many(
        self, tags: list[str], local: set[str]
    ) -> Awaitable[list[tuple[str, Digest, str]]]: ...

    def settle_more(self, roots: list[tuple[Digest, str | None]]) -> Awaitable[None]: ...

    def synced(self, digest: str) -> bool: ...


class Attachments:
    """Signatures, companions and referrers of one sync job's images; see the module."""

    def __init__(self, job: JobView) -> None:
        self.job = job
        self.client = job.client
        self.remote = job.remote
        self.policy = job.policy
        #: The upstream repository's full name (Docker Hub's ``library/`` added).
        self.upstream = normalize_upstream(self.remote.url, job.name)[1]
        self._gpg: GPGVerifier | None = None
        self._cosign: CosignVerifier | None = None

    # -- the whole step --------------------------------------------------------------------

    async def run(
        self,
        images: Mapping[str, str],
        untagged: list[str],
        companions: Mapping[str, tuple[Digest, str]],
        local: set[str],
    ) -> Attached:
        """Bring what belongs to the synced ``images`` (tag -> digest) and ``untagged``
        digests, and judge their signatures. ``local`` are the tags the repository has."""
        out = Attached()
        job = self.job
        roots = [d for d in dict.fromkeys([*images.values(), *untagged]) if job.synced(d)]
        if not roots or not (companions or self._may_find_more()):
            return out
        synced = await self._closure(roots)
        # Companion tags of synced manifests (cosign .sig/.att/.sbom, referrers tag schema).
        wanted = sorted(t for t, (d, _) in companions.items() if str(d) in synced)
        if wanted:
            resolved = await job.resolve_many(wanted, local)
            await job.settle_more([(d, mt) for _, d, mt in resolved])
            out.tags = {t: str(d) for t, d, _ in resolved if job.synced(str(d))}
        out.untagged = await self._referrers(sorted(synced))
        atomic = await self._atomic_signatures(sorted(synced))
        for digest, records in atomic.items():
            for record in records:
                out.signatures[record.digest] = digest
        if self.policy.signed_only or self.policy.verifies:
            try:
                await self._judge(out, images, untagged, atomic, companions)
            finally:
                await self._close_verifiers()
        return out

    def _may_find_more(self) -> bool:
        """Whether signatures or referrers may be there to look for: not when this loop knows
        already that the upstream has neither API and nothing else asks for them (a no-op
        re-sync of a plain registry then costs nothing more)."""
        known = self.job.capabilities
        return bool(
            self.remote.sigstore
            or self.policy.signed_only
            or self.policy.verifies
            or known.get(("referrers", self.client.url)) is not False
            or known.get(("signatures", self.client.url)) is not False
        )

    async def _closure(self, roots: list[str]) -> set[str]:
        """The synced manifests under ``roots`` (new ones from the batch, stored ones from
        the store)."""
        batch = self.job.batch
        seen: set[str] = set()
        stored: list[str] = []
        stack = list(roots)
        while stack:
            digest = stack.pop()
            if digest in seen:
                continue
            entry = batch.manifests.get(digest)
            if entry is None:
                stored.append(digest)
                continue
            seen.add(digest)
            stack.extend(child for child, kind, _ in entry[1] if kind == "manifest")
        if stored:
            seen.update((await self.job.metadata.closure(stored)).manifests)
        return seen

    # -- referrers -------------------------------------------------------------------------

    async def _referrers(self, digests: list[str]) -> list[str]:
        """Referrers through the upstream's referrers API (none when it has no such API: the
        referrers tag schema's index tag is a companion, synced as a tag)."""
        key = ("referrers", self.client.url)
        known = self.job.capabilities.get(key)
        if known is False or not digests:
            return []
        bodies: dict[str, bytes | None] = {}
        if known is None:
            # One probe per upstream and event loop: a registry without the API says 404.
            bodies[digests[0]] = await self._ask_referrers(digests[0])
            known = bodies[digests[0]] is not None
            self.job.capabilities[key] = known
            if not known:
                return []
        rest = [d for d in digests if d not in bodies]
        for digest, body in zip(
            rest, await asyncio.gather(*(self._ask_referrers(d) for d in rest)), strict=True
        ):
            bodies[digest] = body
        found: list[tuple[Digest, str | None]] = []
        for digest, body in bodies.items():
            if body is None:
                continue
            try:
                index = parse_manifest(body, MediaType.OCI_INDEX)
            except OcimirrorError as exc:
                log.warning("%s: referrers of %s unreadable: %s", self.job.name, digest, exc)
                continue
            found += [(c.digest, c.media_type) for c in index.children()]
        if not found:
            return []
        await self.job.settle_more(found)
        return [str(d) for d, _ in dict.fromkeys(found) if self.job.synced(str(d))]

    async def _ask_referrers(self, digest: str) -> bytes | None:
        try:
            async with self.job.limit:
                return await self.client.referrers(self.job.name, digest)
        except (OcimirrorError, OSError) as exc:
            log.warning("%s: referrers of %s: %s", self.job.name, digest, _describe(exc))
            return None

    # -- atomic signatures -----------------------------------------------------------------

    async def _source(self) -> str | None:
        """Where atomic signatures come from: ``"sigstore"``, ``"extension"`` or nowhere."""
        if self.remote.sigstore:
            return "sigstore"
        key = ("signatures", self.client.url)
        known = self.job.capabilities.get(key)
        if known is None:
            try:
                async with self.job.limit:
                    known = await self.client.supports_signatures()
            except (OcimirrorError, OSError) as exc:
                log.warning("%s: /v2/ check failed: %s", self.job.name, _describe(exc))
                known = False
            self.job.capabilities[key] = known
        return "extension" if known else None

    async def _atomic_signatures(self, digests: list[str]) -> dict[str, list[SignatureRecord]]:
        """Every atomic signature of ``digests``: those recorded already, and new ones
        (added to the batch)."""
        source = await self._source()
        if source is None and not (self.policy.signed_only or self.policy.verifies):
            return {}
        recorded = await self.job.metadata.signatures_of_manifests(digests)
        have = {d: [r for r in recorded.get(d, []) if r.sig_type == "atomic"] for d in digests}
        if source is not None:
            fetch = self._from_sigstore if source == "sigstore" else self._from_extension
            news = await asyncio.gather(*(fetch(d, have[d]) for d in digests))
            for digest, new in zip(digests, news, strict=True):
                for data in new:
                    record = atomic_signature(digest, data)
                    if all(r.digest != record.digest for r in have[digest]):
                        self.job.batch.add_signature(record)
                        have[digest].append(record)
        return {d: records for d, records in have.items() if records}

    async def _from_sigstore(self, digest: str, have: list[SignatureRecord]) -> list[bytes]:
        """``signature-N`` from the lookaside, from N = one more than those recorded, until
        the first that is missing."""
        assert self.remote.sigstore is not None
        found: list[bytes] = []
        for index in range(len(have) + 1, MAX_SIGNATURES + 1):
            url = lookaside_url(self.remote.sigstore, self.upstream, digest, index)
            try:
                async with self.job.limit:
                    data = await self._read_lookaside(url)
            except (OcimirrorError, OSError) as exc:
                log.warning("%s: signature %s: %s", self.job.name, index, _describe(exc))
                break
            if data is None:
                break
            found.append(data)
        return found

    async def _read_lookaside(self, url: str) -> bytes | None:
        """One lookaside signature: a file (``file://``) or a GET; ``None`` when missing."""
        if not url.lower().startswith("file://"):
            return await self.client.get_optional("signature", url)
        path = Path(unquote(urlsplit(url).path))
        try:
            return await asyncio.to_thread(_read_small, path, MAX_SIGNATURE_SIZE)
        except FileNotFoundError:
            return None

    async def _from_extension(self, digest: str, have: list[SignatureRecord]) -> list[bytes]:
        try:
            async with self.job.limit:
                body = await self.client.signatures(self.job.name, digest)
            return [] if body is None else [s.content for s in decode_extension(body)]
        except (OcimirrorError, OSError) as exc:
            log.warning("%s: signatures of %s: %s", self.job.name, digest, _describe(exc))
            return []

    # -- trust -----------------------------------------------------------------------------

    async def _judge(
        self,
        out: Attached,
        images: Mapping[str, str],
        untagged: list[str],
        atomic: Mapping[str, list[SignatureRecord]],
        companions: Mapping[str, tuple[Digest, str]],
    ) -> None:
        """Sort the images into kept, unsigned (``signed_only``) and refused (trusted keys
        given, nothing verifies); drop what belongs to the ones not kept."""
        cosign_tags = {
            str(d): t for t, (d, suffix) in companions.items() if suffix == ".sig" and t in out.tags
        }
        by_digest: dict[str, list[str]] = {}
        for tag, digest in images.items():
            by_digest.setdefault(digest, []).append(tag)
        for digest in untagged:
            by_digest.setdefault(digest, [])
        gone: set[str] = set()
        for digest, tags in by_digest.items():
            if not self.job.synced(digest):
                continue
            names = tags or [digest]
            sig_tag = cosign_tags.get(digest)
            if not atomic.get(digest) and sig_tag is None:
                gone.add(digest)
                # Trusted keys refuse it (a dropped image); signed_only alone skips it.
                verdicts = out.refused if self.policy.verifies else out.unsigned
                for name in names:
                    verdicts[name] = f"not trusted: {digest} has no signature"
                continue
            if not self.policy.verifies:
                continue
            reason = await self._verify(digest, tags, atomic.get(digest, []), sig_tag, out)
            if reason is not None:
                gone.add(digest)
                for name in names:
                    out.refused[name] = reason
        for tag, (owner, _) in companions.items():
            if str(owner) in gone:
                out.tags.pop(tag, None)

    async def _verify(
        self,
        digest: str,
        tags: list[str],
        atomic: list[SignatureRecord],
        sig_tag: str | None,
        out: Attached,
    ) -> str | None:
        """``None`` when one signature of the image verifies, else why none does."""
        repository = self.expected_repository()
        why: list[str] = []
        if self.policy.trusted_gpg_keys and atomic:
            gpg = await self._gpg_verifier()
            for record in atomic:
                try:
                    payload, fingerprint = await gpg.verify(record.data)
                    signed = parse_payload(payload)
                    _check_signed(signed.type, ATOMIC_TYPE, signed.manifest_digest, digest)
                    if not identity_matches(
                        signed.docker_reference, repository=repository, digest=digest, tags=tags
                    ):
                        raise SignatureInvalid(
                            f"it names {signed.docker_reference!r}, not {repository!r}"
                        )
                except SignatureInvalid as exc:
                    why.append(f"atomic signature {record.name}: {exc.message}")
                    continue
                self.job.batch.add_signature(attrs.evolve(record, key_id=fingerprint))
                return None
        elif atomic:
            why.append("atomic signatures found, but no trusted GPG key to verify them")
        if self.policy.trusted_cosign_keys and sig_tag is not None:
            try:
                await self._verify_cosign(digest, tags, out.tags[sig_tag], repository)
                return None
            except SignatureInvalid as exc:
                why.append(f"cosign signature {sig_tag}: {exc.message}")
        elif sig_tag is not None:
            why.append(f"cosign signature {sig_tag} found, but no trusted cosign key")
        return "not trusted: " + "; ".join(why)

    async def _verify_cosign(
        self, digest: str, tags: list[str], sig_digest: str, repository: str
    ) -> None:
        from ocimirror.signatures.cosign import verify_signature_manifest

        manifest = await self._manifest(sig_digest)
        layers: dict[str, bytes] = {}
        for layer, _ in signature_layers(manifest):
            with contextlib.suppress(OcimirrorError, OSError):
                layers[str(layer.digest)] = await self.job.blobs.read(
                    layer.digest, max_size=MAX_COSIGN_LAYER
                )
        verifier = self._cosign_verifier()
        verify_signature_manifest(
            manifest, layers, digest=digest, verifier=verifier, repository=repository, tags=tags
        )

    async def _manifest(self, digest: str) -> Manifest:
        entry = self.job.batch.manifests.get(digest)
        if entry is not None:
            record = entry[0]
        else:
            found = await self.job.metadata.get_manifest(digest)
            if found is None:
                raise SignatureInvalid(f"the signature manifest {digest} is not stored")
            record = found
        return parse_manifest(record.data, record.media_type)

    def expected_repository(self) -> str:
        """The repository a signature must name: the upstream's host and repository name."""
        host = urlsplit(self.client.url).netloc.rpartition("@")[2]
        if host.partition(":")[0].lower() in DOCKER_HUB_HOSTS:
            host = "docker.io"
        return f"{host}/{self.upstream}"

    async def _gpg_verifier(self) -> GPGVerifier:
        if self._gpg is None:
            from ocimirror.signatures.gpg import GPGVerifier

            self._gpg = await GPGVerifier.create(self.policy.trusted_gpg_keys)
        return self._gpg

    def _cosign_verifier(self) -> CosignVerifier:
        if self._cosign is None:
            from ocimirror.signatures.cosign import CosignVerifier

            self._cosign = CosignVerifier(self.policy.trusted_cosign_keys)
        return self._cosign

    async def _close_verifiers(self) -> None:
        if self._gpg is not None:
            gpg, self._gpg = self._gpg, None
            await gpg.aclose()


def _read_small(path: Path, limit: int) -> bytes:
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise SignatureInvalid(f"{path} is over the limit of {limit} bytes for a signature")
    return data


def _check_signed(kind: str, expected_kind: str, signed: Digest, digest: str) -> None:
    if kind != expected_kind:
        raise SignatureInvalid(f"its type is {kind!r}, not {expected_kind!r}")
    if str(signed) != digest:
        raise SignatureInvalid(f"it signs {signed}, not {digest}")


def _describe(exc: BaseException) -> str:
    return redact_text(f"{type(exc).__name__}: {exc}")
