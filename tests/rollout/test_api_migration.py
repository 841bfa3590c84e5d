"""API-migration variants (airline_v2, retail_v2, telecom_v2): the v2 API at the tool-call
boundary, scored by tau2's evaluators on the base domain's environment."""

from __future__ import annotations

import pickle
import re

import pytest

from tau2.continual_learning.grpo.config import ConfigError, GRPOConfig
from tau2.continual_learning.grpo.warm_start import gold_demonstrations
from tau2.continual_learning.rollout import CALL_PREFIX, EpisodeRunner, load_tasks, tool_schemas
from tau2.continual_learning.rollout.domain_task import VARIANT_DOMAINS
from tau2.continual_learning.rollout.scripted import ScriptedPolicy, gold_script
from tau2.continual_learning.rollout.tasks import system_prompt
from tau2.continual_learning.rollout.tasks.api_migration import (
    AIRLINE_V2,
    MIGRATED_APIS,
    RETAIL_V2,
    TELECOM_V2,
    Renamed,
)
from tau2.continual_learning.rollout.tasks.skills import DISTRACTORS
from tau2.continual_learning.rollout.tool_format import DONE_TOOL, RESPONSE_OPEN, format_call

VARIANTS = list(VARIANT_DOMAINS)


def _skills(domain: str, split: str = "train") -> list:
    return load_tasks(domain, split, task_source="skills")


def _tau2_names(domain: str) -> set[str]:
    return {s["name"] for s in tool_schemas(domain)}


def _v1_names_in(text: str, domain: str) -> list[str]:
    return [n for n in _tau2_names(domain) if re.search(rf"\b{re.escape(n)}\b", text)]


def _run(tokenizer, tasks, script):
    policy = ScriptedPolicy(tokenizer, script, prefix=CALL_PREFIX)
    with EpisodeRunner(policy, max_turns=6, scoring_workers=0) as runner:
        return runner.run(tasks)


def test_variants_have_the_base_tasks_under_their_own_keys():
    for variant, base in VARIANT_DOMAINS.items():
        for split in ("train", "test"):
            tasks, base_tasks = _skills(variant, split), _skills(base, split)
            assert [t.task_id for t in tasks] == [t.task_id for t in base_tasks]
            assert all(t.key == f"{variant}/{t.task_id}" for t in tasks)
            assert {t.environment_domain for t in tasks} == {base}
            assert all(t.tool_api is MIGRATED_APIS[base] for t in tasks)
    task = _skills("airline_v2")[0]
    assert pickle.loads(pickle.dumps(task)).tool_api == task.tool_api  # trajectory buffers


