"""ChatPromptService: template precedence, Jinja variables, messages, modes, continuation,
truncation and reasoning detection. No model: token counts are character counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from homeport.services.text.prompts.images import slot

from homeport.engines.base import ModelInfo
from homeport.errors import ChatTemplateError, ContextLengthExceededError, HomeportError, InvalidRequestError
from homeport.schemas.chat import ChatCompletionRequest
from homeport.services.text.prompts import BuiltPrompt, ChatPromptService, ChatTemplateLibrary, ChatTemplateRenderer
from homeport.services.text.conversation import FunctionTool
from homeport.services.text.tool_use import ToolPlan
from homeport.services.wire.openai_chat import from_chat_request

# Shows each message as role|content|extras so the tests read what a template receives.
PROBE = (
    "{% for m in messages %}[{{ m.role }}|{{ m.content }}"
    "{% if m.reasoning_content %}|think={{ m.reasoning_content }}{% endif %}"
    "{% if m.tool_call_id %}|id={{ m.tool_call_id }}{% endif %}"
    "{% for c in m.tool_calls or [] %}|call={{ c.function.name }}:{{ c.function.arguments }}{% endfor %}]"
    "{% endfor %}{% if add_generation_prompt %}<reply>{% endif %}"
)
CHATML_MODEL = "qwen2.5-test"


def service(tmp_path: Path, model_id: str = CHATML_MODEL, chat_template: str | None = None) -> ChatPromptService:
    info = ModelInfo(model_id, 4096, "fake", chat_template=chat_template, bos_token="<s>", eos_token="</s>")
    return ChatPromptService(
        info=info, library=ChatTemplateLibrary(None), renderer=ChatTemplateRenderer(), user_data_dir=tmp_path
    )


def request(messages: list[dict] | None = None, **fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": messages or [{"role": "user", "content": "Hi"}], **fields})


def build(svc: ChatPromptService, req: ChatCompletionRequest, *, tools=None, budget=None) -> BuiltPrompt:
    """`tools` reach the template as given (not normalised as a request's would be)."""
    functions = tuple(
        FunctionTool(t["function"]["name"], t["function"].get("description"), t["function"].get("parameters"))
        for t in tools or ()
    )
    plan = ToolPlan(tools=functions, choice="auto", forced_name=None, parallel=True) if tools else None
    return svc.build(from_chat_request(req), plan=plan, count_tokens=len, budget=budget)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- request fields ----------------------------------------------------------------------------


def test_request_defaults_follow_the_reference():
    req = request()
    assert req.mode == "instruct" and req.continue_ is False and req.enable_thinking is True
    assert req.chat_instruct_command.startswith("Continue the chat dialogue below.")
    assert "<|character|>" in req.chat_instruct_command and req.chat_instruct_command.endswith("<|prompt|>")
    assert req.reasoning_effort is None and req.parallel_tool_calls is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"name1": "Ann", "name2": "Bot"}, ("Ann", "Bot")),
        ({"user_name": "Ann", "bot_name": "Bot"}, ("Ann", "Bot")),
        ({"user_name": "Ann", "name2": "Bot"}, ("Ann", "Bot")),
    ],
)
def test_both_spellings_of_the_names_work(tmp_path, fields, expected):
    req = request(**fields)
    assert (req.name1, req.name2) == expected
    built = build(service(tmp_path), request(mode="chat", **fields))
    assert built.text.endswith(f"{expected[0]}: Hi\n{expected[1]}:")


def test_continue_is_read_from_its_json_key_and_unknown_fields_are_kept():
    req = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "x"}], "continue_": True, "brand_new": 1}
    )
    assert req.continue_ is True and req.model_extra == {"brand_new": 1}


def test_unknown_mode_is_a_validation_error():
    with pytest.raises(ValueError):
        request(mode="story")


# --- template precedence ------------------------------------------------------------------------


def test_model_template_is_used_by_default(tmp_path):
    built = build(service(tmp_path, chat_template=PROBE), request())
    assert built.text == "[user|Hi]<reply>" and built.template_source == PROBE


