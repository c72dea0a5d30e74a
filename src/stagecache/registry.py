"""A small client for the OCI distribution API: what the stage cache needs and nothing more.

It reaches a registry the way the engine's pulls and pushes do: with the credentials given to the
build (the same ones `with_registry_auth` gets), else with what `docker login` stored (config.json
or a credential helper, read by docker-py, the same look-up the docker CLI does). Under `dagger
call` the module runs in a container, where a registry on the host's loopback is reached through a
tunnel the engine opens (a `Service` argument). Credentials are held in memory for the requests
only; they never reach a log or an error."""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
from collections.abc import Callable, Sequence
from typing import Any, Final

import anyio
import docker.auth
import docker.errors
import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from stagecache.refs import ImageRef as ImageRef  # re-exported: where the registry's callers long found it

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
# Every manifest media type the cache reads (images and indexes), in order of preference.
MANIFEST_MEDIA_TYPES: Final = (OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_MANIFEST_LIST)
MANIFEST_TYPES: Final = ", ".join(MANIFEST_MEDIA_TYPES)
_LOOPBACK: Final = ("127.", "localhost", "[::1]")


# Answers worth asking again: rate limiting and server-side failures.
TRANSIENT_STATUS: Final = frozenset({429, 500, 502, 503, 504})
DEFAULT_ATTEMPTS: Final = 3


class _Transient(Exception):
    """A transient answer, carried out of a retry loop."""

    def __init__(self, response: httpx.Response):
        super().__init__(response.status_code)
        self.response = response


class RegistryError(Exception):
    """A registry answered something the cache cannot use; the message names the registry."""

    def __init__(self, message: str, status: int | None = None):
        """Keep the message, and the HTTP status that caused the error (None when no answer did)."""
        super().__init__(message)
        self.status = status


def is_loopback(registry: str) -> bool:
    """Whether a registry is on this machine's loopback (spoken to in plain http)."""
    return registry.startswith(_LOOPBACK)


def port_of(registry: str) -> str:
    """The port a registry host names (443 when it names none)."""
    host, _, port = registry.rpartition(":")
    return port if host and not port.endswith("]") else "443"


def blobs_of(manifest: dict[str, Any]) -> list[str]:
    """The digests of the blobs an image manifest names: its config, then its layers."""
    return [manifest["config"]["digest"], *(layer["digest"] for layer in manifest.get("layers", []))]


def docker_login(registry: str) -> tuple[str, str]:
    """What `docker login` stored for a registry, as (username, password); empty when nothing."""
    try:
        found = docker.auth.load_config().resolve_authconfig(registry) or {}
    except docker.errors.DockerException as err:
        raise RegistryError(f"registry {registry}: the docker credential store failed ({type(err).__name__})") from None
    return (found.get("Username") or found.get("username") or "", found.get("Password") or found.get("password") or "")


def connect(
    registry: str, username: str = "", password: str = "", tunnels: dict[str, str] | None = None, **options: Any
) -> RegistryClient:
    """A client for a registry: given credentials, else docker login's; through a tunnel when one
    serves the registry's loopback port (tunnels: port -> host:port the engine opened)."""
    if not username:
        username, password = docker_login(registry)
    address = (tunnels or {}).get(port_of(registry)) if is_loopback(registry) else None
    return RegistryClient(registry, username, password, address=address, **options)


