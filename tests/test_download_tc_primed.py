"""``download tc_primed`` against a mocked S3 (moto's server on 127.0.0.1), never the internet.

The bucket holds a handful of small objects under the real v01r01 key layout: two seasons, two
basins, several sensors (some the task does not use), environmental files, and one multipart
upload. Anonymous access works as on NOAA Open Data: the objects are public-read.
"""

from __future__ import annotations

import hashlib
import logging
import random
import socket
import sys
from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3")
pytest.importorskip("tcprimedapi")
moto_server = pytest.importorskip("moto.server")

from botocore.exceptions import ConnectionClosedError  # noqa: E402

from benchmark.cli import main  # noqa: E402
from tasks.common.download import ChecksumError, DownloadError  # noqa: E402
from tasks.tc_primed import download as tcd  # noqa: E402
from tasks.tc_primed.reader import parse_name  # noqa: E402

P = "v01r01/final"
SIZES = {
    f"{P}/2018/AL/06/TCPRIMED_v01r01-final_AL062018_GMI_GPM_025677_20180905051440.nc": 3000,
    f"{P}/2018/AL/06/TCPRIMED_v01r01-final_AL062018_AMSR2_GCOMW1_032555_20180905170210.nc": 2500,
    f"{P}/2018/AL/06/TCPRIMED_v01r01-final_AL062018_SSMIS_F17_061234_20180906101500.nc": 2000,
    f"{P}/2018/AL/06/TCPRIMED_v01r01-final_AL062018_ATMS_NPP_035511_20180906063000.nc": 1500,  # not a task sensor
    f"{P}/2018/AL/06/TCPRIMED_v01r01-final_AL062018_env_s20180831060000_e20180918000000.nc": 4000,
    f"{P}/2018/AL/07/TCPRIMED_v01r01-final_AL072018_SSMIS_F18_045678_20180908081500.nc": 1800,
    f"{P}/2018/AL/07/TCPRIMED_v01r01-final_AL072018_SSMI_F10_000123_20180908091500.nc": 1700,  # a pair the task does not use
    f"{P}/2018/AL/07/TCPRIMED_v01r01-final_AL072018_env_s20180905000000_e20180910000000.nc": 3500,
    f"{P}/2018/EP/03/TCPRIMED_v01r01-final_EP032018_GMI_GPM_023456_20180612101010.nc": 2200,
    f"{P}/2019/AL/05/TCPRIMED_v01r01-final_AL052019_AMSR2_GCOMW1_037001_20190901120000.nc": 2600,
    f"{P}/2019/AL/05/TCPRIMED_v01r01-final_AL052019_env_s20190824000000_e20190910000000.nc": 3000,
}
BODY = {key: random.Random(key).randbytes(size) for key, size in SIZES.items()}
MULTIPART_KEY = f"{P}/2019/WP/02/TCPRIMED_v01r01-final_WP022019_GMI_GPM_030001_20190301000000.nc"
MULTIPART_PART = 5 << 20  # S3's smallest part size
MULTIPART_BODY = random.Random(1).randbytes(MULTIPART_PART + 300_000)


def _k(storm: str, kind: str) -> str:
    """The key of the test object of storm ``2018/AL/06`` whose name contains ``_<kind>_``."""
    (key,) = [k for k in SIZES if k.split("/")[2:5] == storm.split("/") and f"_{kind}_" in k]
    return key


GMI, AMSR2, F17, ATMS, ENV06 = (_k("2018/AL/06", s) for s in ("GMI", "AMSR2", "F17", "ATMS", "env"))
F18, F10, ENV07 = (_k("2018/AL/07", s) for s in ("F18", "F10", "env"))
TASK_2018_AL = [AMSR2, GMI, F17, F18]  # sorted by key


