"""Annotation templates: checked at config load, and rendered within a fixed size whatever the
template or the values (labels come from watched hosts and log lines)."""

from __future__ import annotations

import pytest

from daemon.alerting.templates import MAX_RENDERED, check_template, render


def test_placeholders_labels_and_unknown_names() -> None:
    values = {"mount": "/var", "value": 95.4, "labels": {"team": "ops"}}
    assert (
        render("{mount} is {value:.0f}% full ({labels[team]})", values) == "/var is 95% full (ops)"
    )
    assert render("{nobody} at {value:>6.1f}", values) == "{nobody} at   95.4"


@pytest.mark.parametrize(
    "template",
    [
        "{value:>99999999}",  # 100 MB of padding
        "{value:099999999d}",
        "{value:.99999999f}",
        "{value:>{mount}}",  # the width from a label a log line chose
        "{value:{mount}}",
    ],
)
def test_rendering_is_bounded_whatever_the_template(template: str) -> None:
    text = render(template, {"value": 7, "mount": "99999999"})
    assert len(text) <= MAX_RENDERED
    assert text == template  # refused: the template is shown as written


def test_long_values_are_cut_to_the_limit() -> None:
    text = render("{text} {text}", {"text": "x" * MAX_RENDERED})
    assert len(text) == MAX_RENDERED and text.endswith("…")


def test_attribute_access_is_never_followed() -> None:
    assert render("{value.__class__.__mro__}", {"value": 1}) == "{value.__class__.__mro__}"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{value:>999999999}", "width at most 200"),
        ("{x:099999999d}", "width at most 200"),
        ("{value:>" + "9" * 5000 + "}", "width at most 200"),
        ("{value:.999999999f}", "precision at most 50"),
        ("{value:>{mount}}", "takes a value from a field"),
        ("{value.real}", "attributes and positional fields are not allowed"),
        ("{0}", "attributes and positional fields are not allowed"),
        ("{value:?}", "is not valid"),
        ("{value", "bad template"),
    ],
)
def test_bad_templates_are_refused_with_the_reason(template: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_template(template)


def test_good_templates_pass() -> None:
    for template in ("", "{{literal}}", "{mount} {value:,.2f} {labels[a]} {text!r:>20.10}"):
        assert check_template(template) == template
