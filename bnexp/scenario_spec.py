"""A scenario's description, typed and validated: the only reader of configs/scenario/*.yaml's `scenario:` node.

A scenario file (configs/scenario/NAME.yaml, template: configs/scenario/_template.yaml) holds the run's config
(top-level keys, read by Hydra) and a `scenario:` node that says what the runs mean:

    scenario:
      name: NAME                 # = the file name and experiments/NAME.py
      claims: [C01, R1]          # the claims its runs bear on
      semantics: [keras3]        # the BN semantics it runs under
      allowed: {...}             # the run settings it accepts, checked before TensorFlow (config_check)
      description: ...           # one paragraph for the report
      figures: [...]             # figure specs (bnexp/figures.py)
      report:
        columns: [...]           # every record column its rules, figures and tables read (names or globs: m*.gap)
        metrics: [...]           # columns the summary table shows besides the rules' (other keys: read by their
                                 # own modules, e.g. conformance)
        every_backend: true      # its rules name the Keras backend they read: records on every backend are judged
                                 # (default: TensorFlow's only), and the Keras 3 per-setup table leaves it out
      claim_text: {C01: {source, text, combine, primary, split, exploratory}}
      verdicts: [...]            # the rules (grammar: bnexp/verdicts.py)

`scenarios()` loads every file once per process and checks it; a malformed node is one UserError line naming
the file, the key, the value and what is valid, raised by `bnexp list`, `run` and `sweep` before anything runs,
and by `report` before anything is computed. With `report.columns` declared, a rule, figure or table that names
a column outside it is such an error (a misspelt metric would otherwise be NaN in a verdict, or a skipped
figure), and so is a factor that is neither a setting of the scenario's config nor a declared column (checked
where the config is composed: `run`, `sweep`, `report`). The declaration sits under `report`, outside a run's
identity (bnexp.store.NOT_IDENTITY), so declaring a column re-runs nothing. Files whose name starts with `_`
(the template) are not scenarios.
"""

from __future__ import annotations

import difflib
import fnmatch
import keyword
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from bnexp import CONFIG_DIR
from bnexp.errors import UserError
from bnexp.names import SEMANTICS

SCENARIO_DIR = CONFIG_DIR / "scenario"
KEYS = ("name", "claims", "semantics", "allowed", "description", "figures", "report", "claim_text", "verdicts")
CLAIM_KEYS = ("source", "text", "combine", "primary", "split", "exploratory")
COMBINE = ("all", "any", "primary")
ROLES = ("evidence", "precondition")
RULE_KEYS = ("claim", "id", "says", "metric", "where", "contrast", "compare", "threshold", "margin", "by", "expect",
             "precondition", "precondition_arm", "baseline", "require", "reached", "role", "aspect", "min_seeds")
ALLOWED_KEYS = ("min", "max", "above", "below", "integer", "also", "multiple_of")
FIGURE_KINDS = {"heatmap": ("x",), "bars": ("x",), "lines": ("x",), "curve": ("columns",), "paired": ("metrics",),
                "marks": ("rows", "metrics")}  # kind -> its required keys (bnexp/figures.py draws them)
# Names in a metric expression that are not columns (pandas.eval's functions and literals).
EXPRESSION_WORDS = {"abs", "sqrt", "log", "exp", "sin", "cos", "True", "False", "nan", "inf"}


@dataclass(frozen=True)
class ClaimText:
    """How a claim reads in the report and how its rules combine (`claim_text`)."""

    claim: str
    scenario: str           # the file that describes it (a claim is described once)
    text: str = ""
    source: str = ""
    combine: str = "all"
    primary: str | None = None
    split: str | None = None
    exploratory: bool = False


@dataclass(frozen=True)
class Rule:
    """One verdict rule: `rule` is the mapping as written (bnexp.verdicts reads it), `label` its unique name."""

    scenario: str
    label: str              # C06/<id>, or C06.<n> numbered per claim across every scenario
    rule: dict

    @property
    def claim(self) -> str:
        return self.rule["claim"]


