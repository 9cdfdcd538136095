from dataclasses import dataclass, field
from typing import Literal

import pytest

from tunescope.config import config_hash, load_config, to_dict
from tunescope.errors import UserError


@dataclass
class Inner:
    beta: float = 0.0
    loss: Literal["grpo", "dr_grpo"] = "dr_grpo"


@dataclass
class Outer:
    lr: float = 1e-6
    steps: int = 10
    layers: list[int] = field(default_factory=list)
    name: str | None = None
    grpo: Inner = field(default_factory=Inner)


def test_yaml_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 1.0e-5\nsteps: 3\ngrpo:\n  beta: 0.04\n")
    cfg = load_config(Outer, f, ["steps=7", "grpo.loss=grpo", "layers=[1, 2]", "lr=1"])
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.steps == 7 and cfg.layers == [1, 2]
    assert cfg.grpo == Inner(beta=0.04, loss="grpo")
    assert to_dict(cfg)["grpo"]["beta"] == 0.04
    assert config_hash(cfg) == config_hash(load_config(Outer, f, ["steps=7", "grpo.loss=grpo", "layers=[1,2]", "lr=1"]))
    assert config_hash(cfg) != config_hash(Outer())


@pytest.mark.parametrize("override, fragment", [
    (["stpes=3"], "did you mean 'steps'"),
    (["steps=3.5"], "steps: expected an integer"),
    (["grpo.loss=ppo"], "grpo.loss: 'ppo' is not one of"),
    (["grpo.bta=1"], "unknown config key 'grpo.bta'"),
    (["lr=fast"], "lr: expected a number"),
    (["steps"], "must look like key=value"),
])
def test_bad_input_names_the_key(override, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", r"\(")):
        load_config(Outer, None, override)


def test_bad_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: [1,\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(Outer, f)
    with pytest.raises(UserError, match="does not exist"):
        load_config(Outer, tmp_path / "nope.yaml")