class RegistryClient:
    """Talks to one registry host; plain http on loopback (or when insecure), https elsewhere."""

    def __init__(
        self,
        registry: str,
        username: str = "",
        password: str = "",
        timeout: float = 30.0,
        attempts: int = DEFAULT_ATTEMPTS,
        on_retry: Callable[[], None] | None = None,
        address: str | None = None,
        insecure: bool = False,
    ):
        scheme = "http" if is_loopback(registry) or insecure else "https"
        self.registry = registry
        self._tunneled = address is not None
        self._base = f"{scheme}://{address or registry}"
        self._auth = httpx.BasicAuth(username, password) if username else None
        self._token: str | None = None
        self._http = httpx.AsyncClient(timeout=timeout)
        self._attempts = max(1, attempts)
        self._on_retry = on_retry or (lambda: None)
        self._blobs: dict[tuple[str, str], bytes] = {}  # (repository, digest) -> bytes: a digest names its bytes

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, answering a bearer challenge once; connection errors become RegistryError."""
        try:
            response = await self._send(method, path, **kwargs)
            if response.status_code == 401 and "bearer" in response.headers.get("www-authenticate", "").lower():
                await self._fetch_token(response.headers["www-authenticate"])
                response = await self._send(method, path, **kwargs)
        except httpx.HTTPError as err:
            hint = ""
            if is_loopback(self.registry) and not self._tunneled:
                hint = f" (under `dagger call`, pass --registry-service=tcp://{self.registry} to reach the host's loopback)"
            raise RegistryError(f"registry {self.registry} unreachable: {type(err).__name__}{hint}") from None
        if response.status_code == 401:
            raise RegistryError(f"401 from registry {self.registry}: credentials needed or refused", status=401)
        return response

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send, retrying what a registry under load or restarting answers (429, 5xx, a reset or
        refused connection) with bounded exponential backoff (tenacity); the last answer stands."""
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._attempts),
                wait=wait_exponential(multiplier=0.2, max=2.0),
                retry=retry_if_exception_type((_Transient, httpx.TransportError)),
                reraise=True,
                before_sleep=lambda _: self._on_retry(),
            ):
                with attempt:
                    response = await self._send_once(method, path, **kwargs)
                    if response.status_code in TRANSIENT_STATUS:
                        raise _Transient(response)
        except _Transient as transient:
            return transient.response
        return response

    async def _send_once(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send with whichever credentials apply."""
        headers, auth = self._credentials(kwargs.pop("headers", {}))
        return await self._http.request(method, self._base + path, headers=headers, auth=auth, **kwargs)

    async def _fetch_token(self, challenge: str) -> None:
        """Get a bearer token from the realm a 401 named (token-auth registries)."""
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", "")
        response = await self._http.get(realm, params=params, auth=self._auth)
        if response.status_code != 200:
            raise RegistryError(
                f"registry {self.registry}: token request refused ({response.status_code})", status=response.status_code
            )
        body = response.json()
        self._token = body.get("token") or body.get("access_token")

    async def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest a tag points at, or None when the tag does not exist."""
        response = await self._request(
            "HEAD", f"/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES}
        )
        if response.status_code == 404:
            return None
        self._check(response, "HEAD manifest", repository)
        return response.headers.get("docker-content-digest")

    async def manifest(self, repository: str, reference: str) -> tuple[dict[str, Any], str] | None:
        """The manifest and its digest, or None when it does not exist."""
        response = await self._request(
            "GET", f"/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES}
        )
        if response.status_code == 404:
            return None
        self._check(response, "GET manifest", repository)
        return json.loads(response.content), response.headers.get("docker-content-digest", "")

    async def image_config(self, repository: str, manifest: dict[str, Any]) -> dict[str, Any]:
        """The image configuration blob a manifest names."""
        return json.loads(await self.blob(repository, manifest["config"]["digest"]))

    async def labels(self, repository: str, reference: str) -> tuple[dict[str, str], str] | None:
        """The image's labels and manifest digest, or None when the tag does not exist."""
        found = await self.manifest(repository, reference)
        if found is None:
            return None
        manifest, digest = found
        if "config" not in manifest:  # an index, not an image: not one of ours
            return {}, digest
        config = await self.image_config(repository, manifest)
        return (config.get("config") or {}).get("Labels") or {}, digest

    async def tags(self, repository: str) -> list[str]:
        """Every tag of a repository (empty when the repository does not exist)."""
        tags: list[str] = []
        path: str | None = f"/v2/{repository}/tags/list?n=1000"
        while path:
            response = await self._request("GET", path)
            if response.status_code == 404:
                return []
            self._check(response, "list tags", repository)
            tags += response.json().get("tags") or []
            link = response.headers.get("link", "")
            path = link[link.find("<") + 1 : link.find(">")] if link else None
        return tags

    async def blob_size(self, repository: str, digest: str) -> int | None:
        """A blob's size in bytes, or None when the repository does not hold it."""
        response = await self._request("HEAD", f"/v2/{repository}/blobs/{digest}", follow_redirects=True)
        if response.status_code == 404:
            return None
        self._check(response, "HEAD blob", repository)
        return int(response.headers.get("content-length", 0))

    async def missing_blobs(self, repository: str, manifest: dict[str, Any], parallel: int = 8) -> list[str]:
        """The blobs (config and layers) an image manifest names that the repository cannot serve."""
        return await self._missing(repository, blobs_of(manifest), parallel)

    async def mount_missing(
        self, repository: str, digests: Sequence[str], source_repository: str, parallel: int = 8
    ) -> list[str]:
        """Mount into a repository, from another of this registry, those of the blobs it cannot serve (asked
        `parallel` at a time; no bytes move); the ones the registry would not mount."""
        refused: list[str] = []
        limiter = anyio.CapacityLimiter(parallel)

        async def mount(digest: str) -> None:
            async with limiter:
                if not await self.mount_blob(repository, digest, source_repository):
                    refused.append(digest)

        async with anyio.create_task_group() as tg:
            for digest in await self._missing(repository, digests, parallel):
                tg.start_soon(mount, digest)
        return [d for d in digests if d in refused]

    async def _missing(self, repository: str, digests: Sequence[str], parallel: int) -> list[str]:
        """Those of the blobs the repository cannot serve, in order (asked `parallel` at a time)."""
        sizes: dict[str, int | None] = {}
        limiter = anyio.CapacityLimiter(parallel)

        async def check(digest: str) -> None:
            async with limiter:
                sizes[digest] = await self.blob_size(repository, digest)

        async with anyio.create_task_group() as tg:
            for digest in digests:
                tg.start_soon(check, digest)
        return [d for d in digests if sizes[d] is None]

    async def mount_blob(self, repository: str, digest: str, source_repository: str) -> bool:
        """Cross-repository mount of a blob: no bytes move. False when the registry would not mount."""
        response = await self._request(
            "POST", f"/v2/{repository}/blobs/uploads/", params={"mount": digest, "from": source_repository}
        )
        if response.status_code == 201:
            return True
        if response.status_code == 202 and (location := response.headers.get("location")):
            # The registry opened an upload instead of mounting: cancel it.
            await self._request("DELETE", location if location.startswith("/") else "/" + location.split("/", 3)[-1])
        return False

    async def raw_manifest(self, repository: str, reference: str) -> tuple[bytes, str] | None:
        """A manifest's bytes exactly as stored, and its media type; None when it does not exist."""
        response = await self._request(
            "GET", f"/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES}
        )
        if response.status_code == 404:
            return None
        self._check(response, "GET manifest", repository)
        return response.content, response.headers.get("content-type", "")

    async def put_manifest(self, repository: str, tag: str, content: bytes, media_type: str) -> None:
        """Store manifest bytes under a tag (the bytes are kept as given, so the digest is too)."""
        response = await self._request(
            "PUT", f"/v2/{repository}/manifests/{tag}", content=content, headers={"Content-Type": media_type}
        )
        self._check(response, "PUT manifest", repository, ok=(201, 200))

    async def copy_manifest(self, source: ImageRef, target: ImageRef) -> str:
        """Tag an image manifest of this registry in another place (its blobs mounted, no bytes moved) and
        return its digest, the same as the source's: the bytes are kept as stored. A RegistryError when the
        source is no image manifest, or the registry would not mount one of its blobs."""
        found = await self.raw_manifest(source.repository, source.reference)
        if found is None or found[1] not in (OCI_MANIFEST, DOCKER_MANIFEST):
            raise RegistryError(f"{source.repository}:{source.reference} is no image manifest here")
        content, media_type = found
        if not target.same_repository(source):
            blobs = blobs_of(json.loads(content))
            if refused := await self.mount_missing(target.repository, blobs, source.repository):
                raise RegistryError(f"{target.repository}: {refused[0]} not mounted from {source.repository}")
        await self.put_manifest(target.repository, target.reference, content, media_type)
        return "sha256:" + hashlib.sha256(content).hexdigest()

    async def blob(self, repository: str, digest: str) -> bytes:
        """A small blob's bytes (a config, an input manifest), asked of the registry once per client: a plan and
        a build each read an entry's config and input manifest from several stages' look-ups."""
        if (content := self._blobs.get((repository, digest))) is None:
            response = await self._request("GET", f"/v2/{repository}/blobs/{digest}", follow_redirects=True)
            self._check(response, "GET blob", repository)
            content = self._blobs[repository, digest] = response.content
        return content

    async def put_blob(self, repository: str, content: bytes) -> str:
        """Upload a blob in one request (monolithic upload); returns its digest."""
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        if await self.blob_size(repository, digest) is not None:
            return digest
        response = await self._request("POST", f"/v2/{repository}/blobs/uploads/")
        self._check(response, "start upload", repository, ok=(202,))
        location = response.headers["location"]
        path = location if location.startswith("/") else "/" + location.split("/", 3)[-1]
        separator = "&" if "?" in path else "?"
        response = await self._request(
            "PUT",
            f"{path}{separator}digest={digest}",
            content=content,
            headers={"Content-Type": "application/octet-stream"},
        )
        self._check(response, "PUT blob", repository, ok=(201,))
        return digest

    async def delete_blob(self, repository: str, digest: str) -> None:
        """Unlink a blob from a repository (a storage fault or a half-finished clean-up does this)."""
        response = await self._request("DELETE", f"/v2/{repository}/blobs/{digest}")
        self._check(response, "DELETE blob", repository, ok=(202, 200, 404))

    async def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest (every tag on it goes with it)."""
        response = await self._request("DELETE", f"/v2/{repository}/manifests/{digest}")
        self._check(response, "DELETE manifest", repository, ok=(202, 200, 404))

    def _check(self, response: httpx.Response, what: str, repository: str, ok: tuple[int, ...] = (200,)) -> None:
        """Raise a RegistryError naming the registry, repository and operation on an unexpected status."""
        if response.status_code not in ok:
            raise RegistryError(
                f"{what} {self.registry}/{repository}: HTTP {response.status_code}", status=response.status_code
            )

    def _credentials(self, headers: dict[str, str]) -> tuple[dict[str, str], httpx.Auth | None]:
        """The headers and auth a request carries: the bearer token once one was issued, else the basic credentials."""
        if self._token:
            return {**headers, "Authorization": f"Bearer {self._token}"}, None
        return dict(headers), self._auth

    async def download_blob(self, repository: str, digest: str, path: pathlib.Path) -> None:
        """Stream a blob into a file, never whole in memory (layers run to hundreds of MB); the caller checks it."""
        blob_path = f"/v2/{repository}/blobs/{digest}"
        # A HEAD first, through the usual path: it answers a bearer challenge and retries transient failures.
        self._check(await self._request("HEAD", blob_path, follow_redirects=True), "HEAD blob", repository)
        headers, auth = self._credentials({})
        try:
            async with self._http.stream(
                "GET", self._base + blob_path, headers=headers, auth=auth, follow_redirects=True
            ) as response:
                self._check(response, "GET blob", repository)
                async with await anyio.open_file(path, "wb") as file:
                    async for chunk in response.aiter_bytes(1 << 20):
                        await file.write(chunk)
        except httpx.HTTPError as err:
            raise RegistryError(f"GET blob {self.registry}/{repository}: broke off ({type(err).__name__})") from None

    async def status(self, method: str, path: str) -> int:
        """The bare HTTP status a request gets, asking for any manifest type (401 included; 0 when nothing answers)."""
        try:
            response = await self._request(method, path, headers={"Accept": MANIFEST_TYPES})
        except RegistryError as err:
            return err.status or 0
        return response.status_code

    async def repositories(self) -> list[str]:
        """The registry's repositories (its catalog's first 1000)."""
        response = await self._request("GET", "/v2/_catalog?n=1000")
        self._check(response, "list repositories", "_catalog")
        return response.json().get("repositories") or []
