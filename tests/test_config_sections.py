"""Config composition: each field declared once (one help text), per-stage defaults, unused fields refused."""

import ast
import collections
import dataclasses
import inspect
from pathlib import Path

import pytest

import tether.config as config_package
from tether.config import (
    ConfigError,
    DistributionMatchingConfig,
    DPOConfig,
    EvalConfig,
    IterativeDPOConfig,
    KTOConfig,
    NashMDConfig,
    OnlineDPOConfig,
    PGConfig,
    PPOConfig,
    PretrainConfig,
    RFTConfig,
    SFTConfig,
    defaults,
    describe,
    is_unused,
    load_config,
    option,
    save_config,
    to_dict,
)
from tether.stages import STAGES

CONFIGS = sorted({stage.config for stage in STAGES.values()} | {config_package.JudgeConfig}, key=str)
# Field names that mean different things in different commands, each declared once per meaning.
HOMONYMS = {
    "model": "pretrain's 'tiny' or folder; a stage's starting model; the judge, evaluated or revising model",
    "beta": "the DPO family's β (unset = the loss's default), KTO's β, DPG's target temperature",
    "gamma": "SimPO's margin, PPO's discount",
    "clip_eps": "PPO's clip range, and pg's (unset = per policy_loss)",
    "gold": "a hidden judge reported beside; judge_agreement's relabelling judge",
    "data": "a stage's training data; score's input records",
    "batch_size": "training micro-batches (online: prompts per iteration); a sampling or scoring batch",
    "constitution": "the judge's principles; critique_revise's critique and revision requests",
    "reference": "iterative DPO's reference policy choice; compare's reference model",
    "output_dir": "a command's results; the frontier's pipeline folder",
    "seed": "a command's seed; the pipeline's seed of every stage; the frontier's first seed",
    "seeds": "the pipeline's and the frontier's number of seeds",
    "ppo": "pipeline and frontier sections of overrides",
    "grpo": "pipeline and frontier sections of overrides",
    "dpo": "pipeline and frontier sections of overrides",
}


def _declaring_classes(cls: type, name: str) -> list[type]:
    """The classes of ``cls``'s MRO that declare ``name`` (not those that only change its default)."""
    return [
        klass
        for klass in cls.__mro__
        if name in inspect.get_annotations(klass)
        and name not in klass.__dict__.get("__config_defaults__", ())
    ]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_no_config_declares_an_inherited_field_again(cls):
    again = {
        f.name: [k.__name__ for k in _declaring_classes(cls, f.name)]
        for f in dataclasses.fields(cls)
        if len(_declaring_classes(cls, f.name)) > 1
    }
    allowed = {"clip_eps": ["PGConfig", "RLConfig"]} if issubclass(cls, PGConfig) else {}
    assert again == allowed


def test_each_field_name_has_one_help_text_except_the_homonyms():
    helps = collections.defaultdict(set)
    for cls in CONFIGS:
        for f in dataclasses.fields(cls):
            if not is_unused(f):
                helps[f.name].add(f.metadata["help"])
    assert {name for name, texts in helps.items() if len(texts) > 1} == set(HOMONYMS)


def test_learning_rate_and_batch_size_are_declared_once_each():
    owners = collections.defaultdict(set)
    for cls in CONFIGS:
        for name in ("learning_rate", "batch_size"):
            if name in cls.__dataclass_fields__:
                owners[name].update(k.__name__ for k in _declaring_classes(cls, name))
    assert owners["learning_rate"] == {"TrainConfig"}
    assert owners["batch_size"] == {"TrainConfig", "InferenceBatchConfig"}