def test_builtin_picked_by_model_name_without_a_model_template(tmp_path):
    built = build(service(tmp_path), request())
    assert built.text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert built.stops == ("<|im_end|>",)


def test_precedence_request_str_then_request_name_then_model_settings_then_model(tmp_path):
    body = "{% for m in messages %}{{ m.content }}{% endfor %}"
    write(tmp_path / "instruction-templates" / "Named.jinja", "NAMED" + body)
    write(tmp_path / "instruction-templates" / "ForModel.jinja", "PERMODEL" + body)
    table = "'qwen2\\.5':\n  instruction_template: ForModel\n'other':\n  x: 1\n"
    write(tmp_path / "models" / "config-user.yaml", table)
    svc = service(tmp_path, chat_template="MODEL")
    inline = "INLINE" + body
    assert build(svc, request(instruction_template_str=inline, instruction_template="Named")).text == "INLINEHi"
    assert build(svc, request(instruction_template="Named")).text == "NAMEDHi"
    assert build(svc, request()).text == "PERMODELHi"
    assert build(service(tmp_path, model_id="other-model", chat_template="MODEL"), request()).text == "MODEL"


def test_model_settings_match_the_lowercased_id_anywhere_and_str_wins_over_name(tmp_path):
    write(
        tmp_path / "models" / "config-user.yaml",
        "'mistral':\n  instruction_template: chatml\n"
        "'instruct':\n  instruction_template_str: 'STR{{ messages[0].content }}'\n",
    )
    assert build(service(tmp_path, model_id="My-Mistral-7B"), request()).text.startswith("<|im_start|>user")
    assert build(service(tmp_path, model_id="Mistral-Instruct"), request()).text == "STRHi"


def test_broken_model_settings_are_a_server_error_naming_the_file(tmp_path):
    write(tmp_path / "models" / "config-user.yaml", "'qwen':\n  instruction_template: Nope\n")
    with pytest.raises(HomeportError) as caught:
        build(service(tmp_path), request())
    assert caught.value.status_code == 500 and "config-user.yaml" in caught.value.message
    write(tmp_path / "models" / "config-user.yaml", "'(':\n  instruction_template: chatml\n")
    with pytest.raises(HomeportError, match="regular expression"):
        build(service(tmp_path), request())


def test_instruction_template_str_in_the_reference_yaml_format(tmp_path):
    text = "instruction_template: |-\n  YAML{% for m in messages %}{{ m.content }}{% endfor %}<|im_end|>\n"
    built = build(service(tmp_path), request(instruction_template_str=text))
    assert built.text == "YAMLHi<|im_end|>" and built.stops == ("<|im_end|>",)


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_named_yaml_template_files(tmp_path, suffix):
    write(tmp_path / "instruction-templates" / f"Mine{suffix}", "instruction_template: 'Y{{ messages[0].content }}'\n")
    assert build(service(tmp_path), request(instruction_template="Mine")).text == "YHi"


def test_named_yaml_without_the_key_is_a_400(tmp_path):
    write(tmp_path / "instruction-templates" / "Bad.yaml", "something_else: 1\n")
    with pytest.raises(InvalidRequestError, match="instruction_template"):
        build(service(tmp_path), request(instruction_template="Bad"))


@pytest.mark.parametrize("name", ["None", "Alpaca", "alpaca"])
def test_none_and_alpaca_mean_the_builtin_alpaca(tmp_path, name):
    built = build(service(tmp_path), request(instruction_template=name))
    assert built.text.endswith("### Instruction:\nHi\n\n### Response:\n")
    assert "\n### Instruction:" in built.stops


def test_builtin_names_are_accepted(tmp_path):
    assert build(service(tmp_path), request(instruction_template="gemma")).text.startswith("<s><start_of_turn>user")