@pytest.mark.parametrize("variant", VARIANTS)
def test_gold_demonstrations_are_v2_calls_that_tau2_scores_one(tokenizer, variant):
    tasks = _skills(variant)
    sample = tasks[:: len(tasks) // 10][:10]
    demos = gold_demonstrations(sample, tokenizer, max_context_tokens=4096)
    assert not demos.failed and not demos.too_long
    assert [e.key for e in demos.episodes] == [t.key for t in sample]
    base = VARIANT_DOMAINS[variant]
    v2_names = {row.name for row in MIGRATED_APIS[base].tools}
    for episode in demos.episodes:
        text = tokenizer.decode(episode.prompt_ids) + episode.completion_text
        assert not _v1_names_in(text, base), episode.key
        written = re.findall(re.escape(CALL_PREFIX) + r"(\w+)", text)
        assert set(written) - {DONE_TOOL} <= v2_names and DONE_TOOL in written
        real = [c.name for m in episode.messages for c in getattr(m, "tool_calls", None) or []]
        assert real == [a.name for a in episode.task.task.evaluation_criteria.actions]
        assert len(episode.prompt_ids) <= 600


def test_v1_calls_on_a_variant_are_unknown_tools_and_score_zero_and_the_reverse(tokenizer):
    v1 = next(
        t
        for t in _skills("airline")
        if "airline_cancel-" in t.task_id and not t.task_id.endswith("-hint")
    )
    v2 = next(t for t in _skills("airline_v2") if t.task_id == v1.task_id)
    assert v1.task.ticket == v2.task.ticket  # unhinted: the v1 gold script answers it
    (v1_episode,) = _run(tokenizer, [v1], gold_script([v1]))
    (episode,) = _run(tokenizer, [v2], gold_script([v1]))
    assert v1_episode.reward == 1.0
    assert episode.termination_reason == "agent_stop" and episode.reward == 0.0
    assert "Error: Tool 'cancel_reservation' not found." in episode.completion_text
    assert not any(getattr(m, "tool_calls", None) for m in episode.messages)  # nothing ran
    (reverse,) = _run(tokenizer, [v1], gold_script([v2]))  # and v2 calls fail on v1
    assert (
        reverse.reward == 0.0 and "Error: Tool 'void_booking' not found." in reverse.completion_text
    )


@pytest.mark.parametrize(
    ("api", "v2_call", "tau2_call"),
    [
        (
            AIRLINE_V2,
            ("find_flights", {"route": "JFK-LAX", "travel_date": "2024-05-20"}),
            ("search_direct_flight", {"origin": "JFK", "destination": "LAX", "date": "2024-05-20"}),
        ),
        (
            AIRLINE_V2,
            ("void_booking", {"booking_ref": "PNR-ZFA04Y"}),
            ("cancel_reservation", {"reservation_id": "ZFA04Y"}),
        ),
        (AIRLINE_V2, ("airport_directory", {}), ("list_all_airports", {})),
        (
            RETAIL_V2,
            ("match_account", {"full_name": "Yusuf Rossi", "postcode": "19122"}),
            (
                "find_user_id_by_name_zip",
                {"first_name": "Yusuf", "last_name": "Rossi", "zip": "19122"},
            ),
        ),
        (
            RETAIL_V2,
            ("withdraw_order", {"order_ref": "ORD-W2378156", "cause": "ordered by mistake"}),
            ("cancel_pending_order", {"order_id": "#W2378156", "reason": "ordered by mistake"}),
        ),
        (
            TELECOM_V2,
            ("roaming_off", {"line_ref": "C1001/L1002"}),
            ("disable_roaming", {"customer_id": "C1001", "line_id": "L1002"}),
        ),
        (
            TELECOM_V2,
            ("billing_history", {"subscriber_id": "C1001"}),  # optional max_items left out
            ("get_bills_for_customer", {"customer_id": "C1001"}),
        ),
    ],
)
def test_calls_round_trip_between_v2_and_tau2(api, v2_call, tau2_call):
    assert api.to_environment(*v2_call) == tau2_call
    assert api.to_agent(*tau2_call) == v2_call


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("search_direct_flight", {"origin": "JFK"}, "Tool 'search_direct_flight' not found."),
        ("find_flights", {"route": "JFK LAX", "travel_date": "2024-05-20"}, "like 'JFK-LAX'"),
        ("find_flights", {"route": "JFK-LAX-SFO", "travel_date": "x"}, "like 'JFK-LAX'"),
        ("find_flights", {"route": "JFK-", "travel_date": "x"}, "like 'JFK-LAX'"),
        ("find_flights", {"route": "JFK-LAX"}, "needs the argument 'travel_date'"),
        (
            "find_flights",
            {"route": "JFK-LAX", "travel_date": "x", "date": "x"},
            "no argument 'date'",
        ),
        ("lookup_booking", {"booking_ref": "ZFA04Y"}, "like 'PNR-ZFA04Y'"),
        ("lookup_booking", {"booking_ref": "PNR-"}, "like 'PNR-ZFA04Y'"),
        ("lookup_booking", {"booking_ref": 7}, "got 7"),
        ("airport_directory", {"city": "x"}, "its arguments: none"),
    ],
)
def test_malformed_v2_calls_are_errors_for_the_agent(name, arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        AIRLINE_V2.to_environment(name, arguments)


def test_a_malformed_v2_call_is_an_error_tool_message_in_the_episode(tokenizer):
    task = next(t for t in _skills("airline_v2") if "airline_search-" in t.task_id)
    turns = [format_call("find_flights", {"route": "JFK to LAX", "travel_date": "x"})]
    turns.append(format_call(DONE_TOOL, {}))
    (episode,) = _run(tokenizer, [task], lambda ctx: turns[min(ctx.count(RESPONSE_OPEN), 1)])
    assert episode.termination_reason == "agent_stop" and episode.reward == 0.0
    assert "Error: Argument 'route' of tool 'find_flights' must look like" in (
        episode.completion_text
    )
    assert '"route": "JFK to LAX"' in episode.completion_text  # the tokens keep what it wrote


@pytest.mark.parametrize("variant", VARIANTS)
def test_v2_prompts_and_tickets_name_only_v2_tools(variant):
    base = VARIANT_DOMAINS[variant]
    v2_names = {row.name for row in MIGRATED_APIS[base].tools} | {DONE_TOOL}
    hints = []
    for task in _skills(variant, "train") + _skills(variant, "test"):
        prompt = system_prompt(task)
        listed = set(re.findall(r"^- (\w+)\(", prompt, re.M))
        assert listed <= v2_names and len(listed) == len(task.tool_names) + 1
        assert set(re.findall(r'"name": "(\w+)"', prompt)) <= v2_names  # the worked example
        assert not _v1_names_in(prompt + task.task.ticket, base), task.key
        if task.task_id.endswith("-hint"):
            hints.append(re.search(r" Use (\w+)(?: then (\w+))?\.$", task.task.ticket))
    assert hints and all(h and set(filter(None, h.groups())) <= v2_names for h in hints)


@pytest.mark.parametrize("base", sorted(MIGRATED_APIS))
def test_the_tables_cover_every_skill_tool_with_distinct_names(base):
    api = MIGRATED_APIS[base]
    tools = {row.tool for row in api.tools}
    used = {a.name for t in _skills(base) for a in t.task.evaluation_criteria.actions}
    assert set(DISTRACTORS[base]) | used <= tools
    names = [row.name for row in api.tools]
    assert len(set(names)) == len(names) and not set(names) & _tau2_names(base)
    schemas = {s["name"]: s for s in tool_schemas(base)}
    for row in api.tools:  # every tau2 argument has exactly one v2 counterpart
        fields = [f for _, arg in row.arguments for f in arg.fields]
        assert sorted(fields) == sorted(schemas[row.tool]["parameters"].get("properties", {}))
    reshaped = [
        row for row in api.tools if any(not isinstance(a, Renamed) for _, a in row.arguments)
    ]
    assert len(reshaped) >= 2
    assert set(MIGRATED_APIS) == set(VARIANT_DOMAINS.values())


def test_variants_are_skill_domains_only():
    config = GRPOConfig(domains=["airline", "airline_v2"], task_source="skills")
    assert config.domains == ["airline", "airline_v2"]
    with pytest.raises(ConfigError, match=r"task_source='tau2' supports .*airline.*airline_v2"):
        GRPOConfig(domains=["airline_v2"], task_source="tau2")
    with pytest.raises(ValueError, match=r"no domain 'airline_v2'; its domains: airline, retail"):
        load_tasks("airline_v2", "train", task_source="tau2")
