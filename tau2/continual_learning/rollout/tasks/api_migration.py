"""API-migration variants of the skill domains: ``airline_v2``, ``retail_v2``, ``telecom_v2``.

A variant runs on its tau2 domain's database, environment and evaluators, but its agent sees
another version of the API, as after a breaking API migration: the tools keep their names, and
every argument is renamed, some also re-shaped (two tau2 arguments joined into one,
``route="JFK-LAX"``; a value with another prefix, ``booking_ref="PNR-ZFA04Y"``). So a call
that is right in one version is an error in the other, and trained after its base domain, a
variant interferes with it: the same tool name now calls for other arguments, provided the
prompt does not list them (``GRPOConfig.tool_arguments_in_prompt=False``, the interference
benchmark's setting). Measured with one seed: tools renamed, or arguments listed in the prompt,
and the model tells the versions apart by reading its prompt and barely forgets
(``docs/rollout.md``, "API-migration variants").

Each domain's API is one declarative table (:data:`AIRLINE_V2`, :data:`RETAIL_V2`,
:data:`TELECOM_V2`). :class:`MigratedAPI` translates at the episode's tool-call boundary: a
v2 call becomes tau2's call before ``env.get_response`` (so the trajectory that tau2's
evaluators score holds real calls), a malformed one an error message for the agent
(``ValueError``); gold actions go the other way (demonstrations in v2 format), and tau2's
tool specs become the v2 specs of the prompt.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from tau2.continual_learning.rollout.domain_task import VARIANT_DOMAINS, base_domain
from tau2.continual_learning.rollout.environments import tool_schemas
from tau2.continual_learning.rollout.tool_format import PSEUDO_TOOL_SCHEMAS


@dataclass(frozen=True)
class Renamed:
    """A v2 argument that is a tau2 argument under another name (any JSON value)."""

    field: str

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.field,)

    def decode(self, value: Any) -> dict[str, Any]:
        return {self.field: value}

    def encode(self, real: dict[str, Any]) -> Any:
        return real[self.field]


@dataclass(frozen=True)
class Joined:
    """A v2 string argument that joins several tau2 arguments with ``separator``
    (``route="JFK-LAX"`` for ``origin="JFK", destination="LAX"``)."""

    fields: tuple[str, ...]
    separator: str
    example: str

    def decode(self, value: Any) -> dict[str, Any]:
        """The tau2 arguments; ``ValueError`` unless ``value`` has one non-empty part a field."""
        parts = value.split(self.separator) if isinstance(value, str) else []
        if len(parts) != len(self.fields) or not all(parts):
            raise _malformed(self.example, value)
        return dict(zip(self.fields, parts, strict=True))

    def encode(self, real: dict[str, Any]) -> str:
        return self.separator.join(str(real[f]) for f in self.fields)


@dataclass(frozen=True)
class Prefixed:
    """A v2 string argument whose value is a tau2 argument with ``real_prefix`` replaced by
    ``prefix`` (``booking_ref="PNR-ZFA04Y"`` for ``reservation_id="ZFA04Y"``)."""

    field: str
    prefix: str
    example: str
    real_prefix: str = ""

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.field,)

    def decode(self, value: Any) -> dict[str, Any]:
        """The tau2 argument; ``ValueError`` unless ``value`` is the prefix and more."""
        if not isinstance(value, str) or not value.startswith(self.prefix) or value == self.prefix:
            raise _malformed(self.example, value)
        return {self.field: self.real_prefix + value[len(self.prefix) :]}

    def encode(self, real: dict[str, Any]) -> str:
        value = str(real[self.field])
        if not value.startswith(self.real_prefix):
            raise ValueError(f"{self.field}={value!r} does not start with {self.real_prefix!r}")
        return self.prefix + value[len(self.real_prefix) :]


Argument = Renamed | Joined | Prefixed


def _malformed(example: str, value: Any) -> ValueError:
    return ValueError(f"must look like {example!r}, got {value!r}.")


@dataclass(frozen=True)
class MigratedTool:
    """One tool of a v2 API: the tau2 tool it calls (same name) and its v2 arguments in
    order."""

    tool: str
    arguments: tuple[tuple[str, Argument], ...]

    def required(self, schema: dict[str, Any]) -> list[str]:
        """The v2 arguments that stand for a required argument of the tau2 spec ``schema``."""
        needed = set(schema["parameters"].get("required", []))
        return [name for name, arg in self.arguments if needed & set(arg.fields)]


def migrated(tool: str, **arguments: str | Joined | Prefixed) -> MigratedTool:
    """A table row: ``migrated("calculate", formula="expression")``; a string argument is a
    plain rename of that tau2 argument."""
    return MigratedTool(
        tool, tuple((k, Renamed(v) if isinstance(v, str) else v) for k, v in arguments.items())
    )


@dataclass(frozen=True)
class MigratedAPI:
    """The v2 API of a tau2 domain (the ``ToolAPI`` of its variant's tasks): the only tools
    its agent can call, under tau2's names. ``done`` is a pseudo tool, the same in every
    API."""

    domain: str
    tools: tuple[MigratedTool, ...]

    def _row(self, tool: str) -> MigratedTool:
        """The row of the tau2 tool ``tool``."""
        for row in self.tools:
            if row.tool == tool:
                return row
        raise ValueError(f"{self.domain}'s v2 API has no counterpart of {tool!r}")

    def to_environment(self, name: str, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """tau2's call for the v2 call ``name(**arguments)``; ``ValueError`` with the agent's
        error message for an unknown tool, an unknown or missing argument (tau2's argument
        names included), or a re-shaped value that does not parse."""
        row = next((t for t in self.tools if t.tool == name), None)
        if row is None:
            raise ValueError(f"Tool '{name}' not found.")
        names = [arg_name for arg_name, _ in row.arguments]
        unknown = [a for a in arguments if a not in names]
        if unknown:
            raise ValueError(
                f"Tool '{name}' has no argument '{unknown[0]}'; its arguments: {', '.join(names) or 'none'}."
            )
        missing = [
            a for a in row.required(_tau2_schema(self.domain, row.tool)) if a not in arguments
        ]
        if missing:
            raise ValueError(f"Tool '{name}' needs the argument '{missing[0]}'.")
        real: dict[str, Any] = {}
        for arg_name, arg in row.arguments:
            if arg_name in arguments:
                try:
                    real.update(arg.decode(arguments[arg_name]))
                except ValueError as exc:
                    raise ValueError(f"Argument '{arg_name}' of tool '{name}' {exc}") from None
        return row.tool, real

    def to_agent(self, name: str, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The v2 call for tau2's call ``name(**arguments)`` (gold demonstrations)."""
        row = self._row(name)
        covered = {f for _, arg in row.arguments for f in arg.fields}
        if set(arguments) - covered:
            raise ValueError(f"v2 {row.tool!r} cannot express {sorted(set(arguments) - covered)}")
        shown = {
            arg_name: arg.encode(arguments)
            for arg_name, arg in row.arguments
            if all(f in arguments for f in arg.fields)
        }
        return row.tool, shown

    def agent_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """The v2 spec of tau2's tool spec ``schema`` (pseudo tools unchanged): renamed
        arguments; a re-shaped argument is a string described by its example, which is
        also added to the first sentence of the description (the one compact prompts show)."""
        if schema["name"] in PSEUDO_TOOL_SCHEMAS:
            return schema
        row = self._row(schema["name"])
        real = schema["parameters"].get("properties", {})
        properties: dict[str, Any] = {}
        notes: list[str] = []
        for arg_name, arg in row.arguments:
            if isinstance(arg, Renamed):
                properties[arg_name] = real[arg.field]
            else:
                properties[arg_name] = {
                    "type": "string",
                    "description": f"Such as {arg.example!r}.",
                }
                notes.append(f"{arg_name} like {arg.example!r}")
        first, _, rest = " ".join(schema.get("description", "").split()).partition(". ")
        description = first.rstrip(".") + "".join(f"; {n}" for n in notes) + "."
        return {
            "name": row.tool,
            "description": f"{description} {rest}".strip(),
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": row.required(schema),
            },
        }