@pytest.mark.parametrize("name", ["Nope", "../../etc/passwd", ".hidden"])
def test_unknown_instruction_template_is_a_400_listing_the_known(tmp_path, name):
    write(tmp_path / "instruction-templates" / "Mine.jinja", "x")
    with pytest.raises(InvalidRequestError) as caught:
        build(service(tmp_path), request(instruction_template=name))
    assert caught.value.param == "instruction_template" and caught.value.status_code == 400
    assert "Mine" in caught.value.message and "chatml" in caught.value.message


def test_broken_inline_template_is_a_template_error(tmp_path):
    with pytest.raises(ChatTemplateError):
        build(service(tmp_path), request(instruction_template_str="{% for %}"))


def test_template_edits_apply_without_restart(tmp_path):
    path = write(tmp_path / "instruction-templates" / "T.jinja", "one")
    svc = service(tmp_path)
    assert build(svc, request(instruction_template="T")).text == "one"
    path.write_text("two", encoding="utf-8")
    assert build(svc, request(instruction_template="T")).text == "two"


def test_stops_derived_for_templates_without_known_markers(tmp_path):
    source = "{% for m in messages %}\n\n## {{ m.role }}:\n{{ m.content }}{% endfor %}\n\n## assistant:\n"
    built = build(service(tmp_path), request(instruction_template_str=source))
    assert built.stops == ("\n## user:",)


# --- Jinja variables and messages ---------------------------------------------------------------


def test_template_variables(tmp_path):
    source = (
        "{{ tools | tojson }}|{{ add_generation_prompt }}|{{ bos_token }}|{{ eos_token }}|{{ enable_thinking }}|"
        "{{ reasoning_effort }}|{{ builtin_tools }}|{{ tools_in_user_message }}"
    )
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    req = request(enable_thinking=False, reasoning_effort="high")
    built = build(service(tmp_path, chat_template=source), req, tools=tools)
    assert built.text == f"{json.dumps(tools)}|True|<s>|</s>|False|high|None|False"


def test_no_tools_is_none_and_an_absent_reasoning_effort_is_undefined(tmp_path):
    source = "{{ tools is none }}|{{ reasoning_effort is defined }}|{{ reasoning_effort | default('medium') }}"
    assert build(service(tmp_path, chat_template=source), request()).text == "True|False|medium"


def test_messages_normalized_for_templates(tmp_path):
    messages = [
        {"role": "developer", "content": "Dev"},
        {"role": "system", "content": "Sys"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": "<think>\nplan\n</think>\n\nanswer",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "r"},
        {"role": "system", "content": "Late"},
        {"role": "user", "content": "u"},
    ]
    built = build(service(tmp_path, chat_template=PROBE), request(messages))
    assert built.text == (
        "[system|Dev\n\nSys][user|a\nb][assistant|answer|think=plan|call=f:{\"x\": 1}][tool|r|id=c1]"
        "[system|Late][user|u]<reply>"
    )


def test_tool_call_arguments_are_a_mapping_that_prints_as_json(tmp_path):
    source = (
        "{% for c in messages[1].tool_calls %}{{ c.function.arguments | tojson }}|"
        "{% for k, v in c.function.arguments.items() %}{{ k }}={{ v }}{% endfor %}|"
        "{{ '(' + c.function.arguments + ')' }}|{{ c.function.arguments is mapping }}{% endfor %}"
    )
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"city": "Paris"}'}}
    messages = [{"role": "user", "content": "w"}, {"role": "assistant", "content": None, "tool_calls": [call]}]
    built = build(service(tmp_path, chat_template=source), request(messages))
    assert built.text == '{"city": "Paris"}|city=Paris|({"city": "Paris"})|True'


def test_templates_ignoring_tool_calls_see_them_as_text(tmp_path):
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [{"role": "user", "content": "w"}, {"role": "assistant", "content": None, "tool_calls": [call]}]
    built = build(service(tmp_path, model_id="gemma-3"), request(messages))
    assert '\n{"name": "f", "arguments": {}}<end_of_turn>' in built.text


def test_reasoning_content_sent_back_by_the_client_reaches_the_template(tmp_path):
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "r"}]
    assert "[assistant|a|think=r]" in build(service(tmp_path, chat_template=PROBE), request(messages)).text


