"""Characters: files in the user folder, built-ins (Assistant, Example), both card layouts,
placeholders, no memoization, and a 400 for unknown names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from homeport.engines.base import ModelInfo
from homeport.errors import InvalidRequestError
from homeport.schemas.chat import ChatCompletionRequest
from homeport.services.text.prompts import ChatPromptService, ChatTemplateLibrary, ChatTemplateRenderer
from homeport.services.text.prompts.characters import CharacterLibrary, substitute_names
from homeport.services.wire.openai_chat import from_chat_request


def characters(tmp_path: Path) -> CharacterLibrary:
    return CharacterLibrary(tmp_path / "characters")


def write(tmp_path: Path, file_name: str, text: str) -> Path:
    folder = tmp_path / "characters"
    folder.mkdir(exist_ok=True)
    path = folder / file_name
    path.write_text(text, encoding="utf-8")
    return path


def chat_prompt(tmp_path: Path, **fields) -> str:
    svc = ChatPromptService(
        info=ModelInfo("qwen-test", 4096, "fake"),
        library=ChatTemplateLibrary(None),
        renderer=ChatTemplateRenderer(),
        user_data_dir=tmp_path,
    )
    body = {"messages": [{"role": "user", "content": "Hi"}], "mode": "chat", **fields}
    req = ChatCompletionRequest.model_validate(body)
    return svc.build(from_chat_request(req), plan=None, count_tokens=len, budget=None).text


def test_default_character_is_the_builtin_assistant(tmp_path):
    for name in (None, "None", "Assistant"):
        character = characters(tmp_path).load(name)
        assert character.name == "AI"
        assert character.context.startswith("The following is a conversation with an AI Large Language Model.")
        assert character.context.strip().endswith("The AI thinks outside the box.")


def test_example_character_is_shipped(tmp_path):
    character = characters(tmp_path).load("Example")
    assert character.name == "Chiharu Yamada"
    assert "computer" in character.context.lower() and "program" in character.context.lower()
    assert character.greeting
    assert {"Assistant", "Example"} <= set(characters(tmp_path).names())
    prompt = chat_prompt(tmp_path, character="Example", name1="Kai")
    assert "{{user}}" not in prompt and "{{char}}" not in prompt
    assert "Kai: Hi" in prompt and prompt.endswith("Chiharu Yamada:")


def test_user_files_shadow_builtins(tmp_path):
    write(tmp_path, "Example.yaml", "name: Other\ncontext: Mine.\n")
    assert characters(tmp_path).load("Example").name == "Other"


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_reference_layout_in_each_format(tmp_path, suffix):
    data = {"name": "Rin", "your_name": "Sam", "context": "{{char}} talks to {{user}}.", "greeting": "Yo <USER>"}
    text = json.dumps(data) if suffix == ".json" else "\n".join(f"{k}: {json.dumps(v)}" for k, v in data.items())
    write(tmp_path, f"Rin{suffix}", text)
    character = characters(tmp_path).load("Rin")
    assert (character.name, character.user_name, character.greeting) == ("Rin", "Sam", "Yo <USER>")
    assert chat_prompt(tmp_path, character="Rin") == "Rin talks to Sam.\n\nSam: Hi\nRin:"
    # The request's names win over the file's.
    assert chat_prompt(tmp_path, character="Rin", user_name="Ann", bot_name="R") == "R talks to Ann.\n\nAnn: Hi\nR:"


def test_pygmalion_layout(tmp_path):
    card = {
        "char_name": "Vex",
        "char_persona": "A grumpy wizard who dislikes <USER>.",
        "world_scenario": "A tower.",
        "example_dialogue": "<USER>: Hi\n<BOT>: Go away.\n",
        "char_greeting": "What now?",
    }
    write(tmp_path, "Vex.json", json.dumps(card))
    character = characters(tmp_path).load("Vex")
    assert character.name == "Vex" and character.greeting == "What now?"
    assert character.context == (
        "Vex's Persona: A grumpy wizard who dislikes <USER>.\nScenario: A tower.\n<USER>: Hi\n<BOT>: Go away.\n"
    )
    prompt = chat_prompt(tmp_path, character="Vex")
    context = "Vex's Persona: A grumpy wizard who dislikes You.\nScenario: A tower.\nYou: Hi\nVex: Go away."
    assert prompt.startswith(context + "\n\n")


def test_file_without_a_name_is_named_after_the_file(tmp_path):
    write(tmp_path, "Nameless.yaml", "context: Quiet.\n")
    assert characters(tmp_path).load("Nameless").name == "Nameless"


def test_substitution():
    assert substitute_names("{{user}} <USER> {{char}} <BOT>", "U", "B") == "U U B B"


def test_edits_apply_at_once(tmp_path):
    path = write(tmp_path, "Live.yaml", "name: One\n")
    library = characters(tmp_path)
    assert library.load("Live").name == "One"
    path.write_text("name: Two\n", encoding="utf-8")
    assert library.load("Live").name == "Two"


@pytest.mark.parametrize("name", ["Nobody", "../secrets", "/etc/passwd", ".hidden"])
def test_unknown_character_is_a_400_listing_the_known(tmp_path, name):
    write(tmp_path, "Mine.yaml", "name: M\n")
    with pytest.raises(InvalidRequestError) as caught:
        characters(tmp_path).load(name)
    assert caught.value.status_code == 400 and caught.value.param == "character"
    assert all(known in caught.value.message for known in ("Mine", "Assistant", "Example"))


def test_unknown_character_is_refused_in_instruct_mode_too(tmp_path):
    svc = ChatPromptService(
        info=ModelInfo("qwen-test", 4096, "fake"),
        library=ChatTemplateLibrary(None),
        renderer=ChatTemplateRenderer(),
        user_data_dir=tmp_path,
    )
    req = ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "Hi"}], "character": "Nobody"})
    with pytest.raises(InvalidRequestError, match="unknown character"):
        svc.build(from_chat_request(req), plan=None, count_tokens=len, budget=None)


@pytest.mark.parametrize(
    ("file_name", "text"), [("Bad.yaml", "name: [unclosed"), ("Bad.json", "{"), ("Bad.yml", "- a list")]
)
def test_broken_character_files_are_a_400(tmp_path, file_name, text):
    write(tmp_path, file_name, text)
    with pytest.raises(InvalidRequestError, match="character 'Bad'"):
        characters(tmp_path).load("Bad")
