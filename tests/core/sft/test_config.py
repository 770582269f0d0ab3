"""SFTConfig: a bad value fails with a message naming the key."""

from __future__ import annotations

import pytest

from tirl.core.config import ConfigError, build_config
from tirl.core.sft.config import SFTConfig


def test_config_errors_name_key():
    with pytest.raises(ConfigError, match="sft.precision"):
        build_config(SFTConfig, {"precision": "fp8"}, "sft")
