"""Schemathesis against a live ``condiff serve`` (issue 29): cases generated from the server's
own OpenAPI schema (``/openapi.json``: the upload routes describe their multipart body and every
option with its limits), valid and invalid. No answer may be a 500, and the server must still
answer ``/healthz`` after every case and at the end.

CI runs a few cases per route, derandomized; ``python scripts/fuzz.py --cases N`` the long run."""

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from condiff.bench.serve_load import start_server, stop_server  # noqa: E402

CASES = int(os.environ.get("CONDIFF_FUZZ_CASES", "25"))
COUNTS: dict[str, int] = {}


def small_png(seed: int, w: int, h: int, mode: str) -> bytes:
    rng = np.random.default_rng(seed)
    im = Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


# Uploads: a real small image in a third of the cases (so the model runs), else any bytes. The
# schema says "format: binary"; this strategy replaces schemathesis' random bytes for it.
uploads = st.one_of(
    st.builds(
        small_png,
        st.integers(0, 999),
        st.integers(1, 24),
        st.integers(1, 24),
        st.sampled_from(["L", "RGB", "RGBA", "P"]),
    ),
    st.binary(max_size=256),
    st.binary(max_size=256),
)
schemathesis.openapi.format("binary", uploads)


def _live(args: list[str]):
    server, _ = start_server([*args, "--max-steps", "4", "--max-samples", "2",
                              "--max-upload-mb", "0.05"])  # fmt: skip
    yield server
    _, out = stop_server(server)
    assert " 500 " not in out, out
    assert "Traceback" not in out, out
    report = os.environ.get("CONDIFF_FUZZ_REPORT")
    if report:
        path = Path(report)
        old = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**old, **COUNTS}, indent=1))


@pytest.fixture(scope="module")
def live(tiny_run):
    yield from _live(["--checkpoint", str(tiny_run), "--max-upscale", "2"])


@pytest.fixture(scope="module")
def live_map():
    """The shipped denoiser told its noise level: ``noise_level`` (a number or "auto") is due."""
    yield from _live(["--checkpoint", "pretrained:denoise-gray-small-map"])


@pytest.mark.parametrize("which", ["live", "live_map"])
def test_no_case_gets_a_500_and_the_server_lives(which, request):
    from hypothesis import Phase, given

    live = request.getfixturevalue(which)
    n = CASES if which == "live" else max(CASES // 3, 4)  # the map model: its new option's share
    server, live = live, live.url
    spec = schemathesis.openapi.from_url(f"{live}/openapi.json")
    modes = schemathesis.GenerationMode
    cases = st.one_of(spec.as_strategy(generation_mode=m) for m in (modes.POSITIVE, modes.NEGATIVE))

    @settings(
        max_examples=n * 8,  # about n per route and method
        deadline=None,
        derandomize=os.environ.get("CONDIFF_FUZZ_RANDOM") != "1",
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target],  # a hang: no shrink
    )
    @given(cases)
    def one(case):
        try:
            response = case.call(timeout=30)
        except Exception as e:  # a hang or a dropped connection: show what the server said
            raise AssertionError(
                f"{case.method} {case.path}: {e!r}\n{server.output()[-4000:]}"
            ) from e
        key = f"api {case.method} {case.path} {response.status_code}"
        COUNTS[key] = COUNTS.get(key, 0) + 1
        assert response.status_code < 500, (case.method, case.path, response.text[:300])
        assert httpx.get(f"{live}/healthz", timeout=10).json() == {"status": "ok"}

    before = dict(COUNTS)
    one()
    ran = {k: v - before.get(k, 0) for k, v in COUNTS.items() if v > before.get(k, 0)}
    assert sum(ran.values()) >= n  # it did run cases
    assert any(k.startswith("api POST /v1/translate 200") for k in ran)  # the model ran


def test_the_schema_describes_the_upload_and_its_limits(live):
    spec = httpx.get(f"{live.url}/openapi.json").json()
    body = spec["paths"]["/v1/translate"]["post"]["requestBody"]["content"]
    props = body["multipart/form-data"]["schema"]["properties"]
    assert props["image"] == {"type": "string", "format": "binary"}
    assert props["steps"]["maximum"] == 4 and props["upscale"]["default"] == 2  # the 4x model's
    assert props["estimate"]["default"] == "mean"
