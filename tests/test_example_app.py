"""The example web service (examples/web_service.py), driven through its ASGI interface.

``TestClient`` used as a context manager runs the app's lifespan, so every test opens the real
service and state manager on ``tmp_path`` and closes them on exit, in both modes.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning

from async_store.state import Pipeline, PipelineAdd, StateManager
from examples.web_service import create_app, main, split_text

with warnings.catch_warnings():
    # Starlette 1.10's test client prefers httpx2 and warns when it falls back to httpx (the
    # dev extras pin httpx 0.28.1); with warnings as errors, that warning would fail the import.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

PARAGRAPH = (
    "SQLite allows one writer at a time, so the library owns that fact: every write goes "
    "through one writer connection, in FIFO order, and queued transactions share a commit. "
)


@pytest.fixture(params=[pytest.param(False, id="production"), pytest.param(True, id="mvp")])
def mvp(request: pytest.FixtureRequest) -> bool:
    value: bool = request.param
    return value


@pytest.fixture
def client(tmp_path: Path, mvp: bool) -> Iterator[TestClient]:
    with TestClient(create_app(tmp_path, mvp=mvp)) as test_client:
        yield test_client


def state_manager(client: TestClient) -> StateManager:
    """The app's state manager, for what the HTTP API does not offer (call it through
    ``client.portal``: it lives on the app's event loop)."""
    assert isinstance(client.app, Starlette)
    state: StateManager = client.app.state.state
    return state


def text_of(paragraphs: int, words: str = PARAGRAPH) -> str:
    """``paragraphs`` paragraphs of about 700 characters each (two chunks apiece)."""
    return "\n\n".join(f"{i}: {words * 4}" for i in range(paragraphs))


def create_kb(client: TestClient, kb_id: str = "docs", **fields: Any) -> int:
    response = client.post("/knowledge-bases", json={"id": kb_id, "name": "Docs", **fields})
    assert response.status_code == 201, response.text
    version: int = response.json()["version"]
    return version


def kb_listing(client: TestClient) -> dict[str, Any]:
    response = client.get("/knowledge-bases")
    assert response.status_code == 200
    return {kb["id"]: kb for kb in response.json()["knowledge_bases"]}


def post_document(
    client: TestClient, content: str, *, kb_id: str = "docs", source_uri: str = "file:a.txt"
) -> dict[str, Any]:
    response = client.post(
        f"/knowledge-bases/{kb_id}/documents",
        json={"title": "A", "content": content, "source_uri": source_uri},
    )
    body: dict[str, Any] = response.json()
    body["status"] = response.status_code
    return body


# -- service ---------------------------------------------------------------------------------


def test_health_is_ok(client: TestClient, mvp: bool) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    report = response.json()
    assert report["status"] == "ok", report["reasons"]
    assert report["mode"] == ("mvp" if mvp else "production")
    assert set(report["databases"]) == ({"app_meta"} if mvp else {"app_meta", "events"})


def test_unknown_routes_and_methods_answer_json(client: TestClient) -> None:
    missing = client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.json()["error"] == "Not Found"
    wrong = client.put("/knowledge-bases")
    assert wrong.status_code == 405
    assert "GET" in wrong.headers["allow"]


def test_a_store_error_becomes_json_with_a_status(client: TestClient) -> None:
    assert client.portal is not None
    client.portal.call(
        state_manager(client).close
    )  # the lifespan closes it again: close() is idempotent
    response = client.post("/knowledge-bases", json={"id": "docs", "name": "Docs"})
    assert response.status_code == 503
    assert response.json() == {
        "error": "StateManagerClosed",
        "detail": "the state manager is closed",
    }


# -- knowledge bases -------------------------------------------------------------------------


