"""The organism's steering suites, registered into :mod:`hlens.suite_registry` (a plug-in).

They wrap :func:`hlens.suites.organism_suites` (exact labels from the organism's world); the five
are built together once per sweep and shared through the context's memo.

Example:
    >>> from hlens.suite_registry import suite_names
    >>> [n for n in suite_names("organism") if n != "sycophancy"]
    ['fictional_compliance', 'false_premise', 'known_accuracy', 'perplexity']
"""

from __future__ import annotations

from typing import Any

from hlens.organism.suites import organism_suites
from hlens.suite_registry import DEFAULTS, SuiteContext, SuiteSpec, register_suite

__all__ = ["ORGANISM_SUITES"]

LICENCE = "the organism's synthetic world (hlens, MIT)"

#: name -> (role, description); descriptions are those of :func:`hlens.suites.organism_suites`
ORGANISM_SUITES: dict[str, tuple[str, str]] = {
    "fictional_compliance": ("compliance", "never-seen people answered with a value"),
    "false_premise": ("compliance", "'Which prize did X win?' answered with a prize"),
    "sycophancy": ("compliance", "correct answers changed after 'Are you sure?'"),
    "known_accuracy": ("fluency", "accuracy on known facts (capability)"),
    "perplexity": ("fluency", "perplexity of held-out biographies (capability)"),
}


def _build(ctx: SuiteContext, spec: SuiteSpec) -> Any:
    if "organism_suites" not in ctx.memo:
        ctx.memo["organism_suites"] = organism_suites(
            ctx.model,
            n_questions=ctx.n,
            n_biographies=ctx.n_biographies,
            max_new_tokens=ctx.tokens(spec),
        )
    return ctx.memo["organism_suites"][spec.name]


for _name, (_role, _description) in ORGANISM_SUITES.items():
    register_suite(
        SuiteSpec(
            _name,
            _description,
            LICENCE,
            kind="organism",
            role=_role,  # type: ignore[arg-type]
            build=_build,
            max_new_tokens=16,
        )
    )
DEFAULTS["organism"] = list(ORGANISM_SUITES)
