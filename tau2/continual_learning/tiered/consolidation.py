"""The consolidation schedule: K independent agents, one big agent, one lake.

Phases alternate, starting with an independent one:

1. **Independent** (``phase_steps`` environment steps per agent): each of the K agents acts in
   its own environment, feeds its pond (which pours into the lake) and learns from its pond at
   ``updates_per_step`` gradient updates per step once the pond holds ``learning_starts``.
2. **Consolidation**: the ponds pour their rest into the lake; the big pond is filled
   uniformly from the lake; the big agent's epsilon is reset and it does
   ``consolidation_updates`` gradient updates on the big pond, acting in its own environment
   for one step every ``replay_ratio`` updates when it has one (it learns offline otherwise);
   then every small agent is cloned from it and its epsilon reset.

A checkpoint is written after every phase; ``resume`` continues from the newest one, rolling
the lake back to its size at that checkpoint, so a run interrupted anywhere (a break, a kill)
continues as if it had not been. Metrics go to ``logging`` and a JSON-lines file, with the
global frame count (all agents' environment frames) as their step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from tau2.continual_learning.tiered import checkpoint
from tau2.continual_learning.tiered.exploration import EpsilonSchedule
from tau2.continual_learning.tiered.lake import Lake
from tau2.continual_learning.tiered.metrics import MetricsLog
from tau2.continual_learning.tiered.pond import Pond

logger = logging.getLogger(__name__)


class Agent(Protocol):
    """A learner the schedule can train, clone and checkpoint."""

    epsilon: EpsilonSchedule

    def learn(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One gradient update on ``batch``; returns scalar metrics (e.g. ``loss``)."""
        ...

    def clone_from(self, other: Agent) -> None:
        """Copy ``other``'s learnt state (weights, target network, optimizer), not its RNG."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@dataclass
class StepResult:
    """What one environment step cost and finished."""

    frames: int
    episode_returns: list[float] = field(default_factory=list)


class Actor(Protocol):
    """One environment: steps it with an agent's policy and adds the transition to a pond."""

    def step(self, agent: Agent, pond: Pond) -> StepResult:
        """Act once (exploring with ``agent.epsilon``), add the transition to ``pond``."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@dataclass
class ScheduleConfig:
    """Settings of a ``ConsolidationSchedule`` (see the module docstring for the phases)."""

    total_frames: int
    phase_steps: int = 500
    consolidation_updates: int = 100
    replay_ratio: float | None = None
    updates_per_step: float = 0.25
    learning_starts: int = 1000
    batch_size: int = 32
    big_batch_size: int | None = None
    big_pond_fill: int | None = None  # default: min(big pond capacity, lake size)
    epsilon_reset: float | None = None
    checkpoint_dir: str | None = None
    checkpoint_ponds: bool = True
    keep_checkpoints: int | None = None
    metrics_path: str | None = None
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.total_frames <= 0 or self.phase_steps <= 0:
            raise ValueError("total_frames and phase_steps must be positive")
        if self.consolidation_updates < 0 or self.updates_per_step < 0:
            raise ValueError("consolidation_updates and updates_per_step must be >= 0")
        if self.replay_ratio is not None and self.replay_ratio <= 0:
            raise ValueError(f"replay_ratio must be positive or None, got {self.replay_ratio}")


class ConsolidationSchedule:
    """Runs independent and consolidation phases until ``total_frames`` (see module doc)."""

    def __init__(
        self,
        config: ScheduleConfig,
        *,
        agents: Sequence[Agent],
        actors: Sequence[Actor],
        ponds: Sequence[Pond],
        big_agent: Agent,
        big_pond: Pond,
        lake: Lake,
        big_actor: Actor | None = None,
        evaluate: Callable[[Agent], dict[str, float]] | None = None,
    ) -> None:
        if not len(agents) == len(actors) == len(ponds) > 0:
            raise ValueError("need as many actors and ponds as agents, and at least one agent")
        if any(p.lake is not lake for p in ponds):
            raise ValueError("every small pond must pour into the schedule's lake")
        if config.replay_ratio is not None and big_actor is None:
            raise ValueError("replay_ratio needs a big_actor to act; use None to learn offline")
        self.config = config
        self.agents = list(agents)
        self.actors = list(actors)
        self.ponds = list(ponds)
        self.big_agent = big_agent
        self.big_pond = big_pond
        self.big_actor = big_actor
        self.lake = lake
        self.evaluate = evaluate
        self.metrics = MetricsLog(config.metrics_path)
        self.checkpoint_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
        self.generator = torch.Generator().manual_seed(config.seed)
        self.phase = 0
        self.frames = 0
        self._credits = [0.0] * len(self.agents)
        self._progress: tqdm | None = None

    @property
    def next_phase(self) -> str:
        """``independent`` or ``consolidation``."""
        return "independent" if self.phase % 2 == 0 else "consolidation"

    @property
    def done(self) -> bool:
        """All frames spent, and the last independent phase consolidated."""
        return self.frames >= self.config.total_frames and self.next_phase == "independent"

    def run(self, max_phases: int | None = None) -> list[dict[str, Any]]:
        """Run phases until done (or ``max_phases`` more of them); return their records."""
        records = []
        self._progress = tqdm(
            total=self.config.total_frames,
            initial=min(self.frames, self.config.total_frames),
            unit="frame",
            disable=not self.config.progress,
        )
        try:
            while not self.done and (max_phases is None or len(records) < max_phases):
                if self.next_phase == "independent":
                    records.append(self.independent_phase())
                else:
                    records.append(self.consolidate())
                self.save_checkpoint()
        finally:
            self._progress.close()
            self._progress = None
        return records

    def _count_frames(self, frames: int) -> None:
        self.frames += frames
        if self._progress is not None:
            self._progress.update(frames)

    def independent_phase(self) -> dict[str, Any]:
        """K agents act and learn on their own ponds for ``phase_steps`` steps each."""
        cfg = self.config
        start, frames0 = time.perf_counter(), self.frames
        returns: list[list[float]] = [[] for _ in self.agents]
        losses: list[float] = []
        for _ in range(cfg.phase_steps):
            for k, (agent, actor, pond) in enumerate(
                zip(self.agents, self.actors, self.ponds, strict=True)
            ):
                result = actor.step(agent, pond)
                agent.epsilon.step()
                self._count_frames(result.frames)
                returns[k].extend(result.episode_returns)
                if len(pond) < cfg.learning_starts:
                    continue
                self._credits[k] += cfg.updates_per_step
                while self._credits[k] >= 1.0:
                    self._credits[k] -= 1.0
                    learnt = agent.learn(pond.sample(cfg.batch_size, self.generator))
                    if "loss" in learnt:
                        losses.append(learnt["loss"])
        for pond in self.ponds:
            pond.pour()
        self.phase += 1
        finished = [r for rs in returns for r in rs]
        per_agent = {f"return_agent{k}": _mean(rs) for k, rs in enumerate(returns)}
        return self.metrics.log(
            self.frames,
            self.phase,
            kind="independent",
            episodes=len(finished),
            return_mean=_mean(finished),
            **per_agent,
            loss=_mean(losses),
            epsilon=self.agents[0].epsilon.value(),
            lake=len(self.lake),
            fps=(self.frames - frames0) / max(time.perf_counter() - start, 1e-9),
        )

    def consolidate(self) -> dict[str, Any]:
        """Fill the big pond from the lake, train the big agent, clone it into the K agents."""
        cfg = self.config
        start = time.perf_counter()
        for pond in self.ponds:
            pond.pour()
        fill = cfg.big_pond_fill or min(self.big_pond.capacity, len(self.lake))
        filled = self.big_pond.fill_from(self.lake, fill, self.generator)
        big = self.big_agent
        big.epsilon.reset(cfg.epsilon_reset)
        losses: list[float] = []
        returns: list[float] = []
        credit = 0.0
        for _ in range(cfg.consolidation_updates):
            if self.big_actor is not None and cfg.replay_ratio is not None:
                credit -= 1.0
                while credit < 0.0:  # one environment step per replay_ratio updates
                    credit += cfg.replay_ratio
                    result = self.big_actor.step(big, self.big_pond)
                    big.epsilon.step()
                    self._count_frames(result.frames)
                    returns.extend(result.episode_returns)
            batch = self.big_pond.sample(cfg.big_batch_size or cfg.batch_size, self.generator)
            learnt = big.learn(batch)
            if "loss" in learnt:
                losses.append(learnt["loss"])
        if self.big_pond.lake is not None:
            self.big_pond.pour()
        for agent in self.agents:
            agent.clone_from(big)
            agent.epsilon.reset(cfg.epsilon_reset)
        self._credits = [0.0] * len(self.agents)
        self.phase += 1
        evaluation = self.evaluate(big) if self.evaluate is not None else {}
        return self.metrics.log(
            self.frames,
            self.phase,
            kind="consolidation",
            filled=filled,
            updates=cfg.consolidation_updates,
            loss=_mean(losses),
            big_episodes=len(returns),
            big_return_mean=_mean(returns),
            lake=len(self.lake),
            seconds=time.perf_counter() - start,
            **evaluation,
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, as plain containers of tensors and numbers."""
        keep_ponds = self.config.checkpoint_ponds
        return {
            "config": asdict(self.config),
            "phase": self.phase,
            "frames": self.frames,
            "credits": list(self._credits),
            "generator": self.generator.get_state(),
            "lake_count": len(self.lake),
            "agents": [a.state_dict() for a in self.agents],
            "actors": [a.state_dict() for a in self.actors],
            "big_agent": self.big_agent.state_dict(),
            "big_actor": self.big_actor.state_dict() if self.big_actor is not None else None,
            "ponds": [p.state_dict() for p in self.ponds] if keep_ponds else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict()``; the lake is rolled back to its size at that point."""
        self.phase, self.frames = state["phase"], state["frames"]
        self._credits = list(state["credits"])
        self.generator.set_state(state["generator"])
        if len(self.lake) < state["lake_count"]:
            raise RuntimeError(
                f"the lake holds {len(self.lake)} transitions, the checkpoint "
                f"expects {state['lake_count']}: is it the same lake?"
            )
        self.lake.truncate(state["lake_count"])
        for agent, s in zip(self.agents, state["agents"], strict=True):
            agent.load_state_dict(s)
        for actor, s in zip(self.actors, state["actors"], strict=True):
            actor.load_state_dict(s)
        self.big_agent.load_state_dict(state["big_agent"])
        if self.big_actor is not None and state["big_actor"] is not None:
            self.big_actor.load_state_dict(state["big_actor"])
        if state["ponds"] is not None:
            for pond, s in zip(self.ponds, state["ponds"], strict=True):
                pond.load_state_dict(s)
        self.metrics.rewind(self.phase)

    def save_checkpoint(self) -> Path | None:
        """Write the checkpoint of the phases completed so far (atomic; ``None`` if no dir)."""
        if self.checkpoint_dir is None:
            return None
        path = checkpoint.checkpoint_path(self.checkpoint_dir, self.phase)
        checkpoint.save_atomic(self.state_dict(), path)
        checkpoint.prune(self.checkpoint_dir, self.config.keep_checkpoints)
        logger.info("checkpoint %s (frames %d)", path, self.frames)
        return path

    def resume(self, path: str | Path | None = None) -> bool:
        """Load ``path``, or the newest checkpoint in the checkpoint dir; False if none."""
        if path is None:
            found = checkpoint.list_checkpoints(self.checkpoint_dir) if self.checkpoint_dir else []
            if not found:
                return False
            path = found[-1]
        self.load_state_dict(checkpoint.load(Path(path)))
        logger.info("resumed from %s at phase %d, frames %d", path, self.phase, self.frames)
        return True


def _mean(values: Sequence[float]) -> float | None:
    """Mean, or None (JSON null) when there is nothing to average."""
    return sum(values) / len(values) if values else None
