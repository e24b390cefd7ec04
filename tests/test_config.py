import pytest

from tether.config import (
    ConfigError,
    PipelineConfig,
    PretrainConfig,
    SFTConfig,
    describe,
    load_config,
)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "sft.yaml"
    path.write_text("learning_rate: 1.0e-4\nlora: yes\nbatch_size: 8\n")
    config = load_config(SFTConfig, str(path), ["batch_size=2", "lr_scheduler=linear", "learning_rate=3e-5"])
    assert (config.learning_rate, config.lora, config.batch_size, config.lr_scheduler) == (
        3e-5,
        True,
        2,
        "linear",
    )


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "message"),
    [
        (
            "model: x\nlearing_rate: 1\n",
            [],
            r"sft.yaml:2: unknown field 'learing_rate'; did you mean 'learning_rate'\?",
        ),
        ("batch_size: many\n", [], "sft.yaml:1: field 'batch_size': expected an integer, got 'many'"),
        ("lora: maybe\n", [], "sft.yaml:1: field 'lora': expected true or false"),
        ("lr_scheduler: step\n", [], "field 'lr_scheduler': expected one of cosine, linear, constant"),
        ("batch_size: 0\n", [], "sft.yaml:1: field 'batch_size': must be at least 1"),
        ("model: [1\n", [], "sft.yaml:2: invalid YAML"),
        ("- a\n- b\n", [], "sft.yaml:1: expected a mapping"),
        ("", ["max_steps"], "command line: 'max_steps' is not key=value"),
        ("", ["epochs=2"], "command line: unknown field 'epochs'; did you mean 'num_epochs'"),
        ("", ["max_steps=1.5"], "command line: field 'max_steps': expected an integer"),
    ],
)
def test_config_errors_name_the_place(tmp_path, yaml_text, overrides, message):
    path = tmp_path / "sft.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(SFTConfig, str(path), overrides)
    assert "\n" not in str(info.value)


def test_pipeline_sections_take_dotted_overrides():
    config = load_config(PipelineConfig, None, ["sft.max_steps=5", "pretrain.seq_len=64"])
    assert config.sft == {"max_steps": "5"} and config.pretrain == {"seq_len": "64"}


def test_help_lists_every_field_with_default():
    text = describe(PretrainConfig)
    for name in ("learning_rate", "seq_len", "vocab_size", "resume", "save_every"):
        assert f"  {name} (" in text
    assert "default 0.003" in text
