"""The package's structure: no import cycles, one algorithm registry per wing, self-contained docs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "tau2" / "continual_learning"
PREFIX = "tau2.continual_learning"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> our modules it imports, from every import statement (top level, in
    functions, under TYPE_CHECKING alike: a cycle anywhere is a design smell)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                candidates = [f"{node.module}.{alias.name}" for alias in node.names]
                candidates.append(node.module)
            else:
                continue
            for candidate in candidates:
                if candidate.startswith(PREFIX) and candidate in modules and candidate != name:
                    targets.add(candidate)
                    break
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 40 and f"{PREFIX}.grpo.trainer" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_shared_layer_does_not_import_either_wing():
    graph = import_graph()
    shared = [
        module_name(p)
        for p in PACKAGE.glob("*.py")
        if p.name not in ("__init__.py", "continual_learning.py")  # lazy exports, user alias
    ]
    assert f"{PREFIX}.cl_algorithm" in shared
    for module in shared:
        wings = {
            t for t in graph[module] if t.startswith((f"{PREFIX}.grpo", f"{PREFIX}.supervised"))
        }
        assert not wings, f"{module} imports {wings}"


def test_only_the_grpo_rollouts_module_imports_a_sampling_engine():
    """The GRPO wing reaches the sampling engines (``rollout/engines/``) through
    ``grpo/rollouts.py`` alone; what else it needs of a model lives outside the engines
    (``model_signature.py``)."""
    graph = import_graph()
    engines = f"{PREFIX}.rollout.engines"
    importers = {
        module: sorted(t for t in targets if t == engines or t.startswith(f"{engines}."))
        for module, targets in graph.items()
        if module.startswith(f"{PREFIX}.grpo")
    }
    assert f"{engines}.hf" in graph and f"{PREFIX}.grpo.shared_prefix" in importers
    offenders = {m: t for m, t in importers.items() if t and m != f"{PREFIX}.grpo.rollouts"}
    assert not offenders, f"import the engines through grpo/rollouts.py: {offenders}"


def test_supervised_wing_does_not_import_the_grpo_wing_or_rollouts():
    graph = import_graph()
    for module, targets in graph.items():
        if module.startswith(f"{PREFIX}.supervised"):
            assert not {t for t in targets if t.startswith((f"{PREFIX}.grpo", f"{PREFIX}.rollout"))}


def test_a_supervised_name_fails_in_grpo_config_and_the_reverse():
    import tau2.continual_learning.supervised.algorithms  # noqa: F401  (registers 'er')
    from tau2.continual_learning import GRPOConfig
    from tau2.continual_learning.grpo.config import ConfigError
    from tau2.continual_learning.supervised import ContinualTrainerConfig
    from tau2.continual_learning.supervised.trainer import build_cl_algorithm

    with pytest.raises(
        ConfigError, match=r"GRPOConfig\.cl_algorithm='er'.*replay.*supervised algorithm"
    ):
        GRPOConfig(cl_algorithm="er")
    assert ContinualTrainerConfig  # the supervised wing's config builds its algorithm by name
    with pytest.raises(ValueError, match=r"'replay'.*GRPO algorithm.*GRPOTrainer"):
        build_cl_algorithm("replay", {})


DOC_FILES = [*PACKAGE.rglob("*.py"), *(REPO / "docs").glob("*.md"), REPO / "README.md"]


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_code_and_docs_refer_only_to_files_in_the_repository(path):
    text = path.read_text()
    for outside in ("DESIGN.md", "TAU2_GUIDE.md", "docs/algorithms.md"):
        assert outside not in text, f"{path} mentions {outside}, which is not in the repository"
    assert not re.search(r"\bseed 00\d\b", text), f"{path} names a seed document"
    for ref in re.findall(r"\b(docs/[\w./-]+\.md)\b", text):
        assert (REPO / ref).is_file(), f"{path} links {ref}, which does not exist"


def test_tiered_storage_stands_alone():
    graph = import_graph()
    tiered = [m for m in graph if m.startswith(f"{PREFIX}.tiered")]
    assert f"{PREFIX}.tiered.lake" in tiered
    for module in tiered:
        assert all(t.startswith(f"{PREFIX}.tiered") for t in graph[module]), module
