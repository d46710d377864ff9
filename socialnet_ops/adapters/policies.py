"""Policy checks on a Terraform plan's JSON (`terraform show -json`), with rules in Rego kept in the
repository (`infrastructure/policies/*.rego`, read from the merge request's target branch).

The engine is `regopy`, the Python binding of rego-cpp (Microsoft's C++ implementation of OPA's
Rego), evaluated in-process. Chosen over checkov, measured on the `local` stack's plan (17
resources) on this project's 2-core machine:

| | regopy 1.5 | checkov 3.3 |
| --- | --- | --- |
| installed | one wheel, no dependencies, 21 MB | ~100 packages, 192 MB (pins its own boto3) |
| one evaluation | 0.1 s import + 1.1 s (four rule sets, the 66 kB plan) | 10.4 s (a CLI run) |
| rules | ours, a few lines of Rego each, in the repository | ~1,000 built in; its own defaults flag this stack (KMS, IAM role, ...), so a list to skip |

Rego is what OPA, conftest and Atlantis's policy checks speak, so rules written here move to any of
them; checkov's rules are Python or YAML tied to checkov.

The rules: every module is a package under `socialnet.terraform` (e.g.
`socialnet.terraform.encryption`) that defines `deny`, a set of `{"address", "message"}` objects;
the package's last name is the rule set shown in the merge request note. Input is the plan JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from socialnet_ops.core.policies import (
    POLICY_FOLDER,
    POLICY_PACKAGE,
    PolicyFinding,
    PolicyVerdict,
)


class PolicyError(Exception):
    """The rules cannot be evaluated; the message names the file and the problem (one line)."""


_ERROR_MESSAGE = re.compile(r"\(errormsg \d+:(?P<message>[^)\n]*)\)")
_ERROR_PLACE = re.compile(r"\(error \d+:(?P<file>[^|\s]+)\|(?P<offset>\d+)\|")


def _place(error: str, sources: Mapping[str, str]) -> str:
    """`name.rego:line:column` of a rego-cpp error (it gives a byte offset into the module)."""
    found = _ERROR_PLACE.search(error)
    if not found or found.group("file") not in sources:
        return ""
    text = sources[found.group("file")]
    offset = min(int(found.group("offset")), len(text))
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"{found.group('file')}:{line}:{column}"


def _one_line(error: Exception, sources: Mapping[str, str], folder: str) -> str:
    text = str(error)
    message = _ERROR_MESSAGE.search(text)
    place = _place(text, sources)
    what = message.group("message").strip() if message else text.strip().splitlines()[0]
    return f"{folder}/{place or '(policies)'}: not valid Rego: {what}"


def read_policies(root: Path) -> dict[str, str]:
    """The Rego modules of a tree, by file name (sorted); an error when there are none."""
    folder = root / POLICY_FOLDER
    modules = {path.name: path.read_text() for path in sorted(folder.glob("*.rego"))}
    if not modules:
        raise PolicyError(
            f"{POLICY_FOLDER}: no Rego rules (*.rego) in the commit; a plan is not applied "
            "unchecked, so add the rules back"
        )
    return modules


def evaluate(plan: Mapping[str, Any], modules: Mapping[str, str], source: str) -> PolicyVerdict:
    """Every rule set of `modules` on `plan`; findings sorted by rule set and address."""
    from regopy import Interpreter  # a native library: loaded only where policies are checked

    interpreter = Interpreter()
    try:
        for name, text in modules.items():
            interpreter.add_module(name, text)
        # As JSON text: regopy 1.5's conversion of a Python dict leaves quotes in strings
        # unescaped, which breaks its own output (a bucket policy is a JSON string).
        interpreter.set_input_term(json.dumps(plan))
        # Only the `deny` sets: the whole packages would serialize every helper rule too.
        output = interpreter.query(
            f"findings := {{name: d | d := data.{POLICY_PACKAGE}[name].deny}}"
        )
    except Exception as error:  # regopy raises RegoError with rego-cpp's own error tree
        raise PolicyError(_one_line(error, modules, POLICY_FOLDER)) from None
    bindings = output.results[0].bindings if output.results else {}
    packages = bindings.get("findings") if isinstance(bindings, dict) else None
    rules: list[str] = []
    findings: list[PolicyFinding] = []
    for rule, denied in sorted((packages or {}).items()):
        rules.append(rule)
        for item in denied if isinstance(denied, list) else []:
            if isinstance(item, dict):
                address = str(item.get("address", "(plan)"))
                message = str(item.get("message", json.dumps(item)))
            else:
                address, message = "(plan)", str(item)
            findings.append(PolicyFinding(rule=rule, address=address, message=message))
    if not rules:
        raise PolicyError(
            f"{POLICY_FOLDER}: no rule set defines `deny` under package {POLICY_PACKAGE}.<name>"
        )
    findings.sort(key=lambda finding: (finding.rule, finding.address, finding.message))
    return PolicyVerdict(source=source, rules=rules, findings=findings)


def check_plan(plan_json: Path, tree: Path, source: str) -> PolicyVerdict:
    """The rules of `tree` (a commit's tree) on the plan JSON saved at `plan_json`."""
    try:
        plan = json.loads(plan_json.read_text())
    except (OSError, ValueError) as error:
        raise PolicyError(f"{plan_json}: cannot read the plan's JSON: {error}") from None
    return evaluate(plan, read_policies(tree), source)
