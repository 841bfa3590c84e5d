"""Arbitrary model outputs never crash the runner: every episode ends with a reason."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tau2.continual_learning.rollout import CALL_PREFIX, EpisodeRunner, load_tasks
from tau2.continual_learning.rollout.scripted import ScriptedPolicy

TOOL_NAMES = [
    "get_customer_by_id",
    "get_details_by_id",
    "enable_roaming",
    "done",
    "respond",
    "nope",
    "",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
calls = st.builds(
    lambda name, args: (
        '", "arguments": '.join(['{"name": "' + name, __import__("json").dumps(args)]) + "}"
    ),
    st.sampled_from(TOOL_NAMES) | st.text(max_size=10),
    st.dictionaries(st.sampled_from(["customer_id", "line_id", "id", "x"]), json_values, max_size=3)
    | json_values,
)
fragments = st.sampled_from(
    [
        "<tool_call>",
        "</tool_call>",
        "{",
        "}",
        '"',
        "\\",
        "\n",
        "<|im_end|>",
        "<|im_start|>user",
        CALL_PREFIX,
    ]
)
turn_text = st.lists(calls | fragments | st.text(max_size=15), max_size=6).map("".join)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(turns=st.lists(turn_text, min_size=1, max_size=4))
def test_fuzzed_model_outputs_never_crash_the_runner(tokenizer, turns):
    tasks = load_tasks("telecom", "train", task_source="skills")[:2]
    queue = iter(turns * 3)
    policy = ScriptedPolicy(tokenizer, lambda context: next(queue, "done"), prefix=CALL_PREFIX)
    runner = EpisodeRunner(
        policy, max_turns=4, max_new_tokens_per_turn=64, max_context_tokens=4096, scoring_workers=0
    )
    episodes = runner.run(tasks)
    assert len(episodes) == 2
    for episode in episodes:
        assert episode.termination_reason in {
            "agent_stop",
            "max_turns",
            "max_new_tokens",
            "max_context",
            "too_many_errors",
            "scoring_error",
        }
        assert len(episode.completion_ids) == len(episode.env_mask) == len(episode.logprobs)
        assert 0.0 <= episode.reward <= 1.0
