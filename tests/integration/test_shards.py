"""Data at scale (issue 31): `condiff data pack` shards, read back by index from a local folder,
a real S3-compatible server (moto in server mode, through s3fs as a user's code would) and a
plain HTTP server; the same training as from the folder, exact resume, bad samples skipped."""

import http.server
import json
import os
import socket
import threading
from pathlib import Path

import pytest
import torch

from condiff import checkpoint as ckpt
from condiff.config import RunConfig
from condiff.data.datasets import ImageSource, make_source
from condiff.data.shards import read_index, read_members
from condiff.train import fit
from tests.conftest import run_cli, tiny_config
from tests.integration.test_train import assert_same, weights


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    run_cli("data", "--output", str(root / "gray"), "--color", "gray")
    return root / "gray"


@pytest.fixture(scope="module")
def packed(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packed") / "pack"
    p = run_cli("data", "pack", str(photos), "--output", str(out), "--shard-mb", "0.3",
                "--workers", "2", "--no-progress")  # fmt: skip
    assert "packed" in p.stdout and "shard(s)" in p.stdout
    return out


def folder_cfg(run: Path, photos: Path, **train) -> RunConfig:
    return RunConfig.from_dict(
        tiny_config(run, data={"root": str(photos)}, train={"steps": 6, "log_every": 1, **train})
    )


def shard_cfg(run: Path, shards: str, **train) -> RunConfig:
    data = {"kind": "shards", "shards": shards}
    return RunConfig.from_dict(
        tiny_config(run, data=data, train={"steps": 6, "log_every": 1, **train})
    )


def losses(res) -> list[float]:
    return [h["loss"] for h in res.history if "loss" in h]


def test_pack_keeps_bytes_order_and_names_and_lists_bad_files(photos, packed, tmp_path):
    index = read_index(str(packed))
    items = read_members(index)
    files = sorted(p for p in photos.iterdir() if p.suffix == ".png")
    assert [items.name(i) for i in range(len(items))] == [p.stem for p in files]
    assert index["count"] == len(files) == len(items)
    assert len(index["shardlist"]) > 1 and index["paired"] is False
    src = make_source(shard_cfg(tmp_path / "r", str(packed)).data)
    # a glob of the tars names the same set (the index beside them)
    assert len(make_source(shard_cfg(tmp_path / "g", f"{packed}/shard-*.tar").data)) == len(src)
    store = src.store
    for i in (0, len(files) - 1):
        assert store.read(src.items[i].target) == files[i].read_bytes()
    # a corrupt and an empty file are left out and listed; --strict refuses, naming both
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in files[:3]:
        (bad / p.name).write_bytes(p.read_bytes())
    (bad / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (bad / "zz_empty.png").write_bytes(b"")
    p = run_cli("data", "pack", str(bad), "--output", str(tmp_path / "o"), "--no-progress")
    idx = json.loads((tmp_path / "o" / "shards.json").read_text())
    assert idx["count"] == 3 and {b["name"] for b in idx["bad"]} == {"zz_corrupt", "zz_empty"}
    assert "2 bad files left out" in p.stderr
    p = run_cli("data", "pack", str(bad), "--output", str(tmp_path / "s"), "--strict",
                "--no-progress", check=False)  # fmt: skip
    assert p.returncode == 2 and "zz_corrupt" in p.stderr and "zz_empty" in p.stderr
    assert not (tmp_path / "s" / "shards.json").exists()


def test_training_from_shards_equals_the_folder_run(photos, packed, tmp_path):
    a = fit(folder_cfg(tmp_path / "folder", photos), progress=False)
    b = fit(shard_cfg(tmp_path / "shards", str(packed)), progress=False)
    assert losses(a) == losses(b) and len(losses(a)) == 6
    assert_same(weights(tmp_path / "folder"), weights(tmp_path / "shards"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(packed):
    """A real S3-compatible server (moto, server mode) on a free port, the shards uploaded
    with s3fs; yields the bucket URL."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "FSSPEC_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import fsspec.config
    import s3fs

    fsspec.config.set_conf_env(fsspec.config.conf)  # the endpoint, as fsspec reads it at import
    fs = s3fs.S3FileSystem(endpoint_url=env["FSSPEC_S3_ENDPOINT_URL"])
    fs.mkdir("condiff-data")
    fs.put(str(packed), "condiff-data/pack", recursive=True)
    try:
        yield "s3://condiff-data/pack"
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        fsspec.config.conf.pop("s3", None)


def test_s3_shards_train_like_the_folder_and_resume_exactly(photos, s3, tmp_path):
    ref = fit(folder_cfg(tmp_path / "folder", photos, ckpt_every=3), progress=False)
    # whole shards cached locally (the set is small), then read from the cache
    cut = fit(shard_cfg(tmp_path / "s3", s3, ckpt_every=3), stop_after=3, progress=False)
    assert cut.step == 3 and list((tmp_path / "s3" / "shard-cache").glob("*.tar"))
    res = fit(shard_cfg(tmp_path / "s3", s3, ckpt_every=3), resume="auto", progress=False)
    assert res.step == 6
    assert losses(ref)[3:] == losses(res)[-3:]
    assert_same(weights(tmp_path / "folder"), weights(tmp_path / "s3"))
    # past the cache budget: ranged reads of each image, nothing cached
    rng = shard_cfg(tmp_path / "s3r", s3)
    rng = RunConfig.from_dict(
        {**rng.to_dict(), "data": {**rng.to_dict()["data"], "shard_cache_mb": 0}}
    )
    res = fit(rng, progress=False)
    assert losses(res) == losses(ref) and not (tmp_path / "s3r" / "shard-cache").exists()


def test_https_style_shards_from_a_plain_http_server(photos, packed, tmp_path):
    pytest.importorskip("aiohttp")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    handler = lambda *a, **k: Quiet(*a, directory=str(packed.parent), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{packed.name}"
        a = fit(folder_cfg(tmp_path / "folder", photos), progress=False)
        b = fit(shard_cfg(tmp_path / "http", url), progress=False)
        assert losses(a) == losses(b)
    finally:
        httpd.shutdown()


def test_a_damaged_sample_is_skipped_counted_and_named(packed, tmp_path, capfd):
    import shutil

    copy = tmp_path / "pack"
    shutil.copytree(packed, copy)
    index = read_index(str(copy))
    member = read_members(index)[5].target
    shard = copy / index["shardlist"][member.shard]["url"]
    data = bytearray(shard.read_bytes())
    data[member.offset : member.offset + 64] = b"\0" * 64  # its PNG signature and header gone
    shard.write_bytes(bytes(data))
    cfg = shard_cfg(tmp_path / "r", str(copy), steps=12)
    res = fit(cfg, progress=False)
    assert res.step == 12
    err = capfd.readouterr().err
    assert f"skipped a bad sample: shard-{member.shard:06d}.tar key 000000005" in err


def test_the_decoded_image_cache_stays_within_its_budget(packed, tmp_path):
    cfg = shard_cfg(tmp_path / "r", str(packed))
    src = make_source(cfg.data)
    one = src.load_raw(0)[1].nbytes
    small = ImageSource(src.items, src.target_channels, src.cond_channels, src.task, src.color,
                        store=src.store, cache_mb=2.5 * one / 2**20)  # fmt: skip
    for i in range(len(src.items)):
        small.load_raw(i)
        assert small._cached_bytes <= small.cache_bytes
    assert 1 <= len(small._cache) <= 3
    assert torch.equal(small.load_raw(0)[1], src.load_raw(0)[1])


def test_checkpoints_of_a_shard_run_verify(packed, tmp_path):
    fit(shard_cfg(tmp_path / "r", str(packed), ckpt_every=3), progress=False)
    for c in ckpt.list_checkpoints(tmp_path / "r" / "checkpoints"):
        assert ckpt.verify_manifest(c)


def test_two_torchrun_processes_read_disjoint_shares_of_the_shards(packed, tmp_path):
    """Two gloo processes under the real torchrun, training from shards, against one process
    with the same global batch: each global sample is read once, by one rank (equal weights up
    to the all-reduce's float reassociation)."""
    from tests.conftest import write_yaml
    from tests.integration.test_ddp import close, torchrun

    over = ["train.steps=4", "train.batch_size=8", "--no-progress"]
    data = {"kind": "shards", "shards": str(packed)}
    one = write_yaml(tmp_path / "one.yaml", tiny_config(tmp_path / "one", data=data))
    two = write_yaml(tmp_path / "two.yaml", tiny_config(tmp_path / "two", data=data))
    run_cli("train", "--config", str(one), *over, env={"OMP_NUM_THREADS": "1"})
    torchrun(2, "train", "--config", str(two), *over)
    close(weights(tmp_path / "one"), weights(tmp_path / "two"))
