"""Read one video file as moments: one :class:`~clipsql.ingest.decode.Decoded` per moment,
each with the embedding input of its keyframe and its time range (``start_s``, ``end_s``).

A moment is a scene, or a stretch of one no longer than :data:`MAX_INTERVAL_S`. Frames are
decoded in order (PyAV, FFmpeg inside its wheel) and sampled :data:`SAMPLE_FPS` times a
second; :mod:`clipsql.ingest.scenes` says which samples start a shot. A new moment starts
where a shot starts at least :data:`MIN_SCENE_S` after the last moment's start, or when
``max_interval_s`` passed without one; and no more than ``max_moments`` are made: when the
container tells the duration, both the interval and the least gap between moments widen to
duration / ``max_moments`` up front where that is longer, so the moments of a long or
fast-cut video spread over all of it. A moment starts at the time of its first sampled frame (within one sample step, 1/:data:`SAMPLE_FPS` s, of the true
cut) and ends where the next one starts; the last ends with the video. Its keyframe is that
first frame, shown as a player shows it (rotation, pixel aspect).

Reading streams: a video of hours holds its moments' preprocessed keyframes (each made from
a frame shrunk to ``draft_size`` first) and the decoder's few frames, never more.
:data:`~clipsql.ingest.decode.MAX_BYTES` does not apply (videos are large and never read
whole); frames over :data:`~clipsql.ingest.decode.MAX_PIXELS` are refused by the stream's
header before a frame is decoded, and by FFmpeg itself (its ``max_pixels``) should a frame
grow later. Reading stops after :data:`MAX_DURATION_S` of video or :data:`MAX_FRAMES`
frames (a small file can hold millions of tiny frames); the moments read so far are kept.

Only the demuxers of :data:`DEMUXERS` are let open a file and only local files (FFmpeg's
``format_whitelist`` and ``protocol_whitelist``): a playlist or concat script named ``.mp4``
cannot make FFmpeg open other files or URLs. Every failure is an :class:`ImageError` with a
:class:`~clipsql.ingest.reasons.Reason`, as for images; nothing else escapes.

>>> is_video("clip.MP4"), is_video("a.mkv"), is_video("photo.jpg"), is_video("app.ts")
(True, True, False, False)
>>> sorted(VIDEO_EXTENSIONS & decode.EXTENSIONS)
[]
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from datetime import datetime
from fractions import Fraction

from PIL import Image

from clipsql import config
from clipsql.errors import ImageError
from clipsql.ingest import confine, decode, h264
from clipsql.ingest.decode import Decoded, mtime_of, read_error
from clipsql.ingest.formats import VIDEO_DEMUXERS, VIDEO_EXTENSIONS, is_video
from clipsql.ingest.reasons import Reason
from clipsql.ingest.scenes import SCENE_THRESHOLD, THUMB, SceneCuts, picture_features

__all__ = ["MAX_INTERVAL_S", "MAX_MOMENTS", "MIN_SCENE_S", "VIDEO_EXTENSIONS", "Deadline",
           "deadline_s", "frame_at", "is_video", "read_moment", "read_video", "stream_cost"]

#: A moment is at most this long (seconds) unless the video has more than MAX_MOMENTS of them.
MAX_INTERVAL_S = 30.0
#: Moments of one video at most: 2 hours are 120 moments of a minute.
MAX_MOMENTS = 120
#: A cut closer than this (seconds) to the last moment's start makes no new moment (flashes,
#: fast editing).
MIN_SCENE_S = 1.0
#: Frames compared per second of video (a cut is found within 1/SAMPLE_FPS s).
SAMPLE_FPS = 4.0
#: Reading stops after this much video (seconds), or this many frames decoded.
MAX_DURATION_S = 12 * 3600.0
MAX_FRAMES = 3_000_000
#: Packets the decoder rejects in a row before a read gives up (fewer are skipped).
MAX_BAD_PACKETS = 50


#: The demuxers allowed to open a video (whatever its name says); which extensions are
#: videos is said in :mod:`clipsql.ingest.formats` (a walk asks without importing this).
DEMUXERS = tuple(sorted(set(VIDEO_DEMUXERS.values())))
#: Bytes read at a time for the SHA-256 of a video.
_CHUNK = 1 << 20

#: Decoder threads per video. Frame threads each hold a frame of their own (counted in
#: :func:`stream_cost`) and decode outside the calling thread, where its CPU time (the
#: deadline's clock) cannot see them: one, in the calling thread; a load decodes files in
#: parallel instead.
DECODE_THREADS = 1
#: Frames a decoder holds beside its reference frames: the one being decoded, the one handed
#: out, the caller's, and FFmpeg's output delay and buffer pool (measured: a 8192x8192
#: H.264 stream with 1 reference frame peaked at 6 frames, 16 at 17 and more).
FRAMES_BESIDE_REFS = 5
#: Bytes per pixel each held frame needs beside its picture: H.264's and HEVC's motion
#: vectors, macroblock types and reference indexes (about 0.5).
SIDE_BYTES_PER_PIXEL = 0.5
#: Reference frames a codec's decoder may hold where the stream does not tell (an H.264 SPS
#: does: :func:`h264_refs`); codecs not listed: 16, the most H.264 and HEVC allow.
MAX_REFS = {"mjpeg": 0, "prores": 0, "dnxhd": 0, "rawvideo": 0, "png": 0, "jpeg2000": 0,
            "mpeg1video": 2, "mpeg2video": 2, "mpeg4": 2, "h263": 2, "flv1": 2,
            "msmpeg4v1": 2, "msmpeg4v2": 2, "msmpeg4v3": 2, "wmv1": 2, "wmv2": 2, "wmv3": 2,
            "vc1": 2, "theora": 2, "vp8": 3, "vp9": 8, "av1": 8}
MAX_REFS_UNKNOWN = 16
#: One file's decode deadline grows by this share of the base deadline per MiB it holds on
#: disk (1 s per MiB at the default 60 s): :func:`deadline_s`.
DEADLINE_PER_MIB = 1 / 60


def read_video(path: str, preprocess, draft_size: int | None = None, *,
               max_interval_s: float = MAX_INTERVAL_S, max_moments: int = MAX_MOMENTS,
               scene_threshold: float = SCENE_THRESHOLD, places=None) -> list[Decoded]:
    """The moments of the video at ``path``, in order, each a :class:`Decoded` whose
    ``pixels`` are ``preprocess`` (open_clip's transform) of its keyframe (RGB, upright).

    ``draft_size``: keyframes are shrunk until their shorter side is this many pixels (not
    enlarged) before ``preprocess``; None keeps them whole. All moments share the file's
    facts (sha256 of the whole file, bytes, mtime, the displayed width and height, format,
    metadata: see :func:`_meta`). A video cut short gives the moments before the cut
    (``exif["incomplete"]`` says why); one with no decodable frame is an ImageError.
    The decoder's memory (:func:`stream_cost`) is taken from :data:`~clipsql.ingest.decode.BUDGET`
    before a frame is decoded (a stream that cannot fit is refused), and the decode and the
    hash share the file's :class:`Deadline`; the file is hashed only once FFmpeg read it.
    Thread-safe: each call opens the file once, inside ``places`` (:mod:`~clipsql.ingest.confine`).
    """
    decode.bound_heap()
    with decode.BUDGET.reservation() as ticket, _image_errors(), \
            _Video(path, ticket, places=places) as video:
        moments, end, incomplete = _read(video, preprocess, draft_size, ticket,
                                         float(max_interval_s), max(1, int(max_moments)),
                                         float(scene_threshold))
        digest = _hash(video.source, video.deadline)
        return _decoded(path, video.st, digest, video, moments, end, incomplete)


@contextlib.contextmanager
def _image_errors():
    """Every failure inside as an :class:`ImageError`: memory running out is
    ``decompression_bomb``, anything else FFmpeg or PyAV raise is mapped by :func:`_error`
    (a decoder bug on a hostile file must not stop the load)."""
    try:
        yield
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(Reason.DECOMPRESSION_BOMB, decode.OUT_OF_MEMORY) from None
    except Exception as exc:
        raise _error(exc) from None


def frame_at(path: str, seconds: float, max_side: int | None = None, *,
             min_side: int | None = None, places=None) -> Image.Image:
    """The frame shown ``seconds`` into the video (RGB, upright): the last frame that starts
    at or before that time, or the last frame of all past the end. Shrunk (never enlarged)
    so that its longer side is at most ``max_side``, or its shorter side ``min_side`` (as
    :func:`read_video` shrinks keyframes to ``draft_size``: ``frame_at(path, start_s,
    min_side=draft_size)`` is a moment's keyframe, pixel for pixel). Seeks to the keyframe
    at or before that time, then decodes forward: never from the start of a video that has
    keyframes since. Budgeted and bounded by its deadline as :func:`read_video` is (the
    thumbnails, detail views and OCR of moments all read through here); raises
    :class:`ImageError` as it does, ``places`` too."""
    decode.bound_heap()
    with decode.BUDGET.reservation() as ticket, _image_errors(), \
            _Video(path, ticket, places=places) as video:
        frame = video.frame_at(max(0.0, float(seconds)))
        return video.image(frame, min_side=min_side, max_side=max_side)


def read_moment(path: str, start_s: float, preprocess, draft_size: int | None = None,
                end_s: float | None = None, *, places=None) -> Decoded:
    """One moment again (a reembed): the :class:`Decoded` :func:`read_video` made for the
    moment starting at ``start_s`` (the same keyframe, file facts and metadata; ``exif``
    without the facts only a whole read knows), ``end_s`` as given. Read as
    :func:`frame_at` reads (seeking), then hashed; ``places`` as :func:`read_video`."""
    decode.bound_heap()
    with decode.BUDGET.reservation() as ticket, _image_errors(), \
            _Video(path, ticket, places=places) as video:
        st = video.st
        frame = video.frame_at(max(0.0, float(start_s)))
        pixels = preprocess(video.image(frame, min_side=draft_size))
        del frame
        meta = _meta(video)
        meta["exif"] = {"codec": video.codec, "fps": video.fps}
        if video.rotation:
            meta["exif"]["rotation"] = video.rotation
        width, height = video.display_size
        digest = _hash(video.source, video.deadline)
        return Decoded(path=path, sha256=digest, bytes=st.st_size, mtime=mtime_of(st),
                       width=width, height=height, format=video.format, meta=meta,
                       pixels=pixels, start_s=start_s, end_s=end_s)


def stream_cost(width: int, height: int, pix_fmt: str | None, refs: int, *,
                reorder: int = 0, threads: int = DECODE_THREADS) -> int:
    """Bytes a decoder holds for a stream of ``width`` x ``height`` frames of ``pix_fmt``
    (None: unknown, counted as 16-bit 4:4:4) with ``refs`` reference frames and ``reorder``
    frames of output delay, decoded by ``threads`` frame threads: each frame its picture
    (FFmpeg's padding included) and :data:`SIDE_BYTES_PER_PIXEL`, times the reference and
    delayed frames, :data:`FRAMES_BESIDE_REFS` and one more per thread past the first.

    >>> stream_cost(8192, 8192, "yuv420p", 16) > decode.DECODE_MEMORY > \\
    ...     stream_cost(8192, 8192, "yuv420p", 1)
    True
    >>> stream_cost(1920, 1080, "yuv420p", 4) >> 20  # MB
    35
    """
    w = -(-max(1, int(width)) // 64) * 64
    h = -(-max(1, int(height)) // 32) * 32 + 4
    bits = 48
    if pix_fmt:
        try:
            from av.video.format import VideoFormat

            bits = VideoFormat(pix_fmt, 16, 16).padded_bits_per_pixel or bits
        except Exception:  # a name this FFmpeg does not know
            pass
    per_frame = w * h * (bits / 8 + SIDE_BYTES_PER_PIXEL)
    frames = max(0, int(refs)) + max(0, int(reorder)) + FRAMES_BESIDE_REFS + \
        max(0, int(threads) - 1)
    return int(per_frame * frames)


def deadline_s(st) -> float:
    """CPU seconds one file's decode (and hash) may take: the base deadline
    (:func:`clipsql.config.decode_deadline`, 60 s unless ``CLIPSQL_DECODE_DEADLINE`` says)
    plus :data:`DEADLINE_PER_MIB` of it per MiB the file holds on disk (a sparse file's
    holes, which cost nothing to write, count for nothing)."""
    base = config.decode_deadline()
    held = st.st_size
    blocks = getattr(st, "st_blocks", None)
    if blocks is not None:
        held = min(held, blocks * 512)
    return base + base * DEADLINE_PER_MIB * held / (1 << 20)


class Deadline:
    """CPU time of the calling thread (the decoder runs in it: :data:`DECODE_THREADS`) that
    one file may still use; :meth:`check` raises ``too_slow`` past it."""

    __slots__ = ("seconds", "_until")

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self._until = time.thread_time() + self.seconds

    def check(self) -> None:
        if time.thread_time() > self._until:
            raise ImageError(Reason.TOO_SLOW, f"decoding it took more than its {self.seconds:.3g}"
                             " CPU seconds (CLIPSQL_DECODE_DEADLINE, scaled by the file's size)")


# --- reading --------------------------------------------------------------------------------
def _hash(path: str, deadline: Deadline) -> str:
    """The sha256 (hex) of the file, read in chunks within ``deadline``; I/O failures as
    :class:`ImageError`. Called once FFmpeg read the file: one it refuses is never hashed."""
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                deadline.check()
        return h.hexdigest()
    except OSError as exc:
        raise read_error(exc) from None


class _Moment:
    __slots__ = ("start", "pixels")

    def __init__(self, start, pixels):
        self.start, self.pixels = start, pixels


def _keep(moments: list, t: float, pixels, ticket) -> None:
    """A new moment at ``t`` seconds with its keyframe's ``pixels`` (taken from the budget)."""
    decode.BUDGET.take(ticket, int(getattr(pixels, "nbytes", 0) or 0))
    moments.append(_Moment(round(t, 6), pixels))


def _read(video, preprocess, draft_size, ticket, max_interval_s, max_moments, threshold):
    """``(moments, end in seconds, why incomplete or None)`` of an opened video."""
    video.stream.codec_context.skip_frame = "NONREF"  # B-frames: never references, skipped
    duration = video.header_duration
    interval, gap = max_interval_s, MIN_SCENE_S
    if duration:
        interval = max(interval, duration / max_moments)
        gap = max(gap, duration / max_moments)
    step = 1.0 / SAMPLE_FPS
    moments: list[_Moment] = []
    cuts = SceneCuts(threshold)
    pending = None  # (seconds, keyframe image) of the last sample, while it may start a shot
    pending_bytes = 0  # taken from the budget for it
    next_sample = 0.0
    last_end = 0.0
    incomplete = None
    frames = 0
    decoding = video.frames()
    while True:
        try:
            frame, t, frame_duration = next(decoding)
        except StopIteration:
            break
        except ImageError:
            raise
        except Exception as exc:  # cut short or damaged: keep what was read, if anything
            error = _error(exc)
            if video.cut_short():
                error = ImageError(Reason.TRUNCATED, "the file is cut short: its index "
                                   "points past its end")
            if not moments:
                raise error from None
            incomplete = error.detail
            break
        frames += 1
        last_end = max(last_end, t + frame_duration)
        if t > MAX_DURATION_S or frames > MAX_FRAMES:
            incomplete = (f"read up to {MAX_DURATION_S:g} s or {MAX_FRAMES} frames, "
                          "the rest left out")
            break
        if t < next_sample and moments:
            continue
        next_sample = (t // step + 1) * step  # the first frame of each step
        video.check_size(frame)
        thumb = frame.reformat(width=THUMB[0], height=THUMB[1], format="rgb24",
                               interpolation="AREA").to_ndarray()
        if cuts.push(picture_features(thumb)) and pending is not None and moments \
                and pending[0] - moments[-1].start >= gap and len(moments) < max_moments:
            _keep(moments, pending[0], preprocess(pending[1]), ticket)
        pending = None
        start = moments[-1].start if moments else None
        if (start is None or t - start >= interval) and len(moments) < max_moments:
            _keep(moments, t, preprocess(video.image(frame, min_side=draft_size)), ticket)
        elif cuts.maybe and len(moments) < max_moments:
            image = video.image(frame, min_side=draft_size)
            held = image.width * image.height * len(image.getbands())
            if held > pending_bytes:
                decode.BUDGET.take(ticket, held - pending_bytes)
                pending_bytes = held
            pending = (t, image)
        del frame
    if not moments:
        raise ImageError(Reason.TRUNCATED, "no frame could be decoded before the file ended")
    end = last_end
    if incomplete is None and duration and last_end <= duration <= last_end + 2.0:
        end = duration  # frames skipped at the very end (B-frames) still play to it
    elif incomplete is None and duration and duration > last_end + 2.0:
        incomplete = (f"the file ends {last_end:.1f} s in, of the {duration:.1f} s its "
                      "header tells: cut short")
    return moments, round(end, 6), incomplete


def _decoded(path, st, digest, video, moments, end, incomplete) -> list[Decoded]:
    meta = _meta(video)
    facts = {"duration_s": end, "codec": video.codec, "fps": video.fps,
             "moments": len(moments)}
    if video.rotation:
        facts["rotation"] = video.rotation
    if incomplete:
        facts["incomplete"] = incomplete[:200]
    if video.bad_packets:
        facts["damaged_packets"] = video.bad_packets
    meta["exif"] = facts
    width, height = video.display_size
    mtime = mtime_of(st)
    out = []
    for i, m in enumerate(moments):
        stop = moments[i + 1].start if i + 1 < len(moments) else max(end, m.start)
        out.append(Decoded(
            path=path, sha256=digest, bytes=st.st_size, mtime=mtime, width=width,
            height=height, format=video.format, meta=dict(meta, exif=dict(facts)),
            pixels=m.pixels, start_s=m.start, end_s=stop))
        m.pixels = None
    return out


class _Video:
    """One opened video: its chosen stream, its facts, frames with their times. Opening it
    refuses a stream whose decoder cannot fit the budget and takes its cost from ``ticket``
    (a reservation of :data:`~clipsql.ingest.decode.BUDGET`); its :class:`Deadline` starts
    now. The file is opened once, inside ``places``
    (:func:`clipsql.ingest.confine.open_inside`), and read only through that descriptor
    (:attr:`source`): FFmpeg, the hash and the checks all read the file that was checked."""

    def __init__(self, path: str, ticket=None, *, places=None):
        import av

        self.path = path
        self.container = None
        self.ticket = ticket
        self._fd = confine.open_inside(path, places)
        self.st = os.fstat(self._fd)
        self.source = confine.source(self._fd, path)
        self.deadline = Deadline(deadline_s(self.st))
        self.frames_decoded = 0
        try:
            self.container = av.open(
                "file:" + self.source, metadata_errors="replace",
                container_options={"format_whitelist": ",".join(DEMUXERS),
                                   "protocol_whitelist": "file"})
        except BaseException as exc:
            if isinstance(exc, av.error.ArgumentError):  # known to FFmpeg, not a video we read
                exc = ImageError(Reason.UNSUPPORTED, "not a video container clipsql reads "
                                 f"({', '.join(DEMUXERS)})")
            elif isinstance(exc, av.error.InvalidDataError):
                exc = _unreadable_container(self.source)
            self.close()
            raise exc from None
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        import av

        streams = [s for s in self.container.streams.video
                   if not (int(s.disposition) & _ATTACHED_PIC)]
        if not streams:
            what = "cover art only" if self.container.streams.video else (
                "audio only" if self.container.streams.audio else "no streams")
            raise ImageError(Reason.UNSUPPORTED, f"no video stream ({what})")
        self.stream = stream = streams[0]
        ctx = stream.codec_context
        if ctx is None:
            raise ImageError(Reason.UNSUPPORTED, "no decoder for its video codec")
        for other in self.container.streams:
            if other is not stream:  # audio, subtitles: skipped by the demuxer
                with contextlib.suppress(Exception):
                    other.discard = av.stream.Discard.all
        self.codec = getattr(ctx.codec, "canonical_name", None) or ctx.name
        self.width, self.height = int(ctx.width or 0), int(ctx.height or 0)
        self.check_size(self)
        ctx.options = {"max_pixels": str(decode.MAX_PIXELS)}  # frames that grow later
        ctx.thread_count = DECODE_THREADS
        if DECODE_THREADS > 1:
            ctx.thread_type = "AUTO"
        self.pix_fmt = ctx.pix_fmt
        self.reorder = 2 if ctx.has_b_frames else 0
        self._nal_length = 0  # H.264 in MP4/Matroska: NAL units length-prefixed (avcC)
        self.refs = self._declared_refs(ctx)
        self.cost = self.costed = 0
        self._charge(self.width, self.height, self.refs)
        self.time_base = stream.time_base or Fraction(1, 1_000_000)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps = round(float(rate), 3) if rate else None
        self.frame_duration = 1.0 / float(rate) if rate and float(rate) > 0 else 0.04
        self.origin = stream.start_time  # in time_base; None: the first frame's
        self.rotation = 0
        self.sar = stream.sample_aspect_ratio or ctx.sample_aspect_ratio
        self.format = _format_name(self.container, self.path)
        self.bad_packets = 0
        self.header_duration = self._duration()

    def _declared_refs(self, ctx) -> int:
        """The reference frames the stream's header declares: an H.264 SPS's
        ``max_num_ref_frames``; else the most its codec allows (:data:`MAX_REFS`)."""
        if self.codec == "h264":
            extradata = bytes(ctx.extradata or b"")
            if extradata[:1] == b"\x01" and len(extradata) > 7:  # avcC
                self._nal_length = (extradata[4] & 3) + 1
                refs = [r for r in map(h264.h264_refs, h264.avcc_sps(extradata)) if r is not None]
            else:
                refs = [r for r in map(h264.h264_refs, h264.annexb_sps(extradata)) if r is not None]
            if refs:
                return max(refs)
        return MAX_REFS.get(self.codec, MAX_REFS_UNKNOWN)

    def _charge(self, width: int, height: int, refs: int) -> None:
        """Take what a decoder of ``width`` x ``height`` frames with ``refs`` reference
        frames holds from the budget (past what was taken); refuse what cannot fit."""
        cost = stream_cost(width, height, self.pix_fmt, refs, reorder=self.reorder)
        if cost > decode.DECODE_MEMORY:
            raise ImageError(Reason.DECOMPRESSION_BOMB, (
                f"decoding its {width}x{height} {self.codec} stream with {refs} reference "
                f"frames holds about {cost >> 20} MB, over the {decode.DECODE_MEMORY >> 20} MB "
                "decode budget"))
        if cost > self.cost:
            if self.ticket is not None:
                decode.BUDGET.take(self.ticket, cost - self.cost)
            self.cost = cost
        self.costed = max(self.costed, int(width) * int(height))
        self.refs = max(getattr(self, "refs", 0), int(refs))

    def _watch(self, packet) -> None:
        """An H.264 SPS inside the stream (a new one may declare more reference frames than
        the header's): charged before the packet is decoded."""
        data = bytes(packet)
        sps = h264.lengthed_sps(data, self._nal_length) if self._nal_length else h264.annexb_sps(data)
        for nal in sps:
            refs = h264.h264_refs(nal)
            if refs is None or refs > self.refs:  # unreadable: the most H.264 allows
                self._charge(self.width, self.height, refs if refs is not None else 16)

    def _duration(self) -> float | None:
        s = self.stream
        if s.duration and s.duration > 0:
            return float(s.duration * self.time_base)
        if self.container.duration and self.container.duration > 0:
            return self.container.duration / 1_000_000
        return None

    @property
    def display_size(self) -> tuple[int, int]:
        w, h = self.width, self.height
        if self.sar and self.sar > 0 and self.sar != 1:
            w = max(1, round(w * float(self.sar)))
        return (h, w) if self.rotation in (90, 270) else (w, h)

    def cut_short(self) -> bool:
        """Whether the stream's index points past the end of the file (a file cut short)."""
        try:
            entries = self.stream.index_entries
            n = len(entries)
            last = max(entries[i].pos + entries[i].size for i in range(max(0, n - 16), n))
            return n > 0 and last > self.st.st_size
        except Exception:  # no index: cannot tell
            return False

    def check_size(self, frame) -> None:
        """Refuse a stream (by its header) or frame over the pixel limit; a frame larger than
        the budget was taken for is charged (or refused) first."""
        w, h = int(frame.width or 0), int(frame.height or 0)
        if w * h > decode.MAX_PIXELS:
            raise ImageError(Reason.DECOMPRESSION_BOMB,
                             f"{w}x{h} frames are over the {decode.MAX_PIXELS:,} pixel limit")
        if frame is not self and w * h > self.costed:
            self._charge(w, h, self.refs)

    def decoded(self):
        """The stream's frames; a packet the decoder rejects is skipped (counted in
        ``bad_packets``: a damaged stretch costs its frames, not the video) unless
        :data:`MAX_BAD_PACKETS` come in a row. Errors reading the file end it (raised)."""
        import av

        in_a_row = 0
        watch = self.codec == "h264"
        for packet in self.container.demux(self.stream):
            self.deadline.check()
            if watch and packet.size:
                self._watch(packet)
            try:
                frames = self.stream.decode(packet)
            except av.error.InvalidDataError:
                self.bad_packets += 1
                in_a_row += 1
                if in_a_row >= MAX_BAD_PACKETS:
                    raise
                continue
            in_a_row = 0
            for frame in frames:
                self.frames_decoded += 1
                self.check_size(frame)
                yield frame

    def frames(self):
        """(frame, seconds from the video's start, its duration in seconds), in order."""
        last = None
        for frame in self.decoded():
            if self.origin is None and frame.pts is not None:
                self.origin = frame.pts
            if frame.pts is not None:
                t = float((frame.pts - (self.origin or 0)) * self.time_base)
            else:
                t = (last + self.frame_duration) if last is not None else 0.0
            t = max(0.0, t)
            if last is None:  # the first frame tells the rotation of all
                self.rotation = _rotation(frame)
                if frame.width and frame.height:
                    self.width, self.height = frame.width, frame.height
            last = t
            duration = float(frame.duration * self.time_base) if frame.duration else 0.0
            yield frame, t, duration if 0 < duration < 60 else self.frame_duration

    def frame_at(self, seconds: float):
        target = seconds + 1e-6
        if self.origin is not None:
            try:
                self.container.seek(int(self.origin + seconds / self.time_base),
                                    stream=self.stream, backward=True)
            except Exception:  # not seekable: decode from the start
                pass
        shown = None
        for frame, t, _ in self.frames():
            self.check_size(frame)
            if t > target and shown is not None:
                break
            shown = frame
            if t > target:
                break
        if shown is None:
            raise ImageError(Reason.TRUNCATED, "no frame could be decoded before the file ended")
        return shown

    def image(self, frame, *, min_side=None, max_side=None) -> Image.Image:
        """The frame as a player shows it: RGB, pixel aspect applied, rotated upright; shrunk
        (never enlarged) so its shorter side is ``min_side`` or its longer ``max_side``."""
        rotation = _rotation(frame) or self.rotation
        w, h = frame.width, frame.height
        sar = self.sar
        dw = max(1, round(w * float(sar))) if sar and sar > 0 and sar != 1 else w
        scale = 1.0
        if min_side:
            scale = min(1.0, min_side / min(dw, h))
        if max_side:
            scale = min(scale, max_side / max(dw, h))
        tw, th = max(1, round(dw * scale)), max(1, round(h * scale))
        # not to_image: it copies holding the GIL (the web server stalled on 2048 px previews)
        img = Image.fromarray(frame.reformat(width=tw, height=th, format="rgb24",
                                             interpolation="AREA").to_ndarray(), "RGB")
        if rotation:
            img = img.rotate(rotation, expand=True)
        return img

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> _Video:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_ATTACHED_PIC = 0x0400  # AV_DISPOSITION_ATTACHED_PIC


def _rotation(frame) -> int:
    """The counter-clockwise rotation a player applies, 0/90/180/270 (others: 0)."""
    try:
        r = int(round(frame.rotation or 0))
    except Exception:
        return 0
    r %= 360
    return r if r in (90, 180, 270) else 0


def _unreadable_container(path: str) -> ImageError:
    """The error of a file no allowed demuxer could open: an MP4/MOV whose index is missing
    (a recording cut short) is ``truncated``, anything else ``corrupt``."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        head = b""
    if head[4:8] == b"ftyp":
        return ImageError(Reason.TRUNCATED, "an MP4/QuickTime file without its index (moov "
                          "atom): cut short, e.g. a recording that was interrupted")
    return ImageError(Reason.CORRUPT, "not a video FFmpeg can read (invalid data)")


def _error(exc: BaseException) -> ImageError:
    """An FFmpeg (or other) failure while reading as an :class:`ImageError`."""
    import av

    if isinstance(exc, ImageError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return ImageError(Reason.VANISHED, "the file disappeared before it could be read")
    if isinstance(exc, PermissionError):
        return ImageError(Reason.UNREADABLE, "permission denied")
    if isinstance(exc, MemoryError):
        return ImageError(Reason.DECOMPRESSION_BOMB, decode.OUT_OF_MEMORY)
    if isinstance(exc, av.error.DecoderNotFoundError):
        return ImageError(Reason.UNSUPPORTED, "no decoder for its video codec")
    if isinstance(exc, (av.error.EOFError, EOFError)):
        return ImageError(Reason.TRUNCATED, "the file ends before its frames do")
    if isinstance(exc, av.error.FFmpegError):
        text = getattr(exc, "strerror", None) or str(exc)
        return ImageError(Reason.CORRUPT, f"FFmpeg: {text}")
    return ImageError(Reason.CORRUPT, f"{type(exc).__name__}: {exc}")


# --- metadata -------------------------------------------------------------------------------
def _format_name(container, path: str) -> str:
    """``MP4``, ``QUICKTIME``, ``3GP``, ``MATROSKA``, ``WEBM``, ``AVI``, ``MPEG-PS``,
    ``MPEG-TS``, ``ASF``, ``FLV``, ``OGG``: the container, as the file's header tells it
    (the MP4 family by its major brand; Matroska and WebM share a demuxer: by extension)."""
    demuxer = container.format.name.split(",")[0]
    if demuxer == "mov":
        brand = str(container.metadata.get("major_brand", "")).strip().lower()
        if brand == "qt":
            return "QUICKTIME"
        if brand.startswith("3g"):
            return "3GP"
        return "MP4"
    if demuxer == "matroska":
        return "WEBM" if path.lower().endswith(".webm") else "MATROSKA"
    return {"avi": "AVI", "mpeg": "MPEG-PS", "mpegts": "MPEG-TS", "asf": "ASF", "flv": "FLV",
            "ogg": "OGG"}.get(demuxer, demuxer.upper())


def _meta(video: _Video) -> dict:
    """The metadata columns of a video, from its container's and stream's tags:
    ``taken_at`` Apple's ``com.apple.quicktime.creationdate`` (local time; its offset is
    dropped) or else ``creation_time`` as written, without its zone (UTC for most cameras
    and phones: naive, like EXIF's times); ``camera_make``/``camera_model`` Apple's or
    Android's make and model tags (or plain ``make``/``model``); ``latitude``/``longitude``
    an ISO 6709 ``location`` tag; ``orientation`` None (rotation is applied to the frames)."""
    tags: dict = {}
    for source in (video.stream.metadata, video.container.metadata):  # the container wins
        tags.update({str(k).lower(): str(v) for k, v in dict(source).items()})
    meta = {"orientation": None, "taken_at": None, "camera_make": None, "camera_model": None,
            "latitude": None, "longitude": None, "exif": None}
    meta["taken_at"] = (_taken(tags.get("com.apple.quicktime.creationdate"))
                        or _taken(tags.get("creation_time")) or _taken(tags.get("date")))
    meta["camera_make"] = _first(tags, "com.apple.quicktime.make", "com.android.manufacturer",
                                 "make")
    meta["camera_model"] = _first(tags, "com.apple.quicktime.model", "com.android.model",
                                  "model")
    where = _location(_first(tags, "com.apple.quicktime.location.iso6709", "location",
                             "location-eng"))
    if where:
        meta["latitude"], meta["longitude"] = where
    return meta


def _first(tags: dict, *names: str) -> str | None:
    for name in names:
        value = (tags.get(name) or "").strip().strip("\x00")
        if value:
            return value[:200]
    return None


_DATE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6})\d*)?")


def _taken(value: str | None) -> datetime | None:
    """The wall-clock time a tag writes, naive (any zone or offset dropped); None for none,
    or the zero dates of files that never set it (1904, 1970).

    >>> _taken("2023-05-01T14:34:56+0200"), _taken("1904-01-01T00:00:00.000000Z")
    (datetime.datetime(2023, 5, 1, 14, 34, 56), None)
    """
    m = _DATE.match((value or "").strip())
    if not m:
        return None
    try:
        y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
        micro = int((m.group(7) or "0").ljust(6, "0"))
        when = datetime(y, mo, d, h, mi, s, micro)
    except ValueError:
        return None
    return None if when.year <= 1970 else when


_ISO6709 = re.compile(r"^([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)")


def _location(value: str | None):
    """(latitude, longitude) in degrees of an ISO 6709 string (``+37.7858-122.4064+12.3/``,
    or degrees and minutes ``+3747.15-12224.38/``); None if there is none or it is off the
    globe.

    >>> _location("+37.7858-122.4064+012.345/"), _location("+4012.5-07400.0/")
    ((37.7858, -122.4064), (40.208333, -74.0))
    """
    m = _ISO6709.match((value or "").strip())
    if not m:
        return None
    lat, lon = _degrees(m.group(1), 2), _degrees(m.group(2), 3)
    if lat is None or lon is None or abs(lat) > 90 or abs(lon) > 180:
        return None
    return lat, lon


def _degrees(text: str, width: int) -> float | None:
    """ISO 6709 degrees (``±DD.D``), degrees-minutes (``±DDMM.M``) or -seconds (``±DDMMSS.S``);
    ``width`` the digits of whole degrees (2 for latitude, 3 for longitude)."""
    sign = -1.0 if text[0] == "-" else 1.0
    whole = text[1:].split(".")[0]
    try:
        value = float(text[1:])
    except ValueError:
        return None
    if len(whole) <= width:
        degrees = value
    elif len(whole) == width + 2:
        degrees = value // 100 + (value % 100) / 60
    elif len(whole) == width + 4:
        degrees = value // 10000 + (value // 100 % 100) / 60 + (value % 100) / 3600
    else:
        return None
    return round(sign * degrees, 6)
