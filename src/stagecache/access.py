"""How a stage cache reaches its registries: its credentials, the engine's tunnels, how often a
request is asked again, and a count of the requests that were."""

from __future__ import annotations

import dagger

from stagecache.registry import RegistryClient, connect


class RegistryAccess:
    """Registry sessions with one cache's credentials (the password read from its secret only when
    a request needs it) and tunnels; counts the requests asked again (429, 5xx, resets)."""

    def __init__(self, username: str, password: dagger.Secret | None, tunnels: dict[str, str], attempts: int) -> None:
        self.username = username
        self.password = password
        self.tunnels = tunnels  # loopback port -> host:port of a tunnel the engine opened
        self.attempts = attempts
        self.retries = 0  # registry requests asked again (429, 5xx, resets)

    async def client(self, registry: str) -> RegistryClient:
        """A registry client with this cache's credentials (read from the secret only here) and tunnels."""
        return connect(
            registry,
            self.username,
            await self.plaintext_password(),
            self.tunnels,
            attempts=self.attempts,
            on_retry=self._count_retry,
        )

    def _count_retry(self) -> None:
        """One more registry request asked again."""
        self.retries += 1

    async def plaintext_password(self) -> str:
        """The registry password, read from its secret only when a request needs it."""
        return await self.password.plaintext() if self.password and self.username else ""

    def authed(self, ctr: dagger.Container, registry: str) -> dagger.Container:
        """The container with registry credentials attached, when there are any."""
        if self.username and self.password:
            return ctr.with_registry_auth(registry, self.username, self.password)
        return ctr