@functools.cache
def _tau2_schema(domain: str, tool: str) -> dict[str, Any]:
    return next(s for s in tool_schemas(domain) if s["name"] == tool)


CALCULATE = migrated("calculate", formula="expression")
BOOKING_REF = Prefixed("reservation_id", "PNR-", example="PNR-ZFA04Y")
ORDER_REF = Prefixed("order_id", "ORD-", example="ORD-W2378156", real_prefix="#")
LINE_REF = Joined(("customer_id", "line_id"), "/", example="C1001/L1002")

AIRLINE_V2 = MigratedAPI(
    "airline",
    (
        migrated("get_user_details", member_id="user_id"),
        migrated("get_reservation_details", booking_ref=BOOKING_REF),
        migrated("get_flight_status", flight_code="flight_number", day="date"),
        migrated(
            "search_direct_flight",
            route=Joined(("origin", "destination"), "-", example="JFK-LAX"),
            travel_date="date",
        ),
        migrated("cancel_reservation", booking_ref=BOOKING_REF),
        migrated("list_all_airports"),
        CALCULATE,
    ),
)
RETAIL_V2 = MigratedAPI(
    "retail",
    (
        migrated("find_user_id_by_email", email_address="email"),
        migrated(
            "find_user_id_by_name_zip",
            full_name=Joined(("first_name", "last_name"), " ", example="Yusuf Rossi"),
            postcode="zip",
        ),
        migrated("get_order_details", order_ref=ORDER_REF),
        migrated("get_product_details", sku="product_id"),
        migrated("get_user_details", account_id="user_id"),
        migrated("cancel_pending_order", order_ref=ORDER_REF, cause="reason"),
        migrated("list_all_product_types"),
        CALCULATE,
    ),
)
TELECOM_V2 = MigratedAPI(
    "telecom",
    (
        migrated("get_customer_by_phone", msisdn="phone_number"),
        migrated("get_customer_by_id", subscriber_id="customer_id"),
        migrated("get_details_by_id", record_id="id"),
        migrated("get_data_usage", line_ref=LINE_REF),
        migrated("get_bills_for_customer", subscriber_id="customer_id", max_items="limit"),
        migrated("enable_roaming", line_ref=LINE_REF),
        migrated("disable_roaming", line_ref=LINE_REF),
        migrated("resume_line", line_ref=LINE_REF),
    ),
)
MIGRATED_APIS: dict[str, MigratedAPI] = {
    api.domain: api for api in (AIRLINE_V2, RETAIL_V2, TELECOM_V2)
}
"""The v2 API of each tau2 domain that has a variant, by tau2 domain."""


def variant_api(domain: str) -> MigratedAPI | None:
    """The API the agent of ``domain``'s tasks calls: ``None`` for a tau2 domain (tau2's own
    tools), the v2 API for an API-migration variant."""
    return MIGRATED_APIS[base_domain(domain)] if domain in VARIANT_DOMAINS else None
