"""/v1/models lists `vision` only where a loaded model took a projector: a page or client that
offers image upload by capability must not offer it for a text-only model."""

from __future__ import annotations

from homeport.engines.fake import FakeEngine


async def capabilities_of(client, model_id: str) -> list[str]:
    card = (await client.http.get(f"/v1/models/{model_id}")).json()
    return card["capabilities"]


async def test_a_text_only_model_does_not_list_vision(make_client):
    client = make_client(FakeEngine(model_id="plain"))
    found = await capabilities_of(client, "plain")
    assert "text_generation" in found and "vision" not in found


async def test_a_model_loaded_with_a_projector_lists_vision(make_client):
    client = make_client(FakeEngine(model_id="sighted", vision=True))
    assert "vision" in await capabilities_of(client, "sighted")