@dataclass(frozen=True)
class Scenario:
    name: str
    claims: tuple[str, ...]
    semantics: tuple[str, ...]
    description: str
    allowed: dict
    columns: tuple[str, ...] | None      # report.columns; None: not declared (names unchecked)
    figures: tuple[dict, ...]
    report_metrics: tuple[str, ...]
    claim_text: dict[str, ClaimText]
    rules: tuple[Rule, ...]
    node: dict = field(repr=False)        # the `scenario:` node as written (report extensions read their own keys)
    every_backend: bool = False           # report.every_backend: its records on every Keras backend are judged

    def declares(self, column: str) -> bool:
        """Is `column` one of the declared columns (a name or a glob)? Always true when none are declared."""
        return self.columns is None or column in self.columns or any(fnmatch.fnmatchcase(column, c)
                                                                     for c in self.columns)


# ---------------------------------------------------------------- loading


@lru_cache(maxsize=None)
def scenarios(folder: Path = SCENARIO_DIR) -> dict[str, Scenario]:
    """Every scenario, checked, by name (file order); loaded once per process."""
    out: dict[str, Scenario] = {}
    count: dict[str, int] = {}  # rules per claim so far: C06.1, C06.2 across files
    described: dict[str, str] = {}
    for path in sorted(folder.glob("*.yaml")):
        if path.name.startswith("_"):
            continue
        try:
            node = (yaml.load(path.read_text(), Loader=_loader()) or {}).get("scenario")
        except Exception as e:  # YAML syntax: the parser's first line says where
            raise UserError(f"{_where(path)}: cannot read it: {str(e).splitlines()[0]}") from None
        spec = parse(path, node, count)
        for claim in spec.claim_text:
            if claim in described:
                raise UserError(f"claim {claim} is described in configs/scenario/{described[claim]}.yaml and "
                                f"{path.name}; describe it once")
            described[claim] = spec.name
        out[spec.name] = spec
    for spec in out.values():
        for claim, text in spec.claim_text.items():
            if text.primary and not any(r.claim == claim and r.rule.get("id") == text.primary
                                        for s in out.values() for r in s.rules):
                raise UserError(f"{_where(spec.name)}: claim_text.{claim}.primary={text.primary!r} names no rule id "
                                f"of claim {claim}")
    return out


@lru_cache(maxsize=None)
def _loader():
    """PyYAML's C loader with OmegaConf's implicit types (1e-4 is a float, no timestamps): the same values as
    Hydra reads from the file (tests/test_scenario_spec.py checks), 20 times faster than OmegaConf.load."""
    from omegaconf._utils import get_yaml_loader

    return type("ScenarioLoader", (yaml.CSafeLoader,),
                {"yaml_implicit_resolvers": get_yaml_loader().yaml_implicit_resolvers})


def get(name: str) -> Scenario:
    """One scenario by name; UserError listing the valid names if there is none."""
    known = scenarios()
    if name not in known:
        raise UserError(f"unknown scenario {name!r}; valid: {', '.join(known)}")
    return known[name]


def nodes() -> dict[str, dict]:
    """name -> the `scenario:` node as written (for modules that read a key of their own, e.g. report.conformance)."""
    return {name: spec.node for name, spec in scenarios().items()}


def claim_texts() -> dict[str, ClaimText]:
    return {claim: text for spec in scenarios().values() for claim, text in spec.claim_text.items()}


def _where(path_or_name) -> str:
    name = Path(str(path_or_name)).stem
    return f"configs/scenario/{name}.yaml"


# ---------------------------------------------------------------- checking one file


