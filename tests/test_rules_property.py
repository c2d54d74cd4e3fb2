"""Random sequences of mutations against an independent reference model of the rules.

The reference keeps its own undo stack of (kind, production before, test); the engine derives
its stack from history. After every step both must agree on production, candidate, share and
running test, both must refuse the same steps, and the invariants must hold.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from engine import BeastError, Engine, Workspace
from tests.conftest import VERSIONS
from tests.helpers import assert_invariants, copy_workspace


@dataclass
class Reference:
    production: str | None = None
    candidate: str | None = None
    share: int = 0
    test: str | None = None
    names: set[str] = field(default_factory=set)
    stack: list[tuple[str, str | None, str | None]] = field(default_factory=list)

    def end_test(self) -> None:
        self.stack = [e for e in self.stack if not (e[0] == "ab" and e[2] == self.test)]
        self.candidate, self.share, self.test = None, 0, None

    def deploy(self, version: str) -> bool:
        if self.test or version == self.production:
            return False
        self.stack.append(("deploy", self.production, None))
        self.production = version
        return True

    def ab(self, version: str, share: int, name: str) -> bool:
        if self.production is None or self.test or name in self.names or version == self.production:
            return False
        self.names.add(name)
        self.stack.append(("ab", self.production, name))
        self.candidate, self.share, self.test = version, share, name
        return True

    def promote(self) -> bool:
        if not self.test:
            return False
        new = self.candidate
        self.end_test()
        self.stack.append(("promote", self.production, None))
        self.production = new
        return True

    def abort(self) -> bool:
        if not self.test:
            return False
        self.end_test()
        return True

    def rollback(self, target: str | None) -> bool:
        if self.production is None:
            return False
        if target is None:
            if not self.stack or self.stack[-1][1] is None:
                return False
            _, before, _ = self.stack.pop()
            self.end_test()
            self.production = before
            return True
        if target == self.production and not self.test:
            return False
        for depth in range(len(self.stack) - 1, -1, -1):
            if self.stack[depth][1] == target:
                del self.stack[depth:]
                self.end_test()
                self.production = target
                return True
        self.end_test()
        self.stack.append(("jump", self.production, None))
        self.production = target
        return True


class DeploymentMachine(RuleBasedStateMachine):
    template: Workspace
    root: Path
    counter = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.ws = copy_workspace(self.template, self.root / f"ws{next(self.counter)}")
        self.engine = Engine(self.ws, actor="prop")
        self.model = Reference()
        self.test_names = itertools.count()

    def teardown(self) -> None:
        self.engine.close()
        assert_invariants(self.ws)

    def attempt(self, expected: bool, call: object) -> None:
        try:
            call()  # type: ignore[operator]
            happened = True
        except BeastError:
            happened = False
        assert happened == expected

    @rule(version=st.sampled_from(VERSIONS))
    def deploy(self, version: str) -> None:
        self.attempt(self.model.deploy(version), lambda: self.engine.deploy(version=version))

    @rule(version=st.sampled_from(VERSIONS), share=st.integers(1, 99), reuse=st.booleans())
    def start_test(self, version: str, share: int, reuse: bool) -> None:
        name = "t0" if reuse else f"t{next(self.test_names) + 1}"
        ok = self.model.ab(version, share * 100, name)
        self.attempt(ok, lambda: self.engine.deploy(version=version, traffic=share, ab_test=name))

    @rule()
    def promote(self) -> None:
        test = self.model.test
        ok = self.model.promote()
        if test is not None:
            self.attempt(ok, lambda: self.engine.promote(test, force=True))

    @rule()
    def abort(self) -> None:
        test = self.model.test
        ok = self.model.abort()
        if test is not None:
            self.attempt(ok, lambda: self.engine.abort(test))

    @rule(to=st.one_of(st.none(), st.sampled_from(VERSIONS)))
    def rollback(self, to: str | None) -> None:
        self.attempt(self.model.rollback(to), lambda: self.engine.rollback(to))

    @invariant()
    def agrees_with_reference(self) -> None:
        status = self.engine.status()
        prod = [d.version for d in status.deployments if d.role == "production"]
        cand = [
            (d.version, d.traffic_bp, d.experiment)
            for d in status.deployments
            if d.role == "candidate"
        ]
        assert prod == ([self.model.production] if self.model.production else [])
        expected = [(self.model.candidate, self.model.share, self.model.test)]
        assert cand == (expected if self.model.candidate else [])
        assert sum(d.traffic_bp for d in status.deployments) in (0, 10_000)


def test_random_mutation_sequences_match_the_reference(
    _template: Workspace, tmp_path: Path
) -> None:
    DeploymentMachine.template = _template
    DeploymentMachine.root = tmp_path
    run_state_machine_as_test(
        DeploymentMachine,
        settings=settings(
            max_examples=120,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
