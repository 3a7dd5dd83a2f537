"""Fixtures: a real httpd with the built module, and the mock upstream.

Like mod_md's test suite: each test writes the configuration it needs,
starts /usr/sbin/apache2 with it, talks HTTP to it, and the error log is
checked for errors nobody expected.
"""

import pytest

from harness import (TOP, MODULE, SLOW, SANITIZER, Httpd, Mock, bridge_config,  # noqa: F401
                     free_port)


@pytest.fixture(scope="session")
def mock():
    m = Mock()
    yield m
    m.stop()


@pytest.fixture
def httpd(tmp_path, mock):
    mock.reset()
    h = Httpd(tmp_path / "httpd")
    yield h
    h.stop()
    errors = h.unexpected_errors()
    assert not errors, "unexpected errors in the error log:\n" + "\n".join(errors)
    reports = h.sanitizer_reports()
    assert not reports, "sanitizer reports:\n" + "\n".join(reports)


@pytest.fixture
def bridge(httpd, mock):
    """httpd running the usual set-up against the mock."""
    httpd.write_config(bridge_config(mock.url))
    httpd.start()
    return httpd
