"""Videos the tests make themselves (PyAV encoding frames): scenes of known colours and
lengths, so the moments a load finds have known times."""

from __future__ import annotations

from pathlib import Path

#: Container and codec per extension (all in PyAV's wheel).
CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9",
          ".avi": "mpeg4"}


def make_video(path: Path, scenes, fps: int = 25, size=(160, 120), pattern: bool = True) -> Path:
    """Write ``scenes`` — ``[(rgb, seconds), ...]`` — as one video; with ``pattern`` each
    scene has a few stripes of its colour's complement, so scenes differ in structure too."""
    import av
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream(CODECS.get(path.suffix.lower(), "libx264"), rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for n, (color, seconds) in enumerate(scenes):
            frame = np.empty((h, w, 3), dtype=np.uint8)
            frame[:] = color
            if pattern:
                for i in range(n + 1):
                    x = (i * 37 + n * 11) % w
                    frame[:, x:x + 8] = [255 - c for c in color]
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            for _ in range(round(seconds * fps)):
                for packet in stream.encode(picture):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


#: Three scenes: 3 s red, 4 s green, 2 s blue (cuts at 3 s and 7 s, 9 s long).
THREE_SCENES = [((220, 30, 30), 3), ((30, 200, 30), 4), ((30, 30, 220), 2)]
