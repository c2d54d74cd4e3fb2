"""config.toml: the seed's defaults, and a clear refusal naming the bad key and value."""

from __future__ import annotations

import pytest

from engine.core.config import DEFAULT_CONFIG_TOML, Config, parse_config
from engine.core.errors import ConfigError


def test_default_file_holds_the_seed_values() -> None:
    config = parse_config(DEFAULT_CONFIG_TOML)
    assert config == Config()
    t, r = config.thresholds, config.retrain
    assert (t.accuracy_min, t.accuracy_alert) == (0.80, 0.75)
    assert (t.latency_max_ms, t.latency_alert_ms) == (100, 200)
    assert (t.error_rate_max, t.error_rate_alert) == (0.01, 0.05)
    assert (t.drift_threshold, t.tolerance_points) == (0.10, 5)
    assert (r.min_new_samples, r.interval_days, r.min_accuracy_improvement, r.auto_deploy) == (
        100,
        7,
        0.01,
        False,
    )
    m = config.monitoring
    assert (m.min_samples, m.min_labelled, m.ab_min_samples) == (30, 200, 100)


def test_partial_file_keeps_defaults_for_the_rest() -> None:
    config = parse_config("[retrain]\nmin_new_samples = 500\n[console]\ntype_to_confirm = true\n")
    assert config.retrain.min_new_samples == 500
    assert config.console.type_to_confirm and not Config().console.type_to_confirm
    assert config.thresholds == Config().thresholds


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("[thresholds]\naccuracy = { min = 1.5, alert = 0.75 }", "thresholds.accuracy.min", "1.5"),
        ("[thresholds]\nlatency_ms = { max = -1, alert = 200 }", "thresholds.latency_ms.max", "-1"),
        ("[thresholds]\ntolerance_points = 'five'", "thresholds.tolerance_points", "'five'"),
        ("[thresholds]\ndrift = { threshold = nan }", "thresholds.drift.threshold", "nan"),
        ("[retrain]\nmin_new_samples = 0", "retrain.min_new_samples", "0"),
        ("[retrain]\nmin_new_samples = 10.5", "retrain.min_new_samples", "10.5"),
        ("[retrain]\nauto_deploy = 'yes'", "retrain.auto_deploy", "'yes'"),
        ("[retrain]\ninterval_days = true", "retrain.interval_days", "True"),
        ("[registry]\nmax_artifact_mb = 0", "registry.max_artifact_mb", "0"),
        ("[monitoring]\nmin_labelled = 0", "monitoring.min_labelled", "0"),
        ("[console]\ntype_to_confirm = 1", "console.type_to_confirm", "1"),
        ("[console]\nenvironment = 'production-eu-west-primary'", "console.environment", "eu-west"),
    ],
)
def test_bad_value_is_refused_naming_key_and_value(text: str, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert key in str(caught.value) and value in str(caught.value)


def test_unknown_key_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown key retrain\.min_new_sample"):
        parse_config("[retrain]\nmin_new_sample = 100")


def test_alert_levels_must_be_worse_than_targets() -> None:
    with pytest.raises(ConfigError, match=r"thresholds\.accuracy\.alert"):
        parse_config("[thresholds]\naccuracy = { min = 0.7, alert = 0.75 }")
    with pytest.raises(ConfigError, match=r"thresholds\.latency_ms\.max"):
        parse_config("[thresholds]\nlatency_ms = { max = 300, alert = 200 }")


def test_broken_toml_is_refused() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[thresholds\n")
