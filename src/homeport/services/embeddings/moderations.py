"""/v1/moderations: OpenAI's response shape, scored by embedding similarity. A HEURISTIC.

This is not a trained moderation classifier. Like the reference API, each input is embedded with
the embedding model, and compared with embeddings of short descriptions and example phrases of
each of OpenAI's categories. A category's score is twice the best cosine similarity, clamped to
[0, 1] (the reference API scores 2·dot of normalized vectors); a category is flagged when its
score is above `threshold` (default 0.5, i.e. cosine similarity above 0.25 with all-MiniLM-L6-v2).
Expect false positives on dark but harmless text and misses on subtle harm; use a real moderation
model where it matters. Only text is moderated: image inputs are a 400.
"""

from __future__ import annotations

from collections.abc import Sequence

from homeport.errors import InvalidRequestError, UnsupportedParameterError
from homeport.schemas.embeddings import ModerationInputPart, ModerationRequest
from homeport.services.embeddings.embeddings import EmbeddingService
from homeport.services.ids import new_id

# OpenAI's current categories (omni-moderation), each with what it means, and phrases typical of it.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("hate", (
        "hateful content that attacks people for their race, religion, gender, ethnicity, nationality, "
        "disability or sexual orientation",
        "I hate all people of that race and religion, they are inferior",
    )),
    ("hate/threatening", (
        "hateful threats of violence against people because of their race, religion or ethnicity",
        "people of that race should all be killed",
    )),
    ("harassment", (
        "harassing, insulting, bullying or demeaning language aimed at a person",
        "you are a stupid worthless idiot and everyone hates you",
    )),
    ("harassment/threatening", (
        "threatening to hurt, kill or harm a specific person",
        "I am going to find you and kill you",
    )),
    ("illicit", (
        "instructions or advice on how to commit crimes such as stealing, shoplifting, fraud or hacking",
        "how to steal from a shop without getting caught",
    )),
    ("illicit/violent", (
        "instructions on how to make weapons or bombs, or how to carry out violent crimes",
        "how to build a bomb to attack people",
    )),
    ("self-harm", ("content about suicide, self-harm, cutting oneself or eating disorders",)),
    ("self-harm/intent", ("I want to kill myself", "I am going to end my life")),
    ("self-harm/instructions", (
        "instructions or advice on how to commit suicide or harm oneself",
        "the best way to kill yourself is",
    )),
    ("sexual", (
        "sexually explicit content describing sexual activity meant to arouse",
        "explicit description of having sex",
    )),
    ("sexual/minors", ("sexual content involving children or minors under 18",)),
    ("violence", (
        "content depicting death, violence, killing, fighting or physical injury",
        "he beat and killed the man",
    )),
    ("violence/graphic", ("graphic, gory descriptions of blood, mutilation, wounds and dead bodies",)),
)
CATEGORY_NAMES: tuple[str, ...] = tuple(name for name, _ in CATEGORIES)


class ModerationService:
    def __init__(self, embeddings: EmbeddingService, *, threshold: float = 0.5) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("the moderation threshold is a score between 0 and 1")
        self.embeddings = embeddings
        self.threshold = threshold
        self._references: dict[str, list[tuple[str, list[float]]]] = {}  # model id → (category, vector)

    async def create(self, body: ModerationRequest) -> dict:
        texts = _texts(body.input)
        references = await self._reference_vectors()
        embedded = await self.embeddings.embed(texts)
        return {
            "id": new_id("modr"),
            "model": embedded.model_id,
            "results": [self._result(vector, references) for vector in embedded.vectors],
        }

    def _result(self, vector: list[float], references: list[tuple[str, list[float]]]) -> dict:
        best = dict.fromkeys(CATEGORY_NAMES, 0.0)
        for name, reference in references:
            best[name] = max(best[name], _dot(vector, reference))
        scores = {name: min(1.0, max(0.0, 2.0 * best[name])) for name in CATEGORY_NAMES}
        categories = {name: scores[name] > self.threshold for name in CATEGORY_NAMES}
        return {
            "flagged": any(categories.values()),
            "categories": categories,
            "category_scores": scores,
            "category_applied_input_types": {name: ["text"] for name in CATEGORY_NAMES},
        }

    async def _reference_vectors(self) -> list[tuple[str, list[float]]]:
        embedder = await self.embeddings.embedder()
        cached = self._references.get(embedder.model_id)
        if cached is None:
            labelled = [(name, phrase) for name, phrases in CATEGORIES for phrase in phrases]
            embedded = await self.embeddings.embed([phrase for _, phrase in labelled])
            cached = [(name, vector) for (name, _), vector in zip(labelled, embedded.vectors)]
            self._references[embedder.model_id] = cached
        return cached


def _texts(value: str | list) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not value:
        raise InvalidRequestError("'input' must not be an empty list.", param="input", code="empty_input")
    texts = []
    for part in value:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, ModerationInputPart) and part.type == "text" and part.text is not None:
            texts.append(part.text)
        elif isinstance(part, ModerationInputPart) and part.type == "image_url":
            raise UnsupportedParameterError("Only text can be moderated here; image inputs are not supported.",
                                            param="input")
        else:
            raise InvalidRequestError("A text input part needs a 'text' field.", param="input")
    return texts


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b))
