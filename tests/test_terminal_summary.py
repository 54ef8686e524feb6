"""The terminal section fits a screen: top places per warning rule, everything with -v."""

from __future__ import annotations

SERVICES = '''
from shop.models import Tag


def same_tag_thrice():
    return Tag.objects.get(name="t").pk, Tag.objects.get(name="t").pk, Tag.objects.get(name="t").pk


def lookup_a():
    return [Tag.objects.filter(name="a").count() for _ in range(3)]


def lookup_b():
    return [Tag.objects.filter(name="b").exists() for _ in range(3)]


def lookup_c():
    return [list(Tag.objects.filter(name="c")) for _ in range(3)]


def lookup_d():
    return [Tag.objects.filter(name="d").first() for _ in range(3)]
'''

TESTS = '''
import pytest
from shop import services
from shop.models import Tag


@pytest.mark.parametrize("n", range(30))
@pytest.mark.django_db
def test_many(n):
    Tag.objects.create(name="t")
    services.same_tag_thrice()
    services.lookup_a()
    services.lookup_b()
    services.lookup_c()
    services.lookup_d()
'''


def _section(out: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "= dbguard =" in line) + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("="))
    return lines[start:end]


def test_summary_is_short_and_rolls_up_one_site_across_tests(djproject):
    djproject.write("shop/services.py", SERVICES)
    djproject.write_test(TESTS)
    result = djproject.run("--dbguard", "-p", "no:randomly")
    result.assert_outcomes(passed=30)
    out = result.stdout.str()
    section = _section(out)
    assert len(section) <= 40, "\n".join(section)
    assert "    duplicate: 150 warn" in section
    # one entry per place, with the number of other tests that reached it
    assert any(line.startswith("    test_shop.py::test_many[0] (and 29 more tests): [duplicate]")
               for line in section)
    assert "    ... [duplicate] 2 more places in 30 tests" in section
    assert any(line.startswith("  every warning: -v or --dbguard-verbose") for line in section)
    # three calls on one line: one location, counted once
    assert ("with the same parameters at shop/services.py:6; run it once" in out)
    assert "services.py:6 (" not in out


def test_verbose_lists_every_warning(djproject):
    djproject.write("shop/services.py", SERVICES)
    djproject.write_test(TESTS)
    for flag in ("--dbguard-verbose", "-v"):
        result = djproject.run("--dbguard", "-p", "no:randomly", flag)
        section = _section(result.stdout.str())
        listed = [line for line in section if line.startswith("    test_shop.py::test_many[")]
        assert len(listed) == 150
        assert not any(line.startswith("  every warning:") for line in section)


def test_a_few_warnings_are_shown_in_full(djproject):
    djproject.write("shop/services.py", SERVICES)
    djproject.write_test(TESTS.replace("range(30)", "range(1)"))
    result = djproject.run("--dbguard", "-p", "no:randomly")
    section = _section(result.stdout.str())
    assert sum(1 for line in section if line.startswith("        hint: ")) == 5
    assert not any(line.startswith("  every warning:") for line in section)
