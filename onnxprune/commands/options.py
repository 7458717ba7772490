"""Option helpers the commands share: input shapes, the default output path, side-output checks."""

from __future__ import annotations

from pathlib import Path

from ..errors import OnnxPruneError


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """NAME=1x3x224x224 -> ("NAME", (1, 3, 224, 224)). The name may itself contain '='; the last one splits."""
    name, sep, dims = text.rpartition("=")
    shape = _dims(dims)
    if not sep or not name or not shape:
        raise OnnxPruneError(f"--input-shape {text!r}: expected NAME=DIMxDIMx... with positive dims, "
                             "e.g. input=1x3x224x224")
    return name, shape


def _dims(text: str) -> tuple[int, ...]:
    """'1x3x224x224' -> (1, 3, 224, 224); () unless every dim is a positive integer."""
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        return ()
    return dims if all(d > 0 for d in dims) else ()


def output_kind_option(command):
    """--output-kind NAME=KIND (repeatable): what an output holds, where the graph cannot tell."""
    import click

    from ..choices import OUTPUT_KINDS

    return click.option("--output-kind", "output_kinds", multiple=True, metavar="NAME=KIND",
                        help=f"What output NAME holds ({', '.join(OUTPUT_KINDS)}; repeatable), where the graph "
                             "cannot tell: a Dense head of regression scores reads as class logits.")(command)


def parse_output_kinds(texts) -> dict[str, str]:
    """("score=values", ...) -> {"score": "values"} (one clear line for a malformed entry)."""
    from ..choices import OUTPUT_KINDS

    kinds = {}
    for text in texts:
        name, _, kind = text.rpartition("=")
        if not name or kind not in OUTPUT_KINDS:
            raise OnnxPruneError(f"--output-kind {text!r}: expected NAME=KIND, KIND one of {', '.join(OUTPUT_KINDS)}")
        kinds[name] = kind
    return kinds


def default_output(model: Path) -> Path:
    """MODEL.pruned.onnx beside the input."""
    stem = model.name[:-5] if model.name.endswith(".onnx") else model.name
    return model.with_name(f"{stem}.pruned.onnx")


def check_side_outputs(paths, model: Path, output: Path, *, overwrite: bool) -> None:
    """--report / --plot paths, checked before any work: writable, and neither model file."""
    from .. import io

    for extra in (p for p in paths if p is not None):
        if extra.resolve() in (model.resolve(), output.resolve()):
            raise OnnxPruneError(f"{extra}: --report / --plot must not name the input or output model")
        io.check_output_path(extra, overwrite=overwrite)


def image_options(command):
    """The options that read a folder of images without labels (fidelity/images.py)."""
    import click

    from .. import choices

    for option in reversed([
        click.option("--image-size", metavar="HxW", help="Images from a folder: resize to this [the input's]."),
        click.option("--mean", metavar="M[,M,M]", help="Images from a folder: subtracted per channel, after "
                                                       "scaling to [0, 1] [0]."),
        click.option("--std", metavar="S[,S,S]", help="Images from a folder: divided by, per channel [1]."),
        click.option("--layout", type=click.Choice(choices.LAYOUTS), help="Images from a folder [from the input's shape]."),
        click.option("--color", type=click.Choice(choices.COLORS),
                     help="Images from a folder [gray for 1 channel, rgb for 3]."),
    ]):
        command = option(command)
    return command


def parse_image_options(image_size, mean, std, layout, color):
    """The image options as fidelity.images.ImageOptions (one clear line for a malformed value)."""
    from ..fidelity.images import ImageOptions

    def floats(text, flag, default):
        if not text:
            return default
        try:
            return tuple(float(t) for t in text.replace(",", " ").split())
        except ValueError:
            raise OnnxPruneError(f"{flag} {text!r}: expected one number or one per channel, e.g. 0.5,0.5,0.5") from None

    size = _dims(image_size) if image_size else None
    if size is not None and len(size) != 2:
        raise OnnxPruneError(f"--image-size {image_size!r}: expected HxW with positive sizes, e.g. 224x224")
    return ImageOptions(size, floats(mean, "--mean", (0.0,)), floats(std, "--std", (1.0,)), layout, color)
