"""Knowledge folders and embeddings in the fleet file: resolved per agent, checked with file
and key when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcos.config import load_fleet
from mcos.config.models import EmbeddingsConfig
from mcos.exceptions import ConfigError, ConfigErrors
from mcos.knowledge.embeddings import packaged_model_dir
from mcos.knowledge.setup import open_knowledge
from tests.unit.test_fleet_config import BASE, messages, write

AGENTS = (
    BASE
    + """knowledge = ["kb/jarvis"]
[agents.donna]
role = "comms"
host = "mini"
"""
)


class TestFolders:
    """An agent searches its own folders and the shared ones that name it."""

    def test_own_and_shared_folders(self, tmp_path: Path) -> None:
        fleet = load_fleet(
            write(
                tmp_path,
                AGENTS + '[knowledge.legal]\npath = "kb/legal/"\nagents = ["jarvis", "donna"]\n',
            )
        )
        base = tmp_path.resolve()
        assert fleet.knowledge_folders("jarvis") == {
            "kb/jarvis": base / "kb" / "jarvis",
            "kb/legal": base / "kb" / "legal",
        }
        assert fleet.knowledge_folders("donna") == {"kb/legal": base / "kb" / "legal"}

    def test_an_agent_without_folders_gets_no_index(self, tmp_path: Path) -> None:
        fleet = load_fleet(write(tmp_path, AGENTS))
        assert open_knowledge(fleet, "donna", tmp_path / "agents" / "donna") is None
        index = open_knowledge(fleet, "jarvis", tmp_path / "agents" / "jarvis")
        assert index is not None
        with index:
            assert index.db_path == tmp_path / "agents" / "jarvis" / ".mcos" / "knowledge.db"
            assert index.search("anything", 3) == []  # the folder does not exist yet


class TestErrors:
    """Wrong folders and embeddings are named with their key."""

    def test_unknown_agent_and_outside_folder(self, tmp_path: Path) -> None:
        text = (
            AGENTS.replace('"kb/jarvis"', '"../elsewhere"')
            + '[knowledge.legal]\npath = "kb/legal"\nagents = ["ghost"]\n'
        )
        found = messages(write(tmp_path, text))
        assert any(m.endswith("knowledge.legal.agents.0: unknown agent 'ghost'") for m in found), (
            found
        )
        assert any(
            "agents.jarvis.knowledge.0: '../elsewhere' resolves to" in m
            and "outside the fleet folder" in m
            for m in found
        ), found

    def test_embeddings_need_their_fields(self, tmp_path: Path) -> None:
        found = messages(write(tmp_path, AGENTS + '[embeddings]\nprovider = "openai"\n'))
        assert found == [
            f"{tmp_path / 'fleet.toml'}: embeddings: provider openai needs model (the "
            "embedding model id)"
        ]
        with pytest.raises(ValueError, match="provider local needs package"):
            EmbeddingsConfig(provider="local")

    def test_a_local_model_package_that_is_not_installed(self) -> None:
        with pytest.raises(ConfigError, match="'no_such_model_pkg' is not installed"):
            packaged_model_dir("no_such_model_pkg")

    def test_a_missing_embeddings_key_is_a_config_error(self, tmp_path: Path) -> None:
        fleet = load_fleet(
            write(
                tmp_path,
                AGENTS + '[embeddings]\nprovider = "openai"\nmodel = "text-embedding-3-small"\n'
                'key = "env:MCOS_TEST_NO_SUCH_EMBEDDINGS_KEY"\n',
            )
        )
        with pytest.raises(ConfigError, match="MCOS_TEST_NO_SUCH_EMBEDDINGS_KEY is not set"):
            open_knowledge(fleet, "jarvis", tmp_path / "agents" / "jarvis")


def test_errors_are_collected(tmp_path: Path) -> None:
    """A bad knowledge entry is one of all the problems reported at once."""
    with pytest.raises(ConfigErrors):
        load_fleet(write(tmp_path, AGENTS + "[knowledge.x]\npath = 3\nagents = []\n"))
