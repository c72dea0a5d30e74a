"""How a stage cache reaches its registries: its credentials, the engine's tunnels, how often a
request is asked again, a count of the requests that were, and one client per registry per run."""

from __future__ import annotations

import dagger

from stagecache.registry import RegistryClient, connect


class RegistryAccess:
    """Registry sessions with one cache's credentials (the password read from its secret once a request
    needs it) and tunnels: one client per registry, opened at its first request (docker login read then,
    once) and kept until `close` at the end of the run; counts the requests asked again (429, 5xx, resets)."""

    def __init__(self, username: str, password: dagger.Secret | None, tunnels: dict[str, str], attempts: int) -> None:
        self.username = username
        self.password = password
        self.tunnels = tunnels  # loopback port -> host:port of a tunnel the engine opened
        self.attempts = attempts
        self.retries = 0  # registry requests asked again (429, 5xx, resets)
        self._clients: dict[str, RegistryClient] = {}  # registry -> this run's client of it
        self._password: str | None = None  # read from the secret at the first request

    async def client(self, registry: str) -> RegistryClient:
        """This run's client of a registry, with this cache's credentials and tunnels (closed by `close`)."""
        if registry not in self._clients:
            password = await self.plaintext_password()
            if registry not in self._clients:  # another task may have opened it while the secret was read
                self._clients[registry] = connect(
                    registry, self.username, password, self.tunnels, attempts=self.attempts, on_retry=self._count_retry
                )
        return self._clients[registry]

    async def close(self) -> None:
        """End the run: close every client it opened (the next run opens its own)."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    def _count_retry(self) -> None:
        """One more registry request asked again."""
        self.retries += 1

    async def plaintext_password(self) -> str:
        """The registry password, read from its secret once, when a request first needs it."""
        if self._password is None:
            self._password = await self.password.plaintext() if self.password and self.username else ""
        return self._password

    def authed(self, ctr: dagger.Container, registry: str) -> dagger.Container:
        """The container with registry credentials attached, when there are any."""
        if self.username and self.password:
            return ctr.with_registry_auth(registry, self.username, self.password)
        return ctr
