"""Chat templates: built-in goldens, table selection, model templates, and the sandbox."""

from __future__ import annotations

import datetime
import json
import pathlib

import pytest

from homeport.errors import ChatTemplateError
from homeport.services.text.prompts.chat_templates import (
    ChatTemplate,
    ChatTemplateLibrary,
    ChatTemplateRenderer,
    infer_stop_markers,
)

CONVERSATION = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "U1"},
    {"role": "assistant", "content": "A1"},
    {"role": "user", "content": "U2"},
]

BUILTIN_NAMES = ["gemma", "llama3", "chatml", "mistral", "phi", "alpaca"]

# What each built-in writes where the model's reply begins.
ASSISTANT_OPENERS = {
    "gemma": "<start_of_turn>model\n",
    "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "chatml": "<|im_start|>assistant\n",
    "mistral": "[/INST]",
    "phi": "<|assistant|>\n",
    "alpaca": "### Response:\n",
}

GOLDEN = {
    "gemma": (
        "<s><start_of_turn>user\nS\n\nU1<end_of_turn>\n"
        "<start_of_turn>model\nA1<end_of_turn>\n"
        "<start_of_turn>user\nU2<end_of_turn>\n"
        "<start_of_turn>model\n"
    ),
    "llama3": (
        "<s><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nU1<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nU2<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "chatml": (
        "<|im_start|>system\nS<|im_end|>\n"
        "<|im_start|>user\nU1<|im_end|>\n"
        "<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nU2<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    "mistral": "<s>[INST] S\n\nU1 [/INST] A1</s>[INST] U2 [/INST]",
    "phi": (
        "<s><|system|>\nS<|end|>\n"
        "<|user|>\nU1<|end|>\n"
        "<|assistant|>\nA1<|end|>\n"
        "<|user|>\nU2<|end|>\n"
        "<|assistant|>\n"
    ),
    "alpaca": (
        "<s>S\n\n"
        "### Instruction:\nU1\n\n"
        "### Response:\nA1\n\n"
        "### Instruction:\nU2\n\n"
        "### Response:\n"
    ),
}


@pytest.fixture
def library() -> ChatTemplateLibrary:
    return ChatTemplateLibrary()


@pytest.fixture
def renderer() -> ChatTemplateRenderer:
    return ChatTemplateRenderer()


def _write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "templates.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- built-ins -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_golden(library, renderer, name):
    rendered = renderer.render(library.by_name(name), CONVERSATION, bos_token="<s>", eos_token="</s>")
    assert rendered == GOLDEN[name]


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_ends_with_assistant_opener_and_closes_replies(library, renderer, name):
    template = library.by_name(name)
    rendered = renderer.render(template, CONVERSATION, add_generation_prompt=True)
    assert rendered.endswith(ASSISTANT_OPENERS[name])
    # The reply in history is followed, before anything else, by a stop marker.
    after_reply = rendered[rendered.index("A1") + len("A1") :]
    first = min(after_reply.find(stop) for stop in template.stop if stop in after_reply)
    assert first >= 0 and after_reply[:first].strip() == ""


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_generation_prompt_adds_only_the_opener(library, renderer, name):
    template = library.by_name(name)
    with_prompt = renderer.render(template, CONVERSATION, add_generation_prompt=True)
    without = renderer.render(template, CONVERSATION, add_generation_prompt=False)
    # Mistral's "[/INST]" closes the user turn and opens the reply at once.
    opener = "" if name == "mistral" else ASSISTANT_OPENERS[name]
    assert with_prompt == without + opener
    assert not without.endswith(ASSISTANT_OPENERS[name]) or name == "mistral"


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_renders_tool_results_and_late_system(library, renderer, name):
    messages = [
        {"role": "user", "content": "U1"},
        {"role": "assistant", "content": "A1"},
        {"role": "tool", "content": "R1", "tool_call_id": "call_1", "name": "f"},
        {"role": "system", "content": "S2"},
    ]
    rendered = renderer.render(library.by_name(name), messages)
    assert "R1" in rendered and "S2" in rendered
    assert rendered.endswith(ASSISTANT_OPENERS[name])


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_renders_empty_and_system_only_conversations(library, renderer, name):
    template = library.by_name(name)
    assert renderer.render(template, [], add_generation_prompt=False) is not None
    rendered = renderer.render(template, [{"role": "system", "content": "S"}])
    assert "S" in rendered


def test_gemma_tool_result_is_a_user_turn(library, renderer):
    rendered = renderer.render(
        library.by_name("gemma"), [{"role": "tool", "content": "R1"}], add_generation_prompt=False
    )
    assert rendered == "<start_of_turn>user\nR1<end_of_turn>\n"


def test_gemma_system_without_user_becomes_its_own_user_turn(library, renderer):
    rendered = renderer.render(library.by_name("gemma"), [{"role": "system", "content": "S"}])
    assert rendered == "<start_of_turn>user\nS<end_of_turn>\n<start_of_turn>model\n"


def test_llama3_tool_result_is_ipython(library, renderer):
    rendered = renderer.render(library.by_name("llama3"), [{"role": "tool", "content": "R1"}], add_generation_prompt=False)
    assert rendered == "<|start_header_id|>ipython<|end_header_id|>\n\nR1<|eot_id|>"


def test_alpaca_default_system_prompt(library, renderer):
    rendered = renderer.render(library.by_name("alpaca"), [{"role": "user", "content": "U1"}])
    assert rendered == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nU1\n\n### Response:\n"
    )


