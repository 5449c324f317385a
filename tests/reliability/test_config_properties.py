"""Property tests (hypothesis): generated configs and `--set` strings either validate or raise a
ConfigError whose every problem names a field; never another exception (a traceback for the user)."""
from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studio.config.errors import ConfigError
from studio.config.loader import apply_overrides, validate
from studio.config.schema import SECTIONS, JobConfig

FIELDS = {name: sorted(JobConfig.model_fields[name].annotation.model_fields) for name in SECTIONS}
KEYS = [(section, key) for section, keys in FIELDS.items() for key in keys]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["", "tiny:sd15", "lora", "adamw", "cosine", "sd15", "causal_lm", "acestep", "auto", "-1",
                     "1e-4", "nan", "../../etc/passwd", "demo:images"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=6)


@st.composite
def configs(draw):
    out: dict = {}
    for section, key in draw(st.lists(st.sampled_from(KEYS), max_size=8)):
        out.setdefault(section, {})[key] = draw(values)
    if draw(st.booleans()):  # now and then a key or section that does not exist
        out.setdefault(draw(st.sampled_from([*SECTIONS, "extra"])), {})[draw(st.text(min_size=1, max_size=10))] = 1
    return out


def _assert_named(err: ConfigError, allowed_roots: set[str]) -> None:
    assert err.problems, "a ConfigError must name at least one problem"
    for field, message in err.problems:
        assert field and message
        assert field.split(".")[0] in allowed_roots, (field, message)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_generated_configs_validate_or_name_the_field(data):
    try:
        cfg = validate(data)
    except ConfigError as err:
        _assert_named(err, set(SECTIONS) | {"extra", ""} | set(data))
        return
    assert isinstance(cfg, JobConfig)
    assert math.isfinite(cfg.training.learning_rate)  # non-finite numbers never pass validation


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(KEYS), st.text(max_size=40))
def test_generated_overrides_parse_or_name_the_key(key, raw):
    item = f"{key[0]}.{key[1]}={raw}"
    try:
        data = apply_overrides({}, [item])
        validate(data)
    except ConfigError as err:
        _assert_named(err, set(SECTIONS))
