"""MkDocs hook: the options, ini keys, markers and rules reference, generated from the code.

Pages hold placeholders (`<!-- dbguard:options -->`, `dbguard:ini`, `dbguard:markers`,
`dbguard:rules`, `dbguard:rule-facts ID`); the tables are rendered at build time from
pytest_dbguard's own registries, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Option:
    names: tuple[str, ...]
    help: str
    metavar: str | None = None
    default: Any = None
    choices: Any = None


@dataclass
class Ini:
    name: str
    help: str
    type: str | None = None
    default: Any = None


@dataclass
class Recorder:
    """Stands in for pytest's Parser: add_options() only calls these methods."""

    options: list[Option] = field(default_factory=list)
    ini: list[Ini] = field(default_factory=list)

    def getgroup(self, name: str, description: str = "") -> Recorder:
        return self

    def addoption(self, *names: str, **attrs: Any) -> None:
        self.options.append(Option(names, attrs.get("help", ""), attrs.get("metavar"),
                                   attrs.get("default"), attrs.get("choices")))

    def addini(self, name: str, help: str, type: str | None = None,
               default: Any = None) -> None:
        self.ini.append(Ini(name, help, type, default))


def registries() -> tuple[list[Option], list[Ini], dict[str, str], dict[str, Any]]:
    """Everything the reference shows, read from the code in one place (re-point here)."""
    from pytest_dbguard import config, markers
    from pytest_dbguard.rules import builtin_registry

    recorder = Recorder()
    config.add_options(recorder)  # type: ignore[arg-type]
    # the registry a run starts from, in the order findings are listed
    rules = {spec.id: spec for spec in builtin_registry()}
    return recorder.options, recorder.ini, dict(markers.MARKERS), rules


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def options_table() -> str:
    options, _, _, _ = registries()
    rows = ["| option | meaning |", "|---|---|"]
    for option in options:
        flag = ", ".join(f"`{n}`" for n in option.names)
        if option.metavar:
            flag = flag[:-1] + f" {option.metavar}`"
        if option.choices:
            flag += " (" + ", ".join(f"`{c}`" for c in option.choices) + ")"
        rows.append(f"| {flag} | {_cell(option.help)} |")
    return "\n".join(rows)


def ini_table() -> str:
    _, ini, _, _ = registries()
    rows = ["| ini key | type | meaning |", "|---|---|---|"]
    rows += [f"| `{item.name}` | {item.type or 'string'} | {_cell(item.help)} |" for item in ini]
    return "\n".join(rows)


def markers_list() -> str:
    _, _, markers, _ = registries()
    out = []
    for name, text in markers.items():
        signature, _, meaning = text.partition(": ")
        out.append(f"- `@pytest.mark.{signature}` ({name}): {meaning}")
    return "\n".join(out)


def _when(spec: Any) -> str:
    when = "after teardown (an error of the test)" if spec.stage == "teardown" else \
        "when the test body returns (the test fails)"
    if spec.marker:
        when += f"; fires whenever `@pytest.mark.{spec.marker}` is on a test, even without " \
                f"`--dbguard`"
    return when


def rules_table(up: str = "") -> str:
    """`up` leads from the page's folder back to docs/, for the links to the rule pages."""
    _, _, _, rules = registries()
    rows = ["| rule | default under `--dbguard` | fires when |", "|---|---|---|"]
    rows += [f"| [`{rule_id}`]({up}rules/{rule_id}.md) | {_default(spec)} | "
             f"{_cell(spec.summary)} |" for rule_id, spec in rules.items()]
    return "\n".join(rows)


def _flag(spec: Any, name: str) -> str:
    flag = next((o.flag for o in spec.options if o.name == name and o.flag), None)
    return f"`{flag}`" if flag else f"`{name}`"


def _default(spec: Any) -> str:
    """A switched rule has nothing to check, so stays off, until its option names something."""
    if spec.switch is None:
        return str(spec.default_action)
    return f"off; {spec.default_action} with {_flag(spec, spec.switch)}"


def _options(spec: Any) -> str:
    return ", ".join(f"{_flag(spec, o.name)} (default `{o.default!r}`)" for o in spec.options)


def rule_facts(rule_id: str) -> str:
    _, _, _, rules = registries()
    spec = rules.get(rule_id)
    if spec is None:
        raise KeyError(f"docs name rule {rule_id!r}, which pytest_dbguard.rules does not have")
    return (f"!!! info \"`{rule_id}` at a glance\"\n"
            f"    {spec.summary[0].upper() + spec.summary[1:]}. Default action under "
            f"`--dbguard`: **{_default(spec)}**. Judged {_when(spec)}."
            + (f" Options: {_options(spec)}." if spec.options else "")
            + _STRESS.get(spec.stress, ""))


# what each stress behaviour of the registry (rules/registry.py) means, for the rule pages
_STRESS = {
    "thread-rounds": " Under `--dbguard-stress`: judged on each thread's run of the body in each "
                     "round, one finding naming the worst run "
                     "([stress mode](../guides/stress.md#budgets-n1-duplicates-and-slow-queries"
                     "-under-stress)).",
    "suspended": " Not judged under `--dbguard-stress`.",
    "on": " On for every test `--dbguard-stress` stresses, with or without `--dbguard`.",
}


PLACEHOLDERS = {
    "options": options_table,
    "ini": ini_table,
    "markers": markers_list,
}
_PLACEHOLDER = re.compile(r"<!-- dbguard:([a-z-]+)(?: ([a-z-]+))? -->")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    up = "../" * page.file.src_uri.count("/")

    def render(match: re.Match[str]) -> str:
        name, argument = match.group(1), match.group(2)
        if name == "rule-facts":
            return rule_facts(argument)
        if name == "rules":
            return rules_table(up)
        return PLACEHOLDERS[name]()

    return _PLACEHOLDER.sub(render, markdown)
