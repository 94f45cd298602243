"""``python -m clipsql.models export SPEC``: the export worker that
:func:`clipsql.models.export.in_subprocess` runs (one JSON message per stdout line)."""

from __future__ import annotations

import json
import sys


def export_worker(spec: str) -> int:
    from clipsql import config
    from clipsql.errors import ClipsqlError, WeightsUnavailableError
    from clipsql.models import checkpoint, export
    from clipsql.models.openclip import ClipModel

    def say(**message):
        print(json.dumps(message), flush=True)

    try:
        model = ClipModel(spec, device="cpu", precision="fp32")
        say(step="importing torch and open_clip")
        import open_clip  # noqa: F401  (its own step: seconds on a cold disk)

        say(step="building the model from its weights")
        net, preprocess, tokenizer = checkpoint.build(model.spec, model.model_config)
        if export.export(net, preprocess, tokenizer, model.identity(), model.export_folder,
                         lambda what: say(step=what)) is None:
            say(error=f"cannot write the export of {spec} to {model.export_folder} (is the "
                      f"cache folder writable? {config.ENV_CACHE} moves it)")
            return 1
    except ClipsqlError as exc:  # the weights' way out crosses the process boundary whole
        if isinstance(exc, WeightsUnavailableError):
            say(error=str(exc), weights={"problem": exc.problem, "arch": exc.arch})
        else:
            say(error=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "export":
        print("usage: python -m clipsql.models export ARCH/PRETRAINED", file=sys.stderr)
        sys.exit(2)
    sys.exit(export_worker(sys.argv[2]))
