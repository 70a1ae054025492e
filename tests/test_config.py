import dataclasses
import pathlib

import pytest

import config


@pytest.mark.parametrize("config_class", [config.TrainConfig, config.PredictConfig])
def test_every_field_is_a_flag_with_its_default(config_class):
    parsed = config.parse(config_class, "test", [])
    assert parsed == config_class()
    help_text = config.build_parser(config_class, "test").format_help()
    for field in dataclasses.fields(config_class):
        assert config.flag_name(field) in help_text


def test_contract_flag_names_exist():
    train_flags = {config.flag_name(f) for f in dataclasses.fields(config.TrainConfig)}
    predict_flags = {config.flag_name(f) for f in dataclasses.fields(config.PredictConfig)}
    assert {
        "--data-dir",
        "--model-dir",
        "--epochs",
        "--batch-size",
        "--image-size",
        "--arch",
        "--validation-split",
        "--seed",
        "--learning-rate",
    } <= train_flags
    assert {
        "--model-dir",
        "--model",
        "--input",
        "--output",
        "--batch-size",
        "--threshold",
        "--sort-into",
        "--evaluate",
    } <= predict_flags


def test_flags_override_defaults():
    parsed = config.parse(config.TrainConfig, "test", ["--epochs", "3", "--image-size", "48", "--arch", "simple"])
    assert (parsed.epochs, parsed.image_size, parsed.arch) == (3, 48, "simple")
    parsed = config.parse(config.PredictConfig, "test", ["--input", "a", "b.jpg", "--evaluate"])
    assert parsed.input == ["a", "b.jpg"] and parsed.evaluate


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--validation-split", "1.5"], "`--validation-split` must be between 0.01 and 0.9. Received: 1.5"),
        (["--epochs", "0"], "`--epochs` must be between 1 and 10000. Received: 0"),
        (["--image-size", "8"], "`--image-size` must be between 16 and 1024. Received: 8"),
        (
            ["--arch", "vgg99"],
            (
                "`--arch` must be one of efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, "
                "mobilenet_v3_small, mobilenet_v3_large, efficientnet_v2_b0, resnet50, vgg16, compact, simple. "
                "Received: vgg99"
            ),
        ),
        (["--seed", "-1"], "`--seed` must be at least 0. Received: -1"),
        (["--mixed-precision", "sometimes"], "`--mixed-precision` must be one of auto, on, off. Received: sometimes"),
        (["--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        config.parse(config.TrainConfig, "test", argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error
    assert error.count("\n") == 1


def test_predict_threshold_defaults_to_the_models_and_is_range_checked(capsys):
    assert config.parse(config.PredictConfig, "test", []).threshold is None
    assert config.parse(config.PredictConfig, "test", ["--threshold", "0.7"]).threshold == 0.7
    with pytest.raises(SystemExit):
        config.parse(config.PredictConfig, "test", ["--threshold", "1.5"])
    assert "`--threshold` must be between 0.0 and 1.0. Received: 1.5" in capsys.readouterr().err


@pytest.mark.parametrize("config_class", [config.TrainConfig, config.PredictConfig])
def test_readme_documents_every_flag(config_class):
    readme = (pathlib.Path(config.__file__).parent / "README.md").read_text()
    missing = [
        config.flag_name(f) for f in dataclasses.fields(config_class) if f"`{config.flag_name(f)}`" not in readme
    ]
    assert not missing


@pytest.mark.parametrize("script", ["train_cnn.py", "predict.py"])
def test_help_lists_choices_ranges_exit_statuses_and_each_default_once(script):
    from conftest import run_script

    result = run_script(script, "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps lines at the terminal's width.
    assert "(default: None)" not in text and "(default: )" not in text
    assert all(text.count(f"(default: {shown}) (default:") == 0 for shown in ("the model's, 0.5", "read TF_CONFIG"))
    assert "[--mixed-precision {auto,on,off}]" in text and "0.00392" not in text
    assert "exit status: 0" in text and " 2 usage error" in text
    if script == "train_cnn.py":
        assert (
            "[--arch {efficientnet_lite0,efficientnet_lite1,efficientnet_lite2,mobilenet_v3_small," in text
            and "16 to 1024" in text
            and "(default: 0)" in text
        )
        assert "summary.txt" in text and "read TF_CONFIG" in text
    else:
        assert "(default: 1/255)" in text and "predictions.csv" in text


def test_bad_flag_values_are_answered_before_tensorflow_loads():
    import subprocess
    import sys

    from conftest import ROOT

    check = (
        "import runpy, sys; sys.argv = ['train_cnn.py', '--arch', 'vgg99']\n"
        "try:\n    runpy.run_path('train_cnn.py', run_name='__main__')\n"
        "except SystemExit as exit:\n    print(exit.code, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["2", "False", "False"], result.stdout + result.stderr
    assert (
        "`--arch` must be one of efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, mobilenet_v3_small, "
        "mobilenet_v3_large, "
        "efficientnet_v2_b0, resnet50, vgg16, compact, simple. Received: vgg99"
    ) in result.stderr
