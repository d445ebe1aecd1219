"""The neutral conversation: each wire format's request → the expected `Conversation`, the one
place it becomes template dicts, and the pipeline importing no wire schema."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from homeport.errors import InvalidRequestError
from homeport.schemas.anthropic import CountTokensRequest, MessagesRequest
from homeport.schemas.chat import ChatCompletionRequest
from homeport.schemas.responses import ResponsesRequest
from homeport.services.text.conversation import (
    ChatOptions,
    Conversation,
    FunctionTool,
    Image,
    Limits,
    Logprobs,
    Message,
    NamedFunction,
    Reasoning,
    Text,
    Thinking,
    ToolCall,
    ToolResult,
)
from homeport.services.text.prompts.messages import normalize, template_tools
from homeport.services.text.tool_use import plan_tools
from homeport.services.wire.anthropic import to_conversation as from_anthropic
from homeport.services.wire.openai_chat import from_chat_request
from homeport.services.wire.responses_input import input_items
from homeport.services.wire.responses_input import to_conversation as from_responses

SRC = Path(__file__).resolve().parents[3] / "src" / "homeport"
PNG = "data:image/png;base64,iVBORw0KGgo="
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


def _chat(**fields) -> Conversation:
    return from_chat_request(ChatCompletionRequest.model_validate(fields))


# --- OpenAI chat ---------------------------------------------------------------------------------


def test_openai_messages_become_neutral_parts():
    conversation = _chat(
        messages=[
            {"role": "developer", "content": "Dev"},
            {"role": "user", "name": "ann", "content": [
                {"type": "text", "text": "see"},
                {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
            ]},
            {
                "role": "assistant",
                "content": "calling",
                "reasoning_content": "thought",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get", "arguments": '{"city": "Paris"}'}},
                    {"id": "c2", "type": "function", "function": {"name": "get", "arguments": {"city": "Rome"}}},
                    {"id": "c3", "name": "bare", "arguments": "{}"},  # some clients leave out `function`
                    {"id": "c4", "type": "function", "function": {"name": "none"}},
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "rain"}]},
        ]
    )
    assert conversation.messages == (
        Message("system", (Text("Dev"),)),
        Message("user", (Text("see"), Image(PNG, "low")), name="ann"),
        Message(
            "assistant",
            (
                Reasoning("thought"),
                Text("calling"),
                ToolCall("c1", "get", '{"city": "Paris"}'),
                ToolCall("c2", "get", '{"city": "Rome"}'),
                ToolCall("c3", "bare", "{}"),
                ToolCall("c4", "none", "{}"),
            ),
        ),
        Message("tool", (ToolResult("c1", "sunny"),)),
        Message("tool", (ToolResult("c2", (Text("rain"),)),)),
    )


def test_openai_request_fields_land_in_their_typed_places():
    conversation = _chat(
        messages=[{"role": "user", "content": "Hi"}],
        tools=[{"type": "function", "function": {"name": "get", "description": "d", "parameters": SCHEMA}}],
        tool_choice={"type": "function", "function": {"name": "get"}},
        parallel_tool_calls=False,
        max_tokens=9,
        max_completion_tokens=5,
        stop="END",
        logprobs=True,
        top_logprobs=2,
        enable_thinking=False,
        reasoning_effort="low",
        mode="chat-instruct",
        character="Example",
        user_name="Ann",
        **{"continue": True, "chat-instruct_command": "<|prompt|>"},
        tool_prompt="generic",
        temperature=0.5,
        seed=3,
        n=2,
        response_format={"type": "json_object"},
    )
    assert conversation.tools == (FunctionTool("get", "d", SCHEMA),)
    assert conversation.tool_choice == NamedFunction("get") and conversation.parallel_tool_calls is False
    assert conversation.limits == Limits(max_tokens=5, stop=("END",))  # max_completion_tokens wins
    assert conversation.logprobs == Logprobs(enabled=True, top=2)
    assert conversation.thinking == Thinking(enabled=False, effort="low")
    assert conversation.options == ChatOptions(
        mode="chat-instruct",
        character="Example",
        name1="Ann",
        chat_instruct_command="<|prompt|>",
        continue_=True,
        tool_prompt="generic",
    )
    sampling = conversation.sampling
    assert (sampling.temperature, sampling.seed, sampling.n, sampling.response_format) == (0.5, 3, 2, {"type": "json_object"})
    # One source of truth: the stop strings are the limits', and only given knobs count as given (presets).
    assert sampling.stop is None and sampling.model_fields_set == {"temperature", "seed", "n", "response_format"}


def test_openai_legacy_functions_are_tools_answered_the_old_way():
    conversation = _chat(
        messages=[{"role": "user", "content": "Hi"}],
        functions=[{"name": "get", "parameters": SCHEMA}],
        function_call={"name": "get"},
    )
    assert conversation.legacy_functions and conversation.tools == (FunctionTool("get", "", SCHEMA),)
    assert conversation.tool_choice == NamedFunction("get")
    plan = plan_tools(conversation)
    assert plan.legacy and not plan.parallel and plan.forced_name == "get"
    with pytest.raises(InvalidRequestError) as refused:
        plan_tools(_chat(messages=[{"role": "user", "content": "Hi"}], function_call={"name": "get"}))
    assert refused.value.param == "function_call"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "retrieval"}]}, "tools[0]"),
        ({"tools": [{"type": "function", "function": {"name": "no spaces"}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "function", "function": {"name": 5}}]}, "tools[0].function.name"),
        ({"functions": [{"name": "a b"}]}, "functions[0].function.name"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]}, "tools[0].function.parameters"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}] * 2}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "banana"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
    ],
)
def test_tool_errors_name_the_openai_fields(fields, param):
    with pytest.raises(InvalidRequestError) as refused:
        plan_tools(_chat(messages=[{"role": "user", "content": "Hi"}], **fields))
    assert refused.value.param == param


# --- Anthropic Messages --------------------------------------------------------------------------


def test_anthropic_request_becomes_the_expected_conversation():
    body = MessagesRequest.model_validate(
        {
            "max_tokens": 100,
            "system": "Be brief.",
            "stop_sequences": ["END", ""],
            "temperature": 0.2,
            "tools": [{"name": "get", "description": "d", "input_schema": SCHEMA}],
            "tool_choice": {"type": "tool", "name": "get", "disable_parallel_tool_use": True},
            "thinking": {"type": "enabled", "budget_tokens": 20},
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "see"},
                    {"type": "image", "source": {"type": "url", "url": "https://example.test/a.png"}},
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "I "},
                    {"type": "text", "text": "call"},
                    {"type": "tool_use", "id": "u1", "name": "get", "input": {"city": "Paris"}},
                ]},
                {"role": "user", "content": [
                    {"type": "text", "text": "then?"},
                    {"type": "tool_result", "tool_use_id": "u1", "content": [{"type": "text", "text": "no"}], "is_error": True},
                ]},
            ],
        }
    )
    conversation = from_anthropic(body)
    assert conversation.messages == (
        Message("system", (Text("Be brief."),)),
        Message("user", (Text("see"), Image("https://example.test/a.png"))),
        Message("assistant", (Reasoning("hmm", "sig"), Text("I call"), ToolCall("u1", "get", '{"city": "Paris"}'))),
        Message("tool", (ToolResult("u1", "no", is_error=True),)),  # a turn's results come before its text
        Message("user", (Text("then?"),)),
    )
    assert conversation.tools == (FunctionTool("get", "d", SCHEMA),)
    assert conversation.tool_choice == NamedFunction("get") and conversation.parallel_tool_calls is False
    assert conversation.limits == Limits(max_tokens=100, stop=("END",))
    assert conversation.thinking == Thinking(enabled=True) and conversation.sampling.temperature == 0.2
    template = normalize(conversation.messages)
    assert template[2]["reasoning_content"] == "hmm" and template[3]["content"] == "Error: no"


def test_anthropic_count_tokens_needs_no_limits():
    body = CountTokensRequest.model_validate({"messages": [{"role": "user", "content": "Hi"}], "tool_choice": {"type": "any"}})
    conversation = from_anthropic(body)
    assert conversation.limits == Limits() and conversation.tool_choice == "required"
    assert conversation.thinking == Thinking(enabled=False)


# --- OpenAI Responses ----------------------------------------------------------------------------


def test_responses_items_become_the_expected_conversation():
    body = ResponsesRequest.model_validate(
        {
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Dev"},
                {"role": "user", "content": [
                    {"type": "input_text", "text": "see"},
                    {"type": "input_image", "image_url": PNG},
                ]},
                {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "ponder"}]},
                {"type": "function_call", "call_id": "c1", "name": "get", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "42"},
                {"role": "assistant", "content": [{"type": "output_text", "text": "It is "}, {"type": "output_text", "text": "42"}]},
            ],
            "tools": [{"type": "function", "name": "get", "parameters": SCHEMA}],
            "tool_choice": "required",
            "max_output_tokens": 30,
            "reasoning": {"effort": "high"},
            "text": {"format": {"type": "json_object"}},
            "top_p": 0.9,
        }
    )
    conversation = from_responses(body, input_items(body))
    assert conversation.messages == (
        Message("system", (Text("Be brief."),)),
        Message("system", (Text("Dev"),)),
        Message("user", (Text("see"), Image(PNG, "auto"))),
        Message("assistant", (Reasoning("ponder"), ToolCall("c1", "get", "{}"))),
        Message("tool", (ToolResult("c1", "42"),)),
        Message("assistant", (Text("It is 42"),)),
    )
    assert conversation.tools == (FunctionTool("get", "", SCHEMA),) and conversation.tool_choice == "required"
    assert conversation.parallel_tool_calls is True and conversation.limits == Limits(max_tokens=30)
    assert conversation.thinking == Thinking(enabled=True, effort="high")
    assert conversation.sampling.response_format == {"type": "json_object"} and conversation.sampling.top_p == 0.9


# --- the one conversion to template dicts ------------------------------------------------------


def test_template_dicts_are_made_in_one_place():
    messages = (
        Message("user", (Text("a"), Image(PNG), Text("b"))),
        Message("assistant", (Text("<think>\nplan\n</think>\n\nok"), ToolCall("c1", "get", '{"city": "Paris"}'))),
        Message("tool", (ToolResult("c1", (Text("r"), Image(PNG))),), name="get"),
    )
    user, assistant, tool = normalize(messages)
    assert user == {"role": "user", "content": "a\n\ue000image:0\ue001\nb"}
    assert assistant["content"] == "ok" and assistant["reasoning_content"] == "plan"
    call = assistant["tool_calls"][0]
    assert call["id"] == "c1" and call["function"]["name"] == "get" and call["function"]["arguments"] == {"city": "Paris"}
    assert str(call["function"]["arguments"]) == '{"city": "Paris"}'
    assert tool == {"role": "tool", "content": "r\n\ue000image:1\ue001", "name": "get", "tool_call_id": "c1"}
    assert template_tools([FunctionTool("get", "", SCHEMA)]) == [
        {"type": "function", "function": {"name": "get", "description": "", "parameters": SCHEMA}}
    ]


# --- the pipeline reads no wire format -----------------------------------------------------------

PIPELINE = [
    SRC / "services/text/chat.py",
    SRC / "services/text/generation.py",
    SRC / "services/text/tool_use.py",
    SRC / "services/text/presets.py",
    SRC / "services/text/conversation.py",
    *sorted((SRC / "services/text/prompts").glob("*.py")),
]


@pytest.mark.parametrize("path", PIPELINE, ids=lambda p: p.relative_to(SRC).as_posix())
def test_pipeline_modules_import_no_wire_schema_but_the_shared_sampling_fields(path):
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    wire = {name for name in imported if name.startswith(("homeport.schemas", "homeport.services.wire"))}
    assert wire <= {"homeport.schemas.common"}, wire


def test_importing_the_pipeline_loads_no_wire_schema():
    modules = [
        "homeport.services.text.chat",
        "homeport.services.text.generation",
        "homeport.services.text.tool_use",
        "homeport.services.text.presets",
        *(f"homeport.services.text.prompts.{p.stem}" for p in PIPELINE if p.parent.name == "prompts"),
    ]
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('homeport.schemas'))))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert loaded == ["homeport.schemas", "homeport.schemas.common"]
