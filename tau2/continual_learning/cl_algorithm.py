"""The continual-learning plugin interface shared by the GRPO and supervised trainers.

A :class:`CLAlgorithm` sees the training stream through hooks (DESIGN.md section 4):

* ``pre_task_hook(trainer, domain)`` before a domain (task) starts;
* ``augment_batch(new_items, current_domain)`` turns the new items of a step into the items
  actually trained on (replay mixes old ones in). For the GRPO trainer the items are tau2
  ``Task`` objects; for the supervised trainer they are ``(inputs, targets)`` batches;
* ``extra_loss(model, batch, current_domain)`` adds a loss term (distillation, behaviour
  cloning...) or returns ``None``;
* ``post_step_hook(trainer, domain)`` after every optimisation step;
* ``post_task_hook(trainer, domain)`` after a domain has been trained and evaluated;
* ``get_statistics()`` a JSON-serialisable summary; ``state_dict()``/``load_state_dict()``
  everything needed to resume.

Algorithms register under a name with :func:`register_cl_algorithm` so that configs can say
``cl_algorithm="replay"``. The trainer attaches an instance with :meth:`CLAlgorithm.attach`,
which sets ``self._trainer``.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T", bound=type["CLAlgorithm"])

_REGISTRY: dict[str, type[CLAlgorithm]] = {}


class CLAlgorithm:
    """Base class: every hook is a no-op, so subclasses override only what they need."""

    name: str = "base"

    def __init__(self) -> None:
        self._trainer: Any = None

    # -- lifecycle ---------------------------------------------------------------------------
    def attach(self, trainer: Any) -> None:
        """Called by a trainer when this instance becomes its algorithm."""
        self._trainer = trainer

    def pre_task_hook(self, trainer: Any, domain: str) -> None:
        """Before training on ``domain`` starts."""

    def augment_batch(self, new_tasks: list[Any], current_domain: str) -> list[Any]:
        """Items to train on this step; the default trains on the new items only."""
        return list(new_tasks)

    def num_replay_slots(self, batch_size: int) -> int:
        """How many of a step's ``batch_size`` task groups are reserved for replay: by default
        ``replay_ratio * batch_size`` rounded half up (so 0.25 of 2 groups is 1, not Python's
        banker's-rounded 0); 0 for algorithms without a ratio."""
        return math.floor(float(getattr(self, "replay_ratio", 0.0)) * batch_size + 0.5)

    def extra_loss(self, model: Any, batch: Any, current_domain: str) -> Any | None:
        """An additional loss tensor for this step, or ``None``."""
        return None

    def post_step_hook(self, trainer: Any, domain: str) -> None:
        """After each optimisation step on ``domain``."""

    def post_task_hook(self, trainer: Any, domain: str) -> None:
        """After ``domain`` has been trained and every domain evaluated."""

    # -- reporting and resume ----------------------------------------------------------------
    def get_statistics(self) -> dict[str, Any]:
        """A JSON-serialisable summary of what the algorithm did."""
        return {"algorithm": self.name}

    def state_dict(self) -> dict[str, Any]:
        """Picklable state for checkpoints; by default every public and private attribute
        except the trainer reference."""
        return {k: copy.deepcopy(v) for k, v in vars(self).items() if k != "_trainer"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        for key, value in state.items():
            setattr(self, key, copy.deepcopy(value))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def register_cl_algorithm(name: str) -> Callable[[T], T]:
    """Class decorator registering a :class:`CLAlgorithm` under ``name``."""

    def decorator(cls: T) -> T:
        if not (inspect.isclass(cls) and issubclass(cls, CLAlgorithm)):
            raise TypeError(f"{cls!r} is not a CLAlgorithm subclass")
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"CL algorithm name {name!r} is already registered by {existing.__name__}"
            )
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return decorator


def available_cl_algorithms() -> list[str]:
    """Registered algorithm names, sorted."""
    return sorted(_REGISTRY)


def get_cl_algorithm_class(name: str) -> type[CLAlgorithm]:
    """The class registered as ``name``; unknown names list the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"Unknown cl_algorithm {name!r}; registered: {', '.join(available_cl_algorithms())}"
        ) from None
