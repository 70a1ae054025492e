"""Which devices and number formats training uses."""

import os
import platform
import shutil

import keras
import tensorflow as tf


def cpu_has_amx():
    """True when the CPU has Intel AMX bfloat16 tile instructions, read from /proc/cpuinfo.

    Only AMX makes bfloat16 pay on a CPU: with AVX-512 BF16 alone, bfloat16 trained
    at 0.68-0.80x the float32 speed (measured), so that flag does not count.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags


def gpu_supports_float16(gpu):
    """True for NVIDIA GPUs with tensor cores (compute capability 7.0 or newer)."""
    capability = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
    return tuple(capability) >= (7, 0)


def precision_choice(setting, depthwise=False):
    """(Keras dtype policy, why) for `--mixed-precision` auto|on|off, for a network built of depthwise convolutions
    (EfficientNet, MobileNet) or not.

    "auto" picks reduced precision only where it is faster: float16 on GPUs with tensor
    cores; bfloat16 on CPUs with AMX for plain convolutions (compact 1.8-2.0x float32,
    measured), not for depthwise ones, which it slows (EfficientNet-Lite0: its forward
    pass 0.6-0.8x, fine-tuning 0.4x, bench/RESULTS.md section 20); else float32.
    """
    if setting == "off":
        return "float32", "--mixed-precision off"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if setting == "on" or all(map(gpu_supports_float16, gpus)):
            return "mixed_float16", "float16 on tensor cores"
        return "float32", "this GPU has no tensor cores for float16"
    if setting == "on":
        return "mixed_bfloat16", "--mixed-precision on"
    if cpu_has_amx() and depthwise:
        return "float32", "this CPU has AMX, but bfloat16 runs depthwise convolutions slower"
    if cpu_has_amx():
        return "mixed_bfloat16", "this CPU has AMX, where bfloat16 is faster"
    return "float32", "no AMX on this CPU, so bfloat16 would be slower"


def precision_policy(setting, depthwise=False):
    """The Keras dtype policy for `--mixed-precision` auto|on|off (see `precision_choice`)."""
    return precision_choice(setting, depthwise)[0]


def has_depthwise(model):
    """True when `model` (or a network nested in it) has depthwise convolutions."""
    return any(
        isinstance(layer, keras.layers.DepthwiseConv2D) or (hasattr(layer, "layers") and has_depthwise(layer))
        for layer in model.layers
    )


def with_policy(model, policy, copy=False):
    """A copy of `model` computing in `policy` ("float32", "mixed_bfloat16", ...), same weights.

    The output layers stay float32 so probabilities keep full precision. Works for
    any Sequential or functional model, including ones loaded from a file. Returns
    `model` itself when it already computes in `policy`, unless `copy` (a copy made
    here also leaves behind the distribution strategy the model was built under).
    """
    outputs = {id(tensor._keras_history.operation) for tensor in model.outputs}

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "float32" if id(layer) in outputs else policy
        return layer.__class__.from_config(config)

    if not copy and all(
        getattr(layer, "dtype_policy", None) is None or layer.dtype_policy.name == policy for layer in model.layers
    ):
        return model
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)  # The cloned Input layer takes the global policy.
    try:
        copy = keras.models.clone_model(model, clone_function=clone)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def inference_model(model, setting="auto"):
    """The model that predict.py and training's final evaluation label with: reduced precision where it is fast."""
    return with_policy(model, precision_policy(setting, has_depthwise(model)))


def set_policy(policy):
    """Sets the global Keras dtype policy (layers built afterwards use it)."""
    keras.mixed_precision.set_global_policy(policy)


def has_gpu():
    """True when TensorFlow trains on a GPU here."""
    return bool(tf.config.list_physical_devices("GPU"))


def gpu_warnings(visible_gpus, nvidia_driver, built_with_cuda):
    """Why an NVIDIA GPU that is present goes unused, and the fix; [] when there is nothing to say."""
    if visible_gpus or not nvidia_driver:
        return []
    if not built_with_cuda:
        return [
            "warning: this machine has an NVIDIA GPU, but the installed TensorFlow is a CPU-only build, so "
            "training runs on the CPU. Fix: pip uninstall -y tensorflow-cpu && "
            "pip install 'tensorflow[and-cuda]==2.21.*' (README, Training on GPUs)."
        ]
    return [
        "warning: this machine has an NVIDIA GPU, but TensorFlow cannot load the CUDA libraries or driver "
        "it needs, so training runs on the CPU. Fix: pip install 'tensorflow[and-cuda]==2.21.*' in this "
        "environment, and check that `nvidia-smi` works (README, Training on GPUs)."
    ]


def unusable_gpu_warnings():
    """`gpu_warnings` for this machine: the NVIDIA driver's files, and TensorFlow's own view of the GPUs."""
    driver = os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None
    return gpu_warnings(tf.config.list_physical_devices("GPU"), driver, tf.test.is_built_with_cuda())


def describe():
    """One line naming the devices training runs on."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"{len(gpus)} GPU(s): " + ", ".join(
            tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus
        )
    return f"CPU only ({_cpu_name()}, {os.cpu_count()} cores)"


def _cpu_name():
    """The processor's model name (Linux: /proc/cpuinfo), else what Python's platform module says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown processor"