def test_image_parts_become_numbered_slots_in_message_order(tmp_path):
    image = {"type": "image_url", "image_url": {"url": "data:,"}}
    messages = [
        {"role": "user", "content": [image, {"type": "text", "text": "x"}]},
        {"role": "user", "content": [{"type": "text", "text": "y"}, image]},
    ]
    text = build(service(tmp_path), request(messages)).text
    assert text.index(slot(0)) < text.index("x") < text.index("y") < text.index(slot(1))


# --- modes --------------------------------------------------------------------------------------

CONVERSATION = [
    {"role": "system", "content": "Client system"},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi there"},
    {"role": "user", "content": "How are you?"},
]
ASSISTANT_CONTEXT = (
    "The following is a conversation with an AI Large Language Model. The AI has been trained to answer "
    "questions, provide recommendations, and help with decision making. The AI follows user requests. "
    "The AI thinks outside the box."
)


def test_chat_mode_renders_the_default_character_and_drops_the_client_system(tmp_path):
    built = build(service(tmp_path), request(CONVERSATION, mode="chat"))
    assert built.text == f"{ASSISTANT_CONTEXT}\n\nYou: Hello\nAI: Hi there\nYou: How are you?\nAI:"
    assert "Client system" not in built.text
    assert "\nYou:" in built.stops and "<|im_end|>" not in built.stops


def test_chat_mode_context_bio_and_names_from_the_request(tmp_path):
    req = request(
        CONVERSATION,
        mode="chat",
        context="{{char}} helps {{user}}.",
        user_bio="<USER> likes tea.",
        user_name="Ann",
        bot_name="Max",
    )
    assert build(service(tmp_path), req).text == (
        "Max helps Ann.\n\nAnn likes tea.\n\nAnn: Hello\nMax: Hi there\nAnn: How are you?\nMax:"
    )


def test_chat_mode_tool_lines(tmp_path):
    call = {"id": "c", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c", "content": "rain"},
    ]
    built = build(service(tmp_path), request(messages, mode="chat", context="Ctx"))
    assert built.text == 'Ctx\n\nYou: Weather?\n[Calling: weather({"city": "Oslo"})]\n[Tool result: rain]\nAI:'


def test_chat_template_str_and_its_reply_prefix(tmp_path):
    source = (
        "{% for m in messages %}{% if m.role == 'user' %}<{{ name1 }}> {{ m.content }}\n"
        "{% elif m.role == 'assistant' %}<{{ name2 }}> {{ m.content }}\n{% endif %}{% endfor %}"
    )
    built = build(service(tmp_path), request(CONVERSATION, mode="chat", chat_template_str=source))
    assert built.text == "<You> Hello\n<AI> Hi there\n<You> How are you?\n<AI>"
    assert built.template_source == source


def test_chat_instruct_wraps_the_transcript_in_one_user_message(tmp_path):
    built = build(service(tmp_path), request(CONVERSATION, mode="chat-instruct", character="Example"))
    head = (
        "<|im_start|>system\nClient system<|im_end|>\n<|im_start|>user\n"
        'Continue the chat dialogue below. Write a single reply for the character "Chiharu Yamada".\n\n'
    )
    assert built.text.startswith(head)
    tail = "You: Hello\nChiharu Yamada: Hi there\nYou: How are you?<|im_end|>\n<|im_start|>assistant\n"
    assert built.text.endswith(tail)
    assert built.text.count("<|im_start|>user") == 1
    assert built.stops == ("<|im_end|>", "\nYou:", "\nChiharu Yamada:")  # a second turn of either speaker ends the reply


def test_chat_instruct_command_is_customizable(tmp_path):
    command = "As <|character|>, reply to {{user}}:\n<|prompt|>"
    req = request(CONVERSATION, mode="chat-instruct", chat_instruct_command=command, context="C")
    built = build(service(tmp_path, chat_template=PROBE), req)
    transcript = "C\n\nYou: Hello\nAI: Hi there\nYou: How are you?"
    assert built.text == f"[system|Client system][user|As AI, reply to You:\n{transcript}]<reply>"


