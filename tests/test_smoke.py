from engine import Engine


def test_registered_template_has_four_versions(engine: Engine) -> None:
    report = engine.models()
    assert sorted(v for a in report.artifacts for v in a.versions) == [
        "v1.0",
        "v2.0",
        "v3.0",
        "v4.0",
    ]
