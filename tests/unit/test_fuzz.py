"""Property-based fuzzing with Hypothesis (issue 29): config files and overrides, image decoding
(random bytes, truncated files, odd modes and sizes), request options, and the samplers'
timestep grids. The only outcomes allowed are a clean result or the project's own error type
(ConfigError, ImageError, OptionError).

CI runs a few dozen cases per target, derandomized (the same cases every run).
``python scripts/fuzz.py --cases N`` runs the long version and prints the counts."""

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from condiff.config import ConfigError, RunConfig, apply_overrides, load_config
from condiff.data.io import ImageError, probe_image, read_image
from condiff.diffusion.schedule import SPACINGS, spaced_timesteps

CASES = int(os.environ.get("CONDIFF_FUZZ_CASES", "40"))
FUZZ = settings(
    max_examples=CASES,
    deadline=None,
    derandomize=os.environ.get("CONDIFF_FUZZ_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
COUNTS: dict[str, int] = {}


def count(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    out = os.environ.get("CONDIFF_FUZZ_REPORT")
    if out:
        path = Path(out)
        old = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**old, **COUNTS}, indent=1))


# --- configs ----------------------------------------------------------------------------------

SECTIONS = {
    name: [f.name for f in __import__("dataclasses").fields(getattr(RunConfig(), name))]
    for name in ("model", "diffusion", "data", "train", "sample", "perceptual")
}
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=6,
)
keys = st.sampled_from(sorted(SECTIONS)).flatmap(
    lambda s: st.tuples(st.just(s), st.sampled_from([*SECTIONS[s], "nope"]))
)


@FUZZ
@given(st.dictionaries(keys, values, max_size=5))
def test_config_dicts_load_or_name_the_field(fields):
    count("config dicts")
    raw: dict = {}
    for (sec, key), v in fields.items():
        raw.setdefault(sec, {})[key] = v
    try:
        RunConfig.from_dict(raw)
    except ConfigError as e:
        assert str(e).strip()


@FUZZ
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
# found by fuzzing (each was a traceback): a date, bytes, aliases, a non-string key or preset
@example("train:\n  lr: 2020-01-01")
@example("train:\n  lr: !!binary aGVsbG8=")
@example("a: &a [*a]")
@example("train: &t\n  lr: *t")
@example("1: 2")
@example("model: {preset: [1]}")
def test_config_files_of_any_text_load_or_fail_in_one_line(tmp_path_factory, text):
    count("config files")
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path)
    except ConfigError as e:
        assert "\n" not in str(e).strip() and str(path) in str(e)


override_text = st.one_of(
    st.text(max_size=40),
    st.tuples(keys, st.text(max_size=20)).map(lambda t: f"{t[0][0]}.{t[0][1]}={t[1]}"),
    st.tuples(keys, values).map(lambda t: f"{t[0][0]}.{t[0][1]}={yaml.safe_dump(t[1]).strip()}"),
)


@FUZZ
@given(st.lists(override_text, max_size=4))
@example(["train.lr=\x1f"])  # found by fuzzing: a value YAML cannot read was a traceback
def test_overrides_apply_or_name_the_override(overrides):
    count("overrides")
    try:
        RunConfig.from_dict(apply_overrides({"model": {"preset": "tiny"}}, overrides))
    except ConfigError as e:
        assert str(e).strip()


# --- images -----------------------------------------------------------------------------------

MODES = ("1", "L", "P", "LA", "RGB", "RGBA", "CMYK", "I", "I;16", "F", "YCbCr", "HSV")
FORMATS = ("PNG", "JPEG", "TIFF", "BMP")


def encode(mode: str, fmt: str, w: int, h: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    im = Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).convert(
        "RGB" if mode in ("I;16",) else mode if mode != "I;16" else "I"
    )
    if mode == "I;16":
        im = Image.fromarray((rng.random((h, w)) * 65535).astype(np.uint16))
    buf = io.BytesIO()
    try:
        im.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):  # a mode this format cannot hold
        im.convert("RGB").save(buf, format=fmt)
    return buf.getvalue()