def parse(path: Path, node, count: dict[str, int] | None = None) -> Scenario:
    """The checked Scenario of the `scenario:` node of file `path` (UserError on the first thing wrong)."""
    where = _where(path)
    if not isinstance(node, dict):
        raise UserError(f"{where}: no `scenario:` mapping (got {type(node).__name__}); "
                        f"see configs/scenario/_template.yaml")
    unknown = [k for k in node if k not in KEYS]
    if unknown:
        raise UserError(f"{where}: unknown key scenario.{unknown[0]}; valid: {', '.join(KEYS)}")
    name = node.get("name")
    if name != Path(path).stem:
        raise UserError(f"{where}: scenario.name={name!r} must be the file's name {Path(path).stem!r}")
    claims = _names(where, "claims", node.get("claims"))
    semantics = _names(where, "semantics", node.get("semantics"))
    bad = [s for s in semantics if s not in SEMANTICS]
    if bad or not semantics:
        raise UserError(f"{where}: scenario.semantics={list(semantics)!r}; give one or more of {', '.join(SEMANTICS)}")
    allowed = node.get("allowed") or {}
    _mapping(where, "allowed", allowed)
    for key, rule in allowed.items():
        check_allowed(f"{where}: scenario.allowed.{key}", rule)
    report = node.get("report") or {}
    _mapping(where, "report", report)
    columns = None if report.get("columns") is None else _names(where, "report.columns", report["columns"])
    report_metrics = _names(where, "report.metrics", report.get("metrics") or [])
    every_backend = report.get("every_backend", False)
    if not isinstance(every_backend, bool):
        raise UserError(f"{where}: scenario.report.every_backend must be true or false, got {every_backend!r}")
    figures = tuple(node.get("figures") or [])
    for spec in figures:
        check_figure(where, spec)
    claim_text = {}
    for claim, text in (node.get("claim_text") or {}).items():
        claim_text[claim] = _claim_text(where, name, claim, text)
    rules = []
    count = {} if count is None else count
    for i, rule in enumerate(node.get("verdicts") or []):
        if not isinstance(rule, dict):
            raise UserError(f"{where}: scenario.verdicts[{i}] must be a mapping (a rule), got {rule!r}")
        check_rule(rule, f"{where}: ")
        count[rule["claim"]] = count.get(rule["claim"], 0) + 1
        label = f"{rule['claim']}/{rule['id']}" if rule.get("id") else f"{rule['claim']}.{count[rule['claim']]}"
        rules.append(Rule(name, label, rule))
    labels = [r.label for r in rules]
    if len(set(labels)) != len(labels):
        twice = next(x for x in labels if labels.count(x) > 1)
        raise UserError(f"{where}: two rules are labelled {twice}; give them different ids")
    spec = Scenario(name, claims, semantics, str(node.get("description") or "").strip(), allowed, columns, figures,
                    report_metrics, claim_text, tuple(rules), node, every_backend)
    check_metrics(spec)
    return spec


def _names(where: str, key: str, value) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise UserError(f"{where}: scenario.{key} must be a list of names, got {value!r}")
    return tuple(value)


def _mapping(where: str, key: str, value) -> None:
    if not isinstance(value, dict):
        raise UserError(f"{where}: scenario.{key} must be a mapping, got {value!r}")


def _claim_text(where: str, scenario: str, claim: str, text) -> ClaimText:
    if not isinstance(text, dict):
        raise UserError(f"{where}: claim_text.{claim} must be a mapping ({', '.join(CLAIM_KEYS)}), got {text!r}")
    unknown = [k for k in text if k not in CLAIM_KEYS]
    if unknown:
        raise UserError(f"{where}: unknown key claim_text.{claim}.{unknown[0]}; valid: {', '.join(CLAIM_KEYS)}")
    combine = text.get("combine", "all")
    if combine not in COMBINE:
        raise UserError(f"{where}: claim_text.{claim}.combine={combine!r}; valid: {', '.join(COMBINE)}")
    if (combine == "primary") != bool(text.get("primary")):
        raise UserError(f"{where}: claim_text.{claim}: combine: primary and `primary: <rule id>` go together")
    return ClaimText(claim, scenario, str(text.get("text", "")), str(text.get("source", "")), combine,
                     text.get("primary"), text.get("split"), bool(text.get("exploratory", False)))


def check_allowed(name: str, rule) -> None:
    """A `scenario.allowed` entry: a list of values, a mapping of bounds, or {when: {...}, values: <entry>}."""
    if isinstance(rule, list):
        return
    if not isinstance(rule, dict):
        raise UserError(f"{name}={rule!r}: give a list of values or a mapping of {', '.join(ALLOWED_KEYS)}")
    if "when" in rule:
        if set(rule) != {"when", "values"} or not isinstance(rule["when"], dict):
            raise UserError(f"{name}: a conditional entry is {{when: {{key: value}}, values: <entry>}}, got {rule!r}")
        check_allowed(name, rule["values"])
        return
    unknown = [k for k in rule if k not in ALLOWED_KEYS]
    if unknown:
        raise UserError(f"{name}: unknown key {unknown[0]!r}; valid: {', '.join(ALLOWED_KEYS)}, or when + values")