def test_chatml_tools_follow_qwen_hermes_format(library, renderer):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Météo"}}]
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U1"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "tool", "content": "R1", "tool_call_id": "c1"},
        {"role": "tool", "content": "R2", "tool_call_id": "c2"},
    ]
    rendered = renderer.render(library.by_name("chatml"), messages, tools=tools)
    assert rendered.startswith("<|im_start|>system\nS\n\n# Tools\n")
    assert '\n<tools>\n{"type": "function", "function": {"name": "get_weather", "description": "Météo"}}\n</tools>' in rendered
    assert rendered.endswith(
        "<|im_start|>user\nU1<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nR1\n</tool_response>\n<tool_response>\nR2\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert rendered.count("<|im_start|>system") == 1


def test_chatml_tool_call_arguments_given_as_object(library, renderer):
    messages = [{"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": {"x": "é"}}}]}]
    rendered = renderer.render(library.by_name("chatml"), messages, add_generation_prompt=False)
    assert rendered == '<|im_start|>assistant\n<tool_call>\n{"name": "f", "arguments": {"x": "é"}}\n</tool_call><|im_end|>\n'


# --- choosing a template -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_name", "expected"),
    [
        ("gemma-3-270m-it-Q4_K_M", "gemma"),
        ("gemma-2-9b-it", "gemma"),
        ("codegemma-7b-it", "gemma"),
        ("Meta-Llama-3.1-8B-Instruct-Q4_K_M", "llama3"),
        ("Meta-Llama-3-8B-Instruct", "llama3"),
        ("llama3.2-1b-instruct", "llama3"),
        ("Llama-3.2-3B-Instruct-Q4_K_M", "llama3"),
        ("Qwen2.5-0.5B-Instruct-Q8_0", "chatml"),
        ("qwen", "chatml"),
        ("Qwen3-4B-Q4_K_M", "chatml"),
        ("Yi-1.5-9B-Chat", "chatml"),
        ("SmolLM2-360M-Instruct", "chatml"),
        ("OpenHermes-2.5-Mistral-7B", "chatml"),
        ("Hermes-3-Llama-3.1-8B.Q4_K_M", "chatml"),
        ("dolphin-2.9-llama3-8b", "chatml"),
        ("Mistral-7B-Instruct-v0.3.Q4_K_M", "mistral"),
        ("Mixtral-8x7B-Instruct-v0.1", "mistral"),
        ("Ministral-8B-Instruct-2410", "mistral"),
        ("Phi-3-mini-4k-instruct-q4", "phi"),
        ("Phi-3.5-mini-instruct", "phi"),
        ("phi4-mini", "phi"),
        ("my-random-model", "alpaca"),
        ("llama-30b-supercot", "alpaca"),
        ("tinyllama-1.1b", "alpaca"),
    ],
)
def test_model_name_picks_builtin(library, model_name, expected):
    assert library.for_model(model_name, None).name == expected


def test_builtin_table_order_ends_with_catch_all_alpaca(library):
    assert [library.by_name(n).name for n in BUILTIN_NAMES] == BUILTIN_NAMES
    assert library.for_model("", None).name == "alpaca"
    assert library.by_name("gemma").stop == ("<end_of_turn>",)
    assert library.by_name("llama3").stop == ("<|eot_id|>", "<|eom_id|>")
    assert library.by_name("chatml").stop == ("<|im_end|>",)
    assert library.by_name("mistral").stop == ("</s>",)
    assert library.by_name("phi").stop == ("<|end|>", "<|endoftext|>")
    assert library.by_name("alpaca").stop[0] == "\n### Instruction:"


def test_by_name_unknown_raises_key_error(library):
    with pytest.raises(KeyError):
        library.by_name("no-such-template")


