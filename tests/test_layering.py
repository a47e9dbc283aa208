"""The package's layering, read off its source with `ast`: no module imports one of a higher layer, no cycles.

Every `import` and `from ... import` counts, at module level and inside functions alike (a lazy import is
still a dependency). Importing `a.b.c` also runs the packages `a` and `a.b`, so those count too. The one
cycle allowed is config <-> presets (a preset is a Config; a config may name a preset, which its gate,
config_rules, checks).
"""
from __future__ import annotations

import ast
from functools import lru_cache
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "vavae_lab"
PACKAGE = "vavae_lab"

# Lowest layer first. A module belongs to the longest prefix listed; it may import its own layer and below.
LAYERS: list[tuple[str, ...]] = [
    # the foundation: no model, no training
    ("errors", "lazy", "paths", "atomic", "choices", "stages", "toy_recipes", "typed", "device", "dist", "checkpoint",
     "weights", "config_rules", "config", "presets", "download"),
    # the paper wing: data, the two models, metrics, the latent file format, the analyses; tensors, modules and
    # plain numbers in (test_the_paper_wing_never_sees_a_config)
    WING := ("data", "tokenizer", "diffusion", "metrics", "latents.shards", "latents.stats", "latents.dataset",
             "latents.features",
             "analysis"),
    # where a Config becomes those parts: models, losses, the toy networks, the data, the scoring settings
    ("build",),
    # run-time estimates from a config and the model sizes
    ("estimate",),
    # run folders: load a tokenizer, a DiT, a latent cache; restore one from the pretrained pack
    ("runs", "pack"),
    # extraction writes a latent cache from a model (or a run folder)
    ("latents",),
    # sampling and gFID from models (or run folders)
    ("generate",),
    # the training loops
    ("train",),
    # orchestration: stage keys, the cached chain and its convergence curves, the probe, the study, the command line,
    # the tools around them
    ("keys", "pipeline", "convergence", "probe", "study", "doctor", "launch_commands", "launch", "cli", "__main__",
     ""),
]
# what the paper wing never imports, though these sit in the foundation below it: a Config is read in build.py
CONFIG_MODULES = {"config", "config_rules", "presets"}
ALLOWED_CYCLES = [{"config", "config_rules", "presets"}]


