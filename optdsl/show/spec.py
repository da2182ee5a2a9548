"""A spec for `optdsl show` and `optdsl docs`: found by shipped name or path, compiled stage by
stage (the IR after each pass is what `--ir` prints)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..build import spec_files
from ..check import check
from ..compose import expand
from ..ir import Program, format_program
from ..lower import lower
from ..parse import parse
from ..passes import PIPELINE, fold_constants


class SpecNotFound(LookupError):
    pass


def _key(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def find_spec(name_or_path: str) -> Path:
    """A path to a .opt file, or a shipped spec's name (`adam`, `Adam`, `funnelled_sgdm`, `FunnelledSGDM`)."""
    path = Path(name_or_path)
    if path.suffix == ".opt" or path.exists() or "/" in name_or_path:
        return path
    for candidate in spec_files():
        if _key(candidate.stem) == _key(name_or_path):
            return candidate
    names = ", ".join(p.stem for p in spec_files())
    raise SpecNotFound(f"no shipped spec {name_or_path!r} and no such file; shipped: {names}")


@dataclass(frozen=True)
class Stages:
    source: str
    file: str
    lowered: Program
    passes: tuple[tuple[str, Program], ...]   # (pass name, the program after it), in pipeline order

    @property
    def program(self) -> Program:
        """After every pass (what the planner and the emitters take)."""
        return self.passes[-1][1] if self.passes else self.lowered

    @property
    def math(self) -> Program:
        """Folded, reductions still inline: the program the math is rendered from."""
        return fold_constants(self.lowered)


def compile_stages(source: str, file: str, base: Path | None = None) -> Stages:
    """Raises CompileError (positioned diagnostics) on a bad spec, as `optdsl check` does. A
    composition is expanded first (its specs found from `base`); `Stages.source` is then its text."""
    source, file = expand(source, file, base)
    lowered = lower(check(parse(source, file)))
    passes, p = [], lowered
    for step in PIPELINE:
        p = step(p)
        passes.append((step.__name__, p))
    return Stages(source, file, lowered, tuple(passes))


def format_stages(stages: Stages) -> str:
    """The IR after lowering, after each pass, and as each backend's plan runs it."""
    from ..plan import BACKENDS, make_plan
    parts = [("lower", stages.lowered)] + list(stages.passes)
    parts += [(f"plan ({backend}: hoist_host)", make_plan(stages.program, backend).program)
              for backend, (hoist, _, _) in BACKENDS.items() if hoist is not None]
    return "\n\n".join(f"== {name} ==\n{format_program(p)}" for name, p in parts)