def test_model_template_wins_over_table(library):
    source = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    template = library.for_model("gemma-3-270m-it-Q4_K_M", source)
    assert template == ChatTemplate("model", source, ("<|im_end|>",))


@pytest.mark.parametrize("blank", ["", "   \n"])
def test_blank_model_template_falls_back_to_table(library, blank):
    assert library.for_model("gemma-3-270m-it-Q4_K_M", blank).name == "gemma"


def test_user_table_entries_win_over_builtins(tmp_path, renderer):
    path = _write(
        tmp_path,
        """
- name: my-gemma
  pattern: 'gemma-3'
  stop: ["<eot>"]
  template: "{% for m in messages %}{{ m.content }}<eot>{% endfor %}"
- name: zephyr
  pattern: 'zephyr'
  template: "{% for m in messages %}<|{{ m.role }}|>\\n{{ m.content }}</s>\\n{% endfor %}"
""",
    )
    library = ChatTemplateLibrary(user_table=path)
    mine = library.for_model("gemma-3-270m-it-Q4_K_M", None)
    assert (mine.name, mine.stop) == ("my-gemma", ("<eot>",))
    assert renderer.render(mine, [{"role": "user", "content": "hi"}]) == "hi<eot>"
    # Built-ins still answer for names the user table does not claim.
    assert library.for_model("gemma-2-9b-it", None).name == "gemma"
    # Stop markers left out are inferred from the template.
    assert library.for_model("zephyr-7b-beta", None).stop == ("</s>",)


def test_missing_user_table_is_ignored(tmp_path):
    library = ChatTemplateLibrary(user_table=tmp_path / "absent.yaml")
    assert library.for_model("gemma-3-270m-it-Q4_K_M", None).name == "gemma"


def test_empty_user_table_is_fine(tmp_path):
    library = ChatTemplateLibrary(user_table=_write(tmp_path, "# nothing yet\n"))
    assert library.for_model("my-random-model", None).name == "alpaca"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("- name: [unclosed\n", "not valid YAML"),
        ("name: x\npattern: y\n", "expected a list"),
        ("- just a string\n", "expected a mapping"),
        ("- {name: x, pattern: 'x', template: ''}\n", "'template' must be a non-empty string"),
        ("- {name: x, template: 'hi'}\n", "'pattern' must be a non-empty string"),
        ("- {name: x, pattern: '(', template: 'hi'}\n", "not a valid regular expression"),
        ("- {name: x, pattern: 'x', template: 'hi', stop: '</s>'}\n", "'stop' must be a list"),
        ("- {name: x, pattern: 'x', template: 'hi', stops: ['</s>']}\n", "unknown keys"),
        ("- {name: x, pattern: 'x', template: '{% if %}'}\n", "syntax error at line 1"),
    ],
)
def test_malformed_user_table_raises_value_error(tmp_path, text, complaint):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match="templates.yaml") as caught:
        ChatTemplateLibrary(user_table=path)
    assert complaint in str(caught.value)


# --- stop markers ----------------------------------------------------------------------------

GEMMA_OFFICIAL = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
LLAMA3_OFFICIAL = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' "
    "+ message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
MISTRAL_OFFICIAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
PHI3_OFFICIAL = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + "
    "'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ '<|endoftext|>' }}{% endif %}"
)
QWEN_OFFICIAL_EXCERPT = (
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + "
    "'\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (GEMMA_OFFICIAL, ("<end_of_turn>",)),
        (LLAMA3_OFFICIAL, ("<|eot_id|>",)),
        (MISTRAL_OFFICIAL, ()),  # closes turns with eos_token, which the engine stops on anyway
        (PHI3_OFFICIAL, ("<|end|>", "<|endoftext|>")),
        (QWEN_OFFICIAL_EXCERPT, ("<|im_end|>",)),
        ("[INST] {{ messages[0].content }} [/INST] <|im_start|>", ()),
        ("{{ m }}</s><|eom_id|><|eot_id|>", ("<|eot_id|>", "<|eom_id|>", "</s>")),
    ],
)
def test_infer_stop_markers(source, expected):
    assert infer_stop_markers(source) == expected


# --- renderer and sandbox --------------------------------------------------------------------


