"""Policy checks on a Terraform plan: what a check found, and whether the plan may be applied.

The rules are Rego modules kept in the repository (`infrastructure/policies/`, read from the
commit planned); the engine that evaluates them is `socialnet_ops/adapters/policies.py`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

POLICY_FOLDER = "infrastructure/policies"
# Every rule set is a Rego package under this one; each defines a `deny` set of findings.
POLICY_PACKAGE = "socialnet.terraform"


class PolicyFinding(BaseModel):
    model_config = ConfigDict(frozen=True)

    rule: str = Field(description="the rule set (Rego package under socialnet.terraform)")
    address: str = Field(description="the resource's address in the plan")
    message: str

    def line(self) -> str:
        return f"{self.rule}: {self.address}: {self.message}"


class PolicyVerdict(BaseModel):
    """The rule sets evaluated on one plan and what they found; any finding blocks apply."""

    model_config = ConfigDict(frozen=True)

    source: str = Field(description="where the rules came from, e.g. infrastructure/policies@sha")
    rules: list[str] = Field(description="the rule sets evaluated")
    findings: list[PolicyFinding] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.findings

    def lines(self) -> list[str]:
        return [finding.line() for finding in self.findings]

    def summary(self) -> str:
        if self.passed:
            return f"{len(self.rules)} rule sets passed ({', '.join(self.rules)})"
        count = len(self.findings)
        return f"{count} finding{'s' if count != 1 else ''} of {len(self.rules)} rule sets"
