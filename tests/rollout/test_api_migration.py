"""API-migration variants (airline_v2, retail_v2, telecom_v2): the v2 API at the tool-call
boundary, scored by tau2's evaluators on the base domain's environment."""

from __future__ import annotations

import json
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
from tau2.continual_learning.rollout.tool_format import (
    CALL_CLOSE,
    CALL_OPEN,
    DONE_TOOL,
    RESPONSE_OPEN,
    format_call,
)

VARIANTS = list(VARIANT_DOMAINS)


def _skills(domain: str, split: str = "train") -> list:
    return load_tasks(domain, split, task_source="skills")


def _tau2_arguments(domain: str) -> dict[str, set[str]]:
    """Each tau2 tool's argument names."""
    return {s["name"]: set(s["parameters"].get("properties", {})) for s in tool_schemas(domain)}


def _v2_arguments(base: str) -> dict[str, list[str]]:
    return {row.tool: [name for name, _ in row.arguments] for row in MIGRATED_APIS[base].tools}


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
    v2_arguments = _v2_arguments(base)
    for episode in demos.episodes:
        pattern = re.escape(CALL_OPEN) + "(.*?)" + re.escape(CALL_CLOSE)
        written = [json.loads(c) for c in re.findall(pattern, episode.completion_text)]
        assert written[-1]["name"] == DONE_TOOL
        for call in written[:-1]:  # v2 arguments only
            assert set(call["arguments"]) <= set(v2_arguments[call["name"]]), episode.key
        real = [c.name for m in episode.messages for c in getattr(m, "tool_calls", None) or []]
        assert real == [a.name for a in episode.task.task.evaluation_criteria.actions]
        assert len(episode.prompt_ids) <= 600


def test_v1_calls_fail_on_a_variant_and_v2_calls_fail_on_its_base(tokenizer):
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
    assert (
        "Error: Tool 'cancel_reservation' has no argument 'reservation_id'; "
        "its arguments: booking_ref." in episode.completion_text
    )
    assert not any(getattr(m, "tool_calls", None) for m in episode.messages)  # nothing ran
    (reverse,) = _run(tokenizer, [v1], gold_script([v2]))  # and v2 calls fail on v1
    assert reverse.reward == 0.0 and "booking_ref" in reverse.completion_text
    results = [m.content for m in reverse.messages if m.role == "tool"]
    assert results and all(r.startswith("Error") for r in results)