def test_real_world_templates_render(renderer):
    user_only = [{"role": "user", "content": "hi"}]
    gemma = ChatTemplate("model", GEMMA_OFFICIAL, ("<end_of_turn>",))
    assert renderer.render(gemma, user_only, bos_token="<bos>") == (
        "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    )
    mistral = ChatTemplate("model", MISTRAL_OFFICIAL, ())
    assert renderer.render(mistral, user_only, bos_token="<s>", eos_token="</s>") == "<s>[INST] hi [/INST]"


def test_raise_exception_surfaces_as_chat_template_error(renderer):
    gemma = ChatTemplate("model", GEMMA_OFFICIAL, ("<end_of_turn>",))
    with pytest.raises(ChatTemplateError, match="System role not supported") as caught:
        renderer.render(gemma, CONVERSATION)
    assert caught.value.status_code == 400


def test_syntax_error_names_template_and_line(renderer):
    broken = ChatTemplate("broken", "ok\n{% for m in messages %}{{ m.content }}", ())
    with pytest.raises(ChatTemplateError, match=r"chat template 'broken' has a syntax error at line \d"):
        renderer.render(broken, CONVERSATION)


def test_runtime_error_names_template_without_quoting_messages(renderer):
    template = ChatTemplate("nosy", "line one\n{{ {}[messages[0].content].attr }}", ())
    with pytest.raises(ChatTemplateError) as caught:
        renderer.render(template, [{"role": "user", "content": "top-secret"}])
    message = str(caught.value)
    assert "'nosy'" in message and "UndefinedError" in message and "line 2" in message
    assert "top-secret" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_python_error_inside_template_becomes_chat_template_error(renderer):
    template = ChatTemplate("typed", "{{ messages[0].content + 1 }}", ())
    with pytest.raises(ChatTemplateError, match="TypeError"):
        renderer.render(template, [{"role": "user", "content": "x"}])


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ messages.__class__.__subclasses__() }}",
        "{{ messages.append({'role': 'user', 'content': 'injected'}) }}",
    ],
)
def test_sandbox_blocks_unsafe_access(renderer, source):
    with pytest.raises(ChatTemplateError, match="SecurityError"):
        renderer.render(ChatTemplate("evil", source, ()), [{"role": "user", "content": "x"}])


def test_tojson_keeps_non_ascii_and_accepts_hf_arguments(renderer):
    value = {"b": "héllo <wörld> & 'ünïcode' 日本", "a": [1, 2]}
    plain = renderer.render(ChatTemplate("j", "{{ value | tojson }}", ()), [], value=value)
    assert plain == json.dumps(value, ensure_ascii=False)
    assert "日本" in plain and "<wörld>" in plain
    shaped = renderer.render(
        ChatTemplate("j", "{{ value | tojson(indent=2, sort_keys=true, separators=(',', ': ')) }}", ()), [], value=value
    )
    assert shaped == json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, separators=(",", ": "))


def test_strftime_now(renderer):
    rendered = renderer.render(ChatTemplate("t", "{{ strftime_now('%Y-%m-%d') }}", ()), [])
    today = datetime.date.today()
    assert rendered in {(today + datetime.timedelta(days=d)).isoformat() for d in (-1, 0, 1)}


def test_variables_pass_through_and_tools_default_to_none(renderer):
    source = "{{ tools is none }}|{{ enable_thinking }}|{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}"
    rendered = renderer.render(ChatTemplate("v", source, ()), [], bos_token="<s>", eos_token="</s>", enable_thinking=False)
    assert rendered == "True|False|<s>|</s>|True"
    assert renderer.render(ChatTemplate("v", "{{ tools | length }}", ()), [], tools=[{}, {}]) == "2"


def test_undefined_variables_are_lenient_like_hf(renderer):
    source = "{% if documents is defined and documents %}docs{% endif %}{% if custom is defined %}x{% endif %}[{{ custom }}]"
    assert renderer.render(ChatTemplate("u", source, ()), []) == "[]"


def test_loopcontrols_and_generation_block(renderer):
    source = (
        "{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}"
        "{% generation %}{{ m.content }}{% endgeneration %};{% endfor %}"
    )
    assert renderer.render(ChatTemplate("g", source, ()), CONVERSATION) == "S;U1;"


def test_renderer_compiles_each_source_once(renderer, monkeypatch):
    compiled = []
    original = renderer._env.from_string

    def counting(source, *args, **kwargs):
        compiled.append(source)
        return original(source, *args, **kwargs)

    monkeypatch.setattr(renderer._env, "from_string", counting)
    first = ChatTemplate("a", "{{ messages | length }}", ())
    assert renderer.render(first, CONVERSATION) == "4"
    assert renderer.render(first, CONVERSATION[:1]) == "1"
    assert renderer.render(ChatTemplate("same-source", first.source, ()), []) == "0"
    assert compiled == [first.source]
    renderer.render(ChatTemplate("b", "other", ()), [])
    assert len(compiled) == 2


def test_renderers_do_not_share_a_cache():
    first, second = ChatTemplateRenderer(), ChatTemplateRenderer()
    first.render(ChatTemplate("a", "x", ()), [])
    assert len(first._compiled) == 1 and len(second._compiled) == 0