@pytest.fixture(scope="module")
def endpoint():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    s3.create_bucket(Bucket=tcd.BUCKET)
    for key, body in BODY.items():
        s3.put_object(Bucket=tcd.BUCKET, Key=key, Body=body, ACL="public-read")
    upload = s3.create_multipart_upload(Bucket=tcd.BUCKET, Key=MULTIPART_KEY, ACL="public-read")["UploadId"]
    parts = []
    for n, start in enumerate(range(0, len(MULTIPART_BODY), MULTIPART_PART), 1):
        etag = s3.upload_part(Bucket=tcd.BUCKET, Key=MULTIPART_KEY, UploadId=upload, PartNumber=n,
                              Body=MULTIPART_BODY[start:start + MULTIPART_PART])["ETag"]
        parts.append({"PartNumber": n, "ETag": etag})
    s3.complete_multipart_upload(Bucket=tcd.BUCKET, Key=MULTIPART_KEY, UploadId=upload, MultipartUpload={"Parts": parts})
    yield url
    server.stop()


@pytest.fixture(autouse=True)
def _local_only(endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every client in these tests talks to the mock: ours through $TCPRIMED_S3_ENDPOINT, boto3's
    own default through AWS_ENDPOINT_URL_S3; no AWS configuration of this machine is read."""
    monkeypatch.setenv(tcd.ENDPOINT_ENV, endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def _client(ranges: list | None = None):
    """An anonymous client on the mock that records the Range of every GetObject (None = whole)."""
    client = tcd.s3_client()
    if ranges is not None:
        client.meta.events.register("provide-client-params.s3.GetObject",
                                    lambda params, **kw: ranges.append(params.get("Range")))
    return client


def _cli(tmp_path: Path, *args: str) -> int:
    return main(["download", "tc_primed", "--data-root", str(tmp_path / "data"), "--no-progress", *args])


def _raw(tmp_path: Path) -> Path:
    return tmp_path / "data" / "tc_primed" / "raw"


# --------------------------------------------------------------------------------------------------
# listing and subsets
# --------------------------------------------------------------------------------------------------


def test_listing_gives_keys_sizes_and_etags() -> None:
    files = tcd.list_files(2018, "AL")
    assert [f.key for f in files] == TASK_2018_AL  # the task's sensors: no ATMS, no SSMI on F10, no env
    for f in files:
        assert f.size == SIZES[f.key] and f.etag == hashlib.md5(BODY[f.key]).hexdigest()
    assert [f.kind for f in files] == ["AMSR2_GCOMW1", "GMI_GPM", "SSMIS_F17", "SSMIS_F18"]
    assert {f.storm for f in files} == {"2018/AL/06", "2018/AL/07"}


@pytest.mark.parametrize(
    ("kwargs", "keys"),
    [
        pytest.param({"sensors": ["GMI"]}, [GMI], id="sensor"),
        pytest.param({"sensors": ["F17"]}, [F17], id="platform"),
        pytest.param({"sensors": ["ssmis"]}, [F17, F18], id="sensor-lowercase"),
        pytest.param({"storms": [7]}, [F18], id="storm"),
        pytest.param({"storms": [6, 7], "sensors": ["SSMIS", "SSMI"]}, [F17, F10, F18], id="storms-sensors"),
        pytest.param({"sensors": ["all"]}, [AMSR2, ATMS, GMI, F17, F10, F18], id="all"),
        pytest.param({"env": True}, [AMSR2, ENV06, GMI, F17, F18, ENV07], id="env"),
        pytest.param({"sensors": ["GMI"], "env": True}, [ENV06, GMI, ENV07], id="sensor-env"),
        pytest.param({"sensors": ["all"], "env": True, "storms": [6]}, [AMSR2, ATMS, ENV06, GMI, F17], id="all-env"),
    ],
)
def test_subset_filters(kwargs: dict, keys: list[str]) -> None:
    assert [f.key for f in tcd.list_files("2018", "al", **kwargs)] == sorted(keys)


def test_other_season_and_basin() -> None:
    assert [f.name for f in tcd.list_files(2018, "EP")] == [Path(k).name for k in SIZES if "/2018/EP/" in k]
    assert [f.kind for f in tcd.list_files(2019, "AL", env=True)] == ["AMSR2_GCOMW1", "env"]


def test_dry_run_prints_count_and_size_first_and_fetches_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(tmp_path, "--season", "2018", "--basin", "AL", "--dry-run") == 0
    out = capsys.readouterr().out.splitlines()
    total = sum(SIZES[k] for k in TASK_2018_AL)
    assert out[0].startswith("TC-PRIMED v01r01 final, season 2018, basin AL, the task's sensors")
    assert f"4 files, {tcd.human(total)} (2 storms)" in out[0] and f"to fetch: 4 files, {tcd.human(total)}" in out[0]
    assert [line.split()[-1] for line in out[1:-1]] == TASK_2018_AL
    assert out[-1] == "dry run: nothing fetched"
    assert not (tmp_path / "data").exists()


def test_no_files_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(tmp_path, "--season", "2030", "--basin", "AL") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ")
    assert "season 2030, basin AL" in err and f"no files under s3://{tcd.BUCKET}/{P}/2030/AL/" in err
    # files in the season/basin, none of them for this sensor: say what is there
    assert _cli(tmp_path, "--season", "2018", "--basin", "EP", "--sensor", "AMSR2") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "sensor AMSR2" in err and "none of the 1 files" in err and "GMI_GPM" in err
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["--basin", "XX"], "Invalid value XX for basin", id="basin"),
        pytest.param(["--basin", "AL", "--sensor", "FOO"], "sensors: AMSR2", id="sensor"),
        pytest.param(["--basin", "AL", "--storm", "50"], "1 to 49", id="storm"),
    ],
)
def test_invalid_request_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    assert _cli(tmp_path, "--season", "2018", *args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err


# --------------------------------------------------------------------------------------------------
# fetching
# --------------------------------------------------------------------------------------------------


def test_fetch_writes_the_bucket_layout_that_prepare_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(tmp_path, "--season", "2018", "--basin", "AL", "--env") == 0
    raw = _raw(tmp_path)
    keys = sorted([*TASK_2018_AL, ENV06, ENV07])
    assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file()) == keys
    for key in keys:
        assert (raw / key).read_bytes() == BODY[key]
    assert parse_name(Path(GMI).name).sensor == "GMI"  # what `prepare` will parse
    assert not tcd.staging_dir(raw).exists()  # nothing partial left anywhere
    out = capsys.readouterr().out.splitlines()
    assert "6 files" in out[0] and "to fetch: 6 files" in out[0]  # the size comes first
    assert out[1] == f"fetched 6 files into {raw} (6 verified by ETag); 0 already there"
    assert out[2] == f"next: python -m benchmark prepare tc_primed --raw {raw} --out {tmp_path / 'data' / 'tc_primed' / 'prepared'}"
    # a second run finds everything in place
    assert _cli(tmp_path, "--season", "2018", "--basin", "AL", "--env") == 0
    out = capsys.readouterr().out.splitlines()
    assert "already in" in out[0] and ": 6 files; to fetch: 0 files, 0 B" in out[0]
    assert out[1].startswith("fetched 0 files")


def test_second_run_sends_no_request_for_files_in_place(tmp_path: Path) -> None:
    files = tcd.list_files(2018, "AL", sensors=["GMI", "F17"])
    ranges: list = []
    counts = tcd.fetch(files, tmp_path / "raw", client=_client(ranges), progress=False)
    assert (counts["fetched"], counts["present"], counts["md5"]) == (2, 0, 2) and ranges == [None, None]
    counts = tcd.fetch(files, tmp_path / "raw", client=_client(ranges), progress=False)
    assert (counts["fetched"], counts["present"]) == (0, 2) and ranges == [None, None]


def test_resume_after_a_partial_file(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (f,) = tcd.list_files(2018, "AL", sensors=["GMI"])
    part = tcd.part_path(raw, f)
    assert not part.is_relative_to(raw)  # partial copies live outside the dataset folder
    part.parent.mkdir(parents=True)
    part.write_bytes(BODY[GMI][:1000])
    stale = part.with_name(f"{f.name}.0123abcd.part")  # from an older version of the object
    stale.write_bytes(b"old")
    ranges: list = []
    counts = tcd.fetch([f], raw, client=_client(ranges), progress=False)
    assert ranges == ["bytes=1000-"] and counts["md5"] == 1
    assert (raw / GMI).read_bytes() == BODY[GMI]
    assert not tcd.staging_dir(raw).exists()


class _CutAfter:
    """A client whose first GetObject body ends with a dropped connection after ``n`` bytes."""

    def __init__(self, client, n: int) -> None:
        self.client, self.n, self.cut = client, n, False

    def get_object(self, **kw):
        response = self.client.get_object(**kw)
        if self.cut:
            return response
        self.cut = True
        data, n = response["Body"].read(), self.n

        class Body:
            def iter_chunks(self, size):
                yield data[:n]
                raise ConnectionClosedError(endpoint_url="http://127.0.0.1")

        return {**response, "Body": Body()}


def test_interrupted_transfer_is_kept_aside_and_resumed(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (f,) = tcd.list_files(2018, "AL", sensors=["AMSR2"])
    with pytest.raises(DownloadError, match="run again to resume") as info:
        tcd.fetch([f], raw, client=_CutAfter(_client(), 700), retries=0, progress=False)
    assert f.key in str(info.value) and "\n" not in str(info.value)
    assert tcd.part_path(raw, f).stat().st_size == 700 and not raw.exists()  # the dataset folder has no half file
    ranges: list = []
    tcd.fetch([f], raw, client=_client(ranges), progress=False)
    assert ranges == ["bytes=700-"] and (raw / AMSR2).read_bytes() == BODY[AMSR2]
    # with retries, the same cut is resumed within one call
    (g,) = tcd.list_files(2018, "AL", sensors=["F17"])
    tcd.fetch([g], raw, client=_CutAfter(_client(), 500), retries=1, progress=False)
    assert (raw / F17).read_bytes() == BODY[F17]


def test_corrupt_bytes_are_caught_and_dropped(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (f,) = tcd.list_files(2018, "AL", sensors=["GMI"])
    part = tcd.part_path(raw, f)
    part.parent.mkdir(parents=True)
    part.write_bytes(bytes(1000))  # a partial copy whose bytes are wrong
    with pytest.raises(ChecksumError) as info:
        tcd.fetch([f], raw, client=_client(), progress=False)
    msg = str(info.value)
    assert f"s3://{tcd.BUCKET}/{GMI}" in msg and "md5" in msg and f.etag in msg and "\n" not in msg
    assert not part.exists() and not (raw / GMI).exists()
    tcd.fetch([f], raw, client=_client(), progress=False)  # the next run fetches it anew
    assert (raw / GMI).read_bytes() == BODY[GMI]


def test_copy_of_another_size_in_raw_is_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw(tmp_path)
    (raw / GMI).parent.mkdir(parents=True)
    (raw / GMI).write_bytes(b"truncated")
    assert _cli(tmp_path, "--season", "2018", "--basin", "AL", "--sensor", "GMI") == 0
    assert (raw / GMI).read_bytes() == BODY[GMI]
    assert "(1 replaced a copy of another size)" in capsys.readouterr().out


def test_multipart_etag_is_verified(tmp_path: Path) -> None:
    (f,) = tcd.list_files(2019, "WP")
    assert f.key == MULTIPART_KEY and f.etag.endswith("-2")
    counts = tcd.fetch([f], tmp_path / "raw", client=_client(), progress=False)
    assert counts["etag"] == 1 and (tmp_path / "raw" / f.key).read_bytes() == MULTIPART_BODY


def test_verify_checks_size_and_etag(tmp_path: Path) -> None:
    path = tmp_path / "x.nc"
    path.write_bytes(b"abc")
    md5 = hashlib.md5(b"abc").hexdigest()
    assert tcd.verify(path, tcd.RemoteFile(GMI, 3, md5)) == "md5"
    with pytest.raises(ChecksumError, match="fetched 3 bytes, the bucket lists 4"):
        tcd.verify(path, tcd.RemoteFile(GMI, 4, md5))
    with pytest.raises(ChecksumError, match="md5 of the fetched bytes"):
        tcd.verify(path, tcd.RemoteFile(GMI, 3, "0" * 32))
    single = hashlib.md5(hashlib.md5(b"abc").digest()).hexdigest() + "-1"
    assert tcd.verify(path, tcd.RemoteFile(GMI, 3, single)) == "etag"
    assert tcd.verify(path, tcd.RemoteFile(GMI, 3, "f" * 32 + "-2")) == "size"  # not reproducible: size only


# --------------------------------------------------------------------------------------------------
# the endpoint
# --------------------------------------------------------------------------------------------------


def test_endpoint_from_environment_or_argument(endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert [f.key for f in tcd.list_files(2018, "EP")]  # $TCPRIMED_S3_ENDPOINT alone
    monkeypatch.delenv(tcd.ENDPOINT_ENV)
    files = tcd.list_files(2018, "EP", endpoint_url=endpoint)  # the argument alone
    tcd.fetch(files, tmp_path / "raw", endpoint_url=endpoint, progress=False)
    assert (tmp_path / "raw" / files[0].key).stat().st_size == files[0].size


def test_unreachable_endpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    assert _cli(tmp_path, "--season", "2018", "--basin", "AL", "--endpoint-url", dead) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"cannot list s3://{tcd.BUCKET}/{P}/2018/AL/" in err and dead in err


# --------------------------------------------------------------------------------------------------
# end to end: synthetic v01r01 files in the bucket -> download -> prepare
# --------------------------------------------------------------------------------------------------


def test_downloaded_files_are_what_prepare_reads(endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tasks.tc_primed.prepare import prepare_store
    from tasks.tc_primed.synthetic import generate

    made = generate(tmp_path / "made", 0, n_storms=4, half_box_km=60.0, grid_km=8.0, progress=False)
    keys = {rel.removeprefix("raw/"): rel for rel in made}
    subsets = sorted({tuple(k.split("/")[2:4]) for k in keys})  # (season, basin)
    assert not {s for s, _ in subsets} & {"2018", "2019"}  # apart from the other tests' objects
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    try:
        for key, rel in keys.items():
            s3.upload_file(str(tmp_path / "made" / rel), tcd.BUCKET, key, ExtraArgs={"ACL": "public-read"})
        for season, basin in subsets:
            assert _cli(tmp_path, "--season", season, "--basin", basin) == 0
        capsys.readouterr()
        raw = _raw(tmp_path)
        overpasses = {k: rel for k, rel in keys.items() if tcd.RemoteFile(k, 0, "").kind != "env"}
        assert 0 < len(overpasses) < len(keys)  # the generator writes environmental files too: not fetched
        assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file()) == sorted(overpasses)
        for key, rel in overpasses.items():
            assert (raw / key).read_bytes() == (tmp_path / "made" / rel).read_bytes()
        report = prepare_store(raw, tmp_path / "data" / "tc_primed" / "prepared", scheduler="sync", workers=1,
                               progress=False, say=lambda *a: None)
        assert report["errors"] == 0 and sum(report["storms"].values()) == 4 and sum(report["observations"].values()) > 0
    finally:
        for key in keys:
            s3.delete_object(Bucket=tcd.BUCKET, Key=key)


def test_missing_client_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "tcprimedapi", None)  # as if the tc_primed extra were not installed
    assert _cli(tmp_path, "--season", "2018", "--basin", "AL") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "tcprimedapi" in err and "satbench[tc_primed]" in err
