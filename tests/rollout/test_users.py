from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from tau2.continual_learning.rollout import (
    CALL_PREFIX,
    EpisodeRunner,
    HFPolicy,
    HFUser,
    LiteLLMUser,
    get_task,
)
from tau2.continual_learning.rollout.scripted import ScriptedPolicy, gold_script


def test_airline_task_runs_to_the_end_with_the_in_process_user(
    tokenizer, tiny_model, turn_ending_model
):
    task = get_task("airline/3")
    user = HFUser(tiny_model, tokenizer, max_new_tokens=16)
    runner = EpisodeRunner(
        HFPolicy(turn_ending_model, tokenizer),
        user=user,
        max_turns=2,
        max_new_tokens_per_turn=8,
        scoring_workers=0,
        seed=1,
    )
    episodes = runner.run([task], num_generations=2)
    for episode in episodes:
        assert episode.termination_reason in {"max_turns", "max_new_tokens", "user_error"}
        assert episode.reward == 0.0 and episode.num_turns >= 1
        roles = [m.role for m in episode.messages]
        assert roles[:2] == ["assistant", "user"]  # tau2's greeting, then the simulated user
        opening = episode.messages[1].content
        assert opening and opening in tokenizer.decode(episode.prompt_ids)
        assert len(episode.completion_ids) == len(episode.env_mask) == len(episode.logprobs)


class _FakeOpenAI(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible chat endpoint: the user asks once, then stops."""

    requests: ClassVar[list[dict]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        turns = sum(1 for m in body["messages"] if m["role"] == "assistant")
        content = (
            "I want to know about my reservation, thanks."
            if turns == 0
            else "Thanks, bye! ###STOP###"
        )
        reply = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        """Keep the test output free of request logs."""


@pytest.fixture
def fake_server():
    _FakeOpenAI.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_litellm_user_against_a_local_openai_compatible_server(tokenizer, fake_server):
    task = get_task("airline/0")
    user = LiteLLMUser("hosted_vllm/fake-user", api_base=fake_server)
    policy = ScriptedPolicy(tokenizer, gold_script([task]), prefix=CALL_PREFIX)
    policy.script = lambda context: (
        '<tool_call>{"name": "respond", "arguments": {"message": "Sure, all done."}}</tool_call>'
    )
    episodes = EpisodeRunner(policy, user=user, max_turns=5, scoring_workers=0).run(
        [task], num_generations=2
    )
    for episode in episodes:
        assert episode.termination_reason == "user_stop"
        assert [m.role for m in episode.messages] == ["assistant", "user", "assistant", "user"]
        assert episode.messages[1].content == "I want to know about my reservation, thanks."
        assert episode.reward == 1.0  # airline/0 is trivial: no writes, nothing to communicate
    assert len(_FakeOpenAI.requests) == 4
    first = _FakeOpenAI.requests[0]
    assert first["model"] == "fake-user" and "<scenario>" in first["messages"][0]["content"]


def test_litellm_user_errors_end_only_that_episode(tokenizer):
    task = get_task("airline/0")
    user = LiteLLMUser(
        "hosted_vllm/fake-user",
        api_base="http://127.0.0.1:9/v1",
        llm_args={"num_retries": 0, "timeout": 2},
    )
    policy = ScriptedPolicy(tokenizer, lambda context: "unused")
    (episode,) = EpisodeRunner(policy, user=user, scoring_workers=0).run([task])
    assert episode.termination_reason == "user_error" and episode.reward == 0.0
    assert "episode_error" in episode.reward_info
