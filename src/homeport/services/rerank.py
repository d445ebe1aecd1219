"""/v1/rerank (and /rerank): documents ordered by relevance to a query, in the shape llama.cpp's
server and vLLM use (also Jina's and Cohere's): {id, model, results: [{index, relevance_score,
document?}], usage: {total_tokens}}.

Relevance is the cosine similarity of the query's and each document's embedding (a bi-encoder,
in [-1, 1]), not a cross-encoder's score: good at putting the relevant documents first, not a
calibrated probability.
"""

from __future__ import annotations

from homeport.errors import InvalidRequestError
from homeport.schemas.embeddings import RerankRequest
from homeport.services.embeddings import MAX_INPUTS, EmbeddingService
from homeport.services.ids import new_id


class RerankService:
    def __init__(self, embeddings: EmbeddingService) -> None:
        self.embeddings = embeddings

    async def create(self, body: RerankRequest) -> dict:
        if not body.query:
            raise InvalidRequestError("'query' must not be empty.", param="query")
        documents = [doc if isinstance(doc, str) else doc.text for doc in body.documents]
        if not documents:
            raise InvalidRequestError("'documents' must not be an empty list.", param="documents")
        if len(documents) > MAX_INPUTS:
            raise InvalidRequestError(
                f"'documents' may hold at most {MAX_INPUTS} items, got {len(documents)}.", param="documents"
            )
        embedded = await self.embeddings.embed([body.query, *documents])
        query, *vectors = embedded.vectors
        scored = sorted(
            ((index, sum(q * d for q, d in zip(query, vector))) for index, vector in enumerate(vectors)),
            key=lambda pair: pair[1],
            reverse=True,
        )
        results = []
        for index, score in scored[: body.top_n]:
            result: dict = {"index": index, "relevance_score": score}
            if body.return_documents:
                result["document"] = {"text": documents[index]}
            results.append(result)
        return {
            "id": new_id("rerank"),
            "object": "list",
            "model": embedded.model_id,
            "results": results,
            "usage": {"prompt_tokens": embedded.total_tokens, "total_tokens": embedded.total_tokens},
        }