images = st.builds(
    encode,
    st.sampled_from(MODES),
    st.sampled_from(FORMATS),
    st.integers(1, 40),
    st.integers(1, 40),
    st.integers(0, 2**16),
)


def decode_or_refuse(data: bytes) -> None:
    try:
        info = probe_image(data, max_pixels=10**6)
        arr, depth = read_image(data)
    except ImageError as e:
        assert str(e).strip() and "object at 0x" not in str(e)
        return
    assert arr.ndim == 3 and arr.shape[2] in (1, 3) and arr.dtype == np.float32
    assert arr.shape[:2] == (info.height, info.width) and depth in (8, 16)
    assert np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1


@FUZZ
@given(images)
def test_images_of_odd_modes_and_sizes_decode_or_are_refused(data):
    count("images (modes, sizes)")
    decode_or_refuse(data)


@FUZZ
@given(images, st.floats(0, 1), st.binary(max_size=8))
def test_truncated_and_damaged_images_are_refused_cleanly(data, cut, junk):
    count("images (truncated, damaged)")
    decode_or_refuse(data[: int(len(data) * cut)] + junk)


@FUZZ
@given(st.binary(max_size=512))
@example(b"II*\x00")  # found by fuzzing: a TIFF header alone was a struct.error traceback
def test_random_bytes_are_refused_cleanly(data):
    count("random bytes")
    decode_or_refuse(data)


# --- request options and timestep grids --------------------------------------------------------


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            ["estimate", "sampler", "steps", "seed", "num_samples", "upscale", "format", "nope"]
        ),
        st.text(max_size=8) | st.integers(-(2**65), 2**65).map(str),
        max_size=5,
    )
)
def test_request_options_parse_or_name_the_option(raw):
    pytest.importorskip("fastapi")
    from condiff.serve.engine import Limits, OptionError, Options, parse_options

    count("request options")
    try:
        o = parse_options(raw, Options(), Limits())
    except OptionError as e:
        assert str(e).strip()
        return
    assert 1 <= o.steps <= Limits().max_steps and 1 <= o.upscale <= Limits().max_upscale


@FUZZ
@given(st.integers(1, 4000).flatmap(lambda t: st.tuples(st.just(t), st.integers(1, t))),
       st.sampled_from(SPACINGS))  # fmt: skip
def test_timestep_grids_are_on_the_chain_and_distinct(t_steps, spacing):
    count("timestep grids")  # found by fuzzing: trailing at 61 of 1000 steps gave t = -1
    t_max, steps = t_steps
    ts = spaced_timesteps(t_max, steps, spacing)
    assert len(ts) == steps and ts.min() >= 0 and ts.max() <= t_max - 1
    if spacing != "leading" or steps <= t_max // 1:
        assert (np.diff(ts) <= 0).all()


def test_waiting_jobs_compare_by_identity():
    """Found by Schemathesis: with two jobs waiting, the batcher's deque.remove() compared jobs
    field by field (their arrays: ValueError), its worker died and the server hung."""
    pytest.importorskip("fastapi")
    import collections

    from condiff.serve.engine import Job, Options

    a, b = (Job(np.zeros((1, s, 2), np.float32), 8, Options(), True) for s in (3, 4))
    waiting = collections.deque([(a, 1), (b, 2)])
    waiting.remove((b, 2))
    assert list(waiting) == [(a, 1)] and a != b and a == a


@FUZZ
@given(st.lists(st.text(max_size=12), min_size=2, max_size=60, unique=True), st.data())
def test_the_split_is_the_smallest_sha1_names_as_it_always_was(names, data):
    """The split finds its names through 8-byte digest heads (memory for a million samples);
    it must equal sorting every full hex digest, the rule runs were trained with."""
    import hashlib

    from condiff.data.datasets import split

    count("validation splits")
    val_count = data.draw(st.integers(0, len(names) - 1))

    class Names:
        def __len__(self):
            return len(names)

        def name(self, i):
            return names[i]

    order = sorted(range(len(names)), key=lambda i: hashlib.sha1(names[i].encode()).hexdigest())
    train, val = split(Names(), val_count)
    assert val == sorted(order[:val_count])
    assert train == [i for i in range(len(names)) if i not in set(val)]