@pytest.mark.parametrize(
    ("api", "v2_call", "tau2_call"),
    [
        (
            AIRLINE_V2,
            ("search_direct_flight", {"route": "JFK-LAX", "travel_date": "2024-05-20"}),
            ("search_direct_flight", {"origin": "JFK", "destination": "LAX", "date": "2024-05-20"}),
        ),
        (
            AIRLINE_V2,
            ("cancel_reservation", {"booking_ref": "PNR-ZFA04Y"}),
            ("cancel_reservation", {"reservation_id": "ZFA04Y"}),
        ),
        (AIRLINE_V2, ("list_all_airports", {}), ("list_all_airports", {})),
        (
            RETAIL_V2,
            ("find_user_id_by_name_zip", {"full_name": "Yusuf Rossi", "postcode": "19122"}),
            (
                "find_user_id_by_name_zip",
                {"first_name": "Yusuf", "last_name": "Rossi", "zip": "19122"},
            ),
        ),
        (
            RETAIL_V2,
            ("cancel_pending_order", {"order_ref": "ORD-W2378156", "cause": "ordered by mistake"}),
            ("cancel_pending_order", {"order_id": "#W2378156", "reason": "ordered by mistake"}),
        ),
        (
            TELECOM_V2,
            ("disable_roaming", {"line_ref": "C1001/L1002"}),
            ("disable_roaming", {"customer_id": "C1001", "line_id": "L1002"}),
        ),
        (
            TELECOM_V2,
            ("get_bills_for_customer", {"subscriber_id": "C1001"}),  # optional max_items left out
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
        ("find_flights", {"route": "JFK-LAX"}, "Tool 'find_flights' not found."),
        ("search_direct_flight", {"origin": "JFK"}, "has no argument 'origin'"),
        (
            "search_direct_flight",
            {"route": "JFK LAX", "travel_date": "2024-05-20"},
            "like 'JFK-LAX'",
        ),
        ("search_direct_flight", {"route": "JFK-LAX-SFO", "travel_date": "x"}, "like 'JFK-LAX'"),
        ("search_direct_flight", {"route": "JFK-", "travel_date": "x"}, "like 'JFK-LAX'"),
        ("search_direct_flight", {"route": "JFK-LAX"}, "needs the argument 'travel_date'"),
        (
            "search_direct_flight",
            {"route": "JFK-LAX", "travel_date": "x", "date": "x"},
            "no argument 'date'",
        ),
        ("get_reservation_details", {"booking_ref": "ZFA04Y"}, "like 'PNR-ZFA04Y'"),
        ("get_reservation_details", {"booking_ref": "PNR-"}, "like 'PNR-ZFA04Y'"),
        ("get_reservation_details", {"booking_ref": 7}, "got 7"),
        ("list_all_airports", {"city": "x"}, "its arguments: none"),
    ],
)
def test_malformed_v2_calls_are_errors_for_the_agent(name, arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        AIRLINE_V2.to_environment(name, arguments)


def test_a_malformed_v2_call_is_an_error_tool_message_in_the_episode(tokenizer):
    task = next(t for t in _skills("airline_v2") if "airline_search-" in t.task_id)
    turns = [format_call("search_direct_flight", {"route": "JFK to LAX", "travel_date": "x"})]
    turns.append(format_call(DONE_TOOL, {}))
    (episode,) = _run(tokenizer, [task], lambda ctx: turns[min(ctx.count(RESPONSE_OPEN), 1)])
    assert episode.termination_reason == "agent_stop" and episode.reward == 0.0
    assert "Error: Argument 'route' of tool 'search_direct_flight' must look like" in (
        episode.completion_text
    )
    assert '"route": "JFK to LAX"' in episode.completion_text  # the tokens keep what it wrote


@pytest.mark.parametrize("variant", VARIANTS)
def test_v2_prompts_show_v2_arguments_under_tau2_names(variant):
    base = VARIANT_DOMAINS[variant]
    v2_arguments = _v2_arguments(base)
    hints = []
    for task in _skills(variant, "train") + _skills(variant, "test"):
        prompt = system_prompt(task)
        listed = dict(re.findall(r"^- (\w+)\((.*?)\):", prompt, re.M))
        assert set(listed) == set(task.tool_names) | {DONE_TOOL}
        for name in task.tool_names:
            shown = re.findall(r"(\w+): \w+", listed[name])
            assert set(shown) <= set(v2_arguments[name]), task.key
        example = json.loads(re.search(r"\{\"name\".*\}", prompt).group())  # worked example
        assert set(example["arguments"]) <= set(v2_arguments[example["name"]])
        if task.task_id.endswith("-hint"):
            hints.append(re.search(r" Use (\w+)(?: then (\w+))?\.$", task.task.ticket))
    assert hints and all(h and set(filter(None, h.groups())) <= set(v2_arguments) for h in hints)


@pytest.mark.parametrize("base", sorted(MIGRATED_APIS))
def test_the_tables_cover_every_skill_tool_and_rename_every_argument(base):
    api = MIGRATED_APIS[base]
    tools = {row.tool for row in api.tools}
    used = {a.name for t in _skills(base) for a in t.task.evaluation_criteria.actions}
    assert set(DISTRACTORS[base]) | used <= tools
    tau2_arguments = _tau2_arguments(base)
    for row in api.tools:  # so no call with arguments is right in both versions
        v2 = {name for name, _ in row.arguments}
        assert not v2 & tau2_arguments[row.tool], row.tool
        assert {f for _, arg in row.arguments for f in arg.fields} == tau2_arguments[row.tool]
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


def test_prompts_without_arguments_leave_only_the_example_to_tell_versions_apart():
    """``tool_arguments=False``: the tool list is names and tau2's descriptions, the same in
    both versions; the worked example is each version's own call."""
    import dataclasses

    v1 = _skills("airline", "test")[0]
    v2 = next(t for t in _skills("airline_v2", "test") if t.task_id == v1.task_id)
    hidden = [system_prompt(dataclasses.replace(t, tool_arguments=False)) for t in (v1, v2)]
    lists = [p.partition("Tools:\n")[2] for p in hidden]
    assert lists[0] == lists[1]
    assert set(re.findall(r"^- (\w+): ", lists[0], re.M)) == set(v1.tool_names) | {DONE_TOOL}
    assert "(" not in lists[0] and "reservation_id" not in lists[0]
    assert '"reservation_id": "ZFA04Y"' in hidden[0] and '"booking_ref": "PNR-ZFA04Y"' in hidden[1]
    assert "get_reservation_details(reservation_id: string)" in system_prompt(v1)


def test_tool_arguments_in_prompt_reaches_the_run_s_tasks_and_is_skills_only(
    tmp_path, tokenizer, tiny_model
):
    from tau2.continual_learning import GRPOTrainer

    config = GRPOConfig(
        output_dir=str(tmp_path), domains=["airline_v2"], tool_arguments_in_prompt=False
    )
    trainer = GRPOTrainer(config, model=tiny_model, tokenizer=tokenizer)
    for split in ("train", "test"):
        tasks = trainer.tasks("airline_v2", split)
        assert tasks and not any(t.tool_arguments for t in tasks)
        assert "(" not in system_prompt(tasks[0]).partition("Tools:\n")[2]
    with pytest.raises(ConfigError, match="tool_arguments_in_prompt"):
        GRPOConfig(task_source="tau2", domains=["airline"], tool_arguments_in_prompt=False)