def test_create_list_and_delete_knowledge_bases(client: TestClient) -> None:
    first = create_kb(client, "docs", description="Product docs", chunk_size=500)
    second = create_kb(client, "notes")
    assert second > first

    listing = kb_listing(client)
    assert list(listing) == ["docs", "notes"]
    assert listing["docs"]["description"] == "Product docs"
    assert listing["docs"]["chunk_size"] == 500
    assert (listing["docs"]["documents"], listing["docs"]["chunks"]) == (0, 0)

    deleted = client.delete("/knowledge-bases/notes")
    assert deleted.status_code == 200
    assert deleted.json()["version"] > second
    assert list(kb_listing(client)) == ["docs"]
    missing = client.delete("/knowledge-bases/notes")
    assert missing.status_code == 404
    assert missing.json()["error"] == "EntityNotFound"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param({"id": "docs", "name": "Again"}, 409, id="id-taken"),
        pytest.param({"id": "x", "name": "X", "chunk_overlap": 2000}, 422, id="invalid-field"),
        pytest.param({"id": "x", "name": "X", "colour": "red"}, 422, id="unknown-field"),
        pytest.param({"id": "x", "name": ""}, 422, id="empty-name"),
        pytest.param({"name": "X"}, 422, id="no-id"),
        pytest.param(["docs"], 400, id="not-an-object"),
    ],
)
def test_create_knowledge_base_refusals(
    client: TestClient, body: dict[str, Any] | list[str], status: int
) -> None:
    create_kb(client, "docs")
    response = client.post("/knowledge-bases", json=body)
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    assert list(kb_listing(client)) == ["docs"]


def test_a_body_that_is_not_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/knowledge-bases", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "Bad Request",
        "detail": "the request body is not valid JSON",
    }


def test_a_knowledge_base_still_referenced_cannot_be_deleted(client: TestClient) -> None:
    create_kb(client, "docs")
    assert client.portal is not None
    pipeline = Pipeline("ingest", "Ingest", kb_id="docs")
    client.portal.call(state_manager(client).mutate, PipelineAdd(pipeline))
    response = client.delete("/knowledge-bases/docs")
    assert response.status_code == 409
    assert "still referred to" in response.json()["detail"]
    assert list(kb_listing(client)) == ["docs"]


def test_knowledge_bases_survive_a_restart(tmp_path: Path, mvp: bool) -> None:
    with TestClient(create_app(tmp_path, mvp=mvp)) as first:
        create_kb(first, "docs")
        create_kb(first, "gone")
        assert first.delete("/knowledge-bases/gone").status_code == 200
        assert post_document(first, text_of(2))["status"] == 201
    with TestClient(create_app(tmp_path, mvp=mvp)) as second:
        listing = kb_listing(second)
        assert list(listing) == ["docs"]
        assert listing["docs"]["documents"] == 1
        assert second.get("/health").json()["status"] == "ok"


# -- documents -------------------------------------------------------------------------------


def test_ingest_is_idempotent_and_replaces_by_source(client: TestClient) -> None:
    create_kb(client)
    content = text_of(3)
    created = post_document(client, content)
    assert created["status"] == 201
    assert created["outcome"] == "created"
    assert created["chunks"] == len(split_text(content)) == 6

    again = post_document(client, content)
    assert (again["status"], again["outcome"], again["id"]) == (200, "unchanged", created["id"])

    changed = text_of(5)
    replaced = post_document(client, changed)
    assert (replaced["status"], replaced["outcome"]) == (200, "replaced")
    assert replaced["id"] == created["id"]
    assert replaced["chunks"] == len(split_text(changed)) == 10

    document = client.get(f"/documents/{created['id']}").json()
    assert (document["kb_id"], document["source_uri"]) == ("docs", "file:a.txt")
    assert document["chunk_count"] == 10
    listed = client.get("/knowledge-bases/docs/documents").json()["documents"]
    assert [d["id"] for d in listed] == [created["id"]]
    assert (kb_listing(client)["docs"]["documents"], kb_listing(client)["docs"]["chunks"]) == (
        1,
        10,
    )


def test_delete_a_document_removes_its_chunks(client: TestClient) -> None:
    create_kb(client)
    kept = post_document(client, text_of(1), source_uri="file:kept.txt")
    doomed = post_document(client, text_of(4), source_uri="file:doomed.txt")
    assert kb_listing(client)["docs"]["chunks"] == 2 + 8

    assert client.delete(f"/documents/{doomed['id']}").status_code == 204
    assert client.get(f"/documents/{doomed['id']}").status_code == 404
    assert client.delete(f"/documents/{doomed['id']}").status_code == 404
    stats = kb_listing(client)["docs"]
    assert (stats["documents"], stats["chunks"]) == (1, 2)
    chunks = client.get("/knowledge-bases/docs/chunks").json()["chunks"]
    assert {c["document_id"] for c in chunks} == {kept["id"]}