def check_rule(rule: dict, where: str = "") -> None:
    """Raise UserError, naming the rule, on a malformed rule (before any number is computed)."""
    name = f"{where}rule {rule.get('claim')}/{rule.get('id', '?')}"
    unknown = [k for k in rule if k not in RULE_KEYS]
    if unknown:
        raise UserError(f"{name}: unknown key {unknown[0]!r}; valid: {', '.join(RULE_KEYS)}")
    for key in ("claim", "metric", "compare", "threshold"):
        if key not in rule:
            raise UserError(f"{name}: missing key {key!r}")
    if rule["compare"] not in (">", "<"):
        raise UserError(f"{name}: compare must be '>' or '<', got {rule['compare']!r}")
    if not _is_number(rule["threshold"]):
        raise UserError(f"{name}: threshold must be a number, got {rule['threshold']!r}")
    if rule.get("margin") is not None and not (_is_number(rule["margin"]) and float(rule["margin"]) > 0):
        raise UserError(f"{name}: margin must be a number > 0, got {rule['margin']!r}")
    if rule.get("where") is not None and not isinstance(rule["where"], dict):
        raise UserError(f"{name}: where must be a mapping factor -> value (or list of values), got {rule['where']!r}")
    contrast = rule.get("contrast")
    if contrast is not None and (not isinstance(contrast, dict) or set(contrast) != {"factor", "a", "b"}):
        raise UserError(f"{name}: contrast must be {{factor: F, a: value, b: value}}, got {contrast!r}")
    if rule.get("precondition_arm") not in (None, "a", "b"):
        raise UserError(f"{name}: precondition_arm must be 'a' or 'b', got {rule['precondition_arm']!r}")
    if rule.get("precondition_arm") and not (contrast and rule.get("precondition")):
        raise UserError(f"{name}: precondition_arm needs a contrast and a precondition")
    by = rule.get("by")
    if by is not None and not (isinstance(by, str) or (isinstance(by, list) and all(isinstance(b, str) for b in by))):
        raise UserError(f"{name}: by must be a factor or a list of factors, got {by!r}")
    if rule.get("expect"):
        if len(by if isinstance(by, list) else [by] if by else []) != 1:
            raise UserError(f"{name}: expect needs exactly one `by` factor")
        bad = {v for v in rule["expect"].values() if v not in ("holds", "fails")}
        if bad:
            raise UserError(f"{name}: expect values must be holds or fails, got {', '.join(map(str, bad))}")
    if rule.get("baseline") is not None and (not contrast or not isinstance(rule["baseline"], dict)
                                             or not rule["baseline"]):
        raise UserError(f"{name}: baseline needs a contrast and a non-empty mapping factor -> value")
    if rule.get("reached") and not contrast:
        raise UserError(f"{name}: reached (censoring of a contrast) needs a contrast")
    if rule.get("require") not in (None, "all"):
        raise UserError(f"{name}: require must be 'all', got {rule['require']!r}")
    if rule.get("require") and not by:
        raise UserError(f"{name}: require: all needs `by` (groups to require)")
    if rule.get("role", "evidence") not in ROLES:
        raise UserError(f"{name}: role must be one of {', '.join(ROLES)}, got {rule['role']!r}")
    if "min_seeds" in rule and not (_is_number(rule["min_seeds"]) and float(rule["min_seeds"]).is_integer()
                                    and rule["min_seeds"] >= 2):
        raise UserError(f"{name}: min_seeds must be a whole number >= 2, got {rule['min_seeds']!r}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_figure(where: str, spec) -> None:
    """One clear line for a figure spec that cannot be drawn (unknown kind, missing key)."""
    name = f"{where}: figure {spec.get('file', '?') if isinstance(spec, dict) else repr(spec)}"
    if not isinstance(spec, dict):
        raise UserError(f"{name}: a figure spec is a mapping (kind, file, ...)")
    if spec.get("kind") not in FIGURE_KINDS:
        raise UserError(f"{name}: kind={spec.get('kind')!r}; valid: {', '.join(FIGURE_KINDS)}")
    missing = [k for k in ("file",) + FIGURE_KINDS[spec["kind"]] if not spec.get(k)]
    if spec["kind"] in ("bars", "lines") and not spec.get("metrics") and not spec.get("y"):
        missing.append("metrics or y")
    if spec["kind"] == "heatmap" and not spec.get("metrics") and not (spec.get("rows") and spec.get("value")):
        missing.append("metrics or rows + value")
    if spec["kind"] == "curve" and "{}" not in str(spec.get("columns", "{}")):
        missing.append("{} in columns (where the column names carry x)")
    if missing:
        raise UserError(f"{name}: missing {', '.join(missing)}")


# ---------------------------------------------------------------- metric names


_BACKTICKED = re.compile(r"`([^`]+)`")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def expression_columns(expr: str) -> list[str]:
    """The record columns a rule's metric reads: the metric itself when it is one name, else the names in the
    pandas expression (`a.b` quotes a dotted column; functions such as abs are not columns)."""
    expr = str(expr).strip()
    if _NAME.fullmatch(expr):
        return [expr]
    names = _BACKTICKED.findall(expr)
    rest = _BACKTICKED.sub(" ", expr)
    names += [n for n in _NAME.findall(rest) if n not in EXPRESSION_WORDS and not keyword.iskeyword(n)]
    return list(dict.fromkeys(names))


def metric_uses(spec: Scenario) -> list[tuple[str, str]]:
    """(what, column) for every metric column the scenario's rules, figures and tables name."""
    uses = []
    for r in spec.rules:
        for key in ("metric", "precondition", "reached"):
            if r.rule.get(key):
                uses += [(f"rule {r.label} {key}", c) for c in expression_columns(r.rule[key])]
    for fig in spec.figures:
        what = f"figure {fig['file']}"
        uses += [(f"{what} metrics", c) for c in (fig.get("metrics") or {})]
        uses += [(f"{what} {k}", fig[k]) for k in ("y", "value") if fig.get(k)]
        if fig.get("columns"):
            uses.append((f"{what} columns", str(fig["columns"]).replace("{}", "*")))
    uses += [("report.metrics", c) for c in spec.report_metrics]
    return uses


def check_metrics(spec: Scenario) -> None:
    """Every metric a rule, figure or table names is declared (when the scenario declares its columns)."""
    if spec.columns is None:
        return
    for what, column in metric_uses(spec):
        if not spec.declares(column):
            raise UserError(f"{_where(spec.name)}: {what} names {column!r}, which scenario.report.columns does not "
                            f"declare; fix the name or declare it (declared: {', '.join(spec.columns)})")


def factor_uses(spec: Scenario) -> list[tuple[str, str]]:
    """(what, column) for every setting a rule or figure groups or selects by."""
    uses = []
    for r in spec.rules:
        rule, what = r.rule, f"rule {r.label}"
        uses += [(f"{what} where", k) for k in (rule.get("where") or {})]
        by = rule.get("by")
        uses += [(f"{what} by", b) for b in ([by] if isinstance(by, str) else by or [])]
        if rule.get("contrast"):
            uses.append((f"{what} contrast", rule["contrast"]["factor"]))
        uses += [(f"{what} baseline", k) for k in (rule.get("baseline") or {})]
    for fig in spec.figures:
        what = f"figure {fig['file']}"
        uses += [(f"{what} where", k) for k in (fig.get("where") or {})]
        for key in ("x", "hue", "panels", "rows"):
            value = fig.get(key)
            uses += [(f"{what} {key}", v) for v in ([value] if isinstance(value, str) else value or [])]
    return uses


def check_factors(spec: Scenario, settings: set[str]) -> None:
    """Every factor a rule or figure names is a setting of the scenario's config (`settings`: its flattened keys)
    or a declared column (one the run records, e.g. a label it computes). Unchecked without declared columns."""
    if spec.columns is None:
        return
    for what, column in factor_uses(spec):
        if column not in settings and not spec.declares(column):
            close = difflib.get_close_matches(column, sorted(settings), n=1, cutoff=0.8)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(f"{_where(spec.name)}: {what} names {column!r}, which is no setting of the scenario's "
                            f"config{hint} and no column in report.columns")
