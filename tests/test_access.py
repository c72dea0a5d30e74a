"""A run reaches each registry through one HTTP client, with docker login read once (stagecache.access),
checked on a real plan against the local registry."""

from __future__ import annotations

import pytest

from conftest import EXAMPLE, cache_for, source_of
from stagecache import registry
from stagecache.registry import RegistryClient

pytestmark = pytest.mark.anyio


async def test_a_plan_reads_two_repositories_of_one_registry_through_one_client_and_one_login(
    client: None, cache_repo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[RegistryClient] = []
    logins: list[str] = []
    real_init, real_login = RegistryClient.__init__, registry.docker_login

    def counted_init(self: RegistryClient, *args: object, **kwargs: object) -> None:
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]
        opened.append(self)

    def counted_login(host: str) -> tuple[str, str]:
        logins.append(host)
        return real_login(host)

    monkeypatch.setattr(RegistryClient, "__init__", counted_init)
    monkeypatch.setattr(registry, "docker_login", counted_login)
    # Two empty repositories: every stage is looked up in both, and each miss asks both why.
    cache = cache_for(cache_from=[cache_repo, f"{cache_repo}-other"])
    planned = await cache.plan(source_of(EXAMPLE), "extensions-build")
    assert len(planned) >= 2 and all(p.hit is None for p in planned)
    assert all(p.why.startswith("first build") for p in planned)  # the registry answered every look-up
    assert len(opened) == 1 and logins == [cache_repo.split("/")[0]]
    assert opened[0]._http.is_closed  # closed at the end of the run
