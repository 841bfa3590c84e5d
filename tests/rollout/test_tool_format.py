from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tau2.continual_learning.rollout.tool_format import (
    CALL_PREFIX,
    format_call,
    parse_turn,
    render_signatures,
    render_tools,
)


def test_parse_single_call():
    turn = parse_turn(
        '<tool_call>{"name": "get_user_details", "arguments": {"user_id": "u1"}}</tool_call>'
    )
    assert [(c.name, c.arguments, c.error) for c in turn.calls] == [
        ("get_user_details", {"user_id": "u1"}, None)
    ]
    assert turn.text == ""


def test_parse_several_calls_text_and_unclosed_block():
    text = 'Let me check.<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b", "arguments": "{\\"x\\": 1}"}'
    turn = parse_turn(text)
    assert [(c.name, c.arguments) for c in turn.calls] == [("a", {}), ("b", {"x": 1})]
    assert turn.text == "Let me check."


def test_malformed_calls_carry_a_reason():
    cases = {
        "<tool_call>{not json</tool_call>": "invalid JSON",
        '<tool_call>{"name": "a"}} extra</tool_call>': "unexpected text",
        "<tool_call>[1, 2]</tool_call>": "JSON object",
        '<tool_call>{"arguments": {}}</tool_call>': "non-empty string 'name'",
        '<tool_call>{"name": "a", "arguments": [1]}</tool_call>': "'arguments' must be a JSON object",
    }
    for text, reason in cases.items():
        (call,) = parse_turn(text).calls
        assert call.error is not None and reason in call.error
    assert parse_turn("just text").calls == []


def test_format_call_round_trips_and_starts_with_the_prefix():
    text = format_call("cancel_reservation", {"reservation_id": "ABC123"})
    assert text.startswith(CALL_PREFIX)
    (call,) = parse_turn(text).calls
    assert (call.name, call.arguments) == ("cancel_reservation", {"reservation_id": "ABC123"})


def test_tool_renderings_list_every_schema_once():
    schemas = [
        {
            "name": "f",
            "description": "Does f. More text.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "string", "title": "A", "description": "x"}},
            },
        }
    ]
    full = render_tools(schemas)
    line = next(ln for ln in full.splitlines() if ln.startswith('{"name"'))
    assert json.loads(line)["name"] == "f" and "title" not in line and "More text" in line
    assert render_signatures(schemas) == "- f(a: string): Does f."


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [*'<>/{}[]":,\\ abcnrt_01', "<tool_call>", "</tool_call>", '"name"', '"arguments"']
        ),
        max_size=60,
    ).map("".join)
)
def test_parse_turn_never_raises(text):
    turn = parse_turn(text)
    for call in turn.calls:
        assert (call.error is None) == bool(call.name)
