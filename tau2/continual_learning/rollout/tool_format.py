"""The one text format in which the policy sees tools and writes tool calls.

SmolLM2's chat template cannot render tools, so we render them ourselves, Hermes/Qwen style:

* the system prompt lists the tools as one JSON object per line inside ``<tools></tools>``;
* the model calls a tool by writing ``<tool_call>{"name": NAME, "arguments": {...}}</tool_call>``
  (several blocks = several calls in one turn);
* each tool result comes back in a user turn as ``<tool_response>RESULT</tool_response>``
  (one block per call, in call order).

Pseudo-tools complete the action space so that every agent turn can be a tool call:
``respond(message)`` talks to the user (user mode) and ``done()`` ends a solo episode. They are
mapped back to plain tau2 messages before scoring and never reach the environment.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
RESPONSE_OPEN = "<tool_response>"
RESPONSE_CLOSE = "</tool_response>"
CALL_PREFIX = CALL_OPEN + '{"name": "'
"""The assistant prefix that gives small models a foothold."""

RESPOND_TOOL = "respond"
DONE_TOOL = "done"
PSEUDO_TOOL_SCHEMAS: dict[str, dict[str, Any]] = {
    RESPOND_TOOL: {
        "name": RESPOND_TOOL,
        "description": "Send a message to the user.",
        "parameters": {
            "type": "object",
            "properties": {"message": {"type": "string", "description": "The message text."}},
            "required": ["message"],
        },
    },
    DONE_TOOL: {
        "name": DONE_TOOL,
        "description": "Call this when the task is complete, to end the conversation.",
        "parameters": {"type": "object", "properties": {}, "required": []},
    },
}

_BLOCK = re.compile(re.escape(CALL_OPEN) + r"(.*?)(?:" + re.escape(CALL_CLOSE) + r"|$)", re.S)


@dataclass(frozen=True)
class ParsedCall:
    """One ``<tool_call>`` block: a tool name and arguments, or the reason it is malformed."""

    name: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class ParsedTurn:
    """A model turn: its call blocks in order, and the free text outside them."""

    calls: list[ParsedCall] = field(default_factory=list)
    text: str = ""


def _parse_call(body: str) -> ParsedCall:
    """Parse the JSON inside one ``<tool_call>`` block; raises ``ValueError`` with a reason."""
    body = body.strip()
    try:
        obj, end = json.JSONDecoder().raw_decode(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON in tool call ({exc.msg} at char {exc.pos})") from None
    if body[end:].strip():
        raise ValueError(f"unexpected text after the JSON object: {body[end:].strip()[:40]!r}")
    if not isinstance(obj, dict):
        raise ValueError("a tool call must be a JSON object with 'name' and 'arguments'")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("a tool call needs a non-empty string 'name'")
    arguments = obj.get("arguments", {})
    if isinstance(arguments, str):  # some models double-encode the arguments
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            raise ValueError("'arguments' is a string that is not a JSON object") from None
    if not isinstance(arguments, dict):
        raise ValueError("'arguments' must be a JSON object")
    return ParsedCall(name=name, arguments=arguments)


def parse_turn(text: str) -> ParsedTurn:
    """Split a model turn into call blocks (valid or malformed) and free text; never raises."""
    turn = ParsedTurn()
    outside: list[str] = []
    position = 0
    for match in _BLOCK.finditer(text):
        outside.append(text[position : match.start()])
        position = match.end()
        try:
            turn.calls.append(_parse_call(match.group(1)))
        except ValueError as exc:
            turn.calls.append(ParsedCall(error=str(exc)))
    outside.append(text[position:])
    turn.text = "".join(outside).strip()
    return turn


def format_call(name: str, arguments: dict[str, Any]) -> str:
    """The text of a call in our format (used in examples and gold replays)."""
    return f"{CALL_OPEN}{json.dumps({'name': name, 'arguments': arguments})}{CALL_CLOSE}"


def shorten_tool_response(content: str, max_chars: int | None) -> str:
    """``content`` cut to about ``max_chars`` characters for the model's eyes: the head (two
    thirds) and the tail (one third) around a marker naming what was left out. Records and
    lists put their identity first and their references last (a user's reservations or
    orders), so both ends stay visible. ``None``: unchanged."""
    if max_chars is None or len(content) <= max_chars:
        return content
    head = max_chars * 2 // 3
    tail = max_chars - head
    omitted = len(content) - head - tail
    return (
        f"{content[:head]} ...[{omitted} characters omitted]... {content[-tail:] if tail else ''}"
    )


def format_tool_responses(contents: list[str], max_chars: int | None = None) -> str:
    """The user-turn text carrying tool results back to the model, each shortened to
    ``max_chars`` (:func:`shorten_tool_response`); the tau2 trajectory keeps them whole."""
    return "\n".join(
        f"{RESPONSE_OPEN}\n{shorten_tool_response(c, max_chars)}\n{RESPONSE_CLOSE}"
        for c in contents
    )


def _strip_titles(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_titles(v) for k, v in value.items() if k != "title"}
    if isinstance(value, list):
        return [_strip_titles(v) for v in value]
    return value


def compact_schema(schema: dict[str, Any], *, brief: bool = False) -> dict[str, Any]:
    """A tool spec without pydantic's ``title`` noise; ``brief`` keeps only the first
    sentence of the description and drops parameter descriptions (for short prompts)."""
    schema = _strip_titles(schema)
    description = " ".join((schema.get("description") or "").split())
    params = schema.get("parameters") or {"type": "object", "properties": {}}
    if brief:
        description = description.split(". ")[0].rstrip(".") + "."
        properties = {
            name: {k: v for k, v in spec.items() if k != "description"}
            for name, spec in params.get("properties", {}).items()
        }
        params = {**params, "properties": properties}
    return {"name": schema["name"], "description": description, "parameters": params}


def render_tools(schemas: list[dict[str, Any]], *, example: str | None = None) -> str:
    """The system-prompt section that lists the tools and explains the call format."""
    lines = "\n".join(json.dumps(compact_schema(s)) for s in schemas)
    return (
        "# Tools\n\nYou can call these functions. Their signatures are inside <tools></tools>:\n"
        f"<tools>\n{lines}\n</tools>\n\n"
        "To call a function, write a JSON object with the function name and arguments inside "
        "<tool_call></tool_call> tags, for example:\n"
        f"{example or format_call('function_name', {'argument_name': 'value'})}\n"
        "Results come back inside <tool_response></tool_response> tags."
    )


def render_signatures(schemas: list[dict[str, Any]], arguments: bool = True) -> str:
    """One line per tool, ``- name(arg: type, ...): first sentence`` (compact prompts for
    small models, which copy JSON-schema structure into their arguments otherwise);
    ``arguments=False``: ``- name: first sentence``, the arguments left to be learned."""
    lines = []
    for schema in schemas:
        spec = compact_schema(schema, brief=True)
        if not arguments:
            lines.append(f"- {spec['name']}: {spec['description']}")
            continue
        properties = spec["parameters"].get("properties", {})
        args = ", ".join(f"{name}: {p.get('type', 'any')}" for name, p in properties.items())
        lines.append(f"- {spec['name']}({args}): {spec['description']}")
    return "\n".join(lines)