# --- continue_ ------------------------------------------------------------------------------------

PARTIAL = [{"role": "user", "content": "Write a poem"}, {"role": "assistant", "content": "Roses are"}]


def test_continue_in_instruct_mode_cuts_after_the_partial_reply(tmp_path):
    built = build(service(tmp_path), request(PARTIAL, continue_=True))
    assert built.text == "<|im_start|>user\nWrite a poem<|im_end|>\n<|im_start|>assistant\nRoses are"


def test_continue_keeps_trailing_whitespace_even_through_trim(tmp_path):
    messages = [PARTIAL[0], {"role": "assistant", "content": "Roses are "}]
    built = build(service(tmp_path, model_id="gemma-3"), request(messages, continue_=True))
    assert built.text == "<s><start_of_turn>user\nWrite a poem<end_of_turn>\n<start_of_turn>model\nRoses are "


def test_continue_in_chat_modes(tmp_path):
    chat = build(service(tmp_path), request(PARTIAL, continue_=True, mode="chat", context="C"))
    assert chat.text == "C\n\nYou: Write a poem\nAI: Roses are"
    wrapped = build(service(tmp_path), request(PARTIAL, continue_=True, mode="chat-instruct", context="C"))
    assert wrapped.text.endswith("C\n\nYou: Write a poem<|im_end|>\n<|im_start|>assistant\nRoses are")


def test_continue_without_a_final_assistant_message_generates_a_new_reply(tmp_path):
    built = build(service(tmp_path), request(continue_=True))
    assert built.text.endswith("<|im_start|>assistant\n")


def test_continue_when_the_template_drops_the_content_falls_back_to_a_fresh_turn(tmp_path):
    source = (
        "{% for m in messages %}{% if m.role == 'user' %}U:{{ m.content }}\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}A:{% endif %}"
    )
    built = build(service(tmp_path, chat_template=source), request(PARTIAL, continue_=True))
    assert built.text == "U:Write a poem\nA:Roses are"


# --- reasoning ------------------------------------------------------------------------------------

THINKING_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% if enable_thinking %}<think>\n{% endif %}{% endif %}"
)


def test_starts_in_reasoning_when_the_prompt_opens_think(tmp_path):
    svc = service(tmp_path, chat_template=THINKING_TEMPLATE)
    assert build(svc, request()).starts_in_reasoning is True
    assert build(svc, request(enable_thinking=False)).starts_in_reasoning is False
    closed = "{% for m in messages %}{{ m.content }}{% endfor %}<think>\n\n</think>\n\n"
    assert build(service(tmp_path, chat_template=closed), request()).starts_in_reasoning is False


def test_a_user_quoting_think_does_not_start_reasoning(tmp_path):
    built = build(service(tmp_path), request([{"role": "user", "content": "what does <think> do?"}]))
    assert built.starts_in_reasoning is False


def test_continuing_an_unfinished_thought_starts_in_reasoning(tmp_path):
    messages = [PARTIAL[0], {"role": "assistant", "content": "<think>Let me see"}]
    built = build(service(tmp_path), request(messages, continue_=True))
    assert built.text.endswith("<|im_start|>assistant\n<think>Let me see") and built.starts_in_reasoning is True


# --- truncation -----------------------------------------------------------------------------------


def long_history(turns: int) -> list[dict]:
    messages = [{"role": "system", "content": "SYS"}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"u{i} " + "x" * 50})
        messages.append({"role": "assistant", "content": f"a{i} " + "y" * 50})
    return messages + [{"role": "user", "content": "LAST"}]


def test_no_truncation_under_the_budget(tmp_path):
    built = build(service(tmp_path, chat_template=PROBE), request(long_history(3)), budget=10_000)
    assert built.dropped_messages == 0 and "u0" in built.text