def _modules() -> dict[str, Path]:
    """Dotted module name (without the package prefix; '' for the package itself) -> file."""
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute dotted name an ImportFrom refers to, relative to `module`."""
    if node.level == 0:
        return node.module or ""
    base = f"{PACKAGE}.{module}".rstrip(".").split(".")
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@lru_cache(maxsize=None)
def _eager(path: Path) -> bool:
    """Whether a package's __init__ imports package modules when it runs (a lazy one only names them).

    The lazy-export helper itself (vavae_lab.lazy, lowest layer, no package imports) does not count.
    """
    def lazy_helper(node) -> bool:
        return isinstance(node, ast.ImportFrom) and node.module == "lazy" and node.level > 0

    return any(isinstance(node, ast.Import) and any(a.name.startswith(PACKAGE + ".") for a in node.names)
               or isinstance(node, ast.ImportFrom) and not lazy_helper(node)
               and (node.level > 0 or (node.module or "").startswith(PACKAGE))
               for node in ast.parse(path.read_text()).body)


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the package modules it imports (and the packages that importing them runs)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node)
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for full in names:
                if full != PACKAGE and not full.startswith(PACKAGE + "."):
                    continue
                rel = full[len(PACKAGE) + 1:]
                parts = rel.split(".") if rel else []
                for i in range(1, len(parts) + 1):  # a.b.c also runs a and a.b (already running if they hold `name`)
                    target = ".".join(parts[:i])
                    if target not in modules or name.startswith(target + "."):
                        continue
                    if i == len(parts) or _eager(modules[target]):  # a lazy package costs its submodules nothing
                        targets.add(target)
        targets.discard(name)
        targets.discard("")  # `from .. import dist` names a module; the package's lazy __init__ is light
        graph[name] = targets
    return graph


def _layer(module: str) -> int:
    best, rank = -1, None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (p == "" and module == "") or (p and (module == p or module.startswith(p + "."))):
                if len(p) > best:
                    best, rank = len(p), i
    if rank is None:
        raise AssertionError(f"vavae_lab.{module} is in no layer; add it to LAYERS in {__file__}")
    return rank


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    for module in _modules():
        _layer(module)


def test_no_module_imports_a_higher_layer():
    graph = _imports(_modules())
    uphill = sorted(f"vavae_lab.{m} (layer {_layer(m)}) imports vavae_lab.{t} (layer {_layer(t)})"
                    for m, targets in graph.items() for t in targets if _layer(t) > _layer(m))
    assert not uphill, "uphill imports:\n" + "\n".join(uphill)


def test_no_import_cycles_but_config_and_presets():
    cycles = [c for c in _cycles(_imports(_modules())) if c not in ALLOWED_CYCLES]
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


def test_the_checks_can_fail():
    """The graph sees function-level and relative imports, and both checks flag a planted violation."""
    graph = _imports(_modules())
    assert "latents.shards" in graph["latents.dataset"]  # relative, module level
    assert "runs" in graph["generate"]  # inside a function
    assert _layer("latents.cache") > _layer("runs") > _layer("build") > _layer("latents.stats")
    planted = {**graph, "build": graph.get("build", set()) | {"train.tokenizer"},
               "train.tokenizer": graph["train.tokenizer"] | {"build"}}
    assert any({"build", "train.tokenizer"} <= c for c in _cycles(planted))
    assert _layer("train.tokenizer") > _layer("build") > _layer("metrics.generation")
    with pytest.raises(AssertionError, match="no layer"):
        _layer("brand_new_module")


def _sees_a_config(graph: dict) -> list[str]:
    """The paper-wing modules that import a config module, as lines."""
    return sorted(f"vavae_lab.{m} imports vavae_lab.{t}" for m, targets in graph.items()
                  if _layer(m) == LAYERS.index(WING) for t in targets & CONFIG_MODULES)


def test_the_paper_wing_never_sees_a_config():
    graph = _imports(_modules())
    assert not _sees_a_config(graph), "the paper wing reads a Config:\n" + "\n".join(_sees_a_config(graph))
    planted = {**graph, "metrics.fid": graph["metrics.fid"] | {"config"}}
    assert _sees_a_config(planted) == ["vavae_lab.metrics.fid imports vavae_lab.config"]


def test_run_folder_names_live_in_runs():
    """What a run folder holds is named once (runs.WEIGHTS_FILE, HISTORY_FILE, CONFIG_FILE, METRICS_FILE)."""
    names = ('"tokenizer.pt"', '"dit.pt"', '"history.json"', '"config.yaml"', '"metrics.jsonl"')
    typed = sorted(f"{module or '__init__'}: {name}" for module, path in _modules().items() if module != "runs"
                   for name in names if name in path.read_text())
    assert not typed, "run-folder names typed outside vavae_lab/runs.py:\n" + "\n".join(typed)


def _unnamed_in_layout(readme: str) -> list[str]:
    """The library modules the README's Layout block does not name (a module file by its stem, or its package)."""
    block = readme.split("## Layout", 1)[1].split("```")[1]
    stems = {module: module.split(".")[-1] for module in _modules() if module}
    return sorted(module for module, stem in stems.items()
                  if stem != "__main__" and not re.search(rf"\b{stem}\b", block))


def test_the_readme_layout_names_every_module():
    readme = (ROOT.parent / "README.md").read_text()
    assert not _unnamed_in_layout(readme), "modules missing from the README's Layout: " + str(_unnamed_in_layout(readme))
    assert "pipeline" in _unnamed_in_layout(readme.replace("pipeline", "PIPE"))
