"""The names the engine accepts, importable without torch, onnx or numpy: the CLI builds its choices
and --help from these at start-up. The engine modules take their constants from here and check, at
import, that they agree with what they implement (pruning/scorers.py: SCORERS and needs_data)."""

METHODS = ("synflow", "mag", "rand", "snip", "grasp", "loss", "gradnorm")  # scorers, pruning/scorers.py
DATA_METHODS = ("snip", "grasp", "loss", "gradnorm")  # the scorers with needs_data (scored on batches)
# Channel importance for trained weights (structured/importance.py), only with --structure channel
CHANNEL_METHODS = ("l2", "l1", "bn", "taylor")
CHANNEL_DATA_METHODS = ("taylor",)
SCHEDULES = ("exponential", "linear")  # how the kept fraction falls over iterations, pruning/loop.py
SCOPES = ("global", "local")  # rank across all layers, or the same density per layer, pruning/masks.py
BN_STATISTICS = ("update", "frozen", "recalibrate")  # BatchNormalization in training, train/batchnorm.py
FORMATS = ("auto", "sparse", "dense")  # how pruned tensors are stored, writeback.py
STRUCTURES = ("weight", "channel")  # single weights (pruning/) or whole channels (structured/)
PRECISIONS = ("float64", "float32")  # scoring precision (api.PRECISIONS maps them to torch dtypes)
DEVICES = ("auto", "cpu", "cuda")  # where scoring runs (auto: CUDA when available)
# How a folder of images is read (fidelity/images.py): memory layout and channel order.
LAYOUTS = ("nchw", "nhwc")
COLORS = ("rgb", "bgr", "gray")
OUTPUT_KINDS = ("logits", "probs", "log_probs", "values")  # what --output-kind declares, graph/outputs.py