@pytest.mark.parametrize(
    ("cls", "name", "default"),
    [
        (PretrainConfig, "learning_rate", 3e-3),
        (SFTConfig, "learning_rate", 1e-3),
        (DPOConfig, "learning_rate", 2e-4),
        (PPOConfig, "learning_rate", 5e-5),
        (PPOConfig, "kl_coef", 0.2),
        (PGConfig, "batch_size", 8),
        (PPOConfig, "batch_size", 32),
        (PPOConfig, "output_dir", "runs/ppo"),
        (KTOConfig, "output_dir", "runs/kto"),
    ],
)
def test_help_shows_each_stages_own_default_with_the_one_help_text(cls, name, default):
    entry = describe(cls).split(f"  {name} (")[1].splitlines()
    assert entry[0].endswith(f", default {default!r})")
    (declaring,) = _declaring_classes(cls, name)
    assert entry[1].strip() == declaring.__dataclass_fields__[name].metadata["help"]


UNUSED = [
    (OnlineDPOConfig, "kl_in_reward", "true"),
    (OnlineDPOConfig, "kl_coef", "0.1"),
    (DistributionMatchingConfig, "kl_in_reward", "true"),
    (DistributionMatchingConfig, "kl_coef", "0.1"),
    (NashMDConfig, "kl_in_reward", "true"),
    (IterativeDPOConfig, "data", "pairs.jsonl"),
    (RFTConfig, "data", "gym:arithmetic"),
    (RFTConfig, "eval_data", "held.jsonl"),
    (KTOConfig, "group_by_prompt", "true"),
    (EvalConfig, "prompts", "gym:arithmetic"),
    (EvalConfig, "temperature", "0.5"),
    (PPOConfig, "num_epochs", "2"),
]


@pytest.mark.parametrize(("cls", "name", "value"), UNUSED, ids=lambda v: getattr(v, "__name__", str(v)))
def test_an_unused_field_is_refused_in_one_line_and_hidden(tmp_path, cls, name, value):
    path = tmp_path / "c.yaml"
    path.write_text(f"seed: 1\n{name}: {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(cls, str(path))
    message = str(caught.value)
    assert message.startswith(f"{path}:2: field '{name}': not used: ") and "\n" not in message
    with pytest.raises(ConfigError, match=f"command line: field '{name}': not used"):
        load_config(cls, None, [f"{name}={value}"])
    assert f"  {name} (" not in describe(cls)
    config = load_config(cls)
    assert name not in to_dict(config)
    save_config(config, tmp_path / "saved.yaml")  # a saved config loads again
    assert load_config(cls, str(tmp_path / "saved.yaml")) == config


def test_an_unused_field_at_its_default_loads(tmp_path):
    # A config saved before these fields became unused holds their defaults: it still loads, unchanged.
    path = tmp_path / "old.yaml"
    path.write_text("max_steps: 5\nnum_epochs: 1.0\neval_every: 0\n")
    assert load_config(PPOConfig, str(path)) == load_config(PPOConfig, None, ["max_steps=5"])
    with pytest.raises(ConfigError, match="field 'num_epochs': not used"):
        load_config(PPOConfig, None, ["num_epochs=1.5"])


def test_a_raised_bound_is_per_stage():
    assert load_config(SFTConfig, None, ["batch_size=1"]).batch_size == 1
    with pytest.raises(ConfigError, match="field 'batch_size': must be at least 2"):
        load_config(KTOConfig, None, ["batch_size=1"])


def test_defaults_refuses_a_field_declared_again_or_unknown():
    with pytest.raises(TypeError, match="learning_rate"):

        @defaults(learning_rate=1.0)
        class Again(SFTConfig):
            learning_rate: float = option(2.0, "Another help text.")

    with pytest.raises(TypeError, match="no_such_field"):

        @defaults(no_such_field=1)
        class Unknown(SFTConfig):
            pass


def test_the_loader_imports_nothing_of_tether_but_tether_error():
    tree = ast.parse(Path(config_package.__file__).with_name("loader.py").read_text())
    imported = [
        (node.module, [a.name for a in node.names])
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tether")
    ]
    assert imported == [("tether", ["TetherError"])]


def test_no_config_module_is_over_400_lines():
    folder = Path(config_package.__file__).parent
    assert {p.name: len(p.read_text().splitlines()) <= 400 for p in folder.glob("*.py")} == {
        p.name: True for p in folder.glob("*.py")
    }