def test_deleting_a_knowledge_base_deletes_its_documents(client: TestClient) -> None:
    create_kb(client)
    document = post_document(client, text_of(1))
    assert client.delete("/knowledge-bases/docs").status_code == 200
    assert client.get(f"/documents/{document['id']}").status_code == 404
    assert client.get("/knowledge-bases/docs/documents").status_code == 404


@pytest.mark.parametrize(
    ("kb_id", "body", "status"),
    [
        pytest.param("nope", {"title": "A", "content": "x"}, 404, id="unknown-kb"),
        pytest.param("docs", {"content": "x"}, 422, id="no-title"),
        pytest.param("docs", {"title": "A", "content": "  \n\n "}, 422, id="blank-content"),
        pytest.param("docs", {"title": "A", "content": 5}, 422, id="content-not-text"),
        pytest.param("docs", {"title": "A", "content": "x", "source_uri": 1}, 422, id="bad-uri"),
    ],
)
def test_ingest_refusals(client: TestClient, kb_id: str, body: dict[str, Any], status: int) -> None:
    create_kb(client)
    response = client.post(f"/knowledge-bases/{kb_id}/documents", json=body)
    assert response.status_code == status, response.text
    assert kb_listing(client)["docs"]["documents"] == 0


def test_chunks_page_by_key_until_the_end(client: TestClient) -> None:
    create_kb(client)
    expected: list[tuple[str, int, str]] = []
    for n, paragraphs in enumerate((3, 1, 4)):
        content = text_of(paragraphs, words=f"document {n} says hello. " * 8)
        document = post_document(client, content, source_uri=f"file:{n}.txt")
        expected += [(document["id"], i, c) for i, c in enumerate(split_text(content))]

    seen: list[dict[str, Any]] = []
    after, pages = 0, 0
    while True:
        response = client.get("/knowledge-bases/docs/chunks", params={"after": after, "limit": 3})
        assert response.status_code == 200
        page = response.json()
        seen += page["chunks"]
        pages += 1
        if page["next_after"] is None:
            break
        after = page["next_after"]
        assert after == seen[-1]["id"]

    ids = [c["id"] for c in seen]
    assert ids == sorted(set(ids)), "every chunk exactly once, in id order"
    assert [(c["document_id"], c["chunk_index"], c["content"]) for c in seen] == expected
    assert pages >= len(expected) // 3


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("after=x", id="after-not-int"),
        pytest.param("after=-1", id="after-negative"),
        pytest.param("limit=0", id="limit-zero"),
        pytest.param("limit=100000", id="limit-too-big"),
    ],
)
def test_bad_paging_parameters_are_400(client: TestClient, query: str) -> None:
    create_kb(client)
    response = client.get(f"/knowledge-bases/docs/chunks?{query}")
    assert response.status_code == 400
    assert response.json()["error"] == "Bad Request"


# -- pieces ----------------------------------------------------------------------------------


def test_split_text_cuts_paragraphs_then_long_lines() -> None:
    assert split_text("one\n\ntwo\n  \nthree") == ["one", "two", "three"]
    assert split_text("\n\n  \n") == []
    long = " ".join(["word"] * 300)  # 1,499 characters
    pieces = split_text(long)
    assert len(pieces) == 3
    assert all(len(piece) <= 500 for piece in pieces)
    assert " ".join(pieces) == long


def test_main_without_uvicorn_says_how_to_serve_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # makes `import uvicorn` fail
    assert main(["--data", str(tmp_path), "--port", "8123", "--mvp"]) == 1
    message = capsys.readouterr().err
    assert "pip install uvicorn" in message
    assert f"ASYNC_STORE_DATA={tmp_path} ASYNC_STORE_MODE=mvp" in message
    assert "examples.web_service:app" in message