def test_truncation_drops_the_oldest_and_keeps_system_and_last(tmp_path):
    svc = service(tmp_path, chat_template=PROBE)
    full = build(svc, request(long_history(10))).text
    built = build(svc, request(long_history(10)), budget=len(full) // 2)
    assert len(built.text) <= len(full) // 2
    assert built.text.startswith("[system|SYS]") and built.text.endswith("[user|LAST]<reply>")
    assert "u0" not in built.text and "a9" in built.text
    assert built.dropped_messages == full.count("][") - built.text.count("][")
    # As many messages as fit are kept: one more would not.
    kept = built.text.count("[") - 1
    assert kept >= 2


def test_truncation_keeps_the_most_that_fit(tmp_path):
    svc = service(tmp_path, chat_template=PROBE)
    history = long_history(10)
    for budget in range(200, 1200, 97):
        built = build(svc, request(history), budget=budget)
        assert len(built.text) <= budget
        if built.dropped_messages:
            # Keeping the next-older message back would overflow.
            fewer = history[:1] + history[1 + built.dropped_messages - 1 :]
            assert len(build(svc, request(fewer)).text) > budget


def test_truncation_drops_a_tool_call_with_its_results(tmp_path):
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "first " + "x" * 40},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "RESULT1 " + "z" * 40},
        {"role": "tool", "tool_call_id": "c1", "content": "RESULT2 " + "z" * 40},
        {"role": "assistant", "content": "done"},
        {"role": "user", "content": "LAST"},
    ]
    svc = service(tmp_path, chat_template=PROBE)
    full = build(svc, request(messages)).text
    # Enough to drop the first user message and a little more: the call must take its results along.
    budget = len(full) - len("[user|first " + "x" * 40 + "]") - 5
    built = build(svc, request(messages), budget=budget)
    assert "call=f" not in built.text and "RESULT" not in built.text and "[assistant|done]" in built.text
    assert built.dropped_messages == 4


def test_truncation_keeps_a_final_tool_exchange_whole(tmp_path):
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "old " + "x" * 100},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "R"},
    ]
    svc = service(tmp_path, chat_template=PROBE)
    built = build(svc, request(messages), budget=60)
    assert built.text == "[assistant||call=f:{}][tool|R|id=c1]<reply>" and built.dropped_messages == 1


def test_too_long_even_with_system_and_last_is_context_length_exceeded(tmp_path):
    with pytest.raises(ContextLengthExceededError) as caught:
        build(service(tmp_path, chat_template=PROBE), request(long_history(3)), budget=10)
    assert caught.value.param == "messages" and caught.value.status_code == 400
    assert caught.value.code == "context_length_exceeded"
    assert "system messages and the last message" in caught.value.message


def test_truncation_in_chat_mode_keeps_the_character(tmp_path):
    svc = service(tmp_path)
    req = request(long_history(10), mode="chat", context="CTX")
    built = build(svc, req, budget=400)
    assert built.text.startswith("CTX\n\n") and built.text.endswith("You: LAST\nAI:") and built.dropped_messages > 0
    assert len(built.text) <= 400


def test_truncation_uses_the_given_counter(tmp_path):
    calls = []

    def count(text: str) -> int:
        calls.append(text)
        return len(text.split("]["))  # one "token" per message

    svc = service(tmp_path, chat_template=PROBE)
    built = svc.build(from_chat_request(request(long_history(20))), plan=None, count_tokens=count, budget=5)
    assert built.text.count("][") + 1 <= 5 and len(calls) < 12  # binary search, not one render per message


# --- /v1/internal/chat-prompt service method -------------------------------------------------------


async def test_chat_prompt_returns_the_untruncated_prompt(tmp_path):
    result = await service(tmp_path).chat_prompt(from_chat_request(request(long_history(2))))
    assert set(result) == {"prompt"} and "u0" in result["prompt"]


def test_request_templates_do_not_grow_the_compiled_cache_without_bound(tmp_path):
    svc = service(tmp_path)
    for i in range(200):
        build(svc, request(instruction_template_str=f"T{i}{{{{ messages[0].content }}}}"))
    assert len(svc.renderer._compiled) <= 64
    assert build(svc, request(instruction_template_str="T199{{ messages[0].content }}")).text == "T199Hi"
