"""``[telemetry]`` in the fleet file: validated on load, its header references checked by
``mcos config check`` like every other key reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcos.config import check_fleet
from mcos.config.loader import load_fleet
from mcos.exceptions import ConfigErrors
from tests.unit.test_fleet_config import BASE, write


class TestTelemetryConfig:
    """The section's keys and what is refused."""

    def test_off_by_default(self, tmp_path: Path) -> None:
        """No section: no endpoint, the default service name."""
        fleet = load_fleet(write(tmp_path, BASE))
        assert fleet.telemetry.otlp_endpoint is None
        assert fleet.telemetry.service_name == "mcos"

    def test_an_endpoint_that_is_not_http_is_refused_naming_the_key(self, tmp_path: Path) -> None:
        """A gRPC-style ``host:4317`` is not an OTLP/HTTP URL: the error says where and what."""
        path = write(tmp_path, BASE + '[telemetry]\notlp_endpoint = "collector:4317"\n')
        with pytest.raises(ConfigErrors) as err:
            load_fleet(path)
        (message,) = [e.message for e in err.value.errors]
        assert "telemetry.otlp_endpoint" in message
        assert "http://host:4318/v1/traces" in message

    def test_config_check_resolves_header_references(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An unset variable behind a header is reported like an agent's key; literals pass."""
        monkeypatch.delenv("MCOS_TEST_OTLP_UNSET", raising=False)
        path = write(
            tmp_path,
            BASE + '[telemetry]\notlp_endpoint = "http://127.0.0.1:4318/v1/traces"\n'
            'headers = { "x-api-key" = "env:MCOS_TEST_OTLP_UNSET", "x-team" = "ops" }\n',
        )
        with pytest.raises(ConfigErrors) as err:
            check_fleet(path)
        assert [e.message for e in err.value.errors] == [
            f"{path}: telemetry.headers.x-api-key: telemetry: env:MCOS_TEST_OTLP_UNSET: the "
            "variable MCOS_TEST_OTLP_UNSET is not set"
        ]
        monkeypatch.setenv("MCOS_TEST_OTLP_UNSET", "a-collector-key")
        assert isinstance(check_fleet(path), list)
